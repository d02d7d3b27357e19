"""Contract cases of the Redis writer (the local Redis), one stream per context and per variable.

The server URL comes from ``DC_TEST_REDIS_URL`` (default: the local server, redis://127.0.0.1:6379/0);
a case skips when it is unreachable or refuses the URL's login unless ``DC_REQUIRE_SERVICES=1``.
Every store uses its own key prefix and deletes its keys on exit (other test runs share the
server: never FLUSHDB).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from data_collector import DataWriter
from data_collector.testing import FaultProxy

from . import StoredRun, StoredSample, WriterCase, WriterHarness, require_login, require_service

REDIS_URL = os.environ.get("DC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis(url: str = REDIS_URL) -> None:
    """Skip (or fail under DC_REQUIRE_SERVICES=1) when redis-py is missing or the server does not answer."""
    if os.environ.get("DC_REQUIRE_SERVICES") != "1":
        pytest.importorskip(
            "redis", reason='the Redis writer needs redis-py: pip install "data-collector[redis]"'
        )
    parts = urlsplit(url)
    require_service(parts.hostname or "127.0.0.1", parts.port or 6379, "Redis")
    require_login(url, lambda: login_refused(url))


def login_refused(url: str) -> str | None:
    """Why Redis at ``url`` refuses the URL's credentials (AUTH failed, or required and not
    given), or None when a PING answers. Other errors are raised: they are failures."""
    import redis
    from redis.exceptions import AuthenticationError, ResponseError

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
        return None
    except (AuthenticationError, ResponseError) as exc:
        text = str(exc)
        if not isinstance(exc, AuthenticationError) and not text.startswith(
            ("NOAUTH", "WRONGPASS", "NOPERM")
        ):
            raise
        parts = urlsplit(url)
        return (
            f"Redis at {parts.hostname}:{parts.port or 6379} refused the test login: {text} "
            "(set DC_TEST_REDIS_URL, e.g. redis://user:password@host:6379/0)"
        )
    finally:
        client.close()


def unique_prefix() -> str:
    return f"dctest-{uuid.uuid4().hex[:12]}"


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key of ``prefix`` (tests only: the writer never deletes data)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@contextmanager
def redis_store(url: str = REDIS_URL) -> Iterator[str]:
    """A fresh key prefix on the test Redis; its keys are deleted on exit."""
    require_redis(url)
    prefix = unique_prefix()
    try:
        yield prefix
    finally:
        delete_prefix(url, prefix)


class RedisHarness(WriterHarness):
    def __init__(self, url: str, prefix: str, stream_per: str) -> None:
        self.url = url
        self.prefix = prefix
        self.stream_per = stream_per

    def new_writer(self) -> DataWriter:
        return self._writer(self.url)

    def _writer(self, url: str) -> DataWriter:
        from data_writer.redis import RedisDataWriter

        return RedisDataWriter(
            url,
            prefix=self.prefix,
            stream_per=self.stream_per,  # type: ignore[arg-type]
            max_age_s=3600,
            socket_timeout_s=2,
            connect_timeout_s=2,
        )

    def proxy_target(self) -> tuple[str, int] | None:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 6379

    def new_proxied_writer(self, proxy: FaultProxy) -> DataWriter:
        parts = urlsplit(self.url)
        netloc = f"127.0.0.1:{proxy.port}"
        if "@" in parts.netloc:
            netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
        return self._writer(parts._replace(netloc=netloc).geturl())

    def read_back(self, context_id: int) -> list[StoredSample]:
        from data_writer.redis import read_samples

        out = []
        for s in read_samples(self.url, context_id, prefix=self.prefix):
            assert s.read_at is not None
            out.append(StoredSample(s.context_id, s.variable_id, s.read_at, s.value, s.quality, s.error))
        return out

    def read_runs(self) -> dict[int, list[StoredRun]] | None:
        from data_writer.redis import read_runs, stream_keys

        ids = set()
        for key in stream_keys(self.url, prefix=self.prefix):
            ids.add(int(key.split(":stream:", 1)[1].split(":")[0]))
        runs: dict[int, list[StoredRun]] = {}
        for cid in sorted(ids):
            runs[cid] = [
                StoredRun(
                    datetime.fromisoformat(r["start"]) if r["start"] else None,
                    datetime.fromisoformat(r["end"]) if r["end"] else None,
                    r["metadata"],
                )
                for r in read_runs(self.url, cid, prefix=self.prefix)
            ]
        return runs


def _case(stream_per: str) -> Any:
    @contextmanager
    def make(tmp: Path) -> Iterator[WriterHarness]:
        with redis_store() as prefix:
            yield RedisHarness(REDIS_URL, prefix, stream_per)

    return make


WRITER_CASES = [
    WriterCase("redis-per-context", _case("context")),
    WriterCase("redis-per-variable", _case("variable")),
]
