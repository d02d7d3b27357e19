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

from data_collector import CollectedVariables, Quality, Variable
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
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModbusSimulator(**kwargs)  # type: ignore[arg-type]


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
