"""``data-collector export SOURCE``: samples of a SQL store to CSV or Parquet."""

from __future__ import annotations

import argparse
import csv
import importlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .._config import load_config
from .._errors import ConfigurationError
from ._common import EXIT_CONFIG, EXIT_OK, format_value, table

# -- export ------------------------------------------------------------------------------------------
EXPORT_COLUMNS = (
    "context_id",
    "variable_id",
    "address",
    "value_type",
    "reader_type",
    "read_at",
    "value",
    "quality",
    "error",
)


def _export_source(args: argparse.Namespace) -> tuple[Any, str, str, Callable[[], None]]:
    """(SQLAlchemy URL or Engine, table prefix, label, cleanup) of the export source."""
    source: str = args.source
    if source.endswith(".toml") and Path(source).is_file():
        config = load_config(source)
        sql = [w for w, kind in zip(config.writers, config.writer_types, strict=True) if kind == "sql"]
        if not sql:
            raise ConfigurationError(f"{source}: no writer of type 'sql' to export from")
        if not 0 <= args.writer < len(sql):
            raise ConfigurationError(f"--writer {args.writer}: {source} has {len(sql)} sql writers")
        writer: Any = sql[args.writer]
        engine = writer.engine
        return engine, writer.table_prefix, writer.url, engine.dispose
    if "://" in source:
        return source, args.table_prefix, source.split("@")[-1], lambda: None
    path = Path(source)
    if not path.is_file():
        raise ConfigurationError(
            f"no such file: {source!r} (give a SQLAlchemy URL, an SQLite file or a .toml)"
        )
    return f"sqlite:///{path}", args.table_prefix, str(path), lambda: None


def _parse_time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"{option} {text!r}: not an ISO-8601 date-time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def export_rows(rows: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
    """SQL sample rows as export rows (``EXPORT_COLUMNS``; value as its CSV text)."""
    from data_writer.csv import format_value as csv_text

    for r in rows:
        yield (
            r.context_id,
            r.variable_id,
            r.address,
            r.value_type,
            r.reader_type,
            r.read_at.isoformat(timespec="microseconds"),
            csv_text(r.value),
            r.quality.value,
            r.error or "",
        )


def _cmd_export(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    try:
        from data_writer.sql import read_contexts, read_samples
    except ImportError as exc:
        err.write(f'error: export needs SQLAlchemy: pip install "data-collector[sql]" ({exc})\n')
        return EXIT_CONFIG
    url, prefix, label, cleanup = _export_source(args)
    try:
        runs = read_contexts(url, table_prefix=prefix)
        if args.list:
            rows = [
                (
                    r.context_id,
                    r.start.isoformat(timespec="seconds") if r.start else "",
                    r.end.isoformat(timespec="seconds") if r.end else "",
                    format_value(r.ended or "", 40),
                    format_value(json.dumps(r.metadata, ensure_ascii=False, default=str), 60),
                )
                for r in runs
            ]
            header = ["context", "start", "end", "ended", "metadata"]
            out.write("\n".join(table(header, rows, right=[0])) + "\n")
            return EXIT_OK
        ids = list(dict.fromkeys(args.context or [r.context_id for r in runs]))
        variable_ids = args.variables or None
        start = _parse_time(args.start, "--start")
        end = _parse_time(args.end, "--end")
        samples = []
        for cid in ids:
            samples += read_samples(
                url, cid, variable_ids=variable_ids, start=start, end=end, table_prefix=prefix
            )
    finally:
        cleanup()
    fmt = args.format or ("parquet" if str(args.output).endswith(".parquet") else "csv")
    if fmt == "parquet":
        if args.output in (None, "-"):
            raise ConfigurationError("Parquet goes to a file: give -o FILE.parquet")
        _write_parquet(samples, Path(args.output))
    elif args.output in (None, "-"):
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        writer.writerows(export_rows(samples))
        out.flush()
    else:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(EXPORT_COLUMNS)
            writer.writerows(export_rows(samples))
    where = "standard output" if args.output in (None, "-") else args.output
    if not args.quiet:
        contexts = f"{len(ids)} context" + ("" if len(ids) == 1 else "s")
        err.write(f"exported {len(samples)} samples of {contexts} from {label} to {where}\n")
    return EXIT_OK


def _write_parquet(samples: Sequence[Any], path: Path) -> None:
    try:
        pa: Any = importlib.import_module("pyarrow")
        pq: Any = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ConfigurationError(
            'Parquet export needs pyarrow: pip install "data-collector[parquet]"'
        ) from None
    from data_writer.csv import format_value as csv_text

    def number(value: Any) -> float | None:
        if isinstance(value, bool | int | float):
            try:
                return float(value)
            except OverflowError:
                return None
        return None

    columns = {
        "context_id": pa.array([r.context_id for r in samples], pa.int64()),
        "variable_id": pa.array([r.variable_id for r in samples], pa.int64()),
        "address": pa.array([r.address for r in samples], pa.string()),
        "value_type": pa.array([r.value_type for r in samples], pa.string()),
        "reader_type": pa.array([r.reader_type for r in samples], pa.string()),
        "read_at": pa.array([r.read_at for r in samples], pa.timestamp("us", tz="UTC")),
        "value": pa.array([None if r.value is None else csv_text(r.value) for r in samples], pa.string()),
        "value_float": pa.array([number(r.value) for r in samples], pa.float64()),
        "quality": pa.array([r.quality.value for r in samples], pa.string()),
        "error": pa.array([r.error for r in samples], pa.string()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), str(path))
