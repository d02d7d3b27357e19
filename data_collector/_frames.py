"""Samples as a wide table: one column per variable, one row per read time (pandas).

Serves people who look at a run as a table or a plot rather than as a list of samples: the
``data-collector export --wide`` command, and the ``read_wide_frame`` functions of the SQL and
HDF5 writers, which read their samples and hand them to :func:`wide_frame`. pandas is imported
when a frame is made, never at import.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ._errors import ConfigurationError
from ._model import Quality

__all__ = ["column_titles", "wide_frame"]

_INT64 = (-(2**63), 2**63 - 1)


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")
    except ImportError:
        raise ConfigurationError('a wide frame needs pandas: pip install "data-collector[pandas]"') from None


def column_titles(names: dict[int, str | None]) -> dict[int, str]:
    """The column title of each variable id: its name, else its id as text; a title two variables
    would share gets `` (<id>)`` appended on each of them, so every title is unique."""
    first = {vid: (name if name is not None else str(vid)) for vid, name in names.items()}
    counts: dict[str, int] = {}
    for title in first.values():
        counts[title] = counts.get(title, 0) + 1
    titles = {vid: (f"{t} ({vid})" if counts[t] > 1 else t) for vid, t in first.items()}
    if len(set(titles.values())) < len(titles):  # "a (1)" named so by the user: fall back to ids
        titles = {vid: f"{t} [{vid}]" for vid, t in titles.items()}
    return titles


#: The column type of a variable none of whose values is present, by its value_type.
_EMPTY = {"float": "float64", "int": "Int64", "bool": "boolean"}


def _column(pd: Any, np: Any, values: list[Any], value_type: str | None) -> Any:
    """``values`` (``None``: missing) as the narrowest fitting column: bool, int64, float64, else
    the nullable ``boolean`` / ``Int64`` when values are missing, else object (a column with no
    value at all: by the variable's ``value_type``)."""
    present = [v for v in values if v is not None]
    if not present and value_type in _EMPTY:
        return pd.array(values, dtype=_EMPTY[value_type])
    kinds = {type(v) for v in present}
    missing = len(present) < len(values)
    if present and kinds <= {bool}:
        return pd.array(values, dtype="boolean") if missing else np.array(values, dtype=bool)
    if present and kinds <= {int} and all(_INT64[0] <= v <= _INT64[1] for v in present):
        return pd.array(values, dtype="Int64") if missing else np.array(values, dtype=np.int64)
    if present and all(isinstance(v, float | int) and not isinstance(v, bool) for v in present):
        try:
            return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
        except OverflowError:  # an int beyond a float's range: keep the values
            pass
    if not any(issubclass(k, np.ndarray) for k in kinds):
        return np.array(values, dtype=object)
    column = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):  # one by one: np.array() would merge array values into 2-D
        column[i] = v
    return column


def wide_frame(samples: Iterable[Any]) -> Any:
    """``samples`` as a pandas DataFrame with one column per variable and one row per read time.

    ``samples`` are rows with the attributes ``variable_id``, ``read_at`` (aware datetime),
    ``value``, ``quality`` and optionally ``name`` and ``unit`` (the ``SampleRow`` of the SQL
    writer, the ``StoredSample`` of the HDF5 writer), of one context. The index ``read_at`` is a
    UTC ``DatetimeIndex``, sorted; a column is titled by the variable's name (the latest one it
    was stored with), else its id as text (see :func:`column_titles`), in variable id order. A
    variable not read at a time, and every BAD sample, is a missing value. Columns are typed:
    ``float64`` for floats (ints mixed in), ``int64`` for ints (``Int64`` when values are
    missing), ``bool`` (``boolean``), else ``object``. ``frame.attrs`` holds ``variables`` (title
    -> variable id) and ``units`` (title -> unit or ``None``). Samples without a read time are
    left out. Needs pandas.
    """
    pd = _pandas()
    np = importlib.import_module("numpy")
    columns: dict[int, dict[datetime, Any]] = {}
    names: dict[int, str | None] = {}
    units: dict[int, str | None] = {}
    value_types: dict[int, str | None] = {}
    times: set[datetime] = set()
    latest: dict[int, datetime] = {}
    for s in samples:
        at = s.read_at
        if at is None:
            continue
        vid = s.variable_id
        column = columns.get(vid)
        if column is None:
            column = columns[vid] = {}
        column[at] = None if s.quality is Quality.BAD else s.value
        times.add(at)
        if vid not in latest or at >= latest[vid]:
            latest[vid] = at
            names[vid] = getattr(s, "name", None)
            units[vid] = getattr(s, "unit", None)
            value_types[vid] = getattr(s, "value_type", None)
    order = sorted(times)
    titles = column_titles({vid: names[vid] for vid in sorted(columns)})
    data = {}
    for vid, title in titles.items():
        column = columns[vid]
        data[title] = _column(pd, np, [column.get(t) for t in order], value_types[vid])
    index = pd.DatetimeIndex(pd.to_datetime(order, utc=True), name="read_at")
    frame = pd.DataFrame(data, index=index)
    if not data:
        frame = pd.DataFrame(index=index)
    frame.attrs["variables"] = {title: vid for vid, title in titles.items()}
    frame.attrs["units"] = {title: units[vid] for vid, title in titles.items()}
    return frame
