"""``data-collector`` demo, export and simulator, driven as a user would (subprocesses, real servers)."""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import os
import re
import subprocess
import sys
import sysconfig
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from data_collector import CollectedVariable, CollectedVariables, DataCollectionContext, Quality, Variable
from data_writer.csv_file_data_writer import parse_value

ROOT = Path(__file__).resolve().parent.parent


def command() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "data-collector"
    return [str(script)] if script.exists() else [sys.executable, "-m", "data_collector._cli"]


def cli(args: list[str], cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [*command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def same(a: Any, b: Any) -> bool:
    """Equal values of the same type (NaN equal to NaN, -0.0 not equal to 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return bool(a == b)


# -- demo ---------------------------------------------------------------------------------------------
def test_demo_collects_into_sqlite_and_csv_and_says_where(tmp_path: Path) -> None:
    pytest.importorskip("pymodbus")
    pytest.importorskip("asyncua")
    pytest.importorskip("sqlalchemy")
    from data_writer.csv_file_data_writer import read_samples as read_csv
    from data_writer.sql_data_writer import read_contexts, read_samples

    result = cli(["demo", "--seconds", "3", "--modbus-port", "0", "--opcua-port", "0"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(
        r"^simulators: Modbus TCP on 127\.0\.0\.1:\d+, OPC UA on opc\.tcp://127\.0\.0\.1:\d+/$", out, re.M
    )
    demo = tmp_path / "data-collector-demo"
    url = f"sqlite:///{demo / 'demo.sqlite'}"
    rows = read_samples(url, 1)
    stored_csv = read_csv(demo / "samples.csv")
    assert {r.variable_id for r in rows} == {1, 2, 3, 4, 5, 6, 11, 12, 13, 14}
    assert len(stored_csv) == len(rows) >= 20
    assert all(r.quality is Quality.GOOD for r in rows)
    values = {r.variable_id: r.value for r in rows}
    assert values[5] == -1234.5625 and values[6] == "data-collector" and values[14] == 3.25
    (run,) = read_contexts(url)
    assert run.metadata == {"started_by": "data-collector demo"} and run.end is not None
    assert re.search(
        rf"^demo done \(every context ended\): {len(rows)} samples \(0 bad, 0 lost\) of 10 variables in "
        r"\d+\.\d s, context 1$",
        out,
        re.M,
    ), out
    assert f"  SQLite  data-collector-demo/demo.sqlite  ({len(rows)} rows of context 1;" in out
    assert f"  CSV     data-collector-demo/samples.csv  ({len(rows)} rows of context 1)" in out
    # names and units of the demo's configuration are stored with the samples
    labels = {r.variable_id: (r.name, r.unit) for r in rows}
    assert labels[1] == ("Modbus sine", "bar") and labels[11] == ("OPC UA sine", "bar")
    assert labels[4] == ("Modbus square wave", None)
    # the commands it prints show the data
    tail = out.strip().splitlines()
    hints = tail[tail.index("look at it with:") + 1 :]
    commands = [line.strip() for line in hints if "data-collector " in line]
    assert commands == [
        "data-collector export data-collector-demo/demo.sqlite --context 1",
        "data-collector export data-collector-demo/demo.sqlite --context 1 --wide "
        "-o data-collector-demo/wide.csv",
        "data-collector plot data-collector-demo/demo.sqlite --context 1 -o data-collector-demo/plot.png",
    ]
    assert tail[-1].strip() == "(in SQL: select * from dc_samples_view where context_id = 1)"
    shown = cli(commands[0].split()[1:], tmp_path)
    assert shown.returncode == 0, shown.stderr
    exported = list(csv.DictReader(io.StringIO(shown.stdout)))
    assert len(exported) == len(rows)
    source = "data-collector-demo/demo.sqlite"
    assert shown.stderr == f"exported {len(rows)} samples of 1 context from {source} to standard output\n"
    wide = cli(commands[1].split()[1:], tmp_path)
    assert wide.returncode == 0, wide.stderr
    with open(demo / "wide.csv", newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header[0] == "read_at" and "Modbus sine" in header and "OPC UA counter" in header
    if importlib.util.find_spec("matplotlib") is not None:
        plotted = cli(commands[2].split()[1:], tmp_path)
        assert plotted.returncode == 0, plotted.stderr
        assert (demo / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second demo appends a new context to the same files
    again = cli(["demo", "--seconds", "1.5", "--no-opcua"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "OPC UA" not in again.stdout.splitlines()[0]
    assert [r.context_id for r in read_contexts(url)] == [1, 2]
    second = read_samples(url, 2)
    assert {r.variable_id for r in second} <= {1, 2, 3, 4, 5, 6} and len(second) >= 5
    assert len(read_csv(demo / "samples.csv")) == len(rows) + len(second)
    assert read_samples(url, 1) == rows  # nothing overwritten


# -- export -------------------------------------------------------------------------------------------
TRICKY: list[tuple[str, Any]] = [
    ("float", 1.5),
    ("float", -0.0),
    ("float", float("nan")),
    ("float", float("-inf")),
    ("float", 0.1 + 0.2),
    ("float", 5e-324),
    ("int", -5),
    ("int", 2**63 - 1),
    ("int", 2**64 - 1),
    ("bool", True),
    ("bool", False),
    ("str", "a,b;c"),
    ("str", 'say "hi"'),
    ("str", "two\nlines"),
    ("str", "ünïcødé ✓ 中文"),
    ("float", None),  # BAD, no value
]


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, list[Any]]:
    """An SQLite store written by SqlDataWriter: two contexts, values of every kind; and its rows."""
    pytest.importorskip("sqlalchemy")
    from data_writer.sql_data_writer import SqlDataWriter, read_samples

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    writer = SqlDataWriter(url)
    base = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    variables = [Variable(i + 1, f"addr:{i + 1}", vt, "plc") for i, (vt, _v) in enumerate(TRICKY)]
    with writer.lock:
        writer.open()
        for cid in (1, 2):
            context = DataCollectionContext(cid, variables, metadata={"batch": f"B-{cid}"})
            writer.context_started(context)
            for tick in range(3):
                at = base + timedelta(seconds=tick, microseconds=cid)
                items = []
                for v, (_vt, value) in zip(variables, TRICKY, strict=True):
                    if value is None:
                        items.append(CollectedVariable(v, None, at, Quality.BAD, "device timeout"))
                    else:
                        items.append(CollectedVariable(v, value, at, Quality.GOOD, None))
                writer.write(context, CollectedVariables(items))
            writer.context_stopped(context)
        writer.close()
    rows = read_samples(url, 1) + read_samples(url, 2)
    assert len(rows) == 2 * 3 * len(TRICKY)
    return url, rows


def test_export_csv_round_trips(store: tuple[str, list[Any]], tmp_path: Path) -> None:
    url, rows = store
    result = cli(["export", url, "-o", "all.csv"], tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "all.csv", newline="", encoding="utf-8") as f:
        exported = list(csv.DictReader(f))
    assert list(exported[0]) == [
        "context_id",
        "variable_id",
        "address",
        "value_type",
        "reader_type",
        "read_at",
        "value",
        "quality",
        "error",
        "name",
        "unit",
    ]
    assert len(exported) == len(rows)
    for row, original in zip(exported, rows, strict=True):
        assert int(row["context_id"]) == original.context_id
        assert int(row["variable_id"]) == original.variable_id
        assert (row["address"], row["value_type"], row["reader_type"]) == (
            original.address,
            original.value_type,
            original.reader_type,
        )
        assert datetime.fromisoformat(row["read_at"]) == original.read_at  # microseconds kept
        assert same(parse_value(row["value"], row["value_type"]), original.value), (row, original)
        assert row["quality"] == original.quality.value
        assert (row["error"] or None) == original.error
    # one context, some variables, a time window, a .toml source, and the list of runs
    (tmp_path / "plant.toml").write_text(
        f'[[readers]]\ntype = "random"\n[[writers]]\ntype = "sql"\nurl = "{url}"\n'
        '[[contexts]]\nid = 1\nvariables = [{ id = 1, address = "sine", value_type = "float" }]\n',
        encoding="utf-8",
    )
    start = rows[0].read_at + timedelta(seconds=1)
    result = cli(
        ["export", "plant.toml", "--context", "2", "--variables", "1,3", "--start", start.isoformat()],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    part = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["context_id"], r["variable_id"]) for r in part] == [("2", "1"), ("2", "3")] * 2
    assert [r["value"] for r in part] == ["1.5", "nan"] * 2
    listing = cli(["export", "store.sqlite", "--list"], tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["context", "run", "start", "end", "ended", "metadata"]
    assert [line.split()[:2] for line in lines[1:]] == [["1", "1"], ["2", "1"]]
    assert '{"batch": "B-2"}' in lines[2]
    missing = cli(["export", "nothing.sqlite"], tmp_path)
    assert missing.returncode == 2 and "no such file: 'nothing.sqlite'" in missing.stderr
    # ids that are not ints, or beyond what the store holds: a usage error, not a traceback
    for option, value in (
        ("--variables", "1,x"),
        ("--variables", str(2**64)),
        ("--context", str(-(2**63) - 1)),
    ):
        bad = cli(["export", "store.sqlite", option, value], tmp_path)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        assert f"argument {option}: " in bad.stderr and repr(value.split(",")[-1]) in bad.stderr, bad.stderr


def test_export_parquet_round_trips(store: tuple[str, list[Any]], tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    url, rows = store
    result = cli(["export", url, "--context", "1", "-o", "out/ctx1.parquet"], tmp_path)
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "out" / "ctx1.parquet")
    assert table.column_names == [
        "context_id",
        "variable_id",
        "address",
        "value_type",
        "reader_type",
        "read_at",
        "value",
        "value_float",
        "quality",
        "error",
        "name",
        "unit",
    ]
    assert str(table.schema.field("read_at").type) == "timestamp[us, tz=UTC]"
    exported = table.to_pylist()
    originals = [r for r in rows if r.context_id == 1]
    assert len(exported) == len(originals)
    for row, original in zip(exported, originals, strict=True):
        assert (row["context_id"], row["variable_id"], row["address"]) == (
            1,
            original.variable_id,
            original.address,
        )
        assert row["read_at"] == original.read_at
        if original.value is None:
            assert row["value"] is None and row["value_float"] is None
        else:
            assert same(parse_value(row["value"], row["value_type"]), original.value), (row, original)
        if isinstance(original.value, bool | int | float):
            assert same(row["value_float"], float(original.value))
        else:
            assert row["value_float"] is None
        assert (row["quality"], row["error"]) == (original.quality.value, original.error)
    refused = cli(["export", url, "--format", "parquet"], tmp_path)
    assert refused.returncode == 2 and "Parquet goes to a file" in refused.stderr


# -- simulator ------------------------------------------------------------------------------------------
def test_simulator_subcommand(tmp_path: Path) -> None:
    pytest.importorskip("pymodbus")
    result = cli(["simulator", "modbus", "--port", "0", "--duration", "0.3"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"modbus simulator listening on 127\.0\.0\.1:\d+ units \[1\]\n", result.stdout)
    helped = cli(["simulator", "opcua", "--help"], tmp_path)
    assert helped.returncode == 0 and "--bulk" in helped.stdout
