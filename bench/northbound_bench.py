"""Northbound benchmark: the MQTT and Redis writers against their raw clients, then a fleet of
collector processes into one Mosquitto and one PostgreSQL.

Run (full size, a few minutes; for a quiet machine):
``python bench/northbound_bench.py [--collectors 4] [--variables 2500] [--interval-ms 100] [--minutes 2]``
Small, to try it: ``nice -n 19 python bench/northbound_bench.py --collectors 2 --variables 200
--minutes 0.2 --samples 2000 --rounds 1``.

(a) Per writer, samples/s of ours against the raw client doing the same publishes or XADDs in the
    same run (rounds alternating, medians), with the functions of ``bench/mqtt_bench.py`` and
    ``bench/redis_bench.py``: MQTT JSON per sample and per batch at QoS 0 and 1 (``--samples``
    float samples in batches of 100; raw = paho-mqtt with hand-made ``json.dumps`` payloads, and
    the same client publishing our pre-encoded payloads: the client's floor), Redis one stream per
    context in batches of 1,000 (raw = redis-py pipelined XADDs). See those scripts for details.
(b) The fleet of ``examples/fleet/run_fleet.py``: ``--collectors`` ``data-collector run`` processes,
    each with its own configuration, ``--variables`` variables at ``--interval-ms`` (``--devices
    random``, the default: the ``random`` reader, so that the simulators' CPU does not compete with
    the collectors on a small machine; ``--devices modbus``: a Modbus simulator process per
    collector, its bulk registers), each publishing to Mosquitto (JSON, one message per batch,
    QoS 1) and writing to PostgreSQL (one set of tables, a context id per collector), spooling
    as ``data-collector run`` does by default (``--no-spool``: not). A subscriber (paho-mqtt, QoS 1)
    receives everything meanwhile. After ``--minutes`` the collectors are stopped with SIGTERM
    (each writes every value read, or leaves it unwritten in its spool after its drain timeout)
    and reported: per collector, samples read; per writer written, lost + dropped, unwritten;
    what the subscriber and the SQL table hold for it; the end-to-end latency (p50, p99, max)
    from each sample's read time to its receipt by the subscriber; samples/s in total.

Prints tables, then one JSON line. Asserts nothing. Everything it creates is named after a unique
prefix (topics, tables ``nb<hex>_*``, Redis keys) and removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "fleet"))

import mqtt_bench
import redis_bench
import sqlalchemy as sa
from run_fleet import Fleet, FleetSpec, MqttTap, check, print_table, report_json, unreachable, wait_for_tap

SQL_TABLES = ("samples", "variables", "contexts", "schema_version")


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """(a): the MQTT cases and the Redis shape, ours against raw, printed as they come."""
    parts = urlsplit(args.mqtt_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    ctx, data = mqtt_bench.batches(args.samples)
    n = mqtt_bench.N_VARS * (len(data) - 1)
    print(f"(a) writers against raw clients: {n:,} float samples each, median of {args.rounds} rounds")
    print(
        f"{'writer':<6} {'case':<26} {'ours/s':>10} {'raw/s':>10} {'ratio':>6}"
        f" {'raw pre-enc/s':>14} {'ratio':>6}"
    )
    mqtt_rows = []
    for label, message in (("json per sample", "sample"), ("json per batch of 100", "batch")):
        for qos in (0, 1):
            case = {"label": label, "payload": "json", "message": message, "qos": qos}
            r = mqtt_bench.measure(host, port, case, ctx, data, args.rounds)
            mqtt_rows.append(r)
            print(
                f"{'mqtt':<6} {label + f', QoS {qos}':<26} {r['ours']:>10,} {r['raw']:>10,}"
                f" {r['ratio']:>6.2f} {r['raw_pre_encoded']:>14,} {r['ratio_pre_encoded']:>6.2f}",
                flush=True,
            )
    prefix = f"dcbench-{uuid.uuid4().hex[:8]}"
    batches = max(2, args.samples // 1000)
    try:
        shape = redis_bench.compare(
            args.redis_url,
            prefix,
            "stream per context, batches of 1,000",
            1_000,
            batches,
            "context",
            args.rounds,
        )
    finally:
        redis_bench.delete_prefix(args.redis_url, prefix)
    print(
        f"{'redis':<6} {'per context, 1,000/batch':<26} {shape['ours_per_s']:>10,} {shape['raw_per_s']:>10,}"
        f" {shape['ratio']:>6.2f}"
    )
    print()
    return {"mqtt": mqtt_rows, "redis": shape}


def drop_tables(url: str, table_prefix: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP VIEW IF EXISTS "{table_prefix}samples_view"')  # first: it reads them
            for name in SQL_TABLES:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table_prefix}{name}"')
    finally:
        engine.dispose()


def fleet(args: argparse.Namespace) -> dict[str, Any]:
    """(b): the fleet into Mosquitto and PostgreSQL, with a subscriber measuring the latency."""
    prefix = f"nb{uuid.uuid4().hex[:8]}"
    standard = len(FleetSpec(collectors=1, devices=args.devices, bulk=1).variables()) - 1
    spec = FleetSpec(
        collectors=args.collectors,
        interval_ms=args.interval_ms,
        devices=args.devices,
        bulk=args.variables - standard,
        writers=("mqtt", "sql"),
        prefix=prefix,
        mqtt_url=args.mqtt_url,
        mqtt_message="batch",
        mqtt_qos=1,
        sql_url=args.sql_url,
        spool=not args.no_spool,
    )
    n_vars = len(spec.variables())
    seconds = args.minutes * 60
    rate = spec.collectors * n_vars * 1000 / spec.interval_ms
    print(
        f"(b) fleet: {spec.collectors} collector processes x {n_vars:,} variables ({spec.devices}) at "
        f"{spec.interval_ms} ms = {rate:,.0f} samples/s for {seconds:g} s into Mosquitto (JSON per batch, "
        f"QoS 1) and PostgreSQL; spool {'on' if spec.spool else 'off'}"
    )
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="northbound-"))
    tap = MqttTap(spec.mqtt_url, prefix)
    try:
        with Fleet(spec, out, max_seconds=seconds + 60) as f:
            f.start()
            began = time.monotonic()
            last_n, last_t = tap.received(), began
            while (left := began + seconds - time.monotonic()) > 0:
                time.sleep(min(10.0, left))
                n, t = tap.received(), time.monotonic()
                print(
                    f"  {t - began:6.0f} s: subscriber received {n:,} samples "
                    f"({(n - last_n) / (t - last_t):,.0f}/s)",
                    flush=True,
                )
                last_n, last_t = n, t
            stopping = time.monotonic()
            reports = f.stop()
            stop_s = time.monotonic() - stopping
            collecting_s = f.collecting_s() or seconds
            wait_for_tap(tap, reports, timeout_s=60)
            f.count_stores(tap)
        print()
        print_table(reports, spec.writers, sys.stdout)
        problems = check(reports)
        for p in problems:
            print(f"PROBLEM: {p}")
        written = {w: sum(r.writers[w].written for r in reports if w in r.writers) for w in spec.writers}
        p50, p99, top = tap.percentile_ms(0.5), tap.percentile_ms(0.99), tap.percentile_ms(1.0)
        repeats = sum(tap.repeats.values())
        print(
            f"written in {collecting_s:.1f} s of collecting: "
            f"{', '.join(f'{w} {n:,} ({n / collecting_s:,.0f}/s)' for w, n in written.items())}; "
            f"the collectors took {stop_s:.1f} s to stop and drain"
        )
        print(
            f"read -> subscriber latency: p50 {p50} ms, p99 {p99} ms, max {top} ms "
            f"({tap.received():,} samples, {repeats} received twice)"
        )
        if not args.keep:
            tap.clear_retained()
        return {
            **report_json(spec, reports),
            "variables": n_vars,
            "interval_ms": spec.interval_ms,
            "seconds": seconds,
            "spool": spec.spool,
            "devices": spec.devices,
            "collecting_s": round(collecting_s, 1),
            "written_per_s": {w: round(n / collecting_s) for w, n in written.items()},
            "stop_s": round(stop_s, 1),
            "latency_ms": {"p50": p50, "p99": p99, "max": top},
            "mqtt_repeats": repeats,
            "problems": problems,
        }
    finally:
        tap.close()
        if not args.keep:
            drop_tables(spec.sql_url, spec.table_prefix)
            if not args.out:
                shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--collectors", type=int, default=4)
    parser.add_argument("--variables", type=int, default=2_500, help="per collector (2,500)")
    parser.add_argument("--interval-ms", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--devices", choices=("random", "modbus"), default="random")
    parser.add_argument("--no-spool", action="store_true", help="collectors without a spool")
    parser.add_argument("--samples", type=int, default=20_000, help="samples per throughput case (20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per throughput case (3)")
    parser.add_argument("--skip-throughput", action="store_true", help="only the fleet")
    parser.add_argument("--skip-fleet", action="store_true", help="only the throughput cases")
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sql-url", default="postgresql+psycopg://postgres@127.0.0.1/test")
    parser.add_argument("--out", default=None, help="fleet folder (configurations, logs); default temporary")
    parser.add_argument(
        "--keep", action="store_true", help="keep the fleet's tables, retained events, folder"
    )
    args = parser.parse_args()
    if args.variables < 5 or args.collectors < 1:
        parser.error("--variables must be at least 5 and --collectors at least 1")
    down = unreachable(
        FleetSpec(
            collectors=1,
            devices="random",
            bulk=1,
            mqtt_url=args.mqtt_url,
            redis_url=args.redis_url,
            sql_url=args.sql_url,
        )
    )
    if down:
        raise SystemExit(f"error: {down}")
    result: dict[str, Any] = {"bench": "northbound", "python": platform.python_version()}
    if not args.skip_throughput:
        result["throughput"] = throughput(args)
    if not args.skip_fleet:
        result["fleet"] = fleet(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
