"""``data-collector export SOURCE``: samples of a SQL store or an HDF5 file to CSV or Parquet.

A source is an HDF5 file of the ``hdf5`` writer when its name ends in ``.h5`` / ``.hdf5`` or it
starts with the HDF5 signature (read with :mod:`data_writer.hdf5`, extra ``hdf5``); otherwise a
SQL store: a SQLAlchemy URL, an SQLite file, or a configuration file with a ``sql`` writer. Both
give the same columns (:data:`EXPORT_COLUMNS`; Parquet adds ``value_float``), in the order
context, (run,) time, variable.
"""

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


#: The signature every HDF5 file has at offset 0, 512, 1024, 2048... (after a user block).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(source: str) -> bool:
    """Whether ``source`` names an HDF5 file: by its suffix, or by the HDF5 signature."""
    path = Path(source)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return True
    if "://" in source:
        return False
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            offset = 0
            while offset + len(HDF5_SIGNATURE) <= size:
                f.seek(offset)
                if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except (OSError, ValueError):
        return False
    return False


def _hdf5_samples(args: argparse.Namespace, out: IO[str]) -> tuple[list[Any], list[int]] | None:
    """The samples of an HDF5 file (and the context ids exported), or None after ``--list``."""
    try:
        hdf5: Any = importlib.import_module("data_writer.hdf5")
    except ImportError as exc:
        raise ConfigurationError(
            f'exporting an HDF5 file needs PyTables: pip install "data-collector[hdf5]" ({exc})'
        ) from None
    path = args.source
    if not Path(path).is_file():
        raise ConfigurationError(f"no such file: {path!r}")
    runs = hdf5.list_runs(path)
    if args.list:
        rows = [
            (
                r.context_id,
                r.run,
                r.start.isoformat(timespec="seconds") if r.start else "",
                r.end.isoformat(timespec="seconds") if r.end else "",
                r.ended,
                r.samples,
                format_value(json.dumps(r.metadata, ensure_ascii=False, default=str), 60),
            )
            for r in runs
        ]
        headers = ["context", "run", "start", "end", "ended", "samples", "metadata"]
        out.write("\n".join(table(headers, rows, right=[0, 1, 5])) + "\n")
        return None
    ids = list(dict.fromkeys(args.context or [r.context_id for r in runs]))
    numbers: list[int | None] = list(dict.fromkeys(args.run)) if args.run else [None]
    start = _parse_time(args.start, "--start")
    end = _parse_time(args.end, "--end")
    samples: list[Any] = []
    for cid in ids:
        for n in numbers:
            samples += hdf5.read_samples(
                path, cid, n, variable_ids=args.variables or None, start=start, end=end
            )
    return samples, ids


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
            "" if r.read_at is None else r.read_at.isoformat(timespec="microseconds"),
            csv_text(r.value),
            r.quality.value,
            r.error or "",
        )


def _cmd_export(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if is_hdf5(args.source):
        found = _hdf5_samples(args, out)
        if found is None:
            return EXIT_OK
        samples, ids = found
        return _output(args, samples, ids, args.source, out, err)
    if args.run:
        raise ConfigurationError("--run selects runs of an HDF5 file; a SQL store has one run per context id")
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
    return _output(args, samples, ids, label, out, err)


def _output(
    args: argparse.Namespace, samples: Sequence[Any], ids: list[int], label: str, out: IO[str], err: IO[str]
) -> int:
    """Write ``samples`` as CSV (to ``-o`` or standard output) or Parquet."""
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
