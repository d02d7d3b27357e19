"""The Redis key layout and the encoding of a sample as a stream entry (pure: no Redis client here).

Keys (``<prefix>`` is the writer's ``prefix`` option, ``dc`` by default)::

    <prefix>:stream:<context_id>                 stream: every sample of a context (stream_per="context")
    <prefix>:stream:<context_id>:<variable_id>   stream: every sample of one variable (stream_per="variable")
    <prefix>:latest:<context_id>                 hash: variable id -> JSON of its latest sample
    <prefix>:runs:<context_id>                   hash: run start (µs since 1970) -> JSON of the run
    <prefix>:streams                             sorted set: the stream keys, score = last write (ms)

Every stream entry has the same fields, in this order: ``msg_id`` (``<context>:<variable>:<read_at
µs since 1970>``, unique per sample: consumers de-duplicate on it), ``context_id``,
``variable_id``, ``read_at`` (ISO-8601 UTC, microseconds), ``value`` (JSON), ``value_type``,
``quality`` (GOOD, UNCERTAIN, BAD) and ``error`` (empty when none). Redis stores the field names
once per stream node when every entry has the same fields, so they cost (almost) no memory.

Entry ids are ``<ms>-<seq>`` with ``ms`` the read time in milliseconds since 1970 (UTC): see
:func:`next_id` for the exact rule and ``README.md`` for why (exactly-once retries).
"""

from __future__ import annotations

import contextlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "FIELDS",
    "FUTURE_TOLERANCE_MS",
    "decode_value",
    "index_key",
    "iso_utc",
    "latest_key",
    "msg_id",
    "next_id",
    "parse_id",
    "runs_key",
    "stream_key",
    "stream_prefix",
    "time_us",
    "value_json",
]

#: The fields of every stream entry, in order.
FIELDS: tuple[str, ...] = (
    "msg_id",
    "context_id",
    "variable_id",
    "read_at",
    "value",
    "value_type",
    "quality",
    "error",
)

#: A read time further ahead of the writer's clock than this (a device clock far off) does not
#: set the entry id: the writer's clock does (so one bad time cannot hold a stream's ids for years).
FUTURE_TOLERANCE_MS = 60_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def stream_prefix(prefix: str) -> str:
    """What every stream key of ``prefix`` starts with."""
    return f"{prefix}:stream:"


def stream_key(prefix: str, context_id: int, variable_id: int | None = None) -> str:
    """The stream of a context (``variable_id`` None) or of one variable of it."""
    if variable_id is None:
        return f"{prefix}:stream:{context_id}"
    return f"{prefix}:stream:{context_id}:{variable_id}"


def latest_key(prefix: str, context_id: int) -> str:
    """The hash of the latest sample of each variable of a context."""
    return f"{prefix}:latest:{context_id}"


def runs_key(prefix: str, context_id: int) -> str:
    """The hash of the runs of a context (field: start in µs since 1970; value: JSON)."""
    return f"{prefix}:runs:{context_id}"


def index_key(prefix: str) -> str:
    """The sorted set of the stream keys of ``prefix`` (score: last write, ms since 1970)."""
    return f"{prefix}:streams"


def time_us(t: datetime) -> int:
    """Microseconds since 1970-01-01 UTC (a naive ``t`` is taken as UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // _US


def iso_utc(t: datetime) -> str:
    """``t`` as ISO-8601 in UTC with microseconds (naive: taken as UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    elif t.tzinfo is not UTC and t.utcoffset():
        with contextlib.suppress(OverflowError):  # near year 1 or 9999: keeps its own offset
            t = t.astimezone(UTC)
    return t.isoformat(timespec="microseconds")


def msg_id(context_id: int, variable_id: int, read_at_us: int | None) -> str:
    """The message id of a sample: ``<context>:<variable>:<read_at µs>`` (``-`` without read time)."""
    return f"{context_id}:{variable_id}:{'-' if read_at_us is None else read_at_us}"


def value_json(value: Any) -> str:
    """The JSON text of a value.

    ``None`` -> ``null``; bools, ints and floats as JSON numbers (``NaN``, ``Infinity`` and
    ``-Infinity`` as Python's ``json`` writes and reads them; ``-0.0`` kept); text as a JSON string
    (UTF-8; a text UTF-8 cannot hold, with lone surrogates, with ``\\u`` escapes); bytes as a JSON
    string of hex digits (``value_type`` "bytes" tells a reader to turn it back); lists and dicts
    as JSON; NumPy scalars as their Python value; anything else as the JSON string of ``str()``.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(float(value))
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(value)
        return text
    if isinstance(value, bytes | bytearray | memoryview):
        return '"' + bytes(value).hex() + '"'
    if isinstance(value, datetime):
        return '"' + value.isoformat() + '"'
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        try:
            plain = item()
        except (TypeError, ValueError):
            plain = None
        if plain is not None and not hasattr(plain, "item"):
            return value_json(plain)
    if isinstance(value, list | tuple | dict):
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
            text.encode("utf-8")
            return text
        except (TypeError, ValueError, UnicodeEncodeError):
            return json.dumps(value, default=str)
    return json.dumps(str(value))


def decode_value(text: str, value_type: str) -> Any:
    """Inverse of :func:`value_json`: the value (bytes again for ``value_type`` "bytes")."""
    value = json.loads(text)
    if value_type == "bytes" and isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            return value
    return value


def parse_id(entry_id: str | bytes) -> tuple[int, int]:
    """``(ms, seq)`` of a stream entry id ``<ms>-<seq>``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def next_id(top: tuple[int, int], read_ms: int, now_ms: int) -> tuple[int, int]:
    """The entry id of the next sample of a stream whose last id is ``top``.

    ``ms`` is the read time (clamped to 0 before 1970, and to the writer's clock when more than
    :data:`FUTURE_TOLERANCE_MS` ahead of it) when that is after the top's; otherwise (a sample in
    the same millisecond as the previous one, or one that arrives after a later one) the top's
    ``ms`` with the next ``seq``. So ids always increase, and the same samples after the same top
    always get the same ids: a retried batch gets the ids of its first attempt.
    """
    ms = read_ms if read_ms <= now_ms + FUTURE_TOLERANCE_MS else now_ms
    ms = max(ms, 0)
    if ms > top[0]:
        return (ms, 0)
    return (top[0], top[1] + 1)
