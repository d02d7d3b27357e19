"""ModbusDataReader through DataCollector, against real pymodbus servers on 127.0.0.1."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

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
            assert any(
                word in (i.error or "") for word in ("did not answer", "no answer", "not answering")
            ), i
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


def read_at(item: CollectedVariable) -> datetime:
    assert item.read_at is not None
    return item.read_at


def test_a_silent_unit_costs_the_live_unit_nothing_with_the_default_timeout() -> None:
    # default timeout (1 s) and retry cadence; 200 ms ticks: only the tick that finds the unit
    # silent waits for it, then the live unit is read at its due boundaries
    with ModbusSimulator(unit_ids=(1,), silent_unit_ids=(3,)) as gateway:
        reader = ModbusDataReader("127.0.0.1", gateway.port)
        writer = CaptureWriter()
        context = DataCollectionContext(
            1,
            [
                Variable(1, "hr:100:int16", "int", "modbus"),
                Variable(2, "hr:100:int16;unit=3", "int", "modbus"),
            ],
            default_interval_ms=200,
        )
        with DataCollector(LOG, [reader], [writer]) as collector:
            collector.start(context)
            assert writer.wait_for(lambda rows: any(i.variable.id == 2 for _c, i in rows), 10)
            gateway.clear_requests()
            start = datetime.now(UTC)
            end = start + timedelta(seconds=6)
            assert writer.wait_for(lambda rows: any(read_at(i) >= end for _c, i in rows), 15)
            collector.stop(1)
        window = [i for i in writer.items if start <= read_at(i[1]) < end]
        live = [i for c, i in window if i.variable.id == 1 and i.quality is Quality.GOOD]
        due = 30  # 200 ms boundaries in 6 s
        assert len(live) >= 0.9 * due, (len(live), [i.error for c, i in window if i.variable.id == 1][:5])
        assert all(i.value == -12345 for i in live)
        silent = [i for c, i in window if i.variable.id == 2]
        assert silent and all(i.quality is Quality.BAD for i in silent)
        for i in silent:
            assert "unit 3 not answering (timeout 1 s)" in (i.error or ""), i.error
        # retried on its own cadence (1 s, 2 s, 4 s... each waiting up to 1 s), not at every tick
        assert gateway.request_count(unit=3) <= 4, gateway.request_count(unit=3)
    assert not [t for t in threading.enumerate() if t.name.startswith("modbus-retry-")]


def test_a_silent_unit_that_answers_again_is_good_within_seconds() -> None:
    with ModbusSimulator(unit_ids=(1, 3), silent_unit_ids=(3,)) as gateway:
        reader = ModbusDataReader("127.0.0.1", gateway.port, timeout_s=0.5, unit_retry_max_s=2.0)
        writer = CaptureWriter()
        context = DataCollectionContext(
            1,
            [
                Variable(1, "hr:100:int16", "int", "modbus"),
                Variable(2, "hr:100:int16;unit=3", "int", "modbus"),
            ],
            default_interval_ms=200,
        )

        def silent_samples(rows: list[tuple[int, CollectedVariable]]) -> int:
            return sum(1 for _c, i in rows if i.variable.id == 2 and "not answering" in (i.error or ""))

        with DataCollector(LOG, [reader], [writer]) as collector:
            collector.start(context)
            assert writer.wait_for(lambda rows: silent_samples(rows) >= 10, 10)
            gateway.set_silent(())
            back = datetime.now(UTC)
            # the next retry answers: at most 2 s (the cap) + 0.5 s (a retry in progress) later
            assert writer.wait_for(
                lambda rows: any(i.variable.id == 2 and i.quality is Quality.GOOD for _c, i in rows), 5
            )
            good = next(i for i in writer.of(2) if i.quality is Quality.GOOD)
            assert read_at(good) - back < timedelta(seconds=3.5)
            assert writer.wait_for(lambda rows: len(after(writer.of(2), read_at(good))) >= 5, 5)
            collector.stop(1)
        assert all(
            i.quality is Quality.GOOD and i.value == -12345 for i in after(writer.of(2), read_at(good))
        )
        # the live unit: GOOD, but for the boundaries that passed while the first timeout was found
        # out (BAD "missed: previous read still running", never a silent gap)
        bad_live = [i for i in writer.of(1) if i.quality is not Quality.GOOD]
        assert len(bad_live) <= 5 and all((i.error or "").startswith("missed:") for i in bad_live), bad_live


def test_reconnect_at_the_first_tick_after_the_device_listens_again() -> None:
    # delays 0.1 s doubling to 0.5 s, ticks every 500 ms: once the delay is at its cap, every
    # tick tries to connect, so the first tick after the restart reads GOOD
    with ModbusSimulator() as sim:
        reader = ModbusDataReader(
            "127.0.0.1", sim.port, timeout_s=0.5, reconnect_delay_s=0.1, reconnect_delay_max_s=0.5
        )
        writer = CaptureWriter()
        context = DataCollectionContext(
            1, [Variable(1, "hr:100:int16", "int", "modbus")], default_interval_ms=500
        )

        def refused_after(moment: datetime) -> int:
            return sum(1 for i in after(writer.of(1), moment) if "cannot connect" in (i.error or ""))

        with DataCollector(LOG, [reader], [writer]) as collector:
            collector.start(context)
            assert writer.wait_for(lambda rows: len(rows) >= 1, 10)
            for _cycle in range(2):
                sim.stop()
                stopped = datetime.now(UTC)
                assert writer.wait_for(lambda rows: refused_after(stopped) >= 5, 10)  # noqa: B023
                sim.start()
                restarted = datetime.now(UTC)
                assert writer.wait_for(lambda rows: len(after(writer.of(1), restarted)) >= 2, 10)  # noqa: B023
                first = after(writer.of(1), restarted)[0]
                assert (first.quality, first.value) == (Quality.GOOD, -12345), first.error
            collector.stop(1)
        # no tick reported a delay that was over already
        assert not [i.error for i in writer.of(1) if "next attempt in 0.0" in (i.error or "")]
