"""The Sparkplug B edge node of the MQTT writer: births, deaths, sequence numbers, aliases, rebirth.

Mapping: the writer is one edge node (``group_id``/``edge_node_id``); each running collection
context is one device (``device_id`` template, default ``context-{context_id}``) whose metrics
are the context's variables. Per connection: the will is NDEATH with a new ``bdSeq`` (0-255,
+1 per CONNECT); once connected the node subscribes to its NCMD topic and publishes NBIRTH
(``seq`` 0, metrics ``bdSeq`` and ``Node Control/Rebirth``) and a DBIRTH per device (every
metric's name, alias, datatype, last value, and the properties ``variable_id``, ``address``,
``reader_type``, ``value_type``). Data go in DDATA messages by alias (``seq`` +1 per message,
wrapping 255 -> 0), each metric with its read time as ``timestamp``; a context's stop publishes
DDEATH. An NCMD ``Node Control/Rebirth`` = true makes the node publish its births again (same
``bdSeq``). State is guarded by the link's publish lock, so births and data are numbered in the
order they go on the wire.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt

from data_collector import CollectedVariables, DataCollectionContext, Quality, Variable

from ._link import Link, Message, Will
from .sparkplug import NAMESPACE, QUALITY_CODES, DataType, Payload, decode

__all__ = ["REBIRTH_METRIC", "SparkplugNode", "datatype_of"]

REBIRTH_METRIC = "Node Control/Rebirth"
BD_SEQ_METRIC = "bdSeq"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_U64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

_DATATYPES = {
    "float": DataType.Double,
    "int": DataType.Int64,
    "bool": DataType.Boolean,
    "str": DataType.String,
    "bytes": DataType.Bytes,
}


def datatype_of(value_type: str) -> DataType:
    """The Sparkplug datatype of a variable's ``value_type`` (String for types it does not know)."""
    return _DATATYPES.get(value_type, DataType.String)


def _ms(t: datetime | None) -> int:
    if t is None:
        return int(time.time() * 1000)
    if t.utcoffset() is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // _MS


def _set_value(metric: Any, datatype: DataType, value: Any) -> str | None:
    """Put ``value`` into ``metric`` as ``datatype``; the reason when it cannot be (then is_null)."""
    try:
        if datatype is DataType.Double:
            if isinstance(value, int | float) and not isinstance(value, bool):
                metric.double_value = float(value)
                return None
        elif datatype is DataType.Int64:
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            if isinstance(value, int):
                number = int(value)
                if _INT64_MIN <= number <= _INT64_MAX:
                    metric.long_value = number & _U64
                    return None
                return f"{number} does not fit a Sparkplug Int64"
        elif datatype is DataType.Boolean:
            if isinstance(value, bool | int):
                metric.boolean_value = bool(value)
                return None
        elif datatype is DataType.Bytes:
            if isinstance(value, bytes | bytearray | memoryview):
                metric.bytes_value = bytes(value)
                return None
            if isinstance(value, str):
                metric.bytes_value = value.encode("utf-8", "surrogateescape")
                return None
        else:
            metric.string_value = _utf8(value if isinstance(value, str) else str(value))
            return None
    except (TypeError, ValueError, OverflowError) as exc:
        return f"{type(value).__name__} value not encodable as {datatype.name}: {exc}"
    return f"{type(value).__name__} value {value!r:.60} is not a {datatype.name}"


def _property(props: Any, key: str, datatype: DataType, value: Any) -> None:
    props.keys.append(key)
    pv = props.values.add()
    pv.type = int(datatype)
    if datatype is DataType.Int32:
        pv.int_value = value & 0xFFFFFFFF
    elif datatype is DataType.Int64:
        pv.long_value = value & _U64
    else:
        pv.string_value = _utf8(value)


def _utf8(text: str) -> str:
    """``text`` if UTF-8 can encode it, else with its lone surrogates as backslash escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass
class _Metric:
    variable: Variable
    name: str
    alias: int
    datatype: DataType
    # the last sample published: (value, timestamp ms, quality, error)
    last: tuple[Any, int, Quality, str | None] | None = None


@dataclass
class _Device:
    device_id: str
    context: DataCollectionContext
    metrics: dict[int, _Metric] = field(default_factory=dict)  # by variable id


class SparkplugNode:
    """The edge node state of one writer (see the module docstring)."""

    def __init__(
        self,
        *,
        group_id: str,
        edge_node_id: str,
        device_id: str,
        metric_name: str,
        qos: int,
        max_batch_samples: int,
    ) -> None:
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.device_template = device_id
        self.metric_template = metric_name
        self.qos = qos
        self.max_batch_samples = max_batch_samples
        self.bd_seq = -1  # the first will makes it 0
        self._seq = 0
        self._devices: dict[int, _Device] = {}
        self._aliases: dict[tuple[int, int], int] = {}
        self._next_alias = 1
        self._born_ms = 0
        self._rebirth = threading.Event()
        self.births = 0  # NBIRTHs published (statistics, tests)
        self.rebirth_requests = 0
        self._link: Link | None = None

    # -- topics --------------------------------------------------------------------------------
    def node_topic(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}"

    def device_topic(self, kind: str, device_id: str) -> str:
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}/{device_id}"

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    # -- link hooks ----------------------------------------------------------------------------
    def will(self) -> Will:
        """NDEATH with the next bdSeq: the will of the connection about to be made."""
        self.bd_seq = (self.bd_seq + 1) % 256
        return Will(self.node_topic("NDEATH"), self._ndeath(), qos=1, retain=False)

    def _ndeath(self) -> bytes:
        payload = Payload()
        m = payload.metrics.add()
        m.name = BD_SEQ_METRIC
        m.datatype = DataType.Int64
        m.long_value = self.bd_seq
        return bytes(payload.SerializeToString())

    def connected(self, link: Link, client: mqtt.Client) -> None:
        self._link = link
        client.subscribe(self.node_topic("NCMD"), qos=1)
        self._publish_births(link, client)

    def poked(self, link: Link, client: mqtt.Client) -> None:
        if self._rebirth.is_set():
            self._publish_births(link, client)

    def message(self, topic: str, payload: bytes) -> None:
        """An NCMD: ``Node Control/Rebirth`` = true asks for births (done by the supervisor)."""
        if topic != self.node_topic("NCMD"):
            return
        try:
            command = decode(payload)
        except Exception:
            return
        if any(m.name == REBIRTH_METRIC and m.boolean_value for m in command.metrics):
            self.rebirth_requests += 1
            self._rebirth.set()
            if self._link is not None:
                self._link.poke()

    def last_words(self, client: mqtt.Client) -> list[int]:
        """NDEATH before a clean disconnect (the broker drops the will then)."""
        assert self._link is not None
        return [self._link.publish(client, self.node_topic("NDEATH"), self._ndeath(), 1, False)]

    # -- births ----------------------------------------------------------------------------------
    def _publish_births(self, link: Link, client: mqtt.Client) -> None:
        """NBIRTH (seq 0) and every device's DBIRTH, QoS 0 as the specification requires."""
        with link.pub_lock:
            self._rebirth.clear()  # births answer every rebirth request made so far
            now = int(time.time() * 1000)
            self._born_ms = now
            self._seq = 0
            payload = Payload()
            payload.timestamp = now
            payload.seq = self._next_seq()
            m = payload.metrics.add()
            m.name = BD_SEQ_METRIC
            m.timestamp = now
            m.datatype = DataType.Int64
            m.long_value = self.bd_seq
            m = payload.metrics.add()
            m.name = REBIRTH_METRIC
            m.timestamp = now
            m.datatype = DataType.Boolean
            m.boolean_value = False
            link.publish(client, self.node_topic("NBIRTH"), payload.SerializeToString(), 0, False)
            self.births += 1
            for device in self._devices.values():
                self._publish_dbirth(link, client, device, now)

    def _publish_dbirth(self, link: Link, client: mqtt.Client, device: _Device, now: int) -> None:
        payload = Payload()
        payload.timestamp = now
        payload.seq = self._next_seq()
        for metric in device.metrics.values():
            m = payload.metrics.add()
            m.name = metric.name
            m.alias = metric.alias
            m.datatype = int(metric.datatype)
            var = metric.variable
            props = m.properties
            _property(props, "variable_id", DataType.Int64, var.id)
            _property(props, "address", DataType.String, var.address)
            _property(props, "reader_type", DataType.String, var.reader_type)
            _property(props, "value_type", DataType.String, var.value_type)
            last = metric.last
            if last is None:
                m.timestamp = now
                m.is_null = True
            else:
                value, ts, quality, error = last
                m.timestamp = ts
                self._fill(m, metric.datatype, value, quality, error)
        link.publish(
            client, self.device_topic("DBIRTH", device.device_id), payload.SerializeToString(), 0, False
        )

    # -- devices ---------------------------------------------------------------------------------
    def device_of(self, context: DataCollectionContext) -> tuple[_Device, bool]:
        """The device of ``context`` (registered if new: True)."""
        device = self._devices.get(context.id)
        if device is not None:
            return device, False
        device = _Device(self.device_template.format(context_id=context.id), context)
        names: dict[str, list[Variable]] = {}
        for var in context.variables:
            names.setdefault(self._metric_name(context.id, var), []).append(var)
        for name, variables in names.items():
            for var in variables:
                unique = name if len(variables) == 1 else f"{name} #{var.id}"
                key = (context.id, var.id)
                alias = self._aliases.get(key)
                if alias is None:
                    alias = self._aliases[key] = self._next_alias
                    self._next_alias += 1
                device.metrics[var.id] = _Metric(var, unique, alias, datatype_of(var.value_type))
        self._devices[context.id] = device
        return device, True

    def _metric_name(self, context_id: int, var: Variable) -> str:
        return self.metric_template.format(
            context_id=context_id,
            variable_id=var.id,
            address=var.address,
            reader_type=var.reader_type,
            value_type=var.value_type,
        )

    def start_device(self, link: Link, context: DataCollectionContext) -> None:
        """Register ``context``'s device and, when online, publish its DBIRTH."""
        with link.pub_lock:
            self._devices.pop(context.id, None)  # a restarted context: born afresh
            device, _new = self.device_of(context)
            if link.online:
                client = link.client_or_raise()
                self._publish_dbirth(link, client, device, int(time.time() * 1000))

    def stop_device(self, link: Link, context: DataCollectionContext) -> None:
        """DDEATH of ``context``'s device when online; it is forgotten either way."""
        with link.pub_lock:
            device = self._devices.pop(context.id, None)
            if device is None or not link.online:
                return
            client = link.client_or_raise()
            payload = Payload()
            payload.timestamp = int(time.time() * 1000)
            payload.seq = self._next_seq()
            link.publish(
                client, self.device_topic("DDEATH", device.device_id), payload.SerializeToString(), 0, False
            )

    # -- data ------------------------------------------------------------------------------------
    def _fill(self, m: Any, datatype: DataType, value: Any, quality: Quality, error: str | None) -> None:
        problem = None if value is None else _set_value(m, datatype, value)
        if value is None or problem is not None:
            m.is_null = True
        if problem is not None:
            quality = Quality.BAD
            error = problem if error is None else f"{error}; {problem}"
        if quality is not Quality.GOOD or error is not None:
            props = m.properties
            _property(props, "Quality", DataType.Int32, QUALITY_CODES[quality.value])
            if error is not None:
                _property(props, "Error", DataType.String, error)

    def data_messages(
        self, link: Link, context: DataCollectionContext, variables: CollectedVariables
    ) -> Iterator[Message]:
        """The DDATA messages of one batch (registering the device first if it is new)."""
        with link.pub_lock:
            device, new = self.device_of(context)
            if new and link.online:
                self._publish_dbirth(link, link.client_or_raise(), device, int(time.time() * 1000))
        topic = self.device_topic("DDATA", device.device_id)
        metrics = device.metrics
        rows = zip(
            variables.variables,
            variables.values,
            variables.read_ats,
            variables.qualities,
            variables.errors,
            strict=True,
        )
        chunk: list[tuple[_Metric, Any, int, Quality, str | None]] = []
        last_t: datetime | None = None
        ts = 0
        for var, value, t, quality, error in rows:
            if t is not last_t or not ts:
                last_t, ts = t, _ms(t)
            metric = metrics.get(var.id)
            if metric is None:  # a variable the context does not list: give it a metric now
                metric = self._late_metric(link, device, var)
            chunk.append((metric, value, ts, quality, error))
            if len(chunk) >= self.max_batch_samples:
                yield topic, self._ddata(chunk), self.qos, False
                chunk = []
        if chunk:
            yield topic, self._ddata(chunk), self.qos, False

    def _late_metric(self, link: Link, device: _Device, var: Variable) -> _Metric:
        with link.pub_lock:
            key = (device.context.id, var.id)
            alias = self._aliases.get(key)
            if alias is None:
                alias = self._aliases[key] = self._next_alias
                self._next_alias += 1
            name = self._metric_name(device.context.id, var)
            if any(m.name == name for m in device.metrics.values()):
                name = f"{name} #{var.id}"
            metric = device.metrics[var.id] = _Metric(var, name, alias, datatype_of(var.value_type))
            if link.online:  # the metric set changed: born again
                self._publish_dbirth(link, link.client_or_raise(), device, int(time.time() * 1000))
            return metric

    def _ddata(self, chunk: list[tuple[_Metric, Any, int, Quality, str | None]]) -> Callable[[], bytes]:
        """The DDATA payload of ``chunk``, made when published (its seq is the next on the wire)."""

        def make() -> bytes:
            payload = Payload()
            born = self._born_ms
            fill = self._fill
            add = payload.metrics.add
            good = Quality.GOOD
            double, boolean = DataType.Double, DataType.Boolean
            for metric, value, ts, quality, error in chunk:
                m = add(alias=metric.alias, timestamp=ts)
                if ts < born:
                    m.is_historical = True
                kind = type(value)
                datatype = metric.datatype
                if quality is not good or error is not None:
                    fill(m, datatype, value, quality, error)
                elif kind is float and datatype is double:  # the common cases, without the checks
                    m.double_value = value
                elif kind is bool and datatype is boolean:
                    m.boolean_value = value
                else:
                    fill(m, datatype, value, quality, error)
                last = metric.last
                if last is None or ts >= last[1]:
                    metric.last = (value, ts, quality, error)
            payload.timestamp = int(time.time() * 1000)
            payload.seq = self._next_seq()
            return bytes(payload.SerializeToString())

        return make
