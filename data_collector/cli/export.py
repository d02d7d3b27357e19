"""``data-collector export SOURCE``: samples of a SQL store or an HDF5 file to CSV or Parquet.

A source is an HDF5 file of the ``hdf5`` writer when its name ends in ``.h5`` / ``.hdf5`` or it
starts with the HDF5 signature (read with :mod:`data_writer.hdf5`, extra ``hdf5``); otherwise a
SQL store: a SQLAlchemy URL, an SQLite file, or a configuration file with a ``sql`` writer. Both
give the same columns (:data:`EXPORT_COLUMNS`; Parquet adds ``value_float``), in the order
context, (run,) time, variable. ``--wide`` writes one context as a table with one column per
variable (its name, else its id) and one row per read time, BAD samples empty
(:func:`data_collector.wide_frame`). ``--run N`` picks the N-th run of a context (both
sources), ``--from``/``--to`` a time range. A context or run the source does not have, and an
output file name that is neither ``.csv`` nor ``.parquet`` (without ``--format``), are usage
errors (exit status 2). :func:`load_samples` is shared with ``data-collector plot``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .._config import load_config
from .._errors import ConfigurationError
from .._frames import wide_frame
from ._common import EXIT_OK, format_value, table

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
    "name",
    "unit",
)

#: Output file suffixes ``export`` knows, and their format.
FORMATS = {".csv": "csv", ".parquet": "parquet"}


def output_format(args: argparse.Namespace) -> str:
    """``csv`` or ``parquet``: ``--format``, else by the output file's suffix (standard output:
    CSV); :class:`ConfigurationError` for a suffix no format has."""
    if args.format:
        return str(args.format)
    if args.output in (None, "-"):
        return "csv"
    suffix = Path(args.output).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise ConfigurationError(
            f"-o {args.output}: unsupported output file type {suffix or '(no suffix)'!r}: "
            "give a .csv or .parquet file (or --format csv|parquet)"
        )
    return fmt


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


def _hdf5_module() -> Any:
    try:
        return importlib.import_module("data_writer.hdf5")
    except ImportError as exc:
        raise ConfigurationError(
            f'reading an HDF5 file needs PyTables: pip install "data-collector[hdf5]" ({exc})'
        ) from None


def _check_known(
    ids: Sequence[int], known: Iterable[int], label: str, missing: Callable[[int], bool]
) -> None:
    """:class:`ConfigurationError` for the first of ``ids`` that ``label`` does not have."""
    have = sorted(set(known))
    for cid in ids:
        if cid not in have and missing(cid):
            there = ", ".join(str(c) for c in have[:20]) + (", ..." if len(have) > 20 else "")
            raise ConfigurationError(f"no context {cid} in {label} (contexts: {there or 'none'})")


def _hdf5_samples(args: argparse.Namespace, out: IO[str]) -> tuple[list[Any], list[int]] | None:
    """The samples of an HDF5 file (and the context ids exported), or None after ``--list``."""
    hdf5 = _hdf5_module()
    path = args.source
    if not Path(path).is_file():
        raise ConfigurationError(f"no such file: {path!r}")
    runs = hdf5.list_runs(path)
    if getattr(args, "list", False):
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
    ids = _contexts_of(args, [r.context_id for r in runs])
    _check_known(ids, [r.context_id for r in runs], path, lambda _cid: True)
    have = {cid: [r.run for r in runs if r.context_id == cid] for cid in ids}
    numbers = _runs_wanted(args, have, path)
    start = _parse_time(args.start, "--from")
    end = _parse_time(args.end, "--to")
    samples: list[Any] = []
    for cid in ids:
        for n in numbers:
            if n is None or n in have[cid]:
                samples += hdf5.read_samples(
                    path, cid, n, variable_ids=args.variables or None, start=start, end=end
                )
    return samples, ids


def _run_list(runs: list[int]) -> str:
    if not runs:
        return "no recorded run"
    if len(runs) == 1:
        return f"run {runs[0]}"
    if runs == list(range(1, len(runs) + 1)):
        return f"runs 1..{len(runs)}"
    return "runs " + ", ".join(map(str, runs))


def _runs_wanted(args: argparse.Namespace, have: dict[int, list[int]], label: str) -> list[int | None]:
    """The ``--run`` numbers (``[None]``: every run); :class:`ConfigurationError` for a number
    none of the chosen contexts has (with several contexts, each gets the runs it has)."""
    if not args.run:
        return [None]
    numbers = list(dict.fromkeys(args.run))
    for n in numbers:
        if not any(n in runs for runs in have.values()):
            shown = "; ".join(f"context {cid}: {_run_list(runs)}" for cid, runs in have.items())
            raise ConfigurationError(f"{label}: no run {n} ({shown})")
    return list(numbers)


def _contexts_of(args: argparse.Namespace, known: Sequence[int]) -> list[int]:
    """The context ids to read: ``--context`` (repeatable), else every one the source has (one
    with ``--wide``, which needs a single context)."""
    ids = list(dict.fromkeys(args.context or known))
    single = "--wide" if getattr(args, "wide", False) else getattr(args, "one_context", None)
    if single and len(ids) > 1:
        raise ConfigurationError(
            f"{single} shows one context: choose it with --context ID (there are "
            f"{', '.join(map(str, ids[:20]))}{', ...' if len(ids) > 20 else ''})"
        )
    return ids


def _sql_samples(args: argparse.Namespace, out: IO[str]) -> tuple[list[Any], list[int], str] | None:
    """The samples of a SQL store, the context ids exported and the store's label; None after ``--list``."""
    try:
        sql: Any = importlib.import_module("data_writer.sql")
    except ImportError as exc:
        raise ConfigurationError(
            f'reading a SQL store needs SQLAlchemy: pip install "data-collector[sql]" ({exc})'
        ) from None
    url, prefix, label, cleanup = _export_source(args)
    try:
        runs = sql.read_contexts(url, table_prefix=prefix)
        if getattr(args, "list", False):
            numbers: dict[int, int] = {}
            rows = []
            for r in runs:
                numbers[r.context_id] = numbers.get(r.context_id, 0) + 1
                rows.append(
                    (
                        r.context_id,
                        numbers[r.context_id],
                        r.start.isoformat(timespec="seconds") if r.start else "",
                        r.end.isoformat(timespec="seconds") if r.end else "",
                        format_value(r.ended or "", 40),
                        format_value(json.dumps(r.metadata, ensure_ascii=False, default=str), 60),
                    )
                )
            header = ["context", "run", "start", "end", "ended", "metadata"]
            out.write("\n".join(table(header, rows, right=[0, 1])) + "\n")
            return None
        known = [r.context_id for r in runs]
        ids = _contexts_of(args, known)

        # a context written without a recorded run (a writer used directly) still counts
        _check_known(ids, known, label, lambda cid: not sql.has_context(url, cid, table_prefix=prefix))
        variable_ids = args.variables or None
        start = _parse_time(args.start, "--from")
        end = _parse_time(args.end, "--to")
        have: dict[int, list[int]] = {cid: [] for cid in ids}
        for r in runs:
            if r.context_id in have:
                have[r.context_id].append(len(have[r.context_id]) + 1)
        numbers_wanted = _runs_wanted(args, have, label)
        samples: list[Any] = []
        for cid in ids:
            for n in numbers_wanted:
                if n is None or n in have[cid]:
                    samples += sql.read_samples(
                        url, cid, run=n, variable_ids=variable_ids, start=start, end=end, table_prefix=prefix
                    )
    finally:
        cleanup()
    return samples, ids, label


def load_samples(args: argparse.Namespace, out: IO[str]) -> tuple[list[Any], list[int], str] | None:
    """The samples ``args`` select from their ``source`` (a SQL store or an HDF5 file), the
    context ids read and the source's label; None when ``--list`` printed the runs instead."""
    if is_hdf5(args.source):
        found = _hdf5_samples(args, out)
        return None if found is None else (found[0], found[1], args.source)
    return _sql_samples(args, out)


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
            getattr(r, "name", None) or "",
            getattr(r, "unit", None) or "",
        )


def _cmd_export(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    fmt = output_format(args)  # before reading anything: a wrong file name fails at once
    if fmt == "parquet" and args.output in (None, "-"):
        raise ConfigurationError("Parquet goes to a file: give -o FILE.parquet")
    found = load_samples(args, out)
    if found is None:
        return EXIT_OK
    samples, ids, label = found
    where = "standard output" if args.output in (None, "-") else args.output
    if args.wide:
        frame = wide_frame(samples)
        _write_wide(frame, fmt, args.output, out)
        if not args.quiet:
            err.write(
                f"exported {len(frame)} read times x {len(frame.columns)} variables ({len(samples)} samples) "
                f"of context {ids[0] if ids else '-'} from {label} to {where}\n"
            )
        return EXIT_OK
    if fmt == "parquet":
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
    if not args.quiet:
        contexts = f"{len(ids)} context" + ("" if len(ids) == 1 else "s")
        err.write(f"exported {len(samples)} samples of {contexts} from {label} to {where}\n")
    return EXIT_OK


def _cell(value: Any, na: Any) -> str:
    """The CSV text of one cell of a wide frame (a missing value, ``na``: empty)."""
    from data_writer.csv import format_value as csv_text

    if value is None or value is na or (isinstance(value, float) and math.isnan(value)):
        return ""
    return csv_text(value)


def _write_wide(frame: Any, fmt: str, output: str | None, out: IO[str]) -> None:
    """A wide frame as CSV (``read_at`` then one column per variable) or Parquet."""
    na = importlib.import_module("pandas").NA
    if fmt == "parquet":
        try:
            pa: Any = importlib.import_module("pyarrow")
            pq: Any = importlib.import_module("pyarrow.parquet")
        except ImportError:
            raise ConfigurationError(
                'Parquet export needs pyarrow: pip install "data-collector[parquet]"'
            ) from None
        flat = frame.reset_index()
        for column in flat.columns:
            if flat[column].dtype == object:  # texts and mixed values: as their CSV text
                flat[column] = [None if v is None else _cell(v, na) for v in flat[column].tolist()]
        assert output is not None
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        table_ = pa.Table.from_pandas(flat, preserve_index=False)
        pq.write_table(table_.replace_schema_metadata(None), str(path))
        return
    times = [t.isoformat(timespec="microseconds") for t in frame.index]
    columns = [[_cell(v, na) for v in frame[c].tolist()] for c in frame.columns]

    def emit(f: IO[str]) -> None:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["read_at", *frame.columns])
        writer.writerows(zip(times, *columns, strict=True))

    if output in (None, "-"):
        emit(out)
        out.flush()
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        emit(f)


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
        "name": pa.array([getattr(r, "name", None) for r in samples], pa.string()),
        "unit": pa.array([getattr(r, "unit", None) for r in samples], pa.string()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), str(path))
