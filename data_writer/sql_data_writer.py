"""SQL writer: stores samples, variables and context runs in SQLite, PostgreSQL or MariaDB/MySQL.

Serves any database SQLAlchemy 2 reaches, tuned for three: SQLite (stdlib driver, the embedded
default, no server), PostgreSQL through psycopg 3 and MariaDB/MySQL through PyMySQL. Install the
extra for your database: ``data-collector[sql]`` (SQLite), ``[postgresql]`` or ``[mariadb]``.

Options of ``SqlDataWriter(url="sqlite:///data-collector.sqlite", *, ...)``:

- ``url``: a SQLAlchemy URL, e.g. ``sqlite:///plant.sqlite``, ``sqlite://`` (in memory, gone at
  ``close()``),
  ``postgresql+psycopg://user:secret@db-host:5432/plant``,
  ``mysql+pymysql://user:secret@db-host:3306/plant`` (also ``mariadb+pymysql://``). The password is
  never shown in logs, errors or ``repr``.
- ``table_prefix="dc_"``: the tables are ``<prefix>samples``, ``<prefix>variables``,
  ``<prefix>contexts`` and ``<prefix>schema_version``; lowercase letters, digits and ``_``.
- ``connect_timeout_s=10.0``: connection timeout (and SQLite busy timeout).
- ``sqlite_pragmas``: extra or overriding ``PRAGMA`` settings run on every SQLite connection (default
  ``journal_mode=WAL``, ``synchronous=NORMAL``, ``busy_timeout`` = the connect timeout).
- ``engine_options``: more keyword arguments for ``sqlalchemy.create_engine`` (``connect_args``
  are merged).
- ``name``: the writer's label in logs and statistics.

Storage. Tables are created when absent and never dropped or altered destructively; the schema
version (2) is recorded in ``<prefix>schema_version``. ``<prefix>samples`` holds one row per sample:
``context_id``, ``read_at`` (UTC, microseconds), ``variable_key`` (-> ``<prefix>variables.id``,
which holds ``variable_id``, ``address``, ``value_type``, ``reader_type``), ``value_kind`` and one of
``value_num`` (DOUBLE), ``value_int`` (BIGINT) or ``value_text``, ``quality`` and ``error``. Its
primary key ``(context_id, read_at, variable_key)`` is the identity of a sample: the same sample
written again (a batch retried after its COMMIT acknowledgement was lost, a batch replayed from a
spool after a crash, in any grouping) is skipped, never stored twice; :attr:`duplicates_skipped`
counts those. The key is time-first so that sustained appends stay fast; a query for some variables
over a time range (:func:`read_samples` with ``variable_ids``) seeks once per distinct read time
instead of scanning the other variables (see ``data_writer/_sql/_schema.py`` for the measurements).
On SQLite, ``read_at`` is an INTEGER of microseconds since 1970-01-01 UTC
(``datetime(read_at / 1000000, 'unixepoch')`` shows it). Tables of version 1 are refused with a
message; :func:`migrate_store` migrates them once.

Floats (NaN, infinities and -0.0 included), ints of any size (uint64 included), bools, strings of
any length and script (NUL and unpaired surrogates included), bytes, datetimes, Decimals and
lists/dicts of JSON-native values come back exactly, with their type. Any other value (say a
tuple, or an object) is refused: its sample is stored without value, quality BAD, with an error
saying why, the rest of the batch is stored, and the refusal is logged. ``<prefix>contexts`` gets
one row per run of a context (start, end, metadata as JSON; metadata values JSON cannot hold, such
as datetimes, are stored as their text): restarting a context id appends a run.

Each batch is one transaction on the driver's fastest bulk path (SQLite ``executemany`` of
100-row ``INSERT`` statements, PostgreSQL binary ``COPY``, PyMySQL multi-row ``INSERT``); a
failed batch leaves nothing behind and raises :class:`SqlWriterError` (a
:class:`~data_collector.WriterError`) whose ``transient`` flag, also answered by
:meth:`SqlDataWriter.is_transient`, tells the collector whether to retry (connection lost or
refused, server restarting, lock conflicts, SQLite busy, disk full) or to give the batch up (the
data or the schema is at fault). Reading back: :func:`read_samples` /
:meth:`SqlDataWriter.read_samples` (typed rows in time order, optionally of some variables and a
time range), :func:`read_samples_frame` (a pandas DataFrame, when pandas is installed) and
:func:`read_contexts`.

Example::

    import logging
    import time
    from datetime import UTC, datetime, timedelta
    from data_collector import DataCollector, DataCollectionContext, Variable
    from data_reader.random_data_reader import RandomDataReader
    from data_writer.sql_data_writer import SqlDataWriter, read_samples

    writer = SqlDataWriter("sqlite:///plant.sqlite")
    variables = [Variable(1, "sine", "float", "random", interval_ms=100)]
    with DataCollector(logging.getLogger("dc"), [RandomDataReader()], [writer]) as collector:
        collector.start(DataCollectionContext(7, variables, metadata={"batch": "A-12"}))
        time.sleep(2)
    since = datetime.now(UTC) - timedelta(minutes=5)
    for row in read_samples("sqlite:///plant.sqlite", 7, variable_ids=[1], start=since):
        print(row.read_at, row.value, row.quality)
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from data_collector._errors import ConfigurationError, DataCollectionError, WriterError
from data_collector._model import CollectedVariables, DataCollectionContext, Variable
from data_collector._writer import DataWriter
from data_writer._sql._codec import INT64_MAX, INT64_MIN, MissingVariables, SampleTuple, encode_rows
from data_writer._sql._errors import is_transient_error
from data_writer._sql._schema import SCHEMA_VERSION, check_prefix
from data_writer._sql._store import ContextRun, MigrationResult, SampleRow, SqlStore, make_engine
from data_writer._sql._url import parse_url, safe_url, scrub

__all__ = [
    "SCHEMA_VERSION",
    "ContextRun",
    "MigrationResult",
    "SampleRow",
    "SqlDataWriter",
    "SqlWriterError",
    "migrate_store",
    "read_contexts",
    "read_samples",
    "read_samples_frame",
]

_log = logging.getLogger("data_writer.sql")

_T = TypeVar("_T")
_MAX_PINNED = 100_000

# Their public home is this module.
SampleRow.__module__ = ContextRun.__module__ = MigrationResult.__module__ = __name__


class SqlWriterError(WriterError):
    """A database operation of the SQL writer failed; ``transient`` says whether retrying may help
    (the connection failed or the server is short of something) or not (the data or the
    statements are at fault). :meth:`SqlDataWriter.is_transient` answers from it."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


#: The DataFrame columns of :func:`read_samples_frame` (those of :class:`SampleRow`).
FRAME_COLUMNS = SampleRow._fields


class SqlDataWriter(DataWriter):
    """Writes every batch to a SQL database in one transaction; see the module documentation."""

    exactly_once = True  # samples keyed by identity: a retried or replayed batch is stored once

    def __init__(
        self,
        url: str | URL = "sqlite:///data-collector.sqlite",
        *,
        table_prefix: str = "dc_",
        connect_timeout_s: float = 10.0,
        sqlite_pragmas: Mapping[str, str | int] | None = None,
        engine_options: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self._url = parse_url(url)
        self._safe_url = safe_url(self._url)
        self._prefix = check_prefix(table_prefix)
        if (
            isinstance(connect_timeout_s, bool)
            or not isinstance(connect_timeout_s, int | float)
            or not math.isfinite(connect_timeout_s)
            or connect_timeout_s <= 0
        ):
            raise ConfigurationError(
                f"SqlDataWriter: connect_timeout_s must be a number > 0, got {connect_timeout_s!r}"
            )
        if sqlite_pragmas is not None and not isinstance(sqlite_pragmas, Mapping):
            raise ConfigurationError(
                f"SqlDataWriter: sqlite_pragmas must be a mapping, got {sqlite_pragmas!r}"
            )
        if engine_options is not None and not isinstance(engine_options, Mapping):
            raise ConfigurationError(
                f"SqlDataWriter: engine_options must be a mapping, got {engine_options!r}"
            )
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigurationError(f"SqlDataWriter: name must be a non-empty str, got {name!r}")
        self._name = name
        self._engine: Engine = make_engine(
            self._url,
            connect_timeout_s=float(connect_timeout_s),
            sqlite_pragmas=sqlite_pragmas,
            engine_options=engine_options,
        )
        self._store = SqlStore(self._engine, self._prefix)
        self._driver_errors: tuple[type[BaseException], ...] = (
            sa.exc.SQLAlchemyError,
            self._engine.dialect.loaded_dbapi.Error,
            OSError,
        )
        self._conn: Connection | None = None
        self._opened = False
        self._key_by_id: dict[int, int] = {}  # id(Variable) -> variables.id
        self._pinned: list[Variable] = []
        self._definitions: dict[tuple[int, str, str, str], int] = {}
        self._runs: dict[int, int] = {}
        self._refusals_logged: set[tuple[int, str]] = set()
        #: samples stored since this writer was created
        self.samples_written = 0
        #: samples handed to write() again that the store already held (retries, replays): skipped
        self.duplicates_skipped = 0
        #: values refused (stored as BAD without value) since this writer was created
        self.values_refused = 0

    # -- properties ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name if self._name is not None else "SqlDataWriter"

    @property
    def url(self) -> str:
        """The database URL, password shown as ``***``."""
        return self._safe_url

    @property
    def table_prefix(self) -> str:
        return self._prefix

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for queries of your own)."""
        return self._engine

    @property
    def insert_path(self) -> str:
        """How batches are inserted on this database (e.g. ``psycopg binary COPY``)."""
        return self._store.insert_path

    def __repr__(self) -> str:
        return f"SqlDataWriter(url={self._safe_url!r}, table_prefix={self._prefix!r})"

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> None:
        """Connect, create the tables that are absent and check the schema version."""
        with self.lock:
            if self._opened:
                return
            self._make_sqlite_directory()
            self._run("creating the tables", self._store.create_schema)
            self._opened = True

    def _make_sqlite_directory(self) -> None:
        """Create the directory of an SQLite file, as the CSV writer does for its files."""
        url = self._url
        database = url.database
        if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            return
        if database.startswith("file:") or url.query.get("mode") == "memory":
            return
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SqlWriterError(
                f"{self.name}: cannot create the directory of {database}: {exc}", transient=True
            ) from exc

    def close(self) -> None:
        """Release the connection and the engine's pool (every batch is already committed)."""
        with self.lock:
            self._drop_connection()
            self._engine.dispose()
            self._opened = False

    # -- writing ----------------------------------------------------------------------------------
    def context_started(self, context: DataCollectionContext) -> None:
        """Record a new run of ``context`` (start and metadata) and its variables."""
        with self.lock:
            _check_context_id(context.id)
            for v in context.variables:
                self._store.definition(v)  # refuse ids beyond BIGINT before recording anything
            self.open()

            def record(conn: Connection) -> int:
                self._register(conn, context.variables)
                return self._store.insert_run(conn, context)

            self._runs[context.id] = self._run(f"recording the start of context {context.id}", record)

    def context_stopped(self, context: DataCollectionContext) -> None:
        """Record the end of the current run of ``context``."""
        with self.lock:
            _check_context_id(context.id)
            self.open()
            run_id = self._runs.pop(context.id, None)
            self._run(
                f"recording the end of context {context.id}",
                lambda conn: self._store.end_run(conn, run_id, context),
            )

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        """Insert the batch in one transaction; a failure raises :class:`WriterError` and stores nothing."""
        if not isinstance(variables, CollectedVariables):
            variables = CollectedVariables(variables)
        count = len(variables)
        if count == 0:
            return
        with self.lock:
            _check_context_id(context.id)
            self.open()
            store = self._store
            refused: list[tuple[Variable, str]] = []

            def encode() -> list[SampleTuple]:
                refused.clear()
                return encode_rows(
                    context.id, variables, self._key_by_id, store.to_db_time, store.forbid_nul, refused
                )

            def insert(conn: Connection) -> int:
                try:
                    rows = encode()
                except MissingVariables as missing:
                    self._register(conn, missing.variables)
                    rows = encode()
                return store.insert_samples(conn, rows)

            inserted = self._run(f"writing {count} samples of context {context.id}", insert)
            self.samples_written += inserted
            if inserted < count:
                self.duplicates_skipped += count - inserted
                _log.info(
                    "%s: %d of %d samples of context %d were stored already (a retried or replayed batch): "
                    "skipped",
                    self.name,
                    count - inserted,
                    count,
                    context.id,
                )
            if refused:
                self._log_refused(context, refused)

    def is_transient(self, exc: BaseException) -> bool:
        """Whether retrying may succeed: connection failures (refused, reset, timed out, server
        restarting or failing over), lock, deadlock and serialization conflicts, a busy or locked
        SQLite file, a full disk: yes; integrity, data and programming errors (a value or row the
        database refuses, a missing or foreign table, an old schema): no."""
        if isinstance(exc, SqlWriterError):
            return exc.transient
        if isinstance(exc, DataCollectionError):
            return False
        return is_transient_error(exc, self._engine.dialect)

    def _register(self, conn: Connection, variables: Iterable[Variable]) -> None:
        """Know the row id of each of ``variables`` (from the cache, else from the database)."""
        if len(self._pinned) > _MAX_PINNED:  # objects made afresh for every batch: start over
            self._pinned.clear()
            self._key_by_id.clear()
        todo = {id(v): v for v in variables if id(v) not in self._key_by_id}
        definitions = {vid: self._store.definition(v) for vid, v in todo.items()}
        unknown = [d for d in set(definitions.values()) if d not in self._definitions]
        if unknown:
            self._definitions.update(self._store.variable_keys(conn, unknown))
        for vid, v in todo.items():
            self._key_by_id[vid] = self._definitions[definitions[vid]]
            self._pinned.append(v)  # keeps the object, hence its id, alive while cached

    def _log_refused(self, context: DataCollectionContext, refused: list[tuple[Variable, str]]) -> None:
        self.values_refused += len(refused)
        for variable, reason in refused:
            key = (variable.id, reason.split(" (value", 1)[0])
            if key in self._refusals_logged:
                continue
            if len(self._refusals_logged) < 10_000:
                self._refusals_logged.add(key)
            _log.error(
                "%s: value of variable %d (%s) in context %d refused and stored as BAD without value: %s "
                "(logged once per variable and reason)",
                self.name,
                variable.id,
                variable.address,
                context.id,
                reason,
            )

    # -- read-back ------------------------------------------------------------------------------
    def read_samples(
        self,
        context_id: int,
        *,
        variable_ids: Iterable[int] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[SampleRow]:
        """Stored samples of ``context_id`` in time order; see :func:`read_samples`."""
        ids, start, end = _check_query(context_id, variable_ids, start, end)
        return self._query(lambda conn: self._store.select_samples(conn, context_id, ids, start, end))

    def read_samples_frame(
        self,
        context_id: int,
        *,
        variable_ids: Iterable[int] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Any:
        """:meth:`read_samples` as a pandas DataFrame; see :func:`read_samples_frame`."""
        return samples_to_frame(
            self.read_samples(context_id, variable_ids=variable_ids, start=start, end=end)
        )

    def read_contexts(self, context_id: int | None = None) -> list[ContextRun]:
        """The recorded runs (of ``context_id``, or of every context), oldest first."""
        if context_id is not None:
            _check_context_id(context_id)
        return self._query(lambda conn: self._store.select_runs(conn, context_id))

    def _query(self, op: Callable[[Connection], _T]) -> _T:
        with self.lock:
            self.open()
            if isinstance(self._engine.pool, sa.pool.StaticPool):  # one shared (in-memory) connection
                return self._run("reading samples", op)
        # A connection of its own, so a long read does not hold up the writer thread.
        try:
            with self._engine.connect() as conn:
                return op(conn)
        except self._driver_errors as exc:
            self._raise("reading samples", exc)

    # -- connection handling ------------------------------------------------------------------
    def _connection(self) -> tuple[Connection, bool]:
        """The writer's connection and whether it was just made."""
        if self._conn is not None and not self._conn.closed and not self._conn.invalidated:
            return self._conn, False
        self._drop_connection()
        try:
            self._conn = self._engine.connect()
        except self._driver_errors as exc:
            host = self._url.host or self._url.database or "(default)"
            where = f"{host}:{self._url.port}" if self._url.port else host
            self._raise(
                f"connecting to {self._url.get_backend_name()} at {where}",
                exc,
                prefix="cannot connect: ",
                transient=True,
            )
        return self._conn, True

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # already broken: nothing to release
            conn.invalidate()
        with contextlib.suppress(Exception):
            conn.close()

    def _run(self, what: str, op: Callable[[Connection], _T]) -> _T:
        """Run ``op`` on the writer's connection; reconnect once if a reused connection went away."""
        for attempt in (1, 2):
            conn, fresh = self._connection()
            try:
                return op(conn)
            except DataCollectionError:
                if conn.in_transaction():
                    self._drop_connection()
                raise
            except self._driver_errors as exc:
                self._drop_connection()
                if attempt == 1 and not fresh and self._is_disconnect(exc):
                    _log.info("%s: connection to %s lost (%s); reconnecting", self.name, self._safe_url, what)
                    continue
                self._raise(what, exc)
            except BaseException:
                self._drop_connection()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _is_disconnect(self, exc: BaseException) -> bool:
        if isinstance(exc, sa.exc.DBAPIError):
            if exc.connection_invalidated:
                return True
            exc = exc.orig if exc.orig is not None else exc
        if isinstance(exc, self._engine.dialect.loaded_dbapi.Error):
            try:
                return bool(self._engine.dialect.is_disconnect(exc, None, None))
            except Exception:
                return False
        return False

    def _raise(
        self, what: str, exc: BaseException, prefix: str = "", *, transient: bool | None = None
    ) -> NoReturn:
        if transient is None:
            transient = is_transient_error(exc, self._engine.dialect)
        raise _translate(self._url, what, exc, prefix, transient) from _cause(self._url, exc)


def _detail(exc: BaseException) -> str:
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
        return f"{type(orig).__name__}: {str(orig).strip()}"
    return f"{type(exc).__name__}: {str(exc).strip()}"


def _translate(
    url: URL, what: str, exc: BaseException, prefix: str = "", transient: bool | None = None
) -> SqlWriterError:
    if transient is None:
        transient = is_transient_error(exc)
    return SqlWriterError(
        f"SqlDataWriter {safe_url(url)}: {prefix}{what} failed: {scrub(_detail(exc), url)}",
        transient=transient,
    )


def _cause(url: URL, exc: BaseException) -> BaseException | None:
    """``exc`` unless its text (or that of its causes) shows the password: then no cause."""
    password = url.password
    if not password:
        return exc
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if str(password) in str(seen) or str(password) in repr(seen.args):
            return None
        seen = seen.__cause__ or seen.__context__
    return exc


def _check_context_id(context_id: object) -> None:
    if isinstance(context_id, bool) or not isinstance(context_id, int):
        raise ConfigurationError(f"SqlDataWriter: context id must be an int, got {context_id!r}")
    if not INT64_MIN <= context_id <= INT64_MAX:
        raise ConfigurationError(f"SqlDataWriter: context id {context_id} is outside the signed 64-bit range")


def _check_time(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got {value!r}")
    return value


def _check_query(
    context_id: object, variable_ids: Iterable[int] | None, start: object, end: object
) -> tuple[list[int] | None, datetime | None, datetime | None]:
    _check_context_id(context_id)
    ids: list[int] | None = None
    if variable_ids is not None:
        if isinstance(variable_ids, str | bytes) or not isinstance(variable_ids, Iterable):
            raise ConfigurationError(f"variable_ids must be an iterable of int, got {variable_ids!r}")
        ids = list(variable_ids)
        for vid in ids:
            if isinstance(vid, bool) or not isinstance(vid, int):
                raise ConfigurationError(f"variable_ids must hold ints, got {vid!r}")
    return ids, _check_time("start", start), _check_time("end", end)


def samples_to_frame(rows: list[SampleRow]) -> Any:
    """Rows as a pandas DataFrame: the :class:`SampleRow` columns, ``read_at`` as UTC datetimes,
    ``quality`` as text."""
    try:
        pd: Any = importlib.import_module("pandas")
    except ImportError:
        raise ConfigurationError("read_samples_frame needs pandas: pip install pandas") from None
    frame = pd.DataFrame.from_records(
        [(*row[:7], row.quality.value, row.error) for row in rows], columns=list(FRAME_COLUMNS)
    )
    frame["read_at"] = pd.to_datetime(frame["read_at"], utc=True)
    return frame


def _open_store(url: str | URL | Engine, table_prefix: str) -> tuple[SqlStore, bool]:
    """A store on ``url`` (checked to hold the tables) and whether its engine is ours to dispose."""
    prefix = check_prefix(table_prefix)
    if isinstance(url, Engine):
        store = SqlStore(url, prefix)
        owned = False
    else:
        parsed = parse_url(url)
        if (
            parsed.get_backend_name() == "sqlite"
            and parsed.database
            and parsed.database != ":memory:"
            and parsed.query.get("mode") != "memory"
            and not os.path.exists(parsed.database)
        ):
            raise ConfigurationError(f"no SQLite database at {parsed.database!r}")
        store = SqlStore(
            make_engine(parsed, connect_timeout_s=10.0, sqlite_pragmas=None, engine_options=None), prefix
        )
        owned = True
    return store, owned


def _read(url: str | URL | Engine, table_prefix: str, op: Callable[[SqlStore, Connection], _T]) -> _T:
    store, owned = _open_store(url, table_prefix)
    engine_url = store.engine.url
    try:
        with store.engine.connect() as conn:
            store.check_version(store.stored_version(conn))  # an older store: say how to migrate it
            try:
                store.check_schema(conn)
            except ConfigurationError:
                raise ConfigurationError(
                    f"no data-collector tables with prefix {store.prefix!r} in {safe_url(engine_url)}"
                ) from None
            return op(store, conn)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise _translate(engine_url, "reading", exc) from _cause(engine_url, exc)
    finally:
        if owned:
            store.engine.dispose()


def read_samples(
    url: str | URL | Engine,
    context_id: int,
    *,
    variable_ids: Iterable[int] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    table_prefix: str = "dc_",
) -> list[SampleRow]:
    """Samples of ``context_id`` stored by a :class:`SqlDataWriter`, in time order (then by variable).

    ``variable_ids`` keeps only those variables; ``start`` (included) and ``end`` (excluded),
    timezone-aware, bound ``read_at``. Values come back typed as collected, ``read_at`` as aware
    UTC datetimes. ``url`` may also be a SQLAlchemy :class:`Engine`.
    """
    ids, start, end = _check_query(context_id, variable_ids, start, end)
    return _read(
        url, table_prefix, lambda store, conn: store.select_samples(conn, context_id, ids, start, end)
    )


def read_samples_frame(
    url: str | URL | Engine,
    context_id: int,
    *,
    variable_ids: Iterable[int] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    table_prefix: str = "dc_",
) -> Any:
    """:func:`read_samples` as a pandas DataFrame (needs pandas).

    Columns: those of :class:`SampleRow`; ``read_at`` is ``datetime64[..., UTC]``, ``quality`` the
    quality's text ("GOOD", "UNCERTAIN", "BAD"), ``value`` the typed values (object column).
    """
    rows = read_samples(
        url, context_id, variable_ids=variable_ids, start=start, end=end, table_prefix=table_prefix
    )
    return samples_to_frame(rows)


def read_contexts(
    url: str | URL | Engine, context_id: int | None = None, *, table_prefix: str = "dc_"
) -> list[ContextRun]:
    """The recorded runs of ``context_id`` (or of every context), oldest first."""
    if context_id is not None:
        _check_context_id(context_id)
    return _read(url, table_prefix, lambda store, conn: store.select_runs(conn, context_id))


def migrate_store(url: str | URL | Engine, *, table_prefix: str = "dc_") -> MigrationResult:
    """Bring the tables of an older :class:`SqlDataWriter` to this version's schema, in place.

    Version 1 to 2: the samples are copied into the new ``<prefix>samples`` keyed by (context,
    read time, variable), a sample that version 1 stored more than once is kept once, and the old
    table is dropped. Run it once with no writer on the store; it returns what it did (nothing
    when the store is current). On SQLite and PostgreSQL it is one transaction; on MariaDB/MySQL
    run it again if it was interrupted.
    """
    store, owned = _open_store(url, table_prefix)
    engine_url = store.engine.url
    try:
        with store.engine.connect() as conn:
            return store.migrate(conn)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise _translate(engine_url, "migrating", exc) from _cause(engine_url, exc)
    finally:
        if owned:
            store.engine.dispose()
