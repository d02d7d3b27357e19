"""SqlDataWriter.is_transient on real SQLite, PostgreSQL and MariaDB errors.

Transient (retry the batch later): connection refused, a lock held by another session until its
timeout, a busy SQLite file. Permanent (retrying cannot help): a row the database refuses (a
trigger), a table dropped under the writer, an old schema.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _cases.sql_cases import MARIADB_URL, POSTGRES_URL, boom_trigger, execute_sql, require_database, sql_store
from _util import free_port

from data_collector import (
    CollectedVariable,
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    Variable,
    WriterError,
)
from data_writer.sql import SqlDataWriter, SqlWriterError

T0 = datetime(2024, 2, 1, tzinfo=UTC)
VARIABLES = [Variable(1, "a", "float", "r"), Variable(2, "b", "str", "r")]
CTX = DataCollectionContext(1, VARIABLES)


def _batch(second: int, text: str = "ok") -> CollectedVariables:
    at = T0.replace(second=second)
    return CollectedVariables(
        [CollectedVariable(VARIABLES[0], 1.5, at), CollectedVariable(VARIABLES[1], text, at)]
    )


def _failure(writer: SqlDataWriter, batch: CollectedVariables) -> BaseException:
    with pytest.raises(WriterError) as caught:
        writer.write(CTX, batch)
    return caught.value


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    with sql_store(request.param, tmp_path) as s:
        yield s


def test_plain_exceptions() -> None:
    writer = SqlDataWriter("sqlite://")
    assert writer.is_transient(OSError("disk gone"))
    assert writer.is_transient(ConnectionResetError())
    assert writer.is_transient(TimeoutError())
    assert writer.is_transient(sqlite3.OperationalError("database is locked"))
    assert not writer.is_transient(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not writer.is_transient(ValueError("bad value"))
    assert not writer.is_transient(UnicodeEncodeError("utf-8", "x", 0, 1, "no"))
    assert not writer.is_transient(ConfigurationError("bad id"))
    assert writer.is_transient(SqlWriterError("x", transient=True))
    assert not writer.is_transient(SqlWriterError("x", transient=False))


@pytest.mark.parametrize("url", [POSTGRES_URL, MARIADB_URL], ids=["postgresql", "mariadb"])
def test_connection_refused_is_transient(url: str) -> None:
    require_database(url)
    nowhere = sa.make_url(url).set(port=free_port()).render_as_string(hide_password=False)
    writer = SqlDataWriter(nowhere, connect_timeout_s=2)
    with pytest.raises(SqlWriterError) as caught:
        writer.open()
    assert writer.is_transient(caught.value) and caught.value.transient
    cause = caught.value.__cause__
    assert cause is not None and writer.is_transient(cause)  # the driver's own error says the same
    writer.close()


def test_sqlite_locked_by_another_connection_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite"
    writer = SqlDataWriter(f"sqlite:///{path}", connect_timeout_s=0.2)
    writer.write(CTX, _batch(0))
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        error = _failure(writer, _batch(1))
        assert "locked" in str(error)
        assert writer.is_transient(error)
        other.execute("ROLLBACK")
        writer.write(CTX, _batch(1))  # the lock is gone: the same batch goes through
    finally:
        other.close()
        writer.close()


def test_a_row_the_database_refuses_is_permanent(store: tuple[str, str]) -> None:
    url, prefix = store
    writer = SqlDataWriter(url, table_prefix=prefix)
    cleanup: list[str] = []
    try:
        writer.write(CTX, _batch(0))
        cleanup = boom_trigger(url, prefix)
        error = _failure(writer, _batch(1, "boom"))
        assert "boom refused" in str(error)
        assert not writer.is_transient(error)
        writer.write(CTX, _batch(2))  # the writer itself is fine
    finally:
        writer.close()
        execute_sql(url, cleanup)


def test_a_table_dropped_under_the_writer_is_permanent(store: tuple[str, str]) -> None:
    url, prefix = store
    writer = SqlDataWriter(url, table_prefix=prefix)
    try:
        writer.write(CTX, _batch(0))
        writer.close()  # no open transaction holds the table
        execute_sql(url, [f"DROP VIEW {prefix}samples_view", f"DROP TABLE {prefix}samples"])
        writer = SqlDataWriter(url, table_prefix=prefix)
        writer._opened = True  # as if opened before the drop: the next write meets no table
        error = _failure(writer, _batch(1))
        assert not writer.is_transient(error), error
    finally:
        writer.close()


def test_an_old_schema_is_permanent(store: tuple[str, str]) -> None:
    url, prefix = store
    writer = SqlDataWriter(url, table_prefix=prefix)
    writer.open()
    writer.close()
    execute_sql(url, [f"UPDATE {prefix}schema_version SET version = 1"])
    old = SqlDataWriter(url, table_prefix=prefix)
    with pytest.raises(ConfigurationError, match="schema version 1") as caught:
        old.open()
    assert not old.is_transient(caught.value)
    old.close()


def _hold_lock(url: str, statements: list[str], locked: threading.Event, release: threading.Event) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN" if engine.dialect.name == "postgresql" else "SELECT 1")
            for statement in statements:
                conn.exec_driver_sql(statement)
            locked.set()
            release.wait(30)
            conn.rollback()
            if engine.dialect.name != "postgresql":
                conn.exec_driver_sql("UNLOCK TABLES")
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_lock_timeout_is_transient(kind: str, tmp_path: Path) -> None:
    with sql_store(kind, tmp_path) as (url, prefix):
        options: dict[str, Any]
        if kind == "postgresql":
            options = {"connect_args": {"options": "-c lock_timeout=300"}}
            lock = [f"LOCK TABLE {prefix}samples IN ACCESS EXCLUSIVE MODE"]
        else:
            options = {"connect_args": {"init_command": "SET SESSION lock_wait_timeout = 1"}}
            lock = [f"LOCK TABLES {prefix}samples WRITE"]
        writer = SqlDataWriter(url, table_prefix=prefix, engine_options=options)
        locked, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=_hold_lock, args=(url, lock, locked, release), daemon=True)
        try:
            writer.write(CTX, _batch(0))
            holder.start()
            assert locked.wait(20), "the other session did not get its lock"
            error = _failure(writer, _batch(1))
            assert "lock" in str(error).lower(), error
            assert writer.is_transient(error)
        finally:
            release.set()
            holder.join(20)
        writer.write(CTX, _batch(1))  # lock released: the same batch goes through
        assert len(writer.read_samples(1)) == 4
        writer.close()
