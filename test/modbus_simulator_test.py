"""The Modbus simulator: Python API, live signals and the `python -m data_reader.modbus_simulator` command."""

from __future__ import annotations

import queue
import re
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from data_collector import CollectedVariables, ConfigurationError, Quality, Variable
from data_reader.modbus_data_reader import ModbusDataReader
from data_reader.modbus_simulator import ModbusSimulator

ROOT = Path(__file__).resolve().parent.parent


def test_signals_follow_the_wall_clock() -> None:
    sim = ModbusSimulator(period_s=10.0)
    base = 1_000_000_000.0  # a multiple of the period: phase 0

    def value(regs: dict[int, int], address: int, code: str) -> float:
        return float(struct.unpack(">" + code, struct.pack(">2H", regs[address], regs[address + 1]))[0])

    quarter = sim.signals(base + 2.5)
    assert value(quarter, 0, "f") == pytest.approx(100.0)  # sine peak
    assert value(quarter, 2, "f") == pytest.approx(25.0)  # ramp
    assert quarter[6] == 10000 and quarter[7] == 250
    assert quarter[9] == 0x8001  # square high in the first half, bit 15 always set
    late = sim.signals(base + 7.5)
    assert value(late, 0, "f") == pytest.approx(-100.0)
    assert late[6] == (-10000) & 0xFFFF and late[9] == 0x8002


def test_api_port_counting_registers_and_restart() -> None:
    sim = ModbusSimulator(unit_ids=(1, 7))
    with pytest.raises(RuntimeError, match="not running"):
        sim.get_registers(0, 1)
    with sim:
        port = sim.port
        assert port > 0 and sim.running
        with pytest.raises(RuntimeError, match="already started"):
            sim.start()
        reader = ModbusDataReader(
            "127.0.0.1", port, timeout_s=1.0, reconnect_delay_s=0.0, reconnect_delay_max_s=0.0
        )
        sim.set_registers(400, [1, 2, 3], unit=7)
        batch = CollectedVariables.of(
            [Variable(1, "hr:400:uint16;unit=7", "int", "m"), Variable(2, "ir:100:int16;unit=7", "int", "m")]
        )
        reader.read(batch)
        assert [i.value for i in batch] == [1, -12345]
        assert sim.request_count(unit=7) == 2 and sim.request_count(function_code=4) == 1
        assert sim.get_registers(400, 3, unit=7) == [1, 2, 3]
        assert sim.get_registers(400, 1, unit=1) == [0]  # units are separate
        sim.clear_requests()
        assert sim.requests == []
        sim.stop()
        assert not sim.running
        batch = CollectedVariables.of([Variable(1, "hr:100:int16", "int", "m")])
        reader.read(batch)
        assert batch[0].quality is Quality.BAD
        sim.start()
        assert sim.port == port  # same port: clients reconnect as to a restarted device
        batch = CollectedVariables.of([Variable(1, "hr:100:int16", "int", "m")])
        reader.read(batch)
        assert batch[0].value == -12345
        reader.close()
    assert not sim.running


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unit_ids": ()}, "unit_ids"),
        ({"period_s": 0}, "period_s"),
        ({"bulk": -1}, "bulk"),
        ({"holding": {70000: 1}}, "out of range"),
        ({"max_read_registers": 126}, "max_read_registers must be an int 1..125 or None, got 126"),
        ({"max_read_bits": 0}, "max_read_bits must be an int 1..2000 or None, got 0"),
        ({"oversize_exception": 4}, "oversize_exception must be 2 or 3, got 4"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ModbusSimulator(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("port", [-1, 65536, 99999, "502", 502.0, True])
def test_ports_out_of_range_are_refused_naming_the_value(port: object) -> None:
    with pytest.raises(
        ConfigurationError, match=rf"ModbusSimulator: port must be an int 0\.\.65535.*{port!r}"
    ):
        ModbusSimulator(port=port)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError, match=rf"ModbusDataReader: port must be an int 1\.\.65535.*{port!r}"
    ):
        ModbusDataReader("127.0.0.1", port)  # type: ignore[arg-type]
    pytest.importorskip("asyncua")
    from data_reader.opcua_simulator import OpcUaSimulator

    with pytest.raises(
        ConfigurationError, match=rf"OpcUaSimulator: port must be an int 0\.\.65535.*{port!r}"
    ):
        OpcUaSimulator(port=port)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["modbus", "opcua"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "port must be 0..65535 (0: a free one), got '99999'"),
        (["--port", "-1"], "port must be 0..65535 (0: a free one), got '-1'"),
        (["--port", "abc"], "'abc'"),
    ],
)
def test_simulator_command_refuses_a_bad_port_in_one_line(
    kind: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("asyncua" if kind == "opcua" else "pymodbus")
    from data_collector._cli import main

    assert main(["simulator", kind, *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--port" in lines[0], captured.err
    assert message in lines[0], captured.err
    assert captured.out == ""


def test_simulator_command_reports_other_bad_arguments_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from data_reader.modbus_simulator import main

    for args, message in [
        (["--units", "1,x"], "error: --units must be comma-separated integers, got '1,x'\n"),
        (["--units", "300"], "error: ModbusSimulator: unit ids must be ints 0..255, got 300\n"),
        (["--period", "0"], "error: ModbusSimulator: period_s must be > 0, got 0.0\n"),
        (["--nope"], "error: unrecognized arguments: --nope\n"),
    ]:
        assert main(args) == 2
        assert capsys.readouterr().err == message


def test_command_line_serves_until_its_duration() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "data_reader.modbus_simulator",
            "--port",
            "0",
            "--units",
            "1,2",
            "--duration",
            "30",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=30)
        match = re.search(r"listening on 127\.0\.0\.1:(\d+) units \[1, 2\]", line)
        assert match, line
        reader = ModbusDataReader("127.0.0.1", int(match.group(1)), timeout_s=2.0)
        batch = CollectedVariables.of(
            [Variable(1, "hr:260:float64;unit=2", "float", "m"), Variable(2, "hr:300:string8", "str", "m")]
        )
        reader.read(batch)
        reader.close()
        assert [(i.value, i.quality) for i in batch] == [
            (2.718281828459045, Quality.GOOD),
            ("data-collector", Quality.GOOD),
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_reads_over_the_configured_size_are_refused_and_recorded() -> None:
    from pymodbus.client import ModbusTcpClient

    with ModbusSimulator(bulk=100, max_read_registers=10, max_read_bits=8, oversize_exception=2) as sim:
        client = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=2)
        assert client.connect()  # type: ignore[no-untyped-call]  # pymodbus leaves connect() unannotated
        try:
            assert client.read_holding_registers(1000, count=10).registers == [
                (a * 7) & 0xFFFF for a in range(1000, 1010)
            ]
            refused = client.read_input_registers(1000, count=11)
            assert refused.isError() and refused.exception_code == 2
            assert client.read_coils(0, count=8).bits[:8] == [a % 3 == 0 for a in range(8)]
            assert client.read_discrete_inputs(0, count=9).exception_code == 2
        finally:
            client.close()  # type: ignore[no-untyped-call]  # pymodbus leaves close() unannotated
        assert [(r.function_code, r.count) for r in sim.requests] == [(3, 10), (4, 11), (1, 8), (2, 9)]
