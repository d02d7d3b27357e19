"""ModbusDataReader learns a device's request limit from refusals (pymodbus server, counted there).

The simulator refuses reads of more than N registers or bits, as small PLCs and gateways do; the
reader must find N within a few ticks and then send exactly ceil(span / N) requests per tick,
none refused, without ever losing a value.
"""

from __future__ import annotations

import logging
import math

import pytest

from data_collector import CollectedVariables, Quality, Variable
from data_reader.modbus_data_reader import ModbusDataReader
from data_reader.modbus_simulator import ModbusSimulator

LOGGER = "test.modbus.limit"
MAX_TICKS = 4  # the tick from which requests must be minimal and none refused, at the latest


def tick(reader: ModbusDataReader, sim: ModbusSimulator, variables: list[Variable]) -> tuple[int, int, dict]:  # type: ignore[type-arg]
    """One read of every variable: (requests, refused requests) at the server, values by id."""
    sim.clear_requests()
    batch = CollectedVariables.of(variables)
    reader.read(batch)
    requests = sim.requests
    limit_of = {
        1: sim.max_read_bits,
        2: sim.max_read_bits,
        3: sim.max_read_registers,
        4: sim.max_read_registers,
    }
    refused = sum(1 for r in requests if (limit_of[r.function_code] or 10**6) < r.count)
    return len(requests), refused, {i.variable.id: (i.value, i.quality, i.error) for i in batch}


def converge(
    reader: ModbusDataReader, sim: ModbusSimulator, variables: list[Variable], expected: dict[int, object]
) -> list[tuple[int, int]]:
    """Run MAX_TICKS + 3 ticks; every value must be GOOD and right in every one of them."""
    history: list[tuple[int, int]] = []
    for _ in range(MAX_TICKS + 3):
        count, refused, got = tick(reader, sim, variables)
        bad = {vid: v for vid, v in got.items() if v != (expected[vid], Quality.GOOD, None)}
        assert not bad, f"values lost or wrong at tick {len(history) + 1}: {list(bad.items())[:3]}"
        history.append((count, refused))
    return history


def limit_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "from now on" in r.getMessage()]


@pytest.mark.parametrize(
    ("limit", "code"),
    [(60, 3), (100, 3), (17, 3), (60, 2)],
    ids=["60-exception3", "100-exception3", "17-exception3", "60-exception2"],
)
def test_register_limit_is_learnt_and_requests_converge_to_the_minimum(
    limit: int, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with ModbusSimulator(bulk=1000, max_read_registers=limit, oversize_exception=code) as sim:
        reader = ModbusDataReader("127.0.0.1", sim.port, timeout_s=1.0, logger=logging.getLogger(LOGGER))
        try:
            variables = [Variable(a, f"hr:{a}", "int", "modbus") for a in range(1000, 2000)]
            expected: dict[int, object] = {a: (a * 7) & 0xFFFF for a in range(1000, 2000)}
            history = converge(reader, sim, variables, expected)
            minimum = math.ceil(1000 / limit)
            assert history[MAX_TICKS - 1 :] == [(minimum, 0)] * 4, history
            assert history[0][1] > 0  # the first tick did meet the limit
            assert reader.stats.request_limits == {(1, "hr"): limit}
            assert len(limit_logs(caplog)) == 1, limit_logs(caplog)
            assert f"at most {limit} per request" in limit_logs(caplog)[0]
            assert reader.stats.remembered_holes == 0  # no refusal was taken for a missing register
        finally:
            reader.close()


def test_every_other_register_with_a_limit_is_not_mistaken_for_holes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # values at even addresses: every refused request bridges 1-register gaps, so only a read of
    # the bridged gap can tell a size limit (exception 3) from missing registers
    caplog.set_level(logging.INFO, logger=LOGGER)
    with ModbusSimulator(bulk=1000, max_read_registers=60) as sim:
        reader = ModbusDataReader("127.0.0.1", sim.port, timeout_s=1.0, logger=logging.getLogger(LOGGER))
        try:
            variables = [Variable(a, f"hr:{a}", "int", "modbus") for a in range(1000, 2000, 2)]
            expected: dict[int, object] = {a: (a * 7) & 0xFFFF for a in range(1000, 2000, 2)}
            history = converge(reader, sim, variables, expected)
            assert history[MAX_TICKS - 1 :] == [(math.ceil(999 / 60), 0)] * 4, history
            assert reader.stats.request_limits == {(1, "hr"): 60}
            assert reader.stats.remembered_holes == 0
            assert len(limit_logs(caplog)) == 1
        finally:
            reader.close()


def test_bit_limits_are_learnt_per_table(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with ModbusSimulator(max_read_bits=16, oversize_exception=2) as sim:
        # coils 0..99 and discrete inputs 2..15 of the standard map (0 and 1 are a square wave)
        reader = ModbusDataReader("127.0.0.1", sim.port, timeout_s=1.0, logger=logging.getLogger(LOGGER))
        try:
            coils = [Variable(a, f"coil:{a}", "bool", "modbus") for a in range(100)]
            inputs = [Variable(1000 + a, f"di:{a}", "bool", "modbus") for a in range(2, 16)]
            expected: dict[int, object] = {a: a % 3 == 0 and a < 16 for a in range(100)}
            expected.update({1000 + a: a % 2 == 0 for a in range(2, 16)})
            history = converge(reader, sim, coils + inputs, expected)
            # coils: ceil(100 / 16) = 7 requests; 14 discrete inputs fit in one request of 14
            assert history[MAX_TICKS - 1 :] == [(7 + 1, 0)] * 4, history
            assert reader.stats.request_limits == {(1, "coil"): 16}
            assert len(limit_logs(caplog)) == 1
        finally:
            reader.close()


def test_bit_and_register_limits_of_one_unit_are_learnt_together() -> None:
    # a device reading at most 40 bits and 10 registers at once: 3 requests for 100 coils and
    # 9 for 90 input registers
    with ModbusSimulator(max_read_bits=40, max_read_registers=10) as sim:
        reader = ModbusDataReader("127.0.0.1", sim.port, timeout_s=1.0)
        try:
            coils = [Variable(a, f"coil:{a}", "bool", "modbus") for a in range(100)]
            registers = [Variable(500 + a, f"ir:{a}", "int", "modbus") for a in range(10, 100)]
            expected: dict[int, object] = {a: a % 3 == 0 and a < 16 for a in range(100)}
            expected.update({500 + a: 0 for a in range(10, 100)})
            history = converge(reader, sim, coils + registers, expected)
            assert history[MAX_TICKS - 1 :] == [(3 + 9, 0)] * 4, history
            assert reader.stats.request_limits == {(1, "coil"): 40, (1, "ir"): 10}
        finally:
            reader.close()


def test_forget_splits_forgets_the_limit_and_a_device_without_one_is_read_in_full() -> None:
    with ModbusSimulator(bulk=1000, max_read_registers=50) as sim:
        reader = ModbusDataReader("127.0.0.1", sim.port, timeout_s=1.0)
        try:
            variables = [Variable(a, f"hr:{a}", "int", "modbus") for a in range(1000, 1500)]
            for _ in range(3):
                tick(reader, sim, variables)
            assert tick(reader, sim, variables)[:2] == (10, 0)
            sim.max_read_registers = None  # "new firmware": no limit any more
            reader.forget_splits()
            assert reader.stats.request_limits == {}
            assert tick(reader, sim, variables)[:2] == (4, 0)
        finally:
            reader.close()
