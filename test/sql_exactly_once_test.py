"""Exactly once into SQL: re-run, regrouped and fault-hit batches never duplicate a sample.

The fault tests put the fault-injection proxy (test/_faultproxy.py) between SqlDataWriter and the
real PostgreSQL / MariaDB server, break the link (reset before or after the COMMIT reply, reset in
the middle of a COPY or INSERT, outage, stall, server down at open) and retry like the collector
does (while ``is_transient``); then every sample must be in the database exactly once, compared
against the samples written, read back directly (not through the proxy).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from _cases.sql_cases import proxy_target, sql_store, url_through
from _faultproxy import FaultProxy

from data_collector import CollectedVariable, CollectedVariables, DataCollectionContext, Variable
from data_writer.sql import SCHEMA_VERSION, SqlDataWriter, read_samples

T0 = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


def _variables(n: int) -> list[Variable]:
    kinds = ("float", "int", "str", "bool")
    return [Variable(i + 1, f"plc/{i}", kinds[i % 4], "r") for i in range(n)]


def _value(v: Variable, tick: int) -> object:
    if v.value_type == "float":
        return tick + v.id / 1000
    if v.value_type == "int":
        return tick * 1000 + v.id
    if v.value_type == "bool":
        return (tick + v.id) % 2 == 0
    return f"s{tick}-{v.id}"


def _tick(variables: list[Variable], tick: int) -> CollectedVariables:
    at = T0 + timedelta(milliseconds=100 * tick)
    return CollectedVariables(CollectedVariable(v, _value(v, tick), at) for v in variables)


def _batch(variables: list[Variable], ticks: range) -> CollectedVariables:
    items: list[CollectedVariable] = []
    for t in ticks:
        items.extend(_tick(variables, t))
    return CollectedVariables(items)


def _assert_exactly_once(url: str, prefix: str, cid: int, variables: list[Variable], ticks: range) -> None:
    rows = read_samples(url, cid, table_prefix=prefix)
    expected = {(v.id, T0 + timedelta(milliseconds=100 * t)): _value(v, t) for t in ticks for v in variables}
    got = [(r.variable_id, r.read_at) for r in rows]
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicated samples"
    assert set(got) == set(expected), (
        f"{len(set(expected) - set(got))} samples missing, {len(set(got) - set(expected))} unexpected"
    )
    for r in rows:
        assert r.value == expected[(r.variable_id, r.read_at)], r


def _write_retrying(writer: SqlDataWriter, ctx: DataCollectionContext, batch: CollectedVariables) -> int:
    """Write like the collector: retry transient errors with capped backoff; the attempts it took."""
    deadline = time.monotonic() + 60
    delay = 0.05
    for attempt in range(1, 1000):
        try:
            writer.write(ctx, batch)
            return attempt
        except Exception as exc:
            assert writer.is_transient(exc), f"not transient: {exc!r}"
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)  # backoff between retries, as the collector's writer task does
            delay = min(delay * 2, 0.5)
    raise AssertionError("no success in 1000 attempts")


# -- every database: re-runs and regrouping ---------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    with sql_store(request.param, tmp_path) as s:
        yield s


def test_rerun_and_regrouped_batches_store_each_sample_once(store: tuple[str, str]) -> None:
    url, prefix = store
    variables = _variables(40)
    ctx = DataCollectionContext(5, variables)
    writer = SqlDataWriter(url, table_prefix=prefix)
    try:
        for t in range(0, 10, 2):  # as read: batches of two ticks
            writer.write(ctx, _batch(variables, range(t, t + 2)))
        assert writer.samples_written == 400 and writer.duplicates_skipped == 0
        writer.write(ctx, _batch(variables, range(4, 6)))  # the same batch again (a retry)
        assert writer.duplicates_skipped == 80
        writer.write(ctx, _batch(variables, range(3, 14)))  # a replay in another grouping, with new ticks
        assert writer.samples_written == 560 and writer.duplicates_skipped == 80 + 7 * 40
        doubled = _batch(variables, range(14, 15))
        writer.write(ctx, CollectedVariables([*doubled, *doubled]))  # repeated within one batch
        assert writer.samples_written == 600
    finally:
        writer.close()
    _assert_exactly_once(url, prefix, 5, variables, range(15))


def test_a_restarted_context_run_is_recorded_once_per_start(store: tuple[str, str]) -> None:
    url, prefix = store
    ctx = DataCollectionContext(6, _variables(2))
    ctx._start_date = T0  # what the collector sets
    writer = SqlDataWriter(url, table_prefix=prefix)
    try:
        writer.context_started(ctx)
        writer.context_started(ctx)  # a retry after a lost acknowledgement: the same run
        writer.context_stopped(ctx)
        ctx._start_date = T0 + timedelta(hours=1)
        writer.context_started(ctx)  # a new run
        runs = writer.read_contexts(6)
    finally:
        writer.close()
    assert [r.start for r in runs] == [T0, T0 + timedelta(hours=1)]
    assert runs[0].end is not None and runs[1].end is None


_CHILD = """
import sys
from datetime import UTC, datetime, timedelta
sys.path.insert(0, sys.argv[2])
from sql_exactly_once_test import _batch, _variables
from data_collector import DataCollectionContext
from data_writer.sql import SqlDataWriter

variables = _variables(50)
ctx = DataCollectionContext(7, variables)
writer = SqlDataWriter(sys.argv[1], table_prefix="dc_")
for t in range(0, 400, 4):
    writer.write(ctx, _batch(variables, range(t, t + 4)))
    print("done", t + 4, flush=True)
"""


def test_kill_9_then_replay_in_another_grouping_sqlite(tmp_path: Path) -> None:
    """A process killed (SIGKILL) while writing; the batches replayed from the start (as a spool
    would, grouped differently): every sample exactly once."""
    url = f"sqlite:///{tmp_path / 'killed.sqlite'}"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        acked = 0
        deadline = time.monotonic() + 60
        while acked < 40 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acked = int(line.split()[1])
        assert acked >= 40, f"the child wrote only {acked} ticks"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    variables = _variables(50)
    ctx = DataCollectionContext(7, variables)
    writer = SqlDataWriter(url, table_prefix="dc_")
    try:
        for t in range(0, 400, 10):  # replayed from the start, 10 ticks per write
            writer.write(ctx, _batch(variables, range(t, t + 10)))
        assert writer.duplicates_skipped >= acked * 50
        assert writer.samples_written + writer.duplicates_skipped == 400 * 50
    finally:
        writer.close()
    _assert_exactly_once(url, "dc_", 7, variables, range(400))


# -- faults between the writer and a real server -----------------------------------------------------
@pytest.fixture(params=["postgresql", "mariadb"])
def proxied(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, FaultProxy]]:
    """(direct url, table prefix, proxy in front of the server)."""
    with sql_store(request.param, tmp_path) as (url, prefix), FaultProxy(*proxy_target(url)) as proxy:
        yield url, prefix, proxy


def _writer(url: str, prefix: str, proxy: FaultProxy) -> SqlDataWriter:
    return SqlDataWriter(url_through(url, proxy.port), table_prefix=prefix, connect_timeout_s=2)


def test_reset_before_the_commit_reply_is_found_done_on_retry(
    proxied: tuple[str, str, FaultProxy],
) -> None:
    url, prefix, proxy = proxied
    variables = _variables(100)
    ctx = DataCollectionContext(11, variables)
    writer = _writer(url, prefix, proxy)
    try:
        _write_retrying(writer, ctx, _batch(variables, range(0, 5)))
        proxy.reset_before_reply(b"COMMIT")  # the server commits; the writer never hears of it
        _write_retrying(writer, ctx, _batch(variables, range(5, 10)))
        assert proxy.stats().faults_fired == 1
        # The retry found every sample of the batch stored: it inserted none again.
        assert writer.duplicates_skipped == 500
        assert writer.samples_written == 500  # inserted by this writer: the first batch only
        _write_retrying(writer, ctx, _batch(variables, range(10, 12)))
        assert writer.samples_written == 700
    finally:
        writer.close()
    _assert_exactly_once(url, prefix, 11, variables, range(12))


def test_reset_after_the_commit_reply_then_the_next_batch(proxied: tuple[str, str, FaultProxy]) -> None:
    url, prefix, proxy = proxied
    variables = _variables(100)
    ctx = DataCollectionContext(12, variables)
    writer = _writer(url, prefix, proxy)
    try:
        proxy.reset_after_reply(b"COMMIT")
        _write_retrying(writer, ctx, _batch(variables, range(0, 5)))
        proxy.wait_fired(1, timeout=10)
        _write_retrying(writer, ctx, _batch(variables, range(5, 10)))  # on a connection now dead
        assert writer.duplicates_skipped == 0 and writer.samples_written == 1000
    finally:
        writer.close()
    _assert_exactly_once(url, prefix, 12, variables, range(10))


FAULTS = ["none", "before_commit", "after_commit", "before_any", "bytes_up", "bytes_down"]


def test_flapping_connection_every_kind_of_reset(proxied: tuple[str, str, FaultProxy]) -> None:
    url, prefix, proxy = proxied
    variables = _variables(60)
    ctx = DataCollectionContext(13, variables)
    rng = random.Random(20240301)
    writer = _writer(url, prefix, proxy)
    attempts = 0
    try:
        for b in range(30):
            fault = rng.choice(
                ["none", "before_commit", "after_commit", "before_any", "bytes_up", "bytes_down"]
            )
            if fault == "before_commit":
                proxy.reset_before_reply(b"COMMIT")
            elif fault == "after_commit":
                proxy.reset_after_reply(b"COMMIT")
            elif fault == "before_any":
                proxy.reset_before_reply()
            elif fault == "bytes_up":  # in the middle of the COPY / INSERT data
                proxy.reset_after_bytes(rng.randint(1, 6000), "to_server")
            elif fault == "bytes_down":
                proxy.reset_after_bytes(rng.randint(1, 300), "to_client")
            attempts += _write_retrying(writer, ctx, _batch(variables, range(b * 3, b * 3 + 3)))
        proxy.disarm()
        fired = proxy.stats().faults_fired
    finally:
        writer.close()
    assert fired >= 15, f"only {fired} faults fired"
    _assert_exactly_once(url, prefix, 13, variables, range(90))


def test_outage_of_six_seconds_with_retries(proxied: tuple[str, str, FaultProxy]) -> None:
    url, prefix, proxy = proxied
    variables = _variables(50)
    ctx = DataCollectionContext(14, variables)
    writer = _writer(url, prefix, proxy)
    try:
        for t in range(10):
            _write_retrying(writer, ctx, _tick(variables, t))
        proxy.cut()
        restore = threading.Timer(6.0, proxy.restore)  # the outage lasts 6 s
        restore.start()
        try:
            started = time.monotonic()
            first = _write_retrying(writer, ctx, _tick(variables, 10))
            waited = time.monotonic() - started
            for t in range(11, 60):
                _write_retrying(writer, ctx, _tick(variables, t))
        finally:
            restore.cancel()
            restore.join(10)
        assert first > 3 and waited >= 5, (first, waited)  # the outage was felt and outlasted
    finally:
        writer.close()
    _assert_exactly_once(url, prefix, 14, variables, range(60))


def test_stall_longer_than_a_retry_step(proxied: tuple[str, str, FaultProxy]) -> None:
    url, prefix, proxy = proxied
    variables = _variables(50)
    ctx = DataCollectionContext(15, variables)
    writer = _writer(url, prefix, proxy)
    try:
        _write_retrying(writer, ctx, _batch(variables, range(0, 2)))
        proxy.stall(3.0)
        started = time.monotonic()
        _write_retrying(writer, ctx, _batch(variables, range(2, 4)))
        assert time.monotonic() - started >= 2.5  # held by the stall, then finished
        _write_retrying(writer, ctx, _batch(variables, range(4, 6)))
    finally:
        writer.close()
    _assert_exactly_once(url, prefix, 15, variables, range(6))


def test_database_down_at_open_is_transient(proxied: tuple[str, str, FaultProxy]) -> None:
    url, prefix, proxy = proxied
    proxy.cut()
    writer = _writer(url, prefix, proxy)
    try:
        with pytest.raises(Exception) as caught:
            writer.open()
        assert writer.is_transient(caught.value), caught.value
        proxy.restore()
        variables = _variables(10)
        ctx = DataCollectionContext(16, variables)
        _write_retrying(writer, ctx, _batch(variables, range(3)))
    finally:
        writer.close()
    _assert_exactly_once(url, prefix, 16, variables, range(3))
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            version = conn.exec_driver_sql(f"SELECT MAX(version) FROM {prefix}schema_version").scalar()
        assert version == SCHEMA_VERSION
    finally:
        engine.dispose()
