"""Reading a store of the SQL writer back, without a writer; migrating an older store.

- :func:`read_samples`: the samples of a context, typed as collected, in time order (optionally
  of some variables and within a time range);
- :func:`read_samples_frame`: the same as a pandas DataFrame (needs pandas), typed columns;
- :func:`read_wide_frame`: one context (or one run of it) as a wide pandas DataFrame: one column
  per variable (titled by its name), one row per read time, BAD samples missing;
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
import math
import os
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from data_collector import ConfigurationError, wide_frame

from ._codec import INT64_MAX, INT64_MIN
from ._errors import cause, translate
from ._schema import check_prefix
from ._store import ContextRun, MigrationResult, SampleRow, SqlStore, make_engine
from ._url import parse_url, safe_url

__all__ = [
    "FRAME_COLUMNS",
    "has_context",
    "migrate_store",
    "read_contexts",
    "read_samples",
    "read_samples_frame",
    "read_wide_frame",
    "samples_to_frame",
    "stored_schema_version",
]

_T = TypeVar("_T")

#: The DataFrame columns of :func:`read_samples_frame`: those of :class:`SampleRow`, then
#: ``value_float`` (the value of a float, int or bool sample as a float, else NaN).
FRAME_COLUMNS = (*SampleRow._fields, "value_float")

_US = timedelta(microseconds=1)


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


def _check_run(run: object) -> int | None:
    if run is None:
        return None
    if isinstance(run, bool) or not isinstance(run, int) or run < 1:
        raise ConfigurationError(f"run must be an int >= 1 (1: a context's first run), got {run!r}")
    return run


def _as_float(value: Any) -> float:
    if isinstance(value, float | int):  # bools too
        try:
            return float(value)
        except OverflowError:
            return math.nan
    return math.nan


def _typed_values(pd: Any, values: list[Any]) -> Any:
    """The ``value`` column: float64, Int64 or boolean when every value present has that type
    (``None``: missing), else object (the values as collected)."""
    kinds = {type(v) for v in values if v is not None}
    if kinds == {float}:
        return pd.array([math.nan if v is None else v for v in values], dtype="float64")
    if kinds == {int} and all(v is None or -(2**63) <= v < 2**63 for v in values):
        return pd.array(values, dtype="Int64")
    if kinds == {bool}:
        return pd.array(values, dtype="boolean")
    return pd.array(values, dtype=object)


def samples_to_frame(rows: list[SampleRow]) -> Any:
    """Rows as a pandas DataFrame with the columns :data:`FRAME_COLUMNS`, typed: ids ``int64``,
    ``read_at`` ``datetime64[us, UTC]``, ``value`` ``float64`` / ``Int64`` / ``boolean`` when every
    selected sample with a value has that type (else ``object``: the values as collected),
    ``value_float`` ``float64`` always (numbers and bools as floats, else NaN), ``quality`` text."""
    try:
        pd: Any = importlib.import_module("pandas")
    except ImportError:
        raise ConfigurationError(
            'read_samples_frame needs pandas: pip install "data-collector[pandas]"'
        ) from None
    values = [r.value for r in rows]
    frame = pd.DataFrame(
        {
            "context_id": pd.array([r.context_id for r in rows], dtype="int64"),
            "variable_id": pd.array([r.variable_id for r in rows], dtype="int64"),
            "address": pd.array([r.address for r in rows], dtype=object),
            "value_type": pd.array([r.value_type for r in rows], dtype=object),
            "reader_type": pd.array([r.reader_type for r in rows], dtype=object),
            "read_at": pd.to_datetime(pd.Series([r.read_at for r in rows], dtype=object), utc=True).astype(
                "datetime64[us, UTC]"
            ),
            "value": _typed_values(pd, values),
            "quality": pd.array([r.quality.value for r in rows], dtype=object),
            "error": pd.array([r.error for r in rows], dtype=object),
            "name": pd.array([r.name for r in rows], dtype=object),
            "unit": pd.array([r.unit for r in rows], dtype=object),
            "value_float": pd.array([_as_float(v) for v in values], dtype="float64"),
        }
    )
    return frame[list(FRAME_COLUMNS)]


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
            store.set_read_version(version)  # read a version 2 or 3 store as it is
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


def run_window(
    runs: list[ContextRun], context_id: int, run: int, where: str = ""
) -> tuple[datetime | None, datetime | None]:
    """``[start, end)`` of run ``run`` (1: the first) of ``context_id`` among ``runs`` (the runs
    :func:`read_contexts` returns, oldest first): from its start to just after its end;
    :class:`ConfigurationError` naming the runs there are when it has no such run."""
    mine = [r for r in runs if r.context_id == context_id]
    if not 1 <= run <= len(mine):
        there = f"runs 1..{len(mine)}" if len(mine) > 1 else ("run 1" if mine else "no recorded run")
        raise ConfigurationError(f"{where}context {context_id} has no run {run} (it has {there})")
    chosen = mine[run - 1]
    return chosen.start, (chosen.end + _US if chosen.end is not None else None)


def _narrow(
    window: tuple[datetime | None, datetime | None], start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    lo, hi = window
    if start is not None and (lo is None or start > lo):
        lo = start
    if end is not None and (hi is None or end < hi):
        hi = end
    return lo, hi


def _select(
    store: SqlStore,
    conn: Connection,
    context_id: int,
    run: int | None,
    ids: list[int] | None,
    start: datetime | None,
    end: datetime | None,
    *,
    known: bool = False,
) -> list[SampleRow]:
    """The samples of ``context_id`` (run ``run``); ``known``: the context must be in the store."""
    if known and not store.context_known(conn, context_id):
        raise ConfigurationError(
            f"no context {context_id} in tables {store.prefix}* of {safe_url(store.engine.url)}"
        )
    if run is not None:
        start, end = _narrow(run_window(store.select_runs(conn, context_id), context_id, run), start, end)
        if start is not None and end is not None and start >= end:
            return []
    return store.select_samples(conn, context_id, ids, start, end)


def read_samples(
    url: str | URL | Engine,
    context_id: int,
    *,
    run: int | None = None,
    variable_ids: Iterable[int] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    table_prefix: str = "dc_",
) -> list[SampleRow]:
    """Samples of ``context_id`` stored by a :class:`SqlDataWriter`, in time order (then by variable).

    ``run`` keeps one run of the context (1: its first, as :func:`read_contexts` lists them; the
    samples from its start to its end; :class:`ConfigurationError` when there is no such run);
    ``variable_ids`` keeps only those variables; ``start`` (included) and ``end`` (excluded),
    timezone-aware, bound ``read_at``. Values come back typed as collected, ``read_at`` as aware
    UTC datetimes, with the variable's ``name`` and ``unit``. ``url`` may also be a SQLAlchemy
    :class:`Engine`.
    """
    ids, start, end = _check_query(context_id, variable_ids, start, end)
    number = _check_run(run)
    return _read(
        url, table_prefix, lambda store, conn: _select(store, conn, context_id, number, ids, start, end)
    )


def read_samples_frame(
    url: str | URL | Engine,
    context_id: int,
    *,
    run: int | None = None,
    variable_ids: Iterable[int] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    table_prefix: str = "dc_",
) -> Any:
    """:func:`read_samples` as a pandas DataFrame in long format, one row per sample (needs pandas).

    Columns :data:`FRAME_COLUMNS` (those of :class:`SampleRow`, then ``value_float``), typed: see
    :func:`samples_to_frame`. For one column per variable, see :func:`read_wide_frame`.
    """
    rows = read_samples(
        url, context_id, run=run, variable_ids=variable_ids, start=start, end=end, table_prefix=table_prefix
    )
    return samples_to_frame(rows)


def read_wide_frame(
    url: str | URL | Engine,
    context_id: int,
    *,
    run: int | None = None,
    variable_ids: Iterable[int] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    table_prefix: str = "dc_",
) -> Any:
    """One context (or one ``run`` of it) as a wide pandas DataFrame (needs pandas).

    One row per read time (index ``read_at``, UTC), one column per variable titled by its name
    (its id as text when it has none), BAD samples and times a variable was not read missing;
    ``float64`` columns for floats, ``int64`` (``Int64`` with missing values) for ints,
    ``bool``/``boolean`` for bools, else ``object``; ``frame.attrs["units"]`` maps titles to
    units. See :func:`data_collector.wide_frame`. The arguments are those of
    :func:`read_samples`; a context the store does not know, or a run it does not have, raises
    :class:`ConfigurationError`.
    """
    ids, start, end = _check_query(context_id, variable_ids, start, end)
    number = _check_run(run)
    rows = _read(
        url,
        table_prefix,
        lambda store, conn: _select(store, conn, context_id, number, ids, start, end, known=True),
    )
    return wide_frame(rows)


def has_context(url: str | URL | Engine, context_id: int, *, table_prefix: str = "dc_") -> bool:
    """Whether the store holds a run or a sample of ``context_id`` (cheap: two key lookups)."""
    _check_context_id(context_id)
    return _read(url, table_prefix, lambda store, conn: store.context_known(conn, context_id))


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
