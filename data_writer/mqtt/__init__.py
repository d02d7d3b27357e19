"""MQTT plugin: the ``mqtt`` writer, publishing samples as JSON or Sparkplug B (extra ``mqtt``).

Code in :mod:`data_writer.mqtt.writer` (options, lifecycle), ``_json`` (JSON payloads), ``_spb``
(the Sparkplug B edge node), ``_link`` (connection, acknowledgements, reconnecting) and
:mod:`data_writer.mqtt.sparkplug` (the Sparkplug B protobuf schema, to decode its payloads);
topics, payload schemas, options and guarantees in this folder's ``README.md``; ``sample.toml``
is a configuration that validates. Registered as writer type ``mqtt`` through the entry point in
the project's ``pyproject.toml``.
"""

from ._json import message_id
from .writer import MqttDataWriter, MqttWriteError

__all__ = ["MqttDataWriter", "MqttWriteError", "message_id"]
