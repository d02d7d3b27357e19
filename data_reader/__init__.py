"""Readers: the :class:`DataReader` base class and the shipped reader plugins, one folder each.

- :mod:`data_reader.random` — ``RandomDataReader`` (reader_type ``"random"``), no device.
- :mod:`data_reader.modbus` — ``ModbusDataReader``; ``simulator.ModbusSimulator`` (extra ``modbus``).
- :mod:`data_reader.opcua` — ``OpcUaDataReader``; ``simulator.OpcUaSimulator`` (extra ``opcua``).

Each folder holds its code, a ``README.md`` (address grammar, option table, example) and a
``sample.toml`` that ``data-collector validate`` accepts. The old module paths
(``data_reader.modbus_data_reader``, ``data_reader.modbus_simulator``, ...) re-export the new ones.
"""

from data_collector import DataReader

__all__ = ["DataReader"]
