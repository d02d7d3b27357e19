"""The merged rows of a parameter scan point, as writers that keep a scan table receive them.

A :class:`~data_collector.Scan` hands every writer that supports it
(:meth:`DataWriter.write_scan_rows`) the rows of each completed point: one row per read time,
with the point's number, its whole configuration (one column per setpoint), the read time and
one value and one quality column per measured variable. The writer appends them to one table
per scan, so that the whole campaign is one table (``pandas.read_hdf(file, "/scans/<name>")``
for the HDF5 writer, ``<prefix>scan_<name>`` for the SQL writer). A point stored again (a point
redone after a crash, a retried call) replaces the rows the table holds for that point.

This module imports nothing else from the project (the bottom layer, beside ``_model``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ._errors import ConfigurationError

__all__ = ["COLUMN_NAME", "ScanColumn", "ScanRows"]

#: What a scan's name and its column names look like: letters, digits and ``_``, not starting
#: with a digit, at most 60 characters (an HDF5 node name, a pandas column and a SQL identifier
#: without quoting).
COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,59}")

ColumnKind = Literal["int", "float", "bool", "str"]
ColumnRole = Literal["point", "setpoint", "time", "value", "quality"]


@dataclass(frozen=True, slots=True)
class ScanColumn:
    """One column of a scan table.

    ``kind`` is the stored type: ``int`` (int64), ``float`` (float64), ``bool`` or ``str``
    (UTF-8 text; ``width`` is the number of bytes a fixed-width store such as HDF5 gives it).
    ``role`` says what it holds: ``point`` (the point's number), ``setpoint`` (the value written
    at the point), ``time`` (``time_us``: the read's boundary, its time rounded down to the variable's
    interval, in microseconds since 1970-01-01 UTC),
    ``value`` (a measured variable, ``variable_id`` names it) or ``quality`` (that variable's
    quality: ``GOOD``, ``UNCERTAIN``, ``BAD``, or empty when it has no sample at that time).
    """

    name: str
    kind: ColumnKind
    role: ColumnRole
    width: int = 0
    variable_id: int | None = None


@dataclass(frozen=True, slots=True)
class ScanRows:
    """The merged rows of one completed point of a scan (see the module documentation).

    ``columns`` is the same for every point of a scan; ``values`` holds one list per column,
    all of the same length (the rows). ``started`` is when the scan began (its journal's start,
    so that a resumed scan names the same file in a per-run path template); ``definition`` is
    the scan's description (JSON-compatible), for a store to keep beside the table.
    """

    scan: str
    context_id: int
    started: datetime
    point: int
    columns: tuple[ScanColumn, ...]
    values: Mapping[str, Sequence[Any]]
    definition: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not COLUMN_NAME.fullmatch(self.scan):
            raise ConfigurationError(f"ScanRows: scan name {self.scan!r} is not a valid table name")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"ScanRows: duplicate column names in {names}")
        lengths = {len(self.values[n]) for n in names if n in self.values}
        if set(names) != set(self.values) or len(lengths) > 1:
            raise ConfigurationError("ScanRows: values must hold one list per column, all of one length")

    def __len__(self) -> int:
        return len(self.values[self.columns[0].name]) if self.columns else 0
