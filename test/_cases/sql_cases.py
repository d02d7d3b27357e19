"""Contract cases of the SQL writer: SQLite (a file), PostgreSQL and MariaDB (the local servers).

Server URLs come from ``DC_TEST_POSTGRES_URL`` / ``DC_TEST_MARIADB_URL`` (defaults: the local
servers); a case skips when its server is unreachable or refuses the URL's login (authentication,
or no such database) unless ``DC_REQUIRE_SERVICES=1``. Every
store uses its own table prefix and drops its tables on exit, so parallel runs do not collide.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from data_collector import DataWriter, Quality
from data_collector.testing import FaultProxy
from data_writer.sql import SqlDataWriter, read_contexts, read_samples
from data_writer.sql._schema import build_tables, definition_hash

from . import StoredRun, StoredSample, WriterCase, WriterHarness, require_login, require_service

POSTGRES_URL = os.environ.get("DC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("DC_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

TABLES = ("samples", "variables", "contexts", "schema_version")
VIEWS = ("samples_view",)
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


URL_VARIABLES = {
    "postgresql": "DC_TEST_POSTGRES_URL",
    "mysql": "DC_TEST_MARIADB_URL",
    "mariadb": "DC_TEST_MARIADB_URL",
}
#: SQLSTATE classes / MySQL error numbers that mean "these credentials or this database are not
#: usable here": PostgreSQL 28xxx (invalid authorization: password, role, pg_hba) and 3D000 (no
#: such database); MySQL/MariaDB 1044/1045/1698 (access denied) and 1049 (unknown database).
_PG_REFUSED = ("28", "3D000")
_MYSQL_REFUSED = frozenset({1044, 1045, 1049, 1698})
#: libpq reports a refused connection without a SQLSTATE: its FATAL message says why
_PG_REFUSED_TEXT = re.compile(
    r'authentication failed|role ".*" does not exist|database ".*" does not exist|no pg_hba\.conf entry'
)


def require_database(url: str) -> None:
    """Skip (or fail under DC_REQUIRE_SERVICES=1) when the server of ``url`` does not answer or
    refuses to log in with the URL's credentials (or has no such database)."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return
    require_service(parsed.host or "127.0.0.1", parsed.port or DEFAULT_PORTS[backend], backend)
    require_login(url, lambda: login_refused(url))


def login_refused(url: str) -> str | None:
    """Why ``url`` cannot be logged into (credentials or database refused), or None when it can.

    Other errors (a server that answers nonsense, a driver missing) are raised: they are failures.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    timeout = {"connect_timeout": 5}
    engine = sa.create_engine(url, connect_args=timeout)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return None
    except sa.exc.DBAPIError as exc:
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None)
        code = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
        refused = (
            (isinstance(sqlstate, str) and sqlstate.startswith(_PG_REFUSED))
            or code in _MYSQL_REFUSED
            or (backend == "postgresql" and _PG_REFUSED_TEXT.search(str(orig)) is not None)
        )
        if not refused:
            raise
        first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        return (
            f"{backend} at {parsed.host}:{parsed.port or DEFAULT_PORTS[backend]} refused the test login "
            f"{parsed.render_as_string(hide_password=True)}: {first} (set {URL_VARIABLES[backend]} to a "
            "user and database of that server)"
        )
    finally:
        engine.dispose()


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}_"


def drop_tables(url: str, prefix: str) -> None:
    """Drop the tables of ``prefix`` (tests only: the writer itself never drops anything)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            quote = conn.dialect.identifier_preparer.quote
            for name in VIEWS:  # first: PostgreSQL refuses to drop a table a view reads
                conn.exec_driver_sql(f"DROP VIEW IF EXISTS {quote(prefix + name)}")
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
        cleanup = [
            f"DROP VIEW IF EXISTS {prefix}samples_view",  # first: it reads the table
            f"DROP TABLE IF EXISTS {table}",
            f"DROP FUNCTION IF EXISTS {prefix}boom()",
        ]
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

    return WriterCase(f"sql-{kind}", make, array_values=True)


WRITER_CASES = [_case("sqlite"), _case("postgresql"), _case("mariadb")]


def proxy_target(url: str) -> tuple[str, int]:
    """``(host, port)`` of the server of ``url``, for a :class:`FaultProxy` in front of it."""
    parsed = sa.make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or DEFAULT_PORTS[parsed.get_backend_name()]


def url_through(url: str, port: int) -> str:
    """``url`` pointed at a proxy on 127.0.0.1:``port`` (same user, password and database)."""
    return sa.make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def v2_contexts_table(prefix: str) -> sa.Table:
    """The contexts table as versions 1 and 2 created it (no deduced_metadata)."""
    time_type: Any = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    json_type: Any = sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )
    return sa.Table(
        f"{prefix}contexts",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("context_id", sa.BigInteger, nullable=False),
        sa.Column("start_date", time_type),
        sa.Column("end_date", time_type),
        sa.Column("metadata", json_type),
        sa.Index(f"{prefix}contexts_context", "context_id"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


def v3_variables_table(prefix: str) -> sa.Table:
    """The variables table as versions 1 to 3 created it (no name, unit, description)."""
    long_text: Any = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    return sa.Table(
        f"{prefix}variables",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("variable_id", sa.BigInteger, nullable=False),
        sa.Column("address", long_text, nullable=False),
        sa.Column("value_type", long_text, nullable=False),
        sa.Column("reader_type", long_text, nullable=False),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("variable_id", "definition_hash", name=f"{prefix}variables_definition"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


def v1_samples_table(prefix: str) -> sa.Table:
    """The samples table as version 1 created it."""
    time_type: Any = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    long_text: Any = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    return sa.Table(
        f"{prefix}samples",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("context_id", sa.BigInteger, nullable=False),
        sa.Column("variable_key", sa.Integer, nullable=False),
        sa.Column("read_at", time_type, nullable=False),
        sa.Column("value_kind", sa.String(8)),
        sa.Column("value_num", sa.Double()),
        sa.Column("value_int", sa.BigInteger),
        sa.Column("value_text", long_text),
        sa.Column("quality", sa.String(9), nullable=False),
        sa.Column("error", long_text),
        sa.Index(f"{prefix}samples_ctx_var_time", "context_id", "variable_key", "read_at"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


def make_v1_store(url: str, prefix: str, T0: datetime) -> list[tuple[int, datetime, Any, Quality]]:
    """A store as version 1 left it (with a sample stored twice); the distinct samples in it."""
    engine = sa.create_engine(url)
    v2 = build_tables(prefix, engine.dialect)
    v1 = v1_samples_table(prefix)
    contexts = v2_contexts_table(prefix)  # versions 1 and 2 had no deduced metadata
    variables = v3_variables_table(prefix)  # versions 1 to 3 had no labels
    naive = engine.dialect.name != "postgresql"

    def t(dt: datetime) -> datetime:
        return dt.replace(tzinfo=None) if naive else dt

    samples = [
        (1, T0, ("float", 1.25, None, None), Quality.GOOD),
        (2, T0, ("int", None, 7, None), Quality.GOOD),
        (1, T0 + timedelta(seconds=1, microseconds=999_999), ("float", None, None, "nan"), Quality.UNCERTAIN),
        (2, T0 + timedelta(seconds=1, microseconds=999_999), ("str", None, None, "Grüße"), Quality.GOOD),
        (1, datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC), (None, None, None, None), Quality.BAD),
    ]
    try:
        with engine.begin() as conn:
            v2.metadata.create_all(conn, tables=[v2.schema_version])
            variables.create(conn)
            contexts.create(conn)
            v1.create(conn)
            conn.execute(v2.schema_version.insert().values(version=1, applied_at=t(T0)))
            conn.execute(
                contexts.insert().values(context_id=3, start_date=t(T0), end_date=None, metadata={"a": 1})
            )
            keys = {}
            for vid, address in ((1, "x"), (2, "y")):
                result = conn.execute(
                    variables.insert().values(
                        variable_id=vid * 10,
                        address=address,
                        value_type="float",
                        reader_type="r",
                        definition_hash=definition_hash(address, "float", "r"),
                    )
                )
                assert result.inserted_primary_key is not None
                keys[vid] = int(result.inserted_primary_key[0])
            rows = [
                {
                    "context_id": 3,
                    "variable_key": keys[n],
                    "read_at": t(at),
                    "value_kind": v[0],
                    "value_num": v[1],
                    "value_int": v[2],
                    "value_text": v[3],
                    "quality": q.value,
                    "error": "old error" if q is Quality.BAD else None,
                }
                for n, at, v, q in samples
            ]
            conn.execute(v1.insert(), rows + rows[1:2])  # the second sample twice, as a retry did
    finally:
        engine.dispose()
    kinds = {"float": float, "int": int, "str": str}
    out = []
    for key, at, v, q in samples:
        value = None if v[0] is None else kinds[v[0]](next(x for x in v[1:] if x is not None))
        out.append((key * 10, at, value, q))
    return out


def make_v2_store(url: str, prefix: str, T0: datetime, *, version: int = 2) -> None:
    """A store as schema version 2 left it: one ended run of context 3 with two samples
    (``version=3``: as version 3 left it, with ``contexts.deduced_metadata``)."""
    engine = sa.create_engine(url)
    current = build_tables(prefix, engine.dialect)
    contexts = v2_contexts_table(prefix) if version == 2 else current.contexts
    variables = v3_variables_table(prefix)
    naive = engine.dialect.name != "postgresql"

    def t(dt: datetime) -> datetime:
        return dt.replace(tzinfo=None) if naive else dt

    try:
        with engine.begin() as conn:
            current.metadata.create_all(conn, tables=[current.schema_version, current.samples])
            variables.create(conn)
            contexts.create(conn)
            conn.execute(current.schema_version.insert().values(version=version, applied_at=t(T0)))
            conn.execute(
                contexts.insert().values(
                    context_id=3, start_date=t(T0), end_date=t(T0 + timedelta(seconds=9)), metadata={"lot": 7}
                )
            )
            key = conn.execute(
                variables.insert().values(
                    variable_id=1,
                    address="counter",
                    value_type="int",
                    reader_type="random",
                    definition_hash=definition_hash("counter", "int", "random"),
                )
            ).inserted_primary_key
            assert key is not None
            for i in range(2):
                at = T0 + timedelta(seconds=i)
                conn.execute(
                    current.samples.insert().values(
                        context_id=3,
                        read_at=at if engine.dialect.name in ("sqlite", "postgresql") else t(at),
                        variable_key=int(key[0]),
                        value_kind="int",
                        value_int=i,
                        quality="GOOD",
                    )
                )
    finally:
        engine.dispose()
