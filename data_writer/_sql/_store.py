"""The database side of the SQL writer: engine, schema set-up, fast batch inserts, read-back.

Fast paths per driver (one transaction per batch in every case):

- SQLite (stdlib ``sqlite3``): ``exec_driver_sql`` with a list of tuples, i.e. ``executemany``.
- PostgreSQL with psycopg 3: binary ``COPY ... FROM STDIN`` on the driver connection.
- MariaDB/MySQL with PyMySQL or mysqlclient: ``exec_driver_sql`` with tuples, which the driver
  turns into multi-row ``INSERT`` statements.
- Any other SQLAlchemy dialect: a Core ``insert()`` executemany (correct, not tuned).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import IntegrityError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from data_collector._errors import ConfigurationError
from data_collector._model import DataCollectionContext, Quality, Variable

from ._codec import INT64_MAX, INT64_MIN, SampleTuple, decode_value, to_utc
from ._schema import SAMPLE_COLUMNS, SCHEMA_VERSION, Tables, build_tables, definition_hash
from ._url import safe_url

__all__ = ["ContextRun", "SampleRow", "SqlStore", "jsonable", "make_engine"]

_PRAGMA_NAME = re.compile(r"[a-z_]+")
_PRAGMA_VALUE = re.compile(r"-?[A-Za-z0-9_]+")

#: Statements run on every new SQLite connection (``sqlite_pragmas`` adds to or overrides them).
DEFAULT_SQLITE_PRAGMAS: Mapping[str, str | int] = {
    "journal_mode": "WAL",
    "synchronous": "NORMAL",
}


class SampleRow(NamedTuple):
    """One stored sample, typed as it was collected (``read_at`` aware UTC)."""

    context_id: int
    variable_id: int
    address: str
    value_type: str
    reader_type: str
    read_at: datetime
    value: Any
    quality: Quality
    error: str | None


class ContextRun(NamedTuple):
    """One run of a context: when it started and ended (aware UTC, ``None`` if unknown) and its metadata."""

    context_id: int
    start: datetime | None
    end: datetime | None
    metadata: dict[str, Any]


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


def make_engine(
    url: URL,
    *,
    connect_timeout_s: float,
    sqlite_pragmas: Mapping[str, str | int] | None,
    engine_options: Mapping[str, Any] | None,
) -> Engine:
    """A SQLAlchemy engine for ``url`` with the per-driver settings the writer relies on."""
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
        connect_args["connect_timeout"] = timeout_int
    elif backend in ("mysql", "mariadb") and driver in ("pymysql", "mysqldb"):
        connect_args["connect_timeout"] = timeout_int
        if "charset" not in url.query:
            connect_args["charset"] = "utf8mb4"
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
            self.to_db_time = _iso_naive_utc
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
        self._insert: Callable[[Connection, list[SampleTuple]], None] | None = None
        self._copy_statement: str | None = None

    # -- schema ---------------------------------------------------------------------------------
    @property
    def tables(self) -> Tables:
        """The table definitions (build them after a first connection: MySQL options need the version)."""
        if self._tables is None:
            self._tables = build_tables(self.prefix, self.engine.dialect)
        return self._tables

    def create_schema(self, conn: Connection) -> None:
        """Create the tables that are absent, record or check the schema version."""
        tables = self.tables
        for attempt in (1, 2):
            try:
                with conn.begin():
                    tables.metadata.create_all(conn, checkfirst=True)
                break
            except sa.exc.DBAPIError:
                if attempt == 2:  # another writer may have created them at the same time: look again
                    raise
        version_table = tables.schema_version
        with conn.begin():
            version = conn.execute(sa.select(sa.func.max(version_table.c.version))).scalar()
        if version is None:
            try:
                with conn.begin():
                    conn.execute(
                        version_table.insert().values(
                            version=SCHEMA_VERSION, applied_at=self.to_core_time(datetime.now(UTC))
                        )
                    )
            except IntegrityError:
                pass  # recorded by a concurrent writer
            version = SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"SqlDataWriter: tables {self.prefix}* in {safe_url(self.engine.url)} have schema version "
                f"{version}, newer than this data-collector's {SCHEMA_VERSION}: upgrade data-collector"
            )
        # version < SCHEMA_VERSION: migrations of later versions go here.
        self.check_schema(conn)

    def check_schema(self, conn: Connection) -> None:
        """:class:`ConfigurationError` unless the tables have the columns this code uses."""
        tables = self.tables
        for table in (tables.contexts, tables.variables, tables.samples):
            try:
                with conn.begin():
                    conn.execute(sa.select(*table.c).where(sa.false()).limit(1)).all()
            except sa.exc.DBAPIError as exc:
                raise ConfigurationError(
                    f"SqlDataWriter: table {table.name} in {safe_url(self.engine.url)} is missing or not a "
                    f"data-collector table (use another table_prefix): {exc.orig}"
                ) from None

    def has_tables(self) -> bool:
        return sa.inspect(self.engine).has_table(self.tables.samples.name)

    # -- variables --------------------------------------------------------------------------
    @staticmethod
    def definition(variable: Variable) -> tuple[int, str, str, str]:
        """The stored identity of a variable; :class:`ConfigurationError` if its id does not fit BIGINT."""
        if not INT64_MIN <= variable.id <= INT64_MAX:
            raise ConfigurationError(
                f"SqlDataWriter: variable id {variable.id} is outside the signed 64-bit range of the database"
            )
        return variable.id, variable.address, variable.value_type, variable.reader_type

    def variable_keys(
        self, conn: Connection, definitions: Iterable[tuple[int, str, str, str]]
    ) -> dict[tuple[int, str, str, str], int]:
        """Row ids of the given variable definitions, inserting those not stored yet (own transaction)."""
        wanted = {(d, definition_hash(d[1], d[2], d[3])) for d in set(definitions)}
        table = self.tables.variables
        found: dict[tuple[int, str, str, str], int] = {}
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
                    for definition, digest in sorted(wanted):
                        if definition in found:
                            continue
                        vid, address, value_type, reader_type = definition
                        result = conn.execute(
                            table.insert().values(
                                variable_id=vid,
                                address=address,
                                value_type=value_type,
                                reader_type=reader_type,
                                definition_hash=digest,
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
        table = self.tables.contexts
        start = context.start_date
        with conn.begin():
            result = conn.execute(
                table.insert().values(
                    context_id=context.id,
                    start_date=self.to_core_time(start) if start is not None else None,
                    end_date=None,
                    metadata=jsonable(dict(context.metadata)),
                )
            )
        pk = result.inserted_primary_key
        assert pk is not None
        return int(pk[0])

    def end_run(self, conn: Connection, run_id: int | None, context: DataCollectionContext) -> int:
        """Record the end of a run (the given one, else the open run with the same start)."""
        table = self.tables.contexts
        end = context.end_date if context.end_date is not None else datetime.now(UTC)
        with conn.begin():
            if run_id is None:
                query = sa.select(table.c.id).where(
                    table.c.context_id == context.id, table.c.end_date.is_(None)
                )
                if context.start_date is not None:
                    query = query.where(table.c.start_date == self.to_core_time(context.start_date))
                run_id = conn.execute(query.order_by(table.c.id.desc()).limit(1)).scalar()
            if run_id is None:
                start = context.start_date
                result = conn.execute(
                    table.insert().values(
                        context_id=context.id,
                        start_date=self.to_core_time(start) if start is not None else None,
                        end_date=self.to_core_time(end),
                        metadata=jsonable(dict(context.metadata)),
                    )
                )
                pk = result.inserted_primary_key
                assert pk is not None
                return int(pk[0])
            conn.execute(table.update().where(table.c.id == run_id).values(end_date=self.to_core_time(end)))
            return run_id

    # -- samples -------------------------------------------------------------------------------
    def insert_samples(self, conn: Connection, rows: list[SampleTuple]) -> None:
        """Insert one batch in one transaction, on the driver's fastest path."""
        insert = self._insert
        if insert is None:
            if self._fast == "copy":
                insert = self._insert_copy
            elif self._fast is not None:
                insert = self._insert_executemany(self._fast)
            else:
                insert = self._insert_core
            self._insert = insert
        with conn.begin():
            insert(conn, rows)

    def _insert_executemany(self, placeholder: str) -> Callable[[Connection, list[SampleTuple]], None]:
        table = self.tables.samples
        preparer = self.engine.dialect.identifier_preparer
        columns = ", ".join(preparer.quote(c) for c in SAMPLE_COLUMNS)
        statement = (
            f"INSERT INTO {preparer.format_table(table)} ({columns}) "
            f"VALUES ({', '.join([placeholder] * len(SAMPLE_COLUMNS))})"
        )

        def insert(conn: Connection, rows: list[SampleTuple]) -> None:
            conn.exec_driver_sql(statement, rows)

        return insert

    #: PostgreSQL types of SAMPLE_COLUMNS, for binary COPY.
    _COPY_TYPES = ("int8", "int4", "timestamptz", "varchar", "float8", "int8", "text", "varchar", "text")

    def _insert_copy(self, conn: Connection, rows: list[SampleTuple]) -> None:
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

    def _insert_core(self, conn: Connection, rows: list[SampleTuple]) -> None:
        conn.execute(
            self.tables.samples.insert(), [dict(zip(SAMPLE_COLUMNS, row, strict=True)) for row in rows]
        )

    # -- read-back -------------------------------------------------------------------------------
    def select_samples(
        self,
        conn: Connection,
        context_id: int,
        variable_ids: Sequence[int] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> list[SampleRow]:
        s = self.tables.samples
        v = self.tables.variables
        query = (
            sa.select(
                v.c.variable_id,
                v.c.address,
                v.c.value_type,
                v.c.reader_type,
                s.c.read_at,
                s.c.value_kind,
                s.c.value_num,
                s.c.value_int,
                s.c.value_text,
                s.c.quality,
                s.c.error,
            )
            .select_from(s.join(v, v.c.id == s.c.variable_key))
            .where(s.c.context_id == context_id)
        )
        if variable_ids is not None:
            query = query.where(v.c.variable_id.in_(list(variable_ids)))
        if start is not None:
            query = query.where(s.c.read_at >= self.to_core_time(start))
        if end is not None:
            query = query.where(s.c.read_at < self.to_core_time(end))
        query = query.order_by(s.c.id)
        qualities = {q.value: q for q in Quality}
        with conn.begin():
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
                )
                for (
                    vid,
                    address,
                    value_type,
                    reader_type,
                    read_at,
                    kind,
                    num,
                    ival,
                    text,
                    quality,
                    error,
                ) in result
            ]

    def select_runs(self, conn: Connection, context_id: int | None) -> list[ContextRun]:
        table = self.tables.contexts
        query = sa.select(table.c.context_id, table.c.start_date, table.c.end_date, table.c.metadata)
        if context_id is not None:
            query = query.where(table.c.context_id == context_id)
        query = query.order_by(table.c.id)
        with conn.begin():
            rows = conn.execute(query).all()
        runs = []
        for cid, start, end, metadata in rows:
            if isinstance(metadata, str):  # a driver that returns JSON as text
                metadata = json.loads(metadata)
            runs.append(
                ContextRun(
                    int(cid),
                    from_db_time(start) if start is not None else None,
                    from_db_time(end) if end is not None else None,
                    dict(metadata or {}),
                )
            )
        return runs
