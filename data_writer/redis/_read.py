"""Reading what the Redis writer stored: samples of a stream, latest values, runs, and a live follower.

:func:`read_samples`, :func:`read_latest` and :func:`read_runs` take a Redis URL or a redis-py
client; :class:`StreamFollower` follows the streams of a prefix live (``XREAD BLOCK``), as
``data-collector tail`` does. Every sample comes back as a :class:`RedisSample`, its value typed
as collected (JSON numbers, text, bools; bytes again for value type ``bytes``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from data_collector import ConfigurationError, Quality

from ._errors import safe_url
from ._layout import (
    decode_value,
    index_key,
    latest_key,
    parse_id,
    runs_key,
    stream_key,
    stream_prefix,
    value_json,
)

__all__ = [
    "RedisSample",
    "StreamFollower",
    "connect",
    "decode_entry",
    "format_line",
    "read_latest",
    "read_runs",
    "read_samples",
    "stream_keys",
]

_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class RedisSample:
    """One sample as stored in Redis: its stream and entry id, message id and the sample's fields."""

    stream: str
    entry_id: str
    msg_id: str
    context_id: int
    variable_id: int
    read_at: datetime | None  # aware UTC
    value: Any
    value_type: str
    quality: Quality
    error: str | None
    name: str | None = None  # the variable's, in the latest-value hash only (streams do not carry it)
    unit: str | None = None


def connect(
    url: str,
    *,
    password: str | None = None,
    socket_timeout_s: float | None = 30.0,
    client_name: str | None = None,
) -> redis.Redis:
    """A redis-py client for ``url`` (``redis://``, ``rediss://``, ``unix://``); connects on first use."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"a Redis URL such as redis://127.0.0.1:6379/0 is needed, got {url!r}")
    try:
        return redis.Redis.from_url(
            url,
            password=password,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=10.0,
            retry=Retry(NoBackoff(), 0),
            client_name=client_name,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"Redis URL {safe_url(url)!r}: {exc}") from None


def _client(source: str | redis.Redis) -> tuple[Any, bool]:
    """A client (typed Any: redis-py's stubs of replies are too loose) and whether it is our own."""
    if isinstance(source, redis.Redis):
        return source, False
    return connect(source), True


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def decode_entry(stream: str, entry_id: bytes | str, fields: Mapping[Any, Any]) -> RedisSample:
    """A stream entry written by the Redis writer as a :class:`RedisSample`."""
    f = {_text(k): _text(v) for k, v in fields.items()}
    value_type = f.get("value_type", "")
    read_at = f.get("read_at") or ""
    return RedisSample(
        stream=stream,
        entry_id=_text(entry_id),
        msg_id=f.get("msg_id", ""),
        context_id=int(f.get("context_id", "0")),
        variable_id=int(f.get("variable_id", "0")),
        read_at=datetime.fromisoformat(read_at) if read_at else None,
        value=decode_value(f["value"], value_type) if "value" in f else None,
        value_type=value_type,
        quality=Quality(f.get("quality", "BAD")),
        error=f.get("error") or None,
    )


def format_line(sample: RedisSample) -> str:
    """One plain line for a terminal or a script: read time, context, variable, quality, value (JSON),
    and the error when there is one, separated by two spaces."""
    read_at = sample.read_at.isoformat(timespec="microseconds") if sample.read_at else "-"
    line = (
        f"{read_at}  context={sample.context_id}  variable={sample.variable_id}  "
        f"{sample.quality.value}  {value_json(sample.value)}"
    )
    if sample.error:
        line += "  error=" + json.dumps(sample.error, ensure_ascii=False)
    return line


def stream_keys(source: str | redis.Redis, *, prefix: str = "dc", context_id: int | None = None) -> list[str]:
    """The stream keys of ``prefix`` (of one context if given) that exist, sorted."""
    client, own = _client(source)
    try:
        listed = {_text(k) for k in client.zrange(index_key(prefix), 0, -1)}
        if context_id is not None:
            listed.add(stream_key(prefix, context_id))
            head = stream_key(prefix, context_id)
            listed = {k for k in listed if k == head or k.startswith(head + ":")}
        keys = sorted(listed)
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return [k for k, n in zip(keys, pipe.execute(), strict=True) if n]
    finally:
        if own:
            client.close()


def _variable_of(key: str, prefix: str) -> int | None:
    rest = key[len(stream_prefix(prefix)) :]
    _, colon, variable = rest.partition(":")
    return int(variable) if colon else None


def read_samples(
    source: str | redis.Redis, context_id: int, *, prefix: str = "dc", variable_id: int | None = None
) -> list[RedisSample]:
    """Every sample of ``context_id`` (of one variable if given) still in Redis, in stream order
    (with one stream per variable: merged by entry id, that is by read time)."""
    client, own = _client(source)
    try:
        out: list[RedisSample] = []
        for key in stream_keys(client, prefix=prefix, context_id=context_id):
            of = _variable_of(key, prefix)
            if of is not None and variable_id is not None and of != variable_id:
                continue
            low = "-"
            while True:
                page = client.xrange(key, low, "+", count=_PAGE)
                for entry_id, fields in page:
                    sample = decode_entry(key, entry_id, fields)
                    if variable_id is None or sample.variable_id == variable_id:
                        out.append(sample)
                if len(page) < _PAGE:
                    break
                low = "(" + _text(page[-1][0])
        if len({s.stream for s in out}) > 1:
            out.sort(key=lambda s: parse_id(s.entry_id))
        return out
    finally:
        if own:
            client.close()


def read_latest(source: str | redis.Redis, context_id: int, *, prefix: str = "dc") -> dict[int, RedisSample]:
    """The latest sample of each variable of ``context_id`` (``<prefix>:latest:<id>``)."""
    client, own = _client(source)
    key = latest_key(prefix, context_id)
    try:
        out = {}
        for name, raw in client.hgetall(key).items():
            doc = json.loads(raw)
            vid = int(_text(name))
            read_at = doc.get("read_at")
            value_type = doc.get("value_type", "")
            value = doc.get("value")
            if value_type == "bytes" and isinstance(value, str):
                value = decode_value(json.dumps(value), value_type)
            out[vid] = RedisSample(
                stream=key,
                entry_id="",
                msg_id=doc.get("msg_id", ""),
                context_id=context_id,
                variable_id=vid,
                read_at=datetime.fromisoformat(read_at) if read_at else None,
                value=value,
                value_type=value_type,
                quality=Quality(doc.get("quality", "BAD")),
                error=doc.get("error") or None,
                name=doc.get("name"),
                unit=doc.get("unit"),
            )
        return dict(sorted(out.items()))
    finally:
        if own:
            client.close()


def read_runs(source: str | redis.Redis, context_id: int, *, prefix: str = "dc") -> list[dict[str, Any]]:
    """The runs of ``context_id`` still in Redis, oldest first: ``context_id``, ``start``, ``end``
    (ISO-8601), ``state``, ``metadata``, ``deduced_metadata``, ``variables``, ``stream_per``, ``stream``."""
    client, own = _client(source)
    try:
        runs = [
            json.loads(raw)
            for _, raw in sorted(
                client.hgetall(runs_key(prefix, context_id)).items(), key=lambda kv: int(kv[0])
            )
        ]
        return runs
    finally:
        if own:
            client.close()


class StreamFollower:
    """Follows the streams of a prefix live: each :meth:`poll` returns what arrived (``XREAD BLOCK``).

    ``context_id`` / ``variable_id`` narrow what is followed; streams that appear later (a context
    started meanwhile) are found in the prefix's index every ``rescan_s`` and followed from their
    first entry. ``from_start`` starts with what the streams already hold, else with what arrives
    from now on. Errors of the client (Redis unreachable) propagate; calling :meth:`poll` again goes
    on where it left off (redis-py reconnects).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "dc",
        context_id: int | None = None,
        variable_id: int | None = None,
        from_start: bool = False,
        rescan_s: float = 1.0,
    ) -> None:
        self.client: Any = client
        self.prefix = prefix
        self.context_id = context_id
        self.variable_id = variable_id
        self.from_start = from_start
        self.rescan_s = rescan_s
        self._positions: dict[str, str] = {}
        self._scanned_at = -1e18
        self._started = False

    @property
    def streams(self) -> list[str]:
        """The stream keys followed so far."""
        return sorted(self._positions)

    def _wanted(self, key: str) -> bool:
        if self.variable_id is None:
            return True
        of = _variable_of(key, self.prefix)
        return of is None or of == self.variable_id

    def _scan(self) -> None:
        client = self.client
        keys = {_text(k) for k in client.zrange(index_key(self.prefix), 0, -1)}
        if self.context_id is not None:
            head = stream_key(self.prefix, self.context_id)
            keys = {k for k in keys if k == head or k.startswith(head + ":")}
            keys.add(head)
            if self.variable_id is not None:
                keys.add(stream_key(self.prefix, self.context_id, self.variable_id))
        new = sorted(k for k in keys if k not in self._positions and self._wanted(k))
        if new and not self.from_start and not self._started:
            pipe = client.pipeline(transaction=False)
            for key in new:
                pipe.execute_command("XINFO", "STREAM", key)
            for key, info in zip(new, pipe.execute(raise_on_error=False), strict=True):
                last = None
                if isinstance(info, Mapping):
                    last = info.get("last-generated-id", info.get(b"last-generated-id"))
                self._positions[key] = _text(last) if last else "0-0"
        else:
            for key in new:
                self._positions[key] = "0-0"
        self._started = True
        self._scanned_at = time.monotonic()

    def poll(self, block_ms: int = 1000, count: int = 1000) -> list[RedisSample]:
        """What arrived since the last call, waiting up to ``block_ms`` for something."""
        if time.monotonic() - self._scanned_at >= self.rescan_s or not self._started:
            self._scan()
        if not self._positions:
            time.sleep(min(block_ms / 1000, self.rescan_s))
            return []
        reply = self.client.xread(self._positions, count=count, block=max(1, int(block_ms)))
        out: list[RedisSample] = []
        if isinstance(reply, Mapping):  # RESP3 (protocol=3): {key: [[entries]]}
            reply = [(k, v[0] if len(v) == 1 and isinstance(v[0], list) else v) for k, v in reply.items()]
        for key_raw, entries in reply or ():
            key = _text(key_raw)
            for entry_id, fields in entries:
                self._positions[key] = _text(entry_id)
                sample = decode_entry(key, entry_id, fields)
                if self.variable_id is None or sample.variable_id == self.variable_id:
                    out.append(sample)
        return out
