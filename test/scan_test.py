"""Parameter scans (``data_collector.Scan``, ``[[scans]]``) against the bundled Modbus and OPC UA
simulators: every point's whole configuration written in order (seen on the simulator side),
settling, capture, the merged table of the HDF5 and SQL writers, refused writes, read-back
mismatches, the journal (resume, another definition), bad definitions with their key paths and
the dry run. The kill -9 / resume test of the command is in ``cli_scan_test.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from data_collector import (
    ConfigFileError,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    Scan,
    ScanColumn,
    ScanProgress,
    ScanRows,
    Setpoint,
    Settle,
    Variable,
    load_config,
)
from data_collector.cli import main
from data_reader.modbus.simulator import ModbusSimulator
from data_reader.opcua.simulator import OpcUaSimulator
from data_writer.hdf5 import list_runs, scan_key

LOG = logging.getLogger("test.scan")
FLOW = "nsu=urn:data-collector:simulator;s=Setpoint.Double"
CONST = -1234.5625  # the simulator's float32 constant at hr:240
TEMPS = [10, 20, 30]
FLOWS = [0.0, 0.5, 1.0, 1.5]
SAMPLES = 3
#: a point failed by the machine's load (a reader thread woken too late makes a BAD "missed"
#: sample) is done again; the device-side checks follow the journal's attempts
RETRIES = 2
ORDER = ("temp", "flow", "mode")

CONFIG = """
[[readers]]
type = "modbus"
reader_type = "plc"
host = "127.0.0.1"
port = {mport}
timeout_s = 1.0

[[readers]]
type = "opcua"
reader_type = "ua"
endpoint = "{endpoint}"
timeout_s = 2.0

[[writers]]
type = "hdf5"
name = "h5"
path = "{out}/scan.h5"
flush_s = 0.5

[[writers]]
type = "sql"
name = "sql"
url = "sqlite:///{out}/scan.sqlite"

[[scans]]
name = "sweep"
context_id = 100
default_interval_ms = 200
samples = {samples}
on_error = "{on_error}"
retries = {retries}
journal = "{out}/sweep.journal.jsonl"
metadata = {{ campaign = "C-7" }}

[scans.settle]
variable = "flow_rb"
target = "flow"
tolerance = 0.001
timeout_s = 10

[[scans.setpoints]]
name = "temp"
id = 10
address = "{temp_address}"
value_type = "int"
reader_type = "plc"
base = 15

[[scans.setpoints]]
name = "flow"
id = 11
address = "{flow_address}"
value_type = "float"
reader_type = "ua"
base = 0.0

[[scans.setpoints]]
name = "mode"
id = 12
address = "hr:402"
value_type = "int"
reader_type = "plc"
base = 7

[[scans.variables]]
id = 10
name = "temp_rb"
address = "{temp_address}"
value_type = "int"
reader_type = "plc"

[[scans.variables]]
id = 11
name = "flow_rb"
address = "{flow_address}"
value_type = "float"
reader_type = "ua"

[[scans.variables]]
id = 20
name = "const"
address = "hr:240:float32"
value_type = "float"
reader_type = "plc"

[scans.parameters]
temp = {temps}
flow = {{ start = 0.0, stop = 1.5, step = 0.5 }}
"""


class Sims:
    def __init__(self, modbus: ModbusSimulator, opcua: OpcUaSimulator) -> None:
        self.modbus = modbus
        self.opcua = opcua

    def clear(self) -> None:
        self.modbus.clear_requests()
        self.opcua.clear_writes()
        self.modbus.write_limits.clear()

    def modbus_writes(self) -> list[tuple[int, tuple[int, ...]]]:
        return [(r.address, r.values) for r in self.modbus.requests if r.function_code in (5, 6, 15, 16, 22)]

    def opcua_writes(self) -> list[tuple[str, Any, str]]:
        return [(w.name, w.value, w.status) for w in self.opcua.writes]


@pytest.fixture(scope="module")
def sims() -> Iterator[Sims]:
    with ModbusSimulator() as modbus, OpcUaSimulator() as opcua:
        yield Sims(modbus, opcua)


@pytest.fixture
def fresh(sims: Sims) -> Sims:
    sims.clear()
    return sims


def write_config(
    folder: Path,
    sims: Sims,
    *,
    name: str = "scan.toml",
    on_error: str = "continue",
    temps: list[int] | None = None,
    samples: int = SAMPLES,
    temp_address: str = "hr:400",
    flow_address: str = FLOW,
    retries: int = RETRIES,
    extra: str = "",
) -> Path:
    path = folder / name
    path.write_text(
        CONFIG.format(
            mport=sims.modbus.port,
            endpoint=sims.opcua.endpoint,
            out=folder.as_posix(),
            on_error=on_error,
            temps=json.dumps(temps or TEMPS),
            samples=samples,
            temp_address=temp_address,
            flow_address=flow_address,
            retries=retries,
        )
        + extra,
        encoding="utf-8",
    )
    return path


def run_scan(
    path: Path, *, resume: bool = False, stop: threading.Event | None = None, progress: Any = None
) -> Any:
    config = load_config(path)
    scan = config.scan("sweep")
    with config.collector(LOG) as collector:
        return scan.run(collector, resume=resume, stop=stop, progress=progress)


def expected_points(temps: list[int]) -> list[tuple[int, float]]:
    return [(t, f) for t in temps for f in FLOWS]  # the first parameter changes slowest


def journal_entries(folder: Path) -> list[dict[str, Any]]:
    """The journal's point lines (one per attempt), in order; a line being written is left out."""
    path = folder / "sweep.journal.jsonl"
    out = []
    for line in path.read_text().splitlines()[1:] if path.exists() else []:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def device_writes(entries: list[dict[str, Any]]) -> tuple[list[tuple[int, tuple[int, ...]]], list[Any]]:
    """What the devices must have received for these attempts, in order: every setpoint of the
    point's configuration, up to the one whose write was refused."""
    modbus: list[tuple[int, tuple[int, ...]]] = []
    opcua: list[Any] = []
    for e in entries:
        c, error = e["configuration"], e["error"] or ""
        refused = next((n for n in ORDER if error.startswith(f"writing {n} = ")), None)
        for name in ORDER[: ORDER.index(refused) + 1] if refused else ORDER:
            if name == "flow":
                opcua.append(c["flow"])
            else:
                modbus.append((400 if name == "temp" else 402, (c[name],)))
    return modbus, opcua


def completed_points(entries: list[dict[str, Any]]) -> list[int]:
    return [e["point"] for e in entries if e["status"] == "completed"]


def only_retried(entries: list[dict[str, Any]], *allowed: str) -> bool:
    """Every attempt that did not complete failed for one of ``allowed`` reasons or by the load
    (a BAD sample: a reader thread woken too late)."""
    return all(
        e["status"] == "completed" or "BAD" in e["error"] or any(a in e["error"] for a in allowed)
        for e in entries
    )


# -- the 3 x 4 scan ------------------------------------------------------------------------------------
def test_a_3x4_scan_writes_every_point_in_order_settles_captures_and_merges(
    fresh: Sims, tmp_path: Path
) -> None:
    path = write_config(tmp_path, fresh)
    phases: list[tuple[int, str]] = []
    result = run_scan(path, progress=lambda p: phases.append((p.point.index, p.phase)))
    assert result.complete and not result.failed and result.completed == tuple(range(12))
    points = expected_points(TEMPS)
    entries = journal_entries(tmp_path)
    assert completed_points(entries) == list(range(12)) and only_retried(entries), entries
    done = [e for e in entries if e["status"] == "completed"]
    assert [(e["configuration"]["temp"], e["configuration"]["flow"]) for e in done] == points
    assert all(e["configuration"]["mode"] == 7 and e["rows"] == SAMPLES for e in done)

    # every attempt wrote its point's whole configuration, in the setpoints' order: the devices saw it
    modbus, opcua = device_writes(entries)
    assert len(modbus) >= 24 and modbus[:2] == [(400, (10,)), (402, (7,))]
    assert fresh.modbus_writes() == modbus, "Modbus: temp then mode at every point"
    assert fresh.opcua_writes() == [("Setpoint.Double", f, "Good") for f in opcua]
    assert phases[:3] == [(0, "writing"), (0, "settling"), (0, "capturing")] and phases[-1] == (
        11,
        "completed",
    )

    # the merged table: one frame, 12 points x 3 samples, the configuration beside every row
    frame = pd.read_hdf(tmp_path / "scan.h5", scan_key("sweep"))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == [
        "point", "temp", "flow", "mode", "time_us",
        "temp_rb", "temp_rb_quality", "flow_rb", "flow_rb_quality", "const", "const_quality",
    ]  # fmt: skip
    assert len(frame) == 12 * SAMPLES
    assert frame.groupby("point").size().tolist() == [SAMPLES] * 12
    for (index, rows), (t, f) in zip(frame.groupby("point"), points, strict=True):
        assert set(rows["temp"]) == {t} and set(rows["flow"]) == {f} and set(rows["mode"]) == {7}, index
        assert list(rows["temp_rb"]) == [t] * SAMPLES  # measured after the write: the value written
        assert list(rows["flow_rb"]) == [f] * SAMPLES
        assert list(rows["const"]) == [CONST] * SAMPLES
        assert set(rows["temp_rb_quality"]) == {"GOOD"} and set(rows["flow_rb_quality"]) == {"GOOD"}
        assert rows["time_us"].is_monotonic_increasing and rows["time_us"].diff().dropna().eq(200_000).all()
    assert frame["temp"].dtype == "int64" and frame["flow"].dtype == "float64"

    # every attempt is a run of context 100 whose deduced metadata holds its configuration and status
    runs = list_runs(tmp_path / "scan.h5", 100)
    assert len(runs) == len(entries)
    runs = [r for r in runs if r.deduced_metadata["scan_result"]["status"] == "completed"]
    assert len(runs) == 12
    for run, (t, f) in zip(runs, points, strict=True):
        info, outcome = run.deduced_metadata["scan"], run.deduced_metadata["scan_result"]
        assert info["configuration"] == {"temp": t, "flow": f, "mode": 7}
        assert run.deduced_metadata["ended"] == "completed"
        assert [w["setpoint"] for w in info["writes"]] == ["temp", "flow", "mode"]
        assert [w["read_back"] for w in info["writes"]] == [t, f, 7]
        assert info["settle"]["variable"] == "flow_rb" and abs(info["settle"]["value"] - f) <= 0.001
        assert outcome["samples"] == {"temp_rb": SAMPLES, "flow_rb": SAMPLES, "const": SAMPLES}
        assert run.metadata == {"campaign": "C-7"}
        assert run.samples >= 3 * SAMPLES

    # the SQL writer holds the same table
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'scan.sqlite'}")
    with engine.connect() as conn:
        sql = pd.read_sql("SELECT * FROM dc_scan_sweep ORDER BY point, time_us", conn)
    engine.dispose()
    assert list(sql.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(
        sql.drop(columns=["time_us"]).reset_index(drop=True),
        frame.drop(columns=["time_us"]).reset_index(drop=True),
        check_dtype=False,
    )
    header = json.loads((tmp_path / "sweep.journal.jsonl").read_text().splitlines()[0])
    assert header["points"] == 12 and header["scan"] == "sweep"


def test_scan_with_zip_and_duration_and_time_settle(fresh: Sims, tmp_path: Path) -> None:
    from data_reader.modbus import ModbusDataReader
    from data_writer.hdf5 import Hdf5DataWriter

    plc = "plc"
    context = DataCollectionContext(5, [Variable(1, "hr:400", "int", plc)], default_interval_ms=100)
    scan = Scan(
        "zipped",
        context,
        [
            Setpoint("a", Variable(1, "hr:400", "int", plc), 0),
            Setpoint("b", Variable(2, "hr:401", "int", plc), 0, read_back=False),
            Setpoint("c", Variable(3, "hr:402", "int", plc), 9),
        ],
        {"a": [1, 2, 3], "b": [10, 20, 30], "c": [5, 6]},
        zip=[["a", "b"]],
        duration_s=0.35,
        settle=Settle(time_s=0.05),
        columns={1: "a_rb"},
        journal=tmp_path / "z.jsonl",
        retries=RETRIES,
    )
    configurations = [{"a": a, "b": b, "c": c} for a, b in ((1, 10), (2, 20), (3, 30)) for c in (5, 6)]
    assert [dict(p.configuration) for p in scan.points] == configurations
    assert scan.shape() == "a+b: 3 x c: 2"
    writer = Hdf5DataWriter(tmp_path / "z.h5", flush_s=0.2)
    with DataCollector(
        LOG, [ModbusDataReader("127.0.0.1", fresh.modbus.port, reader_type=plc)], [writer]
    ) as c:
        result = scan.run(c)
    assert result.complete
    attempts = [json.loads(x) for x in (tmp_path / "z.jsonl").read_text().splitlines()[1:]]
    assert [e["configuration"] for e in attempts if e["status"] == "completed"] == configurations
    assert fresh.modbus_writes() == [
        w
        for e in attempts
        for w in (
            (400, (e["configuration"]["a"],)),
            (401, (e["configuration"]["b"],)),
            (402, (e["configuration"]["c"],)),
        )
    ]
    frame = pd.read_hdf(tmp_path / "z.h5", "/scans/zipped")
    assert isinstance(frame, pd.DataFrame)
    assert sorted(set(frame["point"])) == list(range(6))
    assert (frame["a_rb"] == frame["a"]).all()
    counts = frame.groupby("point").size()
    assert counts.between(2, 5).all(), counts  # 0.35 s at 100 ms


# -- refusals and mismatches ----------------------------------------------------------------------------
def test_a_refused_write_fails_its_point_clearly_and_the_scan_goes_on(fresh: Sims, tmp_path: Path) -> None:
    fresh.modbus.write_limits[400] = (0, 25)  # the device refuses temp 30 (exception 3)
    path = write_config(tmp_path, fresh, on_error="continue")
    result = run_scan(path)
    refused = [8, 9, 10, 11]  # temp = 30
    assert sorted(result.failed) == refused and result.completed == tuple(range(8))
    assert not result.stopped_on_error and not result.complete
    for index in refused:
        error = result.failed[index]
        assert error.startswith("writing temp = 30 to variable 10 ('hr:400' on reader 'plc') failed")
        assert "exception 3 (illegal data value)" in error
    entries = journal_entries(tmp_path)
    assert completed_points(entries) == list(range(8)) and only_retried(entries, "exception 3"), entries
    tried = [e["point"] for e in entries if "exception 3" in (e["error"] or "")]
    assert tried == [p for p in refused for _ in range(RETRIES + 1)]  # each refused point, every attempt
    # the refused write reached the device; the rest of that point's configuration was not written
    modbus, opcua = device_writes(entries)
    assert fresh.modbus_writes() == modbus and modbus.count((400, (30,))) == 4 * (RETRIES + 1)
    assert fresh.opcua_writes() == [("Setpoint.Double", f, "Good") for f in opcua] and len(opcua) >= 8
    frame = pd.read_hdf(tmp_path / "scan.h5", "/scans/sweep")
    assert isinstance(frame, pd.DataFrame)
    assert sorted(set(frame["point"])) == list(range(8)) and len(frame) == 8 * SAMPLES
    runs = list_runs(tmp_path / "scan.h5", 100)
    failed = [
        r.deduced_metadata
        for r in runs
        if "exception 3" in r.deduced_metadata["scan_result"].get("error", "")
    ]
    assert [f["scan"]["point"] for f in failed] == tried
    assert all(f["scan"]["configuration"]["temp"] == 30 and f["ended"] == "failed" for f in failed)
    assert all(f["scan_result"]["status"] == "failed" for f in failed)


def test_a_refused_write_stops_the_scan_when_configured(fresh: Sims, tmp_path: Path) -> None:
    fresh.modbus.write_limits[400] = (0, 15)  # temp 20 and 30 refused: the first at point 4
    path = write_config(tmp_path, fresh, on_error="stop")
    result = run_scan(path)
    assert result.stopped_on_error and result.completed == (0, 1, 2, 3) and list(result.failed) == [4]
    assert "refused writing 20" in result.failed[4]
    entries = journal_entries(tmp_path)
    assert completed_points(entries) == [0, 1, 2, 3] and only_retried(entries, "refused writing 20")
    assert [e["point"] for e in entries[-(RETRIES + 1) :]] == [4] * (RETRIES + 1)
    assert fresh.modbus_writes() == device_writes(entries)[0]
    assert fresh.modbus_writes()[-1] == (400, (20,))  # nothing was written after the last refusal


def test_an_opcua_node_that_refuses_writes_fails_the_point(fresh: Sims, tmp_path: Path) -> None:
    aux = "nsu=urn:data-collector:simulator:aux;s=Aux.Counter"
    path = write_config(tmp_path, fresh, on_error="stop", retries=0, flow_address=aux)
    text = path.read_text().replace(
        'value_type = "float"\nreader_type = "ua"\nbase = 0.0',
        'value_type = "float"\nreader_type = "ua"\nbase = 0.0\nread_back = false',
    )
    path.write_text(text.replace('variable = "flow_rb"\ntarget = "flow"\n', ""))
    result = run_scan(path)
    assert result.stopped_on_error and list(result.failed) == [0]
    error = result.failed[0]
    assert error.startswith(f"writing flow = 0.0 to variable 11 ({aux!r} on reader 'ua') failed")
    assert "BadUserAccessDenied" in error or "BadNotWritable" in error
    assert fresh.opcua_writes()[0][0] == "Aux.Counter" and fresh.opcua_writes()[0][2] != "Good"
    assert fresh.modbus_writes() == [(400, (10,))]  # temp was written, then flow refused: nothing after


def test_a_value_that_reads_back_different_fails_the_point(fresh: Sims, tmp_path: Path) -> None:
    # a register in tenths: 1.25 is written as 12 (rounded), and reads back as 1.2
    from data_reader.modbus import ModbusDataReader

    plc = "plc"
    sp = Variable(1, "hr:410;scale=0.1", "float", plc)
    context = DataCollectionContext(6, [Variable(2, "hr:240:float32", "float", plc)], default_interval_ms=100)
    scan = Scan("tenths", context, [Setpoint("x", sp, 1.0)], {"x": [1.5, 1.25]}, samples=1, retries=RETRIES)
    with DataCollector(LOG, [ModbusDataReader("127.0.0.1", fresh.modbus.port, reader_type=plc)], []) as c:
        result = scan.run(c)
    assert result.completed == (0,) and list(result.failed) == [1]
    assert result.failed[1] == (
        "setpoint x read back 1.2 after writing 1.25 (variable 1, 'hr:410;scale=0.1' on reader 'plc')"
    )
    tolerant = Scan(
        "tenths",
        context,
        [Setpoint("x", sp, 1.0, tolerance=0.06)],
        {"x": [1.5, 1.25]},
        samples=1,
        retries=RETRIES,
    )
    with DataCollector(LOG, [ModbusDataReader("127.0.0.1", fresh.modbus.port, reader_type=plc)], []) as c:
        assert tolerant.run(c).complete


def test_a_point_that_does_not_settle_fails_after_the_timeout(fresh: Sims, tmp_path: Path) -> None:
    from data_reader.modbus import ModbusDataReader

    plc = "plc"
    context = DataCollectionContext(7, [Variable(2, "hr:240:float32", "float", plc)], default_interval_ms=100)
    scan = Scan(
        "settling",
        context,
        [Setpoint("x", Variable(1, "hr:411", "int", plc), 0)],
        {"x": [3]},
        samples=1,
        settle=Settle(variable="var_2", target=0.0, tolerance=1.0, timeout_s=0.3, poll_s=0.05),
    )
    with DataCollector(LOG, [ModbusDataReader("127.0.0.1", fresh.modbus.port, reader_type=plc)], []) as c:
        result = scan.run(c)
    assert list(result.failed) == [0]
    assert result.failed[0] == "did not settle: var_2 = -1234.5625, not within 1 of 0 after 0.3 s"


# -- the journal -----------------------------------------------------------------------------------------
def test_an_interrupted_scan_resumes_where_it_stopped(fresh: Sims, tmp_path: Path) -> None:
    path = write_config(tmp_path, fresh)
    stop = threading.Event()

    def progress(p: ScanProgress) -> None:
        if p.phase == "completed" and p.point.index == 4:
            stop.set()  # as Ctrl-C would: during the next point

    first = run_scan(path, stop=stop, progress=progress)
    assert first.interrupted and first.completed == (0, 1, 2, 3, 4)
    with pytest.raises(ConfigurationError, match=r"already records .* points .*resume it \(--resume\)"):
        run_scan(path)
    before = len(journal_entries(tmp_path))
    fresh.clear()
    second = run_scan(path, resume=True)
    assert second.complete and second.skipped == (0, 1, 2, 3, 4) and second.completed == tuple(range(5, 12))
    # the resumed run wrote the configurations of the remaining points only (and their retries)
    entries = journal_entries(tmp_path)
    assert completed_points(entries) == list(range(12)) and only_retried(entries, "interrupted")
    modbus, _opcua = device_writes(entries[before:])
    assert fresh.modbus_writes() == modbus and {e["point"] for e in entries[before:]} == set(range(5, 12))
    frame = pd.read_hdf(tmp_path / "scan.h5", "/scans/sweep")
    assert isinstance(frame, pd.DataFrame)
    assert frame.groupby("point").size().tolist() == [SAMPLES] * 12  # each point once
    outcomes = [r.deduced_metadata["scan_result"]["status"] for r in list_runs(tmp_path / "scan.h5", 100)]
    assert outcomes.count("completed") == 12 and outcomes.count("interrupted") <= 1


def test_a_journal_of_another_definition_is_refused(fresh: Sims, tmp_path: Path) -> None:
    path = write_config(tmp_path, fresh, temps=[10])
    stop = threading.Event()
    stop.set()
    run_scan(path, stop=stop)  # writes the journal's header only
    other = write_config(tmp_path, fresh, temps=[10, 20])
    with pytest.raises(ConfigurationError, match="belongs to another scan definition"):
        run_scan(other, resume=True)


# -- bad definitions --------------------------------------------------------------------------------------
OTHERS = """
[[readers]]
type = "random"
reader_type = "rnd"

[[contexts]]
id = 1
reader_type = "rnd"
[[contexts.variables]]
id = 1
address = "sine"
value_type = "float"
"""

BAD = [
    (
        "[scans.parameters]\ntemp = [10, 20, 30]",
        '[scans.parameters]\ntemp = [10, "x"]',
        "scans[0].parameters.temp[1]",
        "not an integer",
    ),
    (
        "[scans.parameters]\ntemp = [10, 20, 30]",
        "[scans.parameters]\nspeed = [1, 2]",
        "scans[0].parameters.speed",
        "is not a setpoint",
    ),
    (
        "flow = { start = 0.0, stop = 1.5, step = 0.5 }",
        "flow = { start = 0.0, stop = 1.5, step = 0 }",
        "scans[0].parameters.flow",
        "step must be",
    ),
    (
        "flow = { start = 0.0, stop = 1.5, step = 0.5 }",
        "flow = { start = 0.0, stop = 1.5, step = -0.5 }",
        "scans[0].parameters.flow",
        "goes away from stop",
    ),
    ("base = 15", 'base = "warm"', "scans[0].setpoints[0].base", "is not an integer"),
    ('name = "sweep"', 'name = "my sweep"', "scans[0].name", "letters, digits and _"),
    ("context_id = 100", "context_id = 1", "scans[0].context_id", "is the id of contexts[0]"),
    ("samples = 3", "samples = 3\nduration_s = 2", "scans[0].duration_s", "not both"),
    ('on_error = "continue"', 'on_error = "ignore"', "scans[0].on_error", '"continue" or "stop"'),
    ('name = "temp_rb"', 'name = "temp rb"', "scans[0].variables[0].name", "column names"),
    (
        'reader_type = "plc"\nbase = 7',
        'reader_type = "rnd"\nbase = 7',
        "scans[0].setpoints[2].reader_type",
        "cannot write",
    ),
    ('address = "hr:402"', 'address = "hr:402:flaot"', "scans[0].setpoints[2].address", "flaot"),
    ("tolerance = 0.001", "tolerance = -1", "scans[0].settle.tolerance", ">= 0"),
    ("timeout_s = 10", "timeout_s = 10\nwait = 1", "scans[0].settle.wait", "unknown key"),
    ('target = "flow"', 'target = "nope"', "scans[0].settle", "settle target 'nope' is not a setpoint"),
]


@pytest.mark.parametrize(("old", "new", "key", "message"), BAD, ids=[b[2] for b in BAD])
def test_bad_scan_definitions_name_their_key_path(
    sims: Sims, tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    extra = OTHERS
    path = write_config(tmp_path, sims, extra=extra)
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    lines = [str(i) for i in info.value.issues]
    assert any(line.startswith(key) and message in line for line in lines), lines


def test_bad_scan_arguments_raise_configuration_error() -> None:
    v = Variable(1, "hr:400", "int", "plc")
    context = DataCollectionContext(1, [v])
    sp = Setpoint("a", v, 0)
    with pytest.raises(ConfigurationError, match="give exactly one of samples and duration_s"):
        Scan("s", context, [sp], {"a": [1]})
    with pytest.raises(ConfigurationError, match=r"parameters\['b'\] is not a setpoint"):
        Scan("s", context, [sp], {"b": [1]}, samples=1)
    with pytest.raises(ConfigurationError, match=r"zip\[0\]: zipped parameters need as many values"):
        Scan(
            "s",
            context,
            [sp, Setpoint("b", Variable(2, "hr:401", "int", "plc"), 0)],
            {"a": [1, 2], "b": [1]},
            zip=[["a", "b"]],
            samples=1,
        )
    with pytest.raises(ConfigurationError, match="is not an integer"):
        Setpoint("a", v, 1.5)
    with pytest.raises(ConfigurationError, match="value_type must be one of"):
        Setpoint("a", Variable(1, "hr:400:string4", "bytes", "plc"), b"")
    with pytest.raises(ConfigurationError, match="would have the column 'a'"):
        Scan("s", context, [sp], {"a": [1]}, samples=1, columns={1: "a"})
    with pytest.raises(ConfigurationError, match="more than 1000000 points"):
        Scan(
            "s",
            context,
            [sp, Setpoint("b", Variable(2, "hr:401", "int", "plc"), 0)],
            {"a": range(2000), "b": range(2000)},
            samples=1,
        )


def test_range() -> None:
    assert Scan.range(0, 10, step=5) == [0, 5, 10]
    assert Scan.range(0, 9, step=5) == [0, 5]
    assert Scan.range(0.0, 0.3, step=0.1) == [0.0, 0.1, 0.2, 0.3]
    assert Scan.range(1.0, 0.0, step=-0.25) == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert Scan.range(0, 1, count=5) == [0.0, 0.25, 0.5, 0.75, 1]
    assert all(isinstance(x, int) for x in Scan.range(0, 10, step=2))
    for kwargs in ({}, {"step": 0}, {"step": -1}, {"step": 1, "count": 2}, {"count": 0}):
        with pytest.raises(ConfigurationError):
            Scan.range(0, 5, **kwargs)
    assert not any(math.isnan(x) for x in Scan.range(-1.5, 1.5, count=7))


# -- dry run ----------------------------------------------------------------------------------------------
def test_dry_run_lists_the_points_and_writes_and_connects_nowhere(fresh: Sims, tmp_path: Path) -> None:
    path = write_config(tmp_path, fresh)
    out, err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["scan", str(path), "--name", "sweep", "--dry-run"])
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert "12 points (temp: 3 x flow: 4)" in text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == [str(i) for i in range(12)]
    assert all(r[1:3] == ["to", "do"] for r in rows)
    line = next(x for x in text.splitlines() if x.strip().startswith("5 "))
    assert f"plc hr:400 := 20; ua {FLOW} := 0.5; plc hr:402 := 7" in line
    assert "dry run: 12 points to do, 36 writes" in text
    assert fresh.modbus.requests == [] and fresh.opcua.writes == []
    assert not (tmp_path / "sweep.journal.jsonl").exists()


# -- the writers' scan tables, directly ---------------------------------------------------------------------
def _rows(point: int, temps: list[float], quality: list[str], *, extra: bool = False) -> ScanRows:
    columns = [
        ScanColumn("point", "int", "point"),
        ScanColumn("mode", "str", "setpoint", 64, 5),
        ScanColumn("time_us", "int", "time"),
        ScanColumn("temp", "float", "value", 0, 1),
        ScanColumn("temp_quality", "str", "quality", 16, 1),
    ]
    if extra:
        columns.append(ScanColumn("more", "bool", "setpoint", 0, 6))
    n = len(temps)
    values: dict[str, list[Any]] = {
        "point": [point] * n,
        "mode": ["auto é"] * n,
        "time_us": [1_000_000 * i for i in range(n)],
        "temp": temps,
        "temp_quality": quality,
    }
    if extra:
        values["more"] = [True] * n
    started = datetime(2026, 5, 4, 6, 0, tzinfo=UTC)
    return ScanRows("direct", 9, started, point, tuple(columns), values, {"name": "direct"})


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_the_sql_scan_table_replaces_a_point_stored_again(kind: str, tmp_path: Path) -> None:
    from _cases.sql_cases import execute_sql, sql_store

    from data_writer.sql import SqlDataWriter, SqlWriterError

    with sql_store(kind, tmp_path) as (url, prefix):
        table = f"{prefix}scan_direct"
        writer = SqlDataWriter(url, table_prefix=prefix)
        try:
            with writer.lock:
                writer.write_scan_rows(_rows(0, [1.5, math.nan, 2.5], ["GOOD", "GOOD", "BAD"]))
                writer.write_scan_rows(_rows(1, [3.0], ["GOOD"]))
                writer.write_scan_rows(_rows(0, [4.0, 5.0], ["GOOD", ""]))  # point 0 again: replaced
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                found = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY point, time_us")).all()
            engine.dispose()
            assert [tuple(r) for r in found] == [
                (0, "auto é", 0, 4.0, "GOOD"),
                (0, "auto é", 1_000_000, None, ""),  # no sample: NULL
                (1, "auto é", 0, 3.0, "GOOD"),
            ]
            with (
                pytest.raises(SqlWriterError, match=r"columns .* of another scan definition") as info,
                writer.lock,
            ):
                writer.write_scan_rows(_rows(2, [1.0], ["GOOD"], extra=True))
            assert not writer.is_transient(info.value)
        finally:
            writer.close()
            execute_sql(url, [f"DROP TABLE IF EXISTS {table}"])


def test_the_hdf5_scan_table_replaces_a_point_stored_again(tmp_path: Path) -> None:
    from data_writer.hdf5 import Hdf5DataWriter, Hdf5WriteError

    writer = Hdf5DataWriter(tmp_path / "direct-{context_id}.h5")  # a file per context: closed after each
    with writer.lock:
        writer.write_scan_rows(_rows(0, [1.5, math.nan, 2.5], ["GOOD", "GOOD", "BAD"]))
        writer.write_scan_rows(_rows(1, [3.0], ["GOOD"]))
        writer.write_scan_rows(_rows(0, [4.0, 5.0], ["GOOD", ""]))
    frame = pd.read_hdf(tmp_path / "direct-9.h5", "/scans/direct")
    assert isinstance(frame, pd.DataFrame)
    assert frame.sort_values(["point", "time_us"]).values.tolist() == [
        [0, "auto é", 0, 4.0, "GOOD"],
        [0, "auto é", 1_000_000, 5.0, ""],
        [1, "auto é", 0, 3.0, "GOOD"],
    ]
    with pytest.raises(Hdf5WriteError, match="of another scan definition") as info, writer.lock:
        writer.write_scan_rows(_rows(2, [1.0], ["GOOD"], extra=True))
    assert not writer.is_transient(info.value)
    writer.close()
    assert list_runs(tmp_path / "direct-9.h5") == []  # a scan table is not a run


def test_the_scan_table_holds_the_first_samples_and_the_run_every_sample(fresh: Sims, tmp_path: Path) -> None:
    from data_reader.modbus import ModbusDataReader
    from data_writer.hdf5 import Hdf5DataWriter, read_frame

    plc = "plc"
    variable = Variable(1, "hr:240:float32", "float", plc)
    context = DataCollectionContext(8, [variable], min_interval_ms=10, default_interval_ms=10)
    scan = Scan(  # at 10 ms a read after the second may come before the stop: it stays in the run
        "fast", context, [Setpoint("x", Variable(2, "hr:412", "int", plc), 0)], {"x": [1, 2]}, samples=2,
        retries=RETRIES, allow_bad_samples=True,
    )  # fmt: skip
    writer = Hdf5DataWriter(tmp_path / "fast.h5", flush_s=0.1)
    with DataCollector(
        LOG, [ModbusDataReader("127.0.0.1", fresh.modbus.port, reader_type=plc)], [writer]
    ) as c:
        assert scan.run(c).complete
    table = pd.read_hdf(tmp_path / "fast.h5", "/scans/fast")
    assert isinstance(table, pd.DataFrame)
    assert table.groupby("point").size().tolist() == [2, 2]
    for run in list_runs(tmp_path / "fast.h5", 8):
        outcome = run.deduced_metadata["scan_result"]
        stored = len(read_frame(tmp_path / "fast.h5", 8, run.run))
        assert stored == outcome["samples"]["var_1"] == 2 + outcome.get("samples_after_limit", 0)
