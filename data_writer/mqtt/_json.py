"""The JSON payloads of the MQTT writer: one message per sample or per batch, and context events.

Sample object (a message of its own, or an element of a batch message's ``samples``)::

    {"context_id": 7, "variable_id": 1, "address": "sine", "reader_type": "random",
     "value_type": "float", "name": "Ram force", "unit": "kN", "collector": "line-3",
     "id": "7:1:1795335300100000", "read_at": "2026-11-22T08:15:00.100000+00:00", "value": 0.5,
     "quality": "GOOD", "error": null}

(in a batch message, ``context_id`` and ``collector`` are given once, beside ``samples``;
``name`` and ``unit`` only when the variable has them). ``id`` is
``<context_id>:<variable_id>:<read_at in µs since 1970 UTC>``: one sample, whatever the message;
consumers de-duplicate on it (delivery is at least once). Values: JSON numbers, booleans and
strings as read; ``null`` when missing (a BAD sample); non-finite floats as the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"`` (JSON has no such numbers); bytes as hex text; anything else as
its ``str``. Everything is encoded in one pass with the constant part of each variable's
object prepared once, because per-sample publishing runs at tens of thousands of messages/s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from data_collector import CollectedVariables, DataCollectionContext, Variable

__all__ = ["JsonCodec", "message_id", "sample_fields"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_NON_FINITE = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}


def _text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _value(v: Any) -> str:
    t = type(v)
    if t is float:
        return repr(v) if math.isfinite(v) else _NON_FINITE[repr(v)]
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is str:
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):  # float subclasses (NumPy)
        return _value(float(v))
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, bytes | bytearray | memoryview):
        return '"' + bytes(v).hex() + '"'
    return json.dumps(str(v), ensure_ascii=False)


def _utc(t: datetime) -> datetime:
    offset = t.utcoffset()
    if offset is None:
        return t.replace(tzinfo=UTC)
    return t.astimezone(UTC) if offset else t


def message_id(context_id: int, variable_id: int, read_at: datetime) -> str:
    """The id of one sample in every JSON payload: ``<context>:<variable>:<read_at µs since 1970 UTC>``."""
    return f"{context_id}:{variable_id}:{(_utc(read_at) - _EPOCH) // _US}"


def sample_fields(variable: Variable, context_id: int, client_id: str) -> dict[str, Any]:
    """The values of the topic template fields of one sample."""
    return {
        "context_id": context_id,
        "variable_id": variable.id,
        "address": _topic_safe(variable.address),
        "reader_type": _topic_safe(variable.reader_type),
        "value_type": _topic_safe(variable.value_type),
        "client_id": _topic_safe(client_id),
    }


def _topic_safe(text: str) -> str:
    """``text`` as part of a topic name: the wildcards ``+``, ``#`` and NUL become ``_``."""
    if "+" in text or "#" in text or "\0" in text:
        return text.replace("+", "_").replace("#", "_").replace("\0", "_")
    return text


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: a JSON \\u escape
        return text.encode("utf-8", "backslashreplace")


class JsonCodec:
    """Makes the topic and JSON payload of samples, batches and context events."""

    def __init__(
        self, *, topic: str, batch: bool, context_topic: str, client_id: str, max_batch_samples: int
    ) -> None:
        self.topic = topic
        self.batch = batch
        self.context_topic = context_topic
        self.client_id = client_id
        self.max_batch_samples = max_batch_samples
        self._collector = _text(client_id)
        # per (context id, variable): (topic, the object's constant head up to the id's read time)
        self._heads: dict[tuple[int, Variable], tuple[str, str]] = {}

    def forget(self, context_id: int) -> None:
        """Drop what was prepared for a context (it stopped)."""
        for key in [k for k in self._heads if k[0] == context_id]:
            del self._heads[key]

    def _head(self, context_id: int, variable: Variable) -> tuple[str, str]:
        key = (context_id, variable)
        found = self._heads.get(key)
        if found is not None:
            return found
        labels = "".join(
            f',"{key}":{_text(value)}'
            for key, value in (("name", variable.name), ("unit", variable.unit))
            if value
        )
        if self.batch:
            topic = ""
            head = (
                f'{{"variable_id":{variable.id},"address":{_text(variable.address)},'
                f'"reader_type":{_text(variable.reader_type)},"value_type":{_text(variable.value_type)}{labels},'
                f'"id":"{context_id}:{variable.id}:'
            )
        else:
            topic = self.topic.format(**sample_fields(variable, context_id, self.client_id))
            head = (
                f'{{"context_id":{context_id},"variable_id":{variable.id},"address":{_text(variable.address)},'
                f'"reader_type":{_text(variable.reader_type)},"value_type":{_text(variable.value_type)}{labels},'
                f'"collector":{self._collector},"id":"{context_id}:{variable.id}:'
            )
        self._heads[key] = (topic, head)
        return topic, head

    def _objects(self, context_id: int, variables: CollectedVariables) -> Iterator[tuple[str, str]]:
        """(topic, JSON object text) of every sample, in order."""
        head_of = self._head
        last_t: datetime | None = None
        tail = ""
        for var, value, t, quality, error in zip(
            variables.variables,
            variables.values,
            variables.read_ats,
            variables.qualities,
            variables.errors,
            strict=True,
        ):
            if t is not last_t:
                last_t = t
                if t is None:
                    tail = '","read_at":null'
                else:
                    u = _utc(t)
                    tail = f'{(u - _EPOCH) // _US}","read_at":"{u.isoformat(timespec="microseconds")}"'
            topic, head = head_of(context_id, var)
            err = "null" if error is None else _text(error)
            yield topic, f'{head}{tail},"value":{_value(value)},"quality":"{quality.value}","error":{err}}}'

    def messages(self, context_id: int, variables: CollectedVariables) -> Iterator[tuple[str, bytes]]:
        """(topic, payload) of the messages of one batch, in order."""
        if not self.batch:
            for topic, obj in self._objects(context_id, variables):
                yield topic, _encode(obj)
            return
        topic = self.topic.format(context_id=context_id, client_id=_topic_safe(self.client_id))
        start = f'{{"context_id":{context_id},"collector":{self._collector},"samples":['
        objects: list[str] = []
        for _topic, obj in self._objects(context_id, variables):
            objects.append(obj)
            if len(objects) >= self.max_batch_samples:
                yield topic, _encode(start + ",".join(objects) + "]}")
                objects = []
        if objects:
            yield topic, _encode(start + ",".join(objects) + "]}")

    def context_message(self, event: str, context: DataCollectionContext) -> tuple[str, bytes] | None:
        """(topic, payload) of a context's start or stop event, or None without ``context_topic``."""
        if not self.context_topic:
            return None
        topic = self.context_topic.format(context_id=context.id, client_id=_topic_safe(self.client_id))
        doc = {
            "event": event,
            "context_id": context.id,
            "collector": self.client_id,
            "start": None if context.start_date is None else _utc(context.start_date).isoformat(),
            "end": None if context.end_date is None else _utc(context.end_date).isoformat(),
            "metadata": dict(context.metadata),
            "deduced_metadata": dict(context.deduced_metadata),
            "variables": [
                {
                    "id": v.id,
                    "address": v.address,
                    "reader_type": v.reader_type,
                    "value_type": v.value_type,
                    "interval_ms": context.interval_of(v),
                    "name": v.name,
                    "unit": v.unit,
                    "description": v.description,
                }
                for v in context.variables
            ],
        }
        return topic, _encode(json.dumps(doc, ensure_ascii=False, default=str, allow_nan=False))
