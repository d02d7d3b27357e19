"""A test writer that stores each sample under its identity (context, variable, read_at) in SQLite.

It counts how often a sample arrived again (``repeats``), so tests can tell "in the store exactly
once" from "written exactly once". Used by the spool tests, also from child processes.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from data_collector import CollectedVariables, DataCollectionContext, DataWriter

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(t: datetime | None) -> int:
    assert t is not None
    return (t - EPOCH) // timedelta(microseconds=1)


class KeyWriter(DataWriter):
    def __init__(self, path: str | Path, name: str = "keys", fail_open: int = 0) -> None:
        super().__init__()
        self.path = str(path)
        self._name = name
        self.fail_open = fail_open
        self.down = threading.Event()  # set: every call fails with ConnectionRefusedError
        self.conn: sqlite3.Connection | None = None

    @property
    def name(self) -> str:
        return self._name

    def _check(self) -> None:
        if self.down.is_set():
            raise ConnectionRefusedError("store down")

    def open(self) -> None:
        if self.fail_open > 0:
            self.fail_open -= 1
            raise ConnectionRefusedError("store not up yet")
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("pragma journal_mode=wal")
        conn.execute(
            "create table if not exists s (ctx int, var int, at int, quality text, error text, "
            "primary key (ctx, var, at))"
        )
        conn.execute("create table if not exists events (kind text, ctx int, at int, metadata text)")
        conn.execute("create table if not exists stats (k text primary key, n int)")
        self.conn = conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def context_started(self, context: DataCollectionContext) -> None:
        self._check()
        assert self.conn is not None
        self.conn.execute(
            "insert into events values ('start', ?, ?, ?)",
            (
                context.id,
                us(context.start_date),
                repr({**dict(context.metadata), "deduced": dict(context.deduced_metadata)}),
            ),
        )

    def context_stopped(self, context: DataCollectionContext) -> None:
        self._check()
        assert self.conn is not None
        self.conn.execute(
            "insert into events values ('stop', ?, ?, ?)",
            (
                context.id,
                us(context.end_date),
                repr({**dict(context.metadata), "deduced": dict(context.deduced_metadata)}),
            ),
        )

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        self._check()
        conn = self.conn
        assert conn is not None
        rows = [
            (context.id, v.id, us(t), q.value, e)
            for v, t, q, e in zip(
                variables.variables, variables.read_ats, variables.qualities, variables.errors, strict=True
            )
        ]
        conn.execute("begin")
        before = conn.total_changes
        conn.executemany("insert or ignore into s values (?, ?, ?, ?, ?)", rows)
        repeats = len(rows) - (conn.total_changes - before)
        conn.execute(
            "insert into stats values ('repeats', ?) on conflict(k) do update set n = n + excluded.n",
            (repeats,),
        )
        conn.execute("commit")


def rows(path: str | Path) -> list[tuple[int, int, int, str, str | None]]:
    conn = sqlite3.connect(str(path))
    try:
        return list(conn.execute("select ctx, var, at, quality, error from s order by ctx, var, at"))
    finally:
        conn.close()


def events(path: str | Path) -> list[tuple[str, int, int, str]]:
    conn = sqlite3.connect(str(path))
    try:
        return list(conn.execute("select kind, ctx, at, metadata from events order by rowid"))
    finally:
        conn.close()


def repeats(path: str | Path) -> int:
    conn = sqlite3.connect(str(path))
    try:
        row = conn.execute("select n from stats where k = 'repeats'").fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()
