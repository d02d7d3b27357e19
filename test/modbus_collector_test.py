"""ModbusDataReader through DataCollector, against real pymodbus servers on 127.0.0.1."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from _cases.modbus_cases import CaptureWriter

from data_collector import (
    CollectedVariable,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    Quality,
    Variable,
)
from data_reader.modbus_data_reader import ModbusDataReader
from data_reader.modbus_simulator import ModbusSimulator

LOG = logging.getLogger("test.modbus")


def after(items: list[CollectedVariable], moment: datetime) -> list[CollectedVariable]:
    return [i for i in items if i.read_at is not None and i.read_at > moment]


def test_values_types_and_shared_reads_through_the_collector() -> None:
    with ModbusSimulator() as sim:
        reader = ModbusDataReader("127.0.0.1", sim.port, timeout_s=1.0)
        writer = CaptureWriter()
        a = DataCollectionContext(
            1,
            [
                Variable(1, "hr:0:float32", "float", "modbus", interval_ms=200),
                Variable(2, "hr:240:float32", "float", "modbus", interval_ms=200),
                Variable(3, "hr:9.0", "bool", "modbus", interval_ms=200),
                Variable(4, "hr:300:string8", "str", "modbus", interval_ms=400),
            ],
            min_interval_ms=50,
        )
        b = DataCollectionContext(
            2, [Variable(1, "hr:0:float32", "float", "modbus", interval_ms=100)], min_interval_ms=50
        )
        with DataCollector(LOG, [reader], [writer]) as collector:
            collector.start(a)
            collector.start(b)
            assert writer.wait_for(
                lambda rows: sum(1 for c, i in rows if c == 1 and i.variable.id == 4) >= 3, 15
            )
            stats = collector.stats().readers["modbus"]
            collector.stop(1)
            collector.stop(2)
        assert stats.tick_ms == 100
        rows = writer.items
        assert all(i.quality is Quality.GOOD for _c, i in rows), [
            i for _c, i in rows if i.quality is not Quality.GOOD
        ]
        assert {i.value for _c, i in rows if i.variable.id == 2} == {-1234.5625}
        assert {i.value for _c, i in rows if i.variable.id == 4} == {"data-collector"}
        assert all(type(i.value) is bool for _c, i in rows if i.variable.id == 3)
        sines = [i.value for c, i in rows if c == 2]
        assert all(-100.0 <= v <= 100.0 for v in sines) and len(set(sines)) > 1
        # variable 1 is read once per tick and shared: context 1 gets the same value and read_at
        by_time = {i.read_at: i.value for c, i in rows if c == 2}
        shared = [(i.read_at, i.value) for c, i in rows if c == 1 and i.variable.id == 1]
        assert shared and all(by_time[t] == v for t, v in shared)
        # requests are coalesced: the sine (0-1) and the status bit (9.0) share one request when both are due
        assert {(r.function_code, r.address, r.count) for r in sim.requests} == {
            (3, 0, 2),
            (3, 0, 10),
            (3, 240, 2),
            (3, 300, 8),
        }


def test_bad_addresses_and_conversions_fail_at_start_with_variable_and_address() -> None:
    reader = ModbusDataReader("127.0.0.1", 1)  # nothing is contacted: start() fails first
    writer = CaptureWriter()
    cases = [
        (Variable(7, "hr:70000", "int", "modbus"), ["variable 7", "'hr:70000'", "out of range 0..65535"]),
        (
            Variable(8, "hr:0:float32", "int", "modbus"),
            ["variable 8", "'hr:0:float32'", "cannot be converted"],
        ),
        (
            Variable(9, "hr:0:string2", "float", "modbus"),
            ["variable 9", "'hr:0:string2'", "cannot be converted"],
        ),
        (Variable(10, "coil:1:int16", "bool", "modbus"), ["variable 10", "'coil:1:int16'", "read as bool"]),
    ]
    with DataCollector(LOG, [reader], [writer]) as collector:
        for bad, words in cases:
            good = Variable(1, "hr:0", "int", "modbus")
            with pytest.raises(ConfigurationError) as info:
                collector.start(DataCollectionContext(bad.id, [good, bad]))
            for word in words:
                assert word in str(info.value)
            assert collector.contexts() == {}
    assert writer.items == []


def test_killing_the_server_is_bad_within_one_tick_and_restart_is_good_at_once() -> None:
    with ModbusSimulator() as sim:
        reader = ModbusDataReader(
            "127.0.0.1", sim.port, timeout_s=0.5, reconnect_delay_s=0.0, reconnect_delay_max_s=0.0
        )
        writer = CaptureWriter()
        variables = [Variable(1, "hr:100:int16", "int", "modbus"), Variable(2, "coil:0", "bool", "modbus")]
        context = DataCollectionContext(1, variables, default_interval_ms=100, min_interval_ms=50)
        with DataCollector(LOG, [reader], [writer]) as collector:
            collector.start(context)
            assert writer.wait_for(lambda rows: len(rows) >= 6, 10), "no data"
            sim.stop()
            stopped = datetime.now(UTC)
            assert writer.wait_for(lambda rows: len(after([i for _c, i in rows], stopped)) >= 6, 10)
            down = after(writer.of(1), stopped)
            assert all(i.quality is Quality.BAD for i in down), down  # the first tick after the kill is BAD
            assert all(i.error for i in down)
            sim.start()
            restarted = datetime.now(UTC)
            assert writer.wait_for(lambda rows: len(after([i for _c, i in rows], restarted)) >= 6, 10)
            up = after(writer.of(1), restarted)
            assert up[0].quality is Quality.GOOD, up[:2]  # the first tick after the restart is GOOD
            assert all(i.value == -12345 for i in up)
            collector.stop(1)
        before = [i for i in writer.of(1) if i.read_at is not None and i.read_at < stopped]
        assert before and all(i.quality is Quality.GOOD for i in before[:-1])


def test_a_dead_device_does_not_delay_a_live_one() -> None:
    with ModbusSimulator() as live, ModbusSimulator(silent_unit_ids=(1,)) as dead:
        good = ModbusDataReader("127.0.0.1", live.port, reader_type="plc-live", timeout_s=0.5)
        bad = ModbusDataReader("127.0.0.1", dead.port, reader_type="plc-dead", timeout_s=0.5)
        writer = CaptureWriter()
        context = DataCollectionContext(
            1,
            [
                Variable(1, "hr:100:int16", "int", "plc-live"),
                Variable(2, "hr:100:int16", "int", "plc-dead"),
                Variable(3, "hr:100:int16;unit=1", "int", "plc-live"),
            ],
            default_interval_ms=200,
        )
        with DataCollector(LOG, [good, bad], [writer]) as collector:
            collector.start(context)
            assert writer.wait_for(lambda rows: sum(1 for _c, i in rows if i.variable.id == 1) >= 8, 15)
            stats = collector.stats()
            collector.stop(1)
        live_rows = writer.of(1)
        assert all(i.quality is Quality.GOOD and i.value == -12345 for i in live_rows)
        assert stats.readers["plc-live"].missed_ticks == 0
        dead_rows = writer.of(2)
        assert dead_rows
        for i in dead_rows:
            assert i.quality is Quality.BAD
            assert "did not answer" in (i.error or "") or "no answer" in (i.error or ""), i
        # the dead device's ticks take the timeout (0.5 s) but never much more
        assert stats.readers["plc-dead"].max_read_ms < 500 + 700


def test_a_dead_unit_behind_a_gateway_does_not_cost_the_live_unit() -> None:
    with ModbusSimulator(unit_ids=(1,), silent_unit_ids=(2,)) as gateway:
        reader = ModbusDataReader("127.0.0.1", gateway.port, timeout_s=0.3)
        writer = CaptureWriter()
        context = DataCollectionContext(
            1,
            [
                Variable(1, "hr:100:int16", "int", "modbus"),
                Variable(2, "hr:100:int16;unit=2", "int", "modbus"),
            ],
            default_interval_ms=500,
        )
        with DataCollector(LOG, [reader], [writer]) as collector:
            collector.start(context)
            assert writer.wait_for(lambda rows: sum(1 for _c, i in rows if i.variable.id == 1) >= 4, 15)
            collector.stop(1)
        assert all(i.quality is Quality.GOOD and i.value == -12345 for i in writer.of(1))
        assert all(i.quality is Quality.BAD and "unit 2" in (i.error or "") for i in writer.of(2))
