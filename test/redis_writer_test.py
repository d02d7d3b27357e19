"""The Redis writer against the real Redis: what a stream reader gets, the caps, outages, bad options.

Every test uses its own key prefix (deleted at the end; the server is shared, never FLUSHDB) and
skips when Redis is unreachable unless ``DC_REQUIRE_SERVICES=1``. Outages go through the fault
proxy (test/_faultproxy.py); ground truth is a second, in-memory writer fed the same batches.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import pytest
from _cases.redis_cases import REDIS_URL, delete_prefix, require_redis, unique_prefix
from _faultproxy import FaultProxy
from _util import LOG, CountingReader, RecordingWriter, Row, wait_for

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    Quality,
    Variable,
)

redis = pytest.importorskip(
    "redis", reason='the Redis writer needs redis-py: pip install "data-collector[redis]"'
)

from data_writer.redis import (  # noqa: E402
    RedisDataWriter,
    RedisSample,
    RedisWriteError,
    StreamFollower,
    read_latest,
    read_runs,
    read_samples,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def prefix() -> Iterator[str]:
    require_redis()
    name = unique_prefix()
    try:
        yield name
    finally:
        delete_prefix(REDIS_URL, name)


@pytest.fixture
def client() -> Iterator[Any]:
    require_redis()
    c = redis.Redis.from_url(REDIS_URL)
    try:
        yield c
    finally:
        c.close()


def _proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, parts.query, ""))


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    require_redis()
    parts = urlsplit(REDIS_URL)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as p:
        yield p


def _us(t: datetime | None) -> int:
    assert t is not None
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _key(x: Row | RedisSample) -> tuple[int, int, datetime]:
    assert x.read_at is not None
    return (x.context_id, x.variable_id, x.read_at)


def _same(stored: list[RedisSample], rows: list[Row]) -> None:
    """``stored`` holds exactly ``rows``, in the same order, with the same values."""
    assert [_key(s) for s in stored] == [_key(r) for r in rows]
    for s, r in zip(stored, rows, strict=True):
        assert (s.value, type(s.value), s.quality, s.error) == (r.value, type(r.value), r.quality, r.error)


def _exactly_once(stored: list[RedisSample], rows: list[Row]) -> None:
    counts = Counter(s.msg_id for s in stored)
    dupes = {k: n for k, n in counts.items() if n > 1}
    assert not dupes, f"{len(dupes)} samples stored more than once, e.g. {list(dupes.items())[:3]}"
    expected = {_key(r) for r in rows}
    got = {_key(s) for s in stored}
    assert not expected - got, (
        f"{len(expected - got)} samples read but not stored, e.g. {sorted(expected - got)[:3]}"
    )
    assert got == expected
    for vid in {r.variable_id for r in rows}:  # in read order per variable
        times = [s.read_at for s in stored if s.variable_id == vid]
        assert None not in times
        assert times == sorted(t for t in times if t is not None)


def _variables() -> list[Variable]:
    return [
        Variable(1, "counter", "int", "random", 20),
        Variable(2, "sine", "float", "random", 20),
        Variable(3, "random", "bool", "random", 40),
        Variable(4, 'constant:Grüße "q"\nline', "str", "random", 40),
        Variable(5, "bad:device says no", "float", "random", 60),
    ]


# -- what a reader of the stream gets ---------------------------------------------------------------------
@pytest.mark.parametrize("stream_per", ["context", "variable"])
def test_a_reader_of_the_stream_gets_exactly_the_samples_read_in_order(prefix: str, stream_per: str) -> None:
    follower = StreamFollower(redis.Redis.from_url(REDIS_URL), prefix=prefix, context_id=7, rescan_s=0.05)
    follower.poll(block_ms=1)  # following before the first sample: everything that arrives is new
    got: list[RedisSample] = []
    stop = threading.Event()

    def follow() -> None:
        while not stop.is_set():
            got.extend(follower.poll(block_ms=50))

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    rec = RecordingWriter()
    writer = RedisDataWriter(REDIS_URL, prefix=prefix, stream_per=stream_per)  # type: ignore[arg-type]
    try:
        with DataCollector(LOG, [CountingReader()], [writer, rec]) as c:
            c.start(DataCollectionContext(7, _variables(), min_interval_ms=10))
            wait_for(lambda: len(rec.of(7)) >= 150, 20, "samples read")
            c.stop(7)
        wait_for(lambda: len(got) >= len(rec.of(7)), 10, "the follower to see every sample")
    finally:
        stop.set()
        thread.join(5)
        follower.client.close()
    rows = rec.of(7)
    assert {r.quality for r in rows} == {Quality.GOOD, Quality.BAD}
    if stream_per == "context":
        _same(got, rows)  # one stream: exactly the order the writer got them in
    else:
        for vid in range(1, 6):  # one stream per variable: each in order
            _same([s for s in got if s.variable_id == vid], [r for r in rows if r.variable_id == vid])
        assert len(follower.streams) == 1 + 5  # the per-context key it also watches, and five streams
    _exactly_once(read_samples(REDIS_URL, 7, prefix=prefix), rows)
    assert writer.samples_written == len(rows) and writer.duplicates_skipped == 0
    assert all(s.msg_id == f"7:{s.variable_id}:{_us(s.read_at)}" for s in got)


def test_the_documented_keys_latest_values_and_runs(prefix: str, client: Any) -> None:
    rec = RecordingWriter()
    writer = RedisDataWriter(REDIS_URL, prefix=prefix, max_age_s=600)
    with DataCollector(LOG, [CountingReader()], [writer, rec]) as c:
        c.start(DataCollectionContext(3, _variables(), min_interval_ms=10, metadata={"batch": "B-7"}))
        wait_for(lambda: len(rec.of(3)) >= 40, 20, "samples read")
        c.stop(3)
    keys = {k.decode() for k in client.scan_iter(match=f"{prefix}:*")}
    assert keys == {f"{prefix}:stream:3", f"{prefix}:latest:3", f"{prefix}:runs:3", f"{prefix}:streams"}
    assert client.type(f"{prefix}:stream:3") == b"stream"
    for key in keys:  # every key expires with the data: max_age_s plus at most one refresh period
        ttl = client.pttl(key)
        assert 590_000 <= ttl <= writer.key_ttl_s * 1000, (key, ttl)
    latest = read_latest(REDIS_URL, 3, prefix=prefix)
    for vid in range(1, 6):
        last = rec.of(3, vid)[-1]
        assert (latest[vid].read_at, latest[vid].value, latest[vid].quality, latest[vid].error) == (
            last.read_at,
            last.value,
            last.quality,
            last.error,
        )
    (run,) = read_runs(REDIS_URL, 3, prefix=prefix)
    assert run["metadata"] == {"batch": "B-7"} and run["state"] == "stopped"
    assert run["deduced_metadata"]["ended"] and run["end"] and run["stream"] == f"{prefix}:stream:3"
    assert [v["address"] for v in run["variables"]] == [v.address for v in _variables()]


# -- caps -------------------------------------------------------------------------------------------------
def _batch(variables: list[Variable], times: list[datetime], start: int = 0) -> CollectedVariables:
    """One sample per (time, variable), values counting up from ``start``."""
    items = CollectedVariables.of([v for _ in times for v in variables])
    n = start
    for i, item in enumerate(items):
        item.read_at = times[i // len(variables)]
        item.value = float(n)
        item.quality = Quality.GOOD
        n += 1
    return items


def _node_entries(client: Any) -> int:
    return int(client.config_get("stream-node-max-entries")["stream-node-max-entries"])


def _stream(client: Any, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return list(client.xrange(key))


def test_the_time_cap_removes_only_entries_older_than_max_age(prefix: str, client: Any) -> None:
    writer = RedisDataWriter(REDIS_URL, prefix=prefix, max_age_s=10)
    ctx = DataCollectionContext(1, [Variable(1, "x", "float", "t"), Variable(2, "y", "float", "t")])
    now = datetime.now(UTC)
    times = [now - timedelta(seconds=20) + timedelta(milliseconds=10 * i) for i in range(2000)]
    batch = _batch(list(ctx.variables), times)
    with writer.lock:
        writer.write(ctx, batch)
    key = f"{prefix}:stream:1"
    kept = _stream(client, key)
    written = [f"1:{item.variable.id}:{_us(item.read_at)}".encode() for item in batch]
    # nothing but the oldest removed: what is left is the end of what was written, in order
    assert [f[b"msg_id"] for _, f in kept] == written[len(written) - len(kept) :]
    cut = now - timedelta(seconds=10)
    young = sum(1 for t in times if t >= cut) * 2
    old_left = len(kept) - young
    # XTRIM MINID ~ removes whole stream nodes only: at most one node of older entries is left
    assert 0 <= old_left < _node_entries(client), (len(kept), young)
    # entry ids follow the read time
    for entry_id, fields in kept[-10:]:
        read_at = datetime.fromisoformat(fields[b"read_at"].decode())
        assert int(entry_id.split(b"-")[0]) == _us(read_at) // 1000
    assert writer.samples_written == 4000


def test_keys_expire_with_the_data(prefix: str, client: Any) -> None:
    writer = RedisDataWriter(REDIS_URL, prefix=prefix, max_age_s=1)
    ctx = DataCollectionContext(2, [Variable(1, "x", "float", "t")])
    ctx_started = datetime.now(UTC)
    with writer.lock:
        writer.context_started(ctx)
        writer.write(ctx, _batch(list(ctx.variables), [ctx_started]))
    keys = [k.decode() for k in client.scan_iter(match=f"{prefix}:*")]
    assert len(keys) == 4
    for key in keys:
        assert 0 < client.pttl(key) <= writer.key_ttl_s * 1000 <= 1100
    wait_for(lambda: not list(client.scan_iter(match=f"{prefix}:*")), 10, "the keys to expire")


@pytest.mark.parametrize("stream_per", ["context", "variable"])
def test_the_size_cap_holds_and_removes_only_the_oldest(
    prefix: str, client: Any, stream_per: Literal["context", "variable"]
) -> None:
    max_bytes = 200_000
    writer = RedisDataWriter(
        REDIS_URL,
        prefix=prefix,
        stream_per=stream_per,
        max_bytes=max_bytes,
        size_check_s=0,
    )
    contexts = [
        DataCollectionContext(cid, [Variable(v, "x", "float", "t") for v in (1, 2, 3)]) for cid in (1, 2)
    ]
    base = datetime.now(UTC) - timedelta(hours=1)
    written: dict[str, list[bytes]] = {}
    sizes = []
    tick = 0
    for round_ in range(40):
        for ctx in contexts:
            times = [base + timedelta(milliseconds=10 * (tick + i)) for i in range(50)]
            batch = _batch(list(ctx.variables), times, start=round_ * 1000)
            with writer.lock:
                writer.write(ctx, batch)
            for item in batch:
                key = writer.stream_key(ctx.id, item.variable.id)
                written.setdefault(key, []).append(
                    f"{ctx.id}:{item.variable.id}:{_us(item.read_at)}".encode()
                )
            tick += 50
            usage = sum(client.memory_usage(k, samples=0) or 0 for k in written)
            sizes.append(usage)
    assert writer.size_trimmed_entries > 0 and max(sizes) > 0
    # the cap holds after every write (measured exactly; the writer estimates with MEMORY USAGE samples)
    assert max(sizes) <= max_bytes * 1.05, sizes
    assert sizes[-1] >= max_bytes * 0.5  # and it did not throw away much more than needed
    kept_all: list[tuple[int, bytes]] = []
    removed_newest = 0
    for key, mids in written.items():
        kept = [f[b"msg_id"] for _, f in _stream(client, key)]
        assert kept == mids[len(mids) - len(kept) :], key  # the end of what was written, in order
        kept_all += [(int(m.split(b":")[2]), m) for m in kept]
        if len(kept) < len(mids):
            removed_newest = max(removed_newest, int(mids[len(mids) - len(kept) - 1].split(b":")[2]))
    # across every stream: every entry removed was read before every entry kept
    assert removed_newest < min(t for t, _ in kept_all)
    total_removed = sum(len(m) for m in written.values()) - len(kept_all)
    assert total_removed == writer.size_trimmed_entries


def test_max_len_caps_each_stream(prefix: str, client: Any) -> None:
    writer = RedisDataWriter(REDIS_URL, prefix=prefix, max_len=300)
    ctx = DataCollectionContext(1, [Variable(1, "x", "float", "t")])
    base = datetime.now(UTC) - timedelta(minutes=5)
    with writer.lock:
        for n in range(20):
            writer.write(
                ctx,
                _batch(
                    list(ctx.variables),
                    [base + timedelta(milliseconds=10 * (100 * n + i)) for i in range(100)],
                    100 * n,
                ),
            )
    values = [float(f[b"value"]) for _, f in _stream(client, f"{prefix}:stream:1")]
    assert 300 <= len(values) < 300 + _node_entries(client)
    assert values == [float(x) for x in range(2000 - len(values), 2000)]


# -- retries, outages, replays ----------------------------------------------------------------------------
def _collector(
    url: str, prefix: str, tmp: Path, produced: RecordingWriter, **kw: Any
) -> tuple[DataCollector, RedisDataWriter]:
    writer = RedisDataWriter(url, prefix=prefix, name="redis", socket_timeout_s=2, connect_timeout_s=2)
    kw.setdefault("write_retry_s", 0.5)
    return DataCollector(LOG, [CountingReader()], [writer, produced], spool_dir=tmp / "spool", **kw), writer


def _two() -> list[Variable]:
    return [Variable(1, "counter", "int", "random", 20), Variable(2, "sine", "float", "random", 20)]


def test_an_outage_of_twelve_seconds_with_a_spool_loses_nothing(
    prefix: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    produced = RecordingWriter()
    c, _ = _collector(_proxied(REDIS_URL, proxy.port), prefix, tmp_path, produced)
    with c:
        c.start(DataCollectionContext(1, _two(), min_interval_ms=10))
        wait_for(lambda: c.stats().writers["redis"].samples_written >= 20, 15, "first samples")
        proxy.cut()
        cut_at = time.monotonic()
        wait_for(lambda: time.monotonic() - cut_at >= 12, 14, "twelve seconds of outage")  # the outage itself
        assert c.stats().writers["redis"].queue_depth >= 500  # ~12 s x 100 samples/s waiting
        proxy.restore()
        wait_for(lambda: c.stats().writers["redis"].queue_depth == 0, 60, "the backlog written")
        c.stop(1)
        s = c.stats().writers["redis"]
    assert s.lost_samples == s.dropped_samples == s.unwritten_samples == 0 and s.write_errors >= 1
    _exactly_once(read_samples(REDIS_URL, 1, prefix=prefix), produced.of(1))


def test_a_lost_exec_reply_is_retried_without_a_duplicate(
    prefix: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    produced = RecordingWriter()
    c, writer = _collector(_proxied(REDIS_URL, proxy.port), prefix, tmp_path, produced)
    with c:
        c.start(DataCollectionContext(1, _two(), min_interval_ms=10))
        wait_for(lambda: c.stats().writers["redis"].samples_written >= 20, 15, "first samples")
        for i in range(3):  # Redis executes the transaction; the writer never hears it and retries
            proxy.reset_before_reply(b"EXEC")
            proxy.wait_fired(i + 1, timeout=15)
        wait_for(lambda: c.stats().writers["redis"].queue_depth == 0, 30, "the retried batches written")
        c.stop(1)
        s = c.stats().writers["redis"]
    assert s.lost_samples == s.dropped_samples == 0 and s.write_errors >= 3
    # the retries' ids were refused as already stored: exactly once, no re-append
    assert writer.duplicates_skipped >= 3 and writer.samples_reappended == 0
    _exactly_once(read_samples(REDIS_URL, 1, prefix=prefix), produced.of(1))


_KILLED = """
import logging, sys, time
from data_collector import DataCollectionContext, DataCollector, Variable
from data_reader.random import RandomDataReader
from data_writer.redis import RedisDataWriter
url, prefix, spool = sys.argv[1:4]
writer = RedisDataWriter(url, prefix=prefix, name="redis")
# acks reach the disk only at a sync (or when their buffer fills): a kill -9 leaves written batches
# unacknowledged, so the next collector replays batches Redis already holds
c = DataCollector(logging.getLogger("k"), [RandomDataReader()], [writer], spool_dir=spool, spool_sync_s=60)
variables = [Variable(v, "counter", "int", "random", 10) for v in (1, 2, 3)]
c.start(DataCollectionContext(1, variables, min_interval_ms=10))
print("started", flush=True)
time.sleep(600)
"""


def test_a_replay_after_kill_9_skips_what_redis_holds(prefix: str, client: Any, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED, REDIS_URL, prefix, str(spool)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        wait_for(lambda: client.xlen(f"{prefix}:stream:1") >= 600, 30, "samples written by the child")
    finally:
        proc.kill()
        proc.wait(10)
    before = len(read_samples(REDIS_URL, 1, prefix=prefix))
    writer = RedisDataWriter(REDIS_URL, prefix=prefix, name="redis")
    with DataCollector(LOG, [], [writer], spool_dir=spool) as c:
        c.open()  # replays the spool at once
        wait_for(lambda: c.stats().writers["redis"].queue_depth == 0, 60, "the spool written")
        replayed = c.stats().writers["redis"].replayed_samples
    assert replayed > 0 and writer.duplicates_skipped > 0, (replayed, writer.duplicates_skipped)
    stored = read_samples(REDIS_URL, 1, prefix=prefix)
    assert len(stored) == before + writer.samples_written
    counts = Counter(s.msg_id for s in stored)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:3]
    for vid in (1, 2, 3):  # every 10 ms boundary from the first to the last, none twice, none missing
        slots = [_us(s.read_at) // 10_000 for s in stored if s.variable_id == vid]
        assert slots == list(range(slots[0], slots[0] + len(slots))), vid


def test_redis_down_at_open_is_transient_and_names_no_password(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    writer = RedisDataWriter(f"redis://:pw-s3cret@127.0.0.1:{port}/0", connect_timeout_s=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(RedisWriteError) as info:
        writer.open()
    assert info.value.transient and writer.is_transient(info.value)
    assert "pw-s3cret" not in str(info.value) and "***" in str(info.value)
    assert "pw-s3cret" not in repr(writer) + writer.name + caplog.text


def test_a_wrong_password_is_permanent(prefix: str) -> None:
    parts = urlsplit(REDIS_URL)
    writer = RedisDataWriter(REDIS_URL, password="not-the-password-xyz", username="no-such-user")
    with pytest.raises(RedisWriteError) as info:
        writer.open()
    assert not info.value.transient and "not-the-password-xyz" not in str(info.value), str(info.value)
    assert parts.hostname is not None and parts.hostname in str(info.value)


def test_a_key_of_another_type_is_refused_for_good(prefix: str, client: Any) -> None:
    client.set(f"{prefix}:stream:4", "not a stream")
    writer = RedisDataWriter(REDIS_URL, prefix=prefix)
    ctx = DataCollectionContext(4, [Variable(1, "x", "float", "t")])
    with pytest.raises(RedisWriteError, match="holds a string, not a stream") as info:
        writer.write(ctx, _batch(list(ctx.variables), [datetime.now(UTC)]))
    assert not writer.is_transient(info.value)


# -- bad options ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"url": "http://127.0.0.1:6379"}, "http://"),
        ({"url": "redis://127.0.0.1:0/0"}, "port must be 1..65535, got 0"),
        ({"url": "redis://127.0.0.1:99999/0"}, "99999"),
        ({"url": "redis://127.0.0.1:6379/abc"}, "'abc'"),
        ({"url": "redis:///0"}, "names no host"),
        ({"url": ""}, "''"),
        ({"url": 6379}, "6379"),
        ({"prefix": ""}, "''"),
        ({"prefix": "has space"}, "'has space'"),
        ({"prefix": "glob*"}, "'glob*'"),
        ({"stream_per": "tag"}, "'tag'"),
        ({"max_len": -1}, "-1"),
        ({"max_len": 1.5}, "1.5"),
        ({"max_age_s": 0}, "got 0"),
        ({"max_age_s": float("nan")}, "nan"),
        ({"max_age_s": "1d"}, "'1d'"),
        ({"max_bytes": 0}, "got 0"),
        ({"max_bytes": "1 XB"}, "'1 XB'"),
        ({"max_bytes": True}, "True"),
        ({"size_check_s": -1}, "-1"),
        ({"latest": "yes"}, "'yes'"),
        ({"socket_timeout_s": 0}, "got 0"),
        ({"connect_timeout_s": 10**400}, "at most"),
        ({"replay_tail_entries": -5}, "-5"),
        ({"name": ""}, "''"),
        ({"username": ""}, "''"),
    ],
)
def test_bad_options_are_configuration_errors_naming_the_value(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisDataWriter(**kwargs)
    assert named in str(info.value), str(info.value)


def test_the_password_is_never_shown() -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisDataWriter("redis://:pw-s3cret@127.0.0.1:6379/0", password="other-s3cret")
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        RedisDataWriter("redis://:pw-s3cret@127.0.0.1:99999/0")
    assert "pw-s3cret" not in str(info.value)
    w = RedisDataWriter("redis://user:pw-s3cret@127.0.0.1:6379/0?password=pw-s3cret")
    assert "pw-s3cret" not in repr(w) + w.name + w.url
    w = RedisDataWriter("redis://127.0.0.1:6379/0", password="pw-s3cret")
    assert "pw-s3cret" not in repr(w) + w.name + w.url


def test_byte_sizes_in_text() -> None:
    assert RedisDataWriter(max_bytes="512 MiB").max_bytes == 512 << 20
    assert RedisDataWriter(max_bytes="1 GB").max_bytes == 10**9
    assert RedisDataWriter().max_bytes == 1 << 30 and RedisDataWriter().max_age_s == 86400


# -- data-collector tail ----------------------------------------------------------------------------------
def _tail(prefix: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "data_collector", "tail", REDIS_URL, "--prefix", prefix, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _following(client: Any) -> bool:
    """Whether a ``data-collector tail`` is blocked in XREAD."""
    return any(
        c.get("name") == "data-collector-tail" and c.get("cmd") == "xread" for c in client.client_list()
    )


def test_tail_prints_what_arrives(prefix: str, client: Any) -> None:
    proc = _tail(prefix, "--context", "5", "--count", "30", "--seconds", "60")
    writer = RedisDataWriter(REDIS_URL, prefix=prefix)
    ctx = DataCollectionContext(5, [Variable(1, "x", "float", "t"), Variable(2, "y", "float", "t")])
    sent: list[str] = []
    try:
        wait_for(lambda: _following(client), 30, "tail to follow")
        now = datetime.now(UTC)
        batch = _batch(list(ctx.variables), [now + timedelta(milliseconds=i) for i in range(15)])
        with writer.lock:
            writer.write(ctx, batch)
        for item in batch:
            assert item.read_at is not None
            at = item.read_at.isoformat(timespec="microseconds")
            sent.append(f"{at}  context=5  variable={item.variable.id}  GOOD  {item.value!r}")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.splitlines() == sent


def test_tail_from_start_filters_a_variable_and_shows_errors(prefix: str) -> None:
    writer = RedisDataWriter(REDIS_URL, prefix=prefix, stream_per="variable")
    ctx = DataCollectionContext(6, [Variable(1, "x", "float", "t"), Variable(2, "y", "str", "t")])
    now = datetime.now(UTC)
    batch = _batch(list(ctx.variables), [now + timedelta(milliseconds=i) for i in range(5)])
    batch[3].set_bad("device says no")
    batch[5].value = "text"
    with writer.lock:
        writer.write(ctx, batch)
    proc = _tail(
        prefix, "--context", "6", "--variable", "2", "--from-start", "--count", "5", "--seconds", "30"
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 5 and all("variable=2" in line for line in lines)
    assert lines[1].endswith('BAD  null  error="device says no"') and lines[2].endswith('GOOD  "text"')


def test_tail_ends_with_status_0_on_ctrl_c(prefix: str, client: Any) -> None:
    writer = RedisDataWriter(REDIS_URL, prefix=prefix)
    ctx = DataCollectionContext(8, [Variable(1, "x", "float", "t")])
    with writer.lock:
        writer.write(ctx, _batch(list(ctx.variables), [datetime.now(UTC)]))
    proc = _tail(prefix)
    try:
        wait_for(lambda: _following(client) or proc.poll() is not None, 30, "tail to follow")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err


def test_tail_says_when_redis_was_never_reached() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_collector",
            "tail",
            f"redis://:pw-s3cret@127.0.0.1:{port}/0",
            "--seconds",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert "unreachable" in done.stderr and "pw-s3cret" not in done.stderr + done.stdout
