"""OPC UA reader benchmark: ours vs raw asyncua, against the simulator in a child process.

Run: ``python bench/opcua_bench.py [--nodes 1000] [--reads 60] [--seconds 8]``

(a) Poll: time of one tick reading ``--nodes`` Double nodes — raw ``await client.read_values(nodes)``
    on an asyncua Client, our ``OpcUaDataReader.read()`` called directly, and our ``read()`` timed
    inside the collector's reader thread (a context of all nodes at 200 ms into the noop writer).
    Raw and direct alternate, each starting on a 200 ms wall-clock boundary like the collector's
    ticks, so all three meet the same server load.
(b) Subscribe: the server changes every node every 100 ms (10,000 notifications/s for 1,000
    nodes); client CPU (this process: the server is another one) per 10k notifications/s for raw
    asyncua (``create_subscription`` + ``subscribe_data_change`` with a counting handler) and for
    our reader in subscribe mode through the collector (ticks at 100 ms, noop writer).

Prints a table, then one JSON line. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import statistics
import subprocess
import threading
import time
from typing import Any

from _shared import start_child
from asyncua.client.client import Client
from asyncua.ua.uatypes import Double

from data_collector import (
    CollectedVariables,
    DataCollectionContext,
    DataCollector,
    Quality,
    Variable,
)
from data_reader.opcua import OpcUaDataReader
from data_writer.noop import NoopDataWriter

LOG = logging.getLogger("bench.opcua")
URI = "urn:data-collector:simulator"
TICK_S = 0.2


def next_tick() -> None:
    """Sleep to the next wall-clock multiple of TICK_S (the collector's tick alignment)."""
    now = time.time()
    time.sleep((int(now / TICK_S) + 1) * TICK_S - now)


def start_simulator(nodes: int, seconds: float) -> tuple[subprocess.Popen[str], str]:
    return start_child(
        "data_reader.opcua.simulator",
        [
            "--port",
            "0",
            "--bulk",
            str(nodes),
            "--bulk-interval",
            "0.1",
            "--update-interval",
            "1.0",
            "--duration",
            str(seconds),
        ],
        r"(opc\.tcp://[^ ]+/)",
        60,
    )


class _Timed(OpcUaDataReader):
    """Our reader, timing each read() call and counting non-GOOD items."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.durations: list[float] = []
        self.bad = 0

    def read(self, variables: CollectedVariables) -> None:
        started = time.perf_counter()
        super().read(variables)
        self.durations.append(time.perf_counter() - started)
        self.bad += sum(1 for item in variables if item.quality is not Quality.GOOD)


def ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1e3, ordered[int(0.9 * (len(ordered) - 1))] * 1e3


class RawClient:
    """asyncua's own Client on an event loop in a thread (as plant code would run it)."""

    def __init__(self, endpoint: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = Client(endpoint, timeout=10)
        self.call(self.client.connect())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.call(self.client.disconnect())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def bench_poll(endpoint: str, addresses: list[str], reads: int, seconds: float) -> dict[str, Any]:
    variables = [Variable(i, a, "float", "opcua") for i, a in enumerate(addresses)]
    raw = RawClient(endpoint)
    nodes = [raw.client.get_node(a) for a in [f"ns=2;s=Bulk.{i:04d}" for i in range(len(addresses))]]

    async def raw_read() -> float:
        started = time.perf_counter()
        values = await raw.client.read_values(nodes)
        elapsed = time.perf_counter() - started
        assert len(values) == len(nodes)
        return elapsed

    ours = _Timed(endpoint, timeout_s=10.0)
    ours.open()
    raw_times: list[float] = []
    for _ in range(3):  # warm-up both
        raw.call(raw_read())
        ours.read(CollectedVariables.of(variables))
    ours.durations.clear()
    ours.bad = 0
    # every read starts on a wall-clock multiple of TICK_S, as the collector's ticks do, so the
    # three measurements meet the server (which updates its nodes every 100 ms) at the same phase
    for _ in range(reads):
        next_tick()
        raw_times.append(raw.call(raw_read()))
        batch = CollectedVariables.of(variables)
        next_tick()
        ours.read(batch)
    direct_times, direct_bad = list(ours.durations), ours.bad
    ours.close()
    raw.close()

    timed = _Timed(endpoint, timeout_s=10.0)
    context = DataCollectionContext(
        1, [Variable(i, a, "float", "opcua", round(TICK_S * 1000)) for i, a in enumerate(addresses)]
    )
    with DataCollector(LOG, [timed], [NoopDataWriter()]) as collector:
        collector.start(context)
        time.sleep(seconds)
        stats = collector.stats().readers["opcua"]
    collector_times = timed.durations[1:] or timed.durations
    return {
        "raw": ms(raw_times),
        "direct": ms(direct_times),
        "collector": ms(collector_times),
        "direct_bad": direct_bad,
        "collector_bad": timed.bad,
        "collector_ticks": len(timed.durations),
        "missed_ticks": stats.missed_ticks,
    }


def bench_subscribe(endpoint: str, addresses: list[str], seconds: float) -> dict[str, Any]:
    # raw asyncua: subscription with a counting handler
    raw = RawClient(endpoint)
    counted = [0]

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            counted[0] += 1

    async def subscribe() -> Any:
        sub = await raw.client.create_subscription(100, Handler())
        nodes = [raw.client.get_node(f"ns=2;s=Bulk.{i:04d}") for i in range(len(addresses))]
        await sub.subscribe_data_change(nodes, queuesize=1, sampling_interval=Double(100))
        return sub

    raw.call(subscribe())
    time.sleep(2.0)  # initial values and warm-up (a measurement window, not a synchronization)
    n0, c0, t0 = counted[0], time.process_time(), time.perf_counter()
    time.sleep(seconds)
    raw_n, raw_cpu, raw_wall = counted[0] - n0, time.process_time() - c0, time.perf_counter() - t0
    raw.close()

    reader = OpcUaDataReader(endpoint, mode="subscribe", timeout_s=10.0)
    variables = [Variable(i, a, "float", "opcua", 100) for i, a in enumerate(addresses)]
    with DataCollector(LOG, [reader], [NoopDataWriter()]) as collector:
        collector.start(DataCollectionContext(1, variables))
        time.sleep(2.0)
        n0, c0, t0 = reader.opcua_stats()["notifications"], time.process_time(), time.perf_counter()
        s0 = collector.stats().readers["opcua"]
        time.sleep(seconds)
        stats = reader.opcua_stats()
        s1 = collector.stats().readers["opcua"]
        ours_n, ours_cpu, ours_wall = (
            stats["notifications"] - n0,
            time.process_time() - c0,
            time.perf_counter() - t0,
        )
    return {
        "raw_rate": raw_n / raw_wall,
        "raw_cpu_per_10k": raw_cpu / raw_wall / (raw_n / raw_wall / 10_000),
        "ours_rate": ours_n / ours_wall,
        "ours_cpu_per_10k": ours_cpu / ours_wall / (ours_n / ours_wall / 10_000),
        "ours_samples": s1.samples - s0.samples,
        "ours_bad": s1.bad_samples - s0.bad_samples,
        "missed_ticks": s1.missed_ticks - s0.missed_ticks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=60, help="poll reads per side (raw / ours)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each timed run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    proc, endpoint = start_simulator(args.nodes, 100 + 4 * args.seconds)
    try:
        addresses = [f"nsu={URI};s=Bulk.{i:04d}" for i in range(args.nodes)]
        poll = bench_poll(endpoint, addresses, args.reads, args.seconds)
        sub = bench_subscribe(endpoint, addresses, args.seconds)
    finally:
        proc.kill()
        proc.wait(10)
    ratio_direct = poll["direct"][0] / poll["raw"][0]
    ratio_collector = poll["collector"][0] / poll["raw"][0]
    cpu_ratio = sub["ours_cpu_per_10k"] / sub["raw_cpu_per_10k"]
    print(
        f"OPC UA bench: {args.nodes} nodes, asyncua simulator in a child process, {platform.python_version()}"
    )
    print()
    print(f"{'poll, time per tick':<44} {'median ms':>10} {'p90 ms':>10} {'vs raw':>8}")
    print(f"{'raw client.read_values':<44} {poll['raw'][0]:>10.2f} {poll['raw'][1]:>10.2f} {1.0:>8.2f}")
    direct = poll["direct"]
    print(f"{'OpcUaDataReader.read() direct':<44} {direct[0]:>10.2f} {direct[1]:>10.2f} {ratio_direct:>8.2f}")
    print(
        f"{'OpcUaDataReader.read() in the collector':<44} {poll['collector'][0]:>10.2f} "
        f"{poll['collector'][1]:>10.2f} {ratio_collector:>8.2f}"
    )
    print(
        f"  bad items: direct {poll['direct_bad']}, collector {poll['collector_bad']}; "
        f"collector ticks {poll['collector_ticks']}, missed {poll['missed_ticks']}"
    )
    print()
    print(f"{'subscribe, client CPU':<44} {'notif/s':>10} {'CPU s/s per 10k/s':>18} {'vs raw':>8}")
    raw_line = f"{'raw asyncua subscription + handler':<44} {sub['raw_rate']:>10.0f}"
    print(f"{raw_line} {sub['raw_cpu_per_10k']:>18.3f} {1.0:>8.2f}")
    print(
        f"{'OpcUaDataReader subscribe + collector':<44} {sub['ours_rate']:>10.0f} "
        f"{sub['ours_cpu_per_10k']:>18.3f} {cpu_ratio:>8.2f}"
    )
    print(f"  collector samples {sub['ours_samples']}, bad {sub['ours_bad']}, missed {sub['missed_ticks']}")
    print()
    print(
        json.dumps(
            {
                "bench": "opcua",
                "nodes": args.nodes,
                "poll_raw_ms": round(poll["raw"][0], 3),
                "poll_direct_ms": round(poll["direct"][0], 3),
                "poll_collector_ms": round(poll["collector"][0], 3),
                "poll_direct_vs_raw": round(ratio_direct, 3),
                "poll_collector_vs_raw": round(ratio_collector, 3),
                "poll_bad": poll["direct_bad"] + poll["collector_bad"],
                "sub_raw_notif_per_s": round(sub["raw_rate"]),
                "sub_ours_notif_per_s": round(sub["ours_rate"]),
                "sub_raw_cpu_per_10k": round(sub["raw_cpu_per_10k"], 4),
                "sub_ours_cpu_per_10k": round(sub["ours_cpu_per_10k"], 4),
                "sub_cpu_vs_raw": round(cpu_ratio, 3),
                "sub_bad": sub["ours_bad"],
            }
        )
    )


if __name__ == "__main__":
    main()
