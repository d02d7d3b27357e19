"""Store-and-forward into real PostgreSQL and MariaDB under faults, through the fault proxy.

Every test collects through a DataCollector with a spool, breaks the link between the SQL writer
and the real database (cut, resets before and after COMMIT, stalls, down at start, stop during an
outage and a restart on the same spool), and ends by comparing the database with every sample the
reader produced (kept by a second, in-memory writer): each one stored exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _cases.sql_cases import MARIADB_URL, POSTGRES_URL, drop_tables, require_database, unique_prefix
from _faultproxy import FaultProxy
from _util import LOG, CountingReader, RecordingWriter, wait_for

from data_collector import DataCollectionContext, DataCollector, Variable
from data_writer.sql import SqlDataWriter, read_samples

KINDS = {"postgresql": POSTGRES_URL, "mariadb": MARIADB_URL}
# the statement that ends a batch's transaction, as it crosses the wire
COMMIT = {"postgresql": b"COMMIT", "mariadb": b"COMMIT"}


@pytest.fixture(params=sorted(KINDS))
def db(request: pytest.FixtureRequest) -> Any:
    kind = request.param
    url = KINDS[kind]
    require_database(url)
    parsed = sa.make_url(url)
    prefix = unique_prefix()
    with FaultProxy(
        parsed.host or "127.0.0.1", parsed.port or (5432 if kind == "postgresql" else 3306)
    ) as proxy:
        proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        try:
            yield kind, url, proxied, prefix, proxy
        finally:
            drop_tables(url, prefix)


def V(id: int, interval: int = 50) -> Variable:
    return Variable(id, "counter", "int", "random", interval)


def _keys(url: str, prefix: str, context_id: int) -> Counter[tuple[int, datetime]]:
    return Counter((r.variable_id, r.read_at) for r in read_samples(url, context_id, table_prefix=prefix))


def _assert_exactly_once(url: str, prefix: str, context_id: int, produced: RecordingWriter) -> None:
    stored = _keys(url, prefix, context_id)
    expected = Counter((r.variable_id, r.read_at) for r in produced.of(context_id))
    dupes = {k: n for k, n in stored.items() if n > 1}
    assert not dupes, f"{len(dupes)} samples stored more than once, e.g. {list(dupes.items())[:3]}"
    missing = set(expected) - set(stored)
    assert not missing, f"{len(missing)} samples read but not stored, e.g. {sorted(missing)[:3]}"
    assert set(stored) == set(expected)


def _collector(proxied: str, prefix: str, tmp: Path, produced: RecordingWriter, **kw: Any) -> DataCollector:
    writer = SqlDataWriter(proxied, table_prefix=prefix)
    kw.setdefault("write_retry_s", 0.5)
    return DataCollector(LOG, [CountingReader()], [writer, produced], spool_dir=tmp / "spool", **kw)


def _drained(c: DataCollector) -> bool:
    return c.stats().writers["SqlDataWriter"].queue_depth == 0


def test_outage_of_ten_seconds_loses_nothing(db: Any, tmp_path: Path) -> None:
    _kind, url, proxied, prefix, proxy = db
    produced = RecordingWriter()
    with _collector(proxied, prefix, tmp_path, produced) as c:
        c.start(DataCollectionContext(1, [V(1), V(2)], min_interval_ms=10))
        wait_for(lambda: c.stats().writers["SqlDataWriter"].samples_written >= 20, 15, "first rows")
        proxy.cut()
        cut_at = time.monotonic()
        wait_for(lambda: time.monotonic() - cut_at >= 10, 12, "ten seconds of outage")  # the outage itself
        assert c.stats().writers["SqlDataWriter"].queue_depth >= 300  # ~10 s x 40 samples/s waiting
        proxy.restore()
        wait_for(lambda: _drained(c), 60, "the backlog written after the outage")
        c.stop(1)
        s = c.stats().writers["SqlDataWriter"]
    assert s.lost_samples == s.dropped_samples == s.unwritten_samples == 0 and s.write_errors >= 1
    _assert_exactly_once(url, prefix, 1, produced)


def test_flapping_connection_resets_around_commit_never_duplicate(db: Any, tmp_path: Path) -> None:
    kind, url, proxied, prefix, proxy = db
    produced = RecordingWriter()
    with _collector(proxied, prefix, tmp_path, produced) as c:
        c.start(DataCollectionContext(1, [V(1, 20), V(2, 20)], min_interval_ms=10))
        wait_for(lambda: c.stats().writers["SqlDataWriter"].samples_written >= 20, 15, "first rows")
        for i in range(4):  # the database commits, the client never hears it; then the other way round
            proxy.reset_before_reply(COMMIT[kind])
            proxy.wait_fired(2 * i + 1, timeout=15)
            proxy.reset_after_reply(COMMIT[kind])
            proxy.wait_fired(2 * i + 2, timeout=15)
        wait_for(lambda: _drained(c), 30, "the retried batches written")
        c.stop(1)
        s = c.stats().writers["SqlDataWriter"]
    # (a reset right after a COMMIT reached the client may cost no error at all: the next write reconnects)
    assert s.lost_samples == s.dropped_samples == 0 and s.write_errors >= 2
    _assert_exactly_once(url, prefix, 1, produced)


def test_a_stall_longer_than_the_retry_step(db: Any, tmp_path: Path) -> None:
    _kind, url, proxied, prefix, proxy = db
    produced = RecordingWriter()
    with _collector(proxied, prefix, tmp_path, produced) as c:
        c.start(DataCollectionContext(1, [V(1), V(2)], min_interval_ms=10))
        wait_for(lambda: c.stats().writers["SqlDataWriter"].samples_written >= 20, 15, "first rows")
        proxy.stall(4.0)  # nothing forwarded for 4 s, far longer than write_retry_s
        stalled_at = time.monotonic()
        wait_for(lambda: time.monotonic() - stalled_at >= 4.5, 6, "the stall to pass")
        wait_for(lambda: _drained(c), 60, "the backlog written after the stall")
        c.stop(1)
        s = c.stats().writers["SqlDataWriter"]
    assert s.lost_samples == s.dropped_samples == 0
    _assert_exactly_once(url, prefix, 1, produced)


def test_database_down_at_start_then_up(db: Any, tmp_path: Path) -> None:
    _kind, url, proxied, prefix, proxy = db
    produced = RecordingWriter()
    proxy.cut()
    with _collector(proxied, prefix, tmp_path, produced) as c:
        c.start(DataCollectionContext(1, [V(1), V(2)], min_interval_ms=10))  # starts: data spools
        wait_for(lambda: len(produced.of(1)) >= 100, 10, "samples read while the database is down")
        assert c.stats().writers["SqlDataWriter"].samples_written == 0
        proxy.restore()
        wait_for(
            lambda: _drained(c) and c.stats().writers["SqlDataWriter"].samples_written > 0, 60, "writing"
        )
        c.stop(1)
    _assert_exactly_once(url, prefix, 1, produced)


def test_stop_during_an_outage_then_restart_on_the_same_spool(db: Any, tmp_path: Path) -> None:
    _kind, url, proxied, prefix, proxy = db
    produced = RecordingWriter()
    c = _collector(proxied, prefix, tmp_path, produced, drain_timeout_s=1.0)
    c.start(DataCollectionContext(1, [V(1), V(2)], min_interval_ms=10))
    wait_for(lambda: c.stats().writers["SqlDataWriter"].samples_written >= 20, 15, "first rows")
    proxy.cut()
    wait_for(lambda: c.stats().writers["SqlDataWriter"].queue_depth >= 100, 10, "samples spooling")
    c.close()
    assert c.stats().writers["SqlDataWriter"].unwritten_samples >= 100
    proxy.restore()
    again = RecordingWriter()
    with _collector(proxied, prefix, tmp_path, again) as c2:
        c2.open()  # replays the spool at once, before any context starts
        wait_for(lambda: _drained(c2), 60, "the spool written")
        assert c2.stats().writers["SqlDataWriter"].replayed_samples >= 100
    _assert_exactly_once(url, prefix, 1, produced)
