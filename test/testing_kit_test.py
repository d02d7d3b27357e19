"""The testing kit's fixtures and helpers, used as a user would: simulators with programmed values
and faults, the fault proxy, the memory writer and the collector factory's accounting."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    DataWriter,
    Quality,
    Variable,
)
from data_collector.testing import (
    CollectorFactory,
    FaultProxy,
    MemoryWriter,
    ReaderContract,
    StoredSample,
    WriterContract,
    assert_nothing_lost,
    free_port,
    wait_for,
)
from data_reader.random import RandomDataReader

LOG = logging.getLogger("test.kit")


def _read(reader: Any, variables: list[Variable]) -> dict[int, tuple[Quality, Any, str | None]]:
    batch = CollectedVariables.of(variables)
    reader.read(batch)
    return {i.variable.id: (i.quality, i.value, i.error) for i in batch}


# -- the Modbus simulator ---------------------------------------------------------------------------
def _modbus(port: int, **kw: Any) -> Any:
    from data_reader.modbus import ModbusDataReader

    return ModbusDataReader("127.0.0.1", port, reconnect_delay_s=0.0, **kw)


def test_modbus_simulator_values_refusals_and_freeze(modbus_simulator: Any) -> None:
    sim = modbus_simulator
    assert sim.running and sim.port > 0
    sim.set_value("hr:400:float32:CDAB", 21.5)
    sim.set_value("hr:402", 7)
    sim.set_value("coil:20", True)
    sim.set_value("hr:403.2", True)
    assert sim.get_registers(402, 2) == [7, 4]
    variables = [
        Variable(1, "hr:400:float32:CDAB", "float", "modbus"),
        Variable(2, "hr:402", "int", "modbus"),
        Variable(3, "coil:20", "bool", "modbus"),
        Variable(4, "hr:403.2", "bool", "modbus"),
    ]
    reader = _modbus(sim.port, timeout_s=0.5)
    try:
        assert _read(reader, variables) == {
            1: (Quality.GOOD, 21.5, None),
            2: (Quality.GOOD, 7, None),
            3: (Quality.GOOD, True, None),
            4: (Quality.GOOD, True, None),
        }
        sim.refuse(402)  # one register: illegal data address
        got = _read(reader, variables)
        assert got[2][0] is Quality.BAD and got[2][2] and "2" in got[2][2], got[2]
        assert got[1][0] is got[3][0] is got[4][0] is Quality.GOOD, got
        sim.clear_faults()
        sim.freeze()  # a hung device: every item BAD within the reader's timeout
        started = time.monotonic()
        got = _read(reader, variables)
        assert all(q is Quality.BAD and e for q, _v, e in got.values()), got
        assert time.monotonic() - started < 5
        assert sim.frozen
        sim.thaw()
        wait_for(
            lambda: all(q is Quality.GOOD for q, _v, _e in _read(reader, variables).values()), 10, "thawed"
        )
    finally:
        reader.close()


@pytest.mark.modbus_simulator(unit_ids=[1, 2])
def test_modbus_simulator_drops_a_unit_silently_or_with_exception_11(modbus_simulator: Any) -> None:
    sim = modbus_simulator
    assert sim.unit_ids == (1, 2)
    one, two = Variable(1, "hr:120;unit=1", "int", "modbus"), Variable(2, "hr:120;unit=2", "int", "modbus")
    sim.drop_unit(2, silent=False)
    reader = _modbus(sim.port, timeout_s=0.5)
    try:
        got = _read(reader, [one, two])
        assert got[1] == (Quality.GOOD, 54321, None)
        assert got[2][0] is Quality.BAD and "11" in (got[2][2] or ""), got[2]
        sim.restore_unit(2)
        sim.drop_unit(2)  # silent: the request times out
        assert 2 in sim.silent_unit_ids
        sim.restore_unit(2)
        wait_for(lambda: _read(reader, [two])[2][0] is Quality.GOOD, 15, "unit 2 back")
    finally:
        reader.close()


def test_modbus_simulator_refuses_bad_fault_arguments(modbus_simulator: Any) -> None:
    with pytest.raises(ConfigurationError, match="table"):
        modbus_simulator.refuse(1, table="x")
    with pytest.raises(ConfigurationError, match="70000"):
        modbus_simulator.refuse(70000)
    with pytest.raises(ConfigurationError, match="99"):
        modbus_simulator.refuse(1, exception=99)
    with pytest.raises(ConfigurationError, match="'hr:600'"):
        modbus_simulator.set_value("hr:600", 1)  # no such register
    with pytest.raises(ConfigurationError, match="'hr:400:int16'"):
        modbus_simulator.set_value("hr:400:int16", 1 << 20)  # does not fit


# -- the OPC UA simulator ---------------------------------------------------------------------------
def test_opcua_simulator_refuse_and_freeze(opcua_simulator: Any) -> None:
    from data_reader.opcua import OpcUaDataReader

    sim = opcua_simulator
    variables = [
        Variable(1, sim.address("Static.Double"), "float", "opcua"),
        Variable(2, sim.address("Sim.Counter"), "int", "opcua"),
    ]
    reader = OpcUaDataReader(sim.endpoint, timeout_s=1.0)
    try:
        reader.open()
        wait_for(lambda: _read(reader, variables)[1] == (Quality.GOOD, 3.25, None), 15, "first read")
        sim.refuse("Static.Double")
        got = _read(reader, variables)
        assert got[1][0] is Quality.BAD and "BadOutOfService" in (got[1][2] or ""), got
        assert got[2][0] is Quality.GOOD
        with pytest.raises(ConfigurationError, match="GoodEnough"):
            sim.refuse("Static.Double", status="GoodEnough")
        sim.clear_faults()
        assert _read(reader, variables)[1] == (Quality.GOOD, 3.25, None)
        sim.freeze()
        started = time.monotonic()
        got = _read(reader, variables)
        assert all(q is Quality.BAD and e for q, _v, e in got.values()), got
        assert time.monotonic() - started < 10
        sim.thaw()
        wait_for(lambda: _read(reader, variables)[1] == (Quality.GOOD, 3.25, None), 30, "thawed")
    finally:
        reader.close()


# -- the fault proxy fixture -------------------------------------------------------------------------
def test_fault_proxy_fixture_in_front_of_a_simulator(
    modbus_simulator: Any, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(*modbus_simulator.address)
    reader = _modbus(proxy.port, timeout_s=0.5)
    variables = [Variable(1, "hr:120", "int", "modbus")]
    try:
        assert _read(reader, variables)[1] == (Quality.GOOD, 54321, None)
        proxy.cut()
        assert _read(reader, variables)[1][0] is Quality.BAD
        proxy.restore()
        wait_for(lambda: _read(reader, variables)[1][0] is Quality.GOOD, 10, "reconnected")
        assert proxy.stats().resets >= 1
    finally:
        reader.close()
    with pytest.raises(ConfigurationError, match="70000"):
        fault_proxy("127.0.0.1", 70000)


# -- memory writer and collector factory ------------------------------------------------------------
def test_memory_writer_waits_and_reports_what_it_got(
    collector_factory: CollectorFactory, memory_writer: MemoryWriter
) -> None:
    collector = collector_factory([RandomDataReader()])
    collector.start(
        DataCollectionContext(1, [Variable(1, "counter", "int", "random", 20)], min_interval_ms=10)
    )
    got = memory_writer.wait_for_samples(5, timeout=10, context_id=1, variable_id=1)
    assert len(got) >= 5 and all(s.quality is Quality.GOOD for s in got)
    memory_writer.wait_for_event("started", 1)
    with pytest.raises(AssertionError, match=r"timed out after 0\.1 s waiting for 5 samples of context 2"):
        memory_writer.wait_for_samples(5, timeout=0.1, context_id=2)
    with pytest.raises(ConfigurationError):
        memory_writer.wait_for_samples(-1)
    collector.stop(1)
    memory_writer.wait_for_event("stopped", 1, timeout=5)
    assert memory_writer.events[0] == ("started", 1) and memory_writer.events[-1] == ("stopped", 1)


def test_a_transient_failure_of_the_memory_writer_is_retried_and_loses_nothing(
    collector_factory: CollectorFactory, memory_writer: MemoryWriter
) -> None:
    collector = collector_factory([RandomDataReader()], write_retry_s=0.1)
    collector.start(
        DataCollectionContext(1, [Variable(1, "counter", "int", "random", 20)], min_interval_ms=10)
    )
    memory_writer.wait_for_samples(3, timeout=10)
    memory_writer.fail_with(ConnectionRefusedError("store down"))
    wait_for(lambda: memory_writer.failed_writes >= 2, 10, "failed writes")
    memory_writer.fail_with(None)
    collector.stop(1)
    stats = collector.stats().writers["memory"]
    assert stats.write_errors >= 2 and stats.samples_written == memory_writer.count()
    assert_nothing_lost(collector)


def test_the_factory_reports_lost_samples_unless_allowed() -> None:
    failing = MemoryWriter(name="failing")
    failing.fail_with(ValueError("refused"))  # permanent: every batch lost
    factory = CollectorFactory([failing])
    collector = factory([RandomDataReader()])
    collector.start(
        DataCollectionContext(1, [Variable(1, "counter", "int", "random", 20)], min_interval_ms=10)
    )
    wait_for(lambda: collector.stats().writers["failing"].lost_samples >= 2, 10, "lost samples")
    problems = factory.close_all()
    assert len(problems) == 1 and "writer failing:" in problems[0] and "lost" in problems[0], problems
    with pytest.raises(AssertionError, match="samples went missing: writer failing"):
        assert_nothing_lost(collector)
    allowed = CollectorFactory([failing])
    collector = allowed([RandomDataReader()], allow_loss=True)
    collector.start(
        DataCollectionContext(1, [Variable(1, "counter", "int", "random", 20)], min_interval_ms=10)
    )
    wait_for(lambda: collector.stats().writers["failing"].lost_samples >= 1, 10, "lost samples")
    assert allowed.close_all() == []


def test_the_accounting_check_sees_unwritten_samples() -> None:
    class Stuck(DataWriter):
        def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
            time.sleep(1.5)

    collector = DataCollector(LOG, [RandomDataReader()], [Stuck()], drain_timeout_s=0.2)
    collector.start(
        DataCollectionContext(1, [Variable(1, "counter", "int", "random", 10)], min_interval_ms=10)
    )
    wait_for(lambda: collector.stats().writers["Stuck"].samples_delivered >= 5, 10, "queued samples")
    collector.close()
    with pytest.raises(AssertionError, match="unwritten"):
        assert_nothing_lost(collector)


def test_wait_for_and_free_port() -> None:
    port = free_port()
    assert 0 < port < 65536
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for never"):
        wait_for(lambda: False, 0.05, "never")
    with pytest.raises(ConfigurationError):
        wait_for(lambda: True, -1)


# -- the contract checks can fail (in-process; the subprocess tests break a whole plugin) ------------
class _Stamping(RandomDataReader):
    """Stamps every read with one fixed time: every boundary after the first looks like a repeat."""

    def read(self, variables: CollectedVariables) -> None:
        super().read(variables)
        for item in variables:
            item.read_at = datetime(2024, 1, 1, tzinfo=UTC)


class _Picky(RandomDataReader):
    def validate_variable(self, variable: Variable) -> None:
        if variable.address == "nope":
            raise ValueError("not for me")  # not a ConfigurationError
        super().validate_variable(variable)


class _Mute(RandomDataReader):
    def read(self, variables: CollectedVariables) -> None:
        super().read(variables)
        for item in variables:
            if item.variable.address.startswith("bad"):
                item.quality, item.error = Quality.BAD, None  # BAD without a reason


def _reader_contract(reader: Callable[[], Any]) -> ReaderContract:
    class Contract(ReaderContract):
        def make_reader(self) -> Any:
            return reader()

        def make_variables(self) -> list[Variable]:
            return [Variable(1, "counter", "int", "random", 50)]

        def invalid_variables(self) -> list[Variable]:
            return [Variable(9, "nope", "int", "random")]

        def unreadable_variables(self) -> list[Variable]:
            return [Variable(8, "bad:x", "int", "random")]

    return Contract()


def test_the_reader_checks_name_the_rule_they_find_broken() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"broken rule reader\.one-sample-per-boundary"):
        _reader_contract(_Stamping).test_every_due_variable_gets_one_sample_per_boundary()
    with pytest.raises(
        pytest.fail.Exception, match=r"(?s)broken rule reader\.validate-variable .*raised ValueError"
    ):
        _reader_contract(_Picky).test_validate_variable_rejects_bad_variables_with_configuration_error()
    with pytest.raises(pytest.fail.Exception, match=r"broken rule reader\.bad-has-a-reason"):
        _reader_contract(_Mute).test_unreadable_variables_are_bad_with_a_reason()
    _reader_contract(RandomDataReader).test_unreadable_variables_are_bad_with_a_reason()  # the control


class _Doubling(MemoryWriter):
    """Stores every batch twice (a retry that duplicates)."""

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        super().write(context, variables)
        if context.id == 11:
            super().write(context, variables)


def test_the_writer_checks_name_the_rule_they_find_broken() -> None:
    store: list[MemoryWriter] = []

    def contract(cls: type[MemoryWriter]) -> WriterContract:
        class Contract(WriterContract):
            def make_writer(self) -> DataWriter:
                store.append(cls())
                return store[-1]

            def read_back(self, context_id: int) -> list[StoredSample]:
                return [
                    StoredSample(s.context_id, s.variable_id, s.read_at, s.value, s.quality, s.error)
                    for w in store
                    for s in w.of(context_id)
                ]

        return Contract()

    with pytest.raises(
        pytest.fail.Exception, match=r"(?s)broken rule writer\.round-trip .* stored more than once"
    ):
        contract(_Doubling).test_round_trip_of_every_type_and_quality()
    store.clear()
    contract(MemoryWriter).test_round_trip_of_every_type_and_quality()  # the control
