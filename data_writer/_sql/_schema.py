"""The tables of the SQL writer, per dialect, and the schema version they record.

Four tables, named with the writer's ``table_prefix`` (``dc_`` by default)::

    <p>schema_version  version (PK), applied_at
    <p>contexts        id (PK, one row per run), context_id, start_date, end_date, metadata (JSON)
    <p>variables       id (PK), variable_id, address, value_type, reader_type, definition_hash
                       unique (variable_id, definition_hash): one row per distinct definition
    <p>samples         id (PK, storage order), context_id, variable_key (-> <p>variables.id),
                       read_at, value_kind, value_num, value_int, value_text, quality, error
                       index (context_id, variable_key, read_at)

Times are UTC: ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL, ``DATETIME(6)`` holding UTC on
MariaDB/MySQL, ISO text ``YYYY-MM-DD HH:MM:SS.ffffff`` holding UTC on SQLite (microseconds
everywhere). Tables are created when absent and never dropped or altered destructively; a later
version migrates from the recorded ``schema_version``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from data_collector._errors import ConfigurationError

__all__ = [
    "SAMPLE_COLUMNS",
    "SCHEMA_VERSION",
    "Tables",
    "build_tables",
    "check_prefix",
    "definition_hash",
]

#: The schema this code writes; recorded in ``<prefix>schema_version``.
SCHEMA_VERSION = 1

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


def definition_hash(address: str, value_type: str, reader_type: str) -> str:
    """The hex sha256 identifying a variable definition (with its id) in the variables table."""
    data = "\x1f".join((address, value_type, reader_type)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


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
        # sha256 of address, value_type and reader_type: texts of any length stay unique.
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("variable_id", "definition_hash", name=f"{prefix}variables_definition"),
        **options,
    )
    samples = sa.Table(
        f"{prefix}samples",
        md,
        sa.Column("id", big_pk, primary_key=True, autoincrement=True),
        sa.Column("context_id", sa.BigInteger, nullable=False),
        sa.Column("variable_key", sa.Integer, nullable=False),
        sa.Column("read_at", time_type, nullable=False),
        sa.Column("value_kind", sa.String(8), nullable=True),
        sa.Column("value_num", sa.Double(), nullable=True),
        sa.Column("value_int", sa.BigInteger, nullable=True),
        sa.Column("value_text", long_text, nullable=True),
        sa.Column("quality", sa.String(9), nullable=False),
        sa.Column("error", long_text, nullable=True),
        sa.Index(f"{prefix}samples_ctx_var_time", "context_id", "variable_key", "read_at"),
        **options,
    )
    return Tables(md, schema_version, contexts, variables, samples)
