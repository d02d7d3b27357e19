"""The collector: contexts, their schedule, reader and writer tasks, listeners and the calendar."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn

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
from ._model import BUILTIN_VALUE_TYPES, CollectedVariables, DataCollectionContext, Variable
from ._reader import DataReader
from ._schedule import ReaderPlan
from ._tasks import Clock, ReaderTask, SystemClock, WriterTask
from ._writer import DataWriter

__all__ = ["CollectorStats", "ContextStats", "DataCollector", "ReaderStats", "WriterStats"]

ContextState = Literal["scheduled", "running", "paused", "stopping"]


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


@dataclass(frozen=True, slots=True)
class WriterStats:
    """How one writer is doing. ``queue_depth`` counts samples not yet written."""

    name: str
    queue_depth: int
    max_queue_depth: int
    batches: int
    samples_written: int
    write_errors: int
    retried_ok: int
    lost_batches: int
    lost_samples: int
    dropped_batches: int
    dropped_samples: int
    unwritten_samples: int


@dataclass(frozen=True, slots=True)
class ContextStats:
    """One started context: its state, samples delivered so far and its time frame."""

    id: int
    state: ContextState
    samples: int
    start_date: datetime | None
    ends_at: datetime | None


@dataclass(frozen=True, slots=True)
class CollectorStats:
    """A snapshot of :meth:`DataCollector.stats`."""

    readers: Mapping[str, ReaderStats]
    writers: Mapping[str, WriterStats]
    contexts: Mapping[int, ContextStats]


class _Ctx:
    """The collector's record of one started (or scheduled) context."""

    __slots__ = ("accepting", "context", "ends_at", "job_id", "reader_types", "samples", "state")

    def __init__(self, context: DataCollectionContext, reader_types: frozenset[str]) -> None:
        self.context = context
        self.state: ContextState = "scheduled"
        self.samples = 0
        self.ends_at: datetime | None = None
        self.job_id: str | None = None
        self.reader_types = reader_types
        self.accepting = False  # whether values read for it are delivered


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DataCollector:
    """Runs collection contexts: reads their variables on time and hands the values to writers.

    ``DataCollector(logger, readers, writers, listeners=())``; use as a context manager or call
    :meth:`close`. Per reader type one thread ticks at the GCD of the effective intervals of all
    variables of that type in the running, unpaused contexts, at wall-clock multiples of the
    tick; each due variable is read once per tick and delivered to every context it is due for.
    Per writer one thread writes from a bounded queue (``max_queue_samples``), retrying a failed
    batch with backoff for up to ``write_retry_s`` seconds. :meth:`stop` and :meth:`close` return
    once every value read for the context(s) reached the writers (or ``drain_timeout_s`` passed,
    which is logged as an error).

    All methods are thread-safe. Bad input raises a :class:`DataCollectionError` at the call
    that received it and changes nothing.
    """

    def __init__(
        self,
        logger: logging.Logger,
        readers: Iterable[DataReader],
        writers: Iterable[DataWriter],
        listeners: Iterable[DataCollectionListener] = (),
        *,
        max_queue_samples: int = 5_000_000,
        write_retry_s: float = 10.0,
        drain_timeout_s: float = 60.0,
        clock: Clock | None = None,
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
            if mi is not None and (isinstance(mi, bool) or not isinstance(mi, int) or mi <= 0):
                raise ConfigurationError(
                    f"{reader!r}: min_interval_ms must be None or an int > 0, got {mi!r}"
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
            self._writers.append(writer)
        self._listeners: list[DataCollectionListener] = []
        for listener in _as_list(listeners, "listeners"):
            self._check_listener(listener)
            self._listeners.append(listener)
        for name, value in (("write_retry_s", write_retry_s), ("drain_timeout_s", drain_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
        if (
            isinstance(max_queue_samples, bool)
            or not isinstance(max_queue_samples, int)
            or max_queue_samples <= 0
        ):
            raise ConfigurationError(f"max_queue_samples must be an int > 0, got {max_queue_samples!r}")
        self._max_queue_samples = max_queue_samples
        self._write_retry_s = float(write_retry_s)
        self._drain_timeout_s = float(drain_timeout_s)
        self._clock: Clock = clock if clock is not None else SystemClock()

        self._op_lock = threading.RLock()  # serializes start/stop/pause/resume/close
        self._listener_lock = threading.Lock()
        self._ctx: dict[int, _Ctx] = {}  # insertion order = start order
        self._reader_tasks: dict[str, ReaderTask] = {}
        self._opened_readers: set[str] = set()
        self._writer_tasks: list[WriterTask] | None = None
        self._closed = False
        self._closing = False
        self._scheduler: BackgroundScheduler | None = None

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
        """The started and scheduled contexts by id (never blocks: safe from readers and writers)."""
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
        with self._op_lock:
            self._check_open()
            if not isinstance(context, DataCollectionContext):
                raise ConfigurationError(f"start() needs a DataCollectionContext, got {context!r}")
            if at is not None and (not isinstance(at, datetime) or at.tzinfo is None):
                raise ConfigurationError(f"at must be a timezone-aware datetime, got {at!r}")
            if context.id in self._ctx:
                raise ContextAlreadyStartedError(
                    f"context {context.id} is already {self._ctx[context.id].state}"
                )
            reader_types = self._validate_started(context)
            record = _Ctx(context, reader_types)
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
            self._start_now(record)

    def pause(self, context_id: int) -> None:
        """Pause a running context: it is not read for and gets no values until resumed."""
        with self._op_lock:
            self._check_open()
            record = self._get(context_id)
            if record.state != "running":
                raise ContextStateError(f"context {context_id} is {record.state}, not running: cannot pause")
            self._notify("before_pause", record.context)
            if self._ctx.get(context_id) is not record or record.state != "running":
                return  # a listener changed it meanwhile
            record.state = "paused"
            self._replan(record.reader_types, barrier=True)
            record.accepting = False
            self._log.info("context %d paused", context_id)
            self._notify("after_pause", record.context)

    def resume(self, context_id: int) -> None:
        """Resume a paused context."""
        with self._op_lock:
            self._check_open()
            record = self._get(context_id)
            if record.state != "paused":
                raise ContextStateError(f"context {context_id} is {record.state}, not paused: cannot resume")
            self._validate_started(record.context, ignore=context_id)
            self._notify("before_resume", record.context)
            if self._ctx.get(context_id) is not record or record.state != "paused":
                return  # a listener changed it meanwhile
            record.state = "running"
            record.accepting = True
            self._replan(record.reader_types, barrier=False)
            self._log.info("context %d resumed", context_id)
            self._notify("after_resume", record.context)

    def stop(self, context_id: int) -> None:
        """Stop a context (or cancel a scheduled one).

        Returns once every value read for it was handed to the writers and their
        ``context_stopped`` hooks ran; ``end_date`` is set.
        """
        with self._op_lock:
            self._check_open()
            self._stop(self._get(context_id))

    def close(self) -> None:
        """Stop every context, drain and close writers, close readers, end every thread.

        Idempotent. Listeners hear ``before_close`` first and ``after_close`` last.
        """
        with self._op_lock:
            if self._closed or self._closing:
                return
            self._closing = True
            try:
                self._notify("before_close")
                for record in list(self._ctx.values()):
                    try:
                        self._stop(record)
                    except Exception:
                        self._log.exception("stopping context %d during close failed", record.context.id)
                if self._scheduler is not None:
                    self._scheduler.shutdown(wait=False)
                for task in self._reader_tasks.values():
                    task.shutdown(timeout=self._drain_timeout_s)
                    if task.is_alive():
                        self._log.error(
                            "reader %r still busy after %.1f s; closing it anyway",
                            task.reader_type,
                            self._drain_timeout_s,
                        )
                for wtask in self._writer_tasks or ():
                    if not wtask.shutdown(timeout=self._drain_timeout_s):
                        self._log.error(
                            "writer %s did not finish within %.1f s", wtask.name, self._drain_timeout_s
                        )
                for rt in self._opened_readers:
                    try:
                        self._readers[rt].close()
                    except Exception:
                        self._log.exception("closing reader %r failed", rt)
                if self._writer_tasks is not None:
                    for wtask in self._writer_tasks:
                        try:
                            with wtask.writer.lock:
                                wtask.writer.close()
                        except Exception:
                            self._log.exception("closing writer %s failed", wtask.name)
            finally:
                self._closed = True
                self._closing = False
            self._log.info("collector closed")
            self._notify("after_close")

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
            )
        writers = {}
        for wtask in self._writer_tasks or ():
            w = wtask.counters
            writers[wtask.name] = WriterStats(
                name=wtask.name,
                queue_depth=wtask.queue_depth,
                max_queue_depth=w.max_queue_depth,
                batches=w.batches,
                samples_written=w.samples_written,
                write_errors=w.write_errors,
                retried_ok=w.retried_ok,
                lost_batches=w.lost_batches,
                lost_samples=w.lost_samples,
                dropped_batches=w.dropped_batches,
                dropped_samples=w.dropped_samples,
                unwritten_samples=w.unwritten_samples,
            )
        contexts = {
            cid: ContextStats(cid, r.state, r.samples, r.context.start_date, r.ends_at)
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

    # -- internals ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise CollectorClosedError("the collector is closed")

    @staticmethod
    def _check_listener(listener: object) -> None:
        if not isinstance(listener, DataCollectionListener):
            raise ConfigurationError(f"listeners must be DataCollectionListener instances, got {listener!r}")

    def _get(self, context_id: int) -> _Ctx:
        record = self._ctx.get(context_id) if isinstance(context_id, int) else None
        if record is None:
            raise UnknownContextError(f"no started context has id {context_id!r}")
        return record

    def check(self, context: DataCollectionContext, *others: DataCollectionContext) -> None:
        """Validate ``context`` exactly as :meth:`start` would, without starting anything.

        ``others`` are contexts meant to run beside it (besides the started ones), checked for
        conflicting variable definitions.
        """
        if not isinstance(context, DataCollectionContext):
            raise ConfigurationError(f"check() needs a DataCollectionContext, got {context!r}")
        with self._op_lock:
            started = [r.context for r in self._ctx.values()]
        self._validate(context, [*started, *others])

    def _validate_started(self, context: DataCollectionContext, ignore: int | None = None) -> frozenset[str]:
        others = [r.context for cid, r in self._ctx.items() if cid != ignore]
        return self._validate(context, others)

    def _validate(
        self, context: DataCollectionContext, others: Iterable[DataCollectionContext]
    ) -> frozenset[str]:
        """Check ``context`` against the readers and ``others``; return its reader types."""
        where = f"context {context.id}"
        running: dict[int, tuple[Variable, int]] = {}
        for other in others:
            for v in other.variables:
                running.setdefault(v.id, (v, other.id))
        reader_types = set()
        for v in context.variables:

            def fail(
                message: str, field: str, cls: type[ConfigurationError] = ConfigurationError, vid: int = v.id
            ) -> NoReturn:
                raise cls(message, context_id=context.id, variable_id=vid, field=field)

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
            seen = running.get(v.id)
            if seen is not None and not seen[0].same_definition(v):
                fail(
                    f"{where}: variable {v.id} is {_describe(v)} but context {seen[1]} defines it as "
                    f"{_describe(seen[0])}",
                    "id",
                    ConflictingVariableError,
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

    def _ensure_scheduler(self) -> None:
        if self._scheduler is None:
            scheduler = BackgroundScheduler(timezone=UTC, daemon=True)
            scheduler.start()
            self._scheduler = scheduler

    def _open_resources(self, reader_types: Iterable[str]) -> None:
        """Open the writers (once) and the given readers (once each); start their threads."""
        if self._writer_tasks is None:
            opened: list[DataWriter] = []
            for writer in self._writers:
                try:
                    with writer.lock:
                        writer.open()
                except Exception as exc:
                    for w in opened:
                        try:
                            with w.lock:
                                w.close()
                        except Exception:
                            self._log.exception("closing writer %s after a failed start failed", w.name)
                    if isinstance(exc, DataCollectionError):
                        raise
                    raise WriterError(
                        f"writer {writer.name} failed to open: {type(exc).__name__}: {exc}"
                    ) from exc
                opened.append(writer)
            names: dict[str, int] = {}
            tasks = []
            for writer in self._writers:
                base = writer.name
                names[base] = names.get(base, 0) + 1
                name = base if names[base] == 1 else f"{base}#{names[base]}"
                tasks.append(
                    WriterTask(writer, name, self._log, self._max_queue_samples, self._write_retry_s)
                )
            self._writer_tasks = tasks
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
            self._opened_readers.add(rt)
            self._reader_tasks[rt] = ReaderTask(reader, self._log, self._dispatch, self._clock)

    def _start_now(self, record: _Ctx) -> None:
        context = record.context
        self._open_resources(record.reader_types)
        self._notify("before_start", context)
        if self._closed or self._closing:
            raise CollectorClosedError(f"the collector was closed while context {context.id} was starting")
        if context.id in self._ctx and self._ctx[context.id] is not record:
            raise ContextAlreadyStartedError(f"context {context.id} was started while it was starting")
        context._start_date = _utcnow()
        context._end_date = None
        record.state = "running"
        record.accepting = True
        record.ends_at = context._start_date + timedelta(seconds=context.duration_s)
        self._ctx[context.id] = record
        for wtask in self._writer_tasks or ():
            wtask.put_started(context)
        self._replan(record.reader_types, barrier=False)
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
        self._log.info(
            "context %d started: %d variables, ends at %s",
            context.id,
            len(context.variables),
            record.ends_at.isoformat(),
        )
        self._notify("after_start", context)

    def _delayed_start(self, record: _Ctx) -> None:
        with self._op_lock:
            if self._closed or self._closing or self._ctx.get(record.context.id) is not record:
                return
            try:
                self._validate_started(record.context, ignore=record.context.id)
                self._start_now(record)
            except Exception:
                if self._ctx.get(record.context.id) is record and record.state == "scheduled":
                    del self._ctx[record.context.id]
                self._log.exception("scheduled start of context %d failed", record.context.id)

    def _expire(self, record: _Ctx) -> None:
        with self._op_lock:
            if self._closed or self._closing or self._ctx.get(record.context.id) is not record:
                return
            self._log.info(
                "context %d reached its duration of %g s", record.context.id, record.context.duration_s
            )
            self._stop(record, from_job=True)

    def _stop(self, record: _Ctx, *, from_job: bool = False) -> None:
        context = record.context
        if record.state == "scheduled":
            del self._ctx[context.id]
            self._remove_job(record)
            self._log.info("scheduled context %d cancelled", context.id)
            return
        self._notify("before_stop", context)
        if self._ctx.get(context.id) is not record or record.state == "stopping":
            return  # a listener stopped it meanwhile
        record.state = "stopping"
        if not from_job:
            self._remove_job(record)
        if not self._replan(record.reader_types, barrier=True):
            self._log.error(
                "context %d: a reader was still busy after %.1f s; the values of its current read will "
                "not reach this context",
                context.id,
                self._drain_timeout_s,
            )
        record.accepting = False
        del self._ctx[context.id]
        context._end_date = _utcnow()
        events = [(w.name, w.put_stopped(context)) for w in self._writer_tasks or ()]
        deadline = time.monotonic() + self._drain_timeout_s
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

    def _remove_job(self, record: _Ctx) -> None:
        if record.job_id is not None and self._scheduler is not None:
            with contextlib.suppress(Exception):  # already run or gone
                self._scheduler.remove_job(record.job_id)

    def _replan(self, reader_types: Iterable[str], *, barrier: bool) -> bool:
        """Give the reader tasks the plans of the running contexts; False if a barrier timed out."""
        active = [r.context for r in self._ctx.values() if r.state == "running"]
        ok = True
        for rt in reader_types:
            task = self._reader_tasks.get(rt)
            if task is None:
                continue
            plan = ReaderPlan.build(rt, active)
            intervals = plan.variable_intervals()
            old = task.plan
            if (old.variable_intervals() if old is not None else {}) != intervals:
                try:
                    task.reader.variables_changed(intervals)
                except Exception:
                    self._log.exception("reader %r raised in variables_changed; ignored", rt)
            timeout = self._drain_timeout_s if barrier else None
            ok = task.set_plan(None if plan.empty else plan, barrier=timeout) and ok
        return ok

    def _dispatch(self, context: DataCollectionContext, batch: CollectedVariables) -> None:
        record = self._ctx.get(context.id)
        if record is None or record.context is not context or not record.accepting:
            return  # a read that outlived stop()/pause() of this context (its barrier timed out)
        record.samples += len(batch)
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


def _describe(v: Variable) -> str:
    return f"address={v.address!r} value_type={v.value_type!r} reader_type={v.reader_type!r}"


def _as_list(items: Iterable[Any], name: str) -> list[Any]:
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise ConfigurationError(f"{name} must be an iterable, got {items!r}")
    return list(items)
