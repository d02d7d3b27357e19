"""Readers: the :class:`DataReader` base class and the shipped readers.

Shipped readers live in their own modules:

- :mod:`data_reader.random_data_reader` — ``RandomDataReader`` (reader_type ``"random"``), no device.
- :mod:`data_reader.modbus_data_reader` — ``ModbusDataReader`` (pymodbus, extra ``modbus``).
- :mod:`data_reader.opcua_data_reader` — ``OpcUaDataReader`` (asyncua, extra ``opcua``).
"""

from data_collector._reader import DataReader

__all__ = ["DataReader"]
