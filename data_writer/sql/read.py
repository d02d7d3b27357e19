"""Reading a store of the SQL writer back, without a writer; migrating an older store.

- :func:`read_samples`: the samples of a context, typed as collected, in time order (optionally
  of some variables and within a time range);
- :func:`read_samples_frame`: the same as a pandas DataFrame (needs pandas);
- :func:`read_contexts`: the recorded runs of a context (start, end, user and deduced metadata);
- :func:`migrate_store`: bring the tables of an older version to this version's schema
  (``data-collector migrate`` on the command line); :func:`stored_schema_version` tells which
  version a store has.

Each takes a SQLAlchemy URL (or an :class:`~sqlalchemy.engine.Engine`) and the ``table_prefix``
the writer used; errors are :class:`~data_collector.ConfigurationError` (no such store, an old
schema: the message says what to do) or :class:`SqlWriterError` (the database failed).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from data_collector import ConfigurationError

from ._codec import INT64_MAX, INT64_MIN
from ._errors import cause, translate
from ._schema import AUTO_UPGRADE_FROM, check_prefix
from ._store import ContextRun, MigrationResult, SampleRow, SqlStore, make_engine
from ._url import parse_url, safe_url

__all__ = [
    "FRAME_COLUMNS",
    "migrate_store",
    "read_contexts",
    "read_samples",
    "read_samples_frame",
    "samples_to_frame",
    "stored_schema_version",
]

_T = TypeVar("_T")

#: The DataFrame columns of :func:`read_samples_frame` (those of :class:`SampleRow`).
FRAME_COLUMNS = SampleRow._fields


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
            version = store.stored_version(conn)
            store.check_version(version)  # an older store: say how to migrate it
            store.deduced_column = version not in AUTO_UPGRADE_FROM  # read a version 2 store as it is
            try:
                store.check_schema(conn)
            except ConfigurationError:
                raise ConfigurationError(
                    f"no data-collector tables with prefix {store.prefix!r} in {safe_url(engine_url)}"
                ) from None
            return op(store, conn)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise translate(engine_url, "reading", exc) from cause(engine_url, exc)
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
    table is dropped. Version 2 to 3: the column ``deduced_metadata`` is added to
    ``<prefix>contexts`` (a writer opening a version 2 store does this by itself). Run it once with
    no writer on the store; it returns what it did (``from_version == to_version`` when the store
    is current). On SQLite and PostgreSQL it is one transaction; on MariaDB/MySQL run it again if
    it was interrupted.
    """
    store, owned = _open_store(url, table_prefix)
    engine_url = store.engine.url
    try:
        with store.engine.connect() as conn:
            return store.migrate(conn)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise translate(engine_url, "migrating", exc) from cause(engine_url, exc)
    finally:
        if owned:
            store.engine.dispose()


def stored_schema_version(url: str | URL | Engine, *, table_prefix: str = "dc_") -> int | None:
    """The schema version the tables of ``table_prefix`` record (``None``: no such tables).

    Compare it with :data:`~data_writer.sql.SCHEMA_VERSION`: older stores need
    :func:`migrate_store` (version 1) or are upgraded by the next writer (version 2).
    """
    store, owned = _open_store(url, table_prefix)
    engine_url = store.engine.url
    try:
        with store.engine.connect() as conn:
            return store.stored_version(conn)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise translate(engine_url, "reading the schema version", exc) from cause(engine_url, exc)
    finally:
        if owned:
            store.engine.dispose()
