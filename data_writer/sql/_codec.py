"""How sample values are stored in SQL columns without loss, and read back.

A sample row holds ``value_kind`` (the Python type stored) and exactly one of ``value_num``
(DOUBLE), ``value_int`` (BIGINT) or ``value_text`` (long text):

=========  =========================================================================
kind       stored as
=========  =========================================================================
float      ``value_num``; NaN, +-infinity and -0.0 (not kept by every database) as
           ``value_text`` ``repr`` ("nan", "inf", "-inf", "-0.0"; a NaN with another sign or
           payload as ``nan:<64 bits in hex>``)
int        ``value_int`` within the signed 64-bit range, else ``value_text`` (decimal)
bool       ``value_int`` 0 / 1
str        ``value_text``
bytes      ``value_text`` in hex
json       ``value_text``: a list or dict of JSON-native values (str keys); also a str that
           the database cannot hold as text (NUL on PostgreSQL, unpaired surrogates)
datetime   ``value_text`` ISO-8601 (an aware datetime keeps its offset)
decimal    ``value_text`` (``str(Decimal)``)
array      ``value_text`` ``<dtype>:<base64>``: a 1-D NumPy array of bools, ints or floats as
           its NumPy little-endian dtype string and the base64 of its raw bytes, e.g.
           ``<f8:AAAAAAAA8D8=`` for ``[1.0]``, ``<i8:`` for an empty int64 array. Exact to the bit
           (NaN payloads, -0.0, int64 extremes); read back as a NumPy array of that dtype
           (``numpy.frombuffer(base64.b64decode(b64), dtype)``; reading needs NumPy)
(none)     every value column NULL: the sample has no value (usually quality BAD)
=========  =========================================================================

A value that cannot be stored exactly (another type, a list holding a tuple, an int beyond
Python's str conversion limit, an array of more than one dimension or of another dtype) is
*refused*: its row gets no
value, quality BAD and an error text that says why, so the rest of the batch is still stored.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import numbers
import struct
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from data_collector import CollectedVariables, ConfigurationError, Quality, Variable

__all__ = [
    "KINDS",
    "MissingVariables",
    "Refused",
    "SampleTuple",
    "clean_text",
    "decode_value",
    "encode_rows",
    "encode_value",
    "to_utc",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

KINDS = ("float", "int", "bool", "str", "bytes", "json", "datetime", "decimal", "array")

#: NumPy dtype kinds an array value may have: bool, signed and unsigned int, float
_ARRAY_DTYPE_KINDS = frozenset("biuf")

#: context_id, variable_key, read_at, value_kind, value_num, value_int, value_text, quality, error
SampleTuple = tuple[int, int, Any, str | None, float | None, int | None, str | None, str, str | None]
_Encoded = tuple[str | None, float | None, int | None, str | None]

_QUALITY_TEXT: dict[Any, str] = {q: q.value for q in Quality}


class Refused(Exception):
    """A value that cannot be stored exactly; the message says why."""


def _text(value: str, forbid_nul: bool) -> _Encoded:
    """A str as kind "str", or as kind "json" (an ASCII JSON string) when the database could not
    hold it as text: NUL on PostgreSQL, unpaired surrogates anywhere."""
    if value.isascii():
        if forbid_nul and "\x00" in value:
            return "json", None, None, json.dumps(value)
        return "str", None, None, value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "json", None, None, json.dumps(value)
    if forbid_nul and "\x00" in value:
        return "json", None, None, json.dumps(value)
    return "str", None, None, value


def _json_native(value: Any, depth: int = 0) -> bool:
    if depth > 100:
        return False
    t = type(value)
    if value is None or t is bool or t is int or t is float or t is str:
        return True
    if t is list:
        return all(_json_native(x, depth + 1) for x in value)
    if t is dict:
        return all(type(k) is str and _json_native(x, depth + 1) for k, x in value.items())
    return False


_CANONICAL_NAN = struct.unpack("<Q", struct.pack("<d", math.nan))[0]


def _float(value: float) -> _Encoded:
    if value - value == 0.0 and (value != 0.0 or math.copysign(1.0, value) > 0.0):
        return "float", value, None, None
    if value != value:  # NaN: keep a sign or payload other than the usual one as its bits
        bits = struct.unpack("<Q", struct.pack("<d", value))[0]
        if bits != _CANONICAL_NAN:
            return "float", None, None, f"nan:{bits:016x}"
    return "float", None, None, repr(value)


def _decode_float_text(text: str) -> float:
    if text.startswith("nan:"):
        return float(struct.unpack("<d", struct.pack("<Q", int(text[4:], 16)))[0])
    return float(text)


def _int(value: int) -> _Encoded:
    if INT64_MIN <= value <= INT64_MAX:
        return "int", None, value, None
    try:
        return "int", None, None, str(value)
    except ValueError as exc:  # beyond sys.get_int_max_str_digits()
        raise Refused(f"int too large to store as text ({exc})") from None


def _array(value: Any) -> _Encoded:
    """A NumPy array as kind "array" (see the module docstring)."""
    dtype = value.dtype
    if value.ndim != 1:
        raise Refused(f"only 1-D arrays can be stored, got {value.ndim}-D of shape {value.shape}")
    if dtype.kind not in _ARRAY_DTYPE_KINDS:
        raise Refused(f"arrays of dtype {dtype} cannot be stored (bool, int, uint or float only)")
    little = dtype.newbyteorder("<")
    data = value.astype(little, copy=False).tobytes()
    return "array", None, None, f"{little.str}:{base64.b64encode(data).decode('ascii')}"


def _decode_array(text: str) -> Any:
    import numpy as np  # only when an array is read back

    dtype, _, b64 = text.partition(":")
    return np.frombuffer(base64.b64decode(b64), dtype=np.dtype(dtype)).copy()


def encode_value(value: Any, forbid_nul: bool = False) -> _Encoded:
    """``(kind, num, int, text)`` for ``value``; :class:`Refused` when it cannot be stored exactly."""
    t = type(value)
    if value is None:
        return None, None, None, None
    if t is float:
        return _float(value)
    if t is bool:
        return "bool", None, int(value), None
    if t is int:
        return _int(value)
    if t is str:
        return _text(value, forbid_nul)
    if t is bytes or t is bytearray or t is memoryview:
        return "bytes", None, None, bytes(value).hex()
    if t is datetime:
        return "datetime", None, None, value.isoformat()
    if t is Decimal:
        return "decimal", None, None, str(value)
    if t is list or t is dict:
        if not _json_native(value):
            raise Refused(f"{t.__name__} holds values that JSON cannot keep exactly")
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # unpaired surrogates: escape them
                text = json.dumps(value, separators=(",", ":"))
        return "json", None, None, text
    if t.__name__ == "ndarray" and t.__module__ == "numpy":
        return _array(value)
    # Subclasses and numeric look-alikes (IntEnum, numpy scalars, str subclasses).
    if isinstance(value, bool):
        return "bool", None, int(value), None
    if isinstance(value, numbers.Integral):
        return _int(int(value))
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, str):
        return _text(str(value), forbid_nul)
    if isinstance(value, datetime):
        return "datetime", None, None, value.isoformat()
    raise Refused(f"values of type {t.__module__}.{t.__qualname__} are not supported")


def decode_value(kind: str | None, num: Any, int_: Any, text: str | None) -> Any:
    """The Python value of a stored sample (inverse of :func:`encode_value`)."""
    if kind is None:
        return None
    if kind == "float":
        return float(num) if num is not None else _decode_float_text(text)  # type: ignore[arg-type]
    if kind == "int":
        return int(int_) if int_ is not None else int(text)  # type: ignore[arg-type]
    if kind == "bool":
        return bool(int_)
    if kind == "str":
        return text
    if kind == "bytes":
        return bytes.fromhex(text) if text is not None else None
    if kind == "json":
        return json.loads(text) if text is not None else None
    if kind == "datetime":
        return datetime.fromisoformat(text) if text is not None else None
    if kind == "decimal":
        return Decimal(text) if text is not None else None
    if kind == "array":
        return _decode_array(text) if text is not None else None
    return text  # a kind written by a later version: its text form


class MissingVariables(LookupError):
    """Variables of a batch that have no row id yet (register them, then encode again)."""

    def __init__(self, variables: list[Variable]) -> None:
        super().__init__(f"{len(variables)} variables not registered")
        self.variables = variables


_GOOD = Quality.GOOD
_REFUSED = "\x00refused"  # kind marker of a refused value while encoding a batch


class _SlowRows:
    """The row of a value the batch loop does not take itself (special floats, big ints, other
    types): :func:`encode_value`, a refusal becoming a marked row (text = reason), counted."""

    __slots__ = ("context_id", "forbid_nul", "refusals")

    def __init__(self, context_id: int, forbid_nul: bool) -> None:
        self.context_id = context_id
        self.forbid_nul = forbid_nul
        self.refusals = 0

    def __call__(self, key: int, at: Any, value: Any, quality: str, error: str | None) -> SampleTuple:
        try:
            kind, num, int_, text = encode_value(value, self.forbid_nul)
        except Refused as exc:
            self.refusals += 1
            return (
                self.context_id,
                key,
                at,
                _REFUSED,
                None,
                None,
                f"{exc} (value {_short_repr(value)})",
                quality,
                error,
            )
        return (self.context_id, key, at, kind, num, int_, text, quality, error)


def _refused_error(error: str | None, reason: str) -> str:
    text = f"refused by SqlDataWriter: {reason}"
    if error:
        text = f"{text}; reader error: {error}"
    return text


def encode_rows(
    context_id: int,
    batch: CollectedVariables,
    key_by_id: Mapping[int, int],
    to_db_time: Callable[[datetime], Any],
    forbid_nul: bool,
    refused: list[tuple[Variable, str]],
    key_cache: list[Any] | None = None,
) -> list[SampleTuple]:
    """The sample rows of one batch, in order; refused values are appended to ``refused``.

    ``key_by_id`` maps ``id(variable)`` to the variable's row id in the variables table (the
    caller keeps those variables alive); :class:`MissingVariables` lists those it lacks.
    ``key_cache`` (a list the caller keeps, empties whenever it stops keeping the variables of
    ``key_by_id`` alive) remembers the keys of the last batch: a batch of the same variables in
    the same order (a reader's next tick) reuses them. Works on the batch's columns: in the usual
    batch (one read time, all GOOD, no error, finite floats) every column is built at C speed.
    """
    variables = batch.variables
    values = batch.values
    read_ats = batch.read_ats
    qualities = batch.qualities
    errors = batch.errors
    n = len(variables)
    if n == 0:
        return []
    ids = list(map(id, variables))
    keys: list[Any]
    if key_cache and key_cache[0] == ids:
        keys = key_cache[1]
    else:
        keys = list(map(key_by_id.get, ids))
        if None in keys:
            raise MissingVariables([v for v, k in zip(variables, keys, strict=True) if k is None])
        if key_cache is not None:
            key_cache[:] = [ids, keys]
    # Read times: usually one object for the whole tick.
    first = read_ats[0]
    if first is not None and read_ats.count(first) == n:
        times: list[Any] = [to_db_time(first)] * n
    else:
        if None in read_ats:
            v = variables[read_ats.index(None)]
            raise ConfigurationError(f"SqlDataWriter: sample of variable {v.id} has no read_at")
        converted = {at: to_db_time(at) for at in set(read_ats)}  # type: ignore[arg-type]
        times = list(map(converted.__getitem__, read_ats))
    quality_texts: list[str] | None = None
    if qualities.count(_GOOD) != n:
        texts = _QUALITY_TEXT
        quality_texts = [texts.get(q) or str(q) for q in qualities]
    if errors.count(None) != n:
        errors = [
            e if e is None or (e.isascii() and not forbid_nul) else clean_text(e, forbid_nul) for e in errors
        ]
    rep = itertools.repeat
    # Fast path: finite, non-zero plain floats only (sum is finite only if every term is); the
    # last value's type first, so a mixed batch rarely pays the scan.
    if type(values[-1]) is float and set(map(type, values)) == {float} and 0.0 not in values:
        total = sum(values)
        if total - total == 0.0:
            return list(
                zip(
                    rep(context_id, n),
                    keys,
                    times,
                    rep("float", n),
                    values,
                    rep(None, n),
                    rep(None, n),
                    quality_texts if quality_texts is not None else rep("GOOD", n),
                    errors,
                    strict=False,
                )
            )
    # Every other batch: one pass, the common cases (finite non-zero floats, int64 ints, ASCII
    # text, bools, no value) inline, the rest through encode_value (measured: a third of the
    # time of a call per value plus a pass to build the rows).
    slow = _SlowRows(context_id, forbid_nul)
    nul_ok = not forbid_nul
    lo, hi = INT64_MIN, INT64_MAX
    cid = context_id
    rows: list[SampleTuple] = [
        (cid, k, at, "float", v, None, None, q, err)
        if (t := type(v)) is float and v - v == 0.0 and v != 0.0
        else (cid, k, at, "int", None, v, None, q, err)
        if t is int and lo <= v <= hi
        else (cid, k, at, "str", None, None, v, q, err)
        if t is str and v.isascii() and (nul_ok or "\x00" not in v)
        else (cid, k, at, "bool", None, 1 if v else 0, None, q, err)
        if t is bool
        else (cid, k, at, None, None, None, None, q, err)
        if v is None
        else slow(k, at, v, q, err)
        for k, at, v, q, err in zip(
            keys,
            times,
            values,
            quality_texts if quality_texts is not None else rep("GOOD", n),
            errors,
            strict=False,
        )
    ]
    if slow.refusals:
        for i, row in enumerate(rows):
            if row[3] is _REFUSED:
                reason = str(row[6])
                refused.append((variables[i], reason))
                rows[i] = (
                    row[0],
                    row[1],
                    row[2],
                    None,
                    None,
                    None,
                    None,
                    "BAD",
                    clean_text(_refused_error(errors[i], reason), forbid_nul),
                )
    return rows


def clean_text(text: str, forbid_nul: bool) -> str:
    """``text`` made storable (for diagnostics only, never for values): NUL and surrogates escaped."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if forbid_nul and "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break the batch
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_utc(value: datetime) -> datetime:
    """An aware UTC datetime (a naive one is taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)
