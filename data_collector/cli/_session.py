"""The collecting session of ``run`` and ``demo``: live view, monitor writer, Ctrl-C, spool lock."""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from .._collector import CollectorStats, DataCollector
from .._config import ConfigFileError, Configuration
from .._errors import ConfigurationError, DataCollectionError
from .._model import (
    CollectedVariables,
    DataCollectionContext,
    Quality,
)
from .._writer import DataWriter
from ._common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STARTUP,
    LOCK_NAME,
    MONITOR_NAME,
    REPLAYED_KEY,
    _duration,
    _log,
    _LogHandler,
    _Screen,
    format_bytes,
    format_value,
    table,
)

try:
    import fcntl
except ImportError:  # Windows: spool folders are not locked
    fcntl = None  # type: ignore[assignment]


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
        self.metrics: MetricsServer | None = None  # registers the collector once it is built
        self._history: dict[int, collections.deque[tuple[float, int]]] = {}
        self._last_status: tuple[float, int] | None = None

    def start(self, begin: Callable[[DataCollector], None] | None = None) -> int:
        """Build the collector and start every context (or call ``begin`` with it instead); an
        exit status other than 0 on failure, said on stderr."""
        try:
            self.collector = self.config.collector(
                _log, extra_writers=[self.monitor], spool_dir=self.spool_dir
            )
            if self.metrics is not None:
                self.metrics.expose(self.collector)
            (begin or self.config.start)(self.collector)
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
        progress_s: float = 5.0,
    ) -> str:
        """Wait until a signal, the contexts' end or ``until`` (monotonic); redraw meanwhile (on a
        terminal), else write ``progress()`` every ``progress_s`` seconds."""
        assert self.collector is not None
        _LogHandler.screen = self.screen
        now = time.monotonic()
        next_redraw = now + redraw_s
        next_progress = now + progress_s
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
                    next_progress = now + progress_s
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
                + (f", {rs.suppressed_samples} suppressed (on change)" if rs.suppressed_samples else "")
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

    def status_line(self) -> str:
        """One line for a log (``run`` without a terminal): the contexts by state, samples and
        their rate since the last line, BAD and missed, and per writer what is written, queued,
        lost and spooled."""
        assert self.collector is not None
        stats = self.collector.stats()
        samples, bad, _latest = self.monitor.snapshot()
        now = time.monotonic()
        total = sum(samples.values())
        since, before = self._last_status or (self.started, 0)
        self._last_status = (now, total)
        rate = (total - before) / (now - since) if now - since > 0 else 0.0
        states = collections.Counter(cs.state for cs in stats.contexts.values())
        contexts = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
        missed = sum(rs.missed_samples for rs in stats.readers.values())
        parts = [
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} status after {_duration(now - self.started)}: "
            f"contexts {contexts}; {total} samples ({rate:.1f}/s), {sum(bad.values())} BAD, {missed} missed"
        ]
        for name, ws in stats.writers.items():
            if name == self.monitor.name:
                continue
            text = (
                f"writer {name}: {ws.samples_written} written, queue {ws.queue_depth}, "
                f"{ws.lost_samples} lost, {ws.dropped_samples} dropped"
            )
            if self.spool_dir is not None:
                text += (
                    f", spool {ws.spooled_samples} ({format_bytes(ws.spool_bytes)}), "
                    f"{ws.quarantined_batches} quarantined"
                )
            parts.append(text)
        return "; ".join(parts)

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
        lines, problems, _losses = self.report(reason)
        if not problems:
            return lines, EXIT_OK
        lines.append(f"exit status {EXIT_FAILED}: samples {', '.join(problems)}")
        return lines, EXIT_FAILED

    def report(self, reason: str) -> tuple[list[str], list[str], int]:
        """Final lines, the problems (``"3 BAD"``, ``"120 lost"``...; none when everything read
        was GOOD and written) and how many samples collection itself lost (lost, dropped,
        unwritten: read but not in the store)."""
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
                    + (f", {rs.suppressed_samples} suppressed (on change)" if rs.suppressed_samples else "")
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
        return lines, problems, lost + dropped + unwritten


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


def lock_spool(spool_dir: Path | None, err: IO[str]) -> tuple[SpoolLock | None, int]:
    """Take the lock of ``spool_dir`` (none without a spool): ``(lock, EXIT_OK)``, or ``(None,
    status)`` with the reason said on ``err`` when the folder is unusable or another run holds it."""
    if spool_dir is None:
        return None, EXIT_OK
    lock = SpoolLock(spool_dir)
    try:
        acquired = lock.acquire()
    except OSError as exc:
        err.write(f"error: spool folder {spool_dir}: {exc.strerror or exc}\n")
        return None, EXIT_CONFIG
    if not acquired:
        err.write(
            f"error: the spool {spool_dir} is in use by another data-collector (pid {lock.holder()}): "
            "give this run a spool of its own (--spool-dir DIR) or none (--no-spool)\n"
        )
        return None, EXIT_STARTUP
    return lock, EXIT_OK


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


class MetricsServer:
    """``--metrics-port``: a Prometheus endpoint (``/metrics``) over a registry of its own.

    Started before the collector is built, so a port in use fails the command before a device
    is opened; :meth:`expose` adds the collector (its ``stats()``, read at each scrape, without
    the command's monitor writer); :meth:`close` stops serving (the command's last step, so a
    scrape during the final drain still answers).
    """

    def __init__(self, port: int, addr: str) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise ConfigurationError(
                '--metrics-port needs prometheus-client: pip install "data-collector[metrics]"'
            ) from None
        self.registry = CollectorRegistry()
        try:
            self._server, self._thread = start_http_server(port, addr, registry=self.registry)
        except OSError as exc:
            raise DataCollectionError(
                f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}"
            ) from None
        host = addr if ":" not in addr else f"[{addr}]"
        self.url = f"http://{host}:{self._server.server_port}/metrics"

    def expose(self, collector: DataCollector) -> None:
        from ..metrics import CollectorMetrics

        CollectorMetrics(collector, exclude_writers=[MONITOR_NAME]).register(self.registry)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


def metrics_server(args: argparse.Namespace) -> MetricsServer | None:
    """The metrics endpoint ``--metrics-port``/``--metrics-addr`` ask for (None: not asked)."""
    if args.metrics_port is None:
        return None
    return MetricsServer(args.metrics_port, args.metrics_addr)
