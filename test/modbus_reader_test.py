"""ModbusDataReader against a real pymodbus server (ModbusSimulator on 127.0.0.1, free port)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from _util import wait_for

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    Quality,
    ReaderError,
    Variable,
    WriteNotSupportedError,
)
from data_reader.modbus_data_reader import ModbusDataReader
from data_reader.modbus_simulator import CONSTANTS, ORDERS, TEXT, ModbusSimulator

ORDER_NAMES = ("ABCD", "DCBA", "BADC", "CDAB")
TIMEOUT = 0.5  # the readers' timeout: long enough for a live unit on a loaded machine
WIRE = {
    2: {"ABCD": "AB", "DCBA": "BA", "BADC": "BA", "CDAB": "AB"},
    4: {"ABCD": "ABCD", "DCBA": "DCBA", "BADC": "BADC", "CDAB": "CDAB"},
    8: {"ABCD": "ABCDEFGH", "DCBA": "HGFEDCBA", "BADC": "BADCFEHG", "CDAB": "GHEFCDAB"},
}
TYPES = {  # type -> (struct code, a value whose bytes all differ)
    "int16": ("h", -0x1234),
    "uint16": ("H", 0xA1B2),
    "int32": ("i", -0x12345678),
    "uint32": ("I", 0xA1B2C3D4),
    "int64": ("q", -0x1122334455667788),
    "uint64": ("Q", 0xF1E2D3C4B5A69788),
    "float16": ("e", -2.5),
    "float32": ("f", -1234.5625),
    "float64": ("d", -1.2345678901234567e-89),
}


def wire_registers(type_name: str, value: int | float, order: str) -> list[int]:
    big = struct.pack(">" + TYPES[type_name][0], value)
    wire = bytes(big[ord(letter) - ord("A")] for letter in WIRE[len(big)][order])
    return [wire[i] << 8 | wire[i + 1] for i in range(0, len(wire), 2)]


def read(
    reader: ModbusDataReader, variables: list[Variable]
) -> dict[int, tuple[object, Quality, str | None]]:
    batch = CollectedVariables.of(variables)
    reader.read(batch)
    return {item.variable.id: (item.value, item.quality, item.error) for item in batch}


def hr(vid: int, address: str, value_type: str = "int") -> Variable:
    return Variable(vid, address, value_type, "modbus")


@pytest.fixture
def sim() -> Iterator[ModbusSimulator]:
    with ModbusSimulator(unit_ids=(1, 2), silent_unit_ids=(3, 4), bulk=1000) as s:
        yield s


@pytest.fixture
def reader(sim: ModbusSimulator) -> Iterator[ModbusDataReader]:
    r = ModbusDataReader(
        "127.0.0.1", sim.port, timeout_s=TIMEOUT, reconnect_delay_s=0.0, reconnect_delay_max_s=0.0
    )
    r.open()
    yield r
    r.close()


# -- data types and byte orders ------------------------------------------------------------------


def test_every_type_and_byte_order_round_trips_against_known_registers() -> None:
    contents: dict[int, int] = {}
    variables: list[Variable] = []
    expected: dict[int, object] = {}
    address = 2000
    for type_name, (_code, value) in TYPES.items():
        for order in ORDER_NAMES:
            regs = wire_registers(type_name, value, order)
            for i, reg in enumerate(regs):
                contents[address + i] = reg
            value_type = "float" if type_name.startswith("float") else "int"
            for table in ("hr", "ir"):
                vid = len(variables)
                variables.append(hr(vid, f"{table}:{address}:{type_name}:{order}", value_type))
                expected[vid] = value
            address += len(regs) + 1  # a spare register between values
    with ModbusSimulator(holding=contents, inputs=contents) as s:
        r = ModbusDataReader("127.0.0.1", s.port, timeout_s=1.0)
        for v in variables:
            r.validate_variable(v)
        got = read(r, variables)
        r.close()
    assert len(variables) == 72
    for v in variables:
        read_value, quality, error = got[v.id]
        assert (quality, error) == (Quality.GOOD, None), v
        assert read_value == expected[v.id], (v, read_value)
        assert type(read_value) is type(expected[v.id])


def test_the_simulator_constants_read_as_documented(sim: ModbusSimulator, reader: ModbusDataReader) -> None:
    variables: list[Variable] = []
    expected: dict[int, object] = {}
    for type_name, _code, value, base in CONSTANTS:
        for o, order in enumerate(ORDERS):
            vid = len(variables)
            variables.append(
                hr(vid, f"hr:{base + 4 * o}:{type_name}:{order}", "float" if "float" in type_name else "int")
            )
            expected[vid] = value
    variables.append(hr(100, "hr:300:string8", "str"))
    variables.append(hr(101, "hr:310:string8:BADC", "str"))
    variables.append(hr(102, "hr:300:string8", "bytes"))
    expected.update({100: TEXT, 101: TEXT, 102: TEXT.encode() + b"\0\0"})
    got = read(reader, variables)
    assert {vid: got[vid][0] for vid in expected} == expected
    # constants 100..224 fill one request (125 registers); 228..275 and the strings 300..317 another
    assert sim.request_count(function_code=3) == 2


def test_bits_coils_discrete_inputs_and_signals(sim: ModbusSimulator, reader: ModbusDataReader) -> None:
    variables = [hr(i, f"coil:{i}", "bool") for i in range(16)]
    variables += [hr(100 + i, f"di:{i}", "bool") for i in range(16)]
    variables += [
        hr(200, "hr:9.0", "bool"),
        hr(201, "hr:9.1", "bool"),
        hr(202, "hr:9.15", "int"),
        hr(203, "hr:0:float32", "float"),
        hr(204, "ir:6:int16;scale=0.01", "float"),
        hr(205, "hr:4:uint32", "int"),
        hr(206, "hr:2:float32", "str"),
    ]
    got = read(reader, variables)
    assert all(q is Quality.GOOD for _v, q, _e in got.values())
    assert [got[i][0] for i in range(16)] == [i % 3 == 0 for i in range(16)]
    assert [got[100 + i][0] for i in range(2, 16)] == [i % 2 == 0 for i in range(2, 16)]
    assert got[100][0] is not got[101][0]  # square wave and its inverse
    assert got[200][0] is not got[201][0]
    assert got[202][0] == 1
    assert -100.0 <= got[203][0] <= 100.0  # type: ignore[operator]
    assert got[204][0] == pytest.approx(got[203][0], abs=0.5)
    assert got[205][0] >= 0  # type: ignore[operator]
    assert 0.0 <= float(got[206][0]) <= 100.0  # type: ignore[arg-type]
    # the sine moves: two reads 0.3 s apart differ
    first = got[203][0]
    time.sleep(0.3)
    assert read(reader, [variables[-4]])[203][0] != first
    # one request per table: coils, discrete inputs, holding 0..9, input 6
    assert [(r.function_code, r.address, r.count) for r in sim.requests] == [
        (1, 0, 16),
        (2, 0, 16),
        (4, 6, 1),
        (3, 0, 10),
        (3, 0, 2),
    ]


# -- request planning ------------------------------------------------------------------------------


def test_1000_contiguous_registers_take_8_requests(sim: ModbusSimulator, reader: ModbusDataReader) -> None:
    variables = [hr(a, f"hr:{a}") for a in range(1000, 2000)]
    for _tick in range(3):
        sim.clear_requests()
        got = read(reader, variables)
        assert [(r.function_code, r.address, r.count) for r in sim.requests] == [
            (3, 1000 + 125 * i, 125) for i in range(8)
        ]
        assert all(got[a] == ((a * 7) & 0xFFFF, Quality.GOOD, None) for a in range(1000, 2000))
    assert reader.stats.requests == 24


def test_mixed_types_in_8_blocks_are_8_requests(sim: ModbusSimulator, reader: ModbusDataReader) -> None:
    kinds = ["uint16", "int32", "float32:CDAB", "uint64"]
    variables: list[Variable] = []
    for block in range(8):
        a = 1000 + 100 * block
        for i in range(10):
            kind = kinds[i % 4]
            variables.append(hr(len(variables), f"hr:{a}:{kind}", "float" if "float" in kind else "int"))
            a += {"uint16": 1, "int32": 2, "float32:CDAB": 2, "uint64": 4}[kind]
    got = read(reader, variables)
    assert all(q is Quality.GOOD for _v, q, _e in got.values())
    assert sim.request_count() == 8
    # a value decodes from the bulk pattern (address * 7) & 0xFFFF
    assert got[0][0] == (1000 * 7) & 0xFFFF
    assert got[1][0] == struct.unpack(">i", struct.pack(">2H", (1001 * 7) & 0xFFFF, (1002 * 7) & 0xFFFF))[0]


def test_hole_inside_a_bridged_range_costs_two_failed_requests_once() -> None:
    contents = {a: a + 1 for a in [*range(0, 10), *range(20, 30)]}  # 10..19 do not exist
    with ModbusSimulator(holding=contents, standard_map=False) as s:
        r = ModbusDataReader("127.0.0.1", s.port, max_gap=32)
        variables = [hr(a, f"hr:{a}") for a in contents]
        first = read(r, variables)
        assert all(first[a] == (a + 1, Quality.GOOD, None) for a in contents)
        # 0..29 bridges the hole and is refused; its halves are read in the same tick; as no
        # request of 30 was ever answered, a read of the hole itself tells a hole (refused) from
        # a device limit of fewer than 30 registers (answered)
        assert [(q.address, q.count) for q in s.requests] == [(0, 30), (0, 10), (20, 10), (10, 10)]
        assert (r.stats.exception_responses, r.stats.remembered_holes) == (2, 1)
        assert r.stats.request_limits == {}
        for _tick in range(3):
            s.clear_requests()
            again = read(r, variables)
            assert all(again[a] == (a + 1, Quality.GOOD, None) for a in contents)
            assert [(q.address, q.count) for q in s.requests] == [(0, 10), (20, 10)]
        assert r.stats.exception_responses == 2
        r.close()


def test_several_holes_never_cost_data_and_are_learnt() -> None:
    present = [*range(0, 10), *range(20, 30), *range(40, 50), *range(55, 60), *range(70, 80)]
    contents = {a: a + 1 for a in present}
    with ModbusSimulator(holding=contents, standard_map=False) as s:
        r = ModbusDataReader("127.0.0.1", s.port, max_gap=32)
        variables = [hr(a, f"hr:{a}") for a in contents]
        failures = []
        for _tick in range(8):
            s.clear_requests()
            got = read(r, variables)
            assert all(got[a] == (a + 1, Quality.GOOD, None) for a in contents)
            failures.append(r.stats.exception_responses)
        # every hole is refused a bounded number of times, then never again
        assert failures[-1] == failures[-4] <= 8
        assert r.stats.remembered_holes == 4
        assert sorted((q.address, q.count) for q in s.requests) == [
            (0, 10),
            (20, 10),
            (40, 10),
            (55, 5),
            (70, 10),
        ]
        r.close()


def test_a_missing_register_among_good_ones_is_bad_alone() -> None:
    contents = {a: a for a in range(0, 20) if a != 7}
    with ModbusSimulator(holding=contents, standard_map=False) as s:
        r = ModbusDataReader("127.0.0.1", s.port)
        variables = [hr(a, f"hr:{a}") for a in range(0, 20)]
        for _tick in range(3):
            s.clear_requests()
            got = read(r, variables)
            assert got[7][1] is Quality.BAD
            assert "exception 2 (illegal data address)" in (got[7][2] or "")
            assert all(got[a] == (a, Quality.GOOD, None) for a in contents)
        # after learning, a tick is: 0..6, 7 alone (refused), 8..19
        assert sorted((q.address, q.count) for q in s.requests) == [(0, 7), (7, 1), (8, 12)]
        assert r.stats.isolated_spans == 1
        r.close()


# -- faults ----------------------------------------------------------------------------------------


def retry_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("modbus-retry-")]


def test_dead_and_unknown_units_next_to_a_live_one(sim: ModbusSimulator) -> None:
    # retries every 30 s at the earliest: no retry during this test
    reader = ModbusDataReader(
        "127.0.0.1", sim.port, timeout_s=TIMEOUT, unit_retry_s=30.0, unit_retry_max_s=30.0
    )
    variables = [
        hr(1, "hr:100:int16"),
        hr(2, "hr:100:int16;unit=2"),
        hr(3, "hr:100:int16;unit=3"),  # silent: times out
        hr(4, "hr:100:int16;unit=9"),  # unknown: gateway exception 11
    ]
    try:
        for tick in range(4):
            started = time.monotonic()
            got = read(reader, variables)
            elapsed = time.monotonic() - started
            assert got[1] == (-12345, Quality.GOOD, None)
            assert got[2] == (-12345, Quality.GOOD, None)
            assert got[4][1] is Quality.BAD and "exception 11" in (got[4][2] or "")
            assert got[3][1] is Quality.BAD
            if tick == 0:  # the silent unit is found out: one timeout
                assert "no answer from unit 3 within 0.5 s" in (got[3][2] or ""), got[3]
                assert TIMEOUT <= elapsed < 2 * TIMEOUT
            else:  # then it costs nothing: BAD at once, with the reason
                assert "unit 3 not answering (timeout 0.5 s); next retry in" in (got[3][2] or ""), got[3]
                assert elapsed < TIMEOUT / 2
        assert sim.request_count(unit=3) == 1
        assert reader.connected and reader.stats.silent_units == 1
    finally:
        reader.close()


def test_two_dead_units_cost_two_timeouts_once_then_nothing(sim: ModbusSimulator) -> None:
    reader = ModbusDataReader(
        "127.0.0.1", sim.port, timeout_s=TIMEOUT, unit_retry_s=30.0, unit_retry_max_s=30.0
    )
    variables = [hr(1, "hr:100:int16"), hr(3, "hr:100:int16;unit=3"), hr(4, "hr:100:int16;unit=4")]
    try:
        got = read(reader, variables)  # both time out: the link is taken for dead and reopened
        assert got[1] == (-12345, Quality.GOOD, None)  # polled first
        assert got[3][1] is Quality.BAD and got[4][1] is Quality.BAD
        assert reader.stats.timeouts == 2 and reader.stats.disconnects == 1
        for _tick in range(3):
            started = time.monotonic()
            got = read(reader, variables)
            assert time.monotonic() - started < TIMEOUT / 2
            assert got[1] == (-12345, Quality.GOOD, None)
            for vid in (3, 4):
                assert f"unit {vid} not answering" in (got[vid][2] or ""), got[vid]
        assert (sim.request_count(unit=3), sim.request_count(unit=4)) == (1, 1)
        assert reader.stats.timeouts == 2 and reader.stats.silent_units == 2
    finally:
        reader.close()


def test_a_silent_device_costs_one_timeout_then_nothing() -> None:
    with ModbusSimulator(silent_unit_ids=(1,)) as s:
        r = ModbusDataReader("127.0.0.1", s.port, timeout_s=0.3, unit_retry_s=30.0, unit_retry_max_s=30.0)
        variables = [hr(1, "hr:0"), hr(2, "hr:500"), hr(3, "coil:0", "bool")]
        for tick in range(3):
            started = time.monotonic()
            got = read(r, variables)
            elapsed = time.monotonic() - started
            assert all(q is Quality.BAD for _v, q, _e in got.values())
            if tick == 0:
                assert "did not answer within 0.3 s" in (got[3][2] or "") or "no answer" in (got[3][2] or "")
                assert 0.3 <= elapsed < 0.3 + 1.0
            else:
                assert all("unit 1 not answering (timeout 0.3 s)" in (e or "") for _v, _q, e in got.values())
                assert elapsed < 0.15
        assert r.stats.timeouts == 1
        r.close()


def test_a_silent_unit_is_retried_apart_and_rejoins_when_it_answers() -> None:
    with ModbusSimulator(unit_ids=(1, 3), silent_unit_ids=(3,)) as s:
        r = ModbusDataReader("127.0.0.1", s.port, timeout_s=1.0, unit_retry_s=0.5, unit_retry_max_s=1.0)
        variables = [hr(1, "hr:100:int16"), hr(2, "hr:100:int16;unit=3")]
        try:
            assert read(r, variables)[2][1] is Quality.BAD  # found out: one timeout
            silent_since = time.monotonic()
            slowest = 0.0
            # 3 s of silence: every tick is quick, the unit is retried on its own cadence (at
            # 0.5 s, then 1 s after each unanswered retry), never by the ticks
            while time.monotonic() - silent_since < 3.0:
                started = time.monotonic()
                got = read(r, variables)
                slowest = max(slowest, time.monotonic() - started)
                assert got[1] == (-12345, Quality.GOOD, None)
                assert got[2][1] is Quality.BAD and "unit 3 not answering (timeout 1 s)" in (got[2][2] or "")
                time.sleep(0.05)
            assert slowest < 0.5
            retries = s.request_count(unit=3) - 1
            assert 1 <= retries <= 2, retries  # each retry takes >= 1.5 s (1 s timeout, then >= 0.5 s)
            assert retries <= r.stats.probes <= retries + 1 and r.stats.timeouts == 1
            assert len(retry_threads()) == 1
            s.set_silent(())
            back = time.monotonic()
            wait_for(lambda: read(r, variables)[2] == (-12345, Quality.GOOD, None), 5.0, "unit 3 back")
            assert time.monotonic() - back < 1.0 + 1.0 + 0.5  # the longest wait for its next retry
            for _tick in range(3):
                assert read(r, variables) == {
                    1: (-12345, Quality.GOOD, None),
                    2: (-12345, Quality.GOOD, None),
                }
            wait_for(lambda: not retry_threads(), 5.0, "the retry thread ends when no unit is silent")
            assert r.stats.silent_units == 0
        finally:
            r.close()


def test_close_ends_a_retry_waiting_for_its_answer_at_once() -> None:
    with ModbusSimulator(unit_ids=(1,), silent_unit_ids=(3,)) as s:
        r = ModbusDataReader("127.0.0.1", s.port, timeout_s=3.0, unit_retry_s=0.01, unit_retry_max_s=0.01)
        variables = [hr(1, "hr:100:int16"), hr(2, "hr:100:int16;unit=3")]
        read(r, variables)  # one 3 s timeout; the retry starts 10 ms later and waits up to 3 s
        wait_for(lambda: s.request_count(unit=3) == 2, 5.0, "a retry in progress")
        assert len(retry_threads()) == 1
        started = time.monotonic()
        r.close()
        assert time.monotonic() - started < 1.0
        assert retry_threads() == []
        assert r.stats.silent_units == 0
        # a later read starts afresh: the unit is polled again (found silent again)
        got = read(r, [hr(1, "hr:100:int16")])
        assert got[1] == (-12345, Quality.GOOD, None)
        r.close()


def test_a_device_that_takes_one_connection_retries_silent_units_after_the_live_ones() -> None:
    with ModbusSimulator(unit_ids=(1, 3), silent_unit_ids=(3,), max_connections=1) as s:
        r = ModbusDataReader("127.0.0.1", s.port, timeout_s=0.3, unit_retry_s=0.3, unit_retry_max_s=0.6)
        variables = [hr(1, "hr:100:int16"), hr(2, "hr:100:int16;unit=3")]
        try:
            read(r, variables)
            # the retry thread's second connection is closed by the device (twice in a row):
            # the ticks then retry the unit themselves, after the live unit, on its cadence
            wait_for(lambda: not retry_threads(), 5.0, "the retry thread gives up its connection")
            s.clear_requests()
            retried = 0
            ticks = 0
            started_all = time.monotonic()
            while time.monotonic() - started_all < 2.5:
                got = read(r, variables)
                if "no answer from unit 3" in (got[2][2] or ""):
                    retried += 1  # this tick waited for the timeout
                else:
                    assert "unit 3 not answering" in (got[2][2] or ""), got[2]
                ticks += 1
                assert got[1] == (-12345, Quality.GOOD, None)  # read before the retry
                assert got[2][1] is Quality.BAD
                time.sleep(0.05)
            # one tick per retry waits (retries >= 0.6 s apart), never one per tick
            assert 1 <= retried <= 4 and ticks >= 8, (retried, ticks)
            assert s.request_count(unit=3) == retried
            s.set_silent(())
            wait_for(lambda: read(r, variables)[2] == (-12345, Quality.GOOD, None), 5.0, "unit 3 back")
        finally:
            r.close()


def test_refused_connection_backs_off_and_recovers() -> None:
    # a bound socket that does not listen holds the port (no other test can take it) and refuses
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    r = ModbusDataReader("127.0.0.1", port, timeout_s=0.5, reconnect_delay_s=0.2, reconnect_delay_max_s=0.4)
    variables = [hr(1, "hr:100:int16")]
    try:
        got = read(r, variables)
        assert got[1][1] is Quality.BAD and "Connection refused" in (got[1][2] or ""), got
        assert r.stats.connect_failures == 1
        got = read(r, variables)  # within the backoff: no new attempt
        assert "next attempt in" in (got[1][2] or "")
        assert r.stats.connect_failures == 1
    finally:
        holder.close()
    with ModbusSimulator(port=port):
        wait_for(lambda: read(r, variables)[1][1] is Quality.GOOD, 5.0, "recovery after backoff")
        assert read(r, variables)[1] == (-12345, Quality.GOOD, None)
    assert r.stats.connect_failures >= 1
    r.close()


def sleep_until(moment: float) -> None:
    """Sleep until time.monotonic() reaches ``moment`` (a tick's time, at most 1 s away)."""
    time.sleep(min(1.0, max(0.0, moment - time.monotonic())))


def test_a_tick_at_the_end_of_the_reconnect_delay_reconnects() -> None:
    # the delay counts from the start of the tick that failed: the tick one delay later tries
    # again, even when it starts a little early (ticks are not exact)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    r = ModbusDataReader("127.0.0.1", port, timeout_s=0.5, reconnect_delay_s=0.2, reconnect_delay_max_s=0.2)
    variables = [hr(1, "hr:100:int16")]
    try:
        for attempt in range(1, 5):
            started = time.monotonic()
            got = read(r, variables)
            assert "Connection refused" in (got[1][2] or ""), got
            assert r.stats.connect_failures == attempt
            sleep_until(started + 0.2 - 0.002)  # the next tick, 2 ms early
        started = time.monotonic()
        read(r, variables)  # 2 ms before the end of the delay: already counts
        assert r.stats.connect_failures == 5
        sleep_until(started + 0.1)
        got = read(r, variables)
        if time.monotonic() - started < 0.18:  # half-way (unless this machine is very busy): no attempt
            assert r.stats.connect_failures == 5
            assert "(next attempt in 0." in (got[1][2] or ""), got
    finally:
        holder.close()
    r.close()


def test_server_restart_bad_then_good_without_errors_in_between(
    sim: ModbusSimulator, reader: ModbusDataReader
) -> None:
    variables = [hr(1, "hr:100:int16"), hr(2, "coil:0", "bool")]
    assert read(reader, variables)[1][1] is Quality.GOOD
    sim.stop()
    got = read(reader, variables)
    assert all(q is Quality.BAD for _v, q, _e in got.values())
    assert "lost" in (got[1][2] or "") or "closed" in (got[1][2] or ""), got
    got = read(reader, variables)
    assert "Connection refused" in (got[1][2] or ""), got
    sim.start()
    got = read(reader, variables)  # reconnect_delay 0: the first tick after restart is GOOD
    assert got == {1: (-12345, Quality.GOOD, None), 2: (True, Quality.GOOD, None)}
    assert reader.stats.disconnects == 1


def test_alternating_due_sets_reuse_their_plans(sim: ModbusSimulator, reader: ModbusDataReader) -> None:
    fast = [hr(1, "hr:100:int16"), hr(2, "hr:120:uint16")]
    slow = [*fast, hr(3, "hr:300:string8", "str")]
    for _tick in range(3):
        assert read(reader, fast) == {1: (-12345, Quality.GOOD, None), 2: (54321, Quality.GOOD, None)}
        assert read(reader, slow)[3] == ("data-collector", Quality.GOOD, None)
    assert len(reader._plans) == 2  # one plan per due set, built once


def test_read_never_raises_for_invalid_variables(sim: ModbusSimulator, reader: ModbusDataReader) -> None:
    got = read(reader, [hr(1, "hr:nope"), hr(2, "hr:0:float32", "int"), hr(3, "hr:100:int16")])
    assert got[1][1] is Quality.BAD and "variable 1 address 'hr:nope'" in (got[1][2] or "")
    assert got[2][1] is Quality.BAD and "cannot be converted" in (got[2][2] or "")
    assert got[3] == (-12345, Quality.GOOD, None)


# -- writes ----------------------------------------------------------------------------------------


def test_writes_of_every_type_and_order(sim: ModbusSimulator, reader: ModbusDataReader) -> None:
    address = 400
    for type_name, (_code, value) in TYPES.items():
        for order in ORDER_NAMES:
            variable = hr(
                address, f"hr:{address}:{type_name}:{order}", "float" if "float" in type_name else "int"
            )
            reader.write(variable, value)
            regs = wire_registers(type_name, value, order)
            assert sim.get_registers(address, len(regs)) == regs, (type_name, order)
            assert read(reader, [variable])[address] == (value, Quality.GOOD, None)
            address += len(regs)
            if address > 490:
                address = 400


def test_writes_of_coils_bits_strings_and_scaled_values(
    sim: ModbusSimulator, reader: ModbusDataReader
) -> None:
    reader.write(hr(1, "coil:20", "bool"), True)
    assert sim.get_bits(19, 3) == [False, True, False]
    reader.write(hr(1, "coil:20", "bool"), False)
    assert sim.get_bits(20, 1) == [False]
    sim.set_registers(450, [0x00F0])
    reader.write(hr(2, "hr:450.0", "bool"), True)
    reader.write(hr(2, "hr:450.4", "bool"), False)
    assert sim.get_registers(450, 1) == [0x00E1]  # mask write: the other bits untouched
    reader.write(hr(3, "hr:460:string3:BADC", "str"), "plc")
    assert sim.get_registers(460, 3) == [0x6C70, 0x0063, 0]
    assert read(reader, [hr(3, "hr:460:string3:BADC", "str")])[3][0] == "plc"
    reader.write(hr(4, "hr:470:int16;scale=0.1;offset=-40", "float"), 21.3)
    assert sim.get_registers(470, 1) == [613]
    assert read(reader, [hr(4, "hr:470:int16;scale=0.1;offset=-40", "float")])[4][0] == pytest.approx(21.3)


def test_write_errors(sim: ModbusSimulator, reader: ModbusDataReader) -> None:
    with pytest.raises(ConfigurationError, match="input registers are read-only"):
        reader.write(hr(1, "ir:0"), 1)
    with pytest.raises(ConfigurationError, match="discrete inputs are read-only"):
        reader.write(hr(1, "di:0", "bool"), True)
    with pytest.raises(ConfigurationError, match=r"variable 1 address 'hr:0:int16'.*out of the range"):
        reader.write(hr(1, "hr:0:int16"), 70000)
    with pytest.raises(ConfigurationError, match="variable 1 address 'hr:x'"):
        reader.write(hr(1, "hr:x"), 1)
    with pytest.raises(ReaderError, match=r"refused writing 5: exception 2 \(illegal data address\)"):
        reader.write(hr(1, "hr:600"), 5)
    with pytest.raises(ReaderError, match="unit 9 refused"):
        reader.write(hr(1, "hr:400;unit=9"), 5)
    sim.stop()
    with pytest.raises(ReaderError, match="writing 5 failed") as info:
        reader.write(hr(1, "hr:400"), 5)  # the open connection was dropped by the server
    assert info.value.__cause__ is not None
    with pytest.raises(ReaderError, match=r"cannot connect to .*Connection refused"):
        reader.write(hr(1, "hr:400"), 5)


def test_write_from_another_thread_while_reading(sim: ModbusSimulator, reader: ModbusDataReader) -> None:
    variables = [hr(a, f"hr:{a}") for a in range(1000, 1200)]
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(100):
                reader.write(hr(1, "hr:480:uint32"), i * 1000)
                if done.is_set():
                    return
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 20
    ticks = 0
    while thread.is_alive() and time.monotonic() < deadline:
        got = read(reader, variables)
        assert all(q is Quality.GOOD for _v, q, _e in got.values())
        ticks += 1
    done.set()
    thread.join(10)
    assert not thread.is_alive() and errors == []
    assert ticks >= 1
    assert sim.get_registers(480, 2) == [99000 >> 16, 99000 & 0xFFFF]


def test_readers_without_write_refuse_clearly() -> None:
    from data_reader.random_data_reader import RandomDataReader

    random_reader = RandomDataReader()
    assert not random_reader.supports_write
    with pytest.raises(WriteNotSupportedError, match="cannot write"):
        random_reader.write(Variable(1, "sine", "float", "random"), 1.0)
