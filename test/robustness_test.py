"""Edge cases of the engine and the CSV writer: clock steps, re-planning at a boundary, hung readers,
re-entrant listeners and plugins, torn and failing CSV writes, pickling."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _util import LOG, CountingReader, RecordingWriter, V, ms_of, wait_for

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollectionListener,
    DataCollector,
    DataReader,
    Quality,
    Variable,
    WriterError,
)
from data_writer.csv_file_data_writer import CsvFileDataWriter, read_samples


class OffsetClock:
    """The system clock plus an offset that a test can step."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def time_ns(self) -> int:
        return time.time_ns() + self.offset_ns


def test_wall_clock_stepping_back_does_not_stall_the_ticks() -> None:
    clock = OffsetClock()
    writer = RecordingWriter()
    with DataCollector(LOG, [CountingReader()], [writer], clock=clock) as c:
        c.start(DataCollectionContext(1, [V(1)]))
        wait_for(lambda: len(writer.rows) >= 3)
        clock.offset_ns = -3600 * 10**9  # NTP steps the clock back one hour
        n = len(writer.rows)
        wait_for(lambda: len(writer.rows) >= n + 5, 5, "ticks after the clock stepped back")


def test_replanning_just_before_a_boundary_costs_the_others_no_tick() -> None:
    reader = CountingReader()
    writer = RecordingWriter()
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1)]))
        wait_for(lambda: len(writer.of(1)) >= 2)
        for k in range(15):
            # just before the next 100 ms boundary, start (or stop) another context
            now = time.time()
            time.sleep(0.1 - now % 0.1 - 0.0007 if 0.1 - now % 0.1 > 0.002 else 0.1 - now % 0.1 + 0.0993)
            if k % 2 == 0:
                c.start(DataCollectionContext(2, [V(2, 200)]))
            else:
                c.stop(2)
        first = ms_of(writer.of(1)[0].read_at) // 100
        last = ms_of(writer.of(1)[-1].read_at) // 100
        got = {ms_of(r.read_at) // 100 for r in writer.of(1)}
    missing = sorted(set(range(first, last + 1)) - got)
    assert len(missing) <= 2, f"{len(missing)} ticks of context 1 lost around re-plans: {missing}"


def test_a_reader_changing_a_column_length_is_bad_for_one_tick_only() -> None:
    class Sloppy(CountingReader):
        def read(self, variables: CollectedVariables) -> None:
            super().read(variables)
            if len(self.calls) == 2:
                variables.values.append(0)

    writer = RecordingWriter()
    with DataCollector(LOG, [Sloppy()], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1)]))
        wait_for(lambda: len(writer.rows) >= 5, 5, "reads going on after the bad tick")
        assert c.stats().readers["random"].read_errors == 1
    bad = [r for r in writer.rows if r.quality is Quality.BAD]
    assert len(bad) == 1 and "changed the length" in (bad[0].error or "")


def test_duration_beyond_100_years_is_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="100 years"):
        DataCollectionContext(1, [V(1)], duration_s=1e12)


def test_hung_reader_bounds_stop_and_close_by_drain_timeout() -> None:
    entered = threading.Event()

    class Hung(CountingReader):
        def read(self, variables: CollectedVariables) -> None:
            if len(self.calls) >= 1:
                entered.set()
                time.sleep(3)
            super().read(variables)

    writer = RecordingWriter()
    c = DataCollector(LOG, [Hung()], [writer], drain_timeout_s=0.5)
    c.start(DataCollectionContext(1, [V(1)]))
    assert entered.wait(5)
    t0 = time.monotonic()
    c.stop(1)
    assert time.monotonic() - t0 < 2.0
    rows_at_stop = len(writer.rows)
    time.sleep(3.5)  # let the hung read finish: its values must not reach the stopped context
    assert len(writer.rows) == rows_at_stop
    t0 = time.monotonic()
    c.close()
    assert time.monotonic() - t0 < 4.0


def test_plugins_may_query_the_collector_during_stop() -> None:
    holder: dict[str, DataCollector] = {}

    class Curious(RecordingWriter):
        def write(self, context: Any, variables: CollectedVariables) -> None:
            holder["c"].contexts()
            holder["c"].stats()
            super().write(context, variables)

    writer = Curious()
    with DataCollector(LOG, [CountingReader()], [writer], drain_timeout_s=5) as c:
        holder["c"] = c
        c.start(DataCollectionContext(1, [V(1, 20)], min_interval_ms=10))
        wait_for(lambda: len(writer.rows) >= 5)
        t0 = time.monotonic()
        c.stop(1)
        assert time.monotonic() - t0 < 2.0
        assert writer.events[-1] == ("stopped", 1)


def test_listener_closing_the_collector_inside_stop() -> None:
    holder: dict[str, DataCollector] = {}

    class Closer(DataCollectionListener):
        def before_stop(self, context: DataCollectionContext) -> None:
            holder["c"].close()

    writer = RecordingWriter()
    c = DataCollector(LOG, [CountingReader()], [writer], [Closer()])
    holder["c"] = c
    c.start(DataCollectionContext(1, [V(1)]))
    c.stop(1)  # the listener closes everything; stop() must not fail
    assert c.closed and writer.closed == 1


def test_listener_stopping_the_context_inside_pause() -> None:
    holder: dict[str, DataCollector] = {}

    class Stopper(DataCollectionListener):
        def before_pause(self, context: DataCollectionContext) -> None:
            holder["c"].stop(context.id)

    with DataCollector(LOG, [CountingReader()], [RecordingWriter()], [Stopper()]) as c:
        holder["c"] = c
        c.start(DataCollectionContext(1, [V(1)]))
        c.pause(1)
        assert c.contexts() == {}


class _HalfFailing:
    """A file that writes half of what it is given, then fails as a full disk does."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, text: str) -> int:
        self._f.write(text[: len(text) // 2])
        self._f.flush()
        raise OSError(28, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def test_csv_failed_write_is_undone_so_the_retry_writes_once(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    w = CsvFileDataWriter(path)
    w.open()
    ctx = DataCollectionContext(1, [])
    batch = CollectedVariables.of([V(i) for i in range(1, 21)], datetime(2026, 1, 1, tzinfo=UTC))
    batch.values[:] = list(range(20))
    w.write(ctx, batch[:5])
    w._files[path] = _HalfFailing(w._files[path])  # type: ignore[assignment]
    with pytest.raises(WriterError, match="No space left"):
        w.write(ctx, batch[5:])
    w.write(ctx, batch[5:])  # the collector's retry
    w.close()
    rows = read_samples(path)
    assert [r["variable_id"] for r in rows] == list(range(1, 21))


def test_csv_torn_last_row_stays_alone(tmp_path: Path) -> None:
    path = tmp_path / "torn.csv"
    w = CsvFileDataWriter(path)
    w.open()
    batch = CollectedVariables.of([V(1)])
    batch.values[0] = 1
    w.write(DataCollectionContext(1, []), batch)
    w.close()
    with open(path, "a", encoding="utf-8") as f:
        f.write("1,2,counter,2026-01-01T00:00:00.000+00:00,4")  # a crash mid-row
    w = CsvFileDataWriter(path)
    w.open()
    w.write(DataCollectionContext(1, []), batch)
    w.close()
    lines = path.read_text().splitlines()
    assert lines[2] == "1,2,counter,2026-01-01T00:00:00.000+00:00,4"
    assert lines[3].startswith("1,1,counter,") and len(lines) == 4


def test_random_counter_survives_a_change_of_the_shared_variable() -> None:
    writer = RecordingWriter()
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 100)]))
        c.start(DataCollectionContext(2, [V(1, 200)]))
        wait_for(lambda: len(writer.of(2)) >= 3)
        c.stop(1)  # context 2's Variable (another interval) is now the one read
        n = len(writer.of(2))
        wait_for(lambda: len(writer.of(2)) >= n + 3)
    values = [r.value for r in writer.of(2)]
    assert values == sorted(values) and len(set(values)) == len(values), values


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: CsvFileDataWriter(None), "None"),  # type: ignore[arg-type]
        (lambda: CsvFileDataWriter(123), "123"),  # type: ignore[arg-type]
        (lambda: CsvFileDataWriter("x.csv", delimiter="\n"), "delimiter"),
    ],
)
def test_more_bad_constructor_input(make: Any, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        make()


def test_bad_reader_attributes_are_refused_by_the_collector() -> None:
    class StrMin(CountingReader):
        min_interval_ms = "100"  # type: ignore[assignment]

    class ListTypes(CountingReader):
        value_types = ["bytes"]  # type: ignore[assignment]

    for reader in (StrMin(), ListTypes()):
        with pytest.raises(ConfigurationError):
            DataCollector(LOG, [reader], [])


def test_pickled_variable_hashes_right_in_another_process() -> None:
    v = Variable(3, "hr:1", "int", "modbus", 250)
    code = (
        "import pickle, sys\n"
        "from data_collector import Variable\n"
        "v = pickle.loads(sys.stdin.buffer.read())\n"
        "assert v in {Variable(3, 'hr:1', 'int', 'modbus', 250)}\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], input=pickle.dumps(v), check=True, timeout=60, env=env)


def test_reader_may_not_deadlock_by_stopping_from_read() -> None:
    holder: dict[str, DataCollector] = {}

    class SelfStopping(DataReader):
        reader_type = "random"

        def read(self, variables: CollectedVariables) -> None:
            variables.values[:] = [1] * len(variables)
            if "c" in holder:
                c = holder.pop("c")
                c.stop(1)

    with DataCollector(LOG, [SelfStopping()], [RecordingWriter()], drain_timeout_s=2) as c:
        c.start(DataCollectionContext(1, [V(1)]))
        holder["c"] = c
        wait_for(lambda: c.contexts() == {}, 10, "the reader's own stop")
