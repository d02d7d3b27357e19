"""The engine's promises under load and faults: next-due wake-ups, no silent gaps, bounded and
accounted shutdown, no lock held across user code, permanent vs passing write errors, times.

Each test here failed on the engine before the next-due rewrite (tick at the GCD, skipped
boundaries forgotten, unbounded close, the operation lock held across listeners and drains).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _util import LOG, CountingReader, EventLog, RecordingWriter, Row, V, wait_for

from data_collector import (
    CollectedVariables,
    CollectorClosedError,
    ConfigurationError,
    DataCollectionContext,
    DataCollectionListener,
    DataCollector,
    DataReader,
    DataWriter,
    Quality,
)
from data_collector._schedule import PLAN_CACHE_SIZE, ReaderPlan

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(milliseconds=1)


def assert_no_gaps(rows: list[Row], interval: int, *, at_least: int) -> None:
    """Every boundary from the first to the last row has exactly one row (GOOD or BAD)."""
    boundaries = [epoch_ms(r.read_at) // interval * interval for r in rows]
    assert len(rows) >= at_least, f"only {len(rows)} rows"
    assert len(set(boundaries)) == len(boundaries), "two samples for one boundary"
    ordered = sorted(boundaries)
    gaps = [(a, b) for a, b in itertools.pairwise(ordered) if b - a != interval]
    assert not gaps, f"boundaries without a sample: {gaps[:5]}"
    for r in rows:
        if r.quality is Quality.BAD:
            assert r.error, r


class Busy:
    """A CPU-bound Python thread in the same process (holds the GIL in 5 ms slices)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        x = 0
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            for i in range(10_000):
                x += i * i

    def __enter__(self) -> Busy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# -- next-due scheduling ---------------------------------------------------------------------------


def test_near_coprime_intervals_wake_twice_a_second_and_miss_nothing_beside_a_busy_thread() -> None:
    reader = CountingReader()
    writer = RecordingWriter()
    with Busy(), DataCollector(LOG, [reader], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 1000), V(2, 1001)]))
        wait_for(lambda: len(writer.of(1, 1)) >= 5 and len(writer.of(1, 2)) >= 5, 15, "five samples each")
        stats = c.stats().readers["random"]
    assert stats.tick_ms == 1
    # about two wake-ups a second (the GCD tick would be 1,000 a second)
    assert stats.ticks <= 16, stats
    assert stats.missed_ticks <= 2, stats  # counts only boundaries at which something was due
    assert_no_gaps(writer.of(1, 1), 1000, at_least=5)
    assert_no_gaps(writer.of(1, 2), 1001, at_least=5)
    assert all(r.quality is Quality.GOOD for r in writer.rows)


def test_plan_memo_is_bounded() -> None:
    intervals = [100 + 7 * k for k in range(30)]
    variables = [V(i, intervals[i % 30]) for i in range(300)]
    plan = ReaderPlan.build("random", [DataCollectionContext(1, variables, min_interval_ms=1)])
    t = 1_700_000_000_000
    for _ in range(20_000):
        t = plan.next_due(t)
        assert plan.plan_for(plan.due_intervals(t - 1, t)) is not None
    assert len(plan._cache) <= PLAN_CACHE_SIZE


def test_next_due_and_missed_arithmetic() -> None:
    a = DataCollectionContext(1, [V(1, 300)], min_interval_ms=1)
    b = DataCollectionContext(2, [V(1, 200), V(2, 1000)], min_interval_ms=1)
    plan = ReaderPlan.build("random", [a, b], {1: 0, 2: 0})
    assert plan.next_due(0) == 200 and plan.next_due(200) == 300 and plan.next_due(599) == 600
    assert plan.last_due(599) == 400
    # a wake-up at 1000 covering (0, 1000]: 300 ms -> 900 read, 300 and 600 missed for context 1;
    # 200 ms -> 1000 read, 200..800 missed for context 2; 1000 ms -> 1000 read, nothing missed
    missed, over = plan.missed(0, 1000, 1000)
    got = {(m.context.id, m.interval_ms): (m.times_ms, [v.id for v in m.variables]) for m in missed}
    assert got == {(1, 300): ((300, 600), [1]), (2, 200): ((200, 400, 600, 800), [1])}
    assert over == 0
    tick = plan.plan_for(plan.due_intervals(0, 1000))
    assert tick is not None and [v.id for v in tick.variables] == [1, 2]
    # the bound keeps the newest boundaries and says how many more there were
    missed, over = plan.missed(0, 1000, 3)
    assert sum(m.samples for m in missed) <= 3 and over == 6 - sum(m.samples for m in missed)
    # a context wants no missed samples from before it started
    late = ReaderPlan.build("random", [a, b], {1: 0, 2: 550})
    missed, _ = late.missed(0, 1000, 1000)
    assert {m.context.id: m.times_ms for m in missed} == {1: (300, 600), 2: (600, 800)}


# -- no silent gaps --------------------------------------------------------------------------------


class FrozenDevice(DataReader):
    """A device that accepts the connection but answers nothing: every read times out."""

    reader_type = "plc"

    def __init__(self, timeout_s: float = 0.5) -> None:
        super().__init__()
        self.timeout_s = timeout_s
        self.reads = 0

    def read(self, variables: CollectedVariables) -> None:
        self.reads += 1
        time.sleep(self.timeout_s)
        for item in variables:
            item.set_bad(f"TimeoutError: no answer within {self.timeout_s} s")


#: context keywords: every sample recorded, or on change (a BAD sample is never suppressed, and a
#: counter changes at every read, so on change records the same samples)
RECORDING = pytest.mark.parametrize(
    "recording", [{}, {"deadband": 0, "max_age_s": 60}], ids=["every-sample", "on-change"]
)


@RECORDING
def test_frozen_device_gives_one_bad_sample_per_due_boundary(recording: dict[str, Any]) -> None:
    writer = RecordingWriter()
    with DataCollector(LOG, [FrozenDevice()], [writer]) as c:
        c.start(
            DataCollectionContext(1, [V(1, 100, "hr:0", rt="plc"), V(2, 200, "hr:1", rt="plc")], **recording)
        )
        wait_for(lambda: len(writer.of(1, 1)) >= 30, 15, "samples of a frozen device")
        c.stop(1)
        stats = c.stats()
    rows1, rows2 = writer.of(1, 1), writer.of(1, 2)
    assert_no_gaps(rows1, 100, at_least=30)
    assert_no_gaps(rows2, 200, at_least=10)
    assert all(r.quality is Quality.BAD for r in rows1 + rows2)
    missed = [r.error for r in rows1 + rows2 if r.error and r.error.startswith("missed:")]
    assert len(missed) >= 20
    # the reason of a missed boundary says why, and carries the device's own error
    # (a variable not read yet when its boundary passed has no device error to carry: at most one each)
    assert sum("TimeoutError" not in e for e in missed) <= 2
    running = [e for e in missed if "previous read still running" in e]
    assert len(running) >= 0.8 * len(missed)  # (a boundary just after a read ended: "reader busy")
    assert stats.readers["plc"].missed_samples == len(missed)
    assert stats.contexts == {} and stats.writers["rec"].samples_written == len(rows1) + len(rows2)
    assert stats.readers["plc"].suppressed_samples == 0


def test_overrunning_reads_of_shared_variables_leave_no_gap_in_either_context() -> None:
    reader = CountingReader(delay_s=0.35)
    writer = RecordingWriter()
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 300)]))
        c.start(DataCollectionContext(2, [V(1, 200)]))
        wait_for(lambda: len(writer.of(1)) >= 12 and len(writer.of(2)) >= 18, 20, "samples")
    assert_no_gaps(writer.of(1, 1), 300, at_least=12)
    assert_no_gaps(writer.of(2, 1), 200, at_least=18)
    good = [r for r in writer.rows if r.quality is Quality.GOOD]
    assert len(good) >= 8  # values are still read (once per wake-up) between the missed boundaries
    # one read serves both contexts: the same value with the same read_at
    by_time: dict[datetime, set[Any]] = defaultdict(set)
    for r in good:
        by_time[r.read_at].add(r.value)
    assert all(len(values) == 1 for values in by_time.values())


@RECORDING
def test_a_late_wake_up_makes_the_boundaries_it_passed_bad_with_reader_busy(
    recording: dict[str, Any],
) -> None:
    gate = threading.Event()

    class OnceSlow(CountingReader):
        def read(self, variables: CollectedVariables) -> None:
            super().read(variables)
            if len(self.calls) == 3:
                gate.wait(1.0)  # one read blocks for ~1 s, then everything is fast again

    writer = RecordingWriter()
    with DataCollector(LOG, [OnceSlow()], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 50)], min_interval_ms=10, **recording))
        wait_for(lambda: len(writer.of(1)) >= 50, 15, "samples after the slow read")
        stats = c.stats().readers["random"]
    rows = writer.of(1, 1)
    assert_no_gaps(rows, 50, at_least=50)
    missed = [r for r in rows if r.quality is Quality.BAD]
    assert 15 <= len(missed) <= 22, len(missed)  # ~1 s of 50 ms boundaries
    assert stats.missed_ticks == len(missed) == stats.missed_samples
    assert stats.suppressed_samples == 0


def test_wall_clock_jumping_forward_does_not_flood_the_store() -> None:
    class OffsetClock:
        offset_ns = 0

        def time_ns(self) -> int:
            return time.time_ns() + self.offset_ns

    clock = OffsetClock()
    writer = RecordingWriter()
    with DataCollector(LOG, [CountingReader()], [writer], clock=clock) as c:
        c.start(DataCollectionContext(1, [V(1, 10)], min_interval_ms=10))
        wait_for(lambda: len(writer.rows) >= 5)
        clock.offset_ns = 3600 * 10**9  # the clock steps forward one hour
        n = len(writer.rows)
        wait_for(lambda: len(writer.rows) >= n + 20, 10, "ticks after the step")
        stats = c.stats().readers["random"]
    assert stats.missed_samples < 100  # not 360,000 BAD samples for an hour that did not happen


# -- bounded, accounted shutdown -------------------------------------------------------------------


def _identity(stats: Any) -> None:
    for w in stats.writers.values():
        assert w.samples_delivered == (
            w.samples_written + w.lost_samples + w.dropped_samples + w.unwritten_samples + w.queue_depth
        ), w


class HungWriter(RecordingWriter):
    """Writes the first batches, then hangs in write() until released; records calls after close."""

    def __init__(self, ok_batches: int = 3) -> None:
        super().__init__("hung")
        self.ok_batches = ok_batches
        self.release = threading.Event()
        self.calls_after_close: list[str] = []
        self.collector_closed = False

    def _note(self, what: str) -> None:
        if self.collector_closed:
            self.calls_after_close.append(what)

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        self._note("write")
        if len(self.batches) >= self.ok_batches:
            self.release.wait(30)
        super().write(context, variables)

    def context_stopped(self, context: DataCollectionContext) -> None:
        self._note("context_stopped")
        super().context_stopped(context)

    def close(self) -> None:
        self._note("close")
        super().close()


def test_close_is_bounded_by_drain_timeout_and_counts_what_is_left_unwritten() -> None:
    writer = HungWriter()
    c = DataCollector(LOG, [CountingReader()], [writer], drain_timeout_s=1.0)
    c.start(DataCollectionContext(1, [V(1, 20)], min_interval_ms=10))
    wait_for(lambda: c.stats().writers["hung"].queue_depth >= 20, 10, "a backlog behind the hung write")
    t0 = time.monotonic()
    c.close()
    took = time.monotonic() - t0
    writer.collector_closed = True
    assert took < 1.0 + 1.5, took
    stats = c.stats()
    w = stats.writers["hung"]
    assert w.unwritten_samples >= 20 and w.queue_depth == 0
    _identity(stats)
    writer.release.set()  # the hung write returns now: nothing else may be called
    time.sleep(0.5)
    assert writer.calls_after_close == []
    assert writer.closed == 0  # not even close(): it was still inside write()
    assert c.stats().writers["hung"] == w  # and the figures stay as reported


def test_close_never_waits_on_a_writer_lock_held_elsewhere() -> None:
    writer = RecordingWriter()
    c = DataCollector(LOG, [CountingReader()], [writer], drain_timeout_s=0.5)
    c.start(DataCollectionContext(1, [V(1, 20)], min_interval_ms=10))
    wait_for(lambda: len(writer.rows) >= 3)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with writer.lock:
            held.set()
            release.wait(20)

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert held.wait(5)
    t0 = time.monotonic()
    c.close()
    assert time.monotonic() - t0 < 0.5 + 1.5
    release.set()
    t.join(5)
    _identity(c.stats())


def test_stop_returns_within_drain_timeout_whatever_the_writer_does() -> None:
    writer = HungWriter(ok_batches=1)
    c = DataCollector(LOG, [CountingReader()], [writer], drain_timeout_s=0.8)
    try:
        c.start(DataCollectionContext(1, [V(1, 20)], min_interval_ms=10))
        wait_for(lambda: len(writer.batches) >= 1)
        t0 = time.monotonic()
        c.stop(1)
        assert time.monotonic() - t0 < 0.8 + 1.0
    finally:
        c.close()
        writer.release.set()


@pytest.mark.parametrize("recording", [{}, {"deadband": 1.5}], ids=["every-sample", "on-change"])
def test_accounting_identity_across_faults(recording: dict[str, Any]) -> None:
    class Faulty(RecordingWriter):
        """Fails transiently, then permanently for one batch, then hangs at the end."""

        def __init__(self) -> None:
            super().__init__("faulty")
            self.n = 0
            self.release = threading.Event()

        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            self.n += 1
            if self.n in (2, 3):
                raise ConnectionResetError("reset by peer")
            if self.n == 5:
                raise UnicodeEncodeError("ascii", "\u00e9", 0, 1, "cannot encode")
            if self.n >= 12:
                self.release.wait(10)
            super().write(context, variables)

    faulty = Faulty()
    c = DataCollector(LOG, [CountingReader()], [faulty], max_queue_samples=30, drain_timeout_s=0.5)
    c.start(DataCollectionContext(1, [V(1, 10), V(2, 20)], min_interval_ms=10, **recording))
    wait_for(lambda: c.stats().writers["faulty"].dropped_samples > 0, 15, "a full queue")
    c.close()
    faulty.release.set()
    stats = c.stats()
    w = stats.writers["faulty"]
    assert w.lost_samples > 0 and w.dropped_samples > 0 and w.unwritten_samples > 0
    assert w.samples_written == len(faulty.rows)
    _identity(stats)
    # every sample read or missed is delivered, or suppressed by on-change recording (counters
    # that step by 1 with a deadband of 1.5: about every other sample)
    r = stats.readers["random"]
    assert w.samples_delivered + r.suppressed_samples == r.samples + r.missed_samples
    assert (r.suppressed_samples > 0) is bool(recording)


# -- no lock across user code ----------------------------------------------------------------------


def test_listener_may_hand_work_to_a_thread_that_calls_back_and_wait_for_it() -> None:
    results: list[Any] = []
    holder: dict[str, DataCollector] = {}

    class Handoff(DataCollectionListener):
        def _via_thread(self, call: Any) -> None:
            t = threading.Thread(target=lambda: results.append(call()), daemon=True)
            t.start()
            t.join(5)
            assert not t.is_alive(), "the collector call from another thread deadlocked"

        def after_start(self, context: DataCollectionContext) -> None:
            self._via_thread(holder["c"].stats)

        def before_stop(self, context: DataCollectionContext) -> None:
            if context.id == 1:
                self._via_thread(lambda: holder["c"].pause(2))

    with DataCollector(LOG, [CountingReader()], [RecordingWriter()], [Handoff()]) as c:
        holder["c"] = c
        c.start(DataCollectionContext(2, [V(2, 100)]))
        c.start(DataCollectionContext(1, [V(1, 100)]))
        t0 = time.monotonic()
        c.stop(1)
        assert time.monotonic() - t0 < 3
        assert c.state(2) == "paused"
    assert len(results) == 3


def test_read_may_pause_and_stop_without_stalling() -> None:
    holder: dict[str, Any] = {}
    timings: list[float] = []

    class Controlling(CountingReader):
        def read(self, variables: CollectedVariables) -> None:
            super().read(variables)
            action = holder.pop("action", None)
            if action is not None:
                t0 = time.monotonic()
                action()
                timings.append(time.monotonic() - t0)

    reader = Controlling()
    with DataCollector(LOG, [reader], [RecordingWriter()], drain_timeout_s=30) as c:
        c.start(DataCollectionContext(1, [V(1, 50)], min_interval_ms=10))
        c.start(DataCollectionContext(2, [V(2, 50)], min_interval_ms=10))
        holder["action"] = lambda: c.pause(1)
        wait_for(lambda: c.state(1) == "paused", 5, "pause from read()")
        holder["action"] = lambda: c.stop(2)
        wait_for(lambda: 2 not in c.contexts(), 5, "stop from read()")
    assert len(timings) == 2 and max(timings) < 2.0, timings


def test_start_from_another_thread_while_close_drains_fails_fast() -> None:
    class Slow(RecordingWriter):
        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            time.sleep(0.3)
            super().write(context, variables)

    c = DataCollector(LOG, [CountingReader()], [Slow()], drain_timeout_s=3)
    c.start(DataCollectionContext(1, [V(1, 20)], min_interval_ms=10))
    wait_for(lambda: c.stats().writers["rec"].queue_depth >= 10, 10, "a backlog")
    closer = threading.Thread(target=c.close, daemon=True)
    closer.start()
    wait_for(lambda: c._closing or c.closed, 5, "close to begin")
    t0 = time.monotonic()
    with pytest.raises(CollectorClosedError):
        c.start(DataCollectionContext(2, [V(2, 100)]))
    assert time.monotonic() - t0 < 0.5
    closer.join(10)
    assert c.closed


def test_after_stop_runs_before_the_context_leaves_contexts() -> None:
    seen: list[tuple[bool, str]] = []
    holder: dict[str, DataCollector] = {}

    class Check(DataCollectionListener):
        def after_stop(self, context: DataCollectionContext) -> None:
            c = holder["c"]
            seen.append((context.id in c.contexts(), c.state(context.id)))

    events = EventLog()
    with DataCollector(LOG, [CountingReader()], [RecordingWriter()], [Check(), events]) as c:
        holder["c"] = c
        c.start(DataCollectionContext(1, [V(1, 100)], duration_s=0.3))
        wait_for(lambda: 1 not in c.contexts(), 10, "the duration to end the context")
        assert ("after_stop", 1) in events.events  # once it left contexts(), after_stop has run
        c.start(DataCollectionContext(2, [V(1, 100)]))
        c.stop(2)
    assert seen == [(True, "stopping"), (True, "stopping")]


# -- write errors, times, numbers ------------------------------------------------------------------


def test_is_transient_default() -> None:
    w = RecordingWriter()
    assert w.is_transient(ConnectionResetError()) and w.is_transient(TimeoutError())
    assert w.is_transient(OSError(28, "No space left on device"))
    assert not w.is_transient(ValueError("bad value")) and not w.is_transient(
        UnicodeEncodeError("a", "", 0, 1, "x")
    )


def test_a_permanent_error_on_one_context_never_holds_back_another() -> None:
    class Picky(RecordingWriter):
        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            if context.id == 1:
                raise ValueError("foreign header")
            super().write(context, variables)

    writer = Picky("picky")
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 20)], min_interval_ms=10))
        c.start(DataCollectionContext(2, [V(2, 20)], min_interval_ms=10))
        wait_for(lambda: len(writer.of(2)) >= 40, 10, "context 2 written")
        # context 2 keeps up while every batch of context 1 fails: never more than a few behind
        s = c.stats()
        assert s.contexts[2].samples - len(writer.of(2)) <= 5
    w = c.stats().writers["picky"]
    assert writer.of(1) == [] and w.lost_samples > 0 and w.retried_ok == 0
    assert w.samples_written == len(writer.of(2))
    assert w.samples_delivered == w.samples_written + w.lost_samples


def test_naive_read_at_is_taken_as_utc_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    class Naive(CountingReader):
        def read(self, variables: CollectedVariables) -> None:
            super().read(variables)
            now = datetime.now(UTC)
            for item in variables:
                item.read_at = now.replace(tzinfo=None)

    writer = RecordingWriter()
    with caplog.at_level(logging.WARNING, logger=LOG.name), DataCollector(LOG, [Naive()], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 50)], min_interval_ms=10))
        wait_for(lambda: len(writer.rows) >= 5)
    assert all(r.read_at.utcoffset() == timedelta(0) for r in writer.rows)
    assert abs(writer.rows[0].read_at - datetime.now(UTC)) < timedelta(seconds=30)
    assert caplog.text.count("naive read_at") == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drain_timeout_s": float("inf")},
        {"drain_timeout_s": float("nan")},
        {"drain_timeout_s": 10**400},
        {"write_retry_s": 0},
        {"write_retry_s": -1},
        {"max_queue_samples": 10**30},
        {"max_write_samples": 0},
    ],
)
def test_collector_numbers_are_range_checked(kwargs: dict[str, Any]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ConfigurationError, match=name):
        DataCollector(LOG, [], [], **kwargs)


def test_writer_base_is_transient_is_overridable() -> None:
    class Strict(DataWriter):
        def is_transient(self, exc: BaseException) -> bool:
            return False

        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            raise ConnectionError("no retries for me")

    with DataCollector(LOG, [CountingReader()], [Strict()]) as c:
        c.start(DataCollectionContext(1, [V(1, 50)], min_interval_ms=10))
        wait_for(lambda: c.stats().writers["Strict"].lost_batches >= 2, 5, "lost at once")
        assert c.stats().writers["Strict"].retried_ok == 0


def test_a_paused_span_is_not_a_gap_and_gets_no_missed_samples() -> None:
    writer = RecordingWriter()
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 50)], min_interval_ms=10))
        c.start(DataCollectionContext(2, [V(2, 50)], min_interval_ms=10))  # keeps the reader busy
        wait_for(lambda: len(writer.of(1)) >= 5)
        c.pause(1)
        paused_at = datetime.now(UTC)
        wait_for(lambda: len([r for r in writer.of(2) if r.read_at > paused_at]) >= 10, 5, "time passing")
        c.resume(1)
        resumed_at = datetime.now(UTC)
        wait_for(lambda: len([r for r in writer.of(1) if r.read_at > resumed_at]) >= 5, 5, "after resume")
    rows = writer.of(1)
    assert all(r.quality is Quality.GOOD for r in rows)  # no BAD "missed" for the paused span
    inside = [r for r in rows if paused_at + timedelta(milliseconds=60) < r.read_at < resumed_at]
    assert inside == []
    assert c.stats().readers["random"].missed_samples == 0
