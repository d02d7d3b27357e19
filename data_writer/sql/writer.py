"""The SQL writer: ``SqlDataWriter`` stores samples, variables and context runs in SQLite,
PostgreSQL or MariaDB/MySQL through SQLAlchemy 2.

Each batch is one transaction on the driver's fastest bulk path (SQLite ``executemany`` of
100-row ``INSERT`` statements, PostgreSQL binary ``COPY``, PyMySQL multi-row ``INSERT``); the
samples' primary key (context, read time, variable) makes every write idempotent, so a batch
retried or replayed from a spool is never stored twice (:attr:`SqlDataWriter.duplicates_skipped`
counts the samples skipped). A failed batch leaves nothing behind and raises
:class:`SqlWriterError`, whose ``transient`` flag (also :meth:`SqlDataWriter.is_transient`) tells
the collector whether to retry; an operation a PostgreSQL or MariaDB server leaves unanswered for
``io_timeout_s`` (30 s) fails that way, as transient, instead of blocking (driver timeouts, and
for libpq a watchdog: :mod:`data_writer.sql._watchdog`). Runs of a context go to
``<prefix>contexts`` with the user's metadata and the collector's deduced metadata, kept apart.
Options, URL syntax per database and the table layout: ``data_writer/sql/README.md``; reading
back: :mod:`data_writer.sql.read`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollectionError,
    DataWriter,
    ScanRows,
    Variable,
)

from ._codec import MissingVariables, SampleTuple, encode_rows
from ._errors import SqlWriterError, cause, is_transient_error, translate
from ._scan import store_scan_rows
from ._schema import SCHEMA_VERSION, check_prefix
from ._store import ContextRun, Definition, SampleRow, SqlStore, make_engine
from ._url import parse_url, safe_url
from ._watchdog import Watch, Watchdog
from .read import _check_context_id, _check_query, samples_to_frame

__all__ = ["SqlDataWriter", "SqlWriterError"]

_log = logging.getLogger("data_writer.sql")

_T = TypeVar("_T")
_MAX_PINNED = 100_000


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
        io_timeout_s: float | None = 30.0,
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
        if io_timeout_s is not None and (
            isinstance(io_timeout_s, bool)
            or not isinstance(io_timeout_s, int | float)
            or not math.isfinite(io_timeout_s)
            or io_timeout_s < 0
        ):
            raise ConfigurationError(
                "SqlDataWriter: io_timeout_s must be a number >= 0 (0 or None: no limit), "
                f"got {io_timeout_s!r}"
            )
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigurationError(f"SqlDataWriter: name must be a non-empty str, got {name!r}")
        self._name = name
        self._io_timeout_s = float(io_timeout_s) if io_timeout_s else None
        self._engine: Engine = make_engine(
            self._url,
            connect_timeout_s=float(connect_timeout_s),
            sqlite_pragmas=sqlite_pragmas,
            engine_options=engine_options,
            io_timeout_s=self._io_timeout_s,
        )
        # libpq has no read timeout: a watchdog bounds each operation (see _watchdog)
        self._watchdog: Watchdog | None = None
        if self._io_timeout_s is not None and self._engine.dialect.name == "postgresql":
            self._watchdog = Watchdog(f"dc-sql-watchdog-{self.name}", self._io_timeout_s)
        self._store = SqlStore(self._engine, self._prefix)
        self._driver_errors: tuple[type[BaseException], ...] = (
            sa.exc.SQLAlchemyError,
            self._engine.dialect.loaded_dbapi.Error,
            OSError,
        )
        self._conn: Connection | None = None
        self._opened = False
        self._key_by_id: dict[int, int] = {}  # id(Variable) -> variables.id
        self._key_cache: list[Any] = []  # the ids and keys of the last batch (see encode_rows)
        self._pinned: list[Variable] = []
        self._definitions: dict[Definition, int] = {}
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
    def io_timeout_s(self) -> float | None:
        """How long one database operation may go unanswered before the connection is dropped
        and the operation fails as transient (``None``: no limit)."""
        return self._io_timeout_s

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
            upgraded = self._run("creating the tables", self._store.create_schema)
            if upgraded is not None:
                _log.warning(
                    "%s: tables %s* in %s upgraded from schema version %d to %d (%s)",
                    self.name,
                    self._prefix,
                    self._safe_url,
                    upgraded,
                    SCHEMA_VERSION,
                    "added what was missing of: contexts.deduced_metadata, the name, unit and description "
                    f"of variables, the view {self._prefix}samples_view; "
                    "older data-collector versions now refuse these tables",
                )
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
            if self._watchdog is not None:
                self._watchdog.close()
            self._opened = False

    # -- writing ----------------------------------------------------------------------------------
    def context_started(self, context: DataCollectionContext) -> None:
        """Record a new run of ``context`` (start, user and deduced metadata) and its variables."""
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
        """Record the end of the current run of ``context`` (end time; ``end`` and ``ended`` in its
        deduced metadata)."""
        with self.lock:
            _check_context_id(context.id)
            self.open()
            run_id = self._runs.pop(context.id, None)
            self._run(
                f"recording the end of context {context.id}",
                lambda conn: self._store.end_run(conn, run_id, context),
            )

    def write_scan_rows(self, rows: ScanRows) -> None:
        """Replace the rows of a scan point in ``<prefix>scan_<name>`` (created when absent) by
        ``rows``, in one transaction (see ``data_writer/sql/README.md``)."""
        with self.lock:
            _check_context_id(rows.context_id)
            self.open()
            self._run(
                f"storing point {rows.point} of scan {rows.scan}",
                lambda conn: store_scan_rows(conn, self._prefix, rows),
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
                    context.id,
                    variables,
                    self._key_by_id,
                    store.to_db_time,
                    store.forbid_nul,
                    refused,
                    self._key_cache,
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
            self._key_cache.clear()
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
        """Run ``op`` on the writer's connection; reconnect once if a reused connection went away.

        An operation that goes unanswered for ``io_timeout_s`` fails as transient, at once (no
        reconnect within the same call: the collector retries with backoff).
        """
        for attempt in (1, 2):
            conn, fresh = self._connection()
            watch = Watch()
            try:
                with self._watched(conn) as watch:
                    result = op(conn)
                if watch.fired:  # answered just as the deadline passed: the socket is shut down
                    self._drop_connection()
                return result
            except DataCollectionError:
                if conn.in_transaction() or watch.fired:
                    self._drop_connection()
                raise
            except self._driver_errors as exc:
                self._drop_connection()
                if watch.fired or _timed_out(exc):
                    self._raise(
                        what,
                        exc,
                        f"no answer from the database within {self._io_timeout_s:g} s (io_timeout_s), "
                        "connection dropped: ",
                        transient=True,
                    )
                if attempt == 1 and not fresh and self._is_disconnect(exc):
                    _log.info("%s: connection to %s lost (%s); reconnecting", self.name, self._safe_url, what)
                    continue
                self._raise(what, exc)
            except BaseException:
                self._drop_connection()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _watched(self, conn: Connection) -> contextlib.AbstractContextManager[Watch]:
        """The watchdog's watch over one operation on ``conn`` (nothing to do without a watchdog)."""
        if self._watchdog is not None:
            fileno = getattr(conn.connection.dbapi_connection, "fileno", None)
            if callable(fileno):
                try:
                    fd = fileno()
                except Exception:  # a closed connection: the operation fails by itself
                    fd = -1
                if isinstance(fd, int) and fd >= 0:
                    return self._watchdog.watch(fd)
        return contextlib.nullcontext(Watch())

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
        raise translate(self._url, what, exc, prefix, transient) from cause(self._url, exc)


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a driver's socket timeout (PyMySQL read/write_timeout)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError):
            return True
        orig = getattr(seen, "orig", None)
        if isinstance(orig, BaseException) and orig is not seen:
            seen = orig
            continue
        seen = seen.__cause__ or seen.__context__
    return False
