"""``data-collector`` run / validate / read, driven as a user would: subprocesses, real simulators.

The Modbus and OPC UA simulators run in this test process on free ports of 127.0.0.1; the example
configuration reaches them through ``MODBUS_PORT`` / ``OPCUA_PORT``.
"""

from __future__ import annotations

import csv
import os
import re
import select
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from _util import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plant.toml"
EXAMPLE_VARIABLES = {1: {1, 2, 3, 4, 5, 6}, 2: {1, 11, 12, 13, 14, 21}}


def command() -> list[str]:
    """The installed console script, else the module (both run this checkout: PYTHONPATH)."""
    script = Path(sysconfig.get_path("scripts")) / "data-collector"
    return [str(script)] if script.exists() else [sys.executable, "-m", "data_collector._cli"]


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def cli(
    args: list[str], cwd: Path, timeout: float = 60, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(), *args],
        cwd=cwd,
        env=environment(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*command(), *args],
        cwd=cwd,
        env=environment(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the command exited ({proc.returncode}) while waiting for {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a CSV file another process may be appending to."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(text.splitlines()))


def summary_counts(stdout: str) -> dict[int, tuple[int, int]]:
    return {
        int(m.group(1)): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"^context (\d+): (\d+) samples, (\d+) bad$", stdout, re.MULTILINE)
    }


@pytest.fixture(scope="module")
def simulators() -> Iterator[dict[str, str]]:
    pytest.importorskip("pymodbus")
    pytest.importorskip("asyncua")
    from data_reader.modbus_simulator import ModbusSimulator
    from data_reader.opcua_simulator import OpcUaSimulator

    with ModbusSimulator() as modbus, OpcUaSimulator() as opcua:
        yield {"MODBUS_PORT": str(modbus.port), "OPCUA_PORT": str(opcua.port)}


RANDOM_CONFIG = """
[[readers]]
type = "random"

[[writers]]
type = "csv"
path = "out/samples.csv"

[[contexts]]
id = 7
duration_s = {duration}
default_interval_ms = 100
variables = [
    {{ id = 1, address = "counter", value_type = "int" }},
    {{ id = 2, address = "constant:2.5", value_type = "float", interval_ms = 200 }},
]
"""


# -- validate -----------------------------------------------------------------------------------------
def test_validate_example_is_ok(tmp_path: Path) -> None:
    result = cli(["validate", str(EXAMPLE)], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{EXAMPLE}: OK"
    assert "readers[0]: ModbusDataReader(reader_type='press', 127.0.0.1:5020, unit_id=1)" in lines[1]
    assert lines[-3:] == [
        "  contexts[0]: id 1, 6 variables every 250-5000 ms, duration 8:00:00",
        "  contexts[1]: id 2, 6 variables every 200-1000 ms, duration 8:00:00",
        f"  spool: {EXAMPLE.parent / 'plant.spool'}",  # where run would spool
    ]
    assert not list(tmp_path.iterdir())  # validating creates no file and connects nowhere
    assert not (EXAMPLE.parent / "plant.spool").exists()


def test_validate_reports_every_error_with_its_key_path(tmp_path: Path) -> None:
    (tmp_path / "plant.toml").write_text(
        """
[[readers]]
type = "modbus"
reader_type = "press"
host = "127.0.0.1"
port = "502"

[[readers]]
type = "modbus"
reader_type = "line"
host = "127.0.0.1"
timeout_s = 0.5

[[writers]]
type = "csv"
paht = "x.csv"

[[contexts]]
id = 1
variables = [
    { id = 1, address = "hr:0:float32", value_type = "float", reader_type = "line" },
    { id = 2, address = "holding:7:flaot32", value_type = "float", reader_type = "line" },
    { id = 3, address = "hr:9.0", value_type = "bool", reader_type = "line", interval_ms = 10 },
    { id = 4, address = "hr:300:string8", value_type = "text", reader_type = "line" },
    { id = 5, address = "hr:1", value_type = "int", reader_type = "lien" },
]
""",
        encoding="utf-8",
    )
    result = cli(["validate", "plant.toml"], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    expected = [
        ('plant.toml: readers[0].port: "502": ', "must be an integer, got string"),
        (
            'plant.toml: writers[0].paht: "x.csv": ',
            'unknown option of writer CsvFileDataWriter; did you mean "path"',
        ),
        ("plant.toml: writers[0]: ", 'missing key "path"'),
        ('plant.toml: contexts[0].variables[4].reader_type: "lien": ', "no reader has this reader_type"),
        ('plant.toml: contexts[0].variables[1].address: "holding:7:flaot32": ', "unknown type 'flaot32'"),
        ("plant.toml: contexts[0].variables[2].interval_ms: 10: ", "below the minimum 100 ms"),
        ('plant.toml: contexts[0].variables[3].value_type: "text": ', "unknown value_type 'text'"),
    ]
    assert len(lines) == len(expected), lines
    for line, (start, reason) in zip(lines, expected, strict=True):
        assert line.startswith(start) and reason in line, (line, start, reason)


def test_validate_syntax_error_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("[[readers]\ntype = 'random'\n", encoding="utf-8")
    result = cli(["validate", "broken.toml"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("broken.toml: invalid TOML: ") and "line 1" in result.stderr
    result = cli(["validate", "absent.toml"], tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("absent.toml: cannot read the file")
    result = cli(["validate"], tmp_path)
    assert result.returncode == 2 and "usage: data-collector validate" in result.stderr


# -- read ---------------------------------------------------------------------------------------------
def test_read_prints_every_variable(simulators: dict[str, str], tmp_path: Path) -> None:
    result = cli(["read", str(EXAMPLE)], tmp_path, env=simulators)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header == ["contexts", "id", "name", "reader", "address", "type", "value", "quality", "error"]
    rows = {}
    for line in lines[1:-1]:
        match = re.match(
            r"^(\S+)\s+(\d+)\s+(.*?)\s+(press|gateway|random)\s+(\S+)\s+(\S+)\s+(.*?)\s+(GOOD)$", line
        )
        assert match, line
        rows[int(match.group(2))] = match.groups()
    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 21]
    assert rows[1][0] == "1,2" and rows[13][0] == "2"
    assert rows[13][2] == "Tariff" and rows[13][6] == "3.25"
    assert rows[6][6] == "data-collector"
    assert rows[4][6] in ("true", "false") and rows[14][6] in ("true", "false")
    assert -100 <= float(rows[1][6]) <= 100 and 0 <= float(rows[2][6]) <= 100
    assert abs(float(rows[5][6]) - round(float(rows[5][6]), 2)) < 1e-9  # int16 * 0.01
    assert int(rows[3][6]) >= 0 and int(rows[12][6]) >= 0
    assert re.fullmatch(r"read 11 variables from 3 readers in \d+\.\d\d s: 11 GOOD", lines[-1]), lines[-1]


def test_read_of_an_unreachable_device_is_bad_and_exits_1(tmp_path: Path) -> None:
    pytest.importorskip("pymodbus")
    port = free_port()  # nothing listens there
    (tmp_path / "dead.toml").write_text(
        f"""
[[readers]]
type = "modbus"
host = "127.0.0.1"
port = {port}
timeout_s = 0.5

[[readers]]
type = "random"

[[contexts]]
id = 1
variables = [
    {{ id = 1, address = "hr:0", value_type = "int", reader_type = "modbus", name = "dead" }},
    {{ id = 2, address = "constant:5", value_type = "int", reader_type = "random", name = "alive" }},
]
""",
        encoding="utf-8",
    )
    result = cli(["read", "dead.toml", "--timeout", "20"], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "name", "reader", "address", "type", "value", "quality", "error"]
    dead = next(line for line in lines if " dead " in line)
    alive = next(line for line in lines if " alive " in line)
    assert " BAD " in dead and f"cannot connect to 127.0.0.1:{port}: ConnectionRefusedError" in dead, dead
    assert re.search(r"\s5\s+GOOD$", alive), alive
    assert lines[-1].endswith("1 GOOD, 1 BAD")


# -- run ----------------------------------------------------------------------------------------------
def test_run_example_until_sigint_writes_every_value(simulators: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    from data_writer.csv_file_data_writer import read_samples as read_csv
    from data_writer.sql_data_writer import read_contexts, read_samples

    proc = spawn(["run", str(EXAMPLE), "--spool-dir", "spool"], tmp_path, **simulators)
    try:
        files = {cid: tmp_path / "plant-data" / f"context-{cid}.csv" for cid in EXAMPLE_VARIABLES}

        def every_variable_written() -> bool:
            return all(
                {int(r["variable_id"]) for r in csv_rows(files[cid])} == ids
                for cid, ids in EXAMPLE_VARIABLES.items()
            )

        wait_until(every_variable_written, 30, "a value of every variable in the CSV files", proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    assert "stopped by SIGINT: stopping, writing every value read..." in out
    counts = summary_counts(out)
    assert set(counts) == {1, 2}
    url = f"sqlite:///{tmp_path / 'plant-data.sqlite'}"
    for cid, ids in EXAMPLE_VARIABLES.items():
        samples, bad = counts[cid]
        stored_csv = read_csv(files[cid])
        stored_sql = read_samples(url, cid)
        assert bad == 0 and len(stored_csv) == samples == len(stored_sql), (cid, counts, len(stored_csv))
        assert {r["variable_id"] for r in stored_csv} == ids == {r.variable_id for r in stored_sql}
        # the same samples in both stores (CSV keeps milliseconds)
        assert sorted(
            (r["variable_id"], r["read_at"].isoformat(timespec="milliseconds"), r["value"])
            for r in stored_csv
        ) == sorted(
            (r.variable_id, r.read_at.isoformat(timespec="milliseconds"), r.value) for r in stored_sql
        )
        assert all(r.quality.value == "GOOD" for r in stored_sql)
    values = {(r.variable_id, r.value) for cid in (1, 2) for r in read_samples(url, cid)}
    assert {v for vid, v in values if vid == 13} == {3.25}
    assert {v for vid, v in values if vid == 6} == {"data-collector"}
    assert all(isinstance(v, bool) for vid, v in values if vid in (4, 14))
    assert all(-1.0 <= v <= 1.0 for vid, v in values if vid == 21)
    runs = read_contexts(url)
    assert [(r.context_id, r.end is not None) for r in runs] == [(1, True), (2, True)]  # stopped cleanly
    assert runs[0].metadata == {
        "site": "Plant 3",
        "line": "Press line 2",
        "product": "bracket B-7",
        "operator": "night shift",
    }
    total = counts[1][0] + counts[2][0]
    csv_name = "CsvFileDataWriter(plant-data/context-{context_id}.csv)"
    assert f"writer {csv_name}: {total} samples written, 0 lost, 0 dropped" in out
    assert f"writer SqlDataWriter: {total} samples written, 0 lost, 0 dropped" in out


def test_run_ends_when_every_context_ends(tmp_path: Path) -> None:
    (tmp_path / "short.toml").write_text(RANDOM_CONFIG.format(duration=1.5), encoding="utf-8")
    started = time.monotonic()
    result = cli(["run", "short.toml"], tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 30
    assert re.search(r"^every context ended after \d+\.\d s$", result.stdout, re.M), result.stdout
    rows = csv_rows(tmp_path / "out" / "samples.csv")
    counts = summary_counts(result.stdout)
    assert counts == {7: (len(rows), 0)}
    counter = [int(r["value"]) for r in rows if r["variable_id"] == "1"]
    assert counter == list(range(1, len(counter) + 1)) and 5 <= len(counter) <= 20
    assert {r["value"] for r in rows if r["variable_id"] == "2"} == {"2.5"}
    assert "writer CsvFileDataWriter(out/samples.csv): " in result.stdout
    assert re.search(
        r"\d+ samples written, 0 lost, 0 dropped, 0 unwritten; "
        r"spool: 0 replayed, 0 batches quarantined, 0 samples left \(0 B\)$",
        result.stdout,
        re.M,
    ), result.stdout
    assert re.search(r"^reader random: .*, 0 missed ticks, 0 missed samples$", result.stdout, re.M)
    assert "exit status" not in result.stdout
    # --quiet prints nothing, --duration stops earlier than the contexts
    result = cli(["run", "short.toml", "--quiet", "--duration", "0.5"], tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_sigterm_stops_gracefully(tmp_path: Path) -> None:
    (tmp_path / "long.toml").write_text(RANDOM_CONFIG.format(duration=3600), encoding="utf-8")
    proc = spawn(["run", "long.toml"], tmp_path)
    try:
        wait_until(lambda: len(csv_rows(tmp_path / "out" / "samples.csv")) >= 5, 30, "rows", proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    assert "stopped by SIGTERM after" in out
    rows = csv_rows(tmp_path / "out" / "samples.csv")
    assert summary_counts(out) == {7: (len(rows), 0)}
    assert "samples written, 0 lost, 0 dropped" in out


def test_run_exit_codes_for_configuration_and_startup_errors(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the CSV writer wants a directory", encoding="utf-8")
    (tmp_path / "startup.toml").write_text(
        RANDOM_CONFIG.format(duration=5).replace("out/samples.csv", "blocker/samples.csv"), encoding="utf-8"
    )
    # without a spool (with one, the run starts and retries the writer: cli_spool_test.py)
    result = cli(["run", "startup.toml", "--no-spool"], tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.startswith("error: startup failed: ") and "blocker" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "config.toml").write_text(RANDOM_CONFIG.format(duration=-1), encoding="utf-8")
    result = cli(["run", "config.toml"], tmp_path)
    assert result.returncode == 2
    assert result.stderr == "config.toml: contexts[0].duration_s: -1: must be a number of seconds > 0\n"


def test_live_status_table_on_a_terminal(tmp_path: Path) -> None:
    pty = pytest.importorskip("pty")
    (tmp_path / "short.toml").write_text(RANDOM_CONFIG.format(duration=2), encoding="utf-8")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*command(), "run", "short.toml"], cwd=tmp_path, env=environment(), stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal closed: the command exited
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, text
    assert "\x1b[2K" in text and "\x1b[1A" in text  # redrawn in place (rich: erase line, cursor up)
    assert text.count("context  ") >= 2, text  # the table was drawn more than once
    assert re.search(r"context\s+state\s+samples\s+rate/s\s+bad\s+time left", text)
    assert re.search(r"\s7\s+running\s+\d+\s+\d+\.\d\s+0\s+\d+\.\d s", text), text
    assert "every context ended after" in text
    assert re.search(r"reader random: \d+ samples, 0 bad, 0 missed", text), text
    assert re.search(
        r"writer CsvFileDataWriter\(out/samples\.csv\): \d+ written, .*0 lost, 0 unwritten", text
    )


BAD_CONFIG = """
[[readers]]
type = "random"

[[writers]]
type = "csv"
path = "out/samples.csv"

[[contexts]]
id = 7
duration_s = 1.5
default_interval_ms = 100
variables = [
    { id = 1, address = "counter", value_type = "int" },
    { id = 2, address = "bad:PLC 3 does not answer", value_type = "float" },
]
"""


def test_run_exits_1_when_samples_are_bad(tmp_path: Path) -> None:
    """README: exit status 1 when values are lost or read BAD (it was 0 with 138 of 178 BAD)."""
    (tmp_path / "bad.toml").write_text(BAD_CONFIG, encoding="utf-8")
    result = cli(["run", "bad.toml"], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "\x1b" not in result.stdout + result.stderr  # not a terminal: plain text, no live view
    rows = csv_rows(tmp_path / "out" / "samples.csv")
    bad_rows = [r for r in rows if r["quality"] == "BAD"]
    assert bad_rows and {(r["variable_id"], r["error"]) for r in bad_rows} == {("2", "PLC 3 does not answer")}
    assert summary_counts(result.stdout) == {7: (len(rows), len(bad_rows))}
    assert re.search(
        rf"^reader random: \d+ reads, {len(rows)} samples \({len(bad_rows)} bad\)", result.stdout, re.M
    )
    assert result.stdout.splitlines()[-1] == f"exit status 1: samples {len(bad_rows)} BAD", result.stdout
    # --quiet: nothing on stdout, the reason on stderr
    result = cli(["run", "bad.toml", "--quiet", "--duration", "0.5"], tmp_path)
    assert result.returncode == 1 and result.stdout == "", result.stdout + result.stderr
    assert re.fullmatch(r"exit status 1: samples \d+ BAD\n", result.stderr), result.stderr


@pytest.mark.parametrize(
    "port_args",
    [["--port", "99999"], ["--port=70000"], ["--port", "-1"], ["--po", "65536"], ["--port", "5o2"]],
)
@pytest.mark.parametrize("kind", ["modbus", "opcua"])
def test_simulator_with_a_bad_port_exits_2_with_one_line(
    tmp_path: Path, kind: str, port_args: list[str]
) -> None:
    result = cli(["simulator", kind, *port_args, "--duration", "5"], tmp_path, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: simulator {kind}: --port: "), result.stderr
    assert port_args[-1].partition("=")[2 if "=" in port_args[-1] else 0] in lines[0]


def test_simulator_on_a_port_in_use_exits_3_with_one_line(tmp_path: Path) -> None:
    pytest.importorskip("pymodbus")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli(["simulator", "modbus", "--port", str(port), "--duration", "5"], tmp_path, timeout=30)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]  # (pymodbus may log its own line before)
    assert last.startswith("error: ") and "failed to" in last and str(port) in last, result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["read", "r.toml", "--timeout", "1e300"], "argument --timeout: must be at most 3.15576e+09 s"),
        (["read", "r.toml", "--context", str(2**64)], "argument --context: must fit a signed 64-bit integer"),
        (["run", "r.toml", "--duration", "nan"], "argument --duration: must be > 0, got 'nan'"),
        (["run", "r.toml", "--duration", "1e12"], "argument --duration: must be at most"),
    ],
)
def test_numeric_options_out_of_range_are_usage_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "r.toml").write_text(RANDOM_CONFIG.format(duration=1), encoding="utf-8")
    result = cli(args, tmp_path)
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
