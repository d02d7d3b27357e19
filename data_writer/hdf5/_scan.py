"""The merged table of a parameter scan in an HDF5 file: ``/scans/<name>``, one row per read time.

A :class:`~data_collector.Scan` hands the writer the rows of every completed point
(:class:`~data_collector.ScanRows`); they are appended to the PyTables table ``/scans/<name>``
of the file, whose columns are ``point`` (int64), one per setpoint (the point's configuration),
``time_us`` (int64, µs since 1970-01-01 UTC) and, per measured variable, its value and
``<name>_quality``. ``pandas.read_hdf(path, "/scans/<name>")`` reads the whole campaign as one
frame. Storing a point again replaces its rows (a point redone after a crash is in the table
once). The table's attributes hold the scan's definition (JSON) and its start.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from data_collector import ScanColumn, ScanRows

__all__ = ["SCANS_GROUP", "scan_dtype", "scan_key", "store_scan_rows"]

_log = logging.getLogger("data_writer.hdf5")

#: The group holding the scan tables.
SCANS_GROUP = "scans"
_MAX_ATTR_BYTES = 60_000


def scan_key(name: str) -> str:
    """The ``pandas.read_hdf`` key of scan ``name``'s table: ``/scans/<name>``."""
    return f"/{SCANS_GROUP}/{name}"


def scan_dtype(columns: tuple[ScanColumn, ...]) -> np.dtype[Any]:
    """The row type of a scan table: int64, float64, bool, or UTF-8 bytes of the column's width."""
    fields: list[tuple[str, str]] = []
    for c in columns:
        if c.kind == "int":
            fields.append((c.name, "<i8"))
        elif c.kind == "float":
            fields.append((c.name, "<f8"))
        elif c.kind == "bool":
            fields.append((c.name, "?"))
        else:
            fields.append((c.name, f"S{max(1, c.width)}"))
    return np.dtype(fields)


def _encode(text: Any, width: int) -> tuple[bytes, bool]:
    data = str(text).encode("utf-8", "backslashreplace")
    if len(data) <= width:
        return data, False
    return data[:width].decode("utf-8", "ignore").encode("utf-8"), True


def encode_rows(rows: ScanRows, dtype: np.dtype[Any]) -> tuple[np.ndarray[Any, Any], int]:
    """The rows as a structured array of ``dtype``, and how many texts were cut to their width."""
    n = len(rows)
    out = np.zeros(n, dtype=dtype)
    cut = 0
    for c in rows.columns:
        values = rows.values[c.name]
        if c.kind == "str":
            width = dtype[c.name].itemsize
            encoded = []
            for v in values:
                data, was_cut = _encode(v, width)
                cut += was_cut
                encoded.append(data)
            out[c.name] = encoded
        else:
            out[c.name] = values
    return out, cut


def store_scan_rows(h5: Any, rows: ScanRows, filters: Any, chunk_rows: int, writer_name: str) -> None:
    """Append ``rows`` to their scan table in the open file ``h5``, replacing the point's rows.

    Raises ``ValueError`` when the table exists with other columns (another scan of that name).
    """
    dtype = scan_dtype(rows.columns)
    if SCANS_GROUP in h5.root:
        group = h5.root._f_get_child(SCANS_GROUP)
    else:
        group = h5.create_group(h5.root, SCANS_GROUP, title="merged tables of parameter scans")
    if rows.scan in group:
        table = group._f_get_child(rows.scan)
        if table.dtype != dtype:
            raise ValueError(
                f"table {scan_key(rows.scan)} has the columns {list(table.dtype.names)} of another scan "
                f"definition ({table.dtype}), not {list(dtype.names or ())} ({dtype}); give this scan "
                "another name or another file"
            )
    else:
        table = h5.create_table(
            group,
            rows.scan,
            description=dtype,
            title=f"scan {rows.scan}: one row per read time and point",
            filters=filters,
            chunkshape=(max(16, min(chunk_rows, 8192)),),
        )
        a = table._v_attrs
        a["context_id"] = np.int64(rows.context_id)
        a["started"] = rows.started.isoformat()
        a["time_unit"] = "time_us: microseconds since 1970-01-01T00:00:00Z"
        text = json.dumps(dict(rows.definition), ensure_ascii=False, default=str)
        if len(text.encode("utf-8")) <= _MAX_ATTR_BYTES:
            a["definition"] = text
        else:
            h5.create_array(group, f"{rows.scan}_definition", np.array([text.encode("utf-8")]))
    stored = table.get_where_list(f"point == {int(rows.point)}")
    if len(stored):
        # the point stored before (redone after a crash, or a retry): its rows are replaced;
        # rows of a point are contiguous (appended together), so this is one range, usually the tail
        runs: list[list[int]] = []
        for i in stored.tolist():
            if runs and runs[-1][1] == i:
                runs[-1][1] = i + 1
            else:
                runs.append([i, i + 1])
        for start, stop in reversed(runs):
            table.remove_rows(start, stop)
    array, cut = encode_rows(rows, dtype)
    if cut:
        _log.warning(
            "%s: scan %s point %d: %d texts longer than their column were cut in %s (the point's run "
            "holds them whole)",
            writer_name,
            rows.scan,
            rows.point,
            cut,
            scan_key(rows.scan),
        )
    if len(array):
        table.append(array)
