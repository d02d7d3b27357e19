"""Experiment capture: a collection that lasts exactly as long as a block or a procedure, with the
outcome in the metadata; live data: the last samples of a variable and events for subscribers."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from _util import LOG, CountingReader, RecordingWriter, wait_for

from data_collector import (
    CollectedVariables,
    CollectionEvent,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    Quality,
    Variable,
)


def V(id: int, interval: int = 20, address: str = "counter", vt: str = "int") -> Variable:
    return Variable(id, address, vt, "random", interval)


class Procedure:
    """A procedure that records when it ran."""

    def __init__(self) -> None:
        self.began: datetime | None = None
        self.ended: datetime | None = None

    def __call__(self, seconds: float, *, fail: bool = False, label: str = "") -> str:
        self.began = datetime.now(UTC)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # the procedure's own work: runs for `seconds`
            time.sleep(0.01)
        self.ended = datetime.now(UTC)
        if fail:
            raise RuntimeError(f"heater tripped {label}")
        return f"done {label}"


def test_run_procedure_collects_exactly_while_it_runs_and_returns_its_result() -> None:
    writer = RecordingWriter()
    proc = Procedure()
    ctx = DataCollectionContext(1, [V(1)], min_interval_ms=10, metadata={"operator": "ana"})
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        result = c.run_procedure(proc, ctx, 0.5, label="run-1")
        written_at_return = len(writer.of(1))
        assert c.contexts() == {}
        time.sleep(0.2)  # nothing is collected for the context after it returned
        assert len(writer.of(1)) == written_at_return
    assert result == "done run-1"
    rows = writer.of(1)
    assert 15 <= len(rows) <= 40  # ~0.5 s at 20 ms
    assert proc.began is not None and proc.ended is not None
    assert ctx.start_date is not None and ctx.end_date is not None
    assert ctx.start_date <= proc.began and proc.ended <= ctx.end_date
    assert all(ctx.start_date <= r.read_at <= ctx.end_date for r in rows)
    d = dict(ctx.deduced_metadata)
    assert d["ended"] == "completed"
    assert d["procedure"]["name"] == "Procedure" and d["procedure"]["args"] == ["0.5"]
    assert d["procedure"]["kwargs"] == {"label": "'run-1'"}
    assert ctx.metadata == {"operator": "ana"}
    assert writer.events == [("started", 1), *[("data", 1)] * (len(writer.events) - 2), ("stopped", 1)]


def test_capture_around_a_procedure_that_raises() -> None:
    writer = RecordingWriter()
    proc = Procedure()
    ctx = DataCollectionContext(2, [V(1), V(2, 50, "sine", "float")], min_interval_ms=10)
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        with (
            pytest.raises(RuntimeError, match="heater tripped"),
            c.capture(ctx, metadata={"sample": "S-1"}) as run,
        ):
            assert run.context is ctx
            proc(0.4, fail=True)
        # every value read during the block is written when capture returns
        assert writer.events[-1] == ("stopped", 2)
        assert c.stats().writers["rec"].queue_depth == 0
        n = len(writer.of(2))
        time.sleep(0.2)
        assert len(writer.of(2)) == n  # none from after
    assert isinstance(run.error, RuntimeError)
    d = dict(ctx.deduced_metadata)
    assert d["ended"] == "exception"
    assert d["exception"] == {"type": "RuntimeError", "message": "heater tripped "}
    assert ctx.metadata == {"sample": "S-1"}
    assert ctx.end_date is not None and all(r.read_at <= ctx.end_date for r in writer.of(2))


def test_capture_metadata_never_overwrites_the_users() -> None:
    ctx = DataCollectionContext(3, [V(1)], min_interval_ms=10, metadata={"sample": "S-1"})
    with DataCollector(LOG, [CountingReader()], [RecordingWriter()]) as c:
        with (
            pytest.raises(ConfigurationError, match="'sample' is already in the metadata"),
            c.capture(ctx, metadata={"sample": "S-2"}),
        ):
            pass
        assert c.contexts() == {}  # nothing started


def test_latest_keeps_the_last_n_samples_of_each_variable() -> None:
    writer = RecordingWriter()
    with DataCollector(LOG, [CountingReader()], [writer], latest_n=50) as c:
        c.start(DataCollectionContext(1, [V(1, 10)], min_interval_ms=10))
        c.start(DataCollectionContext(2, [V(1, 20), V(2, 20, "sine", "float")], min_interval_ms=10))
        wait_for(lambda: len(writer.of(1, 1)) >= 80, 10, "more samples than latest keeps")
        last = c.latest(1)
        assert len(last) == 50
        values = [x.value for x in last]
        assert values == sorted(values) and len(set(values)) == 50  # one per read, not per context
        assert all(x.quality is Quality.GOOD and x.read_at is not None for x in last)
        assert [x.value for x in c.latest(1, 5)] == values[-5:] or c.latest(1, 5)[-1].value >= values[-1]
        assert c.latest(2, 3)[0].variable.id == 2
        assert c.latest(99) == []
        with pytest.raises(ConfigurationError, match="n must be an int from 1 to latest_n=50"):
            c.latest(1, 51)
    with DataCollector(LOG, [], []) as c2, pytest.raises(ConfigurationError, match="latest_n"):
        c2.latest(1)


def test_events_reach_subscribers_and_a_slow_one_delays_nothing() -> None:
    writer = RecordingWriter()
    fast: list[CollectionEvent] = []
    release = threading.Event()

    def slow(event: CollectionEvent) -> None:
        release.wait(5)

    reader = CountingReader()
    with DataCollector(LOG, [reader], [writer]) as c:
        sub_fast = c.subscribe(fast.append)
        sub_slow = c.subscribe(slow, max_events=5)
        c.start(DataCollectionContext(1, [V(1, 10)], min_interval_ms=10))
        wait_for(lambda: len(writer.of(1)) >= 50, 10, "collection going on beside the slow subscriber")
        c.stop(1)
        wait_for(lambda: any(e.kind == "run_stopped" for e in fast), 5, "the stop event")
        assert sub_slow.dropped > 0  # its queue overflowed: counted, nothing blocked
        release.set()
        sub_fast.close()
        sub_slow.close()
    kinds = [e.kind for e in fast]
    assert kinds[0] == "run_started" and kinds[-1] == "run_stopped"
    written = [e for e in fast if e.kind == "batch_written"]
    assert written and all(e.writer == "rec" and e.context_id == 1 for e in written)
    assert sum(e.samples for e in written) == len(writer.of(1))
    # the reads stayed on their 10 ms boundaries while the slow subscriber was stuck
    assert c.stats().readers["random"].missed_samples <= 5


def test_events_iterator_ends_after_a_quiet_timeout() -> None:
    seen: list[str] = []
    with DataCollector(LOG, [CountingReader()], [RecordingWriter()]) as c:

        def run() -> None:
            time.sleep(0.1)
            c.run_procedure(time.sleep, DataCollectionContext(1, [V(1)], min_interval_ms=10), 0.2)

        t = threading.Thread(target=run)
        t.start()
        for event in c.events(timeout=1.0):
            seen.append(event.kind)
        t.join(5)
    assert seen[0] == "run_started" and seen[-1] == "run_stopped" and "batch_written" in seen


class _Slow(RecordingWriter):
    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        time.sleep(0.05)
        super().write(context, variables)


def test_capture_waits_for_every_value_read_during_the_block(tmp_path: Any) -> None:
    writer = _Slow()
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        with c.capture(DataCollectionContext(1, [V(1, 10)], min_interval_ms=10)):
            wait_for(lambda: c.stats().contexts[1].samples >= 30, 5, "samples")
        delivered = c.stats().writers["rec"].samples_delivered
        assert len(writer.of(1)) == delivered  # all written by the time the block's exit returned
