"""OPC UA plugin: the ``opcua`` reader (extra ``opcua``) and its simulator.

- :mod:`data_reader.opcua.reader` — ``OpcUaDataReader`` (address grammar and options there and in
  this folder's ``README.md``); ``sample.toml`` here is a configuration that validates.
- :mod:`data_reader.opcua.options` — ``OpcUaConnection``, the connection and security options as
  one frozen object (``OpcUaDataReader(endpoint, connection=...)``; keywords work as well).
- :mod:`data_reader.opcua.simulator` — ``OpcUaSimulator``, an asyncua server with live variables
  (``python -m data_reader.opcua.simulator --port 4840``).
- ``_address``, ``_convert``, ``_loop``, ``_ua``: private helpers (NodeId parsing, value
  conversion, the reader's event-loop thread, asyncua's ``ua`` module typed ``Any``).
- ``_link`` (the asyncua session: connect, reconnect, read, write), ``_connection`` (how a
  connection is made and what its failures mean), ``_subscriptions`` (subscribe mode: monitored
  items, subscriptions and their retries).

Registered as reader type ``opcua`` through the entry point in the project's ``pyproject.toml``.
"""

from .options import OpcUaConnection
from .reader import OpcUaDataReader

__all__ = ["OpcUaConnection", "OpcUaDataReader"]
