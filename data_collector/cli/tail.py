"""``data-collector tail REDIS_URL``: follow the Redis writer's streams live, one plain line per sample.

Serves people at a terminal and scripts who want to watch the data as it is collected (BLISS's
"follow the data as it comes"): ``XREAD BLOCK`` on the streams of a prefix (``--prefix``, ``dc``),
of one context (``--context ID``) or one variable (``--variable ID``), from what arrives now on,
or from what the streams hold (``--from-start``). Streams that appear later (a context started
meanwhile) are followed too. Each sample prints as::

    2026-11-22T08:15:00.100000+00:00  context=7  variable=1  GOOD  21.5  error="..."

(read time UTC, ids, quality, the value as JSON, the error when there is one). Ctrl-C ends it with
exit status 0; ``--count N`` ends it after N lines and ``--seconds S`` after S seconds (for scripts
and tests). While Redis is unreachable it says so once on standard error and keeps trying (with
capped backoff) where it left off; a refused login ends it (exit 3), and so does ``--seconds``
when Redis was never reached. Needs the extra ``redis``.
"""

from __future__ import annotations

import argparse
import time
from typing import IO

from ._common import EXIT_CONFIG, EXIT_OK, EXIT_STARTUP

#: the longest wait between two attempts while Redis is unreachable
MAX_BACKOFF_S = 5.0


def _cmd_tail(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    try:
        import redis

        from data_writer.redis import StreamFollower, connect, format_line
        from data_writer.redis._errors import safe_url
    except ImportError as exc:
        err.write(f'error: tail needs redis-py: pip install "data-collector[redis]" ({exc})\n')
        return EXIT_CONFIG
    shown = safe_url(args.url)
    client = connect(args.url, socket_timeout_s=30.0, client_name="data-collector-tail")
    follower = StreamFollower(
        client,
        prefix=args.prefix,
        context_id=args.context,
        variable_id=args.variable,
        from_start=args.from_start,
    )
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    printed = 0
    delay = 0.1
    failing = False
    reached = False
    try:
        while args.count is None or printed < args.count:
            left_ms = 1000 if deadline is None else int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            try:
                samples = follower.poll(block_ms=min(1000, left_ms), count=1000)
            except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
                err.write(f"error: redis {shown}: {type(exc).__name__}: {exc}\n")
                return EXIT_STARTUP
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                if not failing:
                    err.write(f"redis {shown} unreachable ({exc}); retrying\n")
                    err.flush()
                    failing = True
                pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
                time.sleep(pause)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            reached = True
            if failing:
                err.write(f"redis {shown} reachable again\n")
                failing = False
                delay = 0.1
            for sample in samples:
                out.write(format_line(sample) + "\n")
                printed += 1
                if args.count is not None and printed >= args.count:
                    break
            if samples:
                out.flush()
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        client.close()
    if not reached:
        err.write(f"error: redis {shown} was unreachable the whole time\n")
        return EXIT_STARTUP
    return EXIT_OK
