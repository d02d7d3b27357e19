"""Batches to table rows and back: which table a value goes to, and how it is stored exactly.

=========  ======================  ==========================================================
table      value column            holds
=========  ======================  ==========================================================
float      float64                 ``float`` (NaN, infinities, -0.0 kept), NumPy floats
int        int64                   ``int`` in -2**63 .. 2**63-1, NumPy ints
uint       uint64                  ``int`` in 2**63 .. 2**64-1
bool       bool                    ``bool``, NumPy bools
str[_W]    UTF-8, W bytes wide     ``str`` (W: the narrowest of 64, 256, ... 1 MiB that fits)
other[_W]  ``kind`` + text         ``int`` beyond uint64 (decimal), ``bytes`` (hex), ``str``
                                   that fixed-width UTF-8 cannot hold (unpaired surrogates,
                                   trailing NUL; JSON string), ``list``/``dict`` of JSON values
                                   (JSON), ``datetime`` (ISO-8601), ``Decimal`` (text)
float_array_N  float64 (N,)        a 1-D NumPy float array of N >= 1 points (float16/32 widened)
int_array_N    int64 (N,)          a 1-D NumPy signed int array (int8 .. int64 widened)
uint_array_N   uint64 (N,)         a 1-D NumPy unsigned int array (uint8 .. uint64 widened)
bool_array_N   bool (N,)           a 1-D NumPy bool array
other[_W]  kind ``array``          an empty 1-D array: ``<dtype>:`` (its NumPy dtype string)
novalue    (none)                  samples without a value (``None``; usually BAD)
errors[_W] ``error``, UTF-8        the error text of every sample that has one
=========  ======================  ==========================================================

A value none of these can hold exactly (another type, a text longer than 1 MiB) is *refused*: the
sample goes to ``novalue`` with quality BAD and an error saying why; the rest of the batch is
stored. Error texts longer than 1 MiB are cut (ending in `` [truncated]``).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from data_collector import CollectedVariables, Quality, Variable

from ._layout import (
    ARRAY_BASES,
    QUALITY_NAMES,
    WIDTHS,
    errors_dtype,
    sample_dtype,
    split_table_name,
    table_name,
    time_us,
    width_class,
)

__all__ = ["decode_other", "decode_values", "encode_batch", "encode_error", "variable_ids"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

_QNAMES = np.array(QUALITY_NAMES, dtype="S9")
_QCODE = {Quality.GOOD: 0, Quality.UNCERTAIN: 1, Quality.BAD: 2}
_GOOD = Quality.GOOD
_MAX_TEXT = WIDTHS[-1]
_TRUNCATED = b" [truncated]"
_NoneType = type(None)
_ID = operator.attrgetter("id")

Rows = npt.NDArray[Any]


def _quality_code(q: Any) -> int:
    code = _QCODE.get(q)
    if code is not None:
        return code
    try:
        return _QCODE[Quality(str(q))]
    except ValueError:
        return 2  # not a quality at all: the sample cannot be trusted


def _times(read_ats: list[datetime | None], n: int) -> npt.NDArray[np.int64]:
    first = read_ats[0]
    if read_ats.count(first) == n:
        return np.full(n, time_us(first), dtype=np.int64)
    cache: dict[datetime | None, int] = {}
    out = []
    for t in read_ats:
        u = cache.get(t)
        if u is None:
            u = cache[t] = time_us(t)
        out.append(u)
    return np.array(out, dtype=np.int64)


def encode_error(error: Any) -> bytes:
    """The stored bytes of an error text: UTF-8 (unencodable characters as ``\\u`` escapes), at most 1 MiB."""
    text = error if isinstance(error, str) else str(error)
    data = text.encode("utf-8", "backslashreplace")
    if len(data) > _MAX_TEXT:
        cut = data[: _MAX_TEXT - len(_TRUNCATED)].decode("utf-8", "ignore").encode("utf-8")
        data = cut + _TRUNCATED
    return data


class _Group:
    __slots__ = ("idx", "kinds", "vals")

    def __init__(self, other: bool) -> None:
        self.idx: list[int] = []
        self.vals: list[Any] = []
        self.kinds: list[bytes] | None = [] if other else None


def _text(value: str) -> bytes | None:
    """UTF-8 of a str that a fixed-width column keeps exactly, else ``None``."""
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if data.endswith(b"\0"):
        return None
    return data


def _classify(value: Any) -> tuple[str, Any, bytes | None] | str:
    """``(base, stored value, other kind)`` of a value outside the fast paths, or a refusal reason."""
    if isinstance(value, bool | np.bool_):
        return ("bool", bool(value), None)
    if isinstance(value, float | np.floating):
        return ("float", float(value), None)
    if isinstance(value, int | np.integer):
        v = int(value)
        if INT64_MIN <= v <= INT64_MAX:
            return ("int", v, None)
        if 0 <= v <= UINT64_MAX:
            return ("uint", v, None)
        try:
            return ("other", str(v).encode(), b"int")
        except ValueError:
            return "an int with more digits than Python converts to text"
    if isinstance(value, str):
        data = _text(value)
        if data is not None:
            return ("str", data, None)
        return ("other", json.dumps(value).encode(), b"str")
    if isinstance(value, bytes | bytearray | memoryview):
        return ("other", bytes(value).hex().encode(), b"bytes")
    if isinstance(value, datetime):
        return ("other", value.isoformat().encode(), b"datetime")
    if isinstance(value, Decimal):
        return ("other", str(value).encode(), b"decimal")
    if isinstance(value, np.ndarray):
        return _array(value)
    if isinstance(value, list | dict):
        try:
            text = json.dumps(value, ensure_ascii=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return f"a {type(value).__name__} that JSON cannot hold exactly ({exc})"
        if json.loads(text) != value:
            return f"a {type(value).__name__} that JSON cannot hold exactly (tuples, non-str keys...)"
        return ("other", text.encode(), b"json")
    return f"{type(value).__name__} values cannot be stored"


_ARRAY_BASE = {"f": "float_array", "i": "int_array", "u": "uint_array", "b": "bool_array"}
_ARRAY_DTYPE = {"f": "<f8", "i": "<i8", "u": "<u8", "b": "?"}


def _array(value: npt.NDArray[Any]) -> tuple[str, Any, bytes | None] | str:
    """A 1-D NumPy array: its ``<kind>_array`` table (the caller adds the length), or ``other``
    kind ``array`` when it is empty; a refusal reason for any other array."""
    if value.ndim != 1:
        return f"a {value.ndim}-D array of shape {value.shape} (only 1-D arrays can be stored)"
    kind = value.dtype.kind
    if kind not in _ARRAY_BASE:
        return f"an array of dtype {value.dtype} (bool, int, uint or float only)"
    if len(value) == 0:
        return ("other", f"{value.dtype.newbyteorder('<').str}:".encode(), b"array")
    return (_ARRAY_BASE[kind], value.astype(_ARRAY_DTYPE[kind], copy=False), None)


def variable_ids(variables: list[Variable]) -> npt.NDArray[np.int64]:
    """The ids of ``variables`` as an int64 array."""
    return np.fromiter(map(_ID, variables), dtype=np.int64, count=len(variables))


def encode_batch(
    batch: CollectedVariables,
    refused: list[tuple[Variable, str]],
    ids: npt.NDArray[np.int64] | None = None,
) -> tuple[dict[str, Rows], int]:
    """The rows of ``batch`` per table name, and the number of samples; refusals go to ``refused``.

    ``ids``: the variable ids of the batch when the caller has them already.
    """
    variables = batch.variables
    values = batch.values
    n = len(variables)
    if n == 0:
        return {}, 0
    if ids is None:
        ids = variable_ids(variables)
    times = _times(batch.read_ats, n)
    qualities = batch.qualities
    qcodes: npt.NDArray[np.uint8] | None = None
    if qualities.count(_GOOD) != n:
        qcodes = np.array([_quality_code(q) for q in qualities], dtype=np.uint8)
    errors: Sequence[Any] = batch.errors
    overrides: dict[int, str] = {}

    parts: dict[str, Rows] = {}
    types = set(map(type, values))
    fast: tuple[str, Any] | None = None
    if len(types) == 1:
        t = next(iter(types))
        if t is float:
            fast = ("float", np.array(values, dtype=np.float64))
        elif t is bool:
            fast = ("bool", np.array(values, dtype=np.bool_))
        elif t is int:
            try:
                fast = ("int", np.array(values, dtype=np.int64))
            except OverflowError:
                fast = None
        elif t is _NoneType:
            fast = ("novalue", None)
    if fast is not None:
        name, column = fast
        rows = np.empty(n, dtype=sample_dtype(name))
        rows["time_us"] = times
        rows["variable_id"] = ids
        if column is not None:
            rows["value"] = column
        rows["quality"] = _QNAMES[0] if qcodes is None else _QNAMES[qcodes]
        parts[name] = rows
    else:
        groups: dict[str, _Group] = {}
        for i, v in enumerate(values):
            t = type(v)
            base: str
            kind: bytes | None = None
            if t is float:
                base, stored = "float", v
            elif t is int and INT64_MIN <= v <= INT64_MAX:
                base, stored = "int", v
            elif v is None:
                base, stored = "novalue", None
            elif t is str and (data := _text(v)) is not None:
                base, stored = "str", data
            else:
                found = _classify(v)
                if isinstance(found, str):
                    refused.append((variables[i], found))
                    overrides[i] = f"value refused: {found}"
                    if qcodes is None:
                        qcodes = np.zeros(n, dtype=np.uint8)
                    qcodes[i] = 2
                    base, stored = "novalue", None
                else:
                    base, stored, kind = found
            name = base
            if base in ARRAY_BASES:
                name = table_name(base, len(stored))
            elif base in ("str", "other"):
                width = width_class(len(stored))
                if width is None:
                    reason = f"a text of {len(stored)} bytes (the limit is {_MAX_TEXT})"
                    refused.append((variables[i], reason))
                    overrides[i] = f"value refused: {reason}"
                    if qcodes is None:
                        qcodes = np.zeros(n, dtype=np.uint8)
                    qcodes[i] = 2
                    base, name, stored, kind = "novalue", "novalue", None, None
                else:
                    name = table_name(base, width)
            group = groups.get(name)
            if group is None:
                group = groups[name] = _Group(base == "other")
            group.idx.append(i)
            if base != "novalue":
                group.vals.append(stored)
            if group.kinds is not None:
                assert kind is not None
                group.kinds.append(kind)
        for name, group in groups.items():
            index = np.array(group.idx, dtype=np.intp)
            base, width = split_table_name(name) or (name, None)
            rows = np.empty(len(index), dtype=sample_dtype(base, width))
            rows["time_us"] = times[index]
            rows["variable_id"] = ids[index]
            if base != "novalue":
                rows["value"] = group.vals
            if group.kinds is not None:
                rows["kind"] = group.kinds
            rows["quality"] = _QNAMES[0] if qcodes is None else _QNAMES[qcodes[index]]
            parts[name] = rows

    if overrides or errors.count(None) != n:
        by_width: dict[int, tuple[list[int], list[bytes]]] = {}
        for i, e in enumerate(errors):
            text = overrides.get(i)
            if text is not None:
                data = encode_error(text if e is None else f"{text}; {e}")
            elif e is not None:
                data = encode_error(e)
            else:
                continue
            w = width_class(len(data))
            assert w is not None  # encode_error keeps every text within the widest class
            idx, texts = by_width.setdefault(w, ([], []))
            idx.append(i)
            texts.append(data)
        for w, (idx, texts) in by_width.items():
            index = np.array(idx, dtype=np.intp)
            rows = np.empty(len(index), dtype=errors_dtype(w))
            rows["time_us"] = times[index]
            rows["variable_id"] = ids[index]
            rows["error"] = texts
            parts[table_name("errors", w)] = rows
    return parts, n


def decode_other(kind: bytes, text: bytes) -> Any:
    """The Python value of one ``other`` row."""
    if kind == b"int":
        return int(text)
    if kind == b"bytes":
        return bytes.fromhex(text.decode("ascii"))
    if kind in (b"str", b"json"):
        return json.loads(text.decode("utf-8"))
    if kind == b"datetime":
        return datetime.fromisoformat(text.decode("ascii"))
    if kind == b"decimal":
        return Decimal(text.decode("ascii"))
    if kind == b"array":
        return np.zeros(0, dtype=np.dtype(text.decode("ascii").rstrip(":")))
    raise ValueError(f"unknown value kind {kind!r}")


def decode_values(base: str, rows: Rows) -> list[Any]:
    """The Python values of rows of a sample table of kind ``base``."""
    if base == "novalue":
        return [None] * len(rows)
    column = rows["value"]
    if base == "str":
        return [b.decode("utf-8") for b in column.tolist()]
    if base == "other":
        return [decode_other(k, b) for k, b in zip(rows["kind"].tolist(), column.tolist(), strict=True)]
    if base in ARRAY_BASES:
        return list(column.copy())  # one 1-D array per row (copies: no view into the table rows)
    values: list[Any] = column.tolist()
    return values
