"""The HDF5 file layout (format version 3): node names, row types and text width classes.

Version 2 added the ``description`` column to a run's ``variables`` table (its ``name`` and
``unit`` columns, empty in version 1 files, now hold the variable's labels); a run written by
version 1 keeps its variables table without that column, and is read as it is.

Everything both the writer and the read functions must agree on lives here, nothing else.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

__all__ = [
    "ARRAY_BASES",
    "EPOCH",
    "FORMAT",
    "FORMAT_VERSION",
    "NAT",
    "OTHER_KINDS",
    "QUALITY_NAMES",
    "SAMPLE_BASES",
    "TEXT_BASES",
    "WIDTHS",
    "context_group_name",
    "context_id_of",
    "errors_dtype",
    "run_group_name",
    "run_key",
    "run_number_of",
    "sample_dtype",
    "split_table_name",
    "table_name",
    "time_us",
    "us_to_datetime",
    "variables_dtype",
    "width_class",
]

#: Value of the root attribute ``dc_format``: marks a file written by this writer.
FORMAT = "data-collector-hdf5"
#: Value of the root attribute ``dc_format_version``; a file with a higher version is refused.
#: 2 added the variables' ``description``; 3 the ``<kind>_array_N`` tables of array values (so an
#: older data-collector refuses such a file instead of skipping its arrays without a word).
FORMAT_VERSION = 3

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

#: ``time_us`` of a sample that had no read time (read back as ``None`` / ``NaT``).
NAT = -(2**63)

#: Widths (bytes) of the fixed-width text columns: a text goes to the table of the smallest width
#: that holds its UTF-8 encoding. The narrowest has no suffix (``str``), the others do (``str_256``).
WIDTHS: tuple[int, ...] = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)

#: The quality column's texts, indexed by code (GOOD 0, UNCERTAIN 1, BAD 2).
QUALITY_NAMES: tuple[bytes, ...] = (b"GOOD", b"UNCERTAIN", b"BAD")

#: Sample tables whose value column has one fixed type, and that type.
_FIXED: dict[str, str] = {"float": "<f8", "int": "<i8", "uint": "<u8", "bool": "?"}
#: Tables with a text column, in width classes.
TEXT_BASES = ("str", "other", "errors")
#: Tables of 1-D array values, one per element type and length N (``float_array_1000``: a
#: ``value`` column of shape (N,)); the "width" of such a table is its N.
ARRAY_BASES = ("float_array", "int_array", "uint_array", "bool_array")
#: Every kind of table that holds samples (``errors`` holds error texts of samples).
SAMPLE_BASES = ("float", "int", "uint", "bool", "str", "other", "novalue", *ARRAY_BASES)

#: What the ``kind`` column of an ``other`` table says about its ``value`` text.
OTHER_KINDS: tuple[str, ...] = ("int", "bytes", "str", "json", "datetime", "decimal", "array")

_PREFIX = [("time_us", "<i8"), ("variable_id", "<i8")]
_QUALITY = ("quality", "S9")


def time_us(t: datetime | None) -> int:
    """Microseconds since 1970-01-01 UTC of ``t`` (a naive ``t`` is taken as UTC); ``None`` is :data:`NAT`."""
    if t is None:
        return NAT
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - EPOCH) // _US


def us_to_datetime(us: int) -> datetime | None:
    """Inverse of :func:`time_us` (an aware UTC datetime, or ``None`` for :data:`NAT`)."""
    if us == NAT:
        return None
    return EPOCH + timedelta(microseconds=int(us))


def width_class(nbytes: int) -> int | None:
    """The narrowest width of :data:`WIDTHS` holding ``nbytes``, or ``None`` when none does."""
    for w in WIDTHS:
        if nbytes <= w:
            return w
    return None


def table_name(base: str, width: int | None = None) -> str:
    """Node name of a table: ``float``, ``str`` (narrowest width), ``str_1024``, ``errors_256``,
    ``float_array_1000`` (width: the array length)..."""
    if base in ARRAY_BASES:
        return f"{base}_{width}"
    if width is None or width == WIDTHS[0]:
        return base
    return f"{base}_{width}"


_TABLE_RE = re.compile(r"^(float|int|uint|bool|novalue|str|other|errors)(?:_(\d+))?$")
_ARRAY_RE = re.compile(r"^(float|int|uint|bool)_array_([1-9]\d*)$")


def split_table_name(name: str) -> tuple[str, int | None] | None:
    """``(base, width)`` of a table node name of this layout, ``None`` for any other name."""
    m = _TABLE_RE.match(name)
    if m is None:
        a = _ARRAY_RE.match(name)
        return None if a is None else (f"{a.group(1)}_array", int(a.group(2)))
    base, width = m.group(1), m.group(2)
    if base in TEXT_BASES:
        w = int(width) if width is not None else WIDTHS[0]
        return (base, w) if w in WIDTHS else None
    return (base, None) if width is None else None


def sample_dtype(base: str, width: int | None = None) -> np.dtype[Any]:
    """Row type of a sample table (``time_us``, ``variable_id``, [``kind``], [``value``], ``quality``)."""
    if base in _FIXED:
        return np.dtype([*_PREFIX, ("value", _FIXED[base]), _QUALITY])
    if base in ARRAY_BASES and width:
        return np.dtype([*_PREFIX, ("value", _FIXED[base[: -len("_array")]], (width,)), _QUALITY])
    if base == "str":
        return np.dtype([*_PREFIX, ("value", f"S{width or WIDTHS[0]}"), _QUALITY])
    if base == "other":
        return np.dtype([*_PREFIX, ("kind", "S8"), ("value", f"S{width or WIDTHS[0]}"), _QUALITY])
    if base == "novalue":
        return np.dtype([*_PREFIX, _QUALITY])
    if base == "errors":
        return errors_dtype(width or WIDTHS[0])
    raise ValueError(f"no sample table {base!r}")


def errors_dtype(width: int) -> np.dtype[Any]:
    """Row type of an ``errors`` table: ``time_us``, ``variable_id``, ``error``."""
    return np.dtype([*_PREFIX, ("error", f"S{width}")])


def variables_dtype(widths: dict[str, int]) -> np.dtype[Any]:
    """Row type of a run's ``variables`` table (text column widths from ``widths``)."""
    return np.dtype(
        [
            ("variable_id", "<i8"),
            ("address", f"S{widths['address']}"),
            ("value_type", f"S{widths['value_type']}"),
            ("reader_type", f"S{widths['reader_type']}"),
            ("interval_ms", "<i8"),
            ("name", f"S{widths['name']}"),
            ("unit", f"S{widths['unit']}"),
            ("description", f"S{widths['description']}"),
        ]
    )


def context_group_name(context_id: int) -> str:
    """``context_7``; a negative id is written with ``m`` for the minus sign (``context_m7``)."""
    return f"context_{context_id}" if context_id >= 0 else f"context_m{-context_id}"


_CONTEXT_RE = re.compile(r"^context_(m?)(\d+)$")
_RUN_RE = re.compile(r"^run_(\d+)$")


def context_id_of(name: str) -> int | None:
    """Inverse of :func:`context_group_name` (``None`` for other names)."""
    m = _CONTEXT_RE.match(name)
    if m is None:
        return None
    value = int(m.group(2))
    return -value if m.group(1) else value


def run_group_name(number: int) -> str:
    return f"run_{number}"


def run_number_of(name: str) -> int | None:
    m = _RUN_RE.match(name)
    return int(m.group(1)) if m else None


def run_key(context_id: int, run: int) -> str:
    """The HDF5 path of a run's group, e.g. ``/context_7/run_1`` (prefix of its table keys)."""
    return f"/{context_group_name(context_id)}/{run_group_name(run)}"
