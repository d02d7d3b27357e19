"""User and deduced metadata in the SQL writer's contexts table (schema version 3), on SQLite,
PostgreSQL and MariaDB.

- the user's metadata and the collector's deduced metadata are stored apart, the deduced one
  completed at the run's stop (``end``, ``ended``), a procedure's exception recorded;
- a run killed with the process (kill -9) and replayed from the spool ends ``abnormal: ...``;
- a store of schema version 2 (no deduced column) is read as it is, upgraded by a writer that
  opens it (column added, version 3 recorded, concurrent writers included) or by ``migrate_store``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from _cases.sql_cases import make_v2_store, sql_store
from _util import LOG, CountingReader, wait_for

from data_collector import (
    CollectedVariable,
    CollectedVariables,
    DataCollectionContext,
    DataCollector,
    Variable,
)
from data_writer.sql import (
    SCHEMA_VERSION,
    MigrationResult,
    SqlDataWriter,
    migrate_store,
    read_contexts,
    read_samples,
)

HERE = Path(__file__).resolve().parent
KINDS = ["sqlite", "postgresql", "mariadb"]
T0 = datetime(2024, 6, 3, 7, 15, 0, 500000, tzinfo=UTC)


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    with sql_store(request.param, tmp_path) as s:
        yield s


def V(id: int, interval: int = 50) -> Variable:
    return Variable(id, "counter", "int", "random", interval)


def _versions(url: str, prefix: str) -> list[int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            quote = conn.dialect.identifier_preparer.quote
            return sorted(
                int(v)
                for (v,) in conn.exec_driver_sql(f"SELECT version FROM {quote(prefix + 'schema_version')}")
            )
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_user_and_deduced_metadata_are_kept_apart_and_completed_at_stop(store: tuple[str, str]) -> None:
    url, prefix = store
    writer = SqlDataWriter(url, table_prefix=prefix, name="plant-db")
    user = {"operator": "CG", "start": "after lunch", "ended": "user's word", "nested": {"a": [1, 2.5]}}
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        ctx = DataCollectionContext(4, [V(1), V(2)], min_interval_ms=10, metadata=user)
        c.start(ctx)
        wait_for(lambda: len(read_samples(url, 4, table_prefix=prefix)) >= 10, 10, "the run recorded")
        (running,) = read_contexts(url, 4, table_prefix=prefix)
        assert running.end is None and running.ended is None
        assert "end" not in running.deduced_metadata and "ended" not in running.deduced_metadata
        assert running.deduced_metadata["start"] == ctx.start_date.isoformat()  # type: ignore[union-attr]
        c.stop(4)
    (run,) = read_contexts(url, 4, table_prefix=prefix)
    assert run.metadata == user  # exactly what the user said, deduced keys of the same name apart
    deduced = run.deduced_metadata
    assert deduced == dict(ctx.deduced_metadata)  # all of it, as the collector deduced it
    assert run.ended == deduced["ended"] == "stopped"
    assert run.start == ctx.start_date and run.end == ctx.end_date
    assert deduced["start"] == run.start.isoformat() and deduced["end"] == run.end.isoformat()  # type: ignore[union-attr]
    assert deduced["writers"] == [{"name": "plant-db", "class": "data_writer.sql.writer.SqlDataWriter"}]
    assert deduced["readers"]["random"]["class"].endswith("CountingReader")
    assert deduced["collector"]["library"] == "data-collector" and deduced["collector"]["pid"] == os.getpid()
    assert deduced["variables"] == 2
    assert len(read_samples(url, 4, table_prefix=prefix)) > 0


def test_a_procedure_that_raises_is_recorded_in_the_deduced_metadata(store: tuple[str, str]) -> None:
    url, prefix = store

    def calibrate(offset: float) -> None:
        raise RuntimeError("probe not found")

    with DataCollector(LOG, [CountingReader()], [SqlDataWriter(url, table_prefix=prefix)]) as c:
        ctx = DataCollectionContext(5, [V(1)], min_interval_ms=10)
        with pytest.raises(RuntimeError, match="probe not found"):
            c.run_procedure(calibrate, ctx, 0.25, metadata={"sample": "S-12"})
    (run,) = read_contexts(url, 5, table_prefix=prefix)
    assert run.metadata == {"sample": "S-12"}
    assert run.ended == "exception"
    assert run.deduced_metadata["exception"] == {"type": "RuntimeError", "message": "probe not found"}
    assert run.deduced_metadata["procedure"]["name"].endswith("calibrate")
    assert run.deduced_metadata["procedure"]["args"] == ["0.25"]


def test_the_writer_alone_records_start_and_end_as_deduced(store: tuple[str, str]) -> None:
    url, prefix = store
    writer = SqlDataWriter(url, table_prefix=prefix)
    try:
        ctx = DataCollectionContext(6, [V(1)], metadata={"k": "v"})
        ctx._start_date = T0  # as a collector would set it
        writer.context_started(ctx)
        ctx._end_date = T0 + timedelta(seconds=3)
        writer.context_stopped(ctx)
        writer.context_stopped(ctx)  # again (a retry after a lost acknowledgement): one run
    finally:
        writer.close()
    (run,) = read_contexts(url, 6, table_prefix=prefix)
    assert run.metadata == {"k": "v"}
    assert run.deduced_metadata == {"start": T0.isoformat(), "end": (T0 + timedelta(seconds=3)).isoformat()}
    assert run.ended is None


# -- kill -9 and replay -----------------------------------------------------------------------------
CHILD = r"""
import logging, sys, time
sys.path.insert(0, {test_dir!r})
from _util import CountingReader
from data_collector import DataCollectionContext, DataCollector, Variable
from data_writer.sql import SqlDataWriter
logging.basicConfig(level=logging.WARNING)
writer = SqlDataWriter({url!r}, table_prefix={prefix!r})
c = DataCollector(logging.getLogger("child"), [CountingReader()], [writer], spool_dir={spool!r},
                  spool_sync_s=0.2)
variables = [Variable(i, "counter", "int", "random", 20) for i in (1, 2, 3)]
c.start(DataCollectionContext(8, variables, min_interval_ms=10, metadata={{"operator": "night shift"}}))
print("started", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    time.sleep(0.05)
"""


def test_a_run_killed_with_its_process_ends_abnormal_after_the_replay(
    store: tuple[str, str], tmp_path: Path
) -> None:
    url, prefix = store
    spool = tmp_path / "spool"
    code = CHILD.format(test_dir=str(HERE), url=url, prefix=prefix, spool=str(spool))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"

        def recorded() -> bool:
            try:
                runs = read_contexts(url, 8, table_prefix=prefix)
                return len(runs) == 1 and len(read_samples(url, 8, table_prefix=prefix)) >= 30
            except ValueError:  # the child has not created the tables yet
                return False

        wait_for(recorded, 30, "the child's run and samples in the store")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    (before,) = read_contexts(url, 8, table_prefix=prefix)
    assert before.end is None and before.ended is None  # the child never stopped it
    with DataCollector(
        LOG, [CountingReader()], [SqlDataWriter(url, table_prefix=prefix)], spool_dir=spool
    ) as c:
        c.open()  # replays the spool first
        wait_for(lambda: c.stats().writers["SqlDataWriter"].queue_depth == 0, 30, "the replay written")
    (run,) = read_contexts(url, 8, table_prefix=prefix)
    assert run.metadata == {"operator": "night shift"}
    assert run.ended is not None and run.ended.startswith("abnormal:"), run.deduced_metadata
    deduced = run.deduced_metadata
    assert deduced["replayed_from_spool"] is True
    assert deduced["collector"]["pid"] == proc.pid  # the deduced metadata of the killed run, kept
    assert deduced["start"] == before.deduced_metadata["start"] == run.start.isoformat()  # type: ignore[union-attr]
    assert run.end is not None and deduced["end"] == run.end.isoformat()
    last = max(r.read_at for r in read_samples(url, 8, table_prefix=prefix))
    assert run.start is not None and run.start < run.end and run.end >= last - timedelta(seconds=1)


# -- schema version 2 stores --------------------------------------------------------------------------
def test_a_version_2_store_is_read_as_it_is(store: tuple[str, str]) -> None:
    url, prefix = store
    make_v2_store(url, prefix, T0)
    (run,) = read_contexts(url, 3, table_prefix=prefix)
    assert run.metadata == {"lot": 7} and run.deduced_metadata == {} and run.ended is None
    assert run.start == T0 and run.end == T0 + timedelta(seconds=9)
    assert [r.value for r in read_samples(url, 3, table_prefix=prefix)] == [0, 1]
    assert _versions(url, prefix) == [2]  # reading changes nothing
    assert "deduced_metadata" not in _columns(url, f"{prefix}contexts")


def test_a_writer_upgrades_a_version_2_store_by_itself(
    store: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url, prefix = store
    make_v2_store(url, prefix, T0)
    writers = [SqlDataWriter(url, table_prefix=prefix) for _ in range(3)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(writers))

    def open_one(w: SqlDataWriter) -> None:
        try:
            barrier.wait(10)
            w.open()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(w,)) for w in writers]
    with caplog.at_level(logging.WARNING, logger="data_writer.sql"):
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
    try:
        assert errors == []  # three writers opening the old store at once: all fine
        assert [
            r
            for r in caplog.records
            if f"upgraded from schema version 2 to {SCHEMA_VERSION}" in r.getMessage()
        ]
        assert _versions(url, prefix) == [2, SCHEMA_VERSION]
        assert "deduced_metadata" in _columns(url, f"{prefix}contexts")
        ctx = DataCollectionContext(3, [V(1)], metadata={"lot": 8})
        ctx._start_date = T0 + timedelta(minutes=1)
        writers[0].context_started(ctx)
        writers[1].write(
            ctx, CollectedVariables([CollectedVariable(ctx.variables[0], 5, T0 + timedelta(minutes=1))])
        )
    finally:
        for w in writers:
            w.close()
    old, new = read_contexts(url, 3, table_prefix=prefix)
    assert old.metadata == {"lot": 7} and old.deduced_metadata == {}  # what version 2 recorded
    assert ctx.start_date is not None
    assert new.metadata == {"lot": 8} and new.deduced_metadata == {"start": ctx.start_date.isoformat()}
    assert [r.value for r in read_samples(url, 3, table_prefix=prefix)] == [0, 1, 5]
    assert migrate_store(url, table_prefix=prefix) == MigrationResult(
        SCHEMA_VERSION, SCHEMA_VERSION, 3, 0
    )  # nothing left to do


def test_migrate_store_brings_version_2_to_the_current_one(store: tuple[str, str]) -> None:
    url, prefix = store
    make_v2_store(url, prefix, T0)
    assert migrate_store(url, table_prefix=prefix) == MigrationResult(2, SCHEMA_VERSION, 2, 0)
    assert _versions(url, prefix) == [2, SCHEMA_VERSION]
    (run,) = read_contexts(url, 3, table_prefix=prefix)
    assert run.metadata == {"lot": 7} and run.deduced_metadata == {}
    assert migrate_store(url, table_prefix=prefix) == MigrationResult(SCHEMA_VERSION, SCHEMA_VERSION, 2, 0)
