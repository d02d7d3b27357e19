"""The ``data-collector`` command: run, validate and commission collections from a TOML file.

Serves plant engineers at a terminal: everything the library does, driven by a configuration file
(format: :mod:`data_collector._config`), with no Python to write. Subcommands::

    data-collector run CONFIG [--duration S] [--quiet] [--spool-dir DIR | --no-spool]
        collect until every context ends, or Ctrl-C / SIGTERM (both stop gracefully: every value
        already read is written before the command exits; a second Ctrl-C exits at once). On a
        terminal a live table shows, per context, samples, rate, bad values and time left, and per
        reader and writer the missed, lost and unwritten samples and what the writer's spool holds.
        Store-and-forward: every value read goes to a spool on disk first and leaves it once its
        writer stored it. The spool folder is ``--spool-dir DIR`` if given, else the file's
        ``[collector] spool_dir``, else ``<config stem>.spool/`` beside the configuration file
        (``plant.toml`` -> ``plant.spool/``); ``--no-spool`` keeps values in memory only.
        With a spool, a store that is down at start does not stop the run (a writer whose
        ``open()`` fails with a transient error is retried in the background while its data
        spools); what was not written when the command ends (a crash, kill -9, a store still down
        at Ctrl-C) stays in the spool and the next run on that spool writes it first ("replayed").
        One run at a time per spool (a lock file in it; a second run exits 3).
    data-collector validate CONFIG [--spool-dir DIR | --no-spool]
        check everything that can be checked without connecting; list every problem with its key
        path (with a spool, also writers that share a name: each needs a spool folder of its own).
    data-collector spool DIR|CONFIG [--retry-quarantine | --drop [--yes]]
        per writer, what a spool holds (samples not written yet, records, bytes, the oldest) and
        what it quarantined (batches a writer refused for good, with the reasons); a configuration
        file stands for its spool folder. ``--retry-quarantine`` puts the quarantined batches back
        into the spool (the next run writes them first); ``--drop --yes`` deletes everything
        spooled and quarantined (``--drop`` alone says what it would delete). Both refuse while a
        run uses the spool.
    data-collector read CONFIG [--context ID] [--timeout S]
        connect, read every variable once, print value, quality and error: the commissioning tool.
    data-collector demo [--seconds 20] [--out ./data-collector-demo] [--modbus-port 0] [--opcua-port 0]
        start the embedded Modbus and OPC UA simulators, collect into SQLite and CSV, show live
        values, then say where the data is and how to look at it.
    data-collector export SOURCE [--context ID] [--list] [-o FILE.csv|FILE.parquet]
        samples of a SQL store (a SQLAlchemy URL, an SQLite file, or a configuration file with a
        ``sql`` writer) to CSV (standard output by default) or Parquet (needs pyarrow).
    data-collector plugins
        the reader and writer types available to configuration files, and where they come from.
    data-collector simulator {modbus,opcua} [options]
        run a simulator (``--help`` after the name lists its options).

Exit status: 0 success; 1 the command ran but values were read BAD (``read``), or (``run``) a
sample was BAD, missed, lost, dropped or left unwritten (the summary's last line says which;
samples an earlier run left in the spool and this one wrote are fine), or (``spool``) batches
are quarantined; 2 configuration or usage error (a bad ``--port`` of ``simulator`` included;
``spool --drop`` without ``--yes``); 3 startup error (a reader or writer failed to open for good,
a simulator could not listen, the spool is in use by another run).

Example::

    data-collector simulator modbus --port 5020 &
    data-collector simulator opcua --port 4840 &
    data-collector validate examples/plant.toml && data-collector run examples/plant.toml
    data-collector spool examples/plant.toml      # what examples/plant.spool/ holds
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import importlib
import io
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from ._collector import CollectorStats, DataCollector
from ._config import ConfigFileError, Configuration, load_config, loads_config
from ._errors import ConfigurationError, DataCollectionError
from ._model import (
    MAX_DURATION_S,
    MAX_ID,
    MIN_ID,
    CollectedVariables,
    DataCollectionContext,
    Quality,
    Variable,
)
from ._reader import DataReader
from ._registry import PluginInfo, plugins, reader_class, writer_class
from ._spool import SpoolInfo, drop_spool, inspect_spool, retry_quarantine, spool_folder_name
from ._writer import DataWriter

try:
    import fcntl
except ImportError:  # Windows: spool folders are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "EXIT_STARTUP", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_STARTUP = 3
EXIT_INTERRUPTED = 130

_log = logging.getLogger("data_collector.cli")

#: The deduced-metadata key the collector sets on the runs it replays from a spool.
REPLAYED_KEY = "replayed_from_spool"
#: The monitor writer's name (the live view of ``run``; it has a spool folder of its own).
MONITOR_NAME = "data-collector-cli-monitor"
#: The lock file ``run`` holds in its spool folder while it runs.
LOCK_NAME = "data-collector.lock"


# -- output ------------------------------------------------------------------------------------------
class _Screen:
    """A block of lines redrawn in place on a terminal (ANSI cursor moves), cleared before log lines."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lines = 0
        self.lock = threading.Lock()

    def show(self, lines: Sequence[str]) -> None:
        width = max(20, shutil.get_terminal_size((120, 40)).columns - 1)
        with self.lock:
            text = f"\x1b[{self.lines}F" if self.lines else ""
            text += "\x1b[J" + "".join(line[:width] + "\n" for line in lines)
            self.stream.write(text)
            self.stream.flush()
            self.lines = len(lines)

    def clear(self) -> None:
        with self.lock:
            if self.lines:
                self.stream.write(f"\x1b[{self.lines}F\x1b[J")
                self.stream.flush()
                self.lines = 0


class _LogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines on stderr that first clear the live screen, so the two never mix."""

    screen: _Screen | None = None

    def emit(self, record: logging.LogRecord) -> None:
        screen = self.screen
        if screen is not None:
            screen.clear()
        super().emit(record)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Iterable[int] = ()) -> list[str]:
    """Rows as aligned text lines (columns whose index is in ``right`` are right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right_set = set(right)
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if i in right_set else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def format_value(value: Any, limit: int = 40) -> str:
    """A value for a terminal table (floats in full precision, bytes in hex), cut to ``limit``."""
    if value is None:
        text = ""
    elif value is True or value is False:
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, bytes | bytearray):
        text = value.hex()
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:
        text = str(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


# -- the monitor writer ------------------------------------------------------------------------------
class _Monitor(DataWriter):
    """Counts what every context delivered and keeps the latest value of each variable, for display."""

    spooled = False  # a live view: from memory only, never through the spool

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.Lock()
        self.samples: dict[int, int] = {}
        self.bad: dict[int, int] = {}
        self.latest: dict[int, tuple[Any, Quality, datetime | None, str | None]] = {}

    @property
    def name(self) -> str:
        return MONITOR_NAME

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        if context.deduced_metadata.get(REPLAYED_KEY):
            return  # an earlier run's samples, replayed from the spool: not this run's
        bad = sum(1 for q in variables.qualities if q is Quality.BAD)
        latest = {
            v.id: (value, q, at, err)
            for v, value, q, at, err in zip(
                variables.variables,
                variables.values,
                variables.qualities,
                variables.read_ats,
                variables.errors,
                strict=True,
            )
        }
        with self._guard:
            cid = context.id
            self.samples[cid] = self.samples.get(cid, 0) + len(variables)
            self.bad[cid] = self.bad.get(cid, 0) + bad
            self.latest.update(latest)

    def snapshot(
        self,
    ) -> tuple[dict[int, int], dict[int, int], dict[int, tuple[Any, Quality, datetime | None, str | None]]]:
        with self._guard:
            return dict(self.samples), dict(self.bad), dict(self.latest)


# -- collecting (run and demo) -------------------------------------------------------------------------
class _Stopper:
    """SIGINT/SIGTERM handlers (installed only while collecting): the first stops, the second exits."""

    def __init__(self, err: IO[str]) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._err = err
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            self._err.write(f"\n{name} again: exiting without waiting for the writers\n")
            self._err.flush()
            os._exit(EXIT_INTERRUPTED)
        self.reason = name
        self.event.set()

    def __enter__(self) -> _Stopper:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # outside the main thread this fails: the caller then stops us some other way
            with contextlib.suppress(ValueError, OSError):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, old)
        self._old.clear()


class _Session:
    """One collection: a collector over a configuration, started, watched, stopped, summarized."""

    def __init__(
        self, config: Configuration, out: IO[str], err: IO[str], *, live: bool, spool_dir: Path | None = None
    ) -> None:
        self.config = config
        self.spool_dir = spool_dir
        self.out = out
        self.err = err
        self.monitor = _Monitor()
        self.collector: DataCollector | None = None
        self.screen = _Screen(out) if live else None
        self.started = 0.0
        self.elapsed = 0.0
        self.stats: CollectorStats | None = None
        self._history: dict[int, collections.deque[tuple[float, int]]] = {}

    def start(self) -> int:
        """Build the collector and start every context; an exit status other than 0 on failure."""
        try:
            self.collector = self.config.collector(
                _log, extra_writers=[self.monitor], spool_dir=self.spool_dir
            )
            self.config.start(self.collector)
        except ConfigFileError as exc:  # writers with one name and a spool
            self._print_err(f"{exc}\n(or run with --no-spool)" if self.spool_dir is not None else str(exc))
            self._close()
            return EXIT_CONFIG
        except ConfigurationError as exc:
            self._print_err(f"error: {self.config.describe_error(exc)}")
            self._close()
            return EXIT_CONFIG
        except DataCollectionError as exc:
            self._print_err(f"error: startup failed: {exc}")
            self._close()
            return EXIT_STARTUP
        self.started = time.monotonic()
        return EXIT_OK

    def watch(
        self,
        stopper: _Stopper,
        *,
        until: float | None,
        render: Callable[[], list[str]],
        redraw_s: float = 0.5,
        progress: Callable[[], str | None] | None = None,
    ) -> str:
        """Wait until a signal, the contexts' end or ``until`` (monotonic); redraw meanwhile."""
        assert self.collector is not None
        _LogHandler.screen = self.screen
        now = time.monotonic()
        next_redraw = now + redraw_s
        next_progress = now + 5.0
        try:
            while True:
                if stopper.event.wait(0.1):
                    return f"stopped by {stopper.reason}"
                if not self.collector.contexts():
                    return "every context ended"
                now = time.monotonic()
                if until is not None and now >= until:
                    return "time is up"
                if self.screen is not None and now >= next_redraw:
                    next_redraw = now + redraw_s
                    self.screen.show(render())
                elif self.screen is None and progress is not None and now >= next_progress:
                    next_progress = now + 5.0
                    line = progress()
                    if line:
                        self.out.write(line + "\n")
                        self.out.flush()
        finally:
            if self.screen is not None:
                self.screen.clear()
            _LogHandler.screen = None

    def stop(self) -> None:
        """Stop every context and drain the writers (the collector's ``close``)."""
        self.elapsed = time.monotonic() - self.started if self.started else 0.0
        self._close()

    def _close(self) -> None:
        collector = self.collector
        if collector is None:
            return
        try:
            collector.close()
        finally:
            self.stats = collector.stats()

    def _print_err(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    # -- views ------------------------------------------------------------------------------------
    def status_lines(self, title: str) -> list[str]:
        """The per-context status table (run)."""
        assert self.collector is not None
        stats = self.collector.stats()
        samples, bad, _latest = self.monitor.snapshot()
        now = time.monotonic()
        wall = datetime.now(UTC)
        rows = []
        for cid, cs in stats.contexts.items():
            n = samples.get(cid, 0)
            history = self._history.setdefault(cid, collections.deque())
            history.append((now, n))
            while len(history) > 2 and now - history[0][0] > 5.0:
                history.popleft()
            t0, n0 = history[0]
            rate = (n - n0) / (now - t0) if now - t0 >= 0.9 else 0.0
            when = self.config.start_at.get(cid)
            if cs.state == "scheduled" and when is not None:
                left_text = f"starts in {_duration((when - wall).total_seconds())}"
            else:
                left = (cs.ends_at - wall).total_seconds() if cs.ends_at is not None else None
                left_text = _duration(left)
            rows.append((cid, cs.state, n, f"{rate:.1f}", bad.get(cid, 0), left_text))
        lines = [title]
        lines += table(
            ["context", "state", "samples", "rate/s", "bad", "time left"], rows, right=(0, 2, 3, 4, 5)
        )
        for rt, rs in stats.readers.items():
            lines.append(
                f"reader {rt}: {rs.samples} samples, {rs.bad_samples} bad, {rs.missed_samples} missed"
            )
        for name, ws in stats.writers.items():
            if name == self.monitor.name:
                continue
            lost = ws.lost_samples + ws.dropped_samples
            line = (
                f"writer {name}: {ws.samples_written} written, queue {ws.queue_depth}, "
                f"{ws.write_errors} errors, {lost} lost, {ws.unwritten_samples} unwritten"
            )
            if self.spool_dir is not None:
                oldest = f", oldest {_duration(ws.oldest_spooled_s)}" if ws.spooled_samples else ""
                line += (
                    f"; spool {ws.spooled_samples} samples ({format_bytes(ws.spool_bytes)}{oldest}), "
                    f"{ws.quarantined_batches} quarantined, {ws.replayed_samples} replayed"
                )
            lines.append(line)
        return lines

    def replay_lines(self) -> list[str]:
        """What the writers replay from the spool of an earlier run (once started)."""
        if self.collector is None or self.spool_dir is None:
            return []
        return [
            f"writer {name}: {ws.replayed_samples} samples spooled by an earlier run are written first"
            for name, ws in self.collector.stats().writers.items()
            if name != self.monitor.name and ws.replayed_samples
        ]

    def values_lines(self, title: str) -> list[str]:
        """The latest value of every variable (demo)."""
        _samples, _bad, latest = self.monitor.snapshot()
        now = datetime.now(UTC)
        rows = []
        for v in self.config.variables:
            value, quality, at, error = latest.get(v.id, (None, None, None, None))
            age = f"{(now - at).total_seconds():.1f} s" if at is not None else ""
            rows.append(
                (
                    v.id,
                    self.config.variable_names.get(v.id, ""),
                    v.reader_type,
                    format_value(value, 28),
                    quality or "",
                    age,
                    format_value(error, 40),
                )
            )
        return [
            title,
            *table(["id", "name", "reader", "value", "quality", "age", "error"], rows, right=(0, 5)),
        ]

    def summary(self, reason: str) -> tuple[list[str], int]:
        """Final lines and the exit status: 1 when a sample was BAD, missed, lost, dropped or unwritten.

        The last line, when the status is 1, says why (``exit status 1: ...``).
        """
        samples, bad, _latest = self.monitor.snapshot()
        lines = [f"{reason} after {_duration(self.elapsed)}"]
        for context in self.config.contexts:
            lines.append(
                f"context {context.id}: {samples.get(context.id, 0)} samples, {bad.get(context.id, 0)} bad"
            )
        delivered_bad = sum(bad.values())
        read_bad = missed = lost = dropped = unwritten = quarantined = 0
        spooling = self.spool_dir is not None
        if self.stats is not None:
            for name, ws in self.stats.writers.items():
                if name == self.monitor.name:
                    continue
                lost += ws.lost_samples
                dropped += ws.dropped_samples
                unwritten += ws.unwritten_samples
                quarantined += ws.quarantined_batches
                kept = " (kept in the spool)" if spooling and ws.unwritten_samples else ""
                line = (
                    f"writer {name}: {ws.samples_written} samples written, {ws.lost_samples} lost, "
                    f"{ws.dropped_samples} dropped, {ws.unwritten_samples} unwritten{kept}"
                )
                if spooling:
                    oldest = f", oldest {_duration(ws.oldest_spooled_s)}" if ws.spooled_samples else ""
                    line += (
                        f"; spool: {ws.replayed_samples} replayed, {ws.quarantined_batches} batches "
                        f"quarantined, {ws.spooled_samples} samples left "
                        f"({format_bytes(ws.spool_bytes)}{oldest})"
                    )
                lines.append(line)
            for rt, rs in self.stats.readers.items():
                read_bad += rs.bad_samples
                missed += rs.missed_samples
                lines.append(
                    f"reader {rt}: {rs.reads} reads, {rs.samples} samples ({rs.bad_samples} bad), "
                    f"{rs.missed_ticks} missed ticks, {rs.missed_samples} missed samples"
                )
        # BAD as the writers got them, or as the readers counted them (whichever saw more)
        bad_total = max(delivered_bad, read_bad)
        where = f"data-collector spool {self.spool_dir}"
        problems = [
            f"{n} {what}"
            for n, what in (
                (bad_total, "BAD"),
                (missed, "missed"),
                (lost, f"lost ({quarantined} batches quarantined: {where})" if quarantined else "lost"),
                (dropped, "dropped"),
                (
                    unwritten,
                    f"unwritten (kept in the spool {self.spool_dir}: the next run writes them first)"
                    if spooling
                    else "unwritten",
                ),
            )
            if n
        ]
        if not problems:
            return lines, EXIT_OK
        lines.append(f"exit status {EXIT_FAILED}: samples {', '.join(problems)}")
        return lines, EXIT_FAILED


def default_spool_dir(config_path: str | os.PathLike[str]) -> Path:
    """Where ``run`` spools when the file says nothing: ``<stem>.spool`` beside the file."""
    path = Path(config_path)
    return path.with_name(f"{path.stem}.spool")


def _spool_dir(args: argparse.Namespace, config: Configuration) -> Path | None:
    """The spool folder of ``run``/``validate``: --no-spool, --spool-dir, the file's, the default."""
    if args.no_spool:
        return None
    if args.spool_dir is not None:
        return Path(args.spool_dir)
    return config.spool_dir or default_spool_dir(args.config)


class SpoolLock:
    """An exclusive advisory lock on a spool folder (a file in it), held while ``run`` uses it.

    Two collectors on one spool would replay and acknowledge each other's data; the ``spool``
    command's changes need it idle. The kernel releases the lock when the process ends, however
    it ends. Where ``fcntl`` is missing (Windows) nothing is locked.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def holder(self) -> str | None:
        """The pid written by the process that holds the lock, if one holds it."""
        if fcntl is None or not self.path.exists():
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            with contextlib.suppress(OSError):
                return os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            return "?"
        finally:
            os.close(fd)
        return None

    def acquire(self) -> bool:
        """Take the lock (creating the folder); False when another process holds it."""
        if fcntl is None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def _cmd_run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    config = load_config(args.config)
    spool_dir = _spool_dir(args, config)
    lock = SpoolLock(spool_dir) if spool_dir is not None else None
    if lock is not None:
        try:
            acquired = lock.acquire()
        except OSError as exc:
            err.write(f"error: spool folder {spool_dir}: {exc.strerror or exc}\n")
            return EXIT_CONFIG
        if not acquired:
            err.write(
                f"error: the spool {spool_dir} is in use by another data-collector (pid {lock.holder()}): "
                "give this run a spool of its own (--spool-dir DIR) or none (--no-spool)\n"
            )
            return EXIT_STARTUP
    try:
        return _run(args, config, spool_dir, out, err)
    finally:
        if lock is not None:
            lock.release()


def _run(
    args: argparse.Namespace, config: Configuration, spool_dir: Path | None, out: IO[str], err: IO[str]
) -> int:
    live = _is_tty(out) and not args.quiet
    session = _Session(config, out, err, live=live, spool_dir=spool_dir)
    with _Stopper(err) as stopper:
        status = session.start()
        if status != EXIT_OK:
            return status
        if not args.quiet:
            count = len(config.variables)
            spool = f"spooling to {spool_dir}" if spool_dir is not None else "no spool (--no-spool)"
            lines = [
                f"collecting {len(config.contexts)} contexts, {count} variables from {args.config}; "
                f"{spool}; Ctrl-C stops and writes every value read",
                *session.replay_lines(),
            ]
            out.write("\n".join(lines) + "\n")
            out.flush()
        until = time.monotonic() + args.duration if args.duration is not None else None
        reason = session.watch(
            stopper,
            until=until,
            render=lambda: session.status_lines(
                f"data-collector run {args.config}: {_duration(time.monotonic() - session.started)}"
                " (Ctrl-C to stop)"
            ),
        )
        if not args.quiet and reason.startswith("stopped"):
            out.write(f"{reason}: stopping, writing every value read...\n")
            out.flush()
        session.stop()
    lines, status = session.summary(reason)
    if not args.quiet:
        out.write("\n".join(lines) + "\n")
        out.flush()
    elif status != EXIT_OK:
        err.write(lines[-1] + "\n")  # --quiet: only why the status is not 0
        err.flush()
    return status


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
    return lines


# -- read ------------------------------------------------------------------------------------------
def _cmd_read(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    config = load_config(args.config)
    contexts = [config.context(cid) for cid in args.context] if args.context else list(config.contexts)
    variables: dict[int, Variable] = {}
    where: dict[int, list[int]] = {}
    for context in contexts:
        for v in context.variables:
            variables.setdefault(v.id, v)
            where.setdefault(v.id, []).append(context.id)
    by_reader: dict[str, list[Variable]] = {}
    for v in variables.values():
        by_reader.setdefault(v.reader_type, []).append(v)
    readers = {r.reader_type: r for r in config.readers}
    results: dict[int, tuple[Any, Quality, str | None, float]] = {}
    lock = threading.Lock()

    def work(reader: DataReader, wanted: list[Variable]) -> None:
        t0 = time.perf_counter()
        try:
            reader.open()
        except Exception as exc:
            with lock:
                for v in wanted:
                    results[v.id] = (None, Quality.BAD, f"open failed: {exc}", 0.0)
            return
        try:
            batch = CollectedVariables.of(wanted)
            t0 = time.perf_counter()
            reader.read(batch)
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                for item in batch:
                    quality, error = item.quality, item.error
                    if item.value is None and quality is not Quality.BAD:
                        quality, error = Quality.BAD, error or "no value"
                    results[item.variable.id] = (item.value, quality, error, ms)
        except Exception as exc:
            with lock:
                for v in wanted:
                    results[v.id] = (None, Quality.BAD, f"read failed: {type(exc).__name__}: {exc}", 0.0)
        finally:
            try:
                reader.close()
            except Exception:
                _log.exception("closing reader %r failed", reader.reader_type)

    started = time.monotonic()
    threads = []
    for rt, wanted in by_reader.items():
        thread = threading.Thread(target=work, args=(readers[rt], wanted), name=f"read-{rt}", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = started + args.timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - started
    rows = []
    counts = {q: 0 for q in Quality}
    with lock:
        final = dict(results)
    for v in variables.values():
        value, quality, error, _ms = final.get(
            v.id, (None, Quality.BAD, f"no answer within {args.timeout:g} s", 0.0)
        )
        counts[quality] += 1
        row = [
            v.id,
            config.variable_names.get(v.id, ""),
            v.reader_type,
            v.address,
            v.value_type,
            format_value(value),
            quality,
            format_value(error, 300),
        ]
        if len(contexts) > 1:
            row.insert(0, ",".join(str(c) for c in where[v.id]))
        rows.append(row)
    headers = ["id", "name", "reader", "address", "type", "value", "quality", "error"]
    right = [0]
    if len(contexts) > 1:
        headers.insert(0, "contexts")
        right = [1]
    out.write("\n".join(table(headers, rows, right=right)) + "\n")
    summary = ", ".join(f"{n} {q}" for q, n in counts.items() if n)
    out.write(
        f"read {len(variables)} variables from {len(by_reader)} readers in {elapsed:.2f} s: {summary}\n"
    )
    out.flush()
    return EXIT_FAILED if counts[Quality.BAD] else EXIT_OK


# -- demo ----------------------------------------------------------------------------------------------
DEMO_CONFIG = """
# The configuration `data-collector demo` runs (${...} are filled in by the demo).
[[readers]]
type = "modbus"
reader_type = "modbus"
host = "127.0.0.1"
port = ${MODBUS_PORT}
timeout_s = 0.5

[[writers]]
type = "sql"
url = "sqlite:///${DEMO_DIR}/demo.sqlite"

[[writers]]
type = "csv"
path = "${DEMO_DIR}/samples.csv"

[[contexts]]
id = ${CONTEXT_ID}
duration_s = ${SECONDS}
reader_type = "modbus"
metadata = { started_by = "data-collector demo" }

[[contexts.variables]]
id = 1
address = "hr:0:float32"
value_type = "float"
interval_ms = 250
name = "Modbus sine"

[[contexts.variables]]
id = 2
address = "hr:2:float32"
value_type = "float"
interval_ms = 500
name = "Modbus ramp"

[[contexts.variables]]
id = 3
address = "hr:4:uint32"
value_type = "int"
name = "Modbus seconds counter"

[[contexts.variables]]
id = 4
address = "hr:9.0"
value_type = "bool"
interval_ms = 500
name = "Modbus square wave"

[[contexts.variables]]
id = 5
address = "hr:240:float32"
value_type = "float"
name = "Modbus constant"

[[contexts.variables]]
id = 6
address = "hr:300:string8"
value_type = "str"
interval_ms = 2000
name = "Modbus text"
"""

#: Appended to :data:`DEMO_CONFIG` when the OPC UA simulator runs too.
DEMO_OPCUA = """
[[readers]]
type = "opcua"
reader_type = "opcua"
endpoint = "opc.tcp://127.0.0.1:${OPCUA_PORT}/"
timeout_s = 2.0

[[contexts.variables]]
id = 11
address = "nsu=urn:data-collector:simulator;s=Sim.Sine"
value_type = "float"
reader_type = "opcua"
interval_ms = 250
name = "OPC UA sine"

[[contexts.variables]]
id = 12
address = "nsu=urn:data-collector:simulator;s=Sim.Counter"
value_type = "int"
reader_type = "opcua"
name = "OPC UA counter"

[[contexts.variables]]
id = 13
address = "nsu=urn:data-collector:simulator;s=Sim.Toggle"
value_type = "bool"
reader_type = "opcua"
interval_ms = 500
name = "OPC UA toggle"

[[contexts.variables]]
id = 14
address = "nsu=urn:data-collector:simulator;s=Static.Double"
value_type = "float"
reader_type = "opcua"
name = "OPC UA constant"
"""


def _next_context_id(sqlite_path: Path) -> int:
    if not sqlite_path.exists():
        return 1
    try:
        from data_writer.sql_data_writer import read_contexts

        runs = read_contexts(f"sqlite:///{sqlite_path}")
    except Exception:  # no tables yet, or not ours: start at 1
        return 1
    return max((run.context_id for run in runs), default=0) + 1


def _cmd_demo(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    try:
        from data_reader.modbus.simulator import ModbusSimulator
    except ImportError as exc:
        err.write(f'error: the demo needs pymodbus: pip install "data-collector[all]" ({exc})\n')
        return EXIT_CONFIG
    use_opcua = not args.no_opcua
    if use_opcua:
        try:
            from data_reader.opcua.simulator import OpcUaSimulator
        except ImportError:
            err.write('note: OPC UA left out (pip install "data-collector[opcua]")\n')
            use_opcua = False
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sqlite_path = out_dir / "demo.sqlite"
    csv_path = out_dir / "samples.csv"
    context_id = _next_context_id(sqlite_path)
    modbus = ModbusSimulator("127.0.0.1", args.modbus_port)
    opcua: Any = OpcUaSimulator("127.0.0.1", args.opcua_port) if use_opcua else None
    with contextlib.ExitStack() as stack:
        modbus.start()
        stack.callback(modbus.stop)
        if opcua is not None:
            opcua.start()
            stack.callback(opcua.stop)
        out.write(
            f"simulators: Modbus TCP on 127.0.0.1:{modbus.port}"
            + (f", OPC UA on {opcua.endpoint}" if opcua is not None else "")
            + "\n"
        )
        environ = {
            "MODBUS_PORT": str(modbus.port),
            "OPCUA_PORT": str(opcua.port) if opcua is not None else "0",
            "DEMO_DIR": out_dir.as_posix(),
            "CONTEXT_ID": str(context_id),
            "SECONDS": repr(float(args.seconds)),
        }
        text = DEMO_CONFIG + (DEMO_OPCUA if opcua is not None else "")
        config = loads_config(text, source="demo", environ=environ)
        session = _Session(config, out, err, live=_is_tty(out))
        with _Stopper(err) as stopper:
            status = session.start()
            if status != EXIT_OK:
                return status
            out.write(
                f"collecting {len(config.variables)} variables into {out_dir}/ for {args.seconds:g} s "
                "(Ctrl-C stops)\n"
            )
            out.flush()

            def render() -> list[str]:
                elapsed = time.monotonic() - session.started
                samples, _bad, _latest = session.monitor.snapshot()
                title = (
                    f"demo: {elapsed:.1f} / {args.seconds:g} s, {samples.get(context_id, 0)} samples "
                    f"(context {context_id})"
                )
                return session.values_lines(title)

            def progress() -> str:
                samples, bad, _latest = session.monitor.snapshot()
                elapsed = time.monotonic() - session.started
                return f"{elapsed:.0f} s: {samples.get(context_id, 0)} samples, {bad.get(context_id, 0)} bad"

            reason = session.watch(
                stopper, until=session.started + args.seconds + 10, render=render, progress=progress
            )
            session.stop()
    samples, bad, _latest = session.monitor.snapshot()
    lost = 0
    if session.stats is not None:
        lost = sum(
            ws.lost_samples + ws.dropped_samples + ws.unwritten_samples
            for name, ws in session.stats.writers.items()
            if name != session.monitor.name
        )
    sql_rows = csv_rows = -1
    with contextlib.suppress(Exception):
        from data_writer.sql_data_writer import read_samples

        sql_rows = len(read_samples(f"sqlite:///{sqlite_path}", context_id))
    with contextlib.suppress(Exception), open(csv_path, newline="", encoding="utf-8") as f:
        csv_rows = sum(1 for row in csv.DictReader(f) if row["context_id"] == str(context_id))
    lines = session.values_lines("last values:")
    lines += [
        "",
        f"demo done ({reason}): {samples.get(context_id, 0)} samples ({bad.get(context_id, 0)} bad, "
        f"{lost} lost) of {len(config.variables)} variables in {_duration(session.elapsed)}, "
        f"context {context_id}",
        "the data is in:",
        f"  SQLite  {sqlite_path}  ({sql_rows} rows of context {context_id}; tables dc_samples, "
        "dc_variables, dc_contexts)",
        f"  CSV     {csv_path}  ({csv_rows} rows of context {context_id})",
        "look at it with:",
        f"  data-collector export {sqlite_path} --context {context_id}",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()
    return EXIT_FAILED if lost else EXIT_OK


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
        from data_writer.sql_data_writer import read_contexts, read_samples
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
                    format_value(json.dumps(r.metadata, ensure_ascii=False, default=str), 60),
                )
                for r in runs
            ]
            out.write("\n".join(table(["context", "start", "end", "metadata"], rows, right=[0])) + "\n")
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


# -- spool -----------------------------------------------------------------------------------------------
def format_bytes(n: int) -> str:
    """A byte count for people: ``0 B``, ``812 B``, ``1.5 KiB``, ``3.2 GiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


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


# -- plugins / simulator --------------------------------------------------------------------------------
def _cmd_plugins(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    rows = []
    broken = 0
    infos: list[PluginInfo] = [*plugins("reader"), *plugins("writer")]
    for info in infos:
        try:
            cls = reader_class(info.name) if info.kind == "reader" else writer_class(info.name)
            status = f"ok ({cls.__module__}.{cls.__qualname__})"
        except ConfigurationError as exc:
            broken += 1
            status = f"BROKEN: {exc}"
        origin = info.source + (f" ({info.distribution})" if info.distribution else "")
        rows.append((info.kind, info.name, origin, status))
    out.write("\n".join(table(["kind", "type", "from", "status"], rows)) + "\n")
    return EXIT_FAILED if broken else EXIT_OK


def _cmd_simulator(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    options = list(args.args)
    try:
        _check_port_options(options)
    except argparse.ArgumentTypeError as exc:
        err.write(f"error: simulator {args.kind}: {exc}\n")
        return EXIT_CONFIG
    module = "data_reader.modbus.simulator" if args.kind == "modbus" else "data_reader.opcua.simulator"
    try:
        sim: Any = importlib.import_module(module)
    except ImportError as exc:
        err.write(
            f'error: the {args.kind} simulator needs pip install "data-collector[{args.kind}]" ({exc})\n'
        )
        return EXIT_CONFIG
    try:
        result = sim.main(options)
    except DataCollectionError:
        raise  # main() maps it to its exit status
    except (OSError, RuntimeError) as exc:  # e.g. the port is in use
        err.write(f"error: simulator {args.kind} failed to start: {exc}\n")
        return EXIT_STARTUP
    return int(result or 0)


def _check_port_options(options: Sequence[str]) -> None:
    """Check every ``--port N`` / ``--port=N`` (or an abbreviation such as ``--po``) of a simulator's
    options, so a bad port is one line and exit status 2 whatever the simulator does with it."""
    for i, token in enumerate(options):
        if token == "--":
            return
        name, eq, value = token.partition("=")
        if len(name) < 4 or not "--port".startswith(name):
            continue
        if not eq:
            if i + 1 >= len(options):
                return  # the simulator's own parser says that --port needs a value
            value = options[i + 1]
        try:
            _port(value)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"--port: {exc}") from None


# -- entry point -------------------------------------------------------------------------------------
def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``data-collector`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    common.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parser = argparse.ArgumentParser(
        prog="data-collector",
        description="Collect values from industrial equipment as a TOML configuration file says.",
        epilog="Exit status: 0 ok, 1 values lost or read BAD, 2 configuration error, 3 startup error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    spooling = argparse.ArgumentParser(add_help=False)
    group = spooling.add_mutually_exclusive_group()
    group.add_argument(
        "--spool-dir",
        default=None,
        metavar="DIR",
        help="spool to DIR (default: the file's [collector] spool_dir, else <file stem>.spool/ beside "
        "the configuration file)",
    )
    group.add_argument(
        "--no-spool", action="store_true", help="no spool: values not written yet are lost on a crash"
    )

    p = sub.add_parser(
        "run",
        parents=[common, spooling],
        help="collect until the contexts end or Ctrl-C",
        description="Collect until every context ends, or Ctrl-C / SIGTERM. Every value read goes to a "
        "spool on disk first (default: <file stem>.spool/ beside the configuration file, unless its "
        "[collector] spool_dir says otherwise) and leaves it once its writer stored it: after a crash "
        "or with a store that is down, the next run writes it first.",
    )
    p.add_argument("config", help="the TOML configuration file")
    p.add_argument("--duration", type=_positive, default=None, metavar="S", help="stop after S seconds")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "validate", parents=[common, spooling], help="check a configuration without connecting"
    )
    p.add_argument("config", help="the TOML configuration file")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "spool",
        parents=[common],
        help="what a spool holds per writer; put quarantined batches back, or drop it",
        description="List per writer what a spool holds (samples not written yet, bytes, the oldest) "
        "and what it quarantined (batches a writer refused for good, with the reason). Exit status 1 "
        "when batches are quarantined. Change a spool only while no run uses it.",
    )
    p.add_argument("target", metavar="DIR", help="a spool folder, or a configuration file (its spool)")
    action = p.add_mutually_exclusive_group()
    action.add_argument(
        "--retry-quarantine",
        action="store_true",
        help="put every quarantined batch back into its writer's spool: the next run writes it first",
    )
    action.add_argument(
        "--drop", action="store_true", help="delete everything spooled and quarantined (needs --yes)"
    )
    p.add_argument("--yes", action="store_true", help="with --drop: really delete (else it says what)")
    p.set_defaults(func=_cmd_spool)

    p = sub.add_parser("read", parents=[common], help="read every variable once and print a table")
    p.add_argument("config", help="the TOML configuration file")
    p.add_argument(
        "--context", type=_id, action="append", metavar="ID", help="only this context (repeatable)"
    )
    p.add_argument("--timeout", type=_positive, default=30.0, metavar="S", help="give up after S s (30)")
    p.set_defaults(func=_cmd_read)

    p = sub.add_parser("demo", parents=[common], help="simulators -> SQLite and CSV, with live values")
    p.add_argument("--seconds", type=_positive, default=20.0, help="how long to collect (default 20)")
    p.add_argument("--out", default="data-collector-demo", help="output directory (./data-collector-demo)")
    p.add_argument("--modbus-port", type=_port, default=0, help="Modbus simulator port (0: a free one)")
    p.add_argument("--opcua-port", type=_port, default=0, help="OPC UA simulator port (0: a free one)")
    p.add_argument("--no-opcua", action="store_true", help="leave the OPC UA simulator out")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("export", parents=[common], help="samples of a SQL store to CSV or Parquet")
    p.add_argument("source", help="a SQLAlchemy URL, an SQLite file, or a .toml with a sql writer")
    p.add_argument("--context", type=_id, action="append", metavar="ID", help="this context (default all)")
    p.add_argument("--list", action="store_true", help="list the recorded context runs instead")
    p.add_argument("-o", "--output", default=None, help="output file (.csv or .parquet); default stdout")
    p.add_argument("--format", choices=("csv", "parquet"), default=None, help="default: by the file name")
    p.add_argument("--variables", type=_ids, default=None, metavar="ID,ID", help="only these variable ids")
    p.add_argument("--start", default=None, help="from this ISO-8601 time (included; UTC if no offset)")
    p.add_argument("--end", default=None, help="until this ISO-8601 time (excluded)")
    p.add_argument("--table-prefix", default="dc_", help="table prefix of the store (dc_)")
    p.add_argument("--writer", type=int, default=0, help="which sql writer of a .toml (0: the first)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("plugins", parents=[common], help="list reader and writer types")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("simulator", help="run the Modbus or OPC UA simulator (options after the name)")
    p.add_argument("kind", choices=("modbus", "opcua"))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the simulator's options (--help lists them)")
    p.set_defaults(func=_cmd_simulator, verbose=0, quiet=False)
    return parser


def _positive(text: str) -> float:
    """A number of seconds > 0 and at most 100 years (what timers and deadlines can hold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    if value > MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DURATION_S:g} s (100 years), got {text!r}")
    return value


def _id(text: str) -> int:
    """A context or variable id: an int that fits a signed 64-bit integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer id: {text!r}") from None
    if not MIN_ID <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"must fit a signed 64-bit integer, got {text!r}")
    return value


def _ids(text: str) -> list[int]:
    """Comma-separated ids (``1,2,5``)."""
    return [_id(part.strip()) for part in text.split(",") if part.strip()]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (0: a free one), got {text!r}")
    return value


def _version() -> str:
    from . import __version__

    return __version__


def _setup_logging(verbose: int, quiet: bool, err: IO[str]) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = _LogHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _LogHandler)]
    root.addHandler(handler)
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``data-collector`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
    out, err = sys.stdout, sys.stderr
    args = build_parser().parse_args(argv)
    if args.command != "simulator":
        _setup_logging(args.verbose, args.quiet, err)
    func: Callable[[argparse.Namespace, IO[str], IO[str]], int] = args.func
    try:
        return func(args, out, err)
    except ConfigFileError as exc:
        err.write(f"{exc}\n")
        return EXIT_CONFIG
    except ConfigurationError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_CONFIG
    except DataCollectionError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_STARTUP
    except BrokenPipeError:  # e.g. `data-collector export ... | head`
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
