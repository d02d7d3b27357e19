"""The tables and the view of the SQL writer, per dialect, and the schema version they record.

Four tables and a view, named with the writer's ``table_prefix`` (``dc_`` by default)::

    <p>schema_version  version (PK), applied_at
    <p>contexts        id (PK, one row per run), context_id, start_date, end_date,
                       metadata (JSON: the user's), deduced_metadata (JSON: the collector's)
    <p>variables       id (PK: the "variable key"), variable_id (the user's id), address, value_type,
                       reader_type, name, unit, description, definition_hash
                       unique (variable_id, definition_hash): one row per distinct definition
    <p>samples         context_id, read_at, variable_key (-> <p>variables.id, NOT the variable id),
                       value_kind, value_num, value_int, value_text, quality, error
                       primary key (context_id, read_at, variable_key): the sample's identity
    <p>samples_view    context_id, variable_id, name, unit, read_at, value, value_text, quality,
                       error: the samples joined to their variables, one numeric value column

Schema version 4. A variable's ``name``, ``unit`` and ``description`` are part of its definition:
a variable relabelled later gets a row of its own, so older samples keep the labels they were
collected with. The definition hash of a variable without labels is the one versions 2 and 3
computed, so their rows are reused as they are. Version 3 had no labels and no view, version 2
also no ``contexts.deduced_metadata``: a writer that opens a version 2 or 3 store adds what is
missing (nullable columns, the view; nothing else changes) and records version 4, by itself; the
read-back functions read such a store as it is (no labels, no deduced metadata). Version 1 had a
surrogate ``id`` and a non-unique index on ``(context_id, variable_key, read_at)`` in ``samples``:
it is refused with a message naming :func:`data_writer.sql.migrate_store`, which moves it to this
version. A store of a later version than this code's is refused ("upgrade data-collector"), so an
older data-collector never writes into a store it does not know.

The primary key makes every write idempotent: a sample
delivered twice (a retry after a lost COMMIT acknowledgement, a replay after a crash) is stored
once. It is time-first on purpose: samples arrive in time order, so inserts append at the end of
the key (measured on SQLite with 10,000 variables and one transaction per 10,000-sample tick:
~100k rows/s time-first, ~12k rows/s variable-first, because each commit then rewrites one page
per variable; MariaDB with a secondary index on (context, variable, read_at): 20k rows/s without
it, 4.6k rows/s with it once the index outgrew the buffer pool at 4M rows). "One variable over a
time range" is answered by a loose index scan: one key seek per distinct ``read_at`` in the range
(a recursive CTE on SQLite and PostgreSQL, a ``GROUP BY`` that MariaDB runs as "index for
group-by"), then one seek per wanted variable, instead of a scan of every variable (see
``_store.select_samples``). On SQLite the table is ``WITHOUT ROWID`` (the key is the table: one
B-tree).

Times are UTC, microseconds: ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL (``timestamptz``: an
instant, shown in the session's time zone); ``DATETIME(6)`` holding UTC on MariaDB/MySQL (they
have no time-zone-aware type with microseconds and a range past 2038); on SQLite
``samples.read_at`` is an INTEGER of microseconds since 1970-01-01 UTC and the times of the
other tables are ISO text ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC. The view shows ``read_at`` as
``timestamptz`` on PostgreSQL, UTC ``DATETIME(6)`` on MariaDB/MySQL and ISO-8601 text with its
offset (``2026-11-22 08:15:00.100000+00:00``) on SQLite. Tables are created when absent and
never dropped or altered destructively by the writer.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from data_collector import ConfigurationError

__all__ = [
    "AUTO_UPGRADE_FROM",
    "DEDUCED_COLUMN",
    "EPOCH",
    "LABEL_COLUMNS",
    "SAMPLE_COLUMNS",
    "SAMPLE_KEY",
    "SCHEMA_VERSION",
    "VIEW_COLUMNS",
    "EpochMicroseconds",
    "Tables",
    "build_tables",
    "check_prefix",
    "definition_hash",
    "epoch_us",
    "view_name",
    "view_sql",
]

#: The schema this code writes; recorded in ``<prefix>schema_version``.
SCHEMA_VERSION = 4

#: Versions the writer brings to :data:`SCHEMA_VERSION` by itself when it opens the store
#: (additive: nullable columns and the view), and the read-back functions read as they are.
AUTO_UPGRADE_FROM = frozenset({2, 3})

#: The column of ``<prefix>contexts`` that version 3 added: the collector's deduced metadata.
DEDUCED_COLUMN = "deduced_metadata"

#: The columns of ``<prefix>variables`` that version 4 added: the variable's labels.
LABEL_COLUMNS = ("name", "unit", "description")

#: The identity of a sample: the primary key of ``<prefix>samples``, in key order.
SAMPLE_KEY = ("context_id", "read_at", "variable_key")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def epoch_us(value: datetime) -> int:
    """Microseconds since 1970-01-01 UTC of ``value`` (a naive datetime is taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // _US


class EpochMicroseconds(sa.types.TypeDecorator[datetime]):
    """A UTC time stored as an integer of microseconds since the epoch (SQLite ``read_at``)."""

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> int | None:
        if value is None or isinstance(value, int):
            return value
        return epoch_us(value)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return EPOCH + timedelta(microseconds=int(value))


PREFIX_MAX = 40  # index names stay within PostgreSQL's 63 characters

#: The sample columns filled on insert, in the order of the encoded tuples.
SAMPLE_COLUMNS = (
    "context_id",
    "variable_key",
    "read_at",
    "value_kind",
    "value_num",
    "value_int",
    "value_text",
    "quality",
    "error",
)

_PREFIX = re.compile(r"[a-z_][a-z0-9_]*")


def check_prefix(prefix: object) -> str:
    """``prefix`` if it is a valid table prefix, else :class:`ConfigurationError` naming it."""
    if not isinstance(prefix, str) or (prefix and not _PREFIX.fullmatch(prefix)) or len(prefix) > PREFIX_MAX:
        raise ConfigurationError(
            f"SqlDataWriter: table_prefix must be lowercase letters, digits and '_' (not starting with a "
            f"digit, at most {PREFIX_MAX} characters), got {prefix!r}"
        )
    return prefix


def definition_hash(
    address: str,
    value_type: str,
    reader_type: str,
    name: str | None = None,
    unit: str | None = None,
    description: str | None = None,
) -> str:
    """The hex sha256 identifying a variable definition (with its id) in the variables table.

    Without labels it is the hash of versions 2 and 3 (their rows are reused); with any label,
    the labels are part of it (``None`` and a text differ)."""
    text = "\x1f".join((address, value_type, reader_type))
    labels = (name, unit, description)
    if labels != (None, None, None):
        text += "\x1e" + "\x1f".join("-" if x is None else "=" + x for x in labels)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Tables:
    metadata: sa.MetaData
    schema_version: sa.Table
    contexts: sa.Table
    variables: sa.Table
    samples: sa.Table


def build_tables(prefix: str, dialect: sa.Dialect) -> Tables:
    """The table definitions for ``dialect`` (types and table options differ per database)."""
    is_mysql = dialect.name in ("mysql", "mariadb")
    time_type: sa.types.TypeEngine[Any] = sa.DateTime(timezone=True).with_variant(
        mysql.DATETIME(fsp=6), "mysql", "mariadb"
    )
    long_text: sa.types.TypeEngine[Any] = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    json_type: sa.types.TypeEngine[Any] = sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )
    # SQLite aliases only "INTEGER PRIMARY KEY" to the rowid: keep that type there.
    big_pk: sa.types.TypeEngine[Any] = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    options: dict[str, Any] = {}
    if is_mysql:
        for name in ("mysql", "mariadb"):
            options[f"{name}_engine"] = "InnoDB"
            options[f"{name}_charset"] = "utf8mb4"
            options[f"{name}_collate"] = "utf8mb4_bin"
    md = sa.MetaData()
    schema_version = sa.Table(
        f"{prefix}schema_version",
        md,
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("applied_at", time_type, nullable=False),
        **options,
    )
    contexts = sa.Table(
        f"{prefix}contexts",
        md,
        sa.Column("id", big_pk, primary_key=True, autoincrement=True),
        sa.Column("context_id", sa.BigInteger, nullable=False),
        sa.Column("start_date", time_type, nullable=True),
        sa.Column("end_date", time_type, nullable=True),
        sa.Column("metadata", json_type, nullable=True),
        sa.Column(DEDUCED_COLUMN, json_type, nullable=True),
        sa.Index(f"{prefix}contexts_context", "context_id"),
        **options,
    )
    variables = sa.Table(
        f"{prefix}variables",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("variable_id", sa.BigInteger, nullable=False),
        sa.Column("address", long_text, nullable=False),
        sa.Column("value_type", long_text, nullable=False),
        sa.Column("reader_type", long_text, nullable=False),
        # sha256 of address, value_type, reader_type (and the labels): texts of any length stay unique.
        sa.Column("definition_hash", sa.String(64), nullable=False),
        # version 4: the variable's labels (NULL: none, or a row of an older version)
        sa.Column("name", long_text, nullable=True),
        sa.Column("unit", long_text, nullable=True),
        sa.Column("description", long_text, nullable=True),
        sa.UniqueConstraint("variable_id", "definition_hash", name=f"{prefix}variables_definition"),
        **options,
    )
    sample_time: sa.types.TypeEngine[Any] = time_type.with_variant(EpochMicroseconds(), "sqlite")
    samples = sa.Table(
        f"{prefix}samples",
        md,
        sa.Column("context_id", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("read_at", sample_time, nullable=False),
        sa.Column("variable_key", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("value_kind", sa.String(8), nullable=True),
        sa.Column("value_num", sa.Double(), nullable=True),
        sa.Column("value_int", sa.BigInteger, nullable=True),
        sa.Column("value_text", long_text, nullable=True),
        sa.Column("quality", sa.String(9), nullable=False),
        sa.Column("error", long_text, nullable=True),
        sa.PrimaryKeyConstraint(*SAMPLE_KEY, name=f"{prefix}samples_pk"),
        sqlite_with_rowid=False,
        **options,
    )
    return Tables(md, schema_version, contexts, variables, samples)


def view_name(prefix: str) -> str:
    """The name of the samples view of ``prefix`` (``dc_samples_view``)."""
    return f"{prefix}samples_view"


#: The columns of the samples view, in order.
VIEW_COLUMNS = (
    "context_id",
    "variable_id",
    "name",
    "unit",
    "read_at",
    "value",
    "value_text",
    "quality",
    "error",
)


def view_sql(prefix: str, dialect: sa.Dialect) -> str:
    """``CREATE VIEW <prefix>samples_view``: every sample with its variable's id, name and unit.

    ``value`` is the number of a float, int or bool sample (DOUBLE PRECISION on PostgreSQL and
    MariaDB/MySQL, so ints beyond 2**53 are rounded there; SQLite keeps ints exact), NaN and the
    infinities included where the database has them (PostgreSQL; SQLite: the infinities); NULL
    for other kinds and samples without a value. ``value_text`` is the stored text of the value:
    strings, bytes (hex), JSON, datetimes, decimals, ints beyond 64 bits, and the non-finite
    floats as ``nan``/``inf``/``-inf``. ``read_at``: see the module documentation.
    """
    quote = dialect.identifier_preparer.quote
    samples, variables, view = (
        quote(f"{prefix}samples"),
        quote(f"{prefix}variables"),
        quote(view_name(prefix)),
    )
    name = dialect.name
    if name == "postgresql":
        double = "DOUBLE PRECISION"
        special = (
            "CASE WHEN s.value_text IN ('nan', 'inf', '-inf', '-0.0') "
            "THEN CAST(s.value_text AS DOUBLE PRECISION) "
            "WHEN s.value_text LIKE 'nan:%' THEN CAST('NaN' AS DOUBLE PRECISION) END"
        )
        read_at = "s.read_at"
    elif name == "sqlite":
        double = ""
        special = "CASE s.value_text WHEN 'inf' THEN 9e999 WHEN '-inf' THEN -9e999 WHEN '-0.0' THEN -0.0 END"
        us = "(((s.read_at % 1000000) + 1000000) % 1000000)"
        read_at = (
            f"strftime('%Y-%m-%d %H:%M:%S', (s.read_at - {us}) / 1000000, 'unixepoch') "
            f"|| '.' || printf('%06d', {us}) || '+00:00'"
        )
    else:  # MariaDB/MySQL and others: no non-finite doubles
        double = "DOUBLE"
        special = "NULL"
        read_at = "s.read_at"
    as_double = (lambda x: f"CAST({x} AS {double})") if double else (lambda x: x)
    value = (
        f"CASE s.value_kind WHEN 'float' THEN COALESCE(s.value_num, {special}) "
        f"WHEN 'int' THEN {as_double('s.value_int')} WHEN 'bool' THEN {as_double('s.value_int')} END"
    )
    columns = {
        "context_id": "s.context_id",
        "variable_id": "v.variable_id",
        "name": f"v.{quote('name')}",
        "unit": f"v.{quote('unit')}",
        "read_at": read_at,
        "value": value,
        "value_text": "s.value_text",
        "quality": "s.quality",
        "error": f"s.{quote('error')}",
    }
    assert tuple(columns) == VIEW_COLUMNS
    select = ", ".join(f"{expr} AS {quote(col)}" for col, expr in columns.items())
    return (
        f"CREATE VIEW {view} AS SELECT {select} FROM {samples} s JOIN {variables} v ON v.id = s.variable_key"
    )
