"""Redis plugin: the ``redis`` writer (live data in Redis streams, with caps) and its readers.

Serves clients that follow the data live while it is collected (BLISS publishes every scan to
Redis beside its HDF5 files the same way): one stream per context (or per variable) with
``XADD ... MAXLEN ~``, a time cap (``max_age_s``, 1 day: ``XTRIM MINID ~`` and key expiry) and a
size cap (``max_bytes``, 1 GiB: the oldest entries trimmed when ``MEMORY USAGE`` says so), the
latest value of each variable in a hash, and each run's metadata in a hash that expires with the
data. Every entry carries a message id ``<context>:<variable>:<read_at µs>``; entry ids follow the
read time and make the collector's retries exactly-once. Extra ``redis`` (redis-py). Key layout,
options and guarantees: ``data_writer/redis/README.md``; ``data-collector tail REDIS_URL`` follows
a stream in a terminal.

Example::

    import logging, time
    from data_collector import DataCollector, DataCollectionContext, Variable
    from data_reader.random import RandomDataReader
    from data_writer.redis import RedisDataWriter, read_samples

    writer = RedisDataWriter("redis://127.0.0.1:6379/0", prefix="demo", max_age_s=3600)
    with DataCollector(logging.getLogger("live"), [RandomDataReader()], [writer]) as c:
        c.start(DataCollectionContext(7, [Variable(1, "sine", "float", "random", 100)], duration_s=1))
        time.sleep(1.5)
    print(read_samples("redis://127.0.0.1:6379/0", 7, prefix="demo")[:3])
"""

from ._errors import RedisWriteError
from ._layout import FIELDS, index_key, latest_key, runs_key, stream_key
from ._read import (
    RedisSample,
    StreamFollower,
    connect,
    decode_entry,
    format_line,
    read_latest,
    read_runs,
    read_samples,
    stream_keys,
)
from ._writer import REPLAY_KEY, RedisDataWriter, parse_byte_size

__all__ = [
    "FIELDS",
    "REPLAY_KEY",
    "RedisDataWriter",
    "RedisSample",
    "RedisWriteError",
    "StreamFollower",
    "connect",
    "decode_entry",
    "format_line",
    "index_key",
    "latest_key",
    "parse_byte_size",
    "read_latest",
    "read_runs",
    "read_samples",
    "runs_key",
    "stream_key",
    "stream_keys",
]
