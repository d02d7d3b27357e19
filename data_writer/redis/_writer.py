"""The Redis writer: samples as stream entries, latest values in a hash, runs in a hash, with caps.

One ``write()`` is one round trip (a MULTI/EXEC transaction: the XADDs of the batch, the trims
that are due, the latest values, the expiry refreshes), except the first write to a stream (its
last id is read first), a replay after a crash (the stream's tail is read to skip what is stored)
and the periodic size check. Layout, options and guarantees: ``data_writer/redis/README.md``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollectionError,
    DataWriter,
    Quality,
    Variable,
)

from ._errors import RedisWriteError, is_transient_redis_error, safe_url, scrub
from ._layout import (
    FIELDS,
    index_key,
    iso_utc,
    latest_key,
    next_id,
    parse_id,
    runs_key,
    stream_key,
    time_us,
    value_json,
)

__all__ = ["REPLAY_KEY", "RedisDataWriter", "parse_byte_size"]

_log = logging.getLogger("data_writer.redis")

#: Deduced-metadata key by which the collector marks a context rebuilt from its spool (a replay).
REPLAY_KEY = "replayed_from_spool"
#: XTRIM MINID and the XADD/XTRIM options used need Redis 6.2.
_MIN_SERVER = (6, 2)
#: The size cap trims the streams down to this fraction of ``max_bytes`` (so it does not trim at
#: every check once reached).
SIZE_TARGET = 0.9
#: At most one time-cap trim (XTRIM MINID ~) per stream per this many seconds.
TRIM_PERIOD_S = 1.0
#: Entries read per XREVRANGE page when checking a stream's tail after a crash.
_TAIL_PAGE = 5_000
_MAX_SIZE_ROUNDS = 4
_REJECTED = "equal or smaller"
_NAMES = tuple(f.encode() for f in FIELDS)
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:/@#+=-]{1,100}$")
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_byte_size(value: object, option: str = "max_bytes") -> int:
    """Bytes from an int or a text such as ``"512 MiB"`` (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)."""
    if isinstance(value, bool):
        raise ConfigurationError(
            f"RedisDataWriter: {option} must be bytes (an int or e.g. '1 GiB'), got {value!r}"
        )
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)) and m.group(2).lower() in _UNITS:
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise ConfigurationError(
            f"RedisDataWriter: {option} must be bytes: an int or a text such as '1 GiB' "
            f"(units B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), got {value!r}"
        )
    if size <= 0:
        raise ConfigurationError(f"RedisDataWriter: {option} must be > 0, got {value!r}")
    return size


def _number(name: str, value: object, *, low: float, high: float, low_open: bool = False) -> float:
    number = math.nan
    if isinstance(value, float):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = float(value) if abs(value) < 10**15 else math.inf
    if not math.isfinite(number) or number < low or (low_open and number == low) or number > high:
        bound = f"{'>' if low_open else '>='} {low:g}"
        raise ConfigurationError(
            f"RedisDataWriter: {name} must be a number {bound} and at most {high:g}, got {value!r}"
        )
    return number


def _integer(name: str, value: object, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"RedisDataWriter: {name} must be an int in {low}..{high}, got {value!r}")
    return value


def _check_url(url: object) -> str:
    """``url`` if it is a Redis URL redis-py accepts; ConfigurationError (password masked) if not."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            f"RedisDataWriter: url must be a Redis URL such as 'redis://127.0.0.1:6379/0', got {url!r}"
        )
    shown = safe_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"RedisDataWriter: url {shown!r}: {scrub(str(exc), url)}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(
            f"RedisDataWriter: url {shown!r}: the scheme must be redis://, rediss:// (TLS) or unix://, "
            f"got {parts.scheme + '://' if parts.scheme else 'none'}"
        )
    if scheme != "unix":
        if not parts.hostname:
            raise ConfigurationError(f"RedisDataWriter: url {shown!r} names no host")
        if port == 0:
            raise ConfigurationError(f"RedisDataWriter: url {shown!r}: port must be 1..65535, got 0")
        db = parts.path.lstrip("/")
        if db and not (db.isdigit() and int(db) < 1_000_000):
            raise ConfigurationError(
                f"RedisDataWriter: url {shown!r}: the path must be a database number (e.g. /0), got {db!r}"
            )
    elif not parts.path:
        raise ConfigurationError(f"RedisDataWriter: url {shown!r} names no socket path")
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "db" and not value.isdigit():
            raise ConfigurationError(f"RedisDataWriter: url {shown!r}: db must be a number, got {value!r}")
    try:
        redis.ConnectionPool.from_url(url)  # parses every option the way the client will; connects nowhere
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"RedisDataWriter: url {shown!r}: {scrub(str(exc), url)}") from None
    return url


def _url_password(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    for key, value in parse_qsl(parts.query):
        if key.lower() == "password":
            return value
    return None


def _json_text(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str, allow_nan=True)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, default=str)
    return text


@dataclass(slots=True)
class _Replay:
    """The tail of a stream, checked against the samples a replayed context writes first."""

    context: DataCollectionContext
    stored: Counter[bytes] | None  # msg ids of the stream's last entries; None: checking is over


@dataclass(slots=True)
class _Stream:
    """What the writer knows of one stream."""

    top: tuple[int, int]  # the last entry id written (or found), ms and seq
    trimmed_at: float = -math.inf  # monotonic time of the last time-cap trim
    touched_at: float = -math.inf  # monotonic time of the last expiry refresh / index update


@dataclass(frozen=True, slots=True)
class _VarCodes:
    """What every sample of one variable of one context shares, encoded once."""

    vid: int
    key: str  # its stream
    mid_prefix: bytes  # b"<context>:<variable>:"
    cid_b: bytes
    vid_b: bytes
    value_type_b: bytes
    labels: str  # ',"name":...,"unit":...' for the latest-value JSON ("" without labels)

    @staticmethod
    def of(prefix: str, cid: int, var: Variable, per_variable: bool) -> _VarCodes:
        labels = "".join(
            f",{json.dumps(key)}:{json.dumps(value, ensure_ascii=False)}"
            for key, value in (("name", var.name), ("unit", var.unit))
            if value is not None
        )
        return _VarCodes(
            var.id,
            stream_key(prefix, cid, var.id if per_variable else None),
            f"{cid}:{var.id}:".encode(),
            str(cid).encode(),
            str(var.id).encode(),
            var.value_type.encode("utf-8", "backslashreplace"),
            labels,
        )


_QUALITY_B = {q: q.value.encode() for q in Quality}


@dataclass(slots=True)
class _Batch:
    """A batch encoded for one stream: per sample its read ms, msg id and field values."""

    key: str
    read_ms: list[int] = field(default_factory=list)
    mids: list[bytes] = field(default_factory=list)
    fields: list[tuple[bytes, ...]] = field(default_factory=list)
    skip: int = 0  # leading samples already stored (replay after a crash)


class RedisDataWriter(DataWriter):
    """Publishes samples to Redis streams (one per context, or per variable) with time and size caps.

    ``RedisDataWriter(url="redis://127.0.0.1:6379/0", *, prefix="dc", stream_per="context",
    max_len=10_000_000, max_age_s=86400, max_bytes=1 GiB, size_check_s=10, latest=True,
    password=None, username=None, socket_timeout_s=5, connect_timeout_s=5,
    replay_tail_entries=100_000, name=None)``; see ``data_writer/redis/README.md``. Constructing
    connects nowhere; :meth:`open` connects and checks the server (Redis >= 6.2).
    """

    exactly_once = True  # a retry reuses the entry ids of the failed attempt (see Guarantees)

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "dc",
        stream_per: Literal["context", "variable"] = "context",
        max_len: int = 10_000_000,
        max_age_s: float = 86400.0,
        max_bytes: int | str = 1 << 30,
        size_check_s: float = 10.0,
        latest: bool = True,
        password: str | None = None,
        username: str | None = None,
        socket_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        replay_tail_entries: int = 100_000,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self._url = _check_url(url)
        self._safe_url = safe_url(url)
        if password is not None and (not isinstance(password, str) or not password):
            raise ConfigurationError("RedisDataWriter: password must be a non-empty str (not shown)")
        if password is not None and _url_password(url) is not None:
            raise ConfigurationError(
                f"RedisDataWriter: url {self._safe_url!r} holds a password and the password option "
                "gives another: give it once"
            )
        if username is not None and (not isinstance(username, str) or not username):
            raise ConfigurationError(f"RedisDataWriter: username must be a non-empty str, got {username!r}")
        if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
            raise ConfigurationError(
                "RedisDataWriter: prefix must be 1..100 characters among letters, digits and "
                f"_ . : / @ # + = -, got {prefix!r}"
            )
        if stream_per not in ("context", "variable"):
            raise ConfigurationError(
                f"RedisDataWriter: stream_per must be 'context' or 'variable', got {stream_per!r}"
            )
        self._password = password or _url_password(url)
        self._password_option = password
        self._username = username
        self._prefix = prefix
        self._per_variable = stream_per == "variable"
        self._max_len = _integer("max_len", max_len, low=0, high=2**63 - 1)
        self._max_age_s = _number("max_age_s", max_age_s, low=0.0, high=100 * 366 * 86400.0, low_open=True)
        self._max_bytes = parse_byte_size(max_bytes)
        self._size_check_s = _number("size_check_s", size_check_s, low=0.0, high=86400.0)
        if not isinstance(latest, bool):
            raise ConfigurationError(f"RedisDataWriter: latest must be true or false, got {latest!r}")
        self._latest = latest
        self._socket_timeout_s = _number(
            "socket_timeout_s", socket_timeout_s, low=0.0, high=3600.0, low_open=True
        )
        self._connect_timeout_s = _number(
            "connect_timeout_s", connect_timeout_s, low=0.0, high=3600.0, low_open=True
        )
        self._replay_tail = _integer("replay_tail_entries", replay_tail_entries, low=0, high=100_000_000)
        #: expiry refreshes happen at most this often per key, and keys live this much longer
        self._refresh_s = min(60.0, self._max_age_s / 10)
        self._ttl_ms = math.ceil((self._max_age_s + self._refresh_s) * 1000)
        self._client: Any = None  # redis.Redis (typed Any: redis-py's stubs of replies are too loose)
        self._streams: dict[str, _Stream] = {}
        self._checked_keys: set[str] = set()  # keys whose type was checked
        self._touched: dict[str, float] = {}  # latest/runs/index key -> monotonic time of the last refresh
        self._latest_us: dict[tuple[int, int], int] = {}  # (context, variable) -> read time in the hash
        self._replays: dict[str, _Replay] = {}
        self._var_cache: dict[tuple[int, Variable], _VarCodes] = {}
        self._size_checked_at = -math.inf
        self._warned: set[str] = set()
        #: samples stored since this writer was created
        self.samples_written = 0
        #: samples handed to write() again that Redis already held (retries, replays): not stored twice
        self.duplicates_skipped = 0
        #: samples whose id was taken by another writer of the stream: appended at its end instead
        self.samples_reappended = 0
        #: entries the size cap removed (the oldest)
        self.size_trimmed_entries = 0
        #: size checks made, and the streams' memory at the last one (bytes, MEMORY USAGE)
        self.size_checks = 0
        self.last_size_bytes = 0

    # -- properties ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        own: str | None = self.__dict__.get("_dc_name")
        return own if own is not None else f"RedisDataWriter({self._safe_url} {self._prefix})"

    @property
    def url(self) -> str:
        """The Redis URL, password shown as ``***``."""
        return self._safe_url

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def stream_per(self) -> str:
        return "variable" if self._per_variable else "context"

    @property
    def max_age_s(self) -> float:
        return self._max_age_s

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def key_ttl_s(self) -> float:
        """How long every key of this writer lives after its last write (``max_age_s`` + refresh period)."""
        return self._ttl_ms / 1000

    @property
    def client(self) -> redis.Redis:
        """The redis-py client (after :meth:`open`), for commands of your own."""
        client: redis.Redis = self._connected()
        return client

    def stream_key(self, context_id: int, variable_id: int | None = None) -> str:
        """The stream a sample of ``context_id`` (and ``variable_id``) goes to."""
        return stream_key(self._prefix, context_id, variable_id if self._per_variable else None)

    def __repr__(self) -> str:
        return f"RedisDataWriter({self._safe_url!r}, prefix={self._prefix!r}, stream_per={self.stream_per!r})"

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        """Connect and check the server (Redis >= 6.2); a refused connection is transient."""
        with self.lock:
            if self._client is not None:
                return
            kwargs: dict[str, Any] = {
                "socket_timeout": self._socket_timeout_s,
                "socket_connect_timeout": self._connect_timeout_s,
                # No retries inside redis-py: the collector retries the batch (same ids, see README).
                "retry": Retry(NoBackoff(), 0),
                "encoding_errors": "backslashreplace",
            }
            if self._password_option is not None:
                kwargs["password"] = self._password_option
            if self._username is not None:
                kwargs["username"] = self._username
            client: Any = redis.Redis.from_url(self._url, **kwargs)
            try:
                info = client.info("server")
            except Exception as exc:
                client.close()
                raise self._error("connecting", exc) from self._cause(exc)
            version = str(info.get("redis_version", "0"))
            numbers = tuple(int(p) for p in re.findall(r"\d+", version)[:2]) or (0,)
            if numbers < _MIN_SERVER:
                client.close()
                raise RedisWriteError(
                    f"{self.name}: Redis {version} is too old: streams with MINID trimming need Redis >= 6.2",
                    transient=False,
                )
            self._client = client

    def close(self) -> None:
        with self.lock:
            client, self._client = self._client, None
            if client is not None:
                client.close()

    def _connected(self) -> Any:
        if self._client is None:
            self.open()
        assert self._client is not None
        return self._client

    def is_transient(self, exc: BaseException) -> bool:
        """Connection failures, timeouts, a server loading, busy, out of memory or read-only: yes;
        refused logins and permissions, keys of another type and anything unknown: no."""
        if isinstance(exc, RedisWriteError):
            return exc.transient
        if isinstance(exc, DataCollectionError):
            return False
        return is_transient_redis_error(exc)

    # -- errors ----------------------------------------------------------------------------------
    def _error(self, what: str, exc: BaseException) -> RedisWriteError:
        if isinstance(exc, RedisWriteError):
            return exc
        text = scrub(f"{type(exc).__name__}: {exc}", self._password)
        return RedisWriteError(f"{self.name}: {what} failed: {text}", transient=is_transient_redis_error(exc))

    def _cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` unless its text shows the password (then no cause is chained)."""
        password = self._password
        if password and (password in str(exc) or password in repr(exc.args)):
            return None
        return exc

    # -- runs --------------------------------------------------------------------------------------
    def context_started(self, context: DataCollectionContext) -> None:
        self._record_run(context, "running")

    def context_stopped(self, context: DataCollectionContext) -> None:
        self._record_run(context, "stopped")
        with self.lock:
            for key in [k for k, r in self._replays.items() if r.context is context]:
                del self._replays[key]

    def _run_document(self, context: DataCollectionContext, state: str) -> str:
        variables = [
            {
                "id": v.id,
                "address": v.address,
                "value_type": v.value_type,
                "reader_type": v.reader_type,
                "interval_ms": context.interval_of(v),
                "name": v.name,
                "unit": v.unit,
                "description": v.description,
            }
            for v in context.variables
        ]
        return _json_text(
            {
                "context_id": context.id,
                "start": context.start_date.isoformat() if context.start_date else None,
                "end": context.end_date.isoformat() if context.end_date else None,
                "state": state,
                "metadata": dict(context.metadata),
                "deduced_metadata": dict(context.deduced_metadata),
                "variables": variables,
                "stream_per": self.stream_per,
                "stream": stream_key(self._prefix, context.id, None)
                + (":<variable_id>" if self._per_variable else ""),
            }
        )

    def _record_run(self, context: DataCollectionContext, state: str) -> None:
        """Store the run's metadata in ``<prefix>:runs:<id>``; drop runs that ended before ``max_age_s``."""
        start = context.start_date or datetime.now(UTC)
        field_name = str(time_us(start))
        document = self._run_document(context, state)
        key = runs_key(self._prefix, context.id)
        with self.lock:
            client = self._connected()
            try:
                self._check_types(client, [(key, "hash")])
                stale: list[bytes] = []
                if state == "running":
                    horizon = time.time() - self._max_age_s
                    for name, raw in client.hgetall(key).items():
                        try:
                            ended = json.loads(raw).get("end")
                            if ended and datetime.fromisoformat(ended).timestamp() < horizon:
                                stale.append(name)
                        except (ValueError, AttributeError, TypeError):
                            continue
                pipe = client.pipeline(transaction=True)
                if stale:
                    pipe.hdel(key, *stale)
                pipe.hset(key, field_name, document)
                pipe.pexpire(key, self._ttl_ms)
                pipe.execute()
            except Exception as exc:
                raise self._error(f"recording the {state} run of context {context.id}", exc) from self._cause(
                    exc
                )
            self._touched[key] = time.monotonic()

    # -- writing -----------------------------------------------------------------------------------
    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        if not len(variables):
            return
        with self.lock:
            client = self._connected()
            try:
                self._write(client, context, variables)
            except Exception as exc:
                if _is_oom(exc):  # Redis is full: our cap may free room (XTRIM runs despite OOM)
                    try:
                        self.enforce_size_cap()
                    except Exception as again:
                        _log.warning("%s: the size check after an OOM error failed: %s", self.name, again)
                raise self._error(
                    f"writing {len(variables)} samples of context {context.id}", exc
                ) from self._cause(exc)
            if self._size_check_s == 0 or time.monotonic() - self._size_checked_at >= self._size_check_s:
                try:
                    self.enforce_size_cap()
                except Exception as exc:  # the batch is written; the next write checks again
                    _log.warning("%s: the size check failed (%s); retried at the next write", self.name, exc)

    def _encode(
        self, context: DataCollectionContext, variables: CollectedVariables, now_ms: int
    ) -> tuple[dict[str, _Batch], dict[int, tuple[int, str]]]:
        """Per stream key, the batch's samples encoded; per variable, its last sample (read µs, JSON)."""
        cid = context.id
        per_variable = self._per_variable
        batches: dict[str, _Batch] = {}
        single: _Batch | None = None
        if not per_variable:
            single = batches[stream_key(self._prefix, cid)] = _Batch(stream_key(self._prefix, cid))
        cache = self._var_cache
        if len(cache) > 1_000_000:  # variables made afresh for every batch: start over
            cache.clear()
        last: dict[
            int, tuple[int, _Batch, int, str, str | None, str]
        ] = {}  # vid -> (read µs, batch, index, ...)
        keep_latest = self._latest
        last_t: object = object()
        us: int | None = None
        us_b = b"-"
        iso = ""
        iso_b = b""
        ms = now_ms
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
                    us, us_b, iso, iso_b, ms = None, b"-", "", b"", now_ms
                else:
                    us = time_us(t)
                    us_b = str(us).encode()
                    iso = iso_utc(t)
                    iso_b = iso.encode()
                    ms = us // 1000
            known = cache.get((cid, var))
            if known is None:
                known = cache[(cid, var)] = _VarCodes.of(self._prefix, cid, var, per_variable)
            batch = single
            if batch is None:
                batch = batches.get(known.key)
                if batch is None:
                    batch = batches[known.key] = _Batch(known.key)
            vj = value_json(value)
            mid_b = known.mid_prefix + us_b
            batch.read_ms.append(ms)
            batch.mids.append(mid_b)
            batch.fields.append(
                (
                    mid_b,
                    known.cid_b,
                    known.vid_b,
                    iso_b,
                    vj.encode(),
                    known.value_type_b,
                    _QUALITY_B[quality],
                    b"" if not error else error.encode("utf-8", "backslashreplace"),
                )
            )
            if keep_latest:
                at = -(2**63) if us is None else us
                seen = last.get(known.vid)
                if seen is None or at >= seen[0]:
                    last[known.vid] = (at, batch, len(batch.mids) - 1, vj, error, known.labels)
        latest: dict[int, tuple[int, str]] = {}
        for vid, (at, batch, index, vj, error, labels) in last.items():
            f = batch.fields[index]
            read_at = '"' + f[3].decode() + '"' if f[3] else "null"
            err = "null" if error is None else json.dumps(error)
            latest[vid] = (
                at,
                f'{{"msg_id":"{f[0].decode()}","read_at":{read_at},"value":{vj},'
                f'"value_type":{json.dumps(f[5].decode())},"quality":"{f[6].decode()}","error":{err}{labels}}}',
            )
        return batches, latest

    def _check_types(self, client: Any, keys: Iterable[tuple[str, str]]) -> None:
        """Refuse (permanently) keys of this layout that hold another type: another application's."""
        todo = [(k, t) for k, t in keys if k not in self._checked_keys]
        if not todo:
            return
        pipe = client.pipeline(transaction=False)
        for key, _ in todo:
            pipe.type(key)
        for (key, expected), found in zip(todo, pipe.execute(), strict=True):
            kind = found.decode() if isinstance(found, bytes) else str(found)
            if kind not in ("none", expected):
                raise RedisWriteError(
                    f"{self.name}: key {key!r} holds a {kind}, not a {expected}: another application uses "
                    f"the prefix {self._prefix!r}; give this writer another prefix",
                    transient=False,
                )
            self._checked_keys.add(key)

    def _learn_streams(self, client: Any, keys: list[str]) -> None:
        """Read the last id of streams this writer has not written yet (one round trip)."""
        todo = [k for k in keys if k not in self._streams]
        if not todo:
            return
        self._check_types(client, [(k, "stream") for k in todo])
        pipe = client.pipeline(transaction=False)
        for key in todo:
            pipe.execute_command("XINFO", "STREAM", key)
        for key, info in zip(todo, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(info, Exception):
                if "no such key" not in str(info):
                    raise info
                top = (0, 0)
            else:
                top = parse_id(_get(info, "last-generated-id") or b"0-0")
            self._streams[key] = _Stream(top)

    def _stored_tail(self, client: Any, key: str) -> Counter[bytes]:
        """The msg ids of the last ``replay_tail_entries`` entries of ``key``."""
        found: Counter[bytes] = Counter()
        upper = "+"
        left = self._replay_tail
        while left > 0:
            page = client.xrevrange(key, upper, "-", count=min(_TAIL_PAGE, left))
            for _entry_id, fields in page:
                mid = fields.get(b"msg_id")
                if mid is not None:
                    found[mid] += 1
            left -= len(page)
            if len(page) < _TAIL_PAGE:
                break
            upper = "(" + page[-1][0].decode()
        return found

    def _skip_replayed(self, client: Any, context: DataCollectionContext, batch: _Batch) -> None:
        """Set ``batch.skip`` to the leading samples a replayed context's stream already holds."""
        replay = self._replays.get(batch.key)
        if replay is None or replay.context is not context:
            replay = self._replays[batch.key] = _Replay(context, self._stored_tail(client, batch.key))
        stored = replay.stored
        if stored is None:
            return
        used: Counter[bytes] = Counter()
        for mid in batch.mids:
            if used[mid] >= stored.get(mid, 0):
                break
            used[mid] += 1
            batch.skip += 1

    def _commit_replay(self, batch: _Batch) -> None:
        replay = self._replays.get(batch.key)
        if replay is None or replay.stored is None:
            return
        if batch.skip < len(batch.mids):
            replay.stored = None  # a sample not stored: everything after it is new
            return
        for mid in batch.mids:
            replay.stored[mid] -= 1

    def _write(self, client: Any, context: DataCollectionContext, variables: CollectedVariables) -> None:
        now_s = time.time()
        now_ms = int(now_s * 1000)
        mono = time.monotonic()
        cid = context.id
        batches, latest = self._encode(context, variables, now_ms)
        keys = list(batches)
        self._learn_streams(client, keys)
        lkey = latest_key(self._prefix, cid)
        ikey = index_key(self._prefix)
        rkey = runs_key(self._prefix, cid)
        self._check_types(client, [(ikey, "zset"), (rkey, "hash")] + ([(lkey, "hash")] if latest else []))
        if context.deduced_metadata.get(REPLAY_KEY) is True and self._replay_tail:
            for batch in batches.values():
                self._skip_replayed(client, context, batch)
        # ids: from each stream's known top, so a retry of this batch gets the same ids
        tops: dict[str, tuple[int, int]] = {}
        ids: dict[str, list[tuple[int, int]]] = {}
        for key, batch in batches.items():
            top = self._streams[key].top
            assigned = []
            for read_ms in batch.read_ms[batch.skip :]:
                top = next_id(top, read_ms, now_ms)
                assigned.append(top)
            ids[key] = assigned
            tops[key] = top
        cut = f"{max(0, now_ms - int(self._max_age_s * 1000))}-0"
        pipe = client.pipeline(transaction=True)
        cap = ("MAXLEN", "~", self._max_len) if self._max_len else ()
        positions: list[tuple[int, str, int]] = []  # (command number, key, index in the batch) per XADD
        trimmed: list[str] = []
        touched: list[str] = []
        queued = 0
        for key, batch in batches.items():
            skip = batch.skip
            for i, (ms, seq) in enumerate(ids[key]):
                f = batch.fields[skip + i]
                pipe.execute_command(
                    "XADD",
                    key,
                    *cap,
                    f"{ms}-{seq}",
                    _NAMES[0],
                    f[0],
                    _NAMES[1],
                    f[1],
                    _NAMES[2],
                    f[2],
                    _NAMES[3],
                    f[3],
                    _NAMES[4],
                    f[4],
                    _NAMES[5],
                    f[5],
                    _NAMES[6],
                    f[6],
                    _NAMES[7],
                    f[7],
                )
                positions.append((queued, key, skip + i))
                queued += 1
            state = self._streams[key]
            if mono - state.trimmed_at >= TRIM_PERIOD_S:
                pipe.execute_command("XTRIM", key, "MINID", "~", cut)
                trimmed.append(key)
                queued += 1
            if mono - state.touched_at >= self._refresh_s:
                pipe.execute_command("PEXPIRE", key, self._ttl_ms)
                pipe.execute_command("ZADD", ikey, now_ms, key)
                touched.append(key)
                queued += 2
        fresh = {
            vid: (at, doc)
            for vid, (at, doc) in latest.items()
            if at >= self._latest_us.get((cid, vid), -(2**63))
        }
        if fresh:
            pipe.hset(lkey, mapping={str(vid): doc for vid, (_, doc) in fresh.items()})
            queued += 1
        refresh = [k for k in (lkey, rkey, ikey) if mono - self._touched.get(k, -math.inf) >= self._refresh_s]
        for k in refresh:
            pipe.execute_command("PEXPIRE", k, self._ttl_ms)
            queued += 1
        if not queued:  # every sample was stored before (a replay): nothing to send
            for batch in batches.values():
                self._commit_replay(batch)
            self.duplicates_skipped += sum(b.skip for b in batches.values())
            return
        results = pipe.execute(raise_on_error=False)
        # XADD results: ids, or the refusal of an id not above the stream's top (stored before)
        rejected: dict[str, list[int]] = {}
        xadds = set()
        for n, key, index in positions:
            xadds.add(n)
            result = results[n]
            if isinstance(result, Exception):
                if _REJECTED in str(result):
                    rejected.setdefault(key, []).append(index)
                else:
                    raise result
        for n, result in enumerate(results):
            if n not in xadds and isinstance(result, Exception):
                self._warn_once(
                    f"aux:{type(result).__name__}", f"a latest-value, trim or expiry command failed: {result}"
                )
        written = len(positions)
        if rejected:
            written -= self._resolve(client, batches, ids, rejected, tops, now_ms)
        # committed: what this batch wrote is the streams' new state
        for key, batch in batches.items():
            state = self._streams[key]
            state.top = max(state.top, tops[key])
            self._commit_replay(batch)
        for key in trimmed:
            self._streams[key].trimmed_at = mono
        for key in touched:
            self._streams[key].touched_at = mono
        for k in refresh:
            self._touched[k] = mono
        for vid, (at, _) in fresh.items():
            self._latest_us[(cid, vid)] = at
        self.samples_written += written
        self.duplicates_skipped += sum(b.skip for b in batches.values())

    def _resolve(
        self,
        client: Any,
        batches: dict[str, _Batch],
        ids: dict[str, list[tuple[int, int]]],
        rejected: dict[str, list[int]],
        tops: dict[str, tuple[int, int]],
        now_ms: int,
    ) -> int:
        """Settle XADDs refused because their id was not above the stream's top; returns how many
        samples were already stored (duplicates, skipped).

        A refused sample whose id holds the same msg id was stored by an earlier attempt of this
        batch (its reply was lost): skipped. Any other (another writer used the stream, or the entry
        was trimmed since) is appended at the stream's end with a new id (at-least-once).
        """
        pipe = client.pipeline(transaction=False)
        spans = []
        for key, indexes in rejected.items():
            batch = batches[key]
            first = ids[key][indexes[0] - batch.skip]
            last = ids[key][indexes[-1] - batch.skip]
            pipe.xrange(key, f"{first[0]}-{first[1]}", f"{last[0]}-{last[1]}")
            pipe.execute_command("XINFO", "STREAM", key)
            spans.append(key)
        replies = pipe.execute()
        duplicates = 0
        again: dict[str, list[int]] = {}
        for n, key in enumerate(spans):
            batch = batches[key]
            stored = {entry_id: f.get(b"msg_id") for entry_id, f in replies[2 * n]}
            info = replies[2 * n + 1]
            real_top = parse_id(_get(info, "last-generated-id") or b"0-0")
            tops[key] = max(tops[key], real_top)
            for index in rejected[key]:
                ms, seq = ids[key][index - batch.skip]
                if stored.get(f"{ms}-{seq}".encode()) == batch.mids[index]:
                    duplicates += 1
                else:
                    again.setdefault(key, []).append(index)
        self.duplicates_skipped += duplicates
        if again:
            pipe = client.pipeline(transaction=True)
            cap = ("MAXLEN", "~", self._max_len) if self._max_len else ()
            count = 0
            for key, indexes in again.items():
                batch = batches[key]
                top = tops[key]
                for index in indexes:
                    top = next_id(top, batch.read_ms[index], now_ms)
                    fields = batch.fields[index]
                    pipe.execute_command(
                        "XADD",
                        key,
                        *cap,
                        f"{top[0]}-{top[1]}",
                        *[x for pair in zip(_NAMES, fields, strict=True) for x in pair],
                    )
                    count += 1
                tops[key] = top
            pipe.execute()
            self.samples_reappended += count
            _log.warning(
                "%s: %d samples found their stream id taken (another writer on prefix %r, or entries "
                "trimmed meanwhile): appended at the streams' end; consumers may see them out of order",
                self.name,
                count,
                self._prefix,
            )
        return duplicates

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned or len(self._warned) > 1000:
            return
        self._warned.add(key)
        _log.warning("%s: %s (logged once)", self.name, message)

    # -- the size cap ------------------------------------------------------------------------------
    def enforce_size_cap(self) -> int:
        """Measure the streams of the prefix (MEMORY USAGE) and, above ``max_bytes``, trim the oldest
        entries (of every stream, by entry id: read time) down to :data:`SIZE_TARGET` of it.

        Called by :meth:`write` at most every ``size_check_s``; returns the entries removed.
        """
        with self.lock:
            client = self._connected()
            self._size_checked_at = time.monotonic()
            self.size_checks += 1
            ikey = index_key(self._prefix)
            now_ms = int(time.time() * 1000)
            client.zremrangebyscore(ikey, "-inf", f"({now_ms - self._ttl_ms}")
            keys = [k.decode() for k in client.zrange(ikey, 0, -1)]
            removed = 0
            for _ in range(_MAX_SIZE_ROUNDS):
                streams = self._measure(client, keys)
                total = sum(s[0] for s in streams.values())
                self.last_size_bytes = total
                if total <= self._max_bytes:
                    break
                cut = _size_cut(list(streams.values()), int(self._max_bytes * SIZE_TARGET))
                pipe = client.pipeline(transaction=False)
                for key, (_, first, _, _) in streams.items():
                    if first < cut:
                        pipe.execute_command("XTRIM", key, "MINID", "=", f"{cut}-0")
                done = sum(int(n) for n in pipe.execute())
                removed += done
                _log.warning(
                    "%s: the streams of prefix %r use %d bytes, above max_bytes %d: removed the %d oldest "
                    "entries (read before %s)",
                    self.name,
                    self._prefix,
                    total,
                    self._max_bytes,
                    done,
                    datetime.fromtimestamp(cut / 1000, UTC).isoformat(timespec="milliseconds"),
                )
                if not done:
                    break
            self.size_trimmed_entries += removed
            return removed

    @staticmethod
    def _measure(client: Any, keys: list[str]) -> dict[str, tuple[int, int, int, int]]:
        """Per existing stream: (bytes, first entry ms, last entry ms, length)."""
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("MEMORY", "USAGE", key)
            pipe.execute_command("XINFO", "STREAM", key)
        replies = pipe.execute(raise_on_error=False)
        out: dict[str, tuple[int, int, int, int]] = {}
        for n, key in enumerate(keys):
            usage, info = replies[2 * n], replies[2 * n + 1]
            if not isinstance(usage, int) or isinstance(info, Exception) or not isinstance(info, Mapping):
                continue  # expired meanwhile
            length = int(_get(info, "length") or 0)
            first = _get(info, "first-entry")
            last = _get(info, "last-entry")
            if not length or not first or not last:
                continue
            out[key] = (usage, parse_id(first[0])[0], parse_id(last[0])[0], length)
        return out


def _get(info: Any, name: str) -> Any:
    """A field of an XINFO STREAM reply (redis-py gives str or bytes keys, depending on the path)."""
    if not isinstance(info, Mapping):
        if isinstance(info, list | tuple):  # a raw reply: [name, value, name, value, ...]
            info = {info[i]: info[i + 1] for i in range(0, len(info) - 1, 2)}
        else:
            return None
    value = info.get(name)
    if value is None:
        value = info.get(name.encode())
    return value


def _size_cut(streams: list[tuple[int, int, int, int]], target: int) -> int:
    """The smallest time (ms) such that, entries spread evenly in time within each stream, the
    streams keep at most ``target`` bytes when every entry read before it is removed."""

    def kept(cut: int) -> float:
        total = 0.0
        for usage, first, last, _ in streams:
            if cut <= first:
                total += usage
            elif cut <= last:
                total += usage * (last - cut + 1) / (last - first + 1)
        return total

    lo = min(s[1] for s in streams)
    hi = max(s[2] for s in streams) + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if kept(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _is_oom(exc: BaseException) -> bool:
    """Whether Redis refused a write for lack of memory (``maxmemory`` reached)."""
    if not isinstance(exc, redis.exceptions.ResponseError):
        return False
    code = getattr(exc, "status_code", None)
    return code == "OOM" or "OOM" in str(exc)
