"""The merged table of a parameter scan in SQL: ``<prefix>scan_<name>``, one row per read time.

A :class:`~data_collector.Scan` hands the writer the rows of every completed point
(:class:`~data_collector.ScanRows`); they go to the table ``<prefix>scan_<name>`` (created when
absent), whose columns are ``point`` (BIGINT), one per setpoint (the point's configuration),
``time_us`` (BIGINT, µs since 1970-01-01 UTC) and, per measured variable, its value and
``<name>_quality``: ``SELECT * FROM dc_scan_sweep ORDER BY point, time_us`` is the whole
campaign. Types: BIGINT, DOUBLE PRECISION, BOOLEAN, TEXT; a measured value that is missing (no
sample at that time, a BAD sample) or NaN is NULL. Storing a point again replaces its rows, in
one transaction (a point redone after a crash is in the table once).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from data_collector import ScanColumn, ScanRows

from ._errors import SqlWriterError

__all__ = ["MAX_TABLE_NAME", "scan_table_name", "store_scan_rows"]

#: The longest table name every supported database keeps as it is (PostgreSQL: 63).
MAX_TABLE_NAME = 63


def scan_table_name(prefix: str, scan: str) -> str:
    """``<prefix>scan_<scan>``: the table of a scan."""
    return f"{prefix}scan_{scan}"


def _type(c: ScanColumn) -> sa.types.TypeEngine[Any]:
    if c.kind == "int":
        return sa.BigInteger()
    if c.kind == "float":
        return sa.Double()
    if c.kind == "bool":
        return sa.Boolean()
    return sa.Text()


def _table(name: str, rows: ScanRows) -> sa.Table:
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(c.name, _type(c), nullable=c.role not in ("point", "time")) for c in rows.columns),
        sa.Index(f"ix_dc_scan_{digest}", "point"),
    )


def _records(rows: ScanRows) -> list[dict[str, Any]]:
    """The rows as dicts; missing measured values (their quality empty or BAD) and NaN are NULL."""
    n = len(rows)
    values = rows.values
    quality_of = {c.variable_id: c.name for c in rows.columns if c.role == "quality"}
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for c in rows.columns:
        column = values[c.name]
        qualities = values[quality_of[c.variable_id]] if c.role == "value" else None
        for i in range(n):
            v = column[i]
            missing = qualities is not None and qualities[i] in ("", "BAD")
            out[i][c.name] = None if missing or (isinstance(v, float) and math.isnan(v)) else v
    return out


def store_scan_rows(conn: Connection, prefix: str, rows: ScanRows) -> None:
    """Replace the rows of ``rows.point`` in the scan's table by ``rows``, in one transaction."""
    name = scan_table_name(prefix, rows.scan)
    if len(name) > MAX_TABLE_NAME:
        raise SqlWriterError(
            f"scan table name {name!r} is longer than {MAX_TABLE_NAME} characters (what PostgreSQL keeps): "
            "give the scan a shorter name or the writer a shorter table_prefix",
            transient=False,
        )
    table = _table(name, rows)
    table.create(conn, checkfirst=True)  # (MariaDB commits DDL at once: outside the transaction)
    if conn.in_transaction():
        conn.commit()
    found = [c["name"] for c in sa.inspect(conn).get_columns(name)]
    wanted = [c.name for c in rows.columns]
    if conn.in_transaction():
        conn.commit()
    if found != wanted:
        raise SqlWriterError(
            f"table {name} has the columns {found} of another scan definition, not {wanted}: give this "
            "scan another name or the writer another table_prefix",
            transient=False,
        )
    records = _records(rows)
    with conn.begin():
        conn.execute(table.delete().where(table.c.point == rows.point))
        if records:
            conn.execute(table.insert(), records)
