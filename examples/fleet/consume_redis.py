"""Follow a fleet in Redis: one ``XREAD BLOCK`` over the streams of every collector (redis-py).

Run: ``python examples/fleet/consume_redis.py [--prefix fleet] [--seconds 10] [--from-start]
[--url redis://127.0.0.1:6379/0]``. Each collector of ``run_fleet.py`` writes with the key prefix
``<prefix>-<k>`` (its name), so its samples are in ``<prefix>-<k>:stream:<context id>``; this
finds those streams (``SCAN``), follows them all from their current end (or from their start)
and picks up streams that appear later (a collector started meanwhile). The collector of an
entry is the part of its key before ``:stream:``; its run's metadata is in ``<name>:runs:<id>``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any

import redis


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="fleet", help="the fleet's prefix (fleet)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--from-start", action="store_true", help="first what the streams hold")
    args = parser.parse_args()
    r: Any = redis.Redis.from_url(args.url, decode_responses=True)  # (redis-py's types are loose)
    last: dict[str, str] = {}  # stream key -> id of the last entry seen
    counts: Counter[str] = Counter()

    def discover(first: bool) -> None:
        for key in r.scan_iter(match=f"{args.prefix}-*:stream:*", count=1000):
            if key in last:
                continue
            if first and not args.from_start:  # from the current end: resolve "$" to an id now
                top = r.xrevrange(key, count=1)
                last[key] = top[0][0] if top else "0-0"
            else:  # a stream that appeared while we follow: all of it is new
                last[key] = "0-0"
            print(f"following {key}")

    discover(first=True)
    deadline = time.monotonic() + args.seconds
    next_scan = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if time.monotonic() >= next_scan:
            discover(first=False)
            next_scan = time.monotonic() + 2.0
        if not last:
            time.sleep(0.5)
            continue
        for key, entries in r.xread(last, block=1000, count=1000) or []:
            collector = key.split(":stream:")[0]
            for entry_id, f in entries:
                last[key] = entry_id
                counts[collector] += 1
                print(
                    f"{collector:<10} context={f['context_id']} variable={f['variable_id']:<4} "
                    f"{f['read_at']} {f['quality']:<9} {json.loads(f['value'])!r}"
                )
    r.close()
    print("entries per collector:", dict(sorted(counts.items())))


if __name__ == "__main__":
    main()
