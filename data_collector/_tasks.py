"""The threads of the collector: one tick loop per reader type, one queue consumer per writer.

Reader task: sleeps to the next wall-clock boundary at which something is due, reads once
everything due in the span it covers, hands each context its items, and turns every boundary it
passed without a read of its own into BAD samples stamped at that boundary ("no silent gaps").

Writer task: one lane (FIFO) per context, served round-robin; consecutive batches of a lane are
handed to the writer as one ``write()`` when the writer is behind; a transient error puts the
lane into capped backoff while the other lanes go on; a permanent error counts the batch as lost
at once. Every sample handed to a writer task ends as written, lost, dropped or unwritten. For a
writer with ``flush_interval_s`` (its calls are stored only by its ``flush()``), the calls that
returned wait in an *unflushed* list and count as written (leave the spool, set the stop events)
only when a later ``flush()`` returned; the task calls ``flush()`` when the interval has passed
since the first of them, when no work has come for a moment, after a ``context_stopped`` and
before the writer's ``close()``, and retries a flush that failed transiently (only the flush).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from ._model import CollectedVariables, DataCollectionContext, Quality, Variable
from ._onchange import ContextFilter
from ._reader import DataReader
from ._schedule import Missed, ReaderPlan, TickPlan
from ._spool import (
    KIND_DATA,
    KIND_STARTED,
    KIND_STOPPED,
    Spool,
    SpoolRecord,
    decode_batch,
    decode_context,
    encode_batch,
)
from ._writer import DataWriter

__all__ = ["Clock", "ReaderTask", "SystemClock", "WriterTask"]

#: A writer with ``flush_interval_s`` is flushed when no call came for this long (or its interval).
IDLE_FLUSH_S = 0.25
_FLUSH: Literal["flush"] = "flush"

_NS_PER_MS = 1_000_000
_LATENESS_WINDOW = 10_000
_FINAL_SLEEP_NS = _NS_PER_MS // 2  # the last stretch before a deadline is slept, not waited
_STEP_NS = 1_000_000_000  # a wall clock that moves this much more than the monotonic one stepped
#: The most BAD samples one wake-up makes for the boundaries it passed (beyond: counted, logged).
MAX_MISSED_SAMPLES = 1_000_000
NO_VALUE = "the reader set no value"
MISSED_BUSY = "missed: reader busy"
MISSED_RUNNING = "missed: previous read still running"


class Clock(Protocol):
    """Wall-clock source of the tick loops (a parameter so tests and benchmarks can observe it)."""

    def time_ns(self) -> int:
        """Nanoseconds since the Unix epoch (UTC)."""
        ...


class SystemClock:
    """The system's wall clock."""

    def time_ns(self) -> int:
        return time.time_ns()


def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_MS = timedelta(milliseconds=1)


def _utc_of_ms(t_ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=t_ms)


@dataclass
class _ReaderCounters:
    ticks: int = 0
    reads: int = 0
    samples: int = 0
    bad_samples: int = 0
    missed_ticks: int = 0
    missed_samples: int = 0
    read_errors: int = 0
    last_read_ms: float = 0.0
    max_read_ms: float = 0.0
    suppressed_samples: int = 0  # not recorded by a context's on-change filter


#: ``dispatch(context, batch, suppressed)``: the samples a context records, and how many of the
#: samples read for it its on-change filter suppressed (never handed to a writer).
Dispatch = Callable[[DataCollectionContext, CollectedVariables, int], None]


class ReaderTask:
    """The tick loop of one reader type: sleeps to the next due boundary, reads, dispatches."""

    def __init__(
        self,
        reader: DataReader,
        logger: logging.Logger,
        dispatch: Dispatch,
        clock: Clock,
        observe: Callable[[CollectedVariables], None] | None = None,
    ) -> None:
        self.reader = reader
        self._observe = observe
        self.reader_type = reader.reader_type
        self._log = logger
        self._dispatch = dispatch
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._tick_lock = threading.Lock()
        self._plan: ReaderPlan | None = None
        self._version = 0
        self._closing = False
        self._failing = False
        self._naive_logged = False
        self._notified: Mapping[Variable, int] = {}
        self._install_lock = threading.RLock()
        self._installed_seq = 0
        self._last_read_end_ns = 0  # wall clock when the last read returned
        self._last_errors: dict[int, str] = {}  # variable id -> error of the BAD items of the last read
        # on-change recording (loop thread only): the filter of each context id, and each
        # context's run (object, start or resume) in the current plan
        self._filters: dict[int, ContextFilter] = {}
        self._runs: dict[int, tuple[DataCollectionContext, int]] = {}
        self.counters = _ReaderCounters()
        self._lateness: collections.deque[int] = collections.deque(maxlen=_LATENESS_WINDOW)
        self._thread = threading.Thread(target=self._run, name=f"dc-reader-{self.reader_type}", daemon=True)
        self._thread.start()

    # -- control (collector threads) -------------------------------------------------------
    @property
    def plan(self) -> ReaderPlan | None:
        return self._plan

    def install(self, plan: ReaderPlan | None, seq: int) -> None:
        """Tell the reader what it reads now (``variables_changed``), then give the loop ``plan``.

        Called outside the collector's lock (``variables_changed`` is user code); calls are
        serialised per reader, and a plan computed before one already installed (a lower
        ``seq``) is skipped, so concurrent changes end with the newest plan.
        """
        with self._install_lock:
            if seq <= self._installed_seq:
                return
            self._installed_seq = seq
            intervals = plan.variable_intervals() if plan is not None else {}
            if intervals != self._notified:
                self._notified = intervals
                try:
                    self.reader.variables_changed(intervals)
                except Exception:
                    self._log.exception("reader %r raised in variables_changed; ignored", self.reader_type)
            self.set_plan(plan)

    def set_plan(self, plan: ReaderPlan | None) -> None:
        """Install a new plan; never blocks. The loop picks it up at once."""
        with self._cond:
            self._plan = plan
            self._version += 1
            self._cond.notify_all()

    def wait_tick(self, timeout: float) -> bool:
        """Wait until the read in progress (of an older plan) is over; False after ``timeout`` s.

        From inside ``read()`` (the reader's own thread) it returns True at once: the read in
        progress is the caller itself, and its values reach only contexts still accepting.
        """
        if threading.current_thread() is self._thread:
            return True
        if not self._tick_lock.acquire(timeout=max(0.0, timeout)):
            return False
        self._tick_lock.release()
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        """Ask the loop to end and wait up to ``timeout`` for it (a hung read may outlive it)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def lateness_us(self) -> tuple[int, int, int, int]:
        """(count, p50, p99, max) wake-up lateness in microseconds over the recent reads."""
        values = sorted(self._lateness)
        return (
            len(values),
            _percentile(values, 0.5) // 1000,
            _percentile(values, 0.99) // 1000,
            (values[-1] // 1000) if values else 0,
        )

    # -- the loop (own thread) ---------------------------------------------------------------
    def _run(self) -> None:
        clock = self._clock
        cond = self._cond
        plan: ReaderPlan | None = None
        version = -1
        done_ms: int | None = None  # every due boundary at or before it has been handled
        last_wall = last_mono = 0
        while True:
            changed = False
            with cond:
                while True:
                    if self._closing:
                        return
                    if self._version != version:
                        plan, version, changed = self._plan, self._version, True
                        self._sync_filters(plan)
                        break
                    if plan is not None and not plan.empty:
                        break
                    done_ms = None  # idle: a later plan starts afresh
                    cond.wait()
            if changed and (plan is None or plan.empty):
                continue
            assert plan is not None
            now_ns = clock.time_ns()
            mono = time.monotonic_ns()
            if done_ms is None:
                # A fresh start: from the moment its contexts started (so the boundaries between a
                # start() and this thread picking the plan up are read or made BAD, never skipped).
                # A new plan otherwise keeps the boundary that was pending (so starting a context
                # costs the others nothing).
                now_ms = now_ns // _NS_PER_MS
                since = min(plan.since_ms) if plan.since_ms else now_ms
                done_ms = max(min(since, now_ms), now_ms - 60_000) - 1
                last_wall, last_mono = now_ns, mono
            elif now_ns // _NS_PER_MS < done_ms:
                self._log.warning(
                    "reader %r: the wall clock stepped back by %.3f s; ticks follow it",
                    self.reader_type,
                    (done_ms * _NS_PER_MS - now_ns) / 1e9,
                )
                done_ms = now_ns // _NS_PER_MS
                last_wall, last_mono = now_ns, mono
            deadline = plan.next_due(done_ms) * _NS_PER_MS
            if now_ns < deadline:
                # Wait on the condition (so a new plan or close wakes us at once) until shortly
                # before the deadline, then sleep the last stretch: time.sleep wakes up more
                # precisely than a condition wait, and the stretch is too short to matter for control.
                wake_mono = mono + (deadline - now_ns)
                stepped = False
                with cond:
                    while not self._closing and self._version == version:
                        remaining = deadline - clock.time_ns()
                        if remaining <= _FINAL_SLEEP_NS:
                            break
                        if remaining > wake_mono - time.monotonic_ns() + _STEP_NS:
                            stepped = True  # the wall clock stepped back while we waited
                            break
                        cond.wait((remaining - _FINAL_SLEEP_NS) / 1e9)
                    if self._closing or self._version != version:
                        continue
                if stepped:
                    self._log.warning(
                        "reader %r: the wall clock stepped back; ticks follow it", self.reader_type
                    )
                    done_ms = clock.time_ns() // _NS_PER_MS - 1
                    last_wall, last_mono = clock.time_ns(), time.monotonic_ns()
                    continue
                remaining = deadline - clock.time_ns()
                if remaining > 0:
                    time.sleep(remaining / 1e9)
            now_ns = clock.time_ns()
            mono = time.monotonic_ns()
            step = (now_ns - last_wall) - (mono - last_mono)
            if step > _STEP_NS:
                # The wall clock jumped forward (or the machine was suspended): the boundaries of
                # the jump never happened in real time, so they are skipped, not made BAD.
                self._log.warning(
                    "reader %r: the wall clock jumped forward by %.3f s; boundaries in the jump skipped",
                    self.reader_type,
                    step / 1e9,
                )
                done_ms = max(done_ms, (now_ns - (mono - last_mono)) // _NS_PER_MS - 1)
                deadline = plan.next_due(done_ms) * _NS_PER_MS
            last_wall, last_mono = now_ns, mono
            now_ms = now_ns // _NS_PER_MS
            if now_ms < deadline // _NS_PER_MS:
                continue  # woke early (a step resynchronised the span): wait again
            with self._tick_lock:
                if self._version != version or self._closing:
                    continue  # re-planned meanwhile: this span is evaluated against the new plan
                self._lateness.append(now_ns - deadline)
                try:
                    self._wake(plan, done_ms, now_ms, now_ns)
                except Exception:  # never let one tick end the loop
                    self.counters.read_errors += 1
                    self._log.exception("reader %r: a tick failed; collection goes on", self.reader_type)
                done_ms = now_ms

    def _wake(self, plan: ReaderPlan, done_ms: int, now_ms: int, now_ns: int) -> None:
        """Read what is due in ``(done_ms, now_ms]``; make the boundaries passed BAD samples."""
        tick_plan = plan.plan_for(plan.due_intervals(done_ms, now_ms))
        assert tick_plan is not None
        missed: list[Missed] = []
        over = 0
        first_due = plan.next_due(done_ms)
        if plan.last_due(now_ms) != first_due:  # the span passed more than one due boundary
            passed = sum(1 for _ in plan.boundaries(done_ms, now_ms, 10_000))
            if passed >= 10_000:
                passed = max(passed, (now_ms - done_ms) // min(plan.intervals))
            self.counters.missed_ticks += passed - 1
            missed, over = plan.missed(done_ms, now_ms, MAX_MISSED_SAMPLES)
        previous_end_ns = self._last_read_end_ns
        previous_errors = self._last_errors
        batch = self._read(tick_plan, now_ns)
        if self._observe is not None:
            self._observe(batch)
        if missed or over:
            self._deliver_missed(missed, over, previous_end_ns, previous_errors, now_ns)
        self._deliver(tick_plan, batch, now_ms)

    def _sync_filters(self, plan: ReaderPlan | None) -> None:
        """Keep the on-change state of the contexts still in ``plan`` in the same run; drop the rest.

        A context that left the plan (stopped, paused) or resumed (a new ``since``) starts afresh.
        """
        runs: dict[int, tuple[DataCollectionContext, int]] = {}
        if plan is not None:
            since = plan.since_ms or [0] * len(plan.contexts)
            runs = {c.id: (c, s) for c, s in zip(plan.contexts, since, strict=True)}
        self._runs = runs
        if self._filters:
            self._filters = {
                cid: f
                for cid, f in self._filters.items()
                if (run := runs.get(cid)) is not None and run[0] is f.context and run[1] == f.since_ms
            }

    def _filter_of(self, context: DataCollectionContext) -> ContextFilter:
        f = self._filters.get(context.id)
        if f is None or f.context is not context:
            run = self._runs.get(context.id)
            f = self._filters[context.id] = ContextFilter(context, run[1] if run is not None else 0)
        return f

    def _read(self, tick_plan: TickPlan, now_ns: int) -> CollectedVariables:
        counters = self.counters
        counters.ticks += 1
        started_mono = time.perf_counter_ns()
        # stamped with the time that chose what is due, so the boundary a value covers is
        # the last multiple of its interval at or before its read_at
        read_at = _EPOCH + timedelta(microseconds=now_ns // 1000)
        batch = CollectedVariables.of(tick_plan.variables, read_at)
        n = len(batch)
        try:
            self.reader.read(batch)
        except Exception as exc:
            counters.read_errors += 1
            text = f"{type(exc).__name__}: {exc}"
            batch.values[:] = [None] * n
            batch.qualities[:] = [Quality.BAD] * n
            batch.errors[:] = [text] * n
            if not self._failing:
                self._failing = True
                self._log.error(
                    "reader %r raised; its items are BAD until it recovers", self.reader_type, exc_info=True
                )
            else:
                self._log.debug("reader %r raised again: %s", self.reader_type, text)
        else:
            if self._failing:
                self._failing = False
                self._log.warning("reader %r reads again", self.reader_type)
        self._last_read_end_ns = self._clock.time_ns()
        elapsed_ms = (time.perf_counter_ns() - started_mono) / _NS_PER_MS
        counters.reads += 1
        counters.last_read_ms = elapsed_ms
        if elapsed_ms > counters.max_read_ms:
            counters.max_read_ms = elapsed_ms
        values, qualities, errors, read_ats = batch.values, batch.qualities, batch.errors, batch.read_ats
        if len(values) != n or len(qualities) != n or len(errors) != n or len(read_ats) != n:
            counters.read_errors += 1
            text = f"reader {self.reader_type!r} changed the length of a batch column"
            self._log.error("%s; the items of this tick are BAD", text)
            values[:] = [None] * n
            qualities[:] = [Quality.BAD] * n
            errors[:] = [text] * n
            read_ats[:] = [read_at] * n
        try:
            unfilled = None in values
        except ValueError:  # a value whose == is elementwise (a NumPy array) cannot answer `in`
            unfilled = any(v is None for v in values)
        if unfilled:  # items left without a value are BAD
            bad_q = Quality.BAD
            for i in [i for i, v in enumerate(values) if v is None]:
                qualities[i] = bad_q
                if errors[i] is None:
                    errors[i] = NO_VALUE
        if read_ats.count(read_at) != n:
            self._normalise_read_ats(read_ats, read_at)
        counters.samples += n
        bad = qualities.count(Quality.BAD)
        counters.bad_samples += bad
        # the latest error of each variable whose last read was BAD (for the reasons of missed
        # boundaries): a loop over the batch only when something is BAD; a good read costs O(errors)
        if bad:
            last = dict(self._last_errors)
            bad_q = Quality.BAD
            for v, q, e in zip(batch.variables, qualities, errors, strict=True):
                if q is bad_q:
                    last[v.id] = e or "BAD"
                else:
                    last.pop(v.id, None)
            self._last_errors = last
        elif self._last_errors:
            read_ids = tick_plan.ids
            self._last_errors = {k: e for k, e in self._last_errors.items() if k not in read_ids}
        return batch

    def _normalise_read_ats(self, read_ats: list[datetime | None], default: datetime) -> None:
        """Every ``read_at`` an aware UTC datetime: None -> the read's time, naive -> taken as UTC."""
        for i, t in enumerate(read_ats):
            if t is default:
                continue
            if not isinstance(t, datetime):
                if t is not None:
                    self._log.warning(
                        "reader %r set read_at to %r (not a datetime); the read's time is used",
                        self.reader_type,
                        t,
                    )
                read_ats[i] = default
            elif t.tzinfo is None or t.utcoffset() is None:
                if not self._naive_logged:
                    self._naive_logged = True
                    self._log.warning(
                        "reader %r set a naive read_at (%s); naive times are taken as UTC",
                        self.reader_type,
                        t.isoformat(),
                    )
                read_ats[i] = t.replace(tzinfo=UTC)
            elif t.utcoffset():
                read_ats[i] = t.astimezone(UTC)

    def _deliver(self, tick_plan: TickPlan, batch: CollectedVariables, now_ms: int) -> None:
        values, qualities, errors, read_ats = batch.values, batch.qualities, batch.errors, batch.read_ats
        dispatch = self._dispatch
        for delivery in tick_plan.deliveries:
            if delivery.whole:
                out = batch
            else:
                idx = delivery.indexes
                out = CollectedVariables._columns(
                    [batch.variables[i] for i in idx] if delivery.shared else list(delivery.variables),
                    [values[i] for i in idx],
                    [read_ats[i] for i in idx],
                    [qualities[i] for i in idx],
                    [errors[i] for i in idx],
                )
            suppressed = 0
            if delivery.on_change is not None:  # on-change recording: keep what the context records
                keep = self._filter_of(delivery.context).select(
                    delivery.on_change, out.values, out.qualities, out.errors, now_ms
                )
                if keep is not None:
                    suppressed = len(out) - len(keep)
                    self.counters.suppressed_samples += suppressed
                    ov, oa, oq, oe = out.values, out.read_ats, out.qualities, out.errors
                    variables = out.variables
                    out = CollectedVariables._columns(
                        [variables[i] for i in keep],
                        [ov[i] for i in keep],
                        [oa[i] for i in keep],
                        [oq[i] for i in keep],
                        [oe[i] for i in keep],
                    )
            dispatch(delivery.context, out, suppressed)

    def _deliver_missed(
        self,
        missed: list[Missed],
        over: int,
        previous_end_ns: int,
        previous_errors: Mapping[int, str],
        woke_ns: int,
    ) -> None:
        """One BAD sample per missed boundary and variable, stamped at the boundary, per context."""
        per_context: dict[int, tuple[DataCollectionContext, list[Missed]]] = {}
        for m in missed:
            per_context.setdefault(m.context.id, (m.context, []))[1].append(m)
        total = over
        for context, items in per_context.values():
            variables: list[Variable] = []
            times: list[datetime] = []
            errors: list[str | None] = []
            for m in items:
                for t in m.times_ms:
                    at = _utc_of_ms(t)
                    t_ns = t * _NS_PER_MS
                    if t_ns < previous_end_ns:
                        reason = MISSED_RUNNING
                    else:
                        reason = f"{MISSED_BUSY} (woke {(woke_ns - t_ns) / 1e6:.0f} ms after the boundary)"
                    for v in m.variables:
                        variables.append(v)
                        times.append(at)
                        last = previous_errors.get(v.id)
                        errors.append(f"{reason}; last read: {last}" if last else reason)
            n = len(variables)
            total += n
            order = sorted(range(n), key=times.__getitem__)  # time order within the batch
            read_ats: list[datetime | None] = [times[i] for i in order]
            batch = CollectedVariables._columns(
                [variables[i] for i in order],
                [None] * n,
                read_ats,
                [Quality.BAD] * n,
                [errors[i] for i in order],
            )
            f = self._filters.get(context.id)
            if f is not None and f.context is context:  # a BAD sample is always recorded: noted
                for i in order:
                    f.note_bad(variables[i].id, errors[i], (times[i] - _EPOCH) // _MS)
            self._dispatch(context, batch, 0)
        self.counters.missed_samples += total
        if over:
            self._log.error(
                "reader %r: %d samples of boundaries passed without a read are not recorded "
                "(more than %d in one wake-up); they are counted in missed_samples",
                self.reader_type,
                over,
                MAX_MISSED_SAMPLES,
            )


# -- writers ------------------------------------------------------------------------------------

_DATA, _STARTED, _STOPPED = range(3)
_SPOOL_KIND = {_DATA: KIND_DATA, _STARTED: KIND_STARTED, _STOPPED: KIND_STOPPED}
_ENTRY_KIND = {v: k for k, v in _SPOOL_KIND.items()}


@dataclass
class _Entry:
    kind: int
    context: DataCollectionContext
    batch: CollectedVariables | None = None
    done: threading.Event | None = None
    samples: int = 0
    recs: list[SpoolRecord] | None = None  # its records in the spool (several once merged)


@dataclass
class _Lane:
    """The entries of one context, in order, with its retry state."""

    entries: collections.deque[_Entry]
    retry_at: float = 0.0  # monotonic; the lane waits until then after a transient failure
    delay: float = 0.0
    attempts: int = 0
    failing_since: float = 0.0
    last_log: float = 0.0


@dataclass
class _WriterCounters:
    batches: int = 0
    samples_delivered: int = 0
    samples_written: int = 0
    write_errors: int = 0
    retried_ok: int = 0
    lost_batches: int = 0
    lost_samples: int = 0
    dropped_batches: int = 0
    dropped_samples: int = 0
    unwritten_samples: int = 0
    replayed_samples: int = 0
    max_queue_depth: int = 0
    flushes: int = 0


def _concat(batches: list[CollectedVariables]) -> CollectedVariables:
    if len(batches) == 1:
        return batches[0]
    variables: list[Variable] = []
    values: list[Any] = []
    read_ats: list[datetime | None] = []
    qualities: list[Quality] = []
    errors: list[str | None] = []
    for b in batches:
        variables += b.variables
        values += b.values
        read_ats += b.read_ats
        qualities += b.qualities
        errors += b.errors
    return CollectedVariables._columns(variables, values, read_ats, qualities, errors)


class WriterTask:
    """One writer's thread: per-context lanes from a bounded queue, in order, retrying failures.

    ``max_queue_samples`` bounds the samples held in memory (without a spool, a batch that does
    not fit is dropped and counted; with a spool, batches beyond it wait on disk and are read
    back when the writer gets to them); ``retry_max_s`` caps the doubling backoff of a lane
    whose write failed with a transient error; ``max_write_samples`` bounds how many queued
    samples of one context are handed to one ``write()``. With ``spool``, a spooler thread
    appends every entry to the spool (synced every ``spool.sync_s``) before the writer gets it,
    and an entry leaves the spool when its writer call returned; what the spool held at start is
    replayed first. With ``flush_interval_s`` (the writer's, checked by the collector), calls
    count as written only after a later ``flush()`` returned (see the module documentation).
    """

    def __init__(
        self,
        writer: DataWriter,
        name: str,
        logger: logging.Logger,
        max_queue_samples: int,
        retry_max_s: float,
        max_write_samples: int = 100_000,
        spool: Spool | None = None,
        needs_open: bool = False,
        on_written: Callable[[int, int, str], None] | None = None,
        flush_interval_s: float | None = None,
    ) -> None:
        self.writer = writer
        self._flush_s = flush_interval_s
        self._idle_s = min(IDLE_FLUSH_S, flush_interval_s) if flush_interval_s is not None else 0.0
        self._unflushed: list[_Entry] = []  # calls that returned, in order, not yet flushed
        self._unflushed_samples = 0
        self._unflushed_since = 0.0  # monotonic: when the first of them returned
        self._last_call = 0.0  # monotonic: when the last writer call returned
        self._flush_soon = False  # a context stopped: flush before anything else
        self._flush_attempts = 0
        self._flush_retry_at = 0.0
        self._flush_delay = 0.0
        self._flush_failing_since = 0.0
        self._flush_last_log = 0.0
        self._on_written = on_written
        self.name = name
        self._log = logger
        self._max = max_queue_samples
        self._retry_max_s = retry_max_s
        self._max_write = max_write_samples
        self.spool = spool
        self._needs_open = needs_open
        self._cond = threading.Condition(threading.Lock())
        self._lanes: dict[int, _Lane] = {}
        self._ready: collections.deque[int] = collections.deque()  # lanes with work, round-robin
        self._incoming: collections.deque[_Entry] = collections.deque()  # not spooled yet
        self._incoming_samples = 0
        self._keys: dict[int, int] = {}  # id(context) -> its key in the spool
        self._depth = 0  # samples queued (in memory, on disk or being written)
        self._in_memory = 0  # samples of queued batches held in memory
        self._closing = False
        self._spooler_done = spool is None
        self._abandoned = False
        self._last_drop_log = 0.0
        self.counters = _WriterCounters()
        if spool is not None:
            self._replay(spool)
        self._thread = threading.Thread(target=self._run, name=f"dc-writer-{name}", daemon=True)
        self._spooler: threading.Thread | None = None
        if spool is not None:
            self._spooler = threading.Thread(target=self._spool_loop, name=f"dc-spool-{name}", daemon=True)
            self._spooler.start()
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Samples queued or being written (with ``flush_interval_s``: or not flushed yet)."""
        return self._depth

    @property
    def unflushed_samples(self) -> int:
        """Samples the writer took that no ``flush()`` confirmed yet (part of :attr:`queue_depth`)."""
        return self._unflushed_samples

    # -- replay ------------------------------------------------------------------------------------
    def _replay(self, spool: Spool) -> None:
        replayed = spool.replay()
        if not replayed.records and not replayed.open_keys:
            return
        contexts: dict[int, DataCollectionContext] = {}

        def context_of(key: int) -> DataCollectionContext:
            ctx = contexts.get(key)
            if ctx is None:
                extra: dict[str, Any] = {"replayed_from_spool": True}
                if key in replayed.open_keys:
                    extra["ended"] = "abnormal: the collector ended without stopping this run"
                ctx = contexts[key] = decode_context(replayed.contexts[key], extra)
                self._keys[id(ctx)] = key
            return ctx

        samples = 0
        last_us: dict[int, int] = {}
        with self._cond:
            for rec in replayed.records:
                if rec.key not in replayed.contexts:
                    self._log.error(
                        "writer %s: spool record %d names no context; skipped", self.name, rec.seq
                    )
                    spool.ack(rec)
                    continue
                kind = _ENTRY_KIND[rec.kind]
                ctx = context_of(rec.key)
                if kind == _STOPPED:
                    end_us = spool.read(rec)
                    ctx._end_date = _EPOCH + timedelta(microseconds=end_us)
                elif kind == _DATA:
                    last_us[rec.key] = max(last_us.get(rec.key, 0), int(rec.at * 1e6))
                self._append(_Entry(kind, ctx, samples=rec.samples, recs=[rec]))
                samples += rec.samples
            for key in sorted(replayed.open_keys):
                ctx = context_of(key)
                end = _EPOCH + timedelta(microseconds=last_us.get(key, time.time_ns() // 1000))
                ctx._end_date = end
                ctx._deduced = types.MappingProxyType({**ctx._deduced, "end": end.isoformat()})
                rec = spool.append(KIND_STOPPED, key, (end - _EPOCH) // timedelta(microseconds=1))
                self._append(_Entry(_STOPPED, ctx, recs=[rec]))
            self._depth += samples
            self.counters.samples_delivered += samples
            self.counters.replayed_samples += samples
        spool.sync(force=True)
        self._log.warning(
            "writer %s: replaying %d samples of %d context runs from the spool %s first%s",
            self.name,
            samples,
            len(contexts),
            spool.folder,
            f"; {len(replayed.open_keys)} runs had not ended and are closed as ended abnormally"
            if replayed.open_keys
            else "",
        )

    # -- producers ---------------------------------------------------------------------------
    def put_data(self, context: DataCollectionContext, batch: CollectedVariables) -> bool:
        """Queue a batch; never blocks. False (logged loudly, counted) when it cannot be queued."""
        n = len(batch)
        with self._cond:
            c = self.counters
            c.samples_delivered += n
            if self.spool is not None:
                full = self._incoming_samples + n > self._max and self._incoming_samples > 0
            else:
                full = self._depth + n > self._max and self._depth > 0
            if self._abandoned or full:
                c.dropped_batches += 1
                c.dropped_samples += n
                now = time.monotonic()
                if now - self._last_drop_log >= 10.0:
                    self._last_drop_log = now
                    self._log.error(
                        "writer %s: queue full (%d samples queued, limit %d): dropped a batch of %d samples "
                        "of context %d; %d samples dropped so far",
                        self.name,
                        self._depth,
                        self._max,
                        n,
                        context.id,
                        c.dropped_samples,
                    )
                return False
            self._depth += n
            if self._depth > c.max_queue_depth:
                c.max_queue_depth = self._depth
            self._put(_Entry(_DATA, context, batch, samples=n))
        return True

    def put_started(self, context: DataCollectionContext) -> None:
        with self._cond:
            self._put(_Entry(_STARTED, context))

    def put_stopped(self, context: DataCollectionContext) -> threading.Event:
        done = threading.Event()
        with self._cond:
            if self._abandoned:
                done.set()
            else:
                self._put(_Entry(_STOPPED, context, done=done))
        return done

    def _put(self, entry: _Entry) -> None:  # under self._cond
        if self.spool is None:
            self._in_memory += entry.samples
            self._append(entry)
        else:
            self._incoming.append(entry)
            self._incoming_samples += entry.samples
            self._cond.notify_all()

    def _append(self, entry: _Entry) -> None:  # under self._cond
        key = entry.context.id
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(collections.deque())
        if not lane.entries and lane.attempts == 0:
            self._ready.append(key)
        lane.entries.append(entry)
        self._cond.notify_all()

    # -- the spooler (own thread) ----------------------------------------------------------------
    def _spool_loop(self) -> None:
        spool = self.spool
        assert spool is not None
        while True:
            with self._cond:
                while not self._incoming and not self._closing and not self._abandoned:
                    self._cond.wait(spool.sync_s)
                    if not self._incoming:
                        break  # timed out: time to sync
                if self._abandoned:
                    break
                batch = list(self._incoming)
                self._incoming.clear()
                closing = self._closing
            try:
                for entry in batch:
                    self._spool_entry(spool, entry)
                spool.sync(force=closing and not batch)
            except Exception:
                self._log.exception(
                    "writer %s: the spool failed; %d entries are handed on from memory only",
                    self.name,
                    len(batch),
                )
            with self._cond:
                for entry in batch:
                    self._incoming_samples -= entry.samples
                    if self._abandoned:
                        continue
                    if entry.batch is not None and entry.recs is not None and self._in_memory > self._max:
                        entry.batch = None  # on disk: read back when the writer gets to it
                    elif entry.batch is not None:
                        self._in_memory += entry.samples
                    self._append(entry)
                if closing and not self._incoming:
                    break
        try:
            spool.sync(force=True)
        except Exception:
            self._log.exception("writer %s: syncing the spool failed", self.name)
        with self._cond:
            self._spooler_done = True
            self._cond.notify_all()

    def _spool_entry(self, spool: Spool, entry: _Entry) -> None:
        context = entry.context
        key = self._keys.get(id(context))
        if key is None or entry.kind == _STARTED:
            key = self._keys[id(context)] = spool.append_context(context)
        if entry.kind == _DATA:
            assert entry.batch is not None
            payload: Any = encode_batch(entry.batch)
        elif entry.kind == _STOPPED:
            end = context.end_date or datetime.now(UTC)
            payload = (end - _EPOCH) // timedelta(microseconds=1)
        else:
            payload = None
        entry.recs = [spool.append(_SPOOL_KIND[entry.kind], key, payload, entry.samples)]
        spool.sync()

    # -- shutdown ----------------------------------------------------------------------------
    def shutdown(self, timeout: float) -> bool:
        """Write what is queued, close the writer, end the thread; True when that ended in time.

        Otherwise :meth:`abandon` is called: what is still queued is counted as unwritten (and
        stays in the spool when there is one) and the writer is never called again (a call in
        progress cannot be interrupted).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._spooler is not None:
            self._spooler.join(max(0.0, deadline - time.monotonic()))
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self.abandon()
            return False
        self._close_spool()
        return True

    def abandon(self) -> int:
        """Stop calling the writer; count every queued sample as unwritten. Returns that count."""
        with self._cond:
            if self._abandoned:
                return 0
            self._abandoned = True
            left = self._depth
            self.counters.unwritten_samples += left
            self._depth = 0
            for lane in self._lanes.values():
                for entry in lane.entries:
                    if entry.done is not None:
                        entry.done.set()
            for entry in [*self._incoming, *self._unflushed]:
                if entry.done is not None:
                    entry.done.set()
            self._unflushed.clear()
            self._unflushed_samples = 0
            self._lanes.clear()
            self._ready.clear()
            self._cond.notify_all()
        if self._spooler is not None:
            self._spooler.join(1.0)
        self._close_spool()
        return left

    def _close_spool(self) -> None:
        if self.spool is not None:
            try:
                self.spool.close()
            except Exception:
                self._log.exception("writer %s: closing the spool failed", self.name)

    # -- the loop (own thread) -------------------------------------------------------------------
    def _next(self) -> tuple[int, _Lane, _Entry] | Literal["flush"] | None:
        """The next piece of work (merging a lane's queued batches), ``"flush"`` when the writer is
        to be flushed, or None to end the thread."""
        with self._cond:
            while True:
                if self._abandoned:
                    return None
                now = time.monotonic()
                waiting = [(lane.retry_at, key) for key, lane in self._lanes.items() if lane.attempts]
                for retry_at, key in sorted(waiting):
                    if retry_at <= now and key not in self._ready:
                        self._ready.appendleft(key)
                can_flush = bool(self._unflushed) and (
                    not self._flush_attempts or now >= self._flush_retry_at
                )
                if can_flush and (self._flush_soon or now - self._unflushed_since >= (self._flush_s or 0.0)):
                    return _FLUSH
                while self._ready:
                    key = self._ready.popleft()
                    lane = self._lanes.get(key)
                    if lane is None or not lane.entries:
                        continue
                    if lane.attempts and lane.retry_at > now:
                        continue
                    return key, lane, self._take(lane)
                finished = (
                    self._closing
                    and self._spooler_done
                    and not self._incoming
                    and not any(lane.entries for lane in self._lanes.values())
                )
                if can_flush and (finished or now - self._last_call >= self._idle_s):
                    return _FLUSH  # nothing else to do (or the end): flush what the writer holds
                if finished and not self._unflushed:
                    return None
                deadlines = [r for r, _ in waiting]
                if self._unflushed:
                    if self._flush_attempts:
                        deadlines.append(self._flush_retry_at)
                    else:
                        deadlines.append(self._unflushed_since + (self._flush_s or 0.0))
                        deadlines.append(self._last_call + self._idle_s)
                timeout = min(deadlines, default=None)
                self._cond.wait(None if timeout is None else max(0.0, timeout - now))

    def _take(self, lane: _Lane) -> _Entry:  # under self._cond
        first = lane.entries[0]
        if first.kind != _DATA or first.batch is None or len(lane.entries) == 1:
            return first
        batches: list[CollectedVariables] = []
        recs: list[SpoolRecord] = []
        size = 0
        for entry in lane.entries:
            if (
                entry.kind != _DATA
                or entry.batch is None
                or (batches and size + entry.samples > self._max_write)
            ):
                break
            batches.append(entry.batch)
            recs += entry.recs or ()
            size += entry.samples
        if len(batches) == 1:
            return first
        for _ in batches:
            lane.entries.popleft()
        merged = _Entry(_DATA, first.context, _concat(batches), samples=size, recs=recs or None)
        lane.entries.appendleft(merged)
        return merged

    def _run(self) -> None:
        if self._needs_open and not self._open_with_retry():
            return
        while True:
            work = self._next()
            if work is None:
                break
            if isinstance(work, str):
                if not self._flush():
                    return  # close gave up on us
                continue
            key, lane, entry = work
            if entry.recs and self.spool is not None and self._skip_dropped(key, lane, entry):
                continue
            outcome, exc = self._call(entry)
            if outcome is None and entry.recs and self.spool is not None:
                self._quarantine(entry, exc)
            with self._cond:
                if self._abandoned:
                    return  # close gave up on us: counted as unwritten, nothing more is called
                self._settle(key, lane, entry, outcome, exc)
        with self._cond:
            if self._abandoned:
                return
        try:
            with self.writer.lock:
                self.writer.close()
        except Exception:
            self._log.exception("closing writer %s failed", self.name)

    def _open_with_retry(self) -> bool:
        """Open a writer whose ``open()`` failed at start, with capped backoff, while data spools."""
        delay = 0.1
        attempts = 0
        while True:
            with self._cond:
                if self._abandoned or (self._closing and self._spooler_done and not self._lanes):
                    return False
            attempts += 1
            try:
                with self.writer.lock:
                    self.writer.open()
            except Exception as exc:
                if attempts == 1 or attempts % 20 == 0:
                    self._log.error(
                        "writer %s: open() failed (%s: %s); retrying with backoff while data spools",
                        self.name,
                        type(exc).__name__,
                        exc,
                    )
                with self._cond:
                    self._cond.wait(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            self._log.warning("writer %s: opened after %d attempts", self.name, attempts)
            return True

    def _skip_dropped(self, key: int, lane: _Lane, entry: _Entry) -> bool:
        """An entry whose spool segment was dropped (spool full) is counted dropped, not written."""
        assert self.spool is not None and entry.recs is not None
        dropped = self.spool.dropped_records
        if not any(r.seq in dropped for r in entry.recs):
            return False
        with self._cond:
            if self._abandoned:
                return True
            lane.entries.popleft()
            if entry.kind == _DATA:
                self.counters.dropped_batches += 1
                self.counters.dropped_samples += entry.samples
                self._depth -= entry.samples
                if entry.batch is not None:
                    self._in_memory -= entry.samples
            if entry.done is not None:
                entry.done.set()
            if lane.entries:
                self._ready.append(key)
            now = time.monotonic()
            if now - self._last_drop_log >= 10.0:
                self._last_drop_log = now
                self._log.error(
                    "writer %s: the spool reached its limit of %d bytes: its oldest data is DROPPED "
                    "(%d samples so far)",
                    self.name,
                    self.spool.max_bytes,
                    self.counters.dropped_samples,
                )
        return True

    def _quarantine(self, entry: _Entry, exc: BaseException | None) -> None:
        assert self.spool is not None and entry.recs is not None
        reason = f"{type(exc).__name__}: {exc}"
        for rec in entry.recs:
            try:
                path = self.spool.quarantine(rec, reason)
            except Exception:
                self._log.exception("writer %s: quarantining spool record %d failed", self.name, rec.seq)
            else:
                self._log.error("writer %s: batch quarantined in %s: %s", self.name, path, reason)
        entry.recs = None  # acknowledged by the quarantine

    def _call(self, entry: _Entry) -> tuple[bool | None, BaseException | None]:
        """Call the writer for ``entry``: (True, None) ok, (False, exc) transient, (None, exc) permanent."""
        writer = self.writer
        context = entry.context
        batch: CollectedVariables | None = entry.batch
        try:
            if entry.kind == _DATA and batch is None:
                assert self.spool is not None and entry.recs is not None
                batch = _concat([decode_batch(self.spool.read(r), context) for r in entry.recs])
        except Exception as exc:
            self._log.exception("writer %s: reading a batch back from the spool failed", self.name)
            return None, exc
        try:
            with writer.lock:
                if entry.kind == _DATA:
                    assert batch is not None
                    writer.write(context, batch)
                elif entry.kind == _STARTED:
                    writer.context_started(context)
                else:
                    writer.context_stopped(context)
        except Exception as exc:
            transient = _is_transient(writer, exc, self._log, self.name)
            return (False if transient else None), exc
        return True, None

    def _settle(
        self, key: int, lane: _Lane, entry: _Entry, outcome: bool | None, exc: BaseException | None
    ) -> None:  # under self._cond
        c = self.counters
        what = self._what(entry)
        now = time.monotonic()
        if outcome is False:  # transient: the lane backs off, the others go on
            c.write_errors += 1
            lane.attempts += 1
            if lane.attempts == 1:
                lane.failing_since = lane.last_log = now
                lane.delay = 0.05
                self._log.warning(
                    "writer %s: %s of context %d failed (%s: %s); retrying with backoff up to %.1f s",
                    self.name,
                    what,
                    entry.context.id,
                    type(exc).__name__,
                    exc,
                    self._retry_max_s,
                )
            else:
                lane.delay = min(lane.delay * 2, self._retry_max_s)
                if now - lane.last_log >= 60.0:
                    lane.last_log = now
                    self._log.error(
                        "writer %s: %s of context %d still failing after %d attempts over %.0f s "
                        "(%s: %s); %d samples queued",
                        self.name,
                        what,
                        entry.context.id,
                        lane.attempts,
                        now - lane.failing_since,
                        type(exc).__name__,
                        exc,
                        self._depth,
                    )
            lane.retry_at = now + lane.delay
            self._cond.notify_all()
            return
        lane.entries.popleft()
        if outcome and self._flush_s is not None:
            self._defer(key, lane, entry, now)
            return
        self._account(entry, written=bool(outcome))
        if outcome is None:
            c.write_errors += 1
            self._log.error(
                "writer %s: %s of context %d failed with an error retrying cannot fix and is LOST%s: %s: %s",
                self.name,
                what,
                entry.context.id,
                " (kept in the spool's quarantine)" if self.spool is not None else "",
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        elif lane.attempts:
            c.retried_ok += 1
            self._log.warning(
                "writer %s: %s of context %d written after %d attempts over %.1f s",
                self.name,
                what,
                entry.context.id,
                lane.attempts + 1,
                now - lane.failing_since,
            )
        lane.attempts = 0
        lane.delay = 0.0
        if entry.done is not None:
            entry.done.set()
        if lane.entries:
            self._ready.append(key)
        elif entry.kind == _STOPPED:
            del self._lanes[key]
            self._keys.pop(id(entry.context), None)

    def _account(self, entry: _Entry, *, written: bool) -> None:  # under self._cond
        """``entry`` leaves this task: out of the spool (a lost one was quarantined already) and
        counted written or lost."""
        if entry.recs and self.spool is not None:
            for rec in entry.recs:
                self.spool.ack(rec)
        if entry.kind == _DATA:
            c = self.counters
            if written:
                c.batches += 1
                c.samples_written += entry.samples
                if self._on_written is not None:
                    self._on_written(entry.context.id, entry.samples, self.name)
            else:
                c.lost_batches += 1
                c.lost_samples += entry.samples
            self._depth -= entry.samples
            if entry.batch is not None:  # a deferred (flushed) entry gave its batch up already
                self._in_memory -= entry.samples

    def _defer(self, key: int, lane: _Lane, entry: _Entry, now: float) -> None:  # under self._cond
        """A call of a writer with ``flush_interval_s`` returned: it counts once a flush confirms it."""
        if not self._unflushed:
            self._unflushed_since = now
        self._unflushed.append(entry)
        self._last_call = now
        if entry.kind == _DATA:
            self._unflushed_samples += entry.samples
            if entry.batch is not None:
                self._in_memory -= entry.samples
                entry.batch = None  # the writer holds it now: only its spool records are kept
        elif entry.kind == _STOPPED:
            self._flush_soon = True  # stop() waits for it: flush before anything else
        if lane.attempts:
            self.counters.retried_ok += 1
            self._log.warning(
                "writer %s: %s of context %d taken after %d attempts over %.1f s",
                self.name,
                self._what(entry),
                entry.context.id,
                lane.attempts + 1,
                now - lane.failing_since,
            )
        lane.attempts = 0
        lane.delay = 0.0
        if lane.entries:
            self._ready.append(key)
        elif entry.kind == _STOPPED:
            del self._lanes[key]
            self._keys.pop(id(entry.context), None)

    def _flush(self) -> bool:
        """Flush the writer; settle the calls it confirms (or, on a permanent error, loses).

        A transient error is retried later (only the flush: the writer keeps what it holds).
        False when the task was abandoned meanwhile.
        """
        with self._cond:
            entries = list(self._unflushed)  # only this thread adds to it
        exc: BaseException | None = None
        try:
            with self.writer.lock:
                self.writer.flush()
            outcome: bool | None = True
        except Exception as error:
            exc = error
            outcome = False if _is_transient(self.writer, error, self._log, self.name) else None
        if outcome is None and self.spool is not None:
            for entry in entries:
                if entry.recs:
                    self._quarantine(entry, exc)
        with self._cond:
            if self._abandoned:
                return False
            c = self.counters
            now = time.monotonic()
            if outcome is False:
                c.write_errors += 1
                self._flush_attempts += 1
                if self._flush_attempts == 1:
                    self._flush_failing_since = self._flush_last_log = now
                    self._flush_delay = 0.05
                    self._log.warning(
                        "writer %s: flush() failed (%s: %s); %d samples it holds are kept in the spool "
                        "and flush() is retried with backoff up to %.1f s",
                        self.name,
                        type(exc).__name__,
                        exc,
                        self._unflushed_samples,
                        self._retry_max_s,
                    )
                else:
                    self._flush_delay = min(self._flush_delay * 2, self._retry_max_s)
                    if now - self._flush_last_log >= 60.0:
                        self._flush_last_log = now
                        self._log.error(
                            "writer %s: flush() still failing after %d attempts over %.0f s (%s: %s); "
                            "%d samples not confirmed",
                            self.name,
                            self._flush_attempts,
                            now - self._flush_failing_since,
                            type(exc).__name__,
                            exc,
                            self._unflushed_samples,
                        )
                self._flush_retry_at = now + self._flush_delay
                self._cond.notify_all()
                return True
            del self._unflushed[: len(entries)]
            self._unflushed_samples = sum(e.samples for e in self._unflushed if e.kind == _DATA)
            self._flush_soon = False
            if outcome:
                c.flushes += 1
                if self._flush_attempts:
                    c.retried_ok += 1
                    self._log.warning(
                        "writer %s: flushed after %d attempts over %.1f s",
                        self.name,
                        self._flush_attempts + 1,
                        now - self._flush_failing_since,
                    )
            else:
                c.write_errors += 1
                lost = sum(e.samples for e in entries if e.kind == _DATA)
                self._log.error(
                    "writer %s: flush() failed with an error retrying cannot fix: %d samples it held are "
                    "LOST%s: %s: %s",
                    self.name,
                    lost,
                    " (kept in the spool's quarantine)" if self.spool is not None else "",
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                )
            self._flush_attempts = 0
            self._flush_delay = 0.0
            for entry in entries:
                self._account(entry, written=bool(outcome))
                if entry.done is not None:
                    entry.done.set()
            self._cond.notify_all()
        return True

    @staticmethod
    def _what(entry: _Entry) -> str:
        if entry.kind == _DATA:
            return f"a batch of {entry.samples} samples"
        return "context_started" if entry.kind == _STARTED else "context_stopped"


def _is_transient(writer: DataWriter, exc: BaseException, log: logging.Logger, name: str) -> bool:
    """``writer.is_transient(exc)``; an error it raises itself makes ``exc`` permanent (logged)."""
    try:
        return bool(writer.is_transient(exc))
    except Exception:
        log.exception("writer %s: is_transient raised; the error is taken as permanent", name)
        return False
