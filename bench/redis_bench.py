"""Redis writer benchmark: RedisDataWriter.write() against raw redis-py doing the same pipelined XADDs.

Run (niced, under a minute): ``nice -n 19 python bench/redis_bench.py [--url redis://127.0.0.1:6379/0]``

(a) Per shape (one stream per context with batches of 1,000 and 10,000 samples; one stream per
    variable with 1,000 variables per batch), the same batches (float samples as the
    RandomDataReader reads them, in ``CollectedVariables``) written by ``RedisDataWriter.write()``
    and by a raw redis-py loop that turns each sample into the same eight fields (JSON value,
    ISO-8601 read time, message id) and sends one ``XADD key MAXLEN ~ N * ...`` per sample in one
    MULTI/EXEC pipeline per batch. Each side first writes one batch untimed (connection, the writer
    learning its streams' last ids). The writer does more per batch (explicit entry ids, the latest
    value of each variable in a hash, the time-cap XTRIM and expiry refreshes at their cadence, the
    size check every ``size_check_s``); the raw loop does only the XADDs. Rounds alternate (ours,
    raw, ...); the median of each is shown, and the ratio ours/raw.
(b) Through a DataCollector: 2,000 float variables of the RandomDataReader at 100 ms (20,000
    samples/s) for ``--seconds`` (10): samples written, dropped, lost; the writer's queue at the end.

Prints a table, then one JSON line. Asserts nothing. Keys go under a unique prefix and are deleted.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_collector import CollectedVariables, DataCollectionContext, DataCollector, Variable
from data_reader.random import RandomDataReader
from data_writer.redis import RedisDataWriter

LOG = logging.getLogger("bench")
MAX_LEN = 10_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def make_batches(n_vars: int, n_batches: int, start: datetime) -> list[CollectedVariables]:
    """``n_batches`` ticks of ``n_vars`` float variables, 100 ms apart, read by the RandomDataReader."""
    reader = RandomDataReader()
    variables = [Variable(i, "sine:7", "float", "random", 100) for i in range(1, n_vars + 1)]
    out = []
    for b in range(n_batches):
        batch = CollectedVariables.of(variables, start + timedelta(milliseconds=100 * b))
        reader.read(batch)
        out.append(batch)
    return out


def raw_write(client: Any, key_of: Any, cid: int, batch: CollectedVariables) -> None:
    """The same XADDs as the writer's, the plain way: fields built per sample, one MULTI/EXEC per batch."""
    pipe = client.pipeline(transaction=True)
    for var, value, t, q, err in zip(
        batch.variables, batch.values, batch.read_ats, batch.qualities, batch.errors, strict=True
    ):
        assert t is not None
        us = (t - _EPOCH) // timedelta(microseconds=1)
        pipe.xadd(
            key_of(var.id),
            {
                "msg_id": f"{cid}:{var.id}:{us}",
                "context_id": cid,
                "variable_id": var.id,
                "read_at": t.isoformat(timespec="microseconds"),
                "value": json.dumps(value),
                "value_type": var.value_type,
                "quality": q.value,
                "error": err or "",
            },
            maxlen=MAX_LEN,
            approximate=True,
        )
    pipe.execute()


def compare(
    url: str, prefix: str, label: str, n_vars: int, n_batches: int, per: str, rounds: int
) -> dict[str, Any]:
    """Median samples/s of the writer and of the raw loop over ``rounds`` alternating rounds."""
    client = redis.Redis.from_url(url)
    ours_rates, raw_rates = [], []
    samples = n_vars * (n_batches - 1)
    for r in range(rounds):
        start = datetime.now(UTC) - timedelta(minutes=30) + timedelta(minutes=r)
        batches = make_batches(n_vars, n_batches, start)
        cid = 10 * r + 1
        writer = RedisDataWriter(url, prefix=f"{prefix}-ours", stream_per=per)  # type: ignore[arg-type]
        ctx = DataCollectionContext(cid, batches[0].variables)
        writer.open()
        with writer.lock:
            writer.write(ctx, batches[0])  # warm-up, untimed: connects and learns the streams
        t0 = time.perf_counter()
        with writer.lock:
            for batch in batches[1:]:
                writer.write(ctx, batch)
        ours_rates.append(samples / (time.perf_counter() - t0))
        writer.close()

        def key_of(vid: int, cid: int = cid) -> str:
            return f"{prefix}-raw:stream:{cid}" + (f":{vid}" if per == "variable" else "")

        raw_write(client, key_of, cid, batches[0])  # warm-up, untimed
        t0 = time.perf_counter()
        for batch in batches[1:]:
            raw_write(client, key_of, cid, batch)
        raw_rates.append(samples / (time.perf_counter() - t0))
    client.close()
    ours, raw = statistics.median(ours_rates), statistics.median(raw_rates)
    return {
        "shape": label,
        "samples": samples,
        "ours_per_s": round(ours),
        "raw_per_s": round(raw),
        "ratio": round(ours / raw, 3),
    }


def through_collector(url: str, prefix: str, n_vars: int, seconds: float) -> dict[str, Any]:
    writer = RedisDataWriter(url, prefix=f"{prefix}-collector")
    variables = [Variable(i, "sine:7", "float", "random", 100) for i in range(1, n_vars + 1)]
    with DataCollector(LOG, [RandomDataReader()], [writer]) as c:
        c.start(DataCollectionContext(1, variables, duration_s=seconds))
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds + 0.5 and 1 in c.contexts():
            time.sleep(0.2)
        queue = c.stats().writers[writer.name].queue_depth
    s = c.stats().writers[writer.name]
    return {
        "variables": n_vars,
        "interval_ms": 100,
        "seconds": seconds,
        "delivered": s.samples_delivered,
        "written": s.samples_written,
        "per_s": round(s.samples_written / seconds),
        "dropped": s.dropped_samples,
        "lost": s.lost_samples,
        "queue_at_end": queue,
    }


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    prefix = f"dcbench-{uuid.uuid4().hex[:8]}"
    info = redis.Redis.from_url(args.url).info("server")
    try:
        shapes = [
            compare(args.url, prefix, "per context, 1,000 samples/batch", 1_000, 40, "context", args.rounds),
            compare(args.url, prefix, "per context, 10,000 samples/batch", 10_000, 4, "context", args.rounds),
            compare(
                args.url, prefix, "per variable, 1,000 variables/batch", 1_000, 40, "variable", args.rounds
            ),
        ]
        collected = through_collector(args.url, prefix, 2_000, args.seconds)
    finally:
        delete_prefix(args.url, prefix)
    versions = f"redis-py {redis.__version__}; Python {platform.python_version()}"
    print(f"Redis {info.get('redis_version')} at {args.url}; {versions}")
    print()
    print(f"{'shape':40} {'samples':>8} {'ours/s':>9} {'raw/s':>9} {'ours/raw':>8}")
    for s in shapes:
        print(f"{s['shape']:40} {s['samples']:>8} {s['ours_per_s']:>9} {s['raw_per_s']:>9} {s['ratio']:>8}")
    print()
    c = collected
    print(
        f"through a DataCollector: {c['variables']} variables at {c['interval_ms']} ms "
        f"for {c['seconds']:g} s: "
        f"{c['written']} of {c['delivered']} samples written ({c['per_s']}/s), dropped {c['dropped']}, "
        f"lost {c['lost']}, queue at the end {c['queue_at_end']}"
    )
    print(
        json.dumps(
            {"bench": "redis", "shapes": shapes, "collector": collected, "redis": info.get("redis_version")}
        )
    )


if __name__ == "__main__":
    main()
