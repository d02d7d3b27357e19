"""Store-and-forward into real PostgreSQL and MariaDB under faults, through the fault proxy.

Every test collects through a DataCollector with a spool, breaks the link between the SQL writer
and the real database (cut, resets before and after COMMIT, stalls, down at start, stop during an
outage and a restart on the same spool), and ends by comparing the database with every sample the
reader produced (kept by a second, in-memory writer): each one stored exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _cases.sql_cases import MARIADB_URL, POSTGRES_URL, drop_tables, require_database, unique_prefix
from _faultproxy import FaultProxy
from _util import LOG, CountingReader, RecordingWriter, wait_for

from data_collector import (
    CollectedVariable,
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    Variable,
    WriterError,
)
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


def _collector(
    proxied: str, prefix: str, tmp: Path, produced: RecordingWriter, io_timeout_s: float = 30.0, **kw: Any
) -> DataCollector:
    writer = SqlDataWriter(proxied, table_prefix=prefix, io_timeout_s=io_timeout_s)
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


# -- stalled connections: io_timeout_s ------------------------------------------------------------
def _batch(variables: list[Variable], tick: int) -> CollectedVariables:
    at = datetime(2024, 7, 1, 12, 0, tzinfo=UTC) + timedelta(milliseconds=100 * tick)
    return CollectedVariables(CollectedVariable(v, tick * 10 + v.id, at) for v in variables)


def test_a_stall_longer_than_io_timeout_fails_the_write_within_a_bound(db: Any) -> None:
    _kind, url, proxied, prefix, proxy = db
    variables = [V(i) for i in range(1, 21)]
    ctx = DataCollectionContext(2, variables)
    writer = SqlDataWriter(proxied, table_prefix=prefix, io_timeout_s=1.0)
    try:
        writer.write(ctx, _batch(variables, 0))
        proxy.stall()  # until restore(): the server never hears the request, the writer never an answer
        started = time.monotonic()
        with pytest.raises(WriterError) as caught:
            writer.write(ctx, _batch(variables, 1))
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 4.0, elapsed  # io_timeout_s, not the length of the stall
        assert writer.is_transient(caught.value), caught.value
        assert "within 1 s (io_timeout_s)" in str(caught.value)
        assert proxy.stats().active >= 1  # still stalled: the writer gave up, the link did not break
        proxy.restore()
        writer.write(ctx, _batch(variables, 1))  # the collector's retry of the same batch
        writer.close()  # closing ends the watchdog; writing again starts it anew
        writer.write(ctx, _batch(variables, 2))
        writer.write(ctx, _batch(variables, 1))  # once more: already stored, skipped
        assert writer.duplicates_skipped == 20
    finally:
        writer.close()
    stored = _keys(url, prefix, 2)
    assert len(stored) == 60 and set(stored.values()) == {1}


def test_a_stalled_database_costs_the_collector_io_timeout_and_nothing_else(db: Any, tmp_path: Path) -> None:
    _kind, url, proxied, prefix, proxy = db
    produced = RecordingWriter()
    with _collector(proxied, prefix, tmp_path, produced, io_timeout_s=1.0) as c:
        c.start(DataCollectionContext(1, [V(1), V(2)], min_interval_ms=10))
        wait_for(lambda: c.stats().writers["SqlDataWriter"].samples_written >= 20, 15, "first rows")
        errors = c.stats().writers["SqlDataWriter"].write_errors
        proxy.stall()  # indefinitely: before io_timeout_s, a write waited for as long as this lasted
        stalled_at = time.monotonic()
        wait_for(lambda: c.stats().writers["SqlDataWriter"].write_errors > errors, 6, "the stall detected")
        assert time.monotonic() - stalled_at < 5.0
        wait_for(lambda: time.monotonic() - stalled_at >= 5.0, 7, "a longer stall")
        proxy.restore()
        wait_for(lambda: _drained(c), 60, "the backlog written after the stall")
        c.stop(1)
        s = c.stats().writers["SqlDataWriter"]
    assert s.lost_samples == s.dropped_samples == s.unwritten_samples == 0
    _assert_exactly_once(url, prefix, 1, produced)


def test_url_parameters_win_over_the_io_timeout_settings(db: Any) -> None:
    kind, url, proxied, prefix, proxy = db
    if kind == "postgresql":
        writer = SqlDataWriter(f"{url}?keepalives_idle=7", table_prefix=prefix, io_timeout_s=2.0)
        try:
            with writer.engine.connect() as conn:
                params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        finally:
            writer.close()
        assert params["keepalives"] == "1" and params["keepalives_idle"] == "7"  # the URL's
        assert params["keepalives_count"] == "3" and params["tcp_user_timeout"] == "2000"  # the writer's
        return
    # MariaDB: the URL's read_timeout (3 s) bounds the stalled write, not io_timeout_s (1 s)
    variables = [V(1)]
    ctx = DataCollectionContext(3, variables)
    writer = SqlDataWriter(f"{proxied}?read_timeout=3", table_prefix=prefix, io_timeout_s=1.0)
    try:
        writer.write(ctx, _batch(variables, 0))
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(WriterError) as caught:
            writer.write(ctx, _batch(variables, 1))
        assert 2.8 <= time.monotonic() - started < 6.0
        assert writer.is_transient(caught.value)
        proxy.restore()
    finally:
        writer.close()


@pytest.mark.parametrize("bad", [-1, "30", True, float("nan"), float("inf")])
def test_io_timeout_must_be_a_number(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="io_timeout_s"):
        SqlDataWriter("sqlite://", io_timeout_s=bad)


def test_io_timeout_zero_or_none_means_no_limit() -> None:
    assert SqlDataWriter("sqlite://").io_timeout_s == 30.0
    assert SqlDataWriter("sqlite://", io_timeout_s=0).io_timeout_s is None
    assert SqlDataWriter("sqlite://", io_timeout_s=None).io_timeout_s is None
