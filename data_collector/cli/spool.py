"""``data-collector spool DIR|CONFIG``: what a spool holds; retry or drop its content."""

from __future__ import annotations

import argparse
import collections
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from .._config import load_config
from .._errors import ConfigurationError
from .._spool import SpoolInfo, drop_spool, inspect_spool, retry_quarantine, spool_folder_name
from ._common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STARTUP,
    MONITOR_NAME,
    _duration,
    format_bytes,
    format_value,
    table,
)
from ._session import SpoolLock, default_spool_dir


# -- spool -----------------------------------------------------------------------------------------------
def _spool_source(target: str) -> tuple[Path, dict[str, str], bool]:
    """(spool folder, writer name by spool folder name, whether it came from a configuration file)."""
    path = Path(target)
    names = {spool_folder_name(MONITOR_NAME): f"{MONITOR_NAME} (the live view of run)"}
    if path.is_file():
        config = load_config(path)
        for writer in config.writers:
            names[spool_folder_name(writer.name)] = writer.name
        return config.spool_dir or default_spool_dir(path), names, True
    if not path.exists() and path.suffix == ".toml":
        raise ConfigurationError(f"no such configuration file: {target!r}")
    return path, names, False


def _spool_lines(infos: Sequence[SpoolInfo], names: Mapping[str, str]) -> list[str]:
    now = datetime.now(UTC)
    rows = []
    reasons: list[str] = []
    monitor = spool_folder_name(MONITOR_NAME)
    for info in infos:
        if info.folder.name == monitor and not info.records and not info.quarantined:
            continue  # the live view's spool, empty: nothing to say
        label = names.get(info.folder.name, info.folder.name)
        oldest = ""
        if info.oldest is not None:
            age = (now - info.oldest).total_seconds()
            oldest = f"{info.oldest.isoformat(timespec='seconds')} ({_duration(age)} ago)"
        rows.append((label, info.samples, info.records, format_bytes(info.bytes), oldest, info.quarantined))
        counted = collections.Counter(info.quarantine_reasons)
        for reason, n in counted.most_common():
            reasons.append(f"  {label}: {n} x {format_value(reason, 200)}")
        if info.quarantined > len(info.quarantine_reasons):
            more = info.quarantined - len(info.quarantine_reasons)
            reasons.append(f"  {label}: ... ({more} more not read)")
    lines = table(
        ["writer", "samples", "records", "bytes", "oldest", "quarantined"], rows, right=(1, 2, 3, 5)
    )
    if reasons:
        lines += ["quarantined batches (their reasons):", *reasons]
    return lines


def _drop_files(folder: Path) -> list[Path]:
    """The files ``drop_spool`` deletes under ``folder`` (segments, acknowledgements, quarantine)."""
    files: list[Path] = []
    for info in inspect_spool(folder):
        d = info.folder
        files += [*d.glob("*.seg"), *d.glob("*.ack"), *(d / "quarantine").glob("*.q")]
    return files


def _cmd_spool(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    folder, names, from_config = _spool_source(args.target)
    if from_config and not folder.exists():
        if not args.quiet:
            out.write(f"spool {folder}: does not exist (nothing spooled)\n")
        return EXIT_OK
    infos = inspect_spool(folder)  # ConfigurationError when it is not there
    lock = SpoolLock(folder)
    holder = lock.holder()
    if args.retry_quarantine or args.drop:
        if args.drop and not args.yes:
            files = _drop_files(folder)
            samples = sum(i.samples for i in infos)
            quarantined = sum(i.quarantined for i in infos)
            out.write(
                "\n".join(
                    [
                        f"spool {folder}:",
                        *_spool_lines(infos, names),
                        f"--drop would delete {len(files)} files: {samples} samples not written yet and "
                        f"{quarantined} quarantined batches, for good",
                        "nothing deleted: add --yes to delete them",
                    ]
                )
                + "\n"
            )
            return EXIT_CONFIG
        if not lock.acquire():
            err.write(
                f"error: the spool {folder} is in use by a running data-collector (pid {lock.holder()}): "
                "stop it first\n"
            )
            return EXIT_STARTUP
        try:
            if args.drop:
                samples = sum(i.samples for i in infos)
                quarantined = sum(i.quarantined for i in infos)
                count = drop_spool(folder)
                message = (
                    f"deleted {count} files from the spool {folder}: {samples} samples not written yet "
                    f"and {quarantined} quarantined batches"
                )
            else:
                count = retry_quarantine(folder)
                message = (
                    f"{count} quarantined batches put back into the spool {folder}: "
                    "the next run writes them first"
                )
        finally:
            lock.release()
        infos = inspect_spool(folder)
        if not args.quiet:
            out.write(message + "\n")
    if not args.quiet:
        state = f" (in use by a running data-collector, pid {holder})" if holder else ""
        lines = [f"spool {folder}{state}:", *_spool_lines(infos, names)]
        samples = sum(i.samples for i in infos)
        quarantined = sum(i.quarantined for i in infos)
        lines.append(f"{samples} samples not written yet, {quarantined} batches quarantined")
        out.write("\n".join(lines) + "\n")
    return EXIT_FAILED if any(i.quarantined for i in infos) else EXIT_OK
