"""Reading files of the HDF5 writer: the runs, the samples as rows, as a long pandas DataFrame or
as a wide one (one column per variable)."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tables

from data_collector import ConfigurationError, Quality, WriterError, wide_frame

from ._codec import decode_values
from ._layout import (
    ARRAY_BASES,
    FORMAT,
    FORMAT_VERSION,
    NAT,
    SAMPLE_BASES,
    context_id_of,
    run_key,
    run_number_of,
    split_table_name,
    time_us,
    us_to_datetime,
)
from ._writer import _read_metadata

__all__ = [
    "FRAME_COLUMNS",
    "RunInfo",
    "StoredSample",
    "list_runs",
    "read_frame",
    "read_samples",
    "read_wide_frame",
    "table_keys",
]

#: The columns of :func:`read_frame`.
FRAME_COLUMNS = (
    "context_id",
    "run",
    "time",
    "variable_id",
    "address",
    "value",
    "quality",
    "error",
    "name",
    "unit",
)

#: The range of context and variable ids (signed 64-bit, as the model checks them).
MIN_ID, MAX_ID = -(2**63), 2**63 - 1

_QUALITY = {b"GOOD": Quality.GOOD, b"UNCERTAIN": Quality.UNCERTAIN, b"BAD": Quality.BAD}


@dataclass(frozen=True)
class RunInfo:
    """One run of a context in a file: its group ``key``, times, metadata and sample count.

    ``metadata`` is what the user stated, ``deduced_metadata`` what the collector deduced (both
    as stored); ``ended`` says how the run ended (``""`` while it runs or after a crash);
    ``tables`` lists the run's sample and error tables (append them to ``key`` for
    ``pandas.read_hdf``); ``samples`` counts the stored samples.
    """

    path: str
    key: str
    context_id: int
    run: int
    start: datetime | None
    end: datetime | None
    ended: str
    metadata: dict[str, Any]
    deduced_metadata: dict[str, Any]
    samples: int
    tables: tuple[str, ...]
    replayed: bool


class StoredSample(NamedTuple):
    """One stored sample, typed as it was collected (``read_at`` aware UTC, ``None`` if it had none).

    The fields of the SQL writer's ``SampleRow`` plus ``run``; ``name`` and ``unit`` are the
    variable's (``None``: none, or a run written by format version 1 without them).
    """

    context_id: int
    variable_id: int
    address: str
    value_type: str
    reader_type: str
    read_at: datetime | None
    value: Any
    quality: Quality
    error: str | None
    run: int
    name: str | None = None
    unit: str | None = None


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str]) -> Iterator[Any]:
    try:
        p = Path(os.fspath(path))
    except TypeError:
        raise ConfigurationError(f"path must be a str or path, got {path!r}") from None
    if not p.is_file():
        raise ConfigurationError(f"no such file: {str(p)!r}")
    try:
        if not tables.is_hdf5_file(str(p)):
            raise ConfigurationError(f"{p} is not an HDF5 file")
        h5 = tables.open_file(str(p), mode="r")
    except ConfigurationError:
        raise
    except Exception as exc:
        raise WriterError(f"cannot open {p}: {exc}") from exc
    try:
        attrs = h5.root._v_attrs
        fmt = str(attrs["dc_format"]) if "dc_format" in attrs else None
        if fmt != FORMAT:
            raise ConfigurationError(f"{p} is not a file of the data-collector HDF5 writer (no dc_format)")
        found = int(attrs["dc_format_version"]) if "dc_format_version" in attrs else 0
        if found > FORMAT_VERSION:
            raise ConfigurationError(
                f"{p} has format version {found}; this data-collector reads up to {FORMAT_VERSION}"
            )
        yield h5
    finally:
        h5.close()


def _check_id(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_ID <= value <= MAX_ID:
        raise ConfigurationError(f"{name} must be an int (signed 64-bit), got {value!r}")
    return value


def _check_time(name: str, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got {value!r}")
    return time_us(value)


def _check_ids(variable_ids: Iterable[int] | None) -> np.ndarray[Any, Any] | None:
    if variable_ids is None:
        return None
    if isinstance(variable_ids, str | bytes) or not isinstance(variable_ids, Iterable):
        raise ConfigurationError(f"variable_ids must be an iterable of ints, got {variable_ids!r}")
    ids = list(variable_ids)
    for vid in ids:
        _check_id("variable_ids item", vid)
    return np.array(ids, dtype=np.int64)


def _groups(h5: Any, context_id: int | None, run: int | None) -> list[tuple[int, int, Any]]:
    found = []
    for cname, cgroup in h5.root._v_groups.items():
        cid = context_id_of(cname)
        if cid is None or (context_id is not None and cid != context_id):
            continue
        for rname, rgroup in cgroup._v_groups.items():
            n = run_number_of(rname)
            if n is None or (run is not None and n != run):
                continue
            found.append((cid, n, rgroup))
    found.sort(key=lambda x: (x[0], x[1]))
    return found


def _tables_of(group: Any) -> list[tuple[str, str, Any]]:
    """``(name, base, table)`` of a run's sample and error tables, in name order."""
    out = []
    for name in sorted(group._v_children):
        split = split_table_name(name)
        if split is not None:
            out.append((name, split[0], group._f_get_child(name)))
    return out


def _attr(group: Any, name: str, default: Any = None) -> Any:
    return group._v_attrs[name] if name in group._v_attrs else default  # noqa: SIM401 - no .get()


def _info(path: str, cid: int, n: int, group: Any) -> RunInfo:
    start_us = int(_attr(group, "start_us", NAT))
    end_us = int(_attr(group, "end_us", NAT))
    names = []
    samples = 0
    for name, base, table in _tables_of(group):
        names.append(name)
        if base in SAMPLE_BASES:
            samples += int(table.nrows)
    return RunInfo(
        path=path,
        key=run_key(cid, n),
        context_id=cid,
        run=n,
        start=us_to_datetime(start_us),
        end=us_to_datetime(end_us),
        ended=str(_attr(group, "ended", "")),
        metadata=_read_metadata(group, "user_metadata"),
        deduced_metadata=_read_metadata(group, "deduced_metadata"),
        samples=samples,
        tables=tuple(names),
        replayed=bool(_attr(group, "replayed", False)),
    )


def list_runs(path: str | os.PathLike[str], context_id: int | None = None) -> list[RunInfo]:
    """Every run in the file (of ``context_id`` if given), by context id then run number."""
    cid = _check_id("context_id", context_id)
    with _opened(path) as h5:
        return [_info(os.fspath(path), c, n, g) for c, n, g in _groups(h5, cid, None)]


def table_keys(path: str | os.PathLike[str], context_id: int, run: int = 1) -> list[str]:
    """The ``pandas.read_hdf`` keys of one run's sample and error tables (``/context_7/run_1/float``...);
    also those of its array tables (``.../float_array_1000``), which pandas cannot load (h5py can)."""
    cid = _check_id("context_id", context_id)
    _check_id("run", run)
    with _opened(path) as h5:
        groups = _groups(h5, cid, run)
        if not groups:
            raise ConfigurationError(f"{path}: no run {run} of context {context_id}")
        _, _, group = groups[0]
        return [f"{run_key(cid, run)}/{name}" for name, _, _ in _tables_of(group)]  # type: ignore[arg-type]


class _Part(NamedTuple):
    base: str
    rows: np.ndarray[Any, Any]


class _VariableInfo(NamedTuple):
    address: str
    value_type: str
    reader_type: str
    name: str | None
    unit: str | None


_UNKNOWN = _VariableInfo("", "", "", None, None)


class _RunData(NamedTuple):
    context_id: int
    run: int
    parts: list[_Part]
    errors: dict[tuple[int, int], str]
    variables: dict[int, _VariableInfo]


def _read_runs(
    path: str | os.PathLike[str],
    context_id: object,
    run: object,
    variable_ids: Iterable[int] | None,
    start: object,
    end: object,
) -> list[_RunData]:
    cid = _check_id("context_id", context_id)
    rn = _check_id("run", run)
    ids = _check_ids(variable_ids)
    lo = _check_time("start", start)
    hi = _check_time("end", end)
    out = []
    with _opened(path) as h5:
        for c, n, group in _groups(h5, cid, rn):
            parts: list[_Part] = []
            errors: dict[tuple[int, int], str] = {}
            for _, base, table in _tables_of(group):
                if lo is not None or hi is not None:
                    cond = " & ".join(
                        x
                        for x in (
                            f"(time_us >= {lo})" if lo is not None else "",
                            f"(time_us < {hi})" if hi is not None else "",
                        )
                        if x
                    )
                    rows = table.read_where(cond)
                else:
                    rows = table.read()
                if ids is not None and len(rows):
                    rows = rows[np.isin(rows["variable_id"], ids)]
                if base == "errors":
                    for t, v, e in zip(
                        rows["time_us"].tolist(),
                        rows["variable_id"].tolist(),
                        rows["error"].tolist(),
                        strict=True,
                    ):
                        errors.setdefault((t, v), e.decode("utf-8", "replace"))
                elif len(rows):
                    parts.append(_Part(base, rows))
            variables: dict[int, _VariableInfo] = {}
            if "variables" in group:
                table = group._f_get_child("variables")
                names = table.dtype.names
                for row in table.read().tolist():
                    by = dict(zip(names, row, strict=True))
                    variables.setdefault(
                        int(by["variable_id"]),
                        _VariableInfo(
                            by["address"].decode("utf-8"),
                            by["value_type"].decode("utf-8"),
                            by["reader_type"].decode("utf-8"),
                            by["name"].decode("utf-8") or None if "name" in by else None,
                            by["unit"].decode("utf-8") or None if "unit" in by else None,
                        ),
                    )
            out.append(_RunData(c, n, parts, errors, variables))
    return out


def read_samples(
    path: str | os.PathLike[str],
    context_id: int | None = None,
    run: int | None = None,
    *,
    variable_ids: Iterable[int] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[StoredSample]:
    """The stored samples, typed as collected, ordered by context, run, time and variable id.

    ``context_id`` / ``run`` select runs (default: all), ``variable_ids`` variables; ``start``
    (included) and ``end`` (excluded), timezone-aware, bound the read time. The rows have the
    fields of the SQL writer's ``SampleRow`` (plus ``run``), so the CSV/Parquet export treats
    both alike. Needs no pandas.
    """
    out: list[StoredSample] = []
    for data in _read_runs(path, context_id, run, variable_ids, start, end):
        keyed: list[tuple[int, int, StoredSample]] = []
        for part in data.parts:
            values = decode_values(part.base, part.rows)
            for t, v, value, q in zip(
                part.rows["time_us"].tolist(),
                part.rows["variable_id"].tolist(),
                values,
                part.rows["quality"].tolist(),
                strict=True,
            ):
                info = data.variables.get(v, _UNKNOWN)
                keyed.append(
                    (
                        t,
                        v,
                        StoredSample(
                            data.context_id,
                            v,
                            info.address,
                            info.value_type,
                            info.reader_type,
                            us_to_datetime(t),
                            value,
                            _QUALITY.get(q, Quality.BAD),
                            data.errors.get((t, v)),
                            data.run,
                            info.name,
                            info.unit,
                        ),
                    )
                )
        keyed.sort(key=lambda x: (x[0], x[1]))
        out.extend(s for _, _, s in keyed)
    return out


def read_frame(
    path: str | os.PathLike[str],
    context_id: int | None = None,
    run: int | None = None,
    *,
    variable_ids: Iterable[int] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Any:
    """The stored samples as a pandas DataFrame in long format (needs pandas).

    Columns :data:`FRAME_COLUMNS`: ``context_id``, ``run``, ``time`` (``datetime64[us, UTC]``),
    ``variable_id``, ``address``, ``value``, ``quality`` ("GOOD", "UNCERTAIN", "BAD"), ``error``
    (``None`` when the sample has none), ``name`` and ``unit`` (the variable's, ``None``: none).
    ``value`` keeps its NumPy type when every selected sample has the same kind (all floats:
    ``float64``), else it is an object column of the values as collected. Rows are ordered by
    context, run, time and variable id. The arguments are those of :func:`read_samples`.
    """
    try:
        pd: Any = importlib.import_module("pandas")
    except ImportError:
        raise ConfigurationError('read_frame needs pandas: pip install "data-collector[hdf5]"') from None
    frames = []
    for data in _read_runs(path, context_id, run, variable_ids, start, end):
        if not data.parts:
            continue
        bases = {p.base for p in data.parts}
        n = sum(len(p.rows) for p in data.parts)
        times = np.concatenate([p.rows["time_us"] for p in data.parts])
        ids = np.concatenate([p.rows["variable_id"] for p in data.parts])
        quality = np.concatenate([p.rows["quality"] for p in data.parts])
        value: Any
        if len(bases) == 1 and next(iter(bases)) in ("float", "int", "uint", "bool"):
            value = np.concatenate([p.rows["value"] for p in data.parts])
        else:
            value = np.empty(n, dtype=object)
            i = 0
            for p in data.parts:
                decoded = decode_values(p.base, p.rows)
                if p.base in ARRAY_BASES or p.base == "other":  # one by one: NumPy would merge arrays
                    for k, v in enumerate(decoded):
                        value[i + k] = v
                else:
                    value[i : i + len(p.rows)] = decoded
                i += len(p.rows)
        frame = pd.DataFrame(
            {
                "context_id": np.full(n, data.context_id, dtype=np.int64),
                "run": np.full(n, data.run, dtype=np.int64),
                "time_us": times,
                "variable_id": ids,
                "value": value,
                "quality": pd.Series(quality).map(
                    {b"GOOD": "GOOD", b"UNCERTAIN": "UNCERTAIN", b"BAD": "BAD"}
                ),
            }
        )
        frame["address"] = frame["variable_id"].map({k: v.address for k, v in data.variables.items()})
        ids = frame["variable_id"].tolist()
        for label in ("name", "unit"):
            of = {k: getattr(v, label) for k, v in data.variables.items()}
            frame[label] = pd.Series([of.get(i) for i in ids], dtype=object, index=frame.index)
        if data.errors:
            err = pd.DataFrame(
                [(t, v, e) for (t, v), e in data.errors.items()], columns=["time_us", "variable_id", "error"]
            )
            frame = frame.merge(err, on=["time_us", "variable_id"], how="left", sort=False)
            frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
        else:
            frame["error"] = pd.Series([None] * n, dtype=object)
        frames.append(frame)
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in FRAME_COLUMNS})
        empty["time"] = pd.to_datetime(pd.Series([], dtype=np.int64), unit="us", utc=True)
        return empty
    if len({str(f["value"].dtype) for f in frames}) > 1:  # e.g. float64 and int64: keep both exact
        for f in frames:
            f["value"] = f["value"].astype(object)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    frame = frame.sort_values(["context_id", "run", "time_us", "variable_id"], kind="stable")
    frame["time"] = pd.to_datetime(frame["time_us"], unit="us", utc=True)
    return frame[list(FRAME_COLUMNS)].reset_index(drop=True)


def read_wide_frame(
    path: str | os.PathLike[str],
    context_id: int,
    run: int | None = None,
    *,
    variable_ids: Iterable[int] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Any:
    """One context (every run, or run ``run``) as a wide pandas DataFrame (needs pandas).

    One row per read time (index ``read_at``, UTC), one column per variable titled by its name
    (its id as text when it has none), BAD samples and times a variable was not read missing;
    ``float64`` columns for floats, ``int64`` (``Int64`` with missing values) for ints,
    ``bool``/``boolean`` for bools, else ``object``; ``frame.attrs["units"]`` maps titles to
    units (see :func:`data_collector.wide_frame`). A context or run the file does not have raises
    :class:`ConfigurationError`.
    """
    cid = _check_id("context_id", context_id)
    if cid is None:
        raise ConfigurationError("context_id must be an int (signed 64-bit), got None")
    rn = _check_id("run", run)
    runs = list_runs(path, cid)
    if not runs:
        raise ConfigurationError(f"{os.fspath(path)}: no context {cid}")
    if rn is not None and rn not in {r.run for r in runs}:
        numbers = ", ".join(str(r.run) for r in runs)
        raise ConfigurationError(f"{os.fspath(path)}: context {cid} has no run {rn} (it has run {numbers})")
    return wide_frame(read_samples(path, cid, rn, variable_ids=variable_ids, start=start, end=end))
