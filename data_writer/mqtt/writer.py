"""MQTT writer: publishes samples to an MQTT broker as JSON or as Sparkplug B (paho-mqtt 2.x).

Serves plant software that takes its data from a broker (Node-RED, Telegraf, historians, Ignition
and other SCADA through Sparkplug B). Payloads and topics are described in ``README.md`` beside
this module; JSON encoding in :mod:`._json`, the Sparkplug edge node in :mod:`._spb`, the
connection in :mod:`._link`.

Delivery: a ``write()`` returns once the broker acknowledged every message of the batch (QoS 1:
PUBACK, QoS 2: PUBCOMP) or, with QoS 0, once paho handed every message to the socket. A lost
connection, or no acknowledgement for ``timeout_s``, raises a transient :class:`MqttWriteError`:
the collector retries the batch (spooling meanwhile when it has a spool) while the writer
reconnects in the background with capped backoff. A batch retried after a partial success is
published again in full, so delivery is at least once; every JSON sample carries an ``id``
(context, variable, read time) and every Sparkplug metric its device, alias and timestamp, by
which consumers de-duplicate.

Example::

    import logging, time
    from data_collector import DataCollectionContext, DataCollector, Variable
    from data_reader.random import RandomDataReader
    from data_writer.mqtt import MqttDataWriter

    writer = MqttDataWriter("127.0.0.1", topic="plant/{context_id}/{variable_id}")
    with DataCollector(logging.getLogger("mqtt"), [RandomDataReader()], [writer]) as c:
        c.start(DataCollectionContext(7, [Variable(1, "sine", "float", "random", 200)], duration_s=2))
        time.sleep(2.5)
"""

from __future__ import annotations

import math
import os
import socket
import string
import uuid
from typing import Any, Literal

import paho.mqtt.client as mqtt

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataWriter,
)

from ._json import JsonCodec
from ._link import Link, MqttWriteError, Options, Will
from ._spb import SparkplugNode

__all__ = ["MqttDataWriter", "MqttWriteError"]

#: The fields each template may hold.
SAMPLE_FIELDS = ("context_id", "variable_id", "address", "reader_type", "value_type", "client_id")
CONTEXT_FIELDS = ("context_id", "client_id")
METRIC_FIELDS = ("context_id", "variable_id", "address", "reader_type", "value_type")
DEVICE_FIELDS = ("context_id",)

_DEFAULT_TOPIC = {
    "sample": "data-collector/{context_id}/{variable_id}",
    "batch": "data-collector/{context_id}",
}
_DEFAULT_CONTEXT_TOPIC = "data-collector/{context_id}/context"
_INT_FIELDS = ("context_id", "variable_id")


def _fail(message: str) -> ConfigurationError:
    return ConfigurationError(f"MqttDataWriter: {message}")


def _check_template(option: str, template: object, allowed: tuple[str, ...], *, topic: bool) -> str:
    """``template`` if it is a str.format template using only ``allowed`` fields (and, for a
    topic, no wildcard and no leading ``$``), else :class:`ConfigurationError` naming it."""
    if not isinstance(template, str) or not template.strip():
        raise _fail(f"{option} must be a non-empty string, got {template!r}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise _fail(f"{option} {template!r} is not a valid template: {exc}") from None
    literal = ""
    for text, field, _spec, _conv in parsed:
        literal += text
        if field is None:
            continue
        if field not in allowed:
            raise _fail(
                f"{option} {template!r} holds the unknown field {{{field}}} (fields: "
                + ", ".join(f"{{{f}}}" for f in allowed)
                + ")"
            )
    sample = {f: (-12 if f in _INT_FIELDS else "x") for f in allowed}
    try:
        template.format(**sample)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise _fail(f"{option} {template!r} cannot be formatted: {exc}") from None
    if topic:
        if "+" in literal or "#" in literal:
            raise _fail(f"{option} {template!r} holds an MQTT wildcard (+ or #), which a topic name cannot")
        if "\0" in template:
            raise _fail(f"{option} {template!r} holds a NUL character")
        if template.startswith("$"):
            raise _fail(f"{option} {template!r} starts with $ (topics reserved to the broker)")
    return template


def _check_spb_id(option: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{option} must be a non-empty string with payload = 'sparkplug_b', got {value!r}")
    bad = [c for c in "/+#\0" if c in value]
    if bad:
        raise _fail(
            f"{option} {value!r} must not contain {' '.join(bad)} (a Sparkplug id is one topic level)"
        )
    return value


def _check_number(option: str, value: object, low: float, high: float, *, integer: bool = False) -> Any:
    kind = "an int" if integer else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
    ):
        raise _fail(f"{option} must be {kind}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(f"{option} must be finite, got {value!r}")
    if not low <= value <= high:
        raise _fail(f"{option} must be from {low:g} to {high:g}, got {value!r}")
    return value


def _check_file(option: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise _fail(f"{option} must be a file path, got {value!r}")
    path = os.fspath(value)
    if not isinstance(path, str) or not os.path.isfile(path):
        raise _fail(f"{option} {path!r} is not a file")
    return path


def _check_optional_text(option: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _fail(f"{option} must be a string, got {type(value).__name__}")
    return value


class MqttDataWriter(DataWriter):
    """Publishes every sample to an MQTT broker as JSON or Sparkplug B; see the module docstring
    and ``data_writer/mqtt/README.md`` for the options and payloads."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        payload: Literal["json", "sparkplug_b"] = "json",
        topic: str | None = None,
        message: Literal["sample", "batch"] = "sample",
        retain: bool = False,
        context_topic: str | None = None,
        group_id: str | None = None,
        edge_node_id: str | None = None,
        device_id: str = "context-{context_id}",
        metric_name: str = "{reader_type}/{address}",
        qos: int = 1,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        tls_insecure: bool = False,
        keepalive_s: int = 60,
        clean_session: bool = True,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        reconnect_max_s: float = 30.0,
        max_inflight: int = 100,
        max_batch_samples: int = 10_000,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host):
            raise _fail(f"host must be a host name or address, got {host!r}")
        if payload not in ("json", "sparkplug_b"):
            raise _fail(f"payload must be 'json' or 'sparkplug_b', got {payload!r}")
        if message not in ("sample", "batch"):
            raise _fail(f"message must be 'sample' or 'batch', got {message!r}")
        for option, flag in (
            ("retain", retain),
            ("tls", tls),
            ("tls_insecure", tls_insecure),
            ("clean_session", clean_session),
        ):
            if not isinstance(flag, bool):
                raise _fail(f"{option} must be true or false, got {flag!r}")
        if isinstance(qos, bool) or qos not in (0, 1, 2):
            raise _fail(f"qos must be 0, 1 or 2, got {qos!r}")
        ca = _check_file("ca_file", ca_file)
        cert = _check_file("cert_file", cert_file)
        key = _check_file("key_file", key_file)
        if key is not None and cert is None:
            raise _fail("key_file needs cert_file (the client certificate)")
        use_tls = tls or ca is not None or cert is not None
        if tls_insecure and not use_tls:
            raise _fail("tls_insecure needs TLS (tls = true or a ca_file/cert_file)")
        if port is None:
            port = 8883 if use_tls else 1883
        _check_number("port", port, 1, 65535, integer=True)
        _check_number("keepalive_s", keepalive_s, 0, 65535, integer=True)
        _check_number("timeout_s", timeout_s, 0.01, 86400)
        _check_number("connect_timeout_s", connect_timeout_s, 0.01, 3600)
        _check_number("reconnect_max_s", reconnect_max_s, 0.25, 3600)
        _check_number("max_inflight", max_inflight, 1, 65535, integer=True)
        _check_number("max_batch_samples", max_batch_samples, 1, 1_000_000, integer=True)
        username = _check_optional_text("username", username)
        password = _check_optional_text("password", password)
        if password is not None and username is None:
            raise _fail("password needs username")
        if client_id is not None and (not isinstance(client_id, str) or not client_id or "\0" in client_id):
            raise _fail(f"client_id must be a non-empty string, got {client_id!r}")

        self.payload = payload
        self.qos = qos
        self.retain = retain
        self._json: JsonCodec | None = None
        self._spb: SparkplugNode | None = None
        if payload == "json":
            for option, value in (("group_id", group_id), ("edge_node_id", edge_node_id)):
                if value is not None:
                    raise _fail(f"{option} applies to payload = 'sparkplug_b' only (payload is 'json')")
            allowed = SAMPLE_FIELDS if message == "sample" else CONTEXT_FIELDS
            data_topic = _check_template(
                "topic", _DEFAULT_TOPIC[message] if topic is None else topic, allowed, topic=True
            )
            ctx_topic = _DEFAULT_CONTEXT_TOPIC if context_topic is None else context_topic
            if ctx_topic != "":
                _check_template("context_topic", ctx_topic, CONTEXT_FIELDS, topic=True)
            if client_id is None:
                if not clean_session:
                    raise _fail("clean_session = false needs a client_id (the session's name on the broker)")
                client_id = f"data-collector-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            self._json = JsonCodec(
                topic=data_topic,
                batch=message == "batch",
                context_topic=ctx_topic,
                client_id=client_id,
                max_batch_samples=max_batch_samples,
            )
            what = data_topic
        else:
            json_only = {
                "topic": topic is not None,
                "context_topic": context_topic is not None,
                "message": message != "sample",
                "retain": retain,
            }
            for option, given in json_only.items():
                if given:
                    raise _fail(f"{option} applies to payload = 'json' only (Sparkplug B has its own topics)")
            group = _check_spb_id("group_id", group_id)
            node = _check_spb_id("edge_node_id", edge_node_id)
            _check_template("device_id", device_id, DEVICE_FIELDS, topic=True)
            if "/" in device_id:
                raise _fail(f"device_id {device_id!r} must not contain / (a Sparkplug id is one topic level)")
            _check_template("metric_name", metric_name, METRIC_FIELDS, topic=False)
            if client_id is None:
                client_id = f"data-collector-{group}-{node}"
            self._spb = SparkplugNode(
                group_id=group,
                edge_node_id=node,
                device_id=device_id,
                metric_name=metric_name,
                qos=qos,
                max_batch_samples=max_batch_samples,
            )
            what = f"spBv1.0/{group}/{node}"
        self.client_id = client_id
        self._options = Options(
            host=host,
            port=port,
            client_id=client_id,
            username=username,
            password=password,
            tls=use_tls,
            ca_file=ca,
            cert_file=cert,
            key_file=key,
            tls_insecure=tls_insecure,
            keepalive_s=keepalive_s,
            clean_session=clean_session,
            timeout_s=float(timeout_s),
            connect_timeout_s=float(connect_timeout_s),
            reconnect_max_s=float(reconnect_max_s),
            max_inflight=max_inflight,
        )
        self._what = what
        self._link: Link | None = None
        self._past_connections = 0  # of links already closed

    # -- identity --------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._options.host

    @property
    def port(self) -> int:
        return self._options.port

    @property
    def name(self) -> str:
        name: str | None = self.__dict__.get("_dc_name")
        if name is not None:
            return name
        return f"MqttDataWriter({self.payload} {self.host}:{self.port} {self._what})"

    def __repr__(self) -> str:
        o = self._options
        user = f", username={o.username!r}" if o.username is not None else ""
        return (
            f"MqttDataWriter(host={o.host!r}, port={o.port}, payload={self.payload!r}, "
            f"{'topic' if self.payload == 'json' else 'node'}={self._what!r}, qos={self.qos}, "
            f"client_id={o.client_id!r}{user}{', tls=True' if o.tls else ''})"
        )

    @property
    def connections(self) -> int:
        """How many connections the broker accepted so far (1 after ``open()``, +1 per reconnect)."""
        link = self._link
        return self._past_connections + (0 if link is None else link.connections)

    @property
    def connected(self) -> bool:
        """Whether the writer is connected to the broker now."""
        return self._link is not None and self._link.online

    @property
    def bd_seq(self) -> int | None:
        """Sparkplug: the bdSeq of the current connection (None for JSON)."""
        return None if self._spb is None else self._spb.bd_seq

    # -- DataWriter ------------------------------------------------------------------------------
    def open(self) -> None:
        with self.lock:
            if self._link is not None:
                return
            link = Link(self._options, _Hooks(self), self.name)
            link.start()
            self._link = link

    def close(self) -> None:
        with self.lock:
            link, self._link = self._link, None
            if link is None:
                return
            self._past_connections += link.connections
            link.stop(self._spb.last_words if self._spb is not None else None)

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, MqttWriteError):
            return exc.transient
        return super().is_transient(exc)

    def _link_or_raise(self) -> Link:
        link = self._link
        if link is None:
            raise MqttWriteError("MqttDataWriter is not open (call open() first)", transient=False)
        return link

    def context_started(self, context: DataCollectionContext) -> None:
        with self.lock:
            link = self._link_or_raise()
            if self._spb is not None:
                self._spb.start_device(link, context)
                return
            assert self._json is not None
            event = self._json.context_message("started", context)
            if event is not None:
                link.send([(event[0], event[1], self.qos, True)])

    def context_stopped(self, context: DataCollectionContext) -> None:
        with self.lock:
            link = self._link_or_raise()
            if self._spb is not None:
                self._spb.stop_device(link, context)
                return
            assert self._json is not None
            event = self._json.context_message("stopped", context)
            if event is not None:
                link.send([(event[0], event[1], self.qos, True)])
            self._json.forget(context.id)

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        with self.lock:
            link = self._link_or_raise()
            if self._spb is not None:
                link.send(self._spb.data_messages(link, context, variables))
                return
            assert self._json is not None
            qos, retain = self.qos, self.retain
            link.send(
                (topic, data, qos, retain) for topic, data in self._json.messages(context.id, variables)
            )


class _Hooks:
    """The link's hooks, delegating to the writer's payload (no reference cycle through paho)."""

    def __init__(self, writer: MqttDataWriter) -> None:
        self._spb = writer._spb

    def will(self) -> Will | None:
        return None if self._spb is None else self._spb.will()

    def connected(self, link: Link, client: mqtt.Client) -> None:
        if self._spb is not None:
            self._spb.connected(link, client)

    def poked(self, link: Link, client: mqtt.Client) -> None:
        if self._spb is not None:
            self._spb.poked(link, client)

    def message(self, topic: str, payload: bytes) -> None:
        if self._spb is not None:
            self._spb.message(topic, payload)
