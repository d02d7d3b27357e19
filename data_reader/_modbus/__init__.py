"""Private helpers of :mod:`data_reader.modbus_data_reader` (no public API here).

- :mod:`._address`: the address grammar, data types, byte orders and value conversions;
- :mod:`._plan`: request planning (coalescing, hole bridging, remembered splits), pure code;
- :mod:`._client`: the synchronous pymodbus TCP client with its own connect.
"""
