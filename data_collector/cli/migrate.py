"""``data-collector migrate SOURCE``: bring the tables of an older SQL writer to this version's schema.

SOURCE is what ``export`` takes: a SQLAlchemy URL, an SQLite file, or a configuration file (its
``sql`` writer, ``--writer N`` among several). Wraps :func:`data_writer.sql.migrate_store`: run
it once, with no writer running on the store; running it on a current store does nothing.
``--check`` only says which schema version the store has (exit 1 when it is older than this
data-collector's).
"""

from __future__ import annotations

import argparse
from typing import IO, Any

from .._errors import ConfigurationError
from ._common import EXIT_CONFIG, EXIT_OK
from .export import _export_source

EXIT_OLDER = 1


def _cmd_migrate(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    try:
        from data_writer.sql import SCHEMA_VERSION, migrate_store, stored_schema_version
    except ImportError as exc:
        err.write(f'error: migrate needs SQLAlchemy: pip install "data-collector[sql]" ({exc})\n')
        return EXIT_CONFIG
    source, prefix, label, cleanup = _export_source(args)
    # A writer's engine (from a configuration file) bounds operations by io_timeout_s: a long
    # migration must not be cut by it, so migrate on an engine of the same URL without it.
    target: Any = getattr(source, "url", source)
    try:
        version = stored_schema_version(target, table_prefix=prefix)
        if version is None:
            raise ConfigurationError(f"no data-collector tables with prefix {prefix!r} in {label}")
        where = f"tables {prefix}* in {label}"
        if args.check:
            if version == SCHEMA_VERSION:
                out.write(f"{where}: schema version {version}, current\n")
                return EXIT_OK
            if version > SCHEMA_VERSION:
                out.write(f"{where}: schema version {version}, newer than this data-collector's: upgrade\n")
                return EXIT_CONFIG
            out.write(
                f"{where}: schema version {version}; this data-collector writes {SCHEMA_VERSION}: "
                f"run data-collector migrate {args.source}\n"
            )
            return EXIT_OLDER
        result = migrate_store(target, table_prefix=prefix)
    finally:
        cleanup()
    if result.from_version == result.to_version:
        out.write(f"{where}: schema version {result.to_version}, nothing to do ({result.samples} samples)\n")
    else:
        out.write(
            f"{where}: migrated from schema version {result.from_version} to {result.to_version}: "
            f"{result.samples} samples, {result.duplicates_dropped} repeated samples dropped\n"
        )
    return EXIT_OK
