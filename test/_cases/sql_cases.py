"""Contract cases of the SQL writer: SQLite (a file), PostgreSQL and MariaDB (the local servers).

Server URLs come from ``DC_TEST_POSTGRES_URL`` / ``DC_TEST_MARIADB_URL`` (defaults: the local
servers); a case skips when its server is unreachable unless ``DC_REQUIRE_SERVICES=1``. Every
store uses its own table prefix and drops its tables on exit, so parallel runs do not collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from data_collector import DataWriter
from data_collector.testing import FaultProxy
from data_writer.sql_data_writer import SqlDataWriter, read_contexts, read_samples

from . import StoredRun, StoredSample, WriterCase, WriterHarness, require_service

POSTGRES_URL = os.environ.get("DC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("DC_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

TABLES = ("samples", "variables", "contexts", "schema_version")
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def require_database(url: str) -> None:
    """Skip (or fail under DC_REQUIRE_SERVICES=1) when the server of ``url`` does not answer."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return
    require_service(parsed.host or "127.0.0.1", parsed.port or DEFAULT_PORTS[backend], backend)


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}_"


def drop_tables(url: str, prefix: str) -> None:
    """Drop the tables of ``prefix`` (tests only: the writer itself never drops anything)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            quote = conn.dialect.identifier_preparer.quote
            for name in TABLES:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(prefix + name)}")
    finally:
        engine.dispose()


def execute_sql(url: str, statements: list[str]) -> None:
    """Run ``statements`` on ``url`` in one transaction (tests only: DDL, faults, clean-up)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def boom_trigger(url: str, prefix: str) -> list[str]:
    """A trigger on ``prefix``'s samples table that makes inserting value_text 'boom' fail in the
    database itself; returns the statements that clean up what dropping the tables leaves."""
    backend = sa.make_url(url).get_backend_name()
    table = f"{prefix}samples"
    if backend == "sqlite":
        ddl = [
            f"CREATE TRIGGER {prefix}boom BEFORE INSERT ON {table} WHEN NEW.value_text = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
        ]
        cleanup: list[str] = []
    elif backend == "postgresql":
        ddl = [
            f"CREATE FUNCTION {prefix}boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.value_text = 'boom' THEN RAISE EXCEPTION 'boom refused'; END IF; RETURN NEW; END $$",
            f"CREATE TRIGGER {prefix}boom BEFORE INSERT ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {prefix}boom()",
        ]
        cleanup = [f"DROP TABLE IF EXISTS {table}", f"DROP FUNCTION IF EXISTS {prefix}boom()"]
    else:
        ddl = [
            f"CREATE TRIGGER {prefix}boom BEFORE INSERT ON {table} FOR EACH ROW BEGIN "
            "IF NEW.value_text = 'boom' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom refused'; "
            "END IF; END"
        ]
        cleanup = []
    execute_sql(url, ddl)
    return cleanup


def url_for(kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'store.sqlite'}"
    if kind == "postgresql":
        return POSTGRES_URL
    if kind == "mariadb":
        return MARIADB_URL
    raise ValueError(kind)


@contextmanager
def sql_store(kind: str, tmp: Path) -> Iterator[tuple[str, str]]:
    """``(url, table_prefix)`` of an empty store of ``kind``; its tables are dropped on exit."""
    url = url_for(kind, tmp)
    require_database(url)
    prefix = unique_prefix()
    try:
        yield url, prefix
    finally:
        drop_tables(url, prefix)


class SqlHarness(WriterHarness):
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    def new_writer(self) -> DataWriter:
        return SqlDataWriter(self.url, table_prefix=self.prefix)

    def read_back(self, context_id: int) -> list[StoredSample]:
        try:
            rows = read_samples(self.url, context_id, table_prefix=self.prefix)
        except ValueError:  # ConfigurationError: no tables yet, so nothing stored
            return []
        return [
            StoredSample(r.context_id, r.variable_id, r.read_at, r.value, r.quality, r.error) for r in rows
        ]

    def read_runs(self) -> dict[int, list[StoredRun]] | None:
        runs: dict[int, list[StoredRun]] = {}
        for run in read_contexts(self.url, table_prefix=self.prefix):
            runs.setdefault(run.context_id, []).append(StoredRun(run.start, run.end, run.metadata))
        return runs

    def proxy_target(self) -> tuple[str, int] | None:
        if sa.make_url(self.url).get_backend_name() == "sqlite":
            return None
        return proxy_target(self.url)

    def new_proxied_writer(self, proxy: FaultProxy) -> DataWriter:
        return SqlDataWriter(url_through(self.url, proxy.port), table_prefix=self.prefix, connect_timeout_s=2)


def _case(kind: str) -> WriterCase:
    @contextmanager
    def make(tmp: Path) -> Iterator[WriterHarness]:
        with sql_store(kind, tmp) as (url, prefix):
            yield SqlHarness(url, prefix)

    return WriterCase(f"sql-{kind}", make)


WRITER_CASES = [_case("sqlite"), _case("postgresql"), _case("mariadb")]


def proxy_target(url: str) -> tuple[str, int]:
    """``(host, port)`` of the server of ``url``, for a :class:`FaultProxy` in front of it."""
    parsed = sa.make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or DEFAULT_PORTS[parsed.get_backend_name()]


def url_through(url: str, port: int) -> str:
    """``url`` pointed at a proxy on 127.0.0.1:``port`` (same user, password and database)."""
    return sa.make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
