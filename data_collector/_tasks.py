"""The threads of the collector: one tick loop per reader type, one queue consumer per writer."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from ._model import CollectedVariables, DataCollectionContext, Quality
from ._reader import DataReader
from ._schedule import ReaderPlan, TickPlan
from ._writer import DataWriter

__all__ = ["Clock", "ReaderTask", "SystemClock", "WriterTask"]

_NS_PER_MS = 1_000_000
_LATENESS_WINDOW = 10_000
_FINAL_SLEEP_NS = _NS_PER_MS // 2  # the last stretch before a deadline is slept, not waited
NO_VALUE = "the reader set no value"


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


Dispatch = Callable[[DataCollectionContext, CollectedVariables], None]


class ReaderTask:
    """The tick loop of one reader type: sleeps to absolute wall-clock deadlines, reads, dispatches."""

    def __init__(self, reader: DataReader, logger: logging.Logger, dispatch: Dispatch, clock: Clock) -> None:
        self.reader = reader
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
        self.counters = _ReaderCounters()
        self._lateness: collections.deque[int] = collections.deque(maxlen=_LATENESS_WINDOW)
        self._thread = threading.Thread(target=self._run, name=f"dc-reader-{self.reader_type}", daemon=True)
        self._thread.start()

    # -- control (collector threads) -------------------------------------------------------
    @property
    def plan(self) -> ReaderPlan | None:
        return self._plan

    def set_plan(self, plan: ReaderPlan | None, *, barrier: float | None = None) -> bool:
        """Install a new plan.

        With ``barrier`` (seconds), wait until no tick of the old plan runs any more; False when a
        read was still busy after that long (its results then reach only contexts still accepting).
        """
        with self._cond:
            self._plan = plan
            self._version += 1
            self._cond.notify_all()
        if barrier is None:
            return True
        if threading.current_thread() is self._thread:
            return False  # called from inside read(): the tick in progress is this very call
        if not self._tick_lock.acquire(timeout=barrier):
            return False
        self._tick_lock.release()
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def lateness_us(self) -> tuple[int, int, int, int]:
        """(count, p50, p99, max) tick lateness in microseconds over the recent ticks."""
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
        tick_ns = 0
        deadline: int | None = None  # the next tick not run yet
        while True:
            with cond:
                while not self._closing and (self._plan is None or self._plan.empty):
                    deadline = None  # idle: a later plan starts afresh
                    cond.wait()
                if self._closing:
                    return
                if self._version != version:
                    plan, version = self._plan, self._version
                    assert plan is not None
                    tick_ns = plan.tick_ms * _NS_PER_MS
                    # A new plan keeps the tick that was pending: its first boundary at or after it
                    # (so starting a context just before a boundary costs the others nothing).
                    now = clock.time_ns()
                    base = now if deadline is None else min(now, deadline)
                    deadline = -(-base // tick_ns) * tick_ns
            assert plan is not None and deadline is not None
            now = clock.time_ns()
            if deadline - now > 2 * tick_ns:  # the wall clock stepped back: resynchronise
                deadline = (now // tick_ns + 1) * tick_ns
            if now < deadline:
                # Wait on the condition (so a new plan or close wakes us at once) until shortly
                # before the deadline, then sleep the last stretch: time.sleep wakes up more
                # precisely than a condition wait, and the stretch is too short to matter for control.
                stepped = False
                with cond:
                    while not self._closing and self._version == version:
                        remaining = deadline - clock.time_ns()
                        if remaining <= _FINAL_SLEEP_NS:
                            break
                        if remaining > 2 * tick_ns:
                            stepped = True  # the wall clock stepped back while we waited
                            break
                        cond.wait((remaining - _FINAL_SLEEP_NS) / 1e9)
                    if self._closing or self._version != version or stepped:
                        continue
                remaining = deadline - clock.time_ns()
                if remaining > 0:
                    time.sleep(remaining / 1e9)
            now = clock.time_ns()
            late = now - deadline
            if late >= tick_ns:
                skipped = late // tick_ns
                self.counters.missed_ticks += skipped
                deadline += skipped * tick_ns
                late -= skipped * tick_ns
            self._lateness.append(late)
            with self._tick_lock:
                if self._version != version:
                    continue  # re-planned meanwhile: this deadline is evaluated against the new plan
                tick_plan = plan.due(deadline // _NS_PER_MS)
                if tick_plan is not None:
                    try:
                        self._tick(tick_plan)
                    except Exception:  # never let one tick end the loop
                        self.counters.read_errors += 1
                        self._log.exception("reader %r: a tick failed; collection goes on", self.reader_type)
            deadline += tick_ns

    def _tick(self, tick_plan: TickPlan) -> None:
        counters = self.counters
        counters.ticks += 1
        started = self._clock.time_ns()
        read_at = datetime.fromtimestamp(started / 1e9, UTC)
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
        elapsed_ms = (self._clock.time_ns() - started) / _NS_PER_MS
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
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:  # items left without a value are BAD
            bad_q = Quality.BAD
            for i in missing:
                qualities[i] = bad_q
                if errors[i] is None:
                    errors[i] = NO_VALUE
        if None in read_ats:
            for i in [i for i, t in enumerate(read_ats) if t is None]:
                read_ats[i] = read_at
        counters.samples += n
        counters.bad_samples += qualities.count(Quality.BAD)
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
            dispatch(delivery.context, out)


# -- writers ------------------------------------------------------------------------------------

_DATA, _STARTED, _STOPPED, _BARRIER = range(4)


@dataclass
class _Entry:
    kind: int
    context: DataCollectionContext | None
    batch: CollectedVariables | None = None
    done: threading.Event | None = None

    @property
    def samples(self) -> int:
        return len(self.batch) if self.batch is not None else 0


@dataclass
class _WriterCounters:
    batches: int = 0
    samples_written: int = 0
    write_errors: int = 0
    retried_ok: int = 0
    lost_batches: int = 0
    lost_samples: int = 0
    dropped_batches: int = 0
    dropped_samples: int = 0
    unwritten_samples: int = 0
    max_queue_depth: int = 0


class WriterTask:
    """One writer's thread: takes batches from a bounded queue, in order, retrying failures."""

    def __init__(
        self,
        writer: DataWriter,
        name: str,
        logger: logging.Logger,
        max_queue_samples: int,
        retry_s: float,
    ) -> None:
        self.writer = writer
        self.name = name
        self._log = logger
        self._max = max_queue_samples
        self._retry_s = retry_s
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[_Entry] = collections.deque()
        self._depth = 0
        self._closing = False
        self._last_drop_log = 0.0
        self.counters = _WriterCounters()
        self._thread = threading.Thread(target=self._run, name=f"dc-writer-{name}", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Samples queued or being written."""
        return self._depth

    def put_data(self, context: DataCollectionContext, batch: CollectedVariables) -> bool:
        """Queue a batch; never blocks. False (logged loudly, counted) when the queue is full."""
        n = len(batch)
        with self._cond:
            if self._depth + n > self._max and self._depth > 0:  # an empty queue takes any batch
                c = self.counters
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
            self._queue.append(_Entry(_DATA, context, batch))
            self._depth += n
            if self._depth > self.counters.max_queue_depth:
                self.counters.max_queue_depth = self._depth
            self._cond.notify()
        return True

    def put_started(self, context: DataCollectionContext) -> None:
        self._put(_Entry(_STARTED, context))

    def put_stopped(self, context: DataCollectionContext) -> threading.Event:
        done = threading.Event()
        self._put(_Entry(_STOPPED, context, done=done))
        return done

    def barrier(self) -> threading.Event:
        done = threading.Event()
        self._put(_Entry(_BARRIER, None, done=done))
        return done

    def _put(self, entry: _Entry) -> None:
        with self._cond:
            self._queue.append(entry)
            self._cond.notify()

    def shutdown(self, timeout: float | None = None) -> bool:
        """Finish what is queued, then end the thread. True when the thread ended in time."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                entry = self._queue.popleft()
            try:
                self._handle(entry)
            finally:
                if entry.kind == _DATA:
                    with self._cond:
                        self._depth -= entry.samples
                if entry.done is not None:
                    entry.done.set()

    def _handle(self, entry: _Entry) -> None:
        writer = self.writer
        context = entry.context
        if entry.kind == _BARRIER or context is None:
            return
        if entry.kind == _DATA:
            batch = entry.batch
            assert batch is not None
            if self._attempt(
                lambda: writer.write(context, batch), f"a batch of {len(batch)} samples", context
            ):
                self.counters.batches += 1
                self.counters.samples_written += len(batch)
            else:
                self.counters.lost_batches += 1
                self.counters.lost_samples += len(batch)
        elif entry.kind == _STARTED:
            self._attempt(lambda: writer.context_started(context), "context_started", context)
        else:
            self._attempt(lambda: writer.context_stopped(context), "context_stopped", context)

    def _attempt(self, call: Callable[[], None], what: str, context: DataCollectionContext) -> bool:
        """Run ``call`` under the writer's lock, retrying with backoff for up to ``retry_s``."""
        lock = self.writer.lock
        deadline = time.monotonic() + self._retry_s
        delay = 0.05
        attempts = 0
        while True:
            attempts += 1
            try:
                with lock:
                    call()
            except Exception as exc:
                self.counters.write_errors += 1
                if time.monotonic() + delay > deadline:
                    self._log.error(
                        "writer %s: %s of context %d failed %d times over %.1f s and is LOST: %s: %s",
                        self.name,
                        what,
                        context.id,
                        attempts,
                        self._retry_s,
                        type(exc).__name__,
                        exc,
                        exc_info=True,
                    )
                    return False
                if attempts == 1:
                    self._log.warning(
                        "writer %s: %s of context %d failed (%s: %s); retrying for up to %.1f s",
                        self.name,
                        what,
                        context.id,
                        type(exc).__name__,
                        exc,
                        self._retry_s,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                if attempts > 1:
                    self.counters.retried_ok += 1
                    self._log.warning(
                        "writer %s: %s of context %d written after %d attempts",
                        self.name,
                        what,
                        context.id,
                        attempts,
                    )
                return True
