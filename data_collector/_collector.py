"""The collector: contexts, their schedule, reader and writer tasks, listeners and the calendar."""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import math
import os
import platform
import socket
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

from apscheduler.schedulers.background import BackgroundScheduler

from ._errors import (
    CollectorClosedError,
    ConfigurationError,
    ConflictingVariableError,
    ContextAlreadyStartedError,
    ContextStateError,
    DataCollectionError,
    ReaderError,
    UnknownContextError,
    WriterError,
)
from ._listener import DataCollectionListener
from ._live import MAX_LATEST, CollectionEvent, LiveData, Subscription
from ._model import (
    BUILTIN_VALUE_TYPES,
    MAX_DURATION_S,
    MAX_INTERVAL_MS,
    CollectedVariable,
    CollectedVariables,
    DataCollectionContext,
    Variable,
    json_metadata,
)
from ._onchange import on_change_metadata
from ._reader import DataReader
from ._schedule import ReaderPlan
from ._spool import Spool, spool_folder_name
from ._tasks import Clock, ReaderTask, SystemClock, WriterTask
from ._writer import DataWriter

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["CollectorStats", "ContextStats", "DataCollector", "ReaderStats", "Run", "WriterStats"]

ContextState = Literal["scheduled", "starting", "running", "paused", "stopping"]


@dataclass(frozen=True, slots=True)
class ReaderStats:
    """How one reader type is doing. Lateness is over the last 10,000 ticks, in microseconds."""

    reader_type: str
    tick_ms: int
    variables: int
    ticks: int
    reads: int
    samples: int
    bad_samples: int
    missed_ticks: int
    missed_samples: int
    read_errors: int
    last_read_ms: float
    max_read_ms: float
    lateness_p50_us: int
    lateness_p99_us: int
    lateness_max_us: int
    #: samples read that a context's on-change filter did not record (see ``_onchange``): never
    #: delivered to a writer, so neither lost nor dropped; every BAD sample is recorded
    suppressed_samples: int = 0


@dataclass(frozen=True, slots=True)
class WriterStats:
    """How one writer is doing. ``queue_depth`` counts samples not yet written."""

    name: str
    queue_depth: int
    max_queue_depth: int
    batches: int
    samples_delivered: int
    samples_written: int
    write_errors: int
    retried_ok: int
    lost_batches: int
    lost_samples: int
    dropped_batches: int
    dropped_samples: int
    unwritten_samples: int
    replayed_samples: int = 0
    spooled_samples: int = 0
    spool_bytes: int = 0
    oldest_spooled_s: float = 0.0
    quarantined_batches: int = 0
    #: samples the writer took but has not confirmed by a ``flush()`` yet (in ``queue_depth``;
    #: only writers with ``flush_interval_s``, whose ``samples_written`` count flushed samples)
    unflushed_samples: int = 0
    flushes: int = 0


@dataclass(frozen=True, slots=True)
class ContextStats:
    """One started context: its state, samples delivered so far and its time frame.

    ``suppressed_samples``: samples read for it that its on-change recording did not record
    (``samples`` + ``suppressed_samples`` = every sample read or missed for it).
    """

    id: int
    state: ContextState
    samples: int
    start_date: datetime | None
    ends_at: datetime | None
    suppressed_samples: int = 0


@dataclass(frozen=True, slots=True)
class CollectorStats:
    """A snapshot of :meth:`DataCollector.stats`."""

    readers: Mapping[str, ReaderStats]
    writers: Mapping[str, WriterStats]
    contexts: Mapping[int, ContextStats]


class _Ctx:
    """The collector's record of one started (or scheduled) context."""

    __slots__ = (
        "accepting",
        "context",
        "ends_at",
        "extra",
        "job_id",
        "reader_types",
        "samples",
        "since_ms",
        "state",
        "suppressed",
        "tap",
    )

    def __init__(self, context: DataCollectionContext, reader_types: frozenset[str]) -> None:
        self.context = context
        self.state: ContextState = "scheduled"
        self.samples = 0
        self.suppressed = 0  # samples its on-change recording did not record
        self.ends_at: datetime | None = None
        self.job_id: str | None = None
        self.reader_types = reader_types
        self.accepting = False  # whether values read for it are delivered
        self.since_ms = 0  # wall-clock ms from which it wants samples (start or resume)
        self.extra: dict[str, Any] = {}  # deduced metadata a caller adds (capture: the procedure)
        #: called with every batch delivered to the context, in the reader's thread (a scan counts
        #: its samples); must be quick and never block
        self.tap: Callable[[CollectedVariables], None] | None = None


_Install = tuple[ReaderTask, ReaderPlan | None, int]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _check_seconds(name: str, value: object, *, positive: bool = False) -> float:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if isinstance(number, int) and abs(number) > 10**15:
        number = math.inf
    if not math.isfinite(number) or number < 0 or (positive and number == 0) or number > _MAX_SECONDS:
        bound = "> 0" if positive else ">= 0"
        raise ConfigurationError(
            f"{name} must be a number {bound} (seconds, finite, at most {_MAX_SECONDS:g}), got {value!r}"
        )
    return float(number)


_MAX_SECONDS = 7 * 86400.0  # a week: longer timeouts or backoffs are a mistake, not a wish
_CLOSE_GRACE_S = 0.5  # the small constant stop()/close() may take beyond drain_timeout_s


def _call_bounded(calls: list[tuple[str, Callable[[], None]]], timeout: float, log: logging.Logger) -> None:
    """Run each call in a thread of its own; wait for all of them at most ``timeout`` seconds."""
    threads = []
    for what, call in calls:

        def run(what: str = what, call: Callable[[], None] = call) -> None:
            try:
                call()
            except Exception:
                log.exception("%s failed", what)

        t = threading.Thread(target=run, name=f"dc-close-{what}", daemon=True)
        t.start()
        threads.append((what, t))
    deadline = time.monotonic() + timeout
    for what, t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            log.error("%s did not return within %.1f s; the collector goes on without it", what, timeout)


class DataCollector:
    """Runs collection contexts: reads their variables on time and hands the values to writers.

    ``DataCollector(logger, readers, writers, listeners=())``; use as a context manager or call
    :meth:`close`. Per reader type one thread sleeps to the next wall-clock boundary at which a
    variable is due (boundaries are multiples of the variable's effective interval) and reads
    everything due then in one ``read()``; each value is delivered to every context it is due
    for. No silent gaps: a boundary that passes without its own read (the reader was busy or its
    previous read still ran) gives that context one BAD sample per variable, stamped at the
    boundary, with the reason.

    On-change recording: a variable with ``deadband``, ``deadband_percent`` or ``max_age_s`` (its
    own, else its context's) is recorded by that context only when its value moved beyond the
    deadband since the last recorded one, its quality or error changed, or ``max_age_s`` passed
    (heartbeat); every BAD sample is recorded. The rest is *suppressed* after the read, per
    context (so two contexts may record one read differently), counted in ``stats()``
    (``suppressed_samples`` per reader and per context) and handed to no writer, spool or event;
    a suppressed sample is not a gap: the last recorded value still holds, no older than the
    heartbeat. :meth:`latest` shows every value read, before any context's filter. See
    :mod:`data_collector._onchange`.

    Per writer one thread writes from a bounded queue (``max_queue_samples``), one lane per
    context, handing the writer up to ``max_write_samples`` queued samples of a context at once
    when it is behind. A write that fails with a transient error (see
    :meth:`DataWriter.is_transient`) is retried, same batch, same order, with backoff doubling up
    to ``write_retry_s`` seconds, for as long as it takes; other contexts go on meanwhile. A
    permanent error counts the batch as lost at once. :meth:`stop` and :meth:`close` return once
    every value read reached the writers, or after ``drain_timeout_s`` (plus a fraction of a
    second) whatever a reader or writer does: what is then left is counted as unwritten.

    Store-and-forward: with ``spool_dir``, every batch (and every context start and stop) is
    appended to its writer's spool on disk (synced at least every ``spool_sync_s``) before the
    writer gets it, and leaves the spool only after ``write()`` returned. The spool is bounded by
    ``spool_max_bytes`` per writer (the oldest data is then dropped, counted, loudly). A
    collector started on a spool that holds data (after a crash, or a close during an outage)
    writes it first, in order; runs that had not ended are closed as ended abnormally. A writer
    whose ``open()`` fails with a transient error is retried in the background while data spools;
    batches that fail for good go to the spool's ``quarantine/`` folder. Writers need distinct
    names with a spool (their folders).

    Metrics: with ``metrics=registry`` (a ``prometheus_client.CollectorRegistry``, extra
    ``metrics``), :meth:`stats` is exposed in that registry, read at scrape time, until
    :meth:`close` (see :mod:`data_collector.metrics`); serving it over HTTP is up to the caller.

    All methods are thread-safe and never hold the collector's lock while user code (listeners,
    reader and writer hooks) runs, so such code may call back into the collector. Bad input
    raises a :class:`DataCollectionError` at the call that received it and changes nothing.
    """

    def __init__(
        self,
        logger: logging.Logger,
        readers: Iterable[DataReader],
        writers: Iterable[DataWriter],
        listeners: Iterable[DataCollectionListener] = (),
        *,
        max_queue_samples: int = 5_000_000,
        max_write_samples: int = 100_000,
        write_retry_s: float = 5.0,
        drain_timeout_s: float = 60.0,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_sync_s: float = 1.0,
        spool_max_bytes: int = 1 << 30,
        latest_n: int = 0,
        clock: Clock | None = None,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        if not isinstance(logger, logging.Logger | logging.LoggerAdapter):
            raise ConfigurationError(f"logger must be a logging.Logger, got {logger!r}")
        self._log: logging.Logger = logger
        self._readers: dict[str, DataReader] = {}
        for reader in _as_list(readers, "readers"):
            if not isinstance(reader, DataReader):
                raise ConfigurationError(f"readers must be DataReader instances, got {reader!r}")
            rt = reader.reader_type
            if not isinstance(rt, str) or not rt.strip():
                raise ConfigurationError(f"{type(reader).__name__} has no reader_type (got {rt!r})")
            mi = reader.min_interval_ms
            if mi is not None and (
                isinstance(mi, bool) or not isinstance(mi, int) or not 0 < mi <= MAX_INTERVAL_MS
            ):
                raise ConfigurationError(
                    f"{reader!r}: min_interval_ms must be None or an int > 0 (at most {MAX_INTERVAL_MS}), "
                    f"got {mi!r}"
                )
            vts = reader.value_types
            if not isinstance(vts, frozenset | set) or not all(isinstance(t, str) for t in vts):
                raise ConfigurationError(f"{reader!r}: value_types must be a frozenset of str, got {vts!r}")
            if rt in self._readers:
                raise ConfigurationError(
                    f"two readers have reader_type {rt!r}: {self._readers[rt]!r} and {reader!r}"
                )
            self._readers[rt] = reader
        self._writers: list[DataWriter] = []
        for writer in _as_list(writers, "writers"):
            if not isinstance(writer, DataWriter):
                raise ConfigurationError(f"writers must be DataWriter instances, got {writer!r}")
            if any(w is writer for w in self._writers):
                raise ConfigurationError(f"writer {writer!r} is given twice")
            _flush_interval(writer)
            self._writers.append(writer)
        self._listeners: list[DataCollectionListener] = []
        for listener in _as_list(listeners, "listeners"):
            self._check_listener(listener)
            self._listeners.append(listener)
        self._write_retry_s = _check_seconds("write_retry_s", write_retry_s, positive=True)
        self._drain_timeout_s = _check_seconds("drain_timeout_s", drain_timeout_s)
        for name, count in (
            ("max_queue_samples", max_queue_samples),
            ("max_write_samples", max_write_samples),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= 10**12:
                raise ConfigurationError(f"{name} must be an int from 1 to 10**12, got {count!r}")
        self._max_queue_samples = max_queue_samples
        self._max_write_samples = max_write_samples
        self._spool_dir: Path | None = None
        if spool_dir is not None:
            if not isinstance(spool_dir, str | os.PathLike) or not str(spool_dir).strip():
                raise ConfigurationError(f"spool_dir must be a folder path, got {spool_dir!r}")
            self._spool_dir = Path(spool_dir)
            try:
                self._spool_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(f"spool_dir {str(spool_dir)!r} cannot be created: {exc}") from exc
            if not os.access(self._spool_dir, os.W_OK | os.X_OK):
                raise ConfigurationError(f"spool_dir {str(spool_dir)!r} is not writable")
            names: dict[str, DataWriter] = {}
            for writer in self._writers:
                if not writer.spooled:
                    continue
                name = writer.name
                if not isinstance(name, str) or not name.strip():
                    raise ConfigurationError(f"writer {writer!r} has no name; a spool needs one per writer")
                if name in names:
                    raise ConfigurationError(
                        f"two writers are named {name!r} ({names[name]!r} and {writer!r}); with a spool each "
                        "writer needs a name of its own (its spool folder): give one a name=..."
                    )
                names[name] = writer
        self._spool_sync_s = _check_seconds("spool_sync_s", spool_sync_s, positive=True)
        if (
            isinstance(spool_max_bytes, bool)
            or not isinstance(spool_max_bytes, int)
            or not 1 << 20 <= spool_max_bytes <= 1 << 50
        ):
            raise ConfigurationError(
                f"spool_max_bytes must be an int from 1 MiB to 1 PiB, got {spool_max_bytes!r}"
            )
        self._spool_max_bytes = spool_max_bytes
        if isinstance(latest_n, bool) or not isinstance(latest_n, int) or not 0 <= latest_n <= MAX_LATEST:
            raise ConfigurationError(
                f"latest_n must be an int from 0 (off) to {MAX_LATEST}, got {latest_n!r}"
            )
        self._live = LiveData(latest_n, logger)
        self._clock: Clock = clock if clock is not None else SystemClock()

        self._lock = threading.RLock()  # guards the state below; never held while user code runs
        self._open_lock = threading.Lock()  # serialises opening readers and writers (user code)
        self._listener_lock = threading.Lock()
        self._ctx: dict[int, _Ctx] = {}  # insertion order = start order
        self._starting: dict[int, _Ctx] = {}  # ids reserved by a start() in progress
        self._reader_tasks: dict[str, ReaderTask] = {}
        self._opened_readers: set[str] = set()
        self._writer_tasks: list[WriterTask] | None = None
        self._closed = False
        self._closing = False
        self._scheduler: BackgroundScheduler | None = None
        self._plan_seq = 0
        # last: a scrape may come at once and reads the state above
        self._metrics: tuple[CollectorRegistry, Any] | None = None  # (registry, CollectorMetrics of self)
        if metrics is not None:
            try:
                try:
                    from .metrics import CollectorMetrics  # prometheus-client: only when asked for
                except ImportError as exc:
                    raise ConfigurationError(f"metrics=: {exc}") from exc
                self._metrics = (metrics, CollectorMetrics(self).register(metrics))
            except BaseException:
                self._live.close()  # its thread (latest_n) must not outlive a failed constructor
                raise

    # -- public API ---------------------------------------------------------------------------
    @property
    def readers(self) -> Mapping[str, DataReader]:
        """The readers by reader type."""
        return types.MappingProxyType(self._readers)

    @property
    def writers(self) -> tuple[DataWriter, ...]:
        return tuple(self._writers)

    @property
    def closed(self) -> bool:
        return self._closed

    def add_listener(self, listener: DataCollectionListener) -> None:
        """Add a listener; it hears every event from now on."""
        self._check_open()
        self._check_listener(listener)
        with self._listener_lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: DataCollectionListener) -> None:
        """Remove a listener added before (no error if it is not there)."""
        with self._listener_lock:
            self._listeners = [x for x in self._listeners if x is not listener]

    def contexts(self) -> dict[int, DataCollectionContext]:
        """The started and scheduled contexts by id (never blocks: safe from readers and writers).

        A stopped context leaves this mapping only after its ``after_stop`` listeners ran.
        """
        return {cid: c.context for cid, c in list(self._ctx.items())}

    def state(self, context_id: int) -> ContextState:
        """``"scheduled"``, ``"running"``, ``"paused"`` (or ``"stopping"`` during :meth:`stop`).

        :class:`UnknownContextError` when no context has this id. Never blocks.
        """
        return self._get(context_id).state

    def start(self, context: DataCollectionContext, *, at: datetime | None = None) -> None:
        """Start collecting ``context`` now, or at ``at`` (an aware datetime) if it is in the future.

        Everything is validated here, before anything starts: the reader types and value types
        of the variables, their intervals against the effective minimum (the reader's
        ``min_interval_ms`` if set, else the context's), each reader's own address check, and
        the definitions of variable ids shared with running contexts.
        """
        self._start(context, at=at)

    def _start(
        self,
        context: DataCollectionContext,
        *,
        at: datetime | None = None,
        extra: dict[str, Any] | None = None,
        tap: Callable[[CollectedVariables], None] | None = None,
    ) -> None:
        self._check_open()
        if not isinstance(context, DataCollectionContext):
            raise ConfigurationError(f"start() needs a DataCollectionContext, got {context!r}")
        if at is not None and (not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None):
            raise ConfigurationError(f"at must be a timezone-aware datetime, got {at!r}")
        reader_types = self._validate_variables(context)
        record = _Ctx(context, reader_types)
        record.extra.update(extra or {})
        record.tap = tap
        with self._lock:
            self._check_open()
            self._check_free(context.id)
            self._check_conflicts(context, self._others(context.id))
            if at is not None and at > _utcnow():
                self._ensure_scheduler()
                assert self._scheduler is not None
                record.job_id = f"dc-start-{context.id}-{id(record)}"
                self._ctx[context.id] = record
                self._scheduler.add_job(
                    self._delayed_start,
                    "date",
                    run_date=at,
                    args=(record,),
                    id=record.job_id,
                    misfire_grace_time=None,
                    coalesce=True,
                )
                self._log.info("context %d scheduled to start at %s", context.id, at.isoformat())
                return
            record.state = "starting"
            self._starting[context.id] = record
        self._start_now(record)

    def open(self) -> None:
        """Open the writers (and replay what their spools hold) now, before any context starts.

        :meth:`start` does it by itself; call it to have a spool from an earlier run written at
        once (e.g. before a delayed start). Idempotent.
        """
        self._open_resources(())

    def pause(self, context_id: int) -> None:
        """Pause a running context: it is not read for and gets no values until resumed."""
        with self._lock:
            self._check_open()
            record = self._get(context_id)
            if record.state != "running":
                raise ContextStateError(f"context {context_id} is {record.state}, not running: cannot pause")
        self._notify("before_pause", record.context)
        with self._lock:
            if self._ctx.get(context_id) is not record or record.state != "running" or self._closing:
                return  # changed meanwhile (a listener or another thread)
            record.state = "paused"
            installs = self._replan(record.reader_types)
        tasks = self._install(installs)
        if not self._barrier(tasks, time.monotonic() + self._drain_timeout_s):
            self._log.error(
                "context %d: a reader was still busy after %.1f s; values of its current read are "
                "not delivered to the paused context",
                context_id,
                self._drain_timeout_s,
            )
        with self._lock:
            if record.state == "paused":
                record.accepting = False
        self._log.info("context %d paused", context_id)
        self._notify("after_pause", record.context)

    def resume(self, context_id: int) -> None:
        """Resume a paused context."""
        with self._lock:
            self._check_open()
            record = self._get(context_id)
            if record.state != "paused":
                raise ContextStateError(f"context {context_id} is {record.state}, not paused: cannot resume")
            self._check_conflicts(record.context, self._others(context_id))
        self._notify("before_resume", record.context)
        with self._lock:
            if self._ctx.get(context_id) is not record or record.state != "paused" or self._closing:
                return  # changed meanwhile (a listener or another thread)
            record.state = "running"
            record.accepting = True
            record.since_ms = self._clock.time_ns() // 1_000_000
            installs = self._replan(record.reader_types)
        self._install(installs)
        self._log.info("context %d resumed", context_id)
        self._notify("after_resume", record.context)

    def stop(self, context_id: int) -> None:
        """Stop a context (or cancel a scheduled one).

        Returns once every value read for it was handed to the writers and their
        ``context_stopped`` hooks ran, or after ``drain_timeout_s`` (what is left keeps being
        written in the background, and counts as unwritten if :meth:`close` comes first);
        ``end_date`` is set. Stopping a context that is already stopping returns at once.
        """
        with self._lock:
            self._check_open()
            record = self._get(context_id)
        self._stop(record, time.monotonic() + self._drain_timeout_s)

    def close(self) -> None:
        """Stop every context, drain and close writers, close readers, end every thread.

        Idempotent. Listeners hear ``before_close`` first and ``after_close`` last. Returns
        within ``drain_timeout_s`` plus a fraction of a second whatever a reader or writer does;
        after it returned, no reader or writer method is called again, and samples that did not
        reach their writer by then are counted as unwritten (``WriterStats.unwritten_samples``).
        """
        with self._lock:
            if self._closed or self._closing:
                return
            self._closing = True
            deadline = time.monotonic() + self._drain_timeout_s
        try:
            self._notify("before_close")
            with self._lock:
                records = list(self._ctx.values())
            for record in records:
                try:
                    self._stop(record, deadline, closing=True)
                except Exception:
                    self._log.exception("stopping context %d during close failed", record.context.id)
            if self._scheduler is not None:
                self._scheduler.shutdown(wait=False)
            with self._lock:
                reader_tasks = list(self._reader_tasks.values())
                writer_tasks = list(self._writer_tasks or ())
                opened = sorted(self._opened_readers)
            for task in reader_tasks:
                task.shutdown(timeout=max(0.2, deadline - time.monotonic()))
                if task.is_alive():
                    self._log.error(
                        "reader %r still busy after %.1f s; closing it anyway",
                        task.reader_type,
                        self._drain_timeout_s,
                    )
            for wtask in writer_tasks:
                if not wtask.shutdown(timeout=max(_CLOSE_GRACE_S, deadline - time.monotonic())):
                    self._log.error(
                        "writer %s did not finish within %.1f s: %d samples are UNWRITTEN, and the writer "
                        "is not called again (not even close())",
                        wtask.name,
                        self._drain_timeout_s,
                        wtask.counters.unwritten_samples,
                    )
            _call_bounded(
                [(f"closing reader {rt!r}", self._readers[rt].close) for rt in opened],
                _CLOSE_GRACE_S,
                self._log,
            )
        finally:
            with self._lock:
                self._closed = True
                self._closing = False
        self._live.close()
        if self._metrics is not None:
            registry, own = self._metrics
            with contextlib.suppress(KeyError):  # the user unregistered it already
                registry.unregister(own)
        self._log.info("collector closed")
        self._notify("after_close")

    # -- experiment capture ------------------------------------------------------------------------
    @contextlib.contextmanager
    def capture(
        self, context: DataCollectionContext, *, metadata: Mapping[str, Any] | None = None
    ) -> Iterator[Run]:
        """Collect ``context`` exactly while the ``with`` block runs.

        ``with collector.capture(context, metadata={"operator": "ana"}) as run: ...`` starts the
        context on entry and stops it on exit, normal or by an exception (which propagates); the
        block's outcome goes into the deduced metadata (``ended``: ``"completed"`` or
        ``"exception"``, with ``exception``: type and message). It returns once every value read
        during the block reached the writers (or ``drain_timeout_s`` passed). ``metadata`` is
        added to the context's user metadata (a key it already has with another value is a
        :class:`ConfigurationError`).
        """
        with self._capture(context, metadata, {}) as run:
            yield run

    def run_procedure(
        self,
        procedure: Callable[..., _T],
        context: DataCollectionContext,
        *args: Any,
        metadata: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> _T:
        """Call ``procedure(*args, **kwargs)`` and collect ``context`` exactly while it runs.

        Returns what the procedure returns (an exception propagates, recorded in the run's
        metadata). The procedure's qualified name, module and arguments (``repr``, each cut at
        200 characters) go into the deduced metadata under ``procedure``.
        """
        if not callable(procedure):
            raise ConfigurationError(f"run_procedure() needs a callable, got {procedure!r}")
        extra = {
            "procedure": {
                "name": getattr(procedure, "__qualname__", None) or type(procedure).__qualname__,
                "module": getattr(procedure, "__module__", None) or type(procedure).__module__,
                "args": [_short_repr(a) for a in args],
                "kwargs": {str(k): _short_repr(v) for k, v in kwargs.items()},
            }
        }
        with self._capture(context, metadata, extra):
            return procedure(*args, **kwargs)

    @contextlib.contextmanager
    def _capture(
        self, context: DataCollectionContext, metadata: Mapping[str, Any] | None, extra: dict[str, Any]
    ) -> Iterator[Run]:
        self._begin_capture(context, metadata, extra)
        run = Run(context)
        try:
            yield run
        except BaseException as exc:
            run.error = exc
            exception = {"type": type(exc).__name__, "message": _short(str(exc))}
            self._finish(context, "exception", {"exception": exception})
            raise
        else:
            self._finish(context, "completed")

    def _begin_capture(
        self,
        context: DataCollectionContext,
        metadata: Mapping[str, Any] | None,
        extra: dict[str, Any],
        tap: Callable[[CollectedVariables], None] | None = None,
    ) -> None:
        """Start ``context`` for a capture: ``metadata`` added to its user metadata, ``extra`` to
        the deduced metadata (the CLI's ``capture`` command: the child process); ``tap`` sees
        every batch delivered to it (a scan counting its samples)."""
        if not isinstance(context, DataCollectionContext):
            raise ConfigurationError(f"capture() needs a DataCollectionContext, got {context!r}")
        if metadata is not None:
            self._add_metadata(context, metadata)
        self._start(context, extra=extra, tap=tap)

    def _add_metadata(self, context: DataCollectionContext, metadata: Mapping[str, Any]) -> None:
        """Add ``metadata`` to the user metadata of a context that is not running (a key it
        already has with another value is a :class:`ConfigurationError`; nothing is changed then)."""
        added = json_metadata(metadata, "capture metadata")
        if not isinstance(added, dict):
            raise ConfigurationError(f"capture metadata must be a mapping, got {metadata!r}")
        clash = [k for k, v in added.items() if k in context.metadata and context.metadata[k] != v]
        if clash:
            raise ConfigurationError(
                f"capture metadata key {clash[0]!r} is already in the metadata of context {context.id} "
                "with another value"
            )
        if context.start_date is None or context.id not in self._ctx:
            context._metadata = types.MappingProxyType({**context.metadata, **added})

    def _prepare(self, contexts: Sequence[DataCollectionContext]) -> None:
        """Check ``contexts`` as :meth:`start` would and open the writers and the readers they
        need, so that starting them right after begins reading at once (the CLI's ``capture``
        starts them when its child process has started)."""
        reader_types: set[str] = set()
        for i, context in enumerate(contexts):
            self.check(context, *contexts[:i])
            reader_types |= self._validate_variables(context)
        self._open_resources(reader_types)

    def _finish(self, context: DataCollectionContext, ended: str, more: dict[str, Any] | None = None) -> None:
        """Stop a captured context; ``ended`` and ``more`` complete its deduced metadata."""
        with self._lock:
            record = self._ctx.get(context.id)
            if record is None or record.context is not context or self._closed:
                return  # stopped meanwhile (duration, close, another thread)
            if more:
                record.extra.update(more)
                context._deduced = types.MappingProxyType({**context._deduced, **more})
        self._stop(record, time.monotonic() + self._drain_timeout_s, ended=ended)

    # -- live data ---------------------------------------------------------------------------------
    def latest(self, variable_id: int, n: int | None = None) -> list[CollectedVariable]:
        """The last ``n`` (default and at most ``latest_n``) samples read of a variable, oldest first.

        Needs ``DataCollector(..., latest_n=N)``; kept per variable id whichever contexts read it.
        These are the samples *read*, before on-change recording: a value that a context does not
        record (within its deadband) is still shown here, as the freshest value known.
        """
        size = self._live.latest_n
        if size == 0:
            raise ConfigurationError("latest() needs the collector built with latest_n=N (N > 0)")
        if n is None:
            n = size
        if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= size:
            raise ConfigurationError(f"n must be an int from 1 to latest_n={size}, got {n!r}")
        if isinstance(variable_id, bool) or not isinstance(variable_id, int):
            raise ConfigurationError(f"variable_id must be an int, got {variable_id!r}")
        self._live.flush()
        return self._live.latest(variable_id, n)

    def subscribe(
        self, callback: Callable[[CollectionEvent], None] | None = None, *, max_events: int = 10_000
    ) -> Subscription:
        """Receive events (run started, batch written, run stopped) from now on.

        With ``callback``, it is called from a thread of the subscription's own; without, iterate
        the subscription or call its ``get(timeout)``. At most ``max_events`` wait; more are
        dropped and counted (``subscription.dropped``). ``close()`` the subscription when done.
        """
        if callback is not None and not callable(callback):
            raise ConfigurationError(f"callback must be callable, got {callback!r}")
        if isinstance(max_events, bool) or not isinstance(max_events, int) or not 0 < max_events <= 10**7:
            raise ConfigurationError(f"max_events must be an int from 1 to 10**7, got {max_events!r}")
        self._check_open()
        return self._live.subscribe(callback, max_events)

    def events(self, timeout: float | None = None) -> Iterator[CollectionEvent]:
        """Iterate events as they happen; ends when none came for ``timeout`` s (or at close)."""
        if timeout is not None:
            timeout = _check_seconds("timeout", timeout)
        sub = self.subscribe()
        try:
            while True:
                event = sub.get(timeout)
                if event is None:
                    return
                yield event
        finally:
            sub.close()

    def stats(self) -> CollectorStats:
        """Counters per reader type, per writer and per context (a consistent-enough snapshot)."""
        readers = {}
        for rt, task in list(self._reader_tasks.items()):
            c = task.counters
            plan = task.plan
            _, p50, p99, mx = task.lateness_us()
            readers[rt] = ReaderStats(
                reader_type=rt,
                tick_ms=plan.tick_ms if plan is not None else 0,
                variables=len(plan.variables) if plan is not None else 0,
                ticks=c.ticks,
                reads=c.reads,
                samples=c.samples,
                bad_samples=c.bad_samples,
                missed_ticks=c.missed_ticks,
                missed_samples=c.missed_samples,
                read_errors=c.read_errors,
                last_read_ms=c.last_read_ms,
                max_read_ms=c.max_read_ms,
                lateness_p50_us=p50,
                lateness_p99_us=p99,
                lateness_max_us=mx,
                suppressed_samples=c.suppressed_samples,
            )
        writers = {}
        for wtask in self._writer_tasks or ():
            w = wtask.counters
            spool = wtask.spool
            writers[wtask.name] = WriterStats(
                name=wtask.name,
                queue_depth=wtask.queue_depth,
                max_queue_depth=w.max_queue_depth,
                batches=w.batches,
                samples_delivered=w.samples_delivered,
                samples_written=w.samples_written,
                write_errors=w.write_errors,
                retried_ok=w.retried_ok,
                lost_batches=w.lost_batches,
                lost_samples=w.lost_samples,
                dropped_batches=w.dropped_batches,
                dropped_samples=w.dropped_samples,
                unwritten_samples=w.unwritten_samples,
                replayed_samples=w.replayed_samples,
                spooled_samples=spool.samples if spool is not None else 0,
                spool_bytes=spool.bytes if spool is not None else 0,
                oldest_spooled_s=spool.oldest_age_s() if spool is not None else 0.0,
                quarantined_batches=spool.quarantined_batches if spool is not None else 0,
                unflushed_samples=wtask.unflushed_samples,
                flushes=w.flushes,
            )
        contexts = {
            cid: ContextStats(cid, r.state, r.samples, r.context.start_date, r.ends_at, r.suppressed)
            for cid, r in list(self._ctx.items())
        }
        return CollectorStats(
            types.MappingProxyType(readers), types.MappingProxyType(writers), types.MappingProxyType(contexts)
        )

    def __enter__(self) -> DataCollector:
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._ctx)} contexts"
        return f"DataCollector(readers={list(self._readers)}, writers={len(self._writers)}, {state})"

    def check(self, context: DataCollectionContext, *others: DataCollectionContext) -> None:
        """Validate ``context`` exactly as :meth:`start` would, without starting anything.

        ``others`` are contexts meant to run beside it (besides the started ones), checked for
        conflicting variable definitions.
        """
        if not isinstance(context, DataCollectionContext):
            raise ConfigurationError(f"check() needs a DataCollectionContext, got {context!r}")
        self._validate_variables(context)
        with self._lock:
            started = self._others(None)
        self._check_conflicts(context, [*started, *others])

    # -- internals ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise CollectorClosedError("the collector is closed")

    def _check_free(self, context_id: int) -> None:  # under self._lock
        record = self._ctx.get(context_id) or self._starting.get(context_id)
        if record is not None:
            raise ContextAlreadyStartedError(f"context {context_id} is already {record.state}")

    def _others(self, ignore: int | None) -> list[DataCollectionContext]:  # under self._lock
        records = [*self._ctx.values(), *self._starting.values()]
        return [r.context for r in records if r.context.id != ignore]

    @staticmethod
    def _check_listener(listener: object) -> None:
        if not isinstance(listener, DataCollectionListener):
            raise ConfigurationError(f"listeners must be DataCollectionListener instances, got {listener!r}")

    def _get(self, context_id: int) -> _Ctx:
        record = self._ctx.get(context_id) if isinstance(context_id, int) else None
        if record is None:
            raise UnknownContextError(f"no started context has id {context_id!r}")
        return record

    def _check_conflicts(
        self, context: DataCollectionContext, others: Iterable[DataCollectionContext]
    ) -> None:
        """Variables of ``context`` whose id another context defines differently are refused."""
        running: dict[int, tuple[Variable, int]] = {}
        for other in others:
            for v in other.variables:
                running.setdefault(v.id, (v, other.id))
        for v in context.variables:
            seen = running.get(v.id)
            if seen is not None and not seen[0].same_definition(v):
                raise ConflictingVariableError(
                    f"context {context.id}: variable {v.id} is {_describe(v)} but context {seen[1]} defines "
                    f"it as {_describe(seen[0])}",
                    context_id=context.id,
                    variable_id=v.id,
                    field="id",
                )

    def _validate_variables(self, context: DataCollectionContext) -> frozenset[str]:
        """Check the variables of ``context`` against the readers; return its reader types."""
        where = f"context {context.id}"
        reader_types = set()
        for v in context.variables:

            def fail(message: str, field: str, vid: int = v.id) -> NoReturn:
                raise ConfigurationError(message, context_id=context.id, variable_id=vid, field=field)

            reader = self._readers.get(v.reader_type)
            if reader is None:
                fail(
                    f"{where}: variable {v.id} ({v.address!r}) names unknown reader_type {v.reader_type!r}; "
                    f"known: {sorted(self._readers)}",
                    "reader_type",
                )
            if v.value_type not in BUILTIN_VALUE_TYPES and v.value_type not in reader.value_types:
                known = sorted(BUILTIN_VALUE_TYPES | reader.value_types)
                fail(
                    f"{where}: variable {v.id} ({v.address!r}) has unknown value_type {v.value_type!r}; "
                    f"reader {v.reader_type!r} supports {known}",
                    "value_type",
                )
            interval = context.interval_of(v)
            reader_min = reader.min_interval_ms
            minimum = reader_min if reader_min is not None else context.min_interval_ms
            if interval < minimum:
                source = f"reader {v.reader_type!r}" if reader_min is not None else where
                fail(
                    f"{where}: variable {v.id} ({v.address!r}) interval {interval} ms is below the minimum "
                    f"{minimum} ms of {source}",
                    "interval_ms",
                )
            try:
                reader.validate_variable(v)
            except ConfigurationError as exc:
                if exc.variable_id is None:
                    exc.context_id, exc.variable_id, exc.field = context.id, v.id, exc.field or "address"
                raise
            except DataCollectionError:
                raise
            except Exception as exc:
                raise ConfigurationError(
                    f"{where}: variable {v.id} ({v.address!r}) rejected by reader {v.reader_type!r}: {exc}",
                    context_id=context.id,
                    variable_id=v.id,
                    field="address",
                ) from exc
            reader_types.add(v.reader_type)
        return frozenset(reader_types)

    def _ensure_scheduler(self) -> None:  # under self._lock
        if self._scheduler is None:
            scheduler = BackgroundScheduler(timezone=UTC, daemon=True)
            scheduler.start()
            self._scheduler = scheduler

    def _open_resources(self, reader_types: Iterable[str]) -> None:
        """Open the writers (once) and the given readers (once each); start their threads.

        Serialised by ``_open_lock`` (not the state lock: ``open()`` is user code). What is
        opened is installed under the state lock only if the collector is not closing by then;
        otherwise it is closed again and :class:`CollectorClosedError` raised.
        """
        with self._open_lock:
            self._check_open()
            writer_tasks: list[WriterTask] | None = None
            if self._writer_tasks is None:
                opened: list[DataWriter] = []
                later: set[int] = set()  # writers opened in the background (spool, transient error)
                spools: list[Spool | None] = []
                try:
                    for writer in self._writers:
                        spools.append(self._make_spool(writer))
                    for writer in self._writers:
                        try:
                            with writer.lock:
                                writer.open()
                        except Exception as exc:
                            if self._spool_dir is not None and writer.spooled and _transient(writer, exc):
                                self._log.error(
                                    "writer %s failed to open (%s: %s); collection starts, its data "
                                    "spools while it is retried in the background",
                                    writer.name,
                                    type(exc).__name__,
                                    exc,
                                )
                                later.add(id(writer))
                                continue
                            if isinstance(exc, DataCollectionError):
                                raise
                            raise WriterError(
                                f"writer {writer.name} failed to open: {type(exc).__name__}: {exc}"
                            ) from exc
                        opened.append(writer)
                    self._check_open()
                except BaseException:
                    self._close_writers(opened)
                    for spool in spools:
                        if spool is not None:
                            spool.close()
                    raise
                names: dict[str, int] = {}
                writer_tasks = []
                for writer, spool in zip(self._writers, spools, strict=True):
                    base = writer.name
                    names[base] = names.get(base, 0) + 1
                    name = base if names[base] == 1 else f"{base}#{names[base]}"
                    writer_tasks.append(
                        WriterTask(
                            writer,
                            name,
                            self._log,
                            self._max_queue_samples,
                            self._write_retry_s,
                            self._max_write_samples,
                            spool=spool,
                            needs_open=id(writer) in later,
                            on_written=self._written,
                            flush_interval_s=_flush_interval(writer),
                        )
                    )
                with self._lock:
                    if self._closing or self._closed:
                        closing = True
                    else:
                        closing = False
                        self._writer_tasks = writer_tasks
                if closing:
                    for t in writer_tasks:
                        t.shutdown(_CLOSE_GRACE_S)
                    raise CollectorClosedError("the collector was closed while it was starting")
            for rt in sorted(reader_types):
                if rt in self._opened_readers:
                    continue
                reader = self._readers[rt]
                try:
                    reader.open()
                except DataCollectionError:
                    raise
                except Exception as exc:
                    raise ReaderError(f"reader {rt!r} failed to open: {type(exc).__name__}: {exc}") from exc
                with self._lock:
                    if not (self._closing or self._closed):
                        self._opened_readers.add(rt)
                        observe = self._live.observe if self._live.latest_n else None
                        self._reader_tasks[rt] = ReaderTask(
                            reader, self._log, self._dispatch, self._clock, observe
                        )
                        continue
                _call_bounded([(f"closing reader {rt!r}", reader.close)], _CLOSE_GRACE_S, self._log)
                raise CollectorClosedError("the collector was closed while it was starting")

    def _make_spool(self, writer: DataWriter) -> Spool | None:
        if self._spool_dir is None or not writer.spooled:
            return None
        return Spool(
            self._spool_dir / spool_folder_name(writer.name),
            max_bytes=self._spool_max_bytes,
            sync_s=self._spool_sync_s,
        )

    def _close_writers(self, writers: list[DataWriter]) -> None:
        for w in writers:
            try:
                with w.lock:
                    w.close()
            except Exception:
                self._log.exception("closing writer %s after a failed start failed", w.name)

    def _start_now(self, record: _Ctx) -> None:
        """Start a record reserved in ``_starting`` (its id is free and its variables checked)."""
        context = record.context
        try:
            self._open_resources(record.reader_types)
            self._notify("before_start", context)
            with self._lock:
                if self._closed or self._closing:
                    raise CollectorClosedError(
                        f"the collector was closed while context {context.id} was starting"
                    )
                if self._starting.get(context.id) is not record:
                    raise ContextStateError(f"context {context.id} was stopped while it was starting")
                self._check_conflicts(context, self._others(context.id))
                context._start_date = _utcnow()
                context._end_date = None
                context._deduced = types.MappingProxyType(self._deduce(record))
                record.state = "running"
                record.ends_at = context._start_date + timedelta(seconds=context.duration_s)
                record.since_ms = self._clock.time_ns() // 1_000_000
                del self._starting[context.id]
                self._ctx[context.id] = record
                for wtask in self._writer_tasks or ():
                    wtask.put_started(context)
                record.accepting = True
                installs = self._replan(record.reader_types)
                self._ensure_scheduler()
                assert self._scheduler is not None
                record.job_id = f"dc-expire-{context.id}-{id(record)}"
                self._scheduler.add_job(
                    self._expire,
                    "date",
                    run_date=record.ends_at,
                    args=(record,),
                    id=record.job_id,
                    misfire_grace_time=None,
                    coalesce=True,
                )
        except BaseException:
            with self._lock:
                if self._starting.get(context.id) is record:
                    del self._starting[context.id]
                if self._ctx.get(context.id) is record:
                    del self._ctx[context.id]
            raise
        self._install(installs)
        self._log.info(
            "context %d started: %d variables, ends at %s",
            context.id,
            len(context.variables),
            record.ends_at.isoformat(),
        )
        self._notify("after_start", context)
        self._live.emit("run_started", context.id)

    def _written(self, context_id: int, samples: int, writer: str) -> None:
        if self._live.has_subscribers:
            self._live.emit("batch_written", context_id, writer, samples)

    def _delayed_start(self, record: _Ctx) -> None:
        context = record.context
        with self._lock:
            if self._closed or self._closing or self._ctx.get(context.id) is not record:
                return
            try:
                self._check_conflicts(context, self._others(context.id))
            except DataCollectionError:
                del self._ctx[context.id]
                self._log.exception("scheduled start of context %d failed", context.id)
                return
            record.state = "starting"  # stays in _ctx (state() is lock-free) while it starts
            self._starting[context.id] = record
        try:
            self._start_now(record)
        except ContextStateError as exc:
            self._log.info("scheduled start of context %d: %s", context.id, exc)
        except Exception:
            self._log.exception("scheduled start of context %d failed", context.id)

    def _expire(self, record: _Ctx) -> None:
        with self._lock:
            if self._closed or self._closing or self._ctx.get(record.context.id) is not record:
                return
        self._log.info(
            "context %d reached its duration of %g s", record.context.id, record.context.duration_s
        )
        self._stop(record, time.monotonic() + self._drain_timeout_s, from_job=True)

    def _deduce(self, record: _Ctx) -> dict[str, Any]:
        """What the collector knows about a run that the user did not say (never user metadata)."""
        context = record.context
        assert context.start_date is not None
        return {
            "collector": _host_facts(),
            "readers": {
                rt: {"class": _qualname(self._readers[rt]), "endpoint": repr(self._readers[rt])}
                for rt in sorted(record.reader_types)
            },
            "writers": [{"name": w.name, "class": _qualname(w)} for w in self._writers],
            "variables": len(context.variables),
            "start": context.start_date.isoformat(),
            **({"on_change": on_change} if (on_change := on_change_metadata(context)) else {}),
            **record.extra,
        }

    def _stop(
        self,
        record: _Ctx,
        deadline: float,
        *,
        from_job: bool = False,
        closing: bool = False,
        ended: str | None = None,
    ) -> None:
        """Stop ``record``: listeners, schedule, barrier, drain (bounded by ``deadline``), listeners."""
        context = record.context
        with self._lock:
            if self._ctx.get(context.id) is not record or record.state == "stopping":
                return
            if record.state in ("scheduled", "starting"):
                del self._ctx[context.id]
                if record.state == "scheduled":
                    self._remove_job(record)  # not run yet (a starting one's job is running)
                elif self._starting.get(context.id) is record:
                    del self._starting[context.id]  # its start gives up
                self._log.info("scheduled context %d cancelled", context.id)
                return
        self._notify("before_stop", context)
        with self._lock:
            if self._ctx.get(context.id) is not record or record.state in ("stopping",):
                return  # stopped meanwhile (a listener or another thread)
            if self._closing and not closing:
                return  # close() stops it
            record.state = "stopping"
            if not from_job:
                self._remove_job(record)
            installs = self._replan(record.reader_types)
        tasks = self._install(installs)
        if not self._barrier(tasks, deadline):
            self._log.error(
                "context %d: a reader was still busy after %.1f s; the values of its current read will "
                "not reach this context",
                context.id,
                self._drain_timeout_s,
            )
        with self._lock:
            record.accepting = False
            context._end_date = _utcnow()
            ended = ended or ("closed" if closing else "duration" if from_job else "stopped")
            context._deduced = types.MappingProxyType(
                {**context._deduced, "end": context._end_date.isoformat(), "ended": ended}
            )
            events = [(w.name, w.put_stopped(context)) for w in self._writer_tasks or ()]
        for name, done in events:
            if not done.wait(max(0.0, deadline - time.monotonic())):
                self._log.error(
                    "writer %s did not take every value of context %d within %.1f s",
                    name,
                    context.id,
                    self._drain_timeout_s,
                )
        self._log.info("context %d stopped: %d samples delivered", context.id, record.samples)
        self._notify("after_stop", context)
        self._live.emit("run_stopped", context.id)
        with self._lock:
            if self._ctx.get(context.id) is record:
                del self._ctx[context.id]

    def _remove_job(self, record: _Ctx) -> None:
        if record.job_id is not None and self._scheduler is not None:
            with contextlib.suppress(Exception):  # already run or gone
                self._scheduler.remove_job(record.job_id)

    def _replan(self, reader_types: Iterable[str]) -> list[_Install]:  # under self._lock
        """The plans of the running contexts for ``reader_types``, to :meth:`_install` outside the lock."""
        active = [r for r in self._ctx.values() if r.state == "running"]
        contexts = [r.context for r in active]
        since = {r.context.id: r.since_ms for r in active}
        self._plan_seq += 1
        out = []
        for rt in sorted(reader_types):
            task = self._reader_tasks.get(rt)
            if task is None:
                continue
            plan = ReaderPlan.build(rt, contexts, since)
            out.append((task, None if plan.empty else plan, self._plan_seq))
        return out

    @staticmethod
    def _install(installs: list[_Install]) -> list[ReaderTask]:
        """Hand the reader tasks their new plans (``variables_changed`` first); outside the lock."""
        for task, plan, seq in installs:
            task.install(plan, seq)
        return [task for task, _, _ in installs]

    def _barrier(self, tasks: Iterable[ReaderTask], deadline: float) -> bool:
        """Wait (bounded) until none of ``tasks`` runs a read of a plan older than its current one."""
        ok = True
        for task in tasks:
            ok = task.wait_tick(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def _dispatch(self, context: DataCollectionContext, batch: CollectedVariables, suppressed: int) -> None:
        record = self._ctx.get(context.id)
        if record is None or record.context is not context or not record.accepting:
            return  # a read that outlived stop()/pause() of this context (its barrier timed out)
        if suppressed:
            record.suppressed += suppressed
            if not batch:
                return  # every sample of it suppressed (on-change recording): nothing to write
        record.samples += len(batch)
        if record.tap is not None:
            try:
                record.tap(batch)
            except Exception:
                self._log.exception("context %d: the tap of its capture raised; ignored", context.id)
        for wtask in self._writer_tasks or ():
            wtask.put_data(context, batch)

    def _notify(self, event: str, *args: Any) -> None:
        with self._listener_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            method: Callable[..., None] = getattr(listener, event)
            try:
                method(*args)
            except Exception:
                self._log.exception("listener %r raised in %s; ignored", listener, event)


_HOST_FACTS: dict[str, Any] = {}


def _host_facts() -> dict[str, Any]:
    if not _HOST_FACTS:
        try:
            version = importlib.metadata.version("data-collector")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        _HOST_FACTS.update(
            library="data-collector",
            version=version,
            python=platform.python_version(),
            platform=platform.platform(),
            host=socket.gethostname(),
        )
    return {**_HOST_FACTS, "pid": os.getpid()}


def _qualname(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


_T = TypeVar("_T")


class Run:
    """A capture in progress: its ``context`` (with ``metadata`` and ``deduced_metadata``), and
    ``error``, the exception that ended the block (``None`` if none)."""

    __slots__ = ("context", "error")

    def __init__(self, context: DataCollectionContext) -> None:
        self.context = context
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        return f"Run(context={self.context.id}, error={self.error!r})"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_repr(value: object, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<repr failed: {type(exc).__name__}>"
    return _short(text, limit)


def _transient(writer: DataWriter, exc: BaseException) -> bool:
    try:
        return bool(writer.is_transient(exc))
    except Exception:
        return False


def _flush_interval(writer: DataWriter) -> float | None:
    """The writer's ``flush_interval_s``: None or a finite number of seconds >= 0 (else refused)."""
    value = writer.flush_interval_s
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_DURATION_S
    ):
        raise ConfigurationError(
            f"writer {writer!r}: flush_interval_s must be None or a number of seconds >= 0, got {value!r}"
        )
    return float(value)


def _describe(v: Variable) -> str:
    return f"address={v.address!r} value_type={v.value_type!r} reader_type={v.reader_type!r}"


def _as_list(items: Iterable[Any], name: str) -> list[Any]:
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise ConfigurationError(f"{name} must be an iterable, got {items!r}")
    return list(items)
