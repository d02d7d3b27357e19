"""``data-collector scan CONFIG --name NAME [--resume] [--dry-run]``: run a parameter scan.

Serves measurement campaigns described in the configuration file (``[[scans]]``, see
:mod:`data_collector._config_scan`): for every point of the scan, the whole configuration is
written through the readers that own the setpoints (read back and compared), the point settles,
and the measured variables are captured into the file's writers (a run per point; the HDF5 and
SQL writers also keep the scan's merged table). Progress (points done, failed, ETA) is a live
block on a terminal and one plain line per point otherwise.

Ctrl-C or SIGTERM stops the point in progress (its data is written) and exits with 130; a second
one exits at once. The journal (``<file stem>.scan-<name>.jsonl`` beside the file unless the scan
names one) records every point; ``--resume`` skips the points it records as complete, after
Ctrl-C, a crash or kill -9 alike. ``--dry-run`` lists the points and the writes each would make
(and which points the journal holds), connecting nowhere.

Exit status: 0 every point complete, 1 a point failed (or collection lost samples), 2
configuration or usage error (a bad scan, a journal of another definition, a journal with points
and no ``--resume``), 3 startup error, 130 interrupted (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import IO, Any

from .._collector import DataCollector
from .._config import Configuration, load_config
from .._errors import ConfigurationError
from .._scan import Scan, ScanProgress, ScanResult
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    _duration,
    _is_tty,
    _LogHandler,
    _Screen,
    format_value,
    table,
)
from ._session import _Session, _spool_dir, _Stopper, lock_spool

SCAN_HELP = """\
Run a parameter scan of the configuration file ([[scans]]): for every point (the Cartesian product
of the parameters, the first changing slowest), write the whole configuration through the readers
that own the setpoints (read back and compared), settle, and capture the measured variables into
the file's writers (one run per point; the hdf5 and sql writers also keep the scan's merged table:
pandas.read_hdf(FILE, "/scans/NAME"), SQL table <prefix>scan_NAME).

The journal (<file stem>.scan-<name>.jsonl beside the file, unless the scan names one) records
every point: after Ctrl-C, a crash or kill -9, --resume skips the points already complete.
--dry-run lists the points and the writes each would make, connecting nowhere.

Exit status: 0 every point complete, 1 a point failed or samples were lost, 2 configuration error,
3 startup error, 130 interrupted (continue with --resume).
"""


def _pick(config: Configuration, name: str | None) -> Scan:
    if name is not None:
        return config.scan(name)
    if len(config.scans) == 1:
        return config.scans[0]
    known = ", ".join(s.name for s in config.scans) or "none"
    raise ConfigurationError(f"{config.source}: name the scan to run with --name (scans: {known})")


def _cmd_scan(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    config = load_config(args.config)
    scan = _pick(config, args.name)
    if args.dry_run:
        return _dry_run(args, config, scan, out)
    if args.resume and scan.journal is None:
        raise ConfigurationError(f"scan {scan.name!r} has no journal to resume from")
    spool_dir = _spool_dir(args, config)
    lock, status = lock_spool(spool_dir, err)
    if status != EXIT_OK:
        return status
    try:
        return _run(args, config, scan, spool_dir, out, err)
    finally:
        if lock is not None:
            lock.release()


# -- dry run ---------------------------------------------------------------------------------------
def _dry_run(args: argparse.Namespace, config: Configuration, scan: Scan, out: IO[str]) -> int:
    state = scan.journal_state()
    complete = {i for i, e in state.items() if e.get("status") == "completed"}
    capture = (
        f"{scan.samples} samples of each measured variable"
        if scan.samples is not None
        else f"{scan.duration_s:g} s"
    )
    lines = [
        f"scan {scan.name!r} of {args.config}: {len(scan.points)} points ({scan.shape()}), "
        f"runs of context {scan.context.id}; capture {capture} per point; on_error = {scan.on_error}",
    ]
    settle = scan.settle.describe()
    lines.append(
        "settle: " + ", ".join(f"{k} = {format_value(v)}" for k, v in settle.items() if v is not None)
    )
    if scan.journal is None:
        lines.append("journal: none (no resume)")
    elif not state:
        lines.append(f"journal: {scan.journal} (no point recorded yet)")
    else:
        lines.append(
            f"journal: {scan.journal}: {len(complete)} of {len(scan.points)} points complete"
            + ("; --resume skips them" if complete else "")
        )
    lines.append("every point writes its whole configuration, in this order (then reads back where marked):")
    for sp in scan.setpoints:
        v = sp.variable
        back = " (read back)" if sp.read_back else ""
        lines.append(f"  {sp.name}: variable {v.id} {v.address!r} through reader {v.reader_type!r}{back}")
    headers = ["point", "status", *(sp.name for sp in scan.setpoints), "writes"]
    rows = []
    for point in scan.points:
        entry = state.get(point.index)
        status = (
            "complete"
            if point.index in complete
            else f"{entry.get('status')} (redo)"
            if entry is not None
            else "to do"
        )
        writes = "; ".join(
            f"{sp.variable.reader_type} {sp.variable.address} := {format_value(value, 30)}"
            for sp, value in scan.writes(point)
        )
        rows.append(
            [
                point.index,
                status,
                *(format_value(point.configuration[sp.name], 20) for sp in scan.setpoints),
                writes,
            ]
        )
    lines += table(headers, rows, right=[0])
    todo = len(scan.points) - len(complete)
    lines.append(
        f"dry run: {todo} points to do, {todo * len(scan.setpoints)} writes; nothing was connected or written"
    )
    out.write("\n".join(lines) + "\n")
    out.flush()
    return EXIT_OK


# -- running ---------------------------------------------------------------------------------------
class _Progress:
    """Shows a running scan: a live block on a terminal, else one plain line per point."""

    def __init__(self, scan: Scan, out: IO[str], *, live: bool, quiet: bool) -> None:
        self.scan = scan
        self.out = out
        self.quiet = quiet
        self.screen = _Screen(out) if live and not quiet else None
        self.skipped = 0
        self.last: ScanProgress | None = None
        self.lock = threading.Lock()

    def __call__(self, p: ScanProgress) -> None:
        with self.lock:
            self.last = p
            total = p.total
            if p.phase == "skipped":
                self.skipped += 1
                return
            if self.skipped:
                self.say(f"resuming: {self.skipped} of {total} points are complete in the journal (skipped)")
                self.skipped = 0
            head = f"[{p.done:>{len(str(total))}}/{total}] point {p.point.index} ({p.point.label()})"
            eta = f", ETA {_duration(p.eta_s)}" if p.eta_s is not None else ""
            counts = f"done {p.done}/{total}, failed {p.failed}, elapsed {_duration(p.elapsed_s)}{eta}"
            if p.phase == "completed":
                self.say(f"{head}: completed ({counts})")
            elif p.phase == "failed":
                self.say(f"{head}: FAILED: {p.error} ({counts})")
            elif p.phase == "retrying":
                self.say(f"{head}: attempt failed, trying again: {p.error}")
            elif p.phase == "interrupted":
                self.say(f"{head}: interrupted ({counts})")
            if self.screen is not None and p.phase in ("writing", "settling", "capturing"):
                self.screen.show(
                    [
                        f"data-collector scan {self.scan.name}: {counts} (Ctrl-C stops; --resume continues)",
                        f"point {p.point.index} (of 0..{total - 1}): {p.point.label()}: {p.phase}",
                    ]
                )

    def say(self, line: str) -> None:
        if self.quiet and "FAILED" not in line:
            return
        if self.screen is not None:
            self.screen.clear()
        self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.screen is not None:
            self.screen.clear()


def _tables(collector: DataCollector, scan: Scan, started: Any) -> list[str]:
    """Where the scan's merged table is, per writer that keeps one."""
    lines = []
    for w in collector.writers:
        if not w.supports_scan_rows:
            continue
        path_for = getattr(w, "path_for", None)
        prefix = getattr(w, "table_prefix", None)
        if callable(path_for):
            path = path_for(scan.context.id, started)
            lines.append(f'scan table: pandas.read_hdf("{path}", "/scans/{scan.name}")  (writer {w.name})')
        elif isinstance(prefix, str):
            lines.append(f"scan table: SQL table {prefix}scan_{scan.name}  (writer {w.name})")
        else:
            lines.append(f"scan table {scan.name!r}: writer {w.name}")
    return lines


def _run(
    args: argparse.Namespace,
    config: Configuration,
    scan: Scan,
    spool_dir: Path | None,
    out: IO[str],
    err: IO[str],
) -> int:
    quiet: bool = args.quiet
    session = _Session(config, out, err, live=False, spool_dir=spool_dir)
    progress = _Progress(scan, out, live=_is_tty(out), quiet=quiet)

    def begin(collector: DataCollector) -> None:
        scan.check(collector)
        collector._prepare([scan.probe_context()])

    result: ScanResult | None = None
    started = time.monotonic()
    with _Stopper(err) as stopper:
        status = session.start(begin)
        if status != EXIT_OK:
            return status
        collector = session.collector
        assert collector is not None
        if not quiet:
            capture = f"{scan.samples} samples" if scan.samples is not None else f"{scan.duration_s:g} s"
            spool = f"spooling to {spool_dir}" if spool_dir is not None else "no spool (--no-spool)"
            lines = [
                f"scan {scan.name!r} of {args.config}: {len(scan.points)} points ({scan.shape()}), {capture} "
                f"per point; journal {scan.journal}; {spool}; Ctrl-C stops (--resume continues)",
                *session.replay_lines(),
            ]
            out.write("\n".join(lines) + "\n")
            out.flush()
        _LogHandler.screen = progress.screen
        try:
            result = scan.run(collector, resume=args.resume, progress=progress, stop=stopper.event)
        except ConfigurationError:
            session.stop()
            raise
        except BaseException:
            session.stop()
            raise
        finally:
            progress.close()
            _LogHandler.screen = None
        tables = _tables(collector, scan, result.started)
        if not quiet and stopper.event.is_set():
            out.write(f"stopped by {stopper.reason}: writing every value read...\n")
            out.flush()
        session.stop()
    assert result is not None
    elapsed = time.monotonic() - started
    lines, problems, losses = session.report(f"scan {scan.name!r} ended")
    lines = lines[1:]  # the session's first line (reason, elapsed) is said below
    done = len(result.completed) + len(result.skipped)
    summary = (
        f"scan {scan.name!r}: {done} of {result.total} points complete ({len(result.completed)} in this run, "
        f"{len(result.skipped)} before), {len(result.failed)} failed, after {_duration(elapsed)}"
    )
    code = EXIT_OK
    if result.interrupted:
        code = EXIT_INTERRUPTED
        summary += (
            f"; interrupted: continue with data-collector scan {args.config} --name {scan.name} --resume"
        )
    elif result.failed:
        code = EXIT_FAILED
        first = min(result.failed)
        summary += f"; first failure: point {first}: {result.failed[first]}"
        if result.stopped_on_error:
            summary += ' (on_error = "stop": the scan stopped there; fix it and --resume)'
        else:
            summary += " (--resume redoes the failed points)"
    if losses:
        code = code or EXIT_FAILED
    out_lines = [*lines, *tables, summary]
    if problems:
        out_lines.append(f"collection: samples {', '.join(problems)}")
    if not quiet:
        out.write("\n".join(out_lines) + "\n")
        out.flush()
    elif code != EXIT_OK:
        err.write(summary + "\n")
        err.flush()
    return code
