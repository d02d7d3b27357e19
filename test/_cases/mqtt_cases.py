"""Contract cases of the MQTT writer, and a real subscriber to read what it published.

The broker comes from ``DC_TEST_MQTT_URL`` (default ``mqtt://127.0.0.1:1883``, the local
Mosquitto); a case skips when it is unreachable or refuses anonymous clients unless
``DC_REQUIRE_SERVICES=1``. Every store uses its own topic prefix (or Sparkplug group id), so
parallel runs do not see each other's messages, and retained messages it caused are cleared on
exit.

Reading back: a :class:`Subscriber` (paho-mqtt, QoS 1) subscribed before the writer publishes
records every message in arrival order; :meth:`Subscriber.flush` publishes a marker and waits
for it, so everything the broker acknowledged before the call has arrived.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from data_collector import DataWriter, Quality

from . import StoredSample, WriterCase, WriterHarness, require_login, require_service

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MQTT_URL = os.environ.get("DC_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def broker() -> tuple[str, int]:
    """(host, port) of the test broker."""
    parts = urlsplit(MQTT_URL)
    return parts.hostname or "127.0.0.1", parts.port or 1883


def require_broker() -> tuple[str, int]:
    """(host, port) of the test broker; skip (or fail under DC_REQUIRE_SERVICES=1) when it does
    not answer, or when paho-mqtt is not installed."""
    pytest.importorskip(
        "paho.mqtt", reason='the MQTT writer needs paho-mqtt: pip install "data-collector[mqtt]"'
    )
    pytest.importorskip(
        "google.protobuf", reason='Sparkplug B needs protobuf: pip install "data-collector[mqtt]"'
    )
    host, port = broker()
    require_service(host, port, "MQTT broker")
    require_login(f"mqtt://{host}:{port}", lambda: login_refused(host, port))
    return host, port


def login_refused(
    host: str, port: int, username: str | None = None, password: str | None = None
) -> str | None:
    """Why the broker at ``host:port`` refuses a client (anonymous, as the tests connect, unless
    ``username`` is given): its CONNACK reason, or None when it accepts. No CONNACK within 10 s
    is a failure (raised), not a skip."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    answered = threading.Event()
    reason: list[Any] = []

    def on_connect(_c: Any, _u: Any, _flags: Any, code: Any, _props: Any = None) -> None:
        reason.append(code)
        answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dctest-probe-{uuid.uuid4().hex[:10]}")
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.connect(host, port, keepalive=10)
    client.loop_start()
    try:
        if not answered.wait(10):
            raise AssertionError(f"the MQTT broker at {host}:{port} sent no CONNACK within 10 s")
    finally:
        client.disconnect()
        client.loop_stop()
    code = reason[0]
    if not code.is_failure:
        return None
    if str(code) not in ("Bad user name or password", "Not authorized") and code.value not in (
        4,
        5,
        0x86,
        0x87,
    ):
        raise AssertionError(f"the MQTT broker at {host}:{port} refused the test client: {code}")
    who = f"user {username!r}" if username is not None else "anonymous clients"
    return (
        f"MQTT broker at {host}:{port} refuses {who} ({code}); the MQTT tests need one that accepts "
        "anonymous clients (set DC_TEST_MQTT_URL to another broker)"
    )


def unique_prefix() -> str:
    return f"dctest-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """A real paho-mqtt subscriber (QoS 1) recording every message, in arrival order."""

    def __init__(self, filters: list[str], host: str | None = None, port: int | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        default_host, default_port = broker()
        self.host, self.port = host or default_host, port or default_port
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._marker_topic = f"dctest-marker/{uuid.uuid4().hex}"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"dctest-sub-{uuid.uuid4().hex[:10]}"
        )
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self._client.subscribe([(f, 1) for f in [*filters, self._marker_topic]])
        if not subscribed.wait(10):
            self.close()
            raise AssertionError("the test subscriber got no SUBACK")
        self._markers_seen: set[str] = set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cond:
            if msg.topic == self._marker_topic:
                self._markers_seen.add(bytes(msg.payload).decode())
            else:
                self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def flush(self, timeout: float = 20.0) -> list[Received]:
        """Every message that reached the broker before this call (and maybe more), in order."""
        token = uuid.uuid4().hex
        self._client.publish(self._marker_topic, token, qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._markers_seen, timeout):
                raise AssertionError(f"the test subscriber's marker did not come back within {timeout} s")
            return list(self.messages)

    def wait(self, predicate: Any, timeout: float = 20.0, what: str = "messages") -> list[Received]:
        """Wait until ``predicate(messages)`` holds; the messages then."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(list(self.messages)), timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            return list(self.messages)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def clear_retained(self) -> None:
        """Remove the retained messages this subscriber saw (an empty retained message each)."""
        for topic in sorted({m.topic for m in list(self.messages) if m.payload}):
            self._client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# -- decoding what the writer published ------------------------------------------------------------------
def _typed(value: Any, value_type: str) -> Any:
    if value is None:
        return None
    if value_type == "float" and isinstance(value, str):
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[value]
    return value


def json_samples(messages: list[Received]) -> list[dict[str, Any]]:
    """Every sample object of the JSON data messages, in arrival order (batches expanded)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if not m.payload:
            continue
        doc = json.loads(m.payload)
        if "event" in doc:
            continue
        if "samples" in doc:
            for s in doc["samples"]:
                out.append({"context_id": doc["context_id"], "collector": doc["collector"], **s})
        else:
            out.append(doc)
    return out


def json_stored(doc: dict[str, Any]) -> StoredSample:
    return StoredSample(
        doc["context_id"],
        doc["variable_id"],
        datetime.fromisoformat(doc["read_at"]),
        _typed(doc["value"], doc["value_type"]),
        Quality(doc["quality"]),
        doc["error"],
    )


@dataclass
class SpbMetric:
    context_id: int
    variable_id: int
    name: str
    datatype: int


class SparkplugView:
    """Sparkplug B messages decoded with the protobuf schema, births tracked to resolve aliases."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id

    def decode(self, messages: list[Received]) -> list[tuple[str, list[str], Any]]:
        """(message type, topic levels after the type, decoded payload) of every message."""
        from data_writer.mqtt.sparkplug import decode

        out = []
        for m in messages:
            levels = m.topic.split("/")
            if levels[0] != "spBv1.0" or levels[1] != self.group_id or not m.payload:
                continue
            out.append((levels[2], levels[3:], decode(m.payload)))
        return out

    def samples(self, messages: list[Received]) -> list[tuple[StoredSample, Any]]:
        """(sample, its metric) of every DDATA metric, in arrival order, typed by its birth."""
        from data_writer.mqtt.sparkplug import QUALITY_CODES, value_of

        by_code = {code: Quality(name) for name, code in QUALITY_CODES.items()}
        births: dict[tuple[str, str, int], SpbMetric] = {}
        out = []
        for kind, rest, payload in self.decode(messages):
            if kind == "DBIRTH":
                for metric in payload.metrics:
                    props = dict(zip(metric.properties.keys, metric.properties.values, strict=True))
                    vid = props["variable_id"].long_value
                    vid = vid - (1 << 64) if vid >= 1 << 63 else vid
                    context_id = int(rest[1].removeprefix("context-"))
                    births[(rest[0], rest[1], metric.alias)] = SpbMetric(
                        context_id, vid, metric.name, metric.datatype
                    )
            elif kind == "DDATA":
                for metric in payload.metrics:
                    born = births[(rest[0], rest[1], metric.alias)]
                    props = dict(zip(metric.properties.keys, metric.properties.values, strict=True))
                    quality = by_code[props["Quality"].int_value] if "Quality" in props else Quality.GOOD
                    error = props["Error"].string_value if "Error" in props else None
                    read_at = _EPOCH + timedelta(milliseconds=metric.timestamp)
                    out.append(
                        (
                            StoredSample(
                                born.context_id,
                                born.variable_id,
                                read_at,
                                value_of(metric, born.datatype),
                                quality,
                                error,
                            ),
                            metric,
                        )
                    )
        return out


# -- contract cases ----------------------------------------------------------------------------------------
class _JsonHarness(WriterHarness):
    def __init__(self, message: str) -> None:
        self.host, self.port = require_broker()
        self.prefix = unique_prefix()
        self.message = message
        self.sub = Subscriber([f"{self.prefix}/#"])

    def new_writer(self) -> DataWriter:
        from data_writer.mqtt import MqttDataWriter

        topic = "{context_id}/{variable_id}" if self.message == "sample" else "{context_id}/batch"
        return MqttDataWriter(
            self.host,
            self.port,
            topic=f"{self.prefix}/{topic}",
            message=self.message,  # type: ignore[arg-type]
            context_topic=f"{self.prefix}/{{context_id}}/context",
        )

    def read_back(self, context_id: int) -> list[StoredSample]:
        return [json_stored(d) for d in json_samples(self.sub.flush()) if d["context_id"] == context_id]

    def read_contexts(self) -> dict[int, list[dict[str, Any]]] | None:
        runs: dict[int, list[dict[str, Any]]] = {}
        for m in self.sub.flush():
            doc = json.loads(m.payload) if m.payload else {}
            if doc.get("event") != "stopped":
                continue
            runs.setdefault(doc["context_id"], []).append(
                {
                    "start": datetime.fromisoformat(doc["start"]),
                    "end": datetime.fromisoformat(doc["end"]),
                    "metadata": doc["metadata"],
                }
            )
        return runs

    def close(self) -> None:
        self.sub.flush()
        self.sub.clear_retained()
        self.sub.close()


class _SparkplugHarness(WriterHarness):
    def __init__(self) -> None:
        self.host, self.port = require_broker()
        self.group = unique_prefix()
        self.view = SparkplugView(self.group)
        self.sub = Subscriber([f"spBv1.0/{self.group}/#"])

    def new_writer(self) -> DataWriter:
        from data_writer.mqtt import MqttDataWriter

        return MqttDataWriter(
            self.host, self.port, payload="sparkplug_b", group_id=self.group, edge_node_id="node-1"
        )

    def read_back(self, context_id: int) -> list[StoredSample]:
        return [s for s, _m in self.view.samples(self.sub.flush()) if s.context_id == context_id]

    def close(self) -> None:
        self.sub.close()


def _json_case(message: str) -> WriterCase:
    @contextmanager
    def make(_tmp: Path) -> Iterator[WriterHarness]:
        h = _JsonHarness(message)
        try:
            yield h
        finally:
            h.close()

    return WriterCase(f"mqtt-json-{message}", make)


@contextmanager
def _sparkplug(_tmp: Path) -> Iterator[WriterHarness]:
    h = _SparkplugHarness()
    try:
        yield h
    finally:
        h.close()


WRITER_CASES = [_json_case("sample"), _json_case("batch"), WriterCase("mqtt-sparkplug", _sparkplug)]
