"""Writers whose ``write()`` is not durable by itself (``flush_interval_s`` + ``flush()``): the
collector counts their calls as written, and takes them out of the spool, only after a flush;
it flushes on the interval, when idle, at a context's stop and before close; a failing flush is
retried (transient) or loses what the writer held (permanent), and nothing is lost or doubled."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _util import LOG, CountingReader, RecordingWriter, Row, wait_for

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    DataWriter,
    Variable,
)


def V(id: int, interval: int = 20) -> Variable:
    return Variable(id, "counter", "int", "random", interval)


class BufferingWriter(DataWriter):
    """Keeps what write() gets in a buffer that only flush() stores; flush can be made to fail."""

    def __init__(self, interval_s: float, name: str = "buf") -> None:
        super().__init__(name=name)
        self.flush_interval_s = interval_s
        self.buffer: list[Row] = []
        self.stored: list[Row] = []
        self.events: list[tuple[str, int]] = []  # hooks, stored at the next flush like the rows
        self._pending_events: list[tuple[str, int]] = []
        self.flush_times: list[float] = []
        self.fail: type[Exception] | None = None  # the error flush() raises while set
        self.failures = 0
        self.discarded = 0
        self.guard = threading.Lock()

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        with self.guard:
            for item in variables:
                assert item.read_at is not None
                self.buffer.append(
                    Row(context.id, item.variable.id, item.read_at, item.value, item.quality, item.error)
                )

    def context_started(self, context: DataCollectionContext) -> None:
        self._pending_events.append(("started", context.id))

    def context_stopped(self, context: DataCollectionContext) -> None:
        self._pending_events.append(("stopped", context.id))

    def flush(self) -> None:
        with self.guard:
            if self.fail is not None:
                self.failures += 1
                if self.fail is not OSError:  # permanent: what was held is given up
                    self.discarded += len(self.buffer)
                    self.buffer.clear()
                    self._pending_events.clear()
                raise self.fail("store unavailable")
            self.stored += self.buffer
            self.buffer.clear()
            self.events += self._pending_events
            self._pending_events.clear()
            self.flush_times.append(time.monotonic())


def identity(stats: Any) -> None:
    for w in stats.writers.values():
        assert w.samples_delivered == (
            w.samples_written + w.lost_samples + w.dropped_samples + w.unwritten_samples + w.queue_depth
        ), w


def once(rows: list[Row]) -> Counter[tuple[int, int, Any]]:
    return Counter((r.context_id, r.variable_id, r.read_at) for r in rows)


@pytest.mark.parametrize("spooled", [True, False])
def test_written_only_after_a_flush_which_comes_on_the_interval(tmp_path: Path, spooled: bool) -> None:
    writer = BufferingWriter(0.4)
    rec = RecordingWriter()
    spool = tmp_path / "spool" if spooled else None
    with DataCollector(LOG, [CountingReader()], [writer, rec], spool_dir=spool) as c:
        c.start(DataCollectionContext(1, [V(1), V(2)], min_interval_ms=10))
        checks = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # the whole time: written never runs ahead of stored
            with writer.guard:
                stats = c.stats().writers["buf"]
                stored = len(writer.stored)
            assert stats.samples_written <= stored
            assert stats.unflushed_samples <= stats.queue_depth
            if spooled:
                assert stats.spooled_samples >= stats.unflushed_samples  # still in the spool
            identity(c.stats())
            checks += stats.unflushed_samples > 0
            time.sleep(0.01)
        assert checks > 0  # samples did wait for a flush
        c.stop(1)
        assert writer.buffer == [] and writer.events[-1] == ("stopped", 1)  # stop() waited for the flush
        stats = c.stats().writers["buf"]
        assert stats.samples_written == len(writer.stored) == len(rec.rows)
    gaps = [b - a for a, b in zip(writer.flush_times, writer.flush_times[1:], strict=False)]
    assert stats.flushes == len(writer.flush_times) >= 6
    assert max(gaps[:-1]) < 0.4 + 0.25  # the interval (plus a batch and scheduling) while data flows
    assert once(writer.stored) == once(rec.rows) and max(once(writer.stored).values()) == 1
    if spooled:
        assert stats.spooled_samples == 0


def test_an_idle_writer_is_flushed_without_waiting_for_its_interval() -> None:
    writer = BufferingWriter(600)
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 1000)], min_interval_ms=10))
        wait_for(lambda: len(writer.stored) >= 2, 5, "two reads a second apart, each flushed when idle")
        assert c.stats().writers["buf"].samples_written >= 2
        assert writer.events == [("started", 1)]


@pytest.mark.parametrize("spooled", [True, False])
def test_a_transient_flush_failure_is_retried_and_nothing_is_lost_or_doubled(
    tmp_path: Path, spooled: bool
) -> None:
    writer = BufferingWriter(0.1)
    rec = RecordingWriter()
    spool = tmp_path / "spool" if spooled else None
    with DataCollector(LOG, [CountingReader()], [writer, rec], write_retry_s=0.2, spool_dir=spool) as c:
        c.start(DataCollectionContext(1, [V(1), V(2)], min_interval_ms=10))
        wait_for(lambda: len(writer.stored) > 20, 5, "first flushes")
        writer.fail = OSError
        wait_for(lambda: writer.failures >= 4, 5, "flushes failing")
        stats = c.stats().writers["buf"]
        assert stats.unflushed_samples > 0 and stats.samples_written <= len(writer.stored)
        if spooled:
            assert stats.spooled_samples >= stats.unflushed_samples
        writer.fail = None
        wait_for(lambda: c.stats().writers["buf"].unflushed_samples == 0, 5, "flushing again")
        c.stop(1)
        stats = c.stats().writers["buf"]
        identity(c.stats())
    assert stats.write_errors >= 4 and stats.retried_ok >= 1 and stats.lost_samples == 0
    assert once(writer.stored) == once(rec.rows) and max(once(writer.stored).values()) == 1
    assert stats.samples_written == len(writer.stored)


def test_a_permanent_flush_failure_loses_what_the_writer_held_counted_and_quarantined(tmp_path: Path) -> None:
    writer = BufferingWriter(0.3)
    rec = RecordingWriter()
    with DataCollector(LOG, [CountingReader()], [writer, rec], spool_dir=tmp_path / "spool") as c:
        c.start(DataCollectionContext(1, [V(1)], min_interval_ms=10))
        wait_for(lambda: len(writer.stored) > 10, 5, "first flushes")
        writer.fail = ValueError
        wait_for(lambda: writer.failures >= 1, 5, "a flush failing for good")
        writer.fail = None
        flushed = len(writer.flush_times)
        wait_for(lambda: len(writer.flush_times) >= flushed + 3, 5, "flushing again")
        c.stop(1)
        stats = c.stats().writers["buf"]
        identity(c.stats())
    assert writer.failures == 1  # not retried
    assert stats.lost_samples == writer.discarded > 0 and stats.quarantined_batches >= 1
    assert stats.samples_written == len(writer.stored)
    assert len(writer.stored) + writer.discarded == len(rec.rows)
    stored = once(writer.stored)
    assert max(stored.values()) == 1 and not stored - once(rec.rows)


def test_close_during_a_flush_outage_keeps_the_unflushed_in_the_spool_for_the_next_run(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    writer = BufferingWriter(0.1)
    rec = RecordingWriter()
    with DataCollector(LOG, [CountingReader()], [writer, rec], spool_dir=spool, drain_timeout_s=1.0) as c:
        c.start(DataCollectionContext(1, [V(1), V(2)], min_interval_ms=10))
        wait_for(lambda: len(writer.stored) > 20, 5, "first flushes")
        writer.fail = OSError  # the store goes away and stays away
        wait_for(lambda: writer.failures >= 2, 5, "flushes failing")
    stats = c.stats().writers["buf"]
    assert stats.unwritten_samples > 0 and stats.lost_samples == 0
    assert stats.samples_written == len(writer.stored)
    identity(c.stats())
    again = BufferingWriter(0.1)  # the next run, the store back
    with DataCollector(LOG, [CountingReader()], [again], spool_dir=spool) as c2:
        c2.open()
        wait_for(lambda: c2.stats().writers["buf"].queue_depth == 0, 10, "the replay")
        assert c2.stats().writers["buf"].replayed_samples == stats.unwritten_samples
    # every sample read is stored once, across the two runs
    assert once(writer.stored + again.stored) == once(rec.rows)


def test_flush_interval_must_be_none_or_seconds() -> None:
    for bad in (-1, float("nan"), float("inf"), "2", True):
        writer = BufferingWriter(0)
        writer.flush_interval_s = bad  # type: ignore[assignment]
        with pytest.raises(ConfigurationError, match="flush_interval_s must be None or a number"):
            DataCollector(LOG, [CountingReader()], [writer])
