"""Private helpers of :mod:`data_reader.opcua_data_reader` (no public API here).

- :mod:`._address`: NodeId address parsing and namespace resolution;
- :mod:`._convert`: OPC UA values and status codes to the collector's values and qualities;
- :mod:`._loop`: the reader's own thread running the asyncio event loop;
- :mod:`._link`: the asyncua session (connect, reconnect, polled reads, subscriptions, writes).
"""
