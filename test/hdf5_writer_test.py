"""HDF5 writer: round trips through pandas and h5py, metadata of both kinds, runs and files,
refused files, kill -9 while writing, disk full, spool replays without duplicates, options."""

from __future__ import annotations

import json
import math
import os
import queue
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

tables = pytest.importorskip(
    "tables", reason='the HDF5 writer needs PyTables: pip install "data-collector[hdf5]"'
)
pd = pytest.importorskip("pandas")
h5py = pytest.importorskip(
    "h5py", reason="h5py checks that other HDF5 tools read the files: pip install h5py"
)

from _util import LOG, RecordingWriter, Row, wait_for  # noqa: E402

from data_collector import (  # noqa: E402
    CollectedVariable,
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    DataReader,
    Quality,
    Variable,
    WriterError,
)
from data_collector._registry import writer_class  # noqa: E402
from data_reader.random import RandomDataReader  # noqa: E402
from data_writer.hdf5 import (  # noqa: E402
    FORMAT_VERSION,
    REPLAY_KEY,
    Hdf5DataWriter,
    list_runs,
    read_frame,
    read_samples,
    table_keys,
)
from data_writer.hdf5._hdf5lib import flush_checked  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: address -> (value_type, value or a function of the read number n, quality, error)
EXOTIC: dict[str, tuple[str, Any, Quality, str | None]] = {
    "nan": ("float", math.nan, Quality.GOOD, None),
    "neg-zero": ("float", -0.0, Quality.GOOD, None),
    "inf": ("float", -math.inf, Quality.GOOD, None),
    "float": ("float", lambda n: n + 0.1, Quality.GOOD, None),
    "int64-min": ("int", -(2**63), Quality.GOOD, None),
    "int64-max": ("int", 2**63 - 1, Quality.GOOD, None),
    "uint64-low": ("int", 2**63, Quality.GOOD, None),
    "uint64-max": ("int", 2**64 - 1, Quality.GOOD, None),
    "huge-int": ("int", 10**30, Quality.GOOD, None),
    "counter": ("int", lambda n: n, Quality.GOOD, None),
    "bool": ("bool", lambda n: n % 2 == 0, Quality.GOOD, None),
    "text": ("str", lambda n: f'Grüße #{n}, "q"\nline', Quality.GOOD, None),
    "empty": ("str", "", Quality.GOOD, None),
    "inner-nul": ("str", "a\0b", Quality.GOOD, None),
    "trailing-nul": ("str", "ab\0", Quality.GOOD, None),
    "surrogate": ("str", "x\udc80y", Quality.GOOD, None),
    "long-text": ("str", "é" * 400, Quality.GOOD, None),  # 800 bytes: str_1024
    "bytes": ("bytes", b"\x00\x01\xff\x00", Quality.GOOD, None),
    "json": ("str", [1, {"a": None}], Quality.GOOD, None),
    "decimal": ("str", Decimal("1.10"), Quality.GOOD, None),
    "uncertain": ("float", lambda n: n * 0.5, Quality.UNCERTAIN, "stale"),
    "bad": ("float", None, Quality.BAD, "timeout: device did not answer"),
    "bad-long-error": ("int", None, Quality.BAD, "E" * 200),  # errors_256
}


class ExoticReader(DataReader):
    """Delivers the values of :data:`EXOTIC`, by address."""

    reader_type = "exotic"
    value_types = frozenset({"bytes"})

    def __init__(self) -> None:
        super().__init__(min_interval_ms=10)
        self.n = 0

    def read(self, variables: CollectedVariables) -> None:
        self.n += 1
        for item in variables:
            _, value, quality, error = EXOTIC[item.variable.address]
            item.value = value(self.n) if callable(value) else value
            item.quality = quality
            item.error = error


def exotic_variables() -> list[Variable]:
    return [Variable(i + 1, a, spec[0], "exotic", 20) for i, (a, spec) in enumerate(EXOTIC.items())]


def same(a: Any, b: Any) -> bool:
    """Equal values of equal type; NaN equals NaN, and -0.0 differs from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return bool(a == b)


def check_stored(delivered: list[Row], stored: list[Any]) -> None:
    assert len(stored) == len(delivered)
    by_key = {(r.variable_id, r.read_at): r for r in delivered}
    assert len(by_key) == len(delivered)
    for s in stored:
        r = by_key[(s.variable_id, s.read_at)]
        assert same(s.value, r.value), (s, r)
        assert (s.quality, s.error) == (r.quality, r.error), (s, r)


def collect(writer: Hdf5DataWriter, context: DataCollectionContext, per_variable: int) -> RecordingWriter:
    rec = RecordingWriter()
    with DataCollector(LOG, [ExoticReader()], [writer, rec]) as c:
        c.start(context)
        wait_for(lambda: len(rec.of(context.id)) >= per_variable * len(context.variables), 20, "samples")
        c.stop(context.id)
    return rec


def test_round_trip_through_read_samples_pandas_and_h5py(tmp_path: Path) -> None:
    path = tmp_path / "lab" / "run.h5"
    metadata = {"operator": "CG", "sample": "S-12", "temperature_C": 21.5, "tags": ["a", "b"], "Größe": 3}
    ctx = DataCollectionContext(7, exotic_variables(), min_interval_ms=10, metadata=metadata)
    rec = collect(Hdf5DataWriter(path, flush_s=0.2), ctx, 5)
    delivered = rec.of(7)

    # 1. typed read-back: every value with its Python type, NaN, -0.0, uint64, big ints, texts, BAD
    stored = read_samples(path, 7)
    check_stored(delivered, stored)
    read_at = [s.read_at for s in stored if s.read_at is not None]
    assert len(read_at) == len(stored) and all(t.tzinfo is not None for t in read_at)
    assert read_at == sorted(read_at)
    assert {s.address for s in stored} == set(EXOTIC)

    # 2. the run, both kinds of metadata kept apart
    (run,) = list_runs(path)
    assert (run.key, run.context_id, run.run, run.samples) == ("/context_7/run_1", 7, 1, len(delivered))
    assert run.metadata == metadata
    assert run.deduced_metadata == dict(ctx.deduced_metadata)
    assert run.deduced_metadata["ended"] == "stopped" and "end" in run.deduced_metadata
    assert run.start == ctx.start_date and run.end == ctx.end_date and run.ended == "stopped"

    # 3. pandas.read_hdf on the documented keys
    keys = table_keys(path, 7)
    base = "/context_7/run_1/"
    for name in (
        "float",
        "int",
        "uint",
        "bool",
        "str",
        "str_1024",
        "other",
        "novalue",
        "errors",
        "errors_256",
    ):
        assert base + name in keys, keys
    floats = pd.read_hdf(path, base + "float")
    assert list(floats.columns) == ["time_us", "variable_id", "value", "quality"]
    assert str(floats["time_us"].dtype) == "int64" and str(floats["value"].dtype) == "float64"
    nan_id = next(v.id for v in ctx.variables if v.address == "nan")
    assert floats[floats.variable_id == nan_id]["value"].isna().all()
    uints = pd.read_hdf(path, base + "uint")
    assert str(uints["value"].dtype) == "uint64" and set(uints["value"].tolist()) == {2**63, 2**64 - 1}
    ints = pd.read_hdf(path, base + "int")
    assert {-(2**63), 2**63 - 1} <= set(ints["value"].tolist())
    texts = pd.read_hdf(path, base + "str")
    assert any(t.startswith("Grüße #") for t in texts["value"])
    novalue = pd.read_hdf(path, base + "novalue")
    assert set(novalue["quality"]) == {"BAD"}
    errors = pd.read_hdf(path, base + "errors")
    bad = novalue.merge(errors, on=["time_us", "variable_id"], how="left")
    bad_id = next(v.id for v in ctx.variables if v.address == "bad")
    assert set(bad[bad.variable_id == bad_id]["error"]) == {"timeout: device did not answer"}
    assert set(pd.read_hdf(path, base + "errors_256")["error"]) == {"E" * 200}
    times = pd.to_datetime(floats["time_us"], unit="us", utc=True)
    assert times.min() >= pd.Timestamp(ctx.start_date) and times.max() <= pd.Timestamp(ctx.end_date)
    variables = pd.read_hdf(path, base + "variables")
    # pandas reads a text "nan" as NaN (its nan_rep for HDF tables); read_samples does not
    assert set(variables["address"].dropna()) == set(EXOTIC) - {"nan"}

    # 4. read_frame: long format, typed values in an object column (mixed kinds)
    frame = read_frame(path, 7)
    assert list(frame.columns) == [
        "context_id",
        "run",
        "time",
        "variable_id",
        "address",
        "value",
        "quality",
        "error",
        "name",
        "unit",
    ]
    assert len(frame) == len(delivered) and str(frame["time"].dtype).startswith("datetime64")
    by = {(int(r.variable_id), r.time.to_pydatetime()): r for r in frame.itertuples()}
    for d in delivered:
        r = by[(d.variable_id, d.read_at)]
        assert same(r.value, d.value) and r.quality == d.quality.value and r.error == d.error
    float_id = next(v.id for v in ctx.variables if v.address == "float")
    only_float = read_frame(path, 7, variable_ids=[float_id])
    assert str(only_float["value"].dtype) == "float64" and len(only_float) == len(rec.of(7, float_id))

    # 5. h5py reads the same file: compound tables and attributes
    with h5py.File(path, "r") as f:
        assert (
            f.attrs["dc_format"] == b"data-collector-hdf5"
            and int(f.attrs["dc_format_version"]) == FORMAT_VERSION
        )
        group = f["context_7/run_1"]
        assert json.loads(group.attrs["user_metadata"]) == metadata
        assert json.loads(group.attrs["deduced_metadata"]) == dict(ctx.deduced_metadata)
        assert group.attrs["user__operator"] == b"CG" and group.attrs["user__temperature_C"] == 21.5
        assert group.attrs["deduced__ended"] == b"stopped"
        data = group["uint"][:]
        assert data.dtype.names == ("time_us", "variable_id", "value", "quality")
        assert {int(x) for x in data["value"]} == {2**63, 2**64 - 1}
        assert group["float"].compression == "gzip" and group["float"].chunks == (8192,)
        assert sum(
            group[name].shape[0] for name in group if not name.startswith(("errors", "variables"))
        ) == len(delivered)


def test_random_reader_through_a_collector_with_restarts_and_files_per_run(tmp_path: Path) -> None:
    variables = [
        Variable(1, "sine", "float", "random", 20),
        Variable(2, "counter", "int", "random", 20),
        Variable(3, "random", "bool", "random", 40),
        Variable(4, "constant:ready", "str", "random", 40),
        Variable(5, "bad:unplugged", "float", "random", 20),
    ]
    shared = tmp_path / "all.h5"
    per_run = str(tmp_path / "runs" / "c{context_id}-{start:%H%M%S.%f}.h5")
    w_shared, w_runs, rec = Hdf5DataWriter(shared, flush_s=0.3), Hdf5DataWriter(per_run), RecordingWriter()
    contexts = []
    with DataCollector(LOG, [RandomDataReader(min_interval_ms=10)], [w_shared, w_runs, rec]) as c:
        for k in range(2):  # the same context id twice: two runs
            ctx = DataCollectionContext(3, variables, min_interval_ms=10, metadata={"round": k})
            c.start(ctx)
            wanted = 40 * (k + 1)
            wait_for(lambda: len(rec.of(3)) >= wanted, 20, "samples")  # noqa: B023 - used at once
            c.stop(3)
            contexts.append(ctx)
    runs = list_runs(shared)
    assert [(r.key, r.metadata) for r in runs] == [
        ("/context_3/run_1", {"round": 0}),
        ("/context_3/run_2", {"round": 1}),
    ]
    assert [r.start for r in runs] == [ctx.start_date for ctx in contexts]
    files = sorted((tmp_path / "runs").glob("*.h5"))
    assert len(files) == 2
    assert [list_runs(f)[0].metadata for f in files] == [{"round": 0}, {"round": 1}]
    assert all(list_runs(f)[0].key == "/context_3/run_1" for f in files)
    for k, ctx in enumerate(contexts):
        assert ctx.start_date is not None and ctx.end_date is not None
        delivered = [r for r in rec.of(3) if ctx.start_date <= r.read_at <= ctx.end_date]
        check_stored(delivered, read_samples(shared, 3, k + 1))
        check_stored(delivered, read_samples(w_runs.path_for(3, ctx.start_date)))
    frame = read_frame(shared)
    assert len(frame) == len(rec.of(3)) and set(frame["run"]) == {1, 2}
    bad = frame[frame.variable_id == 5]
    assert set(bad["quality"]) == {"BAD"} and bad["value"].isna().all()
    assert all(e.endswith("unplugged") for e in bad["error"])  # or "missed: ...; last read: unplugged"
    counters = frame[(frame.variable_id == 2) & (frame.quality == "GOOD")]
    assert counters["value"].tolist() == list(range(1, len(counters) + 1))  # ordered, no gap, no repeat
    start = contexts[1].start_date
    assert start is not None
    later = read_frame(shared, start=start, end=start + timedelta(seconds=3600), variable_ids=[1, 2])
    assert set(later["run"]) == {2} and set(later["variable_id"]) <= {1, 2} and len(later) > 0


def test_big_metadata_negative_ids_and_refused_values(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    big = {"notes": "n" * 100_000, "id": 1}
    ctx = DataCollectionContext(-5, [Variable(-9, "a", "float", "r")], metadata=big)
    w = Hdf5DataWriter(path, flush_s=0)
    at = datetime(2026, 3, 4, 5, 6, 7, 891_011, tzinfo=UTC)
    v = ctx.variables[0]
    w.context_started(ctx)
    batch = CollectedVariables(
        [
            CollectedVariable(v, (1, 2), at),  # a tuple cannot be stored exactly
            CollectedVariable(v, object(), at + timedelta(seconds=1), Quality.UNCERTAIN, "old"),
            CollectedVariable(v, 2.5, at + timedelta(seconds=2)),
            CollectedVariable(v, [1, (2, 3)], at + timedelta(seconds=3)),  # JSON would make it a list
        ]
    )
    w.write(ctx, batch)
    w.context_stopped(ctx)
    w.close()
    assert w.values_refused == 3
    (run,) = list_runs(path)
    assert run.key == "/context_m5/run_1" and run.metadata == big and run.context_id == -5
    got = [(s.variable_id, s.value, s.quality, s.error) for s in read_samples(path)]
    assert got[0] == (-9, None, Quality.BAD, "value refused: tuple values cannot be stored")
    assert got[1][:3] == (-9, None, Quality.BAD)
    refused = got[1][3]
    assert refused is not None and refused.startswith("value refused: object values")
    assert refused.endswith("; old")
    assert got[2] == (-9, 2.5, Quality.GOOD, None)
    assert got[3][:3] == (-9, None, Quality.BAD)
    refused = got[3][3]
    assert refused is not None and "a list that JSON cannot hold exactly" in refused
    with h5py.File(path, "r") as f:
        assert json.loads(f["context_m5/run_1/user_metadata"][0]) == big  # too big for an attribute


def test_files_of_others_are_refused_permanently_and_left_untouched(tmp_path: Path) -> None:
    ctx = DataCollectionContext(1, [Variable(1, "a", "float", "r")])
    batch = CollectedVariables([CollectedVariable(ctx.variables[0], 1.0, datetime.now(UTC))])
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5\n")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = [1, 2, 3]
    newer = tmp_path / "newer.h5"
    w = Hdf5DataWriter(newer)
    w.open()
    w.close()
    with tables.open_file(str(newer), "a") as f:
        f.root._v_attrs["dc_format_version"] = 99
    folder = tmp_path / "folder.h5"
    folder.mkdir()
    for path, needle in (
        (text, "not an HDF5 file"),
        (foreign, "HDF5 file of something else"),
        (newer, "newer than this writer"),
        (folder, "directory"),
    ):
        before = path.read_bytes() if path.is_file() else None
        writer = Hdf5DataWriter(path)
        with pytest.raises(WriterError, match=needle) as err:
            writer.write(ctx, batch)
        assert not writer.is_transient(err.value), path
        with pytest.raises(WriterError, match=needle):
            writer.open()
        writer.close()
        assert (path.read_bytes() if path.is_file() else None) == before
    with pytest.raises(ConfigurationError, match="not a file of the data-collector HDF5 writer"):
        read_frame(foreign)
    with pytest.raises(ConfigurationError, match="no such file"):
        list_runs(tmp_path / "missing.h5")
    # an empty file holds nothing: it is taken
    empty = tmp_path / "empty.h5"
    empty.touch()
    w = Hdf5DataWriter(empty)
    w.write(ctx, batch)
    w.close()
    assert [s.value for s in read_samples(empty)] == [1.0]


def test_the_collector_flushes_when_idle_so_another_process_reads_without_further_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "live.h5"
    w = Hdf5DataWriter(path, flush_s=600)  # only the collector's flush when idle can write it
    assert w.flush_interval_s == 600
    ctx = DataCollectionContext(2, [Variable(1, "counter", "int", "random", 1000)])
    with DataCollector(LOG, [RandomDataReader()], [w]) as c:
        c.start(ctx)
        wait_for(lambda: w.samples_flushed >= 1, 5, "the collector to flush the idle writer")
        stats = c.stats().writers[w.name]
        assert stats.flushes >= 1 and stats.samples_written == w.samples_flushed == w.samples_written
        code = (
            "import sys; from data_writer.hdf5 import read_samples; "
            "print([s.value for s in read_samples(sys.argv[1])][:1])"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HDF5_USE_FILE_LOCKING": "FALSE"}
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[1]"


KILL_CHILD = r"""
import logging, time
from data_collector import DataCollectionContext, DataCollector, Variable
from data_reader.random import RandomDataReader
from data_writer.hdf5 import Hdf5DataWriter
logging.basicConfig(level=logging.WARNING)
writer = Hdf5DataWriter({path!r}, flush_s={flush_s})
c = DataCollector(logging.getLogger("child"), [RandomDataReader(min_interval_ms=10)], [writer])
variables = (
    [Variable(i, "counter", "int", "random", 20) for i in range(1, 6)]
    + [Variable(10 + i, "counter", "float", "random", 20) for i in range(5)]
    + [Variable(20, "counter", "str", "random", 20), Variable(21, "bad:gone", "float", "random", 20)]
)
c.start(DataCollectionContext(5, variables, min_interval_ms=10, metadata={{"operator": "kill test"}}))
last = -1
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    flushed = writer.samples_flushed
    if flushed != last:
        print(flushed, flush=True)
        last = flushed
    time.sleep(0.002)
"""


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line.strip())
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


@pytest.mark.parametrize("when", ["just-after-a-flush", "between-flushes"])
def test_kill_9_while_writing_leaves_a_file_with_everything_up_to_the_last_flush(
    tmp_path: Path, when: str
) -> None:
    path = tmp_path / "killed.h5"
    flush_s = 0.3
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = KILL_CHILD.format(path=str(path), flush_s=flush_s)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = _lines(proc)
        reported: list[int] = []
        while len(reported) < 5:  # the start (0), then four flushes with data
            line = lines.get(timeout=30)
            assert line is not None, "the child ended early"
            reported.append(int(line))
        if when == "between-flushes":  # (the next flush starts flush_s after the last one; a crash
            # *during* a flush may lose that flush, which the writer documents and does not prevent)
            time.sleep(random.uniform(0.05, flush_s * 0.8))  # the moment of the kill, not a wait
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        while (line := lines.get(timeout=10)) is not None:
            reported.append(int(line))  # printed before the kill: already flushed then
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    last_flush = max(reported)
    assert last_flush > 0

    with h5py.File(path, "r") as f:  # another HDF5 library opens it, every node readable
        names: list[str] = []
        f.visit(names.append)
        for name in names:
            node = f[name]
            if isinstance(node, h5py.Dataset):
                node[...]
    (run,) = list_runs(path)
    assert run.metadata == {"operator": "kill test"} and run.end is None and run.ended == ""
    stored = read_samples(path)
    assert len(stored) >= last_flush
    per_var: dict[int, list[Any]] = {}
    for s in stored:
        per_var.setdefault(s.variable_id, []).append(s)
    assert sorted(per_var) == [1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 20, 21]
    counts = {len(v) for v in per_var.values()}
    assert len(counts) == 1, counts  # whole batches: every variable has as many samples
    for vid, samples in per_var.items():
        times = [s.read_at for s in samples]
        assert times == sorted(times) and len(set(times)) == len(times), vid
        if vid == 21:
            assert {(s.quality, s.value) for s in samples} == {(Quality.BAD, None)}
            assert all(s.error is not None and s.error.endswith("gone") for s in samples)  # or missed
            continue
        good = [s.value for s in samples if s.quality is Quality.GOOD]
        expected: list[Any] = list(range(1, len(good) + 1))
        if vid >= 20:
            expected = [str(x) for x in expected]
        elif vid >= 10:
            expected = [float(x) for x in expected]
        assert good == expected, vid  # each value once, in order, nothing damaged
    for key in table_keys(path, 5):
        pd.read_hdf(path, key)


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("a small file system for a disk-full test needs root on Linux (mount -t tmpfs)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a disk-full test: {done.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    _mount_tmpfs(where, "8m")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for _ in range(100_000):  # bounded: at most 400 MB
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # the disk is full
    finally:
        os.close(fd)
    return filler


def test_disk_full_is_transient_and_nothing_is_lost_or_doubled_once_space_is_back(small_disk: Path) -> None:
    path = small_disk / "data.h5"
    writer = Hdf5DataWriter(path, flush_s=0.1, complevel=0, max_buffer_rows=400)
    rec = RecordingWriter()
    variables = [Variable(i, "counter", "float", "random", 20) for i in range(1, 21)]
    with DataCollector(LOG, [RandomDataReader(min_interval_ms=10)], [writer, rec], write_retry_s=60) as c:
        c.start(DataCollectionContext(1, variables, min_interval_ms=10))
        wait_for(lambda: writer.samples_flushed >= 200, 10, "first samples on disk")
        filler = _fill(small_disk)
        wait_for(lambda: c.stats().writers[writer.name].write_errors >= 3, 20, "writes refused: disk full")
        flushed_while_full = writer.samples_flushed
        filler.unlink()
        wait_for(lambda: writer.samples_flushed > flushed_while_full + 400, 20, "writing again")
        c.stop(1)
        stats = c.stats().writers[writer.name]
    assert stats.lost_samples == 0 and stats.dropped_samples == 0 and stats.retried_ok > 0
    check_stored(rec.of(1), read_samples(path, 1))


def test_flush_checked_reports_what_pytables_flush_ignores(small_disk: Path) -> None:
    import numpy as np

    h5 = tables.open_file(str(small_disk / "raw.h5"), "w")
    try:
        table = h5.create_table("/", "t", np.dtype([("a", "<i8"), ("b", "<f8")]), chunkshape=(8192,))
        assert flush_checked(h5) is True
        filler = _fill(small_disk)
        table.append(np.zeros(20_000, dtype=table.dtype))  # into HDF5's chunk cache: no error yet
        h5.flush()  # PyTables: the failed write goes unnoticed
        assert flush_checked(h5) is False
        filler.unlink()
        assert flush_checked(h5) is True
    finally:
        h5.close()


def test_a_failed_hdf5_write_is_undone_and_written_again_once_space_is_back(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a quota or a disk filled by another process: the free-space check sees room, HDF5 fails
    import data_writer.hdf5._writer as module

    monkeypatch.setattr(module, "_free_bytes", lambda path: 1 << 40)
    path = small_disk / "quota.h5"
    variables = [Variable(i, "x", "float", "r") for i in range(1000)] + [Variable(5000, "s", "str", "r")]
    ctx = DataCollectionContext(1, variables, metadata={"lot": "Q"})
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def batch(k: int) -> CollectedVariables:
        b = CollectedVariables.of(variables, t0 + timedelta(seconds=k))
        for i in range(1000):
            b.values[i] = float(k * 1000 + i)
        b.values[1000] = f"t{k}"
        return b

    w = Hdf5DataWriter(path, flush_s=0, max_buffer_rows=20_000)
    w.context_started(ctx)
    taken = 0
    for k in range(5):
        w.write(ctx, batch(k))
        taken += 1
    assert w.samples_flushed == 5 * 1001
    filler = _fill(small_disk)
    with pytest.raises(WriterError) as err:
        for k in range(5, 200):  # until the writer refuses a batch: HDF5 failed and the buffer is full
            w.write(ctx, batch(k))
            taken += 1
    assert w.is_transient(err.value) and "HDF5 could not write everything" in str(err.value)
    assert w.pending_samples > 0
    filler.unlink()
    w.flush()
    w.context_stopped(ctx)
    w.close()
    stored = read_samples(path)
    assert len(stored) == taken * 1001 and w.samples_flushed == taken * 1001
    assert sorted(s.value for s in stored if s.variable_id < 1000) == [float(i) for i in range(taken * 1000)]
    assert sorted(s.value for s in stored if s.variable_id == 5000) == sorted(f"t{k}" for k in range(taken))
    (run,) = list_runs(path)
    assert run.metadata == {"lot": "Q"} and run.ended == "" and run.end is not None


def _replayed(ctx: DataCollectionContext, ended: str | None = None) -> DataCollectionContext:
    """``ctx`` as the collector rebuilds it from its spool after a crash (data_collector._spool)."""
    again = DataCollectionContext(ctx.id, ctx.variables, metadata=ctx.metadata)
    again._start_date = ctx.start_date
    extra: dict[str, Any] = {REPLAY_KEY: True}
    if ended is not None:
        extra["ended"] = ended
    again._deduced = MappingProxyType({**ctx.deduced_metadata, **extra})
    return again


def test_replayed_batches_already_stored_are_not_stored_again(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    variables = [Variable(1, "a", "int", "r"), Variable(2, "b", "str", "r")]
    ctx = DataCollectionContext(4, variables, metadata={"lot": "A"})
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    ctx._start_date = t0

    def batch(k: int) -> CollectedVariables:
        at = t0 + timedelta(seconds=k)
        return CollectedVariables(
            [CollectedVariable(variables[0], k, at), CollectedVariable(variables[1], f"s{k}", at)]
        )

    first = Hdf5DataWriter(path, flush_s=0)
    first.context_started(ctx)
    for k in range(5):
        first.write(ctx, batch(k))
    first.close()  # as after a crash: no stop recorded; batches 3 and 4 were not confirmed to the spool

    again = _replayed(ctx, "abnormal: the collector ended without stopping this run (replayed)")
    second = Hdf5DataWriter(path, flush_s=0)
    second.context_started(again)  # its start record was not confirmed either
    merged = CollectedVariables([*batch(3), *batch(4), *batch(5)])  # replays may merge batches
    second.write(again, merged[:3])
    second.write(again, merged[3:])
    second.write(again, batch(6))
    again._end_date = t0 + timedelta(seconds=7)
    second.context_stopped(again)
    second.close()
    assert second.replayed_skipped == 4
    (run,) = list_runs(path)  # no second group for the same run
    assert run.metadata == {"lot": "A"}
    assert run.deduced_metadata["replayed_from_spool"] is True and run.replayed
    assert run.ended.startswith("abnormal") and run.end == t0 + timedelta(seconds=7)
    values = [(s.variable_id, s.value) for s in read_samples(path)]
    assert values == [x for k in range(7) for x in ((1, k), (2, f"s{k}"))]

    # a replay of batches that never reached the file stores them all
    third = Hdf5DataWriter(path, flush_s=0)
    third.write(_replayed(ctx), batch(7))
    third.close()
    assert third.replayed_skipped == 0 and len(read_samples(path)) == 16


SPOOL_CHILD = r"""
import logging, time
from data_collector import DataCollectionContext, DataCollector, Variable
from data_reader.random import RandomDataReader
from data_writer.hdf5 import Hdf5DataWriter
logging.basicConfig(level=logging.WARNING)
writer = Hdf5DataWriter({path!r}, flush_s={flush_s})
c = DataCollector(logging.getLogger("child"), [RandomDataReader(min_interval_ms=10)], [writer],
                  spool_dir={spool!r}, spool_sync_s={sync_s})
variables = [Variable(i, "counter", "int", "random", 20) for i in range(1, 11)]
c.start(DataCollectionContext(1, variables, min_interval_ms=10, metadata={{"lot": "K"}}))
last, next_print = -1, 0.0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    flushed, now = writer.samples_flushed, time.monotonic()
    if flushed != last or now >= next_print:  # samples on disk, samples read
        print(flushed, c.stats().readers["random"].samples, flush=True)
        last, next_print = flushed, now + 0.02
    time.sleep(0.001)
"""


@pytest.mark.parametrize("when", ["between-flushes", "just-after-a-flush"])
def test_kill_9_with_a_spool_then_restart_stores_every_sample_once(tmp_path: Path, when: str) -> None:
    """The collector confirms batches to its spool only after the writer flushed them: a kill
    between flushes loses nothing that was spooled (the next collector writes it), and a kill
    right after a flush (the confirmations not yet synced) stores nothing twice."""
    path, spool = tmp_path / "s.h5", tmp_path / "spool"
    flush_s = 1.0
    # between flushes: the spool is synced often; just after one: rarely, so the confirmations of
    # the flush are not on disk at the kill and its batches come again
    sync_s = 0.2 if when == "between-flushes" else 3.0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = SPOOL_CHILD.format(path=str(path), spool=str(spool), flush_s=flush_s, sync_s=sync_s)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    seen: list[tuple[float, int, int]] = []  # (when the line came, samples flushed, samples read)
    try:
        lines = _lines(proc)

        def next_line() -> tuple[int, int]:
            line = lines.get(timeout=30)
            assert line is not None, "the child ended early"
            flushed, read = (int(x) for x in line.split())
            seen.append((time.monotonic(), flushed, read))
            return flushed, read

        flushes = 0
        last = 0
        while flushes < 5:  # bounded by the timeout of each line and the child's own 60 s
            flushed, _ = next_line()
            if flushed != last:
                flushes += 1
                last = flushed
        if when == "between-flushes":
            kill_at = seen[-1][0] + 0.7 * flush_s  # the next flush comes 1 s after the last one
            while time.monotonic() < kill_at:
                flushed, _ = next_line()
                assert flushed == last, "a flush came early"
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # what had been read this long before the kill was synced to the spool by then
    read_before = max(read for at, _, read in seen if at <= killed - sync_s - 0.3)
    flushed_before = len(read_samples(path))
    writer = Hdf5DataWriter(path, flush_s=flush_s)
    with DataCollector(LOG, [RandomDataReader(min_interval_ms=10)], [writer], spool_dir=spool) as c:
        c.start(DataCollectionContext(2, [Variable(99, "counter", "int", "random", 50)], min_interval_ms=10))
        wait_for(lambda: c.stats().writers[writer.name].replayed_samples > 0, 10, "a replay")
        wait_for(lambda: c.stats().writers[writer.name].queue_depth == 0, 30, "the replay to be written")
        replayed = c.stats().writers[writer.name].replayed_samples
    stored = read_samples(path, 1)
    keys = Counter((s.variable_id, s.read_at) for s in stored)
    assert max(keys.values()) == 1, "a sample stored twice"
    for vid in range(1, 11):
        good = [s.value for s in stored if s.variable_id == vid and s.quality is Quality.GOOD]
        assert good == list(range(1, len(good) + 1)), vid  # no gap, no double
    assert len(stored) >= read_before > 0, (len(stored), read_before)  # nothing spooled was lost
    if when == "between-flushes":  # the batches since the last flush were only in the spool
        assert writer.replayed_skipped == 0 and len(stored) >= flushed_before + replayed > flushed_before
    else:  # the batches of the last flush were in the file and came again: skipped
        assert writer.replayed_skipped > 0
    (run,) = list_runs(path, 1)
    assert run.metadata == {"lot": "K"} and run.deduced_metadata.get("replayed_from_spool") is True
    assert run.ended.startswith("abnormal") and run.end is not None


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"path": ""}, "path must be a non-empty path"),
        ({"path": 3}, "path must be a str or path"),
        ({"path": "x-{run}.h5"}, "may only hold the fields"),
        ({"path": "x.h5", "flush_s": -1}, "flush_s must be a number"),
        ({"path": "x.h5", "flush_s": math.inf}, "flush_s must be a number"),
        ({"path": "x.h5", "complib": "gzip"}, "complib must be one of"),
        ({"path": "x.h5", "complevel": 10}, "complevel must be an int"),
        ({"path": "x.h5", "complevel": 1.5}, "complevel must be an int"),
        ({"path": "x.h5", "shuffle": "yes"}, "shuffle must be true or false"),
        ({"path": "x.h5", "chunk_rows": 0}, "chunk_rows must be an int"),
        ({"path": "x.h5", "max_buffer_rows": True}, "max_buffer_rows must be an int"),
        ({"path": "x.h5", "replay_tail_rows": -1}, "replay_tail_rows must be an int"),
    ],
)
def test_bad_options_are_refused_naming_the_value(kwargs: dict[str, Any], needle: str) -> None:
    path = kwargs.pop("path")
    with pytest.raises(ConfigurationError, match=needle):
        Hdf5DataWriter(path, **kwargs)


def test_registered_as_hdf5_and_sample_configuration_validates(tmp_path: Path) -> None:
    assert writer_class("hdf5") is Hdf5DataWriter
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sample = ROOT / "data_writer" / "hdf5" / "sample.toml"
    done = subprocess.run(
        [sys.executable, "-m", "data_collector", "validate", str(sample)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hdf5 Hdf5DataWriter" in done.stdout
    assert not list(tmp_path.iterdir())  # validating writes nothing
