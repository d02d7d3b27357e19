"""Store-and-forward: the spool on disk, replay after a stop during an outage and after kill -9,
background open, quarantine, the byte bound, and the accounting identity with a spool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _keywriter import KeyWriter, events, repeats, rows
from _util import LOG, CountingReader, RecordingWriter, V, wait_for

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    Quality,
)
from data_collector._spool import (
    KIND_DATA,
    KIND_STARTED,
    Spool,
    decode_batch,
    drop_spool,
    encode_batch,
    inspect_spool,
    retry_quarantine,
)

HERE = Path(__file__).parent


def identity(stats: Any) -> None:
    for w in stats.writers.values():
        assert w.samples_delivered == (
            w.samples_written + w.lost_samples + w.dropped_samples + w.unwritten_samples + w.queue_depth
        ), w


def test_spool_records_round_trip_ack_and_survive_a_torn_tail(tmp_path: Path) -> None:
    ctx = DataCollectionContext(7, [V(1), V(2, address="sine", vt="float")], metadata={"lot": "A-1"})
    batch = CollectedVariables.of(ctx.variables)
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    batch.values[:] = [1, float("nan")]
    batch.read_ats[:] = [now, now]
    batch.qualities[1] = Quality.BAD
    batch.errors[1] = "device said no"
    spool = Spool(tmp_path / "w", max_bytes=1 << 30, sync_s=1.0)
    key = spool.append_context(ctx)
    r1 = spool.append(KIND_STARTED, key, None)
    r2 = spool.append(KIND_DATA, key, encode_batch(batch), 2)
    r3 = spool.append(KIND_DATA, key, encode_batch(batch), 2)
    spool.ack(r1)
    spool.sync(force=True)
    back = decode_batch(spool.read(r2), ctx)
    assert back.values[0] == 1 and back.values[1] != back.values[1]  # NaN kept
    assert back.read_ats == [now, now] and back.qualities == [Quality.GOOD, Quality.BAD]
    assert back.errors == [None, "device said no"]
    spool.close()
    # a torn last record (kill -9 in the middle of an append) is cut off at reopen
    seg = next((tmp_path / "w").glob("*.seg"))
    with open(seg, "ab") as f:
        f.write(b"DCS1\x03\x00\x00\x00garbage")
    again = Spool(tmp_path / "w", max_bytes=1 << 30, sync_s=1.0)
    replayed = again.replay()
    assert [r.seq for r in replayed.records] == [r2.seq, r3.seq]
    assert replayed.open_keys == {key} and replayed.contexts[key]["metadata"] == {"lot": "A-1"}
    assert again.samples == 4
    for r in replayed.records:
        again.ack(r)
    again.close()
    assert list((tmp_path / "w").glob("*.seg")) == []  # everything acknowledged: the spool is empty


def test_stop_during_an_outage_then_restart_on_the_same_spool_loses_nothing(tmp_path: Path) -> None:
    db, spool_dir = tmp_path / "store.sqlite", tmp_path / "spool"
    writer = KeyWriter(db)
    c = DataCollector(LOG, [CountingReader()], [writer], spool_dir=spool_dir, drain_timeout_s=1.0)
    c.start(DataCollectionContext(1, [V(1, 20), V(2, 50)], min_interval_ms=10, metadata={"lot": "B"}))
    wait_for(lambda: c.stats().writers["keys"].samples_written >= 20, 10, "first samples written")
    writer.down.set()  # the store goes away
    wait_for(lambda: c.stats().writers["keys"].queue_depth >= 100, 10, "samples spooling during the outage")
    t0 = time.monotonic()
    c.close()  # the store is still down: close gives up after drain_timeout_s
    assert time.monotonic() - t0 < 1.0 + 1.5
    s = c.stats().writers["keys"]
    identity(c.stats())
    assert s.unwritten_samples >= 100 and s.lost_samples == s.dropped_samples == 0
    delivered_first = s.samples_delivered
    written_first = s.samples_written

    writer2 = KeyWriter(db)
    with DataCollector(LOG, [CountingReader()], [writer2], spool_dir=spool_dir) as c2:
        c2.start(DataCollectionContext(2, [V(3, 50)], min_interval_ms=10))
        wait_for(lambda: c2.stats().writers["keys"].replayed_samples > 0, 5, "replay")
        wait_for(lambda: c2.stats().writers["keys"].queue_depth == 0, 20, "the replay to be written")
    s2 = c2.stats().writers["keys"]
    identity(c2.stats())
    assert s2.replayed_samples == delivered_first - written_first + 0  # exactly what was left
    stored = [r for r in rows(db) if r[0] == 1]
    assert len(stored) == delivered_first  # every sample read for context 1, once
    assert repeats(db) == 0
    ev = events(db)
    assert [e[:2] for e in ev if e[1] == 1] == [("start", 1), ("stop", 1)]
    stop = next(e for e in ev if e[:2] == ("stop", 1))
    assert "lot" in stop[3]  # the stop was recorded from the spool with the context's metadata
    assert list((spool_dir).rglob("*.seg")) == []


CHILD = r"""
import logging, sys, time
sys.path.insert(0, {test_dir!r})
from _keywriter import KeyWriter
from _util import CountingReader
from data_collector import DataCollectionContext, DataCollector, Variable
logging.basicConfig(level=logging.WARNING)
writer = KeyWriter({db!r})
log = logging.getLogger("child")
c = DataCollector(log, [CountingReader()], [writer], spool_dir={spool!r}, spool_sync_s=0.2)
variables = [Variable(i, "counter", "int", "random", 20) for i in range(1, 21)]
c.start(DataCollectionContext({cid}, variables, min_interval_ms=10))
print("started", flush=True)
if {slow}:
    writer.down.set()   # the store is down: everything stays in the spool
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    time.sleep(0.05)
"""


def _child(tmp_path: Path, cid: int, slow: bool) -> subprocess.Popen[str]:
    code = CHILD.format(
        test_dir=str(HERE),
        db=str(tmp_path / "store.sqlite"),
        spool=str(tmp_path / "spool"),
        cid=cid,
        slow=slow,
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    return proc


@pytest.mark.parametrize("store_down", [False, True], ids=["store-up", "store-down"])
def test_kill_9_then_restart_replays_and_every_boundary_is_stored_once(
    tmp_path: Path, store_down: bool
) -> None:
    proc = _child(tmp_path, 1, store_down)
    time.sleep(2.0)  # collect for a while (the child runs on its own; this is its run time)
    os.kill(proc.pid, signal.SIGKILL)
    killed_at_ms = time.time() * 1000
    proc.wait(10)
    # restart on the same spool: it replays first, then collects context 2 for a moment
    writer = KeyWriter(tmp_path / "store.sqlite")
    with DataCollector(LOG, [CountingReader()], [writer], spool_dir=tmp_path / "spool") as c:
        c.start(DataCollectionContext(2, [V(99, 50)], min_interval_ms=10))
        wait_for(lambda: c.stats().writers["keys"].queue_depth == 0, 30, "the replay to be written")
        replayed = c.stats().writers["keys"].replayed_samples
    stored = [r for r in rows(tmp_path / "store.sqlite") if r[0] == 1]
    by_var: dict[int, list[int]] = {}
    for _, var, at, _, _ in stored:
        by_var.setdefault(var, []).append(at // 1000 // 20 * 20)
    assert sorted(by_var) == list(range(1, 21))
    for var, boundaries in by_var.items():
        assert len(boundaries) == len(set(boundaries)), f"variable {var}: a boundary stored twice"
        first, last = min(boundaries), max(boundaries)
        assert sorted(boundaries) == list(range(first, last + 20, 20)), f"variable {var}: a gap"
        # at most the last spool_sync_s (0.2 s) before the kill may be missing (+ scheduling slack)
        assert last >= killed_at_ms - 1000, (var, killed_at_ms - last)
    if store_down:
        assert replayed >= 20 * 40  # ~2 s at 20 ms of 20 variables came from the spool
    # the killed run was closed in the store as ended abnormally
    stops = [e for e in events(tmp_path / "store.sqlite") if e[0] == "stop" and e[1] == 1]
    assert len(stops) == 1 and "abnormal" in stops[0][3]


def test_open_failing_at_start_is_retried_in_the_background_while_data_spools(tmp_path: Path) -> None:
    writer = KeyWriter(tmp_path / "store.sqlite", fail_open=3)
    with DataCollector(
        LOG, [CountingReader()], [writer], spool_dir=tmp_path / "spool", write_retry_s=0.3
    ) as c:
        c.start(DataCollectionContext(1, [V(1, 20)], min_interval_ms=10))  # does not raise
        wait_for(lambda: c.stats().writers["keys"].samples_written >= 20, 15, "writing once open")
    s = c.stats().writers["keys"]
    assert s.samples_written == s.samples_delivered and writer.fail_open == 0
    assert len(rows(tmp_path / "store.sqlite")) == s.samples_written


def test_permanent_error_goes_to_the_quarantine(tmp_path: Path) -> None:
    class Picky(RecordingWriter):
        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            if not self.batches:
                self.batches.append((0, 0))
                raise ValueError("value refused by the store")
            super().write(context, variables)

    writer = Picky("picky")
    with DataCollector(LOG, [CountingReader()], [writer], spool_dir=tmp_path / "spool") as c:
        c.start(DataCollectionContext(1, [V(1, 20)], min_interval_ms=10))
        wait_for(lambda: len(writer.rows) >= 10, 10, "rows after the refused batch")
    s = c.stats().writers["picky"]
    assert s.quarantined_batches == 1 and s.lost_batches == 1
    files = list((tmp_path / "spool").rglob("quarantine/*.q"))
    assert len(files) == 1
    identity(c.stats())
    (info,) = inspect_spool(tmp_path / "spool")
    assert info.quarantined == 1 and "value refused by the store" in info.quarantine_reasons[0]
    assert info.samples == 0  # everything else was written
    # put it back: the next start writes it
    assert retry_quarantine(tmp_path / "spool") == 1
    (info,) = inspect_spool(tmp_path / "spool")
    assert info.quarantined == 0 and info.samples >= 1
    again = RecordingWriter("picky")
    with DataCollector(LOG, [CountingReader()], [again], spool_dir=tmp_path / "spool") as c2:
        c2.start(DataCollectionContext(2, [V(5, 50)], min_interval_ms=10))
        wait_for(lambda: len(again.of(1)) >= 1, 10, "the quarantined batch written")
    assert inspect_spool(tmp_path / "spool")[0].samples == 0
    assert drop_spool(tmp_path / "spool") >= 0


def test_acknowledged_segments_leave_the_disk_when_the_spool_moves_on(tmp_path: Path) -> None:
    """A segment whose records were all acknowledged while it was being written is deleted when the
    next one starts: the spool holds what is pending plus at most the active segment, never its cap."""
    ctx = DataCollectionContext(7, [V(1)])
    batch = CollectedVariables.of(ctx.variables)
    batch.values[:] = [1]
    batch.read_ats[:] = [datetime.now(UTC)]
    spool = Spool(tmp_path / "w", max_bytes=1 << 30, sync_s=1.0)
    spool.segment_bytes = 64 * 1024
    key = spool.append_context(ctx)
    payload = encode_batch(batch)
    for _ in range(2000):  # ~20 segments' worth, each record acknowledged as soon as it is written
        spool.ack(spool.append(KIND_DATA, key, payload, 1))
    assert spool.samples == 0
    assert spool.bytes <= spool.segment_bytes, spool.bytes
    assert len(list((tmp_path / "w").glob("*.seg"))) == 1
    pending = spool.append(KIND_DATA, key, payload, 1)  # a record still pending keeps its segment
    for _ in range(1000):
        spool.ack(spool.append(KIND_DATA, key, payload, 1))
    assert spool.bytes <= 2 * spool.segment_bytes, spool.bytes
    assert len(list((tmp_path / "w").glob("*.seg"))) == 2
    spool.ack(pending)
    assert len(list((tmp_path / "w").glob("*.seg"))) == 1
    spool.close()


def test_a_run_is_known_open_after_a_crash_even_once_its_start_left_the_spool(tmp_path: Path) -> None:
    """A start is on disk as soon as it is spooled (not at the next sync), and every new segment
    carries a marker for the runs still open, so a replay after kill -9 closes the run as ended
    abnormally also when the segment with its start was acknowledged and deleted long ago."""
    ctx = DataCollectionContext(7, [V(1)])
    batch = CollectedVariables.of(ctx.variables)
    batch.values[:] = [1]
    batch.read_ats[:] = [datetime.now(UTC)]
    folder = tmp_path / "w"
    spool = Spool(folder, max_bytes=1 << 30, sync_s=3600.0)  # no timed sync during the test
    spool.segment_bytes = 64 * 1024
    key = spool.append_context(ctx)
    started = spool.append(KIND_STARTED, key, None)
    on_disk = [r.kind for f in folder.glob("*.seg") for r, _, _ in Spool._scan(f, int(f.stem))]
    assert KIND_STARTED in on_disk  # synced at once
    spool.ack(started)
    payload = encode_batch(batch)
    for _ in range(2000):  # ~20 segments, each acknowledged at once: the first one is deleted
        spool.ack(spool.append(KIND_DATA, key, payload, 1))
    assert started.segment not in {int(f.stem) for f in folder.glob("*.seg")}
    spool.sync(force=True)
    spool._close_active()  # a crash: the files stay as they are, nothing is tidied up
    assert spool._lock_file is not None
    spool._lock_file.close()
    again = Spool(folder, max_bytes=1 << 30, sync_s=1.0)
    replayed = again.replay()
    assert replayed.open_keys == {key} and replayed.records == []
    again.close()


def test_a_full_spool_drops_the_oldest_loudly_and_counts_it(tmp_path: Path) -> None:
    writer = KeyWriter(tmp_path / "store.sqlite")
    writer.down.set()
    c = DataCollector(
        LOG,
        [CountingReader()],
        [writer],
        spool_dir=tmp_path / "spool",
        spool_max_bytes=1 << 20,
        max_queue_samples=2000,
        drain_timeout_s=0.5,
    )
    variables = [V(i, 10, address="sine", vt="float") for i in range(1, 201)]
    c.start(DataCollectionContext(1, variables, min_interval_ms=10))
    wait_for(lambda: c.stats().writers["keys"].spool_bytes > 900_000, 20, "the spool filling")
    writer.down.clear()
    wait_for(lambda: c.stats().writers["keys"].dropped_samples > 0, 20, "drops of the oldest data")
    c.close()
    identity(c.stats())
    assert c.stats().writers["keys"].dropped_samples > 0


def test_writers_need_distinct_names_with_a_spool(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="two writers are named 'rec'"):
        DataCollector(LOG, [], [RecordingWriter(), RecordingWriter()], spool_dir=tmp_path / "s")
    DataCollector(LOG, [], [RecordingWriter(), RecordingWriter()]).close()  # fine without
    from data_writer.noop_data_writer import NoopDataWriter

    a, b = NoopDataWriter(name="north"), NoopDataWriter(name="south")
    assert (a.name, b.name) == ("north", "south")
    DataCollector(LOG, [], [a, b], spool_dir=tmp_path / "s").close()
    with pytest.raises(ConfigurationError, match="name must be a non-empty str"):
        NoopDataWriter(name=" ")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"spool_sync_s": 0}, "spool_sync_s"),
        ({"spool_max_bytes": 10}, "spool_max_bytes"),
        ({"spool_dir": 3}, "spool_dir"),
    ],
)
def test_spool_options_are_checked(tmp_path: Path, kwargs: dict[str, Any], needle: str) -> None:
    kwargs.setdefault("spool_dir", tmp_path / "s")
    with pytest.raises(ConfigurationError, match=needle):
        DataCollector(LOG, [], [], **kwargs)
