"""``data-collector validate CONFIG``: check everything that can be checked without connecting."""

from __future__ import annotations

import argparse
from typing import IO

from .._config import ConfigFileError, Configuration, load_config
from ._common import EXIT_CONFIG, EXIT_OK, _duration
from ._session import _spool_dir


# -- validate ----------------------------------------------------------------------------------------
def _cmd_validate(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    config = load_config(args.config)
    spool_dir = _spool_dir(args, config)
    if spool_dir is not None:
        issues = config.spool_issues()
        if issues:
            err.write(f"{ConfigFileError(config.source, issues)}\n(or run with --no-spool)\n")
            return EXIT_CONFIG
    if not args.quiet:
        lines = _describe(config)
        lines.append(f"  spool: {spool_dir}" if spool_dir is not None else "  spool: none (--no-spool)")
        out.write("\n".join(lines) + "\n")
    return EXIT_OK


def _describe(config: Configuration) -> list[str]:
    lines = [f"{config.source}: OK"]
    for rt, path in config.reader_paths.items():
        reader = next(r for r in config.readers if r.reader_type == rt)
        lines.append(f"  {path}: {reader!r}")
    for path, kind, writer in zip(config.writer_paths, config.writer_types, config.writers, strict=True):
        label = writer.name if writer.name != type(writer).__name__ else repr(writer)
        lines.append(f"  {path}: {kind} {label}")
    for i, context in enumerate(config.contexts):
        intervals = sorted({context.interval_of(v) for v in context.variables})
        span = f"{intervals[0]} ms" if len(intervals) == 1 else f"{intervals[0]}-{intervals[-1]} ms"
        when = config.start_at.get(context.id)
        start = f", starts {when.isoformat()}" if when is not None else ""
        lines.append(
            f"  contexts[{i}]: id {context.id}, {len(context.variables)} variables every {span}, "
            f"duration {_duration(context.duration_s)}{start}"
        )
    for i, scan in enumerate(config.scans):
        capture = f"{scan.samples} samples" if scan.samples is not None else _duration(scan.duration_s)
        lines.append(
            f"  scans[{i}]: {scan.name!r}, {len(scan.points)} points ({scan.shape()}), "
            f"{len(scan.setpoints)} setpoints, {len(scan.context.variables)} variables, {capture} per point"
        )
    return lines
