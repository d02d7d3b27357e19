"""File formats of the archive writer: what one file holds, and reading it back.

``.npy`` (NumPy, never pickled):

- ``per = "sample"``: the value itself, ``numpy.asarray(value)``: a 0-d array for a scalar, the
  array for an array value (what ``numpy.save(path, value)`` writes). Quality, read time and error
  are not in the file (put them in the path if wanted); a sample without a value has no file.
- ``per = "variable"`` / ``"batch"``: a structured array, one row per sample, with the fields
  ``read_at`` (int64 ns since 1970-01-01 UTC), ``variable_id`` (int64), ``value`` (one dtype for
  the file; an array value makes it a sub-array field of the values' shape), ``has_value`` (bool;
  False: no value, ``value`` holds NaN / 0 / "" / False), ``quality`` (``<U9``) and ``error``
  (text, "" for none).

``.json`` (UTF-8): ``{"context_id": 7, "samples": [{"variable_id", "address", "value_type",
"read_at" (ISO-8601 UTC, µs), "value", "quality", "error"}, ...]}``; arrays become lists, NumPy
scalars numbers, bytes hex text; non-finite floats are written ``NaN``/``Infinity`` (Python's and
pandas' JSON readers take them).

``.csv`` (UTF-8, header row): the CSV writer's columns ``context_id, variable_id, address,
read_at, value, quality, error, value_type``; an array value is JSON text (``[1.0, 2.0]``).

:func:`read_samples` reads any of them back (the plain ``.npy`` of ``per = "sample"`` with
:func:`load_npy`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from data_collector import Quality, Variable

from ._errors import Refused

__all__ = [
    "CSV_COLUMNS",
    "EXTENSIONS",
    "FORMATS",
    "ArchivedSample",
    "Refused",
    "Sample",
    "encode",
    "load_npy",
    "read_samples",
    "sample_array",
    "samples_table",
]

FORMATS = ("npy", "json", "csv")
EXTENSIONS = {"npy": "npy", "json": "json", "csv": "csv"}
CSV_COLUMNS = ("context_id", "variable_id", "address", "read_at", "value", "quality", "error", "value_type")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_NAT = np.iinfo(np.int64).min

Dump = Callable[[IO[bytes]], None]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample to archive (a row of the batch)."""

    variable: Variable
    value: Any
    read_at: datetime | None
    quality: Quality
    error: str | None


@dataclass(frozen=True, slots=True)
class ArchivedSample:
    """One sample read back from an archive file (``context_id`` is None for a ``.npy`` file)."""

    context_id: int | None
    variable_id: int
    read_at: datetime | None
    value: Any
    quality: Quality
    error: str | None


def _ns(t: datetime | None) -> int:
    if t is None:
        return _NAT
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return ((t - _EPOCH) // _US) * 1000


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    if t.utcoffset() is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="microseconds")


# -- .npy -------------------------------------------------------------------------------------------
def sample_array(value: Any, where: str) -> npt.NDArray[Any]:
    """``numpy.asarray(value)``, refused when it would need pickle (an object array)."""
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise Refused(f"{where}: {type(value).__name__} value cannot become a NumPy array: {exc}") from exc
    if arr.dtype.hasobject:
        raise Refused(
            f"{where}: a {type(value).__name__} value is no plain NumPy array (it would need pickle, "
            'which .npy files of this writer never hold): use format = "json"'
        )
    return arr


def _value_column(values: list[Any], where: str) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The dtype and per-row shape of the ``value`` field for the non-missing ``values``."""
    if not values:
        return np.dtype(np.float64), ()
    texts = sum(isinstance(v, str) for v in values)
    if texts and texts != len(values):
        raise Refused(
            f"{where}: text and other values cannot share one .npy value column: "
            'use per = "variable" (one kind of value per file) or format = "json"'
        )
    arrays = [sample_array(v, where) for v in values]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise Refused(
            f"{where}: values of different shapes {sorted(shapes)[:4]} cannot share one .npy value "
            'column: use per = "sample" (one file per value) or format = "json"'
        )
    try:
        dtype = np.result_type(*arrays) if len(arrays) < 32 else np.asarray(arrays).dtype
    except Exception as exc:
        raise Refused(f"{where}: the values have no common NumPy type: {exc}") from exc
    if dtype.hasobject:
        raise Refused(f"{where}: the values have no common NumPy type (it would need pickle)")
    return dtype, shapes.pop()


def samples_table(samples: Sequence[Sample], where: str) -> npt.NDArray[Any]:
    """The structured array of ``samples`` (fields: see the module docstring)."""
    present = [s.value for s in samples if s.value is not None]
    vdtype, shape = _value_column(present, where)
    longest = max((len(s.error) for s in samples if s.error), default=1)
    dtype = np.dtype(
        [
            ("read_at", "<i8"),
            ("variable_id", "<i8"),
            ("value", vdtype, shape),
            ("has_value", "?"),
            ("quality", "<U9"),
            ("error", f"<U{longest}"),
        ]
    )
    table = np.zeros(len(samples), dtype=dtype)
    table["read_at"] = [_ns(s.read_at) for s in samples]
    table["variable_id"] = [s.variable.id for s in samples]
    has = np.array([s.value is not None for s in samples], dtype=bool)
    table["has_value"] = has
    table["quality"] = [s.quality.value for s in samples]
    table["error"] = [s.error or "" for s in samples]
    if vdtype.kind in "fc":
        table["value"][~has] = np.nan
    try:
        for i, s in enumerate(samples):
            if s.value is not None:
                table["value"][i] = s.value
    except (ValueError, TypeError, OverflowError) as exc:
        raise Refused(f"{where}: a value does not fit the file's value column ({vdtype}): {exc}") from exc
    return table


def load_npy(path: str | Path) -> npt.NDArray[Any]:
    """``numpy.load(path, allow_pickle=False)``: the array of an archive ``.npy`` file."""
    return np.load(path, allow_pickle=False)  # type: ignore[no-any-return]


# -- .json and .csv ----------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and type(value).__module__.startswith("numpy"):
        return tolist()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} value {value!r:.60} is not JSON-serialisable")


def _json_bytes(cid: int, samples: Sequence[Sample], where: str) -> bytes:
    doc = {
        "context_id": cid,
        "samples": [
            {
                "variable_id": s.variable.id,
                "address": s.variable.address,
                "value_type": s.variable.value_type,
                "read_at": _iso(s.read_at),
                "value": s.value,
                "quality": s.quality.value,
                "error": s.error,
            }
            for s in samples
        ],
    }
    try:
        text = json.dumps(doc, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise Refused(f'{where}: {exc}: use format = "npy" or store JSON-compatible values') from exc
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escaped, so they come back exactly
        return json.dumps(doc, ensure_ascii=True, default=_json_default).encode("ascii")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, np.ndarray | list | tuple):
        return json.dumps(value, default=_json_default)
    if isinstance(value, np.generic):
        return _csv_value(value.item())
    return str(value)


def _csv_bytes(cid: int, samples: Sequence[Sample]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for s in samples:
        w.writerow(
            (
                cid,
                s.variable.id,
                s.variable.address,
                _iso(s.read_at) or "",
                _csv_value(s.value),
                s.quality.value,
                s.error or "",
                s.variable.value_type,
            )
        )
    return buf.getvalue().encode("utf-8", errors="backslashreplace")


class _Plain:
    """Only ``write``: NumPy then writes an array in chunks through it instead of ``tofile``."""

    __slots__ = ("write",)

    def __init__(self, f: IO[bytes]) -> None:
        self.write = f.write


def encode(fmt: str, per: str, cid: int, samples: Sequence[Sample], where: str) -> Dump:
    """A function writing the file of ``samples`` to an open binary file; :class:`Refused` if it cannot."""
    if fmt == "npy":
        if per == "sample":
            (only,) = samples
            arr = sample_array(only.value, where)
        else:
            arr = samples_table(samples, where)

        def dump_npy(f: IO[bytes]) -> None:
            # through .write() (not ndarray.tofile, whose errors carry no errno): a full disk is ENOSPC
            np.lib.format.write_array(_Plain(f), arr, allow_pickle=False)

        return dump_npy
    data = _json_bytes(cid, samples, where) if fmt == "json" else _csv_bytes(cid, samples)

    def dump(f: IO[bytes]) -> None:
        f.write(data)

    return dump


# -- reading back ------------------------------------------------------------------------------------
def _parse(text: str, value_type: str) -> Any:
    if text == "":
        return None
    if value_type == "float":
        return float(text)
    if value_type == "int":
        return int(text)
    if value_type == "bool":
        return text == "true"
    return text


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _from_ns(ns: int) -> datetime | None:
    if ns == _NAT:
        return None
    return _EPOCH + timedelta(microseconds=ns // 1000)


def read_samples(path: str | Path) -> list[ArchivedSample]:
    """The samples of an archive file (``.json``, ``.csv``, or the structured ``.npy`` of per
    variable/batch), typed: aware UTC datetimes, :class:`Quality`, values as stored (CSV: parsed by
    the variable's value_type, arrays stay JSON text; ``.npy``: Python scalars, arrays as arrays)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        doc = json.loads(p.read_text(encoding="utf-8"))
        cid = doc["context_id"]
        return [
            ArchivedSample(
                cid,
                s["variable_id"],
                _dt(s["read_at"]),
                s["value"],
                Quality(s["quality"]),
                s["error"],
            )
            for s in doc["samples"]
        ]
    if suffix == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            return [
                ArchivedSample(
                    int(row["context_id"]),
                    int(row["variable_id"]),
                    _dt(row["read_at"]),
                    _parse(row["value"], row["value_type"]),
                    Quality(row["quality"]),
                    row["error"] or None,
                )
                for row in csv.DictReader(f)
            ]
    table = load_npy(p)
    if table.dtype.names is None or "has_value" not in table.dtype.names:
        raise ValueError(f'{p} holds a bare value (per = "sample"): read it with load_npy()')
    out = []
    for row in table:
        value: Any = None
        if row["has_value"]:
            v = row["value"]
            value = v.item() if v.ndim == 0 else np.array(v)
        out.append(
            ArchivedSample(
                None,
                int(row["variable_id"]),
                _from_ns(int(row["read_at"])),
                value,
                Quality(str(row["quality"])),
                str(row["error"]) or None,
            )
        )
    return out
