"""The reader and a writer in a running DataCollector, with the testing kit's fixtures."""

from __future__ import annotations

import pytest
from tank_plugin import TankReader

from data_collector import DataCollectionContext, Quality, Variable
from data_collector.testing import CollectorFactory, MemoryWriter
from data_reader.modbus.simulator import ModbusSimulator


def test_levels_are_collected_every_100_ms(
    modbus_simulator: ModbusSimulator, collector_factory: CollectorFactory, memory_writer: MemoryWriter
) -> None:
    modbus_simulator.set_value("hr:400:float32", 42.0)
    collector = collector_factory([TankReader("127.0.0.1", modbus_simulator.port)])
    collector.start(DataCollectionContext(1, [Variable(1, "level:400", "float", "tank", 100)]))
    samples = memory_writer.wait_for_samples(5, timeout=10, variable_id=1)
    assert {s.value for s in samples} == {42.0}
    # collector_factory closes the collector after the test and fails it if a sample was lost


@pytest.mark.modbus_simulator(unit_ids=[1, 2])
def test_a_dropped_unit_reads_bad_the_other_stays_good(
    modbus_simulator: ModbusSimulator, collector_factory: CollectorFactory, memory_writer: MemoryWriter
) -> None:
    modbus_simulator.drop_unit(2)  # unit 2 stops answering; unit 1 goes on
    one = TankReader("127.0.0.1", modbus_simulator.port, unit=1, reader_type="tank1")
    two = TankReader("127.0.0.1", modbus_simulator.port, unit=2, reader_type="tank2", timeout_s=0.3)
    collector = collector_factory([one, two])
    collector.start(
        DataCollectionContext(
            1, [Variable(1, "count:120", "int", "tank1", 200), Variable(2, "count:120", "int", "tank2", 200)]
        )
    )
    memory_writer.wait_for_each([1, 2], 3, timeout=10)
    assert all(s.quality is Quality.GOOD for s in memory_writer.of(1, 1))
    assert all(s.quality is Quality.BAD and s.error for s in memory_writer.of(1, 2))
