"""Modbus TCP plugin: the ``modbus`` reader (extra ``modbus``) and its simulator.

- :mod:`data_reader.modbus.reader` — ``ModbusDataReader`` (address grammar and options there and
  in this folder's ``README.md``); ``sample.toml`` here is a configuration that validates.
- :mod:`data_reader.modbus.simulator` — ``ModbusSimulator``, a pymodbus server with live signals
  (``python -m data_reader.modbus.simulator --port 5020``).
- ``_address``, ``_plan``, ``_client``: private helpers (address grammar and conversions, request
  planning, the TCP client).

Registered as reader type ``modbus`` through the entry point in the project's ``pyproject.toml``.
"""

from .reader import ModbusDataReader, ModbusReaderStats

__all__ = ["ModbusDataReader", "ModbusReaderStats"]
