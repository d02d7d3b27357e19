"""The database side of the SQL writer: engine, schema set-up, idempotent batch inserts, read-back.

Fast paths per driver (one transaction per batch in every case):

- SQLite (stdlib ``sqlite3``): ``executemany`` of 100-row ``INSERT ... ON CONFLICT DO NOTHING``.
- PostgreSQL with psycopg 3: binary ``COPY ... FROM STDIN`` on the driver connection.
- MariaDB/MySQL with PyMySQL or mysqlclient: ``executemany``, which the driver turns into
  multi-row ``INSERT`` statements.
- Any other SQLAlchemy dialect: a Core ``insert()`` executemany (correct, not tuned).

Idempotence: ``COPY`` and plain ``INSERT`` cannot skip rows already stored, so they run
optimistically; when the primary key refuses a sample (the batch, or part of it, is stored
already: a retry after a lost COMMIT acknowledgement, a replay), the transaction is rolled back
and the batch is inserted again without the samples the table already holds (looked up by the
key over the batch's time range), in a new transaction. The common case pays nothing for it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import IntegrityError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from data_collector import ConfigurationError, DataCollectionContext, Quality, Variable

from ._codec import INT64_MAX, INT64_MIN, SampleTuple, decode_value, to_utc
from ._errors import is_transient_error
from ._schema import (
    AUTO_UPGRADE_FROM,
    DEDUCED_COLUMN,
    EPOCH,
    LABEL_COLUMNS,
    SAMPLE_COLUMNS,
    SAMPLE_KEY,
    SCHEMA_VERSION,
    Tables,
    build_tables,
    definition_hash,
    epoch_us,
    view_name,
    view_sql,
)
from ._url import safe_url

__all__ = ["ContextRun", "Definition", "MigrationResult", "SampleRow", "SqlStore", "jsonable", "make_engine"]

#: Rows per INSERT statement on SQLite (see SqlStore._insert_executemany).
_SQLITE_ROWS_PER_STATEMENT = 100

#: Tries of each step of an upgrade against concurrent writers (see SqlStore._upgrade).
_UPGRADE_ATTEMPTS = 6

#: Rows probed at the start of a time range to choose how to find a few variables in it.
_PROBE_ROWS = 4096

_PRAGMA_NAME = re.compile(r"[a-z_]+")
_PRAGMA_VALUE = re.compile(r"-?[A-Za-z0-9_]+")

#: Statements run on every new SQLite connection (``sqlite_pragmas`` adds to or overrides them).
DEFAULT_SQLITE_PRAGMAS: Mapping[str, str | int] = {
    "journal_mode": "WAL",
    "synchronous": "NORMAL",
}


class SampleRow(NamedTuple):
    """One stored sample, typed as it was collected (``read_at`` aware UTC), with the ``name`` and
    ``unit`` its variable had (``None``: none, or a store older than schema version 4)."""

    context_id: int
    variable_id: int
    address: str
    value_type: str
    reader_type: str
    read_at: datetime
    value: Any
    quality: Quality
    error: str | None
    name: str | None = None
    unit: str | None = None


#: The stored identity of a variable: id, address, value_type, reader_type, name, unit, description.
Definition = tuple[int, str, str, str, str | None, str | None, str | None]


class MigrationResult(NamedTuple):
    """What :func:`~data_writer.sql.migrate_store` did."""

    from_version: int
    to_version: int
    samples: int  # samples in the store after the migration
    duplicates_dropped: int  # rows of the old table that repeated a sample (dropped)


class ContextRun(NamedTuple):
    """One run of a context: when it started and ended (aware UTC, ``None`` if unknown), the
    user's ``metadata`` and the collector's ``deduced_metadata`` (collector, readers, writers,
    host, versions, start, end, ``ended``...; ``{}`` for runs a store of schema version 2 recorded)."""

    context_id: int
    start: datetime | None
    end: datetime | None
    metadata: dict[str, Any]
    deduced_metadata: dict[str, Any]

    @property
    def ended(self) -> str | None:
        """How the run ended (``"stopped"``, ``"duration"``, ``"closed"``, ``"completed"``,
        ``"exception: ..."``, ``"abnormal: ..."`` for a run replayed from the spool after a crash),
        ``None`` while it runs or when not recorded."""
        ended = self.deduced_metadata.get("ended")
        return None if ended is None else str(ended)


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON data: mappings and sequences kept, other values as their ``str``.

    Non-finite floats become ``"nan"``/``"inf"``/``"-inf"`` (JSON has no such numbers).
    """
    if depth > 50:
        return str(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _json_dict(value: Any) -> dict[str, Any]:
    """A stored JSON object as a dict (some drivers return JSON as text; NULL is ``{}``)."""
    if isinstance(value, str | bytes):
        value = json.loads(value)
    return dict(value) if isinstance(value, Mapping) else {}


def deduced_of(context: DataCollectionContext, *, end: datetime | None = None) -> dict[str, Any]:
    """The deduced metadata of ``context`` as JSON data, with ``start`` (and ``end``) when known."""
    deduced: dict[str, Any] = jsonable(dict(context.deduced_metadata))
    if context.start_date is not None:
        deduced.setdefault("start", to_utc(context.start_date).isoformat())
    if end is not None:
        deduced.setdefault("end", to_utc(end).isoformat())
    return deduced


def _is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and (
        not url.database or url.database == ":memory:" or url.query.get("mode") == "memory"
    )


def _check_pragmas(pragmas: Mapping[str, str | int]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, value in pragmas.items():
        text = str(value)
        if not isinstance(name, str) or not _PRAGMA_NAME.fullmatch(name) or not _PRAGMA_VALUE.fullmatch(text):
            raise ConfigurationError(f"SqlDataWriter: invalid SQLite pragma {name!r} = {value!r}")
        checked[name] = text
    return checked


_DEFAULT_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg2", "mysql": "mysqldb", "mariadb": "mysqldb"}


def io_timeout_args(url: URL, driver: str, io_timeout_s: float) -> dict[str, Any]:
    """Driver settings that bound how long a connection may stall (those the URL sets itself win).

    PostgreSQL (libpq): TCP keepalives (a silent peer is found out within about two thirds of
    ``io_timeout_s`` while the connection is idle) and ``tcp_user_timeout`` (data the peer does not
    acknowledge within ``io_timeout_s`` drops the connection); an operation the peer acknowledges
    but never answers is the writer's watchdog's (``_watchdog``). MariaDB/MySQL (PyMySQL,
    mysqlclient): ``read_timeout`` and ``write_timeout`` on every socket operation.
    """
    backend = url.get_backend_name()
    args: dict[str, Any] = {}
    if backend == "postgresql" and driver in ("psycopg", "psycopg2"):
        args = {
            "keepalives": 1,
            "keepalives_idle": max(1, math.ceil(io_timeout_s / 3)),
            "keepalives_interval": max(1, math.ceil(io_timeout_s / 9)),
            "keepalives_count": 3,
            "tcp_user_timeout": max(1, math.ceil(io_timeout_s * 1000)),
        }
    elif backend in ("mysql", "mariadb") and driver in ("pymysql", "mysqldb"):
        # PyMySQL takes float seconds, mysqlclient whole seconds
        timeout: float = io_timeout_s if driver == "pymysql" else max(1, math.ceil(io_timeout_s))
        args = {"read_timeout": timeout, "write_timeout": timeout}
    return {k: v for k, v in args.items() if k not in url.query}


def make_engine(
    url: URL,
    *,
    connect_timeout_s: float,
    sqlite_pragmas: Mapping[str, str | int] | None,
    engine_options: Mapping[str, Any] | None,
    io_timeout_s: float | None = None,
) -> Engine:
    """A SQLAlchemy engine for ``url`` with the per-driver settings the writer relies on
    (``io_timeout_s``: see :func:`io_timeout_args`; ``None``: none)."""
    backend = url.get_backend_name()
    # The driver named in the URL, else SQLAlchemy's default (without loading the dialect yet).
    driver = url.drivername.partition("+")[2] or _DEFAULT_DRIVERS.get(backend, "")
    options: dict[str, Any] = {"json_serializer": _json_dumps}
    connect_args: dict[str, Any] = {}
    timeout_int = max(1, math.ceil(connect_timeout_s))
    pragmas: dict[str, str] = {}
    if backend == "sqlite":
        connect_args["timeout"] = connect_timeout_s
        pragmas = _check_pragmas(
            {
                **DEFAULT_SQLITE_PRAGMAS,
                "busy_timeout": int(connect_timeout_s * 1000),
                **(sqlite_pragmas or {}),
            }
        )
        if _is_sqlite_memory(url):
            # One shared connection, so the writer thread and readers see the same database.
            options["poolclass"] = StaticPool
            connect_args["check_same_thread"] = False
            pragmas.pop("journal_mode", None)
    elif sqlite_pragmas:
        raise ConfigurationError(f"SqlDataWriter: sqlite_pragmas given for a {backend} database")
    elif backend == "postgresql" and driver in ("psycopg", "psycopg2"):
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = timeout_int
    elif backend in ("mysql", "mariadb") and driver in ("pymysql", "mysqldb"):
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = timeout_int
        if "charset" not in url.query:
            connect_args["charset"] = "utf8mb4"
    if io_timeout_s is not None:
        connect_args.update(io_timeout_args(url, driver, io_timeout_s))
    user = dict(engine_options or {})
    connect_args.update(user.pop("connect_args", None) or {})
    options.update(user)
    options["connect_args"] = connect_args
    try:
        engine = sa.create_engine(url, **options)
    except (NoSuchModuleError, ImportError) as exc:
        extra = {"postgresql": "postgresql", "mysql": "mariadb", "mariadb": "mariadb"}.get(backend, "sql")
        raise ConfigurationError(
            f"SqlDataWriter: no SQLAlchemy driver for {safe_url(url)} ({exc}); "
            f"install data-collector[{extra}] or the driver the URL names"
        ) from None
    except (TypeError, sa.exc.ArgumentError) as exc:
        raise ConfigurationError(
            f"SqlDataWriter: invalid engine options for {safe_url(url)}: {exc}"
        ) from None
    if backend == "sqlite":
        statements = [f"PRAGMA {name} = {value}" for name, value in pragmas.items()]

        def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                for statement in statements:
                    cursor.execute(statement)
            finally:
                cursor.close()

        event.listen(engine, "connect", _set_pragmas)
    elif backend in ("mysql", "mariadb"):

        def _strict(dbapi_connection: Any, _record: Any) -> None:
            # Strict mode for every table: too long or invalid data is an error, never truncated.
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(
                    "SET SESSION sql_mode = IF(@@SESSION.sql_mode = '', 'STRICT_ALL_TABLES', "
                    "CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES'))"
                )
            finally:
                cursor.close()

        event.listen(engine, "connect", _strict)
    return engine


def _iso_naive_utc(value: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` of ``value`` in UTC (SQLite text, MariaDB DATETIME(6))."""
    if value.tzinfo is not UTC:
        value = to_utc(value)
    return value.isoformat(" ", "microseconds")[:26]


def _naive_utc(value: datetime) -> datetime:
    return to_utc(value).replace(tzinfo=None)


def from_db_time(value: Any) -> datetime:
    """An aware UTC datetime from what the driver returned for a stored time."""
    if isinstance(value, int):
        return EPOCH + timedelta(microseconds=value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime from the database, got {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class SqlStore:
    """One database (engine) and one table prefix: schema set-up, inserts and queries.

    Methods taking a :class:`Connection` run their own transaction(s) on it.
    """

    def __init__(self, engine: Engine, prefix: str) -> None:
        self.engine = engine
        self.prefix = prefix
        dialect = engine.dialect
        self.backend = dialect.name
        driver = dialect.driver
        self.is_postgresql = self.backend == "postgresql"
        self.is_mysql = self.backend in ("mysql", "mariadb")
        #: PostgreSQL text cannot hold NUL characters.
        self.forbid_nul = self.is_postgresql
        self._tables: Tables | None = None
        self.to_core_time: Callable[[datetime], datetime] = to_utc
        if self.backend == "sqlite" or self.is_mysql:
            self.to_core_time = _naive_utc
        self.to_db_time: Callable[[datetime], Any] = self.to_core_time
        #: the insert path in use, for logs and benchmarks
        self.insert_path = "sqlalchemy core executemany"
        self._fast: str | None = None
        if self.backend == "sqlite" and driver == "pysqlite":
            self.to_db_time = epoch_us
            self._fast = "?"
        elif self.is_mysql and driver in ("pymysql", "mysqldb"):
            self.to_db_time = _iso_naive_utc
            self._fast = "%s"
        elif self.is_postgresql and driver == "psycopg":
            self.to_db_time = to_utc
            self._fast = "copy"
        if self._fast == "copy":
            self.insert_path = "psycopg binary COPY"
        elif self._fast is not None:
            self.insert_path = f"{driver} executemany"
        self._insert: Callable[[Connection, list[SampleTuple]], int] | None = None
        self._copy_statement: str | None = None
        #: whether ``<prefix>contexts`` has the deduced metadata column (not in a version 2 store
        #: that is only read)
        self.deduced_column = True
        #: whether ``<prefix>variables`` has the label columns (not in a version 2 or 3 store that
        #: is only read)
        self.label_columns = True

    def set_read_version(self, version: int | None) -> None:
        """Read a store of ``version`` as it is (older ones lack some columns)."""
        self.deduced_column = version is None or version >= 3
        self.label_columns = version is None or version >= 4

    # -- schema ---------------------------------------------------------------------------------
    @property
    def tables(self) -> Tables:
        """The table definitions (build them after a first connection: MySQL options need the version)."""
        if self._tables is None:
            self._tables = build_tables(self.prefix, self.engine.dialect)
        return self._tables

    def stored_version(self, conn: Connection) -> int | None:
        """The schema version recorded in the store, ``None`` when it has no version table (yet)."""
        version_table = self.tables.schema_version
        with conn.begin():
            if not sa.inspect(conn).has_table(version_table.name):
                return None
            version = conn.execute(sa.select(sa.func.max(version_table.c.version))).scalar()
        return None if version is None else int(version)

    def create_schema(self, conn: Connection) -> int | None:
        """Create the tables that are absent, record or check the schema version; bring a store of
        a version in :data:`AUTO_UPGRADE_FROM` to this one. The version upgraded from, if any."""
        tables = self.tables
        version = self.stored_version(conn)
        self.check_version(version)
        for attempt in (1, 2):
            try:
                with conn.begin():
                    tables.metadata.create_all(conn, checkfirst=True)
                break
            except sa.exc.DBAPIError:
                if attempt == 2:  # another writer may have created them at the same time: look again
                    raise
        version_table = tables.schema_version
        if version is None:
            with conn.begin():
                version = conn.execute(sa.select(sa.func.max(version_table.c.version))).scalar()
            if version is None:
                with contextlib.suppress(IntegrityError):  # else recorded by a concurrent writer
                    self._record_version(conn)
            else:
                version = int(version)
                self.check_version(version)
        upgraded = None
        if version in AUTO_UPGRADE_FROM:
            self._upgrade(conn)
            upgraded = version
        self.deduced_column = self.label_columns = True
        self.check_schema(conn)  # before the view: a foreign table of that name is refused as such
        self._despite_concurrent_writers(lambda: self._create_view(conn), lambda: self._has_view(conn))
        if upgraded is not None:
            self._despite_concurrent_writers(
                lambda: self._record_upgrade(conn), lambda: self.stored_version(conn) == SCHEMA_VERSION
            )
        return upgraded

    def _upgrade(self, conn: Connection) -> None:
        """Version 2 or 3 to 4: add the columns that are missing (``contexts.deduced_metadata``,
        the label columns of ``variables``: nullable); :meth:`create_schema` then checks the
        tables, creates the samples view and records version 4.

        Safe when several writers open the store at once: a column, view or version another one
        added meanwhile is taken as done, and a lock conflict with one of them (SQLite answers
        "database is locked" at once to a reader turning writer while another writes) is tried
        again, a few times over about a second.
        """

        def add_column(table: sa.Table, name: str) -> None:
            with conn.begin():
                ddl = self._add_columns_ddl(conn, [(table, (name,))])
                if ddl:
                    conn.exec_driver_sql(ddl[0])

        def column_added(table: sa.Table, name: str) -> bool:
            with conn.begin():
                return not self._add_columns_ddl(conn, [(table, (name,))])

        # one column at a time: another writer may be adding the same ones (MariaDB commits each)
        for table, names in self._added_columns():
            for name in names:
                self._despite_concurrent_writers(
                    functools.partial(add_column, table, name), functools.partial(column_added, table, name)
                )

    def _record_upgrade(self, conn: Connection) -> None:
        """Record this version after an upgrade (once: a concurrent writer may have done it)."""
        with contextlib.suppress(IntegrityError):  # else recorded by a concurrent writer
            self._record_version(conn)

    def _despite_concurrent_writers(self, step: Callable[[], None], done: Callable[[], bool]) -> None:
        """Run ``step``; when it fails, fine if ``done()`` (another writer did it), else try again
        after a short pause while the failure is transient (a lock), a few times."""
        for attempt in range(1, _UPGRADE_ATTEMPTS + 1):
            try:
                step()
                return
            except sa.exc.DBAPIError as exc:
                if done():
                    return
                if attempt == _UPGRADE_ATTEMPTS or not is_transient_error(exc, self.engine.dialect):
                    raise
            time.sleep(0.05 * attempt)  # another writer's DDL or insert: short

    def _added_columns(self) -> list[tuple[sa.Table, tuple[str, ...]]]:
        """The columns versions 3 and 4 added, by table."""
        return [(self.tables.contexts, (DEDUCED_COLUMN,)), (self.tables.variables, LABEL_COLUMNS)]

    def _add_columns_ddl(
        self, conn: Connection, columns: list[tuple[sa.Table, tuple[str, ...]]] | None = None
    ) -> list[str]:
        """``ALTER TABLE ... ADD COLUMN`` of each of ``columns`` (default: every column versions 3
        and 4 added) that the store lacks (none: it has them all)."""
        dialect = self.engine.dialect
        inspector = sa.inspect(conn)
        out = []
        for table, names in columns if columns is not None else self._added_columns():
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for name in names:
                if name not in present:
                    column = sa.schema.CreateColumn(table.c[name]).compile(dialect=dialect)
                    out.append(
                        f"ALTER TABLE {dialect.identifier_preparer.format_table(table)} ADD COLUMN {column}"
                    )
        return out

    def _has_view(self, conn: Connection) -> bool:
        with conn.begin():
            return view_name(self.prefix) in sa.inspect(conn).get_view_names()

    def _view_ddl(self) -> str:
        ddl = view_sql(self.prefix, self.engine.dialect)
        if self.engine.dialect.paramstyle in ("format", "pyformat"):  # a % is no placeholder
            ddl = ddl.replace("%", "%%")
        return ddl

    def _create_view(self, conn: Connection) -> None:
        """Create the samples view when absent (it is never replaced: a view a user changed stays)."""
        with conn.begin():
            if view_name(self.prefix) not in sa.inspect(conn).get_view_names():
                conn.exec_driver_sql(self._view_ddl())

    def _record_version(self, conn: Connection) -> None:
        with conn.begin():
            self._insert_version(conn)

    def _insert_version(self, conn: Connection) -> None:
        conn.execute(
            self.tables.schema_version.insert().values(
                version=SCHEMA_VERSION, applied_at=self.to_core_time(datetime.now(UTC))
            )
        )

    def check_version(self, version: int | None) -> None:
        """:class:`ConfigurationError` unless this code can write (or read) a store of ``version``:
        this version, a version it upgrades by itself, or none yet."""
        where = f"tables {self.prefix}* in {safe_url(self.engine.url)}"
        if version is None or version == SCHEMA_VERSION or version in AUTO_UPGRADE_FROM:
            return
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"SqlDataWriter: {where} have schema version {version}, newer than this "
                f"data-collector's {SCHEMA_VERSION}: upgrade data-collector"
            )
        raise ConfigurationError(
            f"SqlDataWriter: {where} have schema version {version}; this data-collector writes version "
            f"{SCHEMA_VERSION} (every sample stored exactly once, keyed by context, read time and "
            f"variable). Migrate the store once, with no writer running on it: "
            f"data-collector migrate '<url>' --table-prefix {self.prefix} (or in Python: "
            f"data_writer.sql.migrate_store('<url>', table_prefix='{self.prefix}')), which copies the "
            f"samples into the new table, dropping repeated ones; or use another table_prefix"
        )

    def migrate(self, conn: Connection) -> MigrationResult:
        """Bring a store of an older version to this one, in place.

        Version 1 to 2: its samples move to ``<prefix>samples`` with the primary key (a sample
        stored twice by version 1, e.g. after a lost COMMIT acknowledgement, is kept once); the old
        table is renamed ``<prefix>samples_v1`` first and dropped at the end. Version 2 to 3: the
        ``contexts.deduced_metadata`` column is added. Version 3 to 4: the label columns of
        ``variables`` and the samples view are added (the writer does these two by itself too).
        On SQLite and PostgreSQL it is one transaction; on MariaDB/MySQL (whose DDL commits by
        itself) running it again after an interruption finishes the job.
        """
        version = self.stored_version(conn)
        if version is None:
            raise ConfigurationError(
                f"no data-collector tables with prefix {self.prefix!r} in {safe_url(self.engine.url)}"
            )
        tables = self.tables
        if version >= SCHEMA_VERSION:
            self.check_version(version)
            with conn.begin():
                count = conn.execute(sa.select(sa.func.count()).select_from(tables.samples)).scalar()
            return MigrationResult(version, version, int(count or 0), 0)
        preparer = self.engine.dialect.identifier_preparer
        new = preparer.format_table(tables.samples)
        old_name = f"{self.prefix}samples_v1"
        old = preparer.quote(old_name)
        with conn.begin():
            inspector = sa.inspect(conn)
            before = None
            if version < 2:
                if not inspector.has_table(old_name):
                    conn.exec_driver_sql(f"ALTER TABLE {new} RENAME TO {old}")
                tables.samples.create(conn, checkfirst=True)
                conn.exec_driver_sql(self._copy_v1_samples_sql(new, old))
                before = int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {old}").scalar() or 0)
            for ddl in self._add_columns_ddl(conn):
                conn.exec_driver_sql(ddl)
            if view_name(self.prefix) not in sa.inspect(conn).get_view_names():
                conn.exec_driver_sql(self._view_ddl())
            after = int(conn.execute(sa.select(sa.func.count()).select_from(tables.samples)).scalar() or 0)
            self._insert_version(conn)
            if before is not None:
                conn.exec_driver_sql(f"DROP TABLE {old}")
        dropped = 0 if before is None else max(0, before - after)
        return MigrationResult(version, SCHEMA_VERSION, after, dropped)

    def _copy_v1_samples_sql(self, new: str, old: str) -> str:
        """The statement copying version 1 samples (table ``old``) into the keyed table ``new``."""
        preparer = self.engine.dialect.identifier_preparer
        data = ["value_kind", "value_num", "value_int", "value_text", "quality", "error"]
        read_at = "read_at"
        if self.backend == "sqlite":  # ISO text -> microseconds since the epoch
            read_at = (
                "(CAST(strftime('%s', substr(read_at, 1, 19)) AS INTEGER) * 1000000 "
                "+ CAST(substr(read_at || '.000000', 21, 6) AS INTEGER))"
            )
        names = ", ".join(preparer.quote(c) for c in ("context_id", "read_at", "variable_key", *data))
        values = ", ".join(["context_id", read_at, "variable_key", *data])
        select = f"SELECT {values} FROM {old} WHERE 1 = 1 ORDER BY id"
        if self.is_mysql:
            update = "ON DUPLICATE KEY UPDATE context_id = VALUES(context_id)"
            return f"INSERT INTO {new} ({names}) {select} {update}"
        key = ", ".join(preparer.quote(c) for c in SAMPLE_KEY)
        return f"INSERT INTO {new} ({names}) {select} ON CONFLICT ({key}) DO NOTHING"

    def check_schema(self, conn: Connection) -> None:
        """:class:`ConfigurationError` unless the tables have the columns this code uses."""
        tables = self.tables
        for table in (tables.contexts, tables.variables, tables.samples):
            columns = [
                c
                for c in table.c
                if (self.deduced_column or c.name != DEDUCED_COLUMN)
                and (self.label_columns or table is not tables.variables or c.name not in LABEL_COLUMNS)
            ]
            try:
                with conn.begin():
                    conn.execute(sa.select(*columns).where(sa.false()).limit(1)).all()
            except sa.exc.DBAPIError as exc:
                raise ConfigurationError(
                    f"SqlDataWriter: table {table.name} in {safe_url(self.engine.url)} is missing or not a "
                    f"data-collector table (use another table_prefix): {exc.orig}"
                ) from None

    def has_tables(self) -> bool:
        return sa.inspect(self.engine).has_table(self.tables.samples.name)

    # -- variables --------------------------------------------------------------------------
    @staticmethod
    def definition(variable: Variable) -> Definition:
        """The stored identity of a variable; :class:`ConfigurationError` if its id does not fit BIGINT."""
        if not INT64_MIN <= variable.id <= INT64_MAX:
            raise ConfigurationError(
                f"SqlDataWriter: variable id {variable.id} is outside the signed 64-bit range of the database"
            )
        return (
            variable.id,
            variable.address,
            variable.value_type,
            variable.reader_type,
            variable.name,
            variable.unit,
            variable.description,
        )

    def variable_keys(self, conn: Connection, definitions: Iterable[Definition]) -> dict[Definition, int]:
        """Row ids of the given variable definitions, inserting those not stored yet (own transaction)."""
        wanted = {(d, definition_hash(*d[1:])) for d in set(definitions)}
        table = self.tables.variables
        found: dict[Definition, int] = {}
        for attempt in (1, 2):
            try:
                with conn.begin():
                    by_hash = {(d[0], h): d for d, h in wanted}
                    ids = sorted({d[0] for d, _ in wanted})
                    for i in range(0, len(ids), 500):
                        query = sa.select(table.c.id, table.c.variable_id, table.c.definition_hash).where(
                            table.c.variable_id.in_(ids[i : i + 500])
                        )
                        for key, vid, digest in conn.execute(query):
                            hit = by_hash.get((int(vid), digest))
                            if hit is not None:
                                found[hit] = int(key)
                    for definition, digest in sorted(wanted, key=lambda w: (w[0][0], w[1])):
                        if definition in found:
                            continue
                        vid, address, value_type, reader_type, name, unit, description = definition
                        result = conn.execute(
                            table.insert().values(
                                variable_id=vid,
                                address=address,
                                value_type=value_type,
                                reader_type=reader_type,
                                definition_hash=digest,
                                name=name,
                                unit=unit,
                                description=description,
                            )
                        )
                        pk = result.inserted_primary_key
                        assert pk is not None
                        found[definition] = int(pk[0])
                return found
            except IntegrityError:
                found.clear()  # inserted concurrently by another writer: read it
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- contexts -----------------------------------------------------------------------------
    def insert_run(self, conn: Connection, context: DataCollectionContext) -> int:
        """Record a run of ``context`` (start, user and deduced metadata); the run already recorded
        with the same start if there is one (a retry after a lost COMMIT acknowledgement, a start
        replayed from the spool), its deduced metadata completed with what ``context`` adds."""
        table = self.tables.contexts
        start = context.start_date
        deduced = deduced_of(context)
        with conn.begin():
            found = self._find_run(conn, context, open_only=False) if start is not None else None
            if found is not None:
                run_id, stored = found
                merged = {**stored, **deduced}
                if merged != stored:
                    conn.execute(table.update().where(table.c.id == run_id).values({DEDUCED_COLUMN: merged}))
                return run_id
            return self._insert_run_row(conn, context, None, deduced)

    def end_run(self, conn: Connection, run_id: int | None, context: DataCollectionContext) -> int:
        """Record the end of a run: its end time, and its deduced metadata completed (``end``,
        ``ended``). The run is ``run_id``, else the one recorded with the same start (else the
        open run of the context); a run never recorded is recorded now."""
        table = self.tables.contexts
        end = context.end_date if context.end_date is not None else datetime.now(UTC)
        deduced = deduced_of(context, end=end)
        with conn.begin():
            found: tuple[int, dict[str, Any]] | None
            if run_id is not None:
                stored = conn.execute(sa.select(table.c[DEDUCED_COLUMN]).where(table.c.id == run_id)).first()
                found = None if stored is None else (run_id, _json_dict(stored[0]))
            else:
                found = self._find_run(conn, context, open_only=context.start_date is None)
            if found is None:
                return self._insert_run_row(conn, context, end, deduced)
            run_id, before = found
            conn.execute(
                table.update()
                .where(table.c.id == run_id)
                .values({"end_date": self.to_core_time(end), DEDUCED_COLUMN: {**before, **deduced}})
            )
            return run_id

    def _find_run(
        self, conn: Connection, context: DataCollectionContext, *, open_only: bool
    ) -> tuple[int, dict[str, Any]] | None:
        """The latest recorded run of ``context`` with its start (or, ``open_only``, not ended):
        its id and deduced metadata."""
        table = self.tables.contexts
        query = sa.select(table.c.id, table.c[DEDUCED_COLUMN]).where(table.c.context_id == context.id)
        if context.start_date is not None:
            query = query.where(table.c.start_date == self.to_core_time(context.start_date))
        if open_only:
            query = query.where(table.c.end_date.is_(None))
        row = conn.execute(query.order_by(table.c.id.desc()).limit(1)).first()
        return None if row is None else (int(row[0]), _json_dict(row[1]))

    def _insert_run_row(
        self, conn: Connection, context: DataCollectionContext, end: datetime | None, deduced: dict[str, Any]
    ) -> int:
        start = context.start_date
        result = conn.execute(
            self.tables.contexts.insert().values(
                {
                    "context_id": context.id,
                    "start_date": self.to_core_time(start) if start is not None else None,
                    "end_date": self.to_core_time(end) if end is not None else None,
                    "metadata": jsonable(dict(context.metadata)),
                    DEDUCED_COLUMN: deduced,
                }
            )
        )
        pk = result.inserted_primary_key
        assert pk is not None
        return int(pk[0])

    # -- samples -------------------------------------------------------------------------------
    def insert_samples(self, conn: Connection, rows: list[SampleTuple]) -> int:
        """Insert one batch in one transaction, on the driver's fastest path; the samples inserted.

        Samples the table holds already (same context, read time and variable) are skipped, so
        re-running a batch never duplicates a sample; ``len(rows)`` minus the result is how many.
        """
        insert = self._insert
        if insert is None:
            if self._fast == "copy":
                insert = self._insert_copy
            elif self._fast is not None:
                insert = self._insert_executemany(self._fast)
            else:
                insert = self._insert_core
            self._insert = insert
        try:
            with conn.begin():
                return insert(conn, rows)
        except (sa.exc.DBAPIError, self.engine.dialect.loaded_dbapi.Error) as exc:
            if not self._is_duplicate_key(exc):
                raise
        # Some of these samples are stored already (a retry or a replay): insert the others.
        with conn.begin():
            fresh = self._not_stored(conn, rows)
            return insert(conn, fresh) if fresh else 0

    def _is_duplicate_key(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a unique-key violation (the samples' primary key refusing a row)."""
        orig: Any = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
        if getattr(orig, "sqlstate", None) == "23505" or getattr(orig, "pgcode", None) == "23505":
            return True
        args = getattr(orig, "args", ())
        if self.is_mysql and args and args[0] == 1062:
            return True
        return self._fast is None and isinstance(exc, sa.exc.IntegrityError)

    def time_key(self, value: Any) -> int:
        """A stored or encoded read time as microseconds since the epoch (for comparing keys)."""
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return epoch_us(value)

    def _not_stored(self, conn: Connection, rows: list[SampleTuple]) -> list[SampleTuple]:
        """``rows`` without the samples the table holds (and without repeats within ``rows``)."""
        table = self.tables.samples
        time_key = self.time_key
        stored: set[tuple[int, int, int]] = set()
        by_context: dict[int, list[int]] = {}
        for row in rows:
            by_context.setdefault(row[0], []).append(time_key(row[2]))
        for context_id, times in by_context.items():
            lo = EPOCH + timedelta(microseconds=min(times))
            hi = EPOCH + timedelta(microseconds=max(times))
            query = sa.select(table.c.variable_key, table.c.read_at).where(
                table.c.context_id == context_id,
                table.c.read_at >= self.to_core_time(lo),
                table.c.read_at <= self.to_core_time(hi),
            )
            stored.update((context_id, int(key), time_key(at)) for key, at in conn.execute(query))
        fresh = []
        for row in rows:
            identity = (row[0], row[1], time_key(row[2]))
            if identity not in stored:
                stored.add(identity)
                fresh.append(row)
        return fresh

    def _insert_executemany(self, placeholder: str) -> Callable[[Connection, list[SampleTuple]], int]:
        table = self.tables.samples
        preparer = self.engine.dialect.identifier_preparer
        columns = ", ".join(preparer.quote(c) for c in SAMPLE_COLUMNS)
        head = f"INSERT INTO {preparer.format_table(table)} ({columns}) VALUES "
        one = f"({', '.join([placeholder] * len(SAMPLE_COLUMNS))})"
        if self.backend != "sqlite":
            statement = head + one  # the driver sends multi-row INSERTs by itself

            def insert(conn: Connection, rows: list[SampleTuple]) -> int:
                count = conn.exec_driver_sql(statement, rows).rowcount
                return count if isinstance(count, int) and 0 <= count <= len(rows) else len(rows)

            return insert
        # SQLite: skips stored samples by itself (never needs the second pass), and takes rows
        # by hundreds per statement: sqlite3's executemany costs per statement run, and 100-row
        # statements insert 1.4-1.8x as many rows/s as one-row ones (900 parameters: within
        # the 999 of the oldest SQLite builds).
        key = ", ".join(preparer.quote(c) for c in SAMPLE_KEY)
        tail = f" ON CONFLICT ({key}) DO NOTHING"
        per = _SQLITE_ROWS_PER_STATEMENT
        width = len(SAMPLE_COLUMNS)
        full = head + ", ".join([one] * per) + tail
        short: dict[int, str] = {}

        def insert_sqlite(conn: Connection, rows: list[SampleTuple]) -> int:
            n = len(rows)
            whole = n - n % per
            flat = tuple(itertools.chain.from_iterable(rows))
            inserted = 0
            if whole:
                step = per * width
                params = [flat[i : i + step] for i in range(0, whole * width, step)]
                inserted += conn.exec_driver_sql(full, params).rowcount
            if whole < n:
                statement = short.get(n - whole)
                if statement is None:
                    statement = short[n - whole] = head + ", ".join([one] * (n - whole)) + tail
                inserted += conn.exec_driver_sql(statement, flat[whole * width :]).rowcount
            return inserted

        return insert_sqlite

    #: PostgreSQL types of SAMPLE_COLUMNS, for binary COPY.
    _COPY_TYPES = ("int8", "int4", "timestamptz", "varchar", "float8", "int8", "text", "varchar", "text")

    def _insert_copy(self, conn: Connection, rows: list[SampleTuple]) -> int:
        statement = self._copy_statement
        if statement is None:
            preparer = self.engine.dialect.identifier_preparer
            columns = ", ".join(preparer.quote(c) for c in SAMPLE_COLUMNS)
            table = preparer.format_table(self.tables.samples)
            statement = self._copy_statement = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
        raw: Any = conn.connection.dbapi_connection
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(self._COPY_TYPES)
            write_row = copy.write_row
            for row in rows:
                write_row(row)
        return len(rows)

    def _insert_core(self, conn: Connection, rows: list[SampleTuple]) -> int:
        conn.execute(
            self.tables.samples.insert(), [dict(zip(SAMPLE_COLUMNS, row, strict=True)) for row in rows]
        )
        return len(rows)

    # -- read-back -------------------------------------------------------------------------------
    def select_samples(
        self,
        conn: Connection,
        context_id: int,
        variable_ids: Sequence[int] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> list[SampleRow]:
        """Samples of a context in time order (read time, then variable), optionally only of
        ``variable_ids`` and within ``[start, end)``.

        A few variables of a context that has many: when the first rows of the range show many
        samples per read time, a loose index scan visits each distinct read time once (one key
        seek to the next time, one per wanted variable) instead of every sample in the range.
        """
        s = self.tables.samples
        v = self.tables.variables
        time_conds: list[sa.ColumnElement[bool]] = []
        if start is not None:
            time_conds.append(s.c.read_at >= self.to_core_time(start))
        if end is not None:
            time_conds.append(s.c.read_at < self.to_core_time(end))
        with conn.begin():
            source: sa.FromClause = s
            conds: list[sa.ColumnElement[bool]] = [s.c.context_id == context_id, *time_conds]
            if variable_ids is not None:
                keys = self._keys_of(conn, variable_ids)
                if not keys:
                    return []
                conds.append(s.c.variable_key.in_(keys))
                loose = self.backend == "sqlite" or self.is_postgresql or self.is_mysql
                if loose and self._loose_scan_pays(conn, context_id, time_conds, len(keys)):
                    times = self._distinct_times(context_id, time_conds, end)
                    source = times.join(s, sa.and_(s.c.context_id == context_id, s.c.read_at == times.c.x))
                    # The range is in ``times`` only: bounds on ``s`` too would tempt the planner to
                    # scan ``s`` over the range and look each row up in ``times``.
                    conds = [s.c.context_id == context_id, s.c.variable_key.in_(keys)]
            labels: list[Any] = [v.c.name, v.c.unit] if self.label_columns else [sa.null(), sa.null()]
            query = (
                sa.select(
                    v.c.variable_id,
                    v.c.address,
                    v.c.value_type,
                    v.c.reader_type,
                    *labels,
                    s.c.read_at,
                    s.c.value_kind,
                    s.c.value_num,
                    s.c.value_int,
                    s.c.value_text,
                    s.c.quality,
                    s.c.error,
                )
                .select_from(source.join(v, v.c.id == s.c.variable_key))
                .where(*conds)
                .order_by(s.c.read_at, s.c.variable_key)
            )
            qualities = {q.value: q for q in Quality}
            result = conn.execute(query)
            return [
                SampleRow(
                    context_id,
                    int(vid),
                    address,
                    value_type,
                    reader_type,
                    from_db_time(read_at),
                    decode_value(kind, num, ival, text),
                    qualities.get(quality) or Quality(quality),
                    error,
                    name,
                    unit,
                )
                for (
                    vid,
                    address,
                    value_type,
                    reader_type,
                    name,
                    unit,
                    read_at,
                    kind,
                    num,
                    ival,
                    text,
                    quality,
                    error,
                ) in result
            ]

    def _keys_of(self, conn: Connection, variable_ids: Sequence[int]) -> list[int]:
        """Row ids in the variables table of every definition of ``variable_ids``."""
        v = self.tables.variables
        ids = sorted(set(variable_ids))
        keys: list[int] = []
        for i in range(0, len(ids), 500):
            query = sa.select(v.c.id).where(v.c.variable_id.in_(ids[i : i + 500]))
            keys.extend(int(k) for k in conn.execute(query).scalars())
        return sorted(keys)

    def _loose_scan_pays(
        self, conn: Connection, context_id: int, time_conds: list[sa.ColumnElement[bool]], n_keys: int
    ) -> bool:
        """Whether seeking per distinct read time beats scanning the range (judged on its first rows)."""
        s = self.tables.samples
        probe = (
            sa.select(s.c.read_at)
            .where(s.c.context_id == context_id, *time_conds)
            .order_by(s.c.read_at)
            .limit(_PROBE_ROWS)
        )
        times = conn.execute(probe).scalars().all()
        if len(times) < _PROBE_ROWS:  # a short range: scanning it is cheapest
            return False
        # A seek costs about as much as reading some tens of rows in key order.
        return len(times) / len(set(times)) >= 32 * (1 + n_keys)

    def _distinct_times(
        self, context_id: int, time_conds: list[sa.ColumnElement[bool]], end: datetime | None
    ) -> sa.FromClause:
        """``t(x)``: the distinct read times of a context in the range, found one key seek each.

        SQLite and PostgreSQL: a recursive CTE stepping to the next time. MariaDB/MySQL: a
        ``GROUP BY`` on the key prefix, which they run as a loose index scan ("index for
        group-by"); their recursive CTEs are far slower (and MariaDB stops them at 1,000 steps).
        """
        s = self.tables.samples
        if self.is_mysql:
            grouped = sa.select(s.c.read_at.label("x")).where(s.c.context_id == context_id, *time_conds)
            return grouped.group_by(s.c.context_id, s.c.read_at).subquery("t")
        nxt = s.alias("nxt")
        first = sa.select(sa.func.min(s.c.read_at).label("x"))
        first = first.where(s.c.context_id == context_id, *time_conds)
        times = first.cte("t", recursive=True)
        conds = [nxt.c.context_id == context_id, nxt.c.read_at > times.c.x]
        if end is not None:
            conds.append(nxt.c.read_at < self.to_core_time(end))
        following = sa.select(sa.func.min(nxt.c.read_at)).where(*conds).scalar_subquery()
        return times.union_all(sa.select(following).where(times.c.x.is_not(None)))

    def context_known(self, conn: Connection, context_id: int) -> bool:
        """Whether the store has a run or a sample of ``context_id`` (two key seeks)."""
        contexts, samples = self.tables.contexts, self.tables.samples
        with conn.begin():
            query = sa.select(contexts.c.id).where(contexts.c.context_id == context_id).limit(1)
            if conn.execute(query).first() is not None:
                return True
            query = sa.select(samples.c.context_id).where(samples.c.context_id == context_id).limit(1)
            return conn.execute(query).first() is not None

    def select_runs(self, conn: Connection, context_id: int | None) -> list[ContextRun]:
        table = self.tables.contexts
        deduced = table.c[DEDUCED_COLUMN] if self.deduced_column else sa.null()
        query = sa.select(table.c.context_id, table.c.start_date, table.c.end_date, table.c.metadata, deduced)
        if context_id is not None:
            query = query.where(table.c.context_id == context_id)
        query = query.order_by(table.c.id)
        with conn.begin():
            rows = conn.execute(query).all()
        return [
            ContextRun(
                int(cid),
                from_db_time(start) if start is not None else None,
                from_db_time(end) if end is not None else None,
                _json_dict(metadata),
                _json_dict(found),
            )
            for cid, start, end, metadata, found in rows
        ]
