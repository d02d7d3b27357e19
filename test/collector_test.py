"""The engine with real threads: GCD merge, alignment, pause/resume/stop, duration, faults, draining."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from _util import LOG, CountingReader, EventLog, RecordingWriter, ms_of, wait_for

from data_collector import (
    CollectedVariables,
    DataCollectionContext,
    DataCollectionListener,
    DataCollector,
    DataWriter,
    Quality,
    Variable,
)
from data_writer.noop_data_writer import NoopDataWriter

# Tolerance for "on the tick": how late a tick may run on a loaded 2-core CI machine.
LATE_MS = 60


def V(
    id: int, interval: int | None = None, address: str = "counter", vt: str = "int", rt: str = "random"
) -> Variable:
    return Variable(id, address, vt, rt, interval)


def test_gcd_merge_reads_once_and_delivers_to_both_contexts() -> None:
    reader = CountingReader()
    writer = RecordingWriter()
    a = DataCollectionContext(1, [V(7, 300)])
    b = DataCollectionContext(2, [V(7, 200)])
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(a)
        c.start(b)
        assert c.stats().readers["random"].tick_ms == 100
        wait_for(lambda: len(writer.of(1)) >= 7 and len(writer.of(2)) >= 10, 10, "rows of both contexts")
    rows_a, rows_b = writer.of(1), writer.of(2)
    # every read lands on a wall-clock multiple of the 100 ms tick
    for r in rows_a + rows_b:
        assert ms_of(r.read_at) % 100 <= LATE_MS, r
    nominal_a = [ms_of(r.read_at) // 100 * 100 for r in rows_a]
    nominal_b = [ms_of(r.read_at) // 100 * 100 for r in rows_b]
    assert all(t % 300 == 0 for t in nominal_a), nominal_a
    assert all(t % 200 == 0 for t in nominal_b), nominal_b
    # A gets ~every 300 ms, B ~every 200 ms (consecutive, none skipped on an idle machine allowed 1)
    gaps_a = [y - x for x, y in itertools.pairwise(nominal_a)]
    gaps_b = [y - x for x, y in itertools.pairwise(nominal_b)]
    assert gaps_a.count(300) >= len(gaps_a) - 1 and set(gaps_a) <= {300, 600}, gaps_a
    assert gaps_b.count(200) >= len(gaps_b) - 1 and set(gaps_b) <= {200, 400}, gaps_b
    # at each 600 ms multiple both contexts got the very same read: same value, same read_at
    by_time_b = {ms_of(r.read_at): r for r in rows_b}
    shared = [r for r in rows_a if ms_of(r.read_at) // 100 * 100 % 600 == 0]
    assert len(shared) >= 3
    for r in shared:
        twin = by_time_b[ms_of(r.read_at)]
        assert (twin.value, twin.read_at) == (r.value, r.read_at)
    # the reader was called once per due tick, never twice for one tick, each call reading V once
    ticks = [int(t * 1000) // 100 for t, _ in reader.calls]
    assert len(ticks) == len(set(ticks))
    assert all(ids == (7,) for _, ids in reader.calls)
    # the counter advanced once per read: values delivered are distinct reads
    values = sorted({r.value for r in rows_a + rows_b})
    assert values == list(range(values[0], values[0] + len(values)))
    assert reader.threads == {"dc-reader-random"}


def test_tick_is_recomputed_when_contexts_change() -> None:
    reader = CountingReader()
    writer = RecordingWriter()
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 300)]))
        assert c.stats().readers["random"].tick_ms == 300
        c.start(DataCollectionContext(2, [V(2, 200)]))
        assert c.stats().readers["random"].tick_ms == 100
        c.pause(2)
        assert c.stats().readers["random"].tick_ms == 300
        c.resume(2)
        assert c.stats().readers["random"].tick_ms == 100
        c.stop(1)
        assert c.stats().readers["random"].tick_ms == 200
        c.stop(2)
        assert c.stats().readers["random"].tick_ms == 0


def test_pause_resume_and_stop_change_what_is_read_and_delivered() -> None:
    reader = CountingReader()
    writer = RecordingWriter()
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 50)], min_interval_ms=10))
        c.start(DataCollectionContext(2, [V(2, 50)], min_interval_ms=10))
        wait_for(lambda: len(writer.of(1)) >= 3 and len(writer.of(2)) >= 3, what="first rows")
        c.pause(1)
        assert c.state(1) == "paused"
        paused_rows = len(writer.of(1))
        calls_at_pause = len(reader.calls)
        n2 = len(writer.of(2))
        wait_for(lambda: len(writer.of(2)) >= n2 + 5, what="context 2 going on")
        assert len(writer.of(1)) == paused_rows  # nothing delivered to a paused context
        assert all(ids == (2,) for _, ids in reader.calls[calls_at_pause:])  # and variable 1 not read
        c.resume(1)
        wait_for(lambda: len(writer.of(1)) >= paused_rows + 3, what="context 1 resumed")
        c.stop(1)
        assert ("stopped", 1) in writer.events  # the stop drained to the writer before returning
        stopped_rows = len(writer.of(1))
        n2 = len(writer.of(2))
        wait_for(lambda: len(writer.of(2)) >= n2 + 5, what="context 2 going on after stop")
        assert len(writer.of(1)) == stopped_rows
        assert writer.events.index(("stopped", 1)) > max(
            i for i, e in enumerate(writer.events) if e == ("data", 1)
        )
        assert 1 not in c.contexts() and c.state(2) == "running"


def test_duration_ends_the_context_and_sets_end_date() -> None:
    events = EventLog()
    writer = RecordingWriter()
    ctx = DataCollectionContext(5, [V(1, 100)], duration_s=0.6)
    assert ctx.start_date is None and ctx.end_date is None
    with DataCollector(LOG, [CountingReader()], [writer], [events]) as c:
        c.start(ctx)
        assert ctx.start_date is not None and ctx.start_date.tzinfo is not None
        wait_for(lambda: 5 not in c.contexts(), 10, "the context to end by itself")
        assert ctx.end_date is not None
        assert timedelta(seconds=0.5) <= ctx.end_date - ctx.start_date <= timedelta(seconds=3)
        assert ("after_stop", 5) in events.events
        assert writer.events[-1] == ("stopped", 5)
        assert 3 <= len(writer.of(5)) <= 30
        last = max(r.read_at for r in writer.of(5))
        assert last <= ctx.end_date


def test_restarting_a_stopped_context_id_works() -> None:
    writer = RecordingWriter()
    ctx = DataCollectionContext(3, [V(1, 100)])
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        c.start(ctx)
        wait_for(lambda: len(writer.of(3)) >= 2)
        c.stop(3)
        first_start, first_end = ctx.start_date, ctx.end_date
        assert first_end is not None
        c.start(ctx)
        assert ctx.end_date is None and ctx.start_date is not None and ctx.start_date >= first_end
        assert first_start is not None
        n = len(writer.of(3))
        wait_for(lambda: len(writer.of(3)) >= n + 2)
    assert writer.events.count(("started", 3)) == 2 and writer.events.count(("stopped", 3)) == 2


def test_delayed_start() -> None:
    writer = RecordingWriter()
    events = EventLog()
    with DataCollector(LOG, [CountingReader()], [writer], [events]) as c:
        at = datetime.now(UTC) + timedelta(seconds=0.6)
        c.start(DataCollectionContext(1, [V(1, 100)]), at=at)
        assert c.state(1) == "scheduled"
        assert events.events == []
        wait_for(lambda: c.state(1) == "running", 10, "the scheduled start")
        wait_for(lambda: len(writer.of(1)) >= 1)
        assert min(r.read_at for r in writer.of(1)) >= at
        # a scheduled context can be cancelled
        c.start(DataCollectionContext(2, [V(2, 100)]), at=datetime.now(UTC) + timedelta(hours=1))
        c.stop(2)
        assert 2 not in c.contexts()


def test_listener_order_and_raising_listener(caplog: pytest.LogCaptureFixture) -> None:
    events = EventLog()

    class Broken(DataCollectionListener):
        def before_start(self, context: DataCollectionContext) -> None:
            raise RuntimeError("listener boom")

    c = DataCollector(LOG, [CountingReader()], [RecordingWriter()], [Broken(), events])
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        c.start(DataCollectionContext(1, [V(1, 100)]))
    assert "listener boom" in caplog.text
    c.pause(1)
    c.resume(1)
    c.stop(1)
    c.start(DataCollectionContext(2, [V(1, 100)]))
    c.close()
    c.close()  # idempotent
    assert events.events == [
        ("before_start", 1),
        ("after_start", 1),
        ("before_pause", 1),
        ("after_pause", 1),
        ("before_resume", 1),
        ("after_resume", 1),
        ("before_stop", 1),
        ("after_stop", 1),
        ("before_start", 2),
        ("after_start", 2),
        ("before_close", None),
        ("before_stop", 2),
        ("after_stop", 2),
        ("after_close", None),
    ]


def test_raising_reader_gives_bad_items_and_collection_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(CountingReader):
        def read(self, variables: CollectedVariables) -> None:
            super().read(variables)
            raise OSError("device unplugged")

    good = CountingReader("good")
    writer = RecordingWriter()
    with (
        caplog.at_level(logging.ERROR, logger=LOG.name),
        DataCollector(LOG, [Exploding("bad"), good], [writer]) as c,
    ):
        c.start(DataCollectionContext(1, [V(1, 50, rt="bad"), V(2, 50, rt="good")], min_interval_ms=10))
        wait_for(lambda: len(writer.of(1, 1)) >= 5 and len(writer.of(1, 2)) >= 5)
        stats = c.stats().readers
    bad_rows = writer.of(1, 1)
    assert all(r.quality is Quality.BAD and r.value is None for r in bad_rows)
    assert all(r.error == "OSError: device unplugged" for r in bad_rows)
    assert all(r.quality is Quality.GOOD and isinstance(r.value, int) for r in writer.of(1, 2))
    assert stats["bad"].read_errors >= 5 and stats["good"].read_errors == 0
    reports = [r for r in caplog.records if "raised" in r.getMessage()]
    assert len(reports) == 1 and "device unplugged" in caplog.text  # logged once, not at every tick


def test_items_left_without_value_are_bad() -> None:
    class Lazy(CountingReader):
        def read(self, variables: CollectedVariables) -> None:
            for item in variables:
                if item.variable.id == 1:
                    item.value = 1.5

    writer = RecordingWriter()
    with DataCollector(LOG, [Lazy()], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 100, vt="float"), V(2, 100)]))
        wait_for(lambda: len(writer.of(1, 2)) >= 2)
    assert {(r.value, r.quality) for r in writer.of(1, 1)} == {(1.5, Quality.GOOD)}
    assert all(r.quality is Quality.BAD and r.error for r in writer.of(1, 2))


def test_failing_writer_is_retried_in_order_and_loses_nothing() -> None:
    class Flaky(RecordingWriter):
        def __init__(self) -> None:
            super().__init__("flaky")
            self.failures = 0

        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            if self.failures < 3:
                self.failures += 1
                raise ConnectionError("store away")
            super().write(context, variables)

    flaky, steady = Flaky(), RecordingWriter("steady")
    with DataCollector(LOG, [CountingReader()], [flaky, steady]) as c:
        c.start(DataCollectionContext(1, [V(1, 50)], min_interval_ms=10))
        wait_for(lambda: len(steady.of(1)) >= 10)
    assert [r.value for r in flaky.of(1)] == [r.value for r in steady.of(1)]
    stats = c.stats().writers
    assert stats["flaky"].write_errors == 3 and stats["flaky"].retried_ok == 1
    assert stats["flaky"].lost_samples == 0


def test_permanent_write_error_is_lost_at_once_and_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    class Refusing(DataWriter):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            self.calls += 1
            raise ValueError("value the store refuses")

    refusing, steady = Refusing(), RecordingWriter("steady")
    with (
        caplog.at_level(logging.ERROR, logger=LOG.name),
        DataCollector(LOG, [CountingReader()], [refusing, steady]) as c,
    ):
        c.start(DataCollectionContext(1, [V(1, 100)]))
        wait_for(lambda: c.stats().writers["Refusing"].lost_batches >= 2, 10, "lost batches")
        n = len(steady.of(1))
        wait_for(lambda: len(steady.of(1)) >= n + 2, what="the other writer going on")
    stats = c.stats().writers["Refusing"]
    assert refusing.calls == stats.lost_batches == stats.write_errors  # never retried
    assert stats.lost_samples == stats.samples_delivered  # every sample accounted as lost
    assert "is LOST" in caplog.text and "value the store refuses" in caplog.text


def test_transient_write_error_is_retried_without_holding_back_other_contexts() -> None:
    class DownForContext1(RecordingWriter):
        def __init__(self) -> None:
            super().__init__("down1")
            self.down = True

        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            if context.id == 1 and self.down:
                raise ConnectionError("partition of context 1 unreachable")
            super().write(context, variables)

    writer = DownForContext1()
    with DataCollector(LOG, [CountingReader()], [writer], write_retry_s=0.2) as c:
        c.start(DataCollectionContext(1, [V(1, 50)], min_interval_ms=10))
        c.start(DataCollectionContext(2, [V(2, 50)], min_interval_ms=10))
        wait_for(lambda: len(writer.of(2)) >= 40, 10, "context 2 written while context 1 fails")
        stats = c.stats().writers["down1"]
        assert stats.lost_samples == 0 and stats.write_errors >= 3
        assert writer.of(1) == [] and stats.queue_depth >= 20  # context 1 waits, nothing lost
        writer.down = False
        wait_for(lambda: c.stats().writers["down1"].queue_depth < 5, 10, "context 1 catching up")
    stats = c.stats().writers["down1"]
    assert stats.lost_samples == stats.dropped_samples == stats.unwritten_samples == 0
    assert stats.samples_written == stats.samples_delivered == len(writer.rows)
    values = [r.value for r in writer.of(1)]
    assert values == sorted(values)  # the same batches, in order


def test_slow_writer_never_delays_reads_or_other_writers() -> None:
    class Slow(RecordingWriter):
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.sizes: list[int] = []

        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            time.sleep(0.25)
            self.sizes.append(len(variables))
            super().write(context, variables)

    reader = CountingReader()
    slow, fast = Slow("slow"), RecordingWriter("fast")
    with DataCollector(LOG, [reader], [slow, fast]) as c:
        c.start(DataCollectionContext(1, [V(1, 50)], min_interval_ms=10))
        wait_for(lambda: len(fast.of(1)) >= 30, 10, "fast writer rows")
        assert len(slow.sizes) <= 10  # the slow one is called less often...
        for r in fast.of(1):  # ...while reads stay on their 50 ms ticks
            assert ms_of(r.read_at) % 50 <= LATE_MS, r
        assert max(slow.sizes) >= 3  # ...and catches up: what queued meanwhile goes in one write()
        total = len(fast.of(1))
    # close drained everything read: the slow writer got every value the fast one got
    assert [r.value for r in slow.of(1)] == [r.value for r in fast.of(1)]
    assert len(fast.of(1)) >= total


def test_close_delivers_every_value_read() -> None:
    class Slowish(RecordingWriter):
        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            time.sleep(0.01)
            super().write(context, variables)

    writer = Slowish()
    c = DataCollector(LOG, [CountingReader()], [writer])
    c.start(DataCollectionContext(1, [V(i, 20) for i in range(1, 6)], min_interval_ms=10))
    c.start(DataCollectionContext(2, [V(i, 40) for i in range(1, 4)], min_interval_ms=10))
    wait_for(lambda: len(writer.rows) >= 30)
    c.close()
    stats = c.stats()
    assert stats.writers["rec"].samples_written == len(writer.rows)
    assert stats.writers["rec"].queue_depth == 0
    assert len(writer.rows) == stats.readers["random"].samples + sum(
        1 for r in writer.of(2)
    )  # variables 1..3 of context 2 are shared reads, delivered twice
    assert writer.closed == 1 and writer.events[-1][0] == "stopped"


def test_overrun_skips_and_counts_missed_ticks() -> None:
    reader = CountingReader(delay_s=0.25)
    writer = RecordingWriter()
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 100)]))
        wait_for(lambda: len(reader.calls) >= 5, 10)
        stats = c.stats().readers["random"]
    assert stats.missed_ticks >= 5
    starts = [t for t, _ in reader.calls]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.2  # no pile-up: never two reads back to back


def test_full_queue_drops_loudly_without_blocking_reads(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()

    class Blocked(RecordingWriter):
        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            gate.wait(10)
            super().write(context, variables)

    reader = CountingReader()
    blocked = Blocked("blocked")
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        c = DataCollector(LOG, [reader], [blocked], max_queue_samples=10)
        c.start(DataCollectionContext(1, [V(1, 20), V(2, 20)], min_interval_ms=10))
        wait_for(lambda: c.stats().writers["blocked"].dropped_samples >= 10, 10, "drops")
        n = len(reader.calls)
        wait_for(lambda: len(reader.calls) >= n + 5, what="reads going on")
        gate.set()
        c.close()
    stats = c.stats()
    assert "queue full" in caplog.text
    assert stats.writers["blocked"].dropped_samples + len(blocked.rows) == stats.readers["random"].samples
    assert stats.readers["random"].missed_ticks <= 5


def test_same_variable_in_two_contexts_is_read_once_per_tick() -> None:
    reader = CountingReader()
    writer = RecordingWriter()
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 100), V(2, 100)]))
        c.start(DataCollectionContext(2, [V(1, 100)]))
        wait_for(lambda: len(writer.of(2)) >= 5)
    for _, ids in reader.calls:
        assert sorted(ids) == sorted(set(ids))
    by_time: dict[datetime, list[int]] = defaultdict(list)
    for r in writer.of(1, 1) + writer.of(2, 1):
        by_time[r.read_at].append(r.value)
    assert all(len(set(v)) == 1 for v in by_time.values())


def test_noop_writer_counts(caplog: pytest.LogCaptureFixture) -> None:
    noop = NoopDataWriter(logging.getLogger("test.noop"))
    with (
        caplog.at_level(logging.DEBUG, logger="test.noop"),
        DataCollector(LOG, [CountingReader()], [noop]) as c,
    ):
        c.start(DataCollectionContext(1, [V(1, 100)]))
        wait_for(lambda: noop.written >= 2)
    assert "context 1 variable 1 counter" in caplog.text


def test_variables_changed_hook_follows_the_schedule() -> None:
    class Hooked(CountingReader):
        def __init__(self) -> None:
            super().__init__()
            self.changes: list[dict[int, int]] = []

        def variables_changed(self, intervals: Mapping[Variable, int]) -> None:
            self.changes.append({v.id: ms for v, ms in intervals.items()})

    reader = Hooked()
    with DataCollector(LOG, [reader], [RecordingWriter()]) as c:
        c.start(DataCollectionContext(1, [V(1, 300)]))
        c.start(DataCollectionContext(2, [V(1, 200), V(2)], default_interval_ms=1000))
        c.pause(2)
        c.resume(2)
        c.stop(1)
    assert reader.changes == [
        {1: 300},
        {1: 100, 2: 1000},
        {1: 300},
        {1: 100, 2: 1000},
        {1: 200, 2: 1000},
        {},
    ]
