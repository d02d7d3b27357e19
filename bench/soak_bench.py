"""Soak: 10,000 random variables at 100 ms (100k samples/s) into SqlDataWriter through a DataCollector.

Run: ``python bench/soak_bench.py [--minutes 10] [--variables 10000] [--interval-ms 100]
[--url URL] [--probe-every-s 60] [--no-spool] [--keep]``. ``--minutes`` may be fractional (``0.5``). Without
``--url`` the store is a SQLite file in a temporary directory (deleted at the end unless
``--keep``); ``--url postgresql+psycopg://...`` (or MariaDB) soaks a server, on a table prefix
of its own that is dropped at the end unless ``--keep``.

The collector spools to disk as ``data-collector run`` does by default (``spool_dir`` in the
temporary directory, ``spool_sync_s`` 1 s); ``--no-spool`` measures the memory-only path.

Reported (a table, then one JSON line):

- samples read, written (by the writer, and counted in the table at the end), dropped, lost and
  unwritten (the collector's accounting), the writer queue's high-water mark (samples, seconds),
  the spool's high-water mark (samples, bytes, age of its oldest record);
- how far behind the writer was: for every batch, the time from its read to the end of its
  ``write()`` (p50, p99, max), and the batch sizes the collector handed over;
- the writer's own insert rate (rows per second of time spent in ``write()``) and, every
  ``--probe-every-s`` and at the end, the raw driver inserting the same shape of batch (one tick
  of every variable) into the same table at the same size, in this run: on SQLite ``sqlite3``
  ``executemany`` of one-row ``INSERT`` statements (the issue's baseline) and of 100-row ones
  (the faster way, which the writer uses), psycopg binary ``COPY``, PyMySQL ``executemany``;
  ours/raw against the best raw method and against plain ``executemany``, ours being measured on
  the writes of the 10 s before and after each probe (the same machine load);
- RSS at start (after a 10 s warm-up) and end, its slope (MB/min, least squares) and growth;
- queries on the final table: one variable over the last minute and over the whole run
  (``read_samples(..., variable_ids=[v])``, next to the same rows found by a plain range scan),
  and 10 s of the whole context read back (rows/s).

Everything is bounded: the run ends after ``--minutes`` plus the collector's drain.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _shared import connect_psycopg, connect_pymysql, reachable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_collector import CollectedVariables, DataCollectionContext, DataCollector, Variable
from data_reader.random_data_reader import RandomDataReader
from data_writer.sql import SqlDataWriter
from data_writer.sql._schema import SAMPLE_COLUMNS, epoch_us

LOG = logging.getLogger("soak")
CONTEXT = 1
PROBE_CONTEXT = 2  # the raw driver's rows: same table, their own key range
PROBE_NEIGHBOURS_S = 10.0  # ours is measured on the writes this close before and after each probe
PROBE_ROWS = 100_000  # per raw method and probe: long enough to include WAL checkpoints, as ours does
SQLITE_MULTI = "sqlite3 100-row executemany"
COPY_TYPES = ["int8", "int4", "timestamptz", "varchar", "float8", "int8", "text", "varchar", "text"]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) in MB per minute."""
    if len(points) < 3:
        return float("nan")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else float("nan")


class TimedSqlWriter(SqlDataWriter):
    """SqlDataWriter that records, per write(), its duration, size and the lag behind the read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_s = 0.0
        self.write_rows = 0
        self.log: list[tuple[float, float, int]] = []  # (start, end, rows) of every write (10 a second)
        self.lags: list[float] = []
        self.sizes: list[int] = []
        self.stats_lock = threading.Lock()

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        started = time.perf_counter()
        super().write(context, variables)
        ended = time.perf_counter()
        spent = ended - started
        newest = max(t for t in variables.read_ats if t is not None)
        lag = (datetime.now(UTC) - newest).total_seconds()
        n = len(variables)
        with self.stats_lock:
            self.write_s += spent
            self.write_rows += n
            self.log.append((started, ended, n))
            self.lags.append(lag)
            self.sizes.append(n)

    def rate_around(self, span: tuple[float, float], seconds: float = PROBE_NEIGHBOURS_S) -> float:
        """Rows/s inside write() over the writes of the ``seconds`` before and after a raw probe
        (the same machine load), leaving out those that overlapped it (they waited for its lock)."""
        ps, pe = span
        with self.stats_lock:
            near = [
                (a, b, n) for a, b, n in self.log if (ps - seconds <= b <= ps) or (pe <= a <= pe + seconds)
            ]
        spent = sum(b - a for a, b, _ in near)
        return sum(n for _, _, n in near) / spent if spent else float("nan")


class RawProbe:
    """The raw driver inserting one tick of every variable into the writer's samples table."""

    def __init__(self, url: sa.URL, table: str, keys: list[int]) -> None:
        self.backend = url.get_backend_name()
        self.keys = keys
        self.table = table
        self.tick = 0
        columns = ", ".join(SAMPLE_COLUMNS)
        if self.backend == "sqlite":
            self.con: Any = sqlite3.connect(str(url.database), isolation_level=None, timeout=60)
            self.con.execute("PRAGMA journal_mode = WAL")
            self.con.execute("PRAGMA synchronous = NORMAL")
            self.one = f"({', '.join('?' * len(SAMPLE_COLUMNS))})"
            self.head = f"INSERT INTO {table} ({columns}) VALUES "
            self.sql = self.head + self.one
            self.multi_sql = self.head + ", ".join([self.one] * 100)
            self.methods = [SQLITE_MULTI, "sqlite3 executemany"]
        elif self.backend == "postgresql":
            self.con = connect_psycopg(url)
            self.sql = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
            self.methods = ["psycopg binary COPY"]
        else:
            self.con = connect_pymysql(url)
            self.sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(SAMPLE_COLUMNS))})"
            self.methods = ["pymysql executemany"]

    def rows(self) -> list[tuple[Any, ...]]:
        at = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(milliseconds=100 * self.tick)
        self.tick += 1
        ts: Any = at
        if self.backend == "sqlite":
            ts = epoch_us(at)
        elif self.backend != "postgresql":
            ts = at.replace(tzinfo=None).isoformat(" ", "microseconds")
        return [
            (PROBE_CONTEXT, k, ts, "float", 0.5 + i * 1e-6, None, None, "GOOD", None)
            for i, k in enumerate(self.keys)
        ]

    def insert_rate(self) -> dict[str, float]:
        """Rows/s per raw method over one-tick batches, about PROBE_ROWS rows each (waiting for
        SQLite's lock excluded)."""
        rates: dict[str, list[float]] = {}
        for _ in range(max(2, -(-PROBE_ROWS // len(self.keys)))):
            for name in self.methods:
                rows = self.rows()
                if self.backend == "sqlite":
                    self.con.execute("BEGIN IMMEDIATE")  # wait for the writer's lock, then time
                    started = time.perf_counter()
                    if name == SQLITE_MULTI:
                        flat = tuple(itertools.chain.from_iterable(rows))
                        step = 100 * len(SAMPLE_COLUMNS)
                        whole = (len(rows) - len(rows) % 100) * len(SAMPLE_COLUMNS)
                        self.con.executemany(
                            self.multi_sql, [flat[i : i + step] for i in range(0, whole, step)]
                        )
                        if whole < len(flat):
                            n = (len(flat) - whole) // len(SAMPLE_COLUMNS)
                            self.con.execute(self.head + ", ".join([self.one] * n), flat[whole:])
                    else:
                        self.con.executemany(self.sql, rows)
                    self.con.execute("COMMIT")
                elif self.backend == "postgresql":
                    started = time.perf_counter()
                    with self.con.cursor() as cur, cur.copy(self.sql) as copy:
                        copy.set_types(COPY_TYPES)
                        for row in rows:
                            copy.write_row(row)
                    self.con.commit()
                else:
                    started = time.perf_counter()
                    with self.con.cursor() as cur:
                        cur.executemany(self.sql, rows)
                    self.con.commit()
                rates.setdefault(name, []).append(time.perf_counter() - started)
        return {name: len(self.keys) * len(r) / sum(r) for name, r in rates.items()}

    def close(self) -> None:
        self.con.close()


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = None
    spool_root = None if args.no_spool else Path(tempfile.mkdtemp(prefix="dc-soak-spool-"))
    if args.url:
        url = sa.make_url(args.url)
        prefix = f"soak{uuid.uuid4().hex[:8]}_"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="dc-soak-"))
        url = sa.make_url(f"sqlite:///{tmp / 'soak.sqlite'}")
        prefix = "dc_"
    if not reachable(url):
        raise SystemExit(f"unreachable: {url.render_as_string(hide_password=True)}")
    table = f"{prefix}samples"
    n_vars = args.variables
    kinds = ("random", "sine", "ramp:7")
    variables = [Variable(i + 1, kinds[i % 3], "float", "random", args.interval_ms) for i in range(n_vars)]
    ctx = DataCollectionContext(
        CONTEXT,
        variables,
        min_interval_ms=args.interval_ms,
        default_interval_ms=args.interval_ms,
        duration_s=args.minutes * 60 + 600,
    )
    writer = TimedSqlWriter(url, table_prefix=prefix)
    rate = n_vars * 1000 / args.interval_ms
    result: dict[str, Any] = {
        "bench": "soak",
        "store": url.render_as_string(hide_password=True),
        "variables": n_vars,
        "interval_ms": args.interval_ms,
        "offered_samples_s": rate,
        "minutes": args.minutes,
    }
    probe: RawProbe | None = None
    probes: list[dict[str, float]] = []
    spans: list[tuple[float, float]] = []  # perf_counter intervals of the raw probes
    raws: list[dict[str, float]] = []
    at_s: list[int] = []
    rss: list[tuple[float, float]] = []
    depths: list[int] = []
    spooled: list[tuple[int, int, float]] = []  # (samples, bytes, oldest s) once a second
    try:
        with DataCollector(
            LOG, [RandomDataReader()], [writer], drain_timeout_s=120, spool_dir=spool_root
        ) as collector:
            t_start = time.monotonic()
            collector.start(ctx)
            deadline = t_start + args.minutes * 60
            next_probe = t_start + min(args.probe_every_s, max(5.0, args.minutes * 60 / 3))
            while time.monotonic() < deadline:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                now = time.monotonic() - t_start
                stats = collector.stats()
                w = stats.writers[writer.name]
                depths.append(w.queue_depth)
                spooled.append((w.spooled_samples, w.spool_bytes, w.oldest_spooled_s or 0.0))
                if now >= 10 or args.minutes * 60 < 30:
                    rss.append((now, rss_mb()))
                if time.monotonic() >= next_probe and time.monotonic() < deadline - 2:
                    if probe is None:
                        keys = list(writer._key_by_id.values())[:n_vars]
                        probe = RawProbe(url, table, sorted(set(keys)))
                    probe_started = time.perf_counter()
                    raws.append(probe.insert_rate())
                    spans.append((probe_started, time.perf_counter()))
                    at_s.append(round(now))
                    next_probe = time.monotonic() + args.probe_every_s
            read_s = time.monotonic() - t_start
            read_end = datetime.now(UTC)  # the queries below look at the run's last minute
            stats = collector.stats()
            samples_read = sum(r.samples for r in stats.readers.values())
            missed = sum(r.missed_ticks for r in stats.readers.values())
            drain_started = time.monotonic()
            collector.stop(CONTEXT)  # returns once every sample read reached the writer
            drain_s = time.monotonic() - drain_started
        closed = collector.stats()
        final = closed.writers[writer.name]
        samples_read = sum(r.samples for r in closed.readers.values()) or samples_read
        if probe is not None:  # one last probe at the final table size
            probe_started = time.perf_counter()
            raws.append(probe.insert_rate())
            spans.append((probe_started, time.perf_counter()))
            at_s.append(round(read_s))
        probes = [
            {"at_s": at, "ours_rows_s": writer.rate_around(span), **raw}
            for at, span, raw in zip(at_s, spans, raws, strict=True)
        ]
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            stored = conn.exec_driver_sql(
                f"SELECT COUNT(*) FROM {table} WHERE context_id = {CONTEXT}"
            ).scalar()
        last = read_end  # not now: counting the table may take a minute on a server
        var = variables[n_vars // 2]
        key = writer._definitions[writer._store.definition(var)]
        q_minute, rows_minute = timed(
            lambda: writer.read_samples(CONTEXT, variable_ids=[var.id], start=last - timedelta(minutes=1))
        )
        q_all, rows_all = timed(lambda: writer.read_samples(CONTEXT, variable_ids=[var.id]))
        lo = writer._store.to_db_time(last - timedelta(minutes=1))
        placeholder = "?" if url.get_backend_name() == "sqlite" else "%s"
        with engine.connect() as conn:
            q_scan, scanned = timed(
                lambda: conn.exec_driver_sql(
                    f"SELECT read_at, value_num FROM {table} WHERE context_id = {placeholder} "
                    f"AND read_at >= {placeholder} AND variable_key = {placeholder} ORDER BY read_at",
                    (CONTEXT, lo, key),
                ).all()
            )
        engine.dispose()
        window_start = last - timedelta(minutes=min(1.0, args.minutes / 2))
        q_ctx, rows_ctx = timed(
            lambda: writer.read_samples(CONTEXT, start=window_start, end=window_start + timedelta(seconds=10))
        )
        lags = writer.lags
        methods = probe.methods if probe is not None else []
        best = [max(p[m] for m in methods) for p in probes]
        ratios = [p["ours_rows_s"] / b for p, b in zip(probes, best, strict=True) if b > 0]
        ratios = [r for r in ratios if r == r]  # a probe with no write near it (nan) says nothing
        first = methods[-1] if len(methods) > 1 else None  # the one-row executemany on SQLite
        ratios_plain = [p["ours_rows_s"] / p[first] for p in probes if first and p[first] > 0]
        ratios_plain = [r for r in ratios_plain if r == r]
        result.update(
            {
                "samples_read": samples_read,
                "samples_written": writer.samples_written,
                "samples_in_table": int(stored or 0),
                "duplicates_skipped": writer.duplicates_skipped,
                "dropped_samples": final.dropped_samples,
                "lost_samples": final.lost_samples,
                "unwritten_samples": final.unwritten_samples,
                "missed_ticks": missed,
                "queue_max_samples": max([final.max_queue_depth, *depths]),
                "queue_max_s": round(max([final.max_queue_depth, *depths]) / rate, 2),
                "spool": spool_root is not None,
                "spool_max_samples": max((x[0] for x in spooled), default=0),
                "spool_max_mb": round(max((x[1] for x in spooled), default=0) / 1e6, 1),
                "spool_oldest_max_s": round(max((x[2] for x in spooled), default=0.0), 2),
                "lag_p50_s": round(pct(lags, 0.5), 3),
                "lag_p99_s": round(pct(lags, 0.99), 3),
                "lag_max_s": round(max(lags, default=float("nan")), 3),
                "batches": len(writer.sizes),
                "batch_p50": pct([float(s) for s in writer.sizes], 0.5),
                "batch_max": max(writer.sizes, default=0),
                "ours_rows_s": round(writer.write_rows / writer.write_s) if writer.write_s else None,
                "raw_methods": methods,
                "probes": [{k: round(v) for k, v in p.items()} for p in probes],
                "ours_over_raw_median": round(statistics.median(ratios), 3) if ratios else None,
                "ours_over_raw_min": round(min(ratios), 3) if ratios else None,
                "ours_over_raw_executemany_median": (
                    round(statistics.median(ratios_plain), 3) if ratios_plain else None
                ),
                "ours_over_raw_executemany_min": round(min(ratios_plain), 3) if ratios_plain else None,
                "rss_start_mb": round(rss[0][1], 1) if rss else None,
                "rss_end_mb": round(rss[-1][1], 1) if rss else None,
                "rss_slope_mb_min": round(slope_per_min(rss), 3),
                "rss_slope_second_half_mb_min": round(slope_per_min(rss[len(rss) // 2 :]), 3),
                "rss_by_minute_mb": [
                    round(mb, 1) for mb in {int(t // 60): mb for t, mb in reversed(rss)}.values()
                ][::-1],
                "drain_s": round(drain_s, 2),
                "query_var_1min_s": round(q_minute, 4),
                "query_var_1min_rows": len(rows_minute),
                "query_var_1min_scan_s": round(q_scan, 4),
                "query_var_1min_scan_rows": len(scanned),
                "query_var_all_s": round(q_all, 3),
                "query_var_all_rows": len(rows_all),
                "query_ctx_10s_rows": len(rows_ctx),
                "query_ctx_rows_s": round(len(rows_ctx) / q_ctx) if q_ctx else None,
            }
        )
        if url.get_backend_name() == "sqlite":
            result["file_mb"] = round(os.path.getsize(str(url.database)) / 1e6)
    finally:
        if probe is not None:
            probe.close()
        writer.close()
        if args.url and not args.keep:
            engine = sa.create_engine(url)
            with engine.begin() as conn:
                # the view first: it reads the tables
                conn.exec_driver_sql(f"DROP VIEW IF EXISTS {prefix}samples_view")
                for name in ("samples", "variables", "contexts", "schema_version"):
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {prefix}{name}")
            engine.dispose()
        if spool_root is not None:
            shutil.rmtree(spool_root, ignore_errors=True)
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"kept {tmp}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--variables", type=int, default=10_000)
    parser.add_argument("--interval-ms", type=int, default=100)
    parser.add_argument("--url", default=None, help="a SQLAlchemy URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--probe-every-s", type=float, default=60.0)
    parser.add_argument(
        "--no-spool",
        action="store_true",
        help="no spool (memory only; `data-collector run` spools by default)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database / tables")
    args = parser.parse_args()
    if not (args.minutes > 0 and args.variables > 0 and args.interval_ms > 0 and args.probe_every_s > 0):
        parser.error("--minutes, --variables, --interval-ms and --probe-every-s must be > 0")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    r = run(args)
    rows = [
        ("store", r["store"]),
        (
            "offered",
            f"{r['variables']:,} variables x {r['interval_ms']} ms = {r['offered_samples_s']:,.0f}/s",
        ),
        (
            "samples read / written / in table",
            f"{r['samples_read']:,} / {r['samples_written']:,} / {r['samples_in_table']:,}",
        ),
        (
            "dropped / lost / unwritten",
            f"{r['dropped_samples']:,} / {r['lost_samples']:,} / {r['unwritten_samples']:,}",
        ),
        ("queue high-water", f"{r['queue_max_samples']:,} samples ({r['queue_max_s']} s)"),
        (
            "spool high-water",
            f"{r['spool_max_samples']:,} samples, {r['spool_max_mb']} MB, oldest {r['spool_oldest_max_s']} s"
            if r["spool"]
            else "no spool (--no-spool)",
        ),
        ("writer lag p50 / p99 / max", f"{r['lag_p50_s']} / {r['lag_p99_s']} / {r['lag_max_s']} s"),
        ("batches (p50 / max size)", f"{r['batches']:,} ({r['batch_p50']:,.0f} / {r['batch_max']:,})"),
        ("ours rows/s in write()", f"{r['ours_rows_s']:,}"),
        ("raw methods", " | ".join(r["raw_methods"])),
        (
            "probes: at s ours | raw rows/s",
            "; ".join(
                f"{p['at_s']}s {p['ours_rows_s']:,} | " + " | ".join(f"{p[m]:,}" for m in r["raw_methods"])
                for p in r["probes"]
            ),
        ),
        ("ours/best raw median / min", f"{r['ours_over_raw_median']} / {r['ours_over_raw_min']}"),
        (
            "ours/raw executemany median / min",
            f"{r['ours_over_raw_executemany_median']} / {r['ours_over_raw_executemany_min']}",
        ),
        (
            "RSS start / end / slope",
            f"{r['rss_start_mb']} / {r['rss_end_mb']} MB, {r['rss_slope_mb_min']} MB/min "
            f"(second half {r['rss_slope_second_half_mb_min']} MB/min)",
        ),
        ("drain at stop", f"{r['drain_s']} s"),
        (
            "one variable, last minute",
            f"{r['query_var_1min_rows']} rows in {r['query_var_1min_s']} s "
            f"(plain scan {r['query_var_1min_scan_s']} s)",
        ),
        ("one variable, whole run", f"{r['query_var_all_rows']} rows in {r['query_var_all_s']} s"),
        ("context, 10 s window", f"{r['query_ctx_10s_rows']:,} rows at {r['query_ctx_rows_s']:,} rows/s"),
    ]
    if "file_mb" in r:
        rows.append(("SQLite file", f"{r['file_mb']:,} MB"))
    width = max(len(k) for k, _ in rows)
    print("soak: random reader -> DataCollector -> SqlDataWriter")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
