"""OPC UA reader against a real asyncua server (the simulator, in a thread, shared by the module)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from _cases.opcua_cases import (
    CONSTANTS,
    SIM_URI,
    record_sampling_intervals,
    server_items,
    server_subscriptions,
)
from _util import LOG, RecordingWriter, wait_for

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    Quality,
    ReaderError,
    Variable,
)
from data_reader.opcua_data_reader import OpcUaDataReader
from data_reader.opcua_simulator import OpcUaSimulator

MODES = ["poll", "subscribe"]


@pytest.fixture(scope="module")
def sim() -> Iterator[OpcUaSimulator]:
    with OpcUaSimulator(bulk=1000, bulk_interval_s=0.5) as simulator:
        yield simulator


def _reader(sim: OpcUaSimulator, mode: str = "poll", **kw: object) -> OpcUaDataReader:
    return OpcUaDataReader(sim.endpoint, mode=mode, timeout_s=3.0, **kw)  # type: ignore[arg-type]


def _read(reader: OpcUaDataReader, variables: list[Variable]) -> CollectedVariables:
    batch = CollectedVariables.of(variables)
    reader.read(batch)
    return batch


@pytest.mark.parametrize("mode", MODES)
def test_every_value_type_quality_and_address_form(sim: OpcUaSimulator, mode: str) -> None:
    variables = [
        Variable(i, sim.address(name, by_uri=i % 2 == 0), value_type, "opcua", interval_ms=100)
        for i, (name, (value_type, _)) in enumerate(CONSTANTS.items())
    ]
    n = len(variables)
    variables += [
        Variable(n + 0, sim.address("Sim.Sine"), "float", "opcua", interval_ms=100),
        Variable(n + 1, sim.address("Sim.Ramp"), "float", "opcua", interval_ms=100),
        Variable(n + 2, sim.address("Sim.Counter64"), "int", "opcua", interval_ms=100),
        Variable(n + 3, sim.address("Sim.UInt16"), "int", "opcua", interval_ms=100),
        Variable(n + 4, sim.address("Sim.Toggle"), "bool", "opcua", interval_ms=100),
        Variable(n + 5, sim.address("Sim.Text"), "str", "opcua", interval_ms=100),
        Variable(n + 6, sim.address("Sim.Bytes"), "bytes", "opcua", interval_ms=100),
        Variable(n + 7, sim.address("Sim.Time"), "str", "opcua", interval_ms=100),
        Variable(n + 8, sim.numeric_address(), "float", "opcua", interval_ms=100),
        Variable(n + 9, sim.guid_address(), "int", "opcua", interval_ms=100),
        Variable(n + 10, sim.opaque_address(), "str", "opcua", interval_ms=100),
        Variable(n + 11, sim.address("Aux.Counter", by_uri=True), "int", "opcua", interval_ms=100),
        Variable(n + 12, sim.address("Status.Uncertain"), "float", "opcua", interval_ms=100),
        Variable(n + 13, sim.address("Status.Bad"), "float", "opcua", interval_ms=100),
        Variable(n + 14, f"nsu={SIM_URI};s=No.Such.Node", "float", "opcua", interval_ms=100),
        Variable(n + 15, "nsu=urn:not-on-this-server;s=X", "float", "opcua", interval_ms=100),
        Variable(n + 16, sim.address("Static.Double"), "int", "opcua", interval_ms=100),  # 3.25 is no int
    ]
    reader = _reader(sim, mode)
    for v in variables:
        reader.validate_variable(v)
    with reader:
        batch = _read(reader, variables)
    got = {item.variable.id: item for item in batch}
    for i, (name, (_, expected)) in enumerate(CONSTANTS.items()):
        assert (got[i].value, got[i].quality, got[i].error) == (expected, Quality.GOOD, None), name
        assert type(got[i].value) is type(expected), name
    live = [got[n + k] for k in range(12)]
    assert all(item.quality is Quality.GOOD and item.error is None for item in live), live
    assert -1.0 <= live[0].value <= 1.0 and type(live[0].value) is float
    assert 0.0 <= live[1].value <= 100.0
    assert live[2].value >= 1 and type(live[2].value) is int
    assert 0 <= live[3].value < 2**16
    assert type(live[4].value) is bool
    assert live[5].value.startswith("tick ")
    assert type(live[6].value) is bytes and len(live[6].value) == 4
    assert datetime.fromisoformat(live[7].value) > datetime.now(UTC) - timedelta(minutes=5)
    assert (live[8].value, live[9].value, live[10].value) == (10.01, 7, "opaque")
    assert live[11].value >= 1
    uncertain, bad, unknown, no_ns, no_int = (got[n + k] for k in range(12, 17))
    assert (uncertain.value, uncertain.quality, uncertain.error) == (
        7.5,
        Quality.UNCERTAIN,
        "UncertainLastUsableValue",
    )
    assert (bad.value, bad.quality, bad.error) == (None, Quality.BAD, "BadSensorFailure")
    assert (unknown.value, unknown.quality, unknown.error) == (None, Quality.BAD, "BadNodeIdUnknown")
    assert no_ns.quality is Quality.BAD and "urn:not-on-this-server" in (no_ns.error or "")
    assert no_int.quality is Quality.BAD and "not an integer" in (no_int.error or "")


@pytest.mark.parametrize("mode", MODES)
def test_live_values_move_between_reads(sim: OpcUaSimulator, mode: str) -> None:
    counter = Variable(1, sim.address("Sim.Counter"), "int", "opcua", interval_ms=100)
    with _reader(sim, mode) as reader:
        first = _read(reader, [counter])[0]
        assert first.quality is Quality.GOOD
        start = first.value
        assert isinstance(start, int), first
        seen: list[int] = []

        def moved() -> bool:
            item = _read(reader, [counter])[0]
            assert item.quality is Quality.GOOD, item
            value = item.value
            assert isinstance(value, int), item
            seen.append(value)
            return value >= start + 3

        wait_for(moved, 10, "the counter to advance")
    assert seen == sorted(seen)


@pytest.mark.parametrize("mode", MODES)
def test_source_timestamps_option(sim: OpcUaSimulator, mode: str) -> None:
    setpoint = Variable(1, sim.address("Setpoint.Double"), "float", "opcua", interval_ms=100)
    before = datetime.now(UTC)
    sim.set_value("Setpoint.Double", 42.5)
    with _reader(sim, mode, source_timestamps=True) as reader:
        wait_for(lambda: _read(reader, [setpoint])[0].value == 42.5, 10, "the new setpoint")
        item = _read(reader, [setpoint])[0]
    assert item.read_at is not None and item.read_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= item.read_at <= datetime.now(UTC)
    with _reader(sim, mode) as reader:
        item = _read(reader, [setpoint])[0]
    assert item.value == 42.5 and item.read_at is None  # the collector fills in the tick time


def test_a_1000_node_tick_is_one_read_call_or_the_chunked_minimum(sim: OpcUaSimulator) -> None:
    variables = [Variable(i, a, "float", "opcua") for i, a in enumerate(sim.bulk_addresses(1000))]
    with _reader(sim) as reader:
        _read(reader, variables[:1])  # warm-up
        server_before, ours_before = sim.read_requests, reader.opcua_stats()["read_requests"]
        batch = _read(reader, variables)
        assert sim.read_requests - server_before == 1
        assert reader.opcua_stats()["read_requests"] - ours_before == 1
    assert all(item.quality is Quality.GOOD for item in batch)
    fractions = [round((item.value % 1) * 10000) for item in batch]
    assert fractions == list(range(1000))  # Bulk.i holds <tick> + i / 10000: each value is its own
    sim.set_max_nodes_per_read(400)
    try:
        with _reader(sim) as reader:
            assert reader.opcua_stats()["max_nodes_per_read"] == 400
            server_before = sim.read_requests
            batch = _read(reader, variables)
            assert sim.read_requests - server_before == 3  # ceil(1000 / 400)
    finally:
        sim.set_max_nodes_per_read(10000)
    assert [round((item.value % 1) * 10000) for item in batch] == list(range(1000))


def test_writes_use_the_node_data_type(sim: OpcUaSimulator) -> None:
    cases = [
        ("Setpoint.Double", "float", 12.75),
        ("Setpoint.Float", "float", 0.5),
        ("Setpoint.Int16", "int", -300),
        ("Setpoint.UInt32", "int", 3_000_000_000),
        ("Setpoint.Bool", "bool", True),
        ("Setpoint.String", "str", "auto"),
        ("Setpoint.Bytes", "bytes", b"\x10\x20"),
    ]
    with _reader(sim) as reader:
        assert reader.supports_write
        for i, (name, value_type, value) in enumerate(cases):
            variable = Variable(i, sim.address(name), value_type, "opcua")
            reader.write(variable, value)
            assert sim.get_value(name) == value, name
            assert _read(reader, [variable])[0].value == value
        with pytest.raises(ConfigurationError, match="out of range for Int16"):
            reader.write(Variable(20, sim.address("Setpoint.Int16"), "int", "opcua"), 40000)
        with pytest.raises(ConfigurationError, match="cannot write 'abc'"):
            reader.write(Variable(21, sim.address("Setpoint.Double"), "float", "opcua"), "abc")
        with pytest.raises(ReaderError, match="BadNodeIdUnknown"):
            reader.write(Variable(22, f"nsu={SIM_URI};s=No.Such.Node", "float", "opcua"), 1.0)
        with pytest.raises(ConfigurationError, match="invalid OPC UA NodeId"):
            reader.write(Variable(23, "ns=2;x=1", "float", "opcua"), 1.0)
    assert sim.get_value("Setpoint.Int16") == -300
    with pytest.raises(ReaderError, match="not open"):
        reader.write(Variable(24, sim.address("Setpoint.Double"), "float", "opcua"), 1.0)


def test_subscribed_values_not_confirmed_for_max_age_turn_uncertain(sim: OpcUaSimulator) -> None:
    static = Variable(1, sim.address("Static.Double"), "float", "opcua", interval_ms=100)
    live = Variable(2, sim.address("Sim.Counter"), "int", "opcua", interval_ms=200)
    # the static node's subscription only sends keep-alives, every 3 s: its value ages past 0.4 s
    with _reader(sim, "subscribe", keepalive_s=3.0, max_age_s=0.4) as reader:
        lives: list[Quality] = []

        def aged() -> bool:
            a, b = _read(reader, [static, live])
            lives.append(b.quality)
            assert a.value == 3.25
            if a.quality is Quality.UNCERTAIN:
                assert "not confirmed by the server" in (a.error or "")
                return True
            assert a.quality is Quality.GOOD
            return False

        wait_for(aged, 5, "the static value to age")
    assert lives and all(q is Quality.GOOD for q in lives)  # live values are confirmed all along
    # with the default max_age_s (3 keep-alive periods) the same unchanging value stays GOOD
    with _reader(sim, "subscribe") as reader:
        end = time.monotonic() + 1.5
        qualities = []
        while time.monotonic() < end:
            qualities.append(_read(reader, [static])[0].quality)
            time.sleep(0.05)  # pacing of the sampling loop (bounded by `end`), not a synchronization
    assert len(qualities) > 3 and set(qualities) == {Quality.GOOD}


def test_collector_end_to_end_both_modes(sim: OpcUaSimulator) -> None:
    variables = [
        Variable(1, sim.address("Sim.Counter", by_uri=True), "int", "opcua", interval_ms=100),
        Variable(2, sim.address("Static.String"), "str", "opcua", interval_ms=200),
        Variable(3, sim.address("Static.Bytes"), "bytes", "opcua", interval_ms=200),
        Variable(4, f"nsu={SIM_URI};s=Missing", "float", "opcua", interval_ms=200),
    ]
    poll = _reader(sim, "poll", reader_type="opcua-poll")
    sub = _reader(sim, "subscribe", reader_type="opcua-sub")
    writer = RecordingWriter()
    with DataCollector(LOG, [poll, sub], [writer]) as collector:
        for context_id, reader_type in ((1, "opcua-poll"), (2, "opcua-sub")):
            own = [
                Variable(v.id + 10 * context_id, v.address, v.value_type, reader_type, v.interval_ms)
                for v in variables
            ]
            collector.start(DataCollectionContext(context_id, own))
        wait_for(
            lambda: all(len(writer.of(c, 10 * c + 1)) >= 10 for c in (1, 2)), 20, "10 counter reads each"
        )
        stats = collector.stats()
    for context_id in (1, 2):
        base = 10 * context_id
        counters = [r for r in writer.of(context_id, base + 1) if r.quality is Quality.GOOD]
        assert len(counters) >= 8
        values = [r.value for r in counters]
        assert values == sorted(values) and values[-1] > values[0]
        assert {r.value for r in writer.of(context_id, base + 2)} == {"hello"}
        assert {r.value for r in writer.of(context_id, base + 3)} == {b"\x00\x01\xfe\xff"}
        missing = writer.of(context_id, base + 4)
        assert missing and all(r.quality is Quality.BAD and r.error == "BadNodeIdUnknown" for r in missing)
    assert stats.readers["opcua-poll"].reads > 0 and stats.readers["opcua-sub"].reads > 0


def test_bad_nodeids_fail_at_start_and_nothing_starts(sim: OpcUaSimulator) -> None:
    reader = _reader(sim)
    good = Variable(1, sim.address("Static.Double"), "float", "opcua")
    bad = Variable(2, "ns=2;i=12x", "float", "opcua")
    with DataCollector(LOG, [reader], [RecordingWriter()]) as collector:
        with pytest.raises(ConfigurationError, match=r"ns=2;i=12x"):
            collector.start(DataCollectionContext(1, [good, bad]))
        assert collector.contexts() == {}
        assert not reader.connected  # validation comes before opening: nothing was started
        with pytest.raises(ConfigurationError, match="value_type"):
            collector.start(
                DataCollectionContext(2, [Variable(3, sim.address("Static.Double"), "datetime", "opcua")])
            )


def test_monitored_items_follow_the_contexts(sim: OpcUaSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    record_sampling_intervals(monkeypatch)
    reader = _reader(sim, "subscribe")
    first = [
        Variable(1, sim.address("Sim.Counter"), "int", "opcua", interval_ms=300),
        Variable(2, sim.address("Sim.Sine"), "float", "opcua"),  # the context's default_interval_ms
    ]
    second = [
        Variable(1, sim.address("Sim.Counter"), "int", "opcua", interval_ms=200),
        Variable(3, sim.address("Static.Bool"), "bool", "opcua", interval_ms=200),
    ]
    both = [("Sim.Counter", 100), ("Sim.Sine", 400), ("Static.Bool", 200)]  # 100 = GCD(300, 200)
    only_first = [("Sim.Counter", 300), ("Sim.Sine", 400)]
    only_second = [("Sim.Counter", 200), ("Static.Bool", 200)]
    writer = RecordingWriter()
    with DataCollector(LOG, [reader], [writer]) as collector:
        # each change is on the server when the call returns: the first tick finds the items
        collector.start(DataCollectionContext(1, first, default_interval_ms=400))
        assert server_items(sim) == only_first
        assert server_subscriptions(sim) == 2  # one per sampling interval
        collector.start(DataCollectionContext(2, second))
        assert server_items(sim) == sorted(both)
        stats = reader.opcua_stats()
        assert (stats["monitored_items"], stats["subscriptions"]) == (3, 3)
        assert stats["sampling_intervals_ms"] == [100, 200, 400]
        wait_for(
            lambda: len(writer.of(1, 1)) >= 3 and len(writer.of(2, 3)) >= 2, 10, "reads of both contexts"
        )
        collector.pause(2)
        assert server_items(sim) == only_first
        collector.resume(2)
        assert server_items(sim) == sorted(both)
        collector.stop(1)
        assert server_items(sim) == only_second
        assert server_subscriptions(sim) == 1
        after_stop = len(writer.of(2, 1))
        wait_for(lambda: len(writer.of(2, 1)) >= after_stop + 3, 10, "more reads of context 2")
        collector.pause(2)  # nothing scheduled any more: everything goes
        assert (server_items(sim), server_subscriptions(sim)) == ([], 0)
        stats = reader.opcua_stats()
        assert (stats["monitored_items"], stats["subscriptions"]) == (0, 0)
        collector.resume(2)
        assert server_items(sim) == only_second
        collector.stop(2)
        assert (server_items(sim), server_subscriptions(sim)) == ([], 0)
        assert reader.connected  # nothing lost its session on the way
    for context_id in (1, 2):
        rows = writer.of(context_id)
        assert rows and [r for r in rows if r.quality is not Quality.GOOD] == []
        counters = [r.value for r in writer.of(context_id, 1)]
        assert counters == sorted(counters) and counters[-1] > counters[0]
    assert {r.value for r in writer.of(2, 3)} == {True}


def test_a_reader_used_directly_monitors_what_it_reads_until_told_otherwise(
    sim: OpcUaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_sampling_intervals(monkeypatch)
    plain = Variable(1, sim.address("Static.Int32"), "int", "opcua")  # default_interval_ms
    timed = Variable(2, sim.address("Static.Double"), "float", "opcua", interval_ms=250)
    counter = Variable(3, sim.address("Sim.Counter"), "int", "opcua", interval_ms=100)
    with _reader(sim, "subscribe", default_interval_ms=700) as reader:
        assert [(i.value, i.quality) for i in _read(reader, [plain, timed])] == [
            (-42, Quality.GOOD),
            (3.25, Quality.GOOD),
        ]
        assert server_items(sim) == [("Static.Double", 250), ("Static.Int32", 700)]
        # an announcement replaces the whole set
        reader.variables_changed({counter: 500, plain: 300})
        assert server_items(sim) == [("Sim.Counter", 500), ("Static.Int32", 300)]
        assert _read(reader, [counter])[0].quality is Quality.GOOD
        assert server_items(sim) == [("Sim.Counter", 500), ("Static.Int32", 300)]
        reader.variables_changed({})
        assert (server_items(sim), server_subscriptions(sim)) == ([], 0)


@pytest.mark.parametrize("mode", MODES)
def test_a_reader_can_be_closed_and_opened_again(sim: OpcUaSimulator, mode: str) -> None:
    variable = Variable(1, sim.address("Static.Int32", by_uri=True), "int", "opcua", interval_ms=100)
    reader = _reader(sim, mode)
    for _ in range(2):
        with reader:
            assert reader.connected
            item = _read(reader, [variable])[0]
            assert (item.value, item.quality) == (-42, Quality.GOOD)
        assert not reader.connected
        assert _read(reader, [variable])[0].error == "reader is not open"
