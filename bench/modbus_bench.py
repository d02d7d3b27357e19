"""Modbus reader benchmark: time per tick for 1,000 holding registers of mixed types in 8 blocks.

Run: ``python bench/modbus_bench.py [--ticks 100] [--interval-ms 100]``; bounded (about 30 s).

Against one simulator (``python -m data_reader.modbus.simulator``, in a process of its own so the
server does not share this process's GIL), in one run:

- ``collector``: ``ModbusDataReader.read()`` timed inside a running ``DataCollector`` (the
  reader's thread, as in production): planning, 8 coalesced requests, decoding ~490 values;
- ``raw blocks``: pymodbus ``read_holding_registers`` of the same 8 ranges, nothing decoded (the
  floor any reader pays);
- ``direct``: the same ``read()`` called by this script, without the collector;
- ``naive``: one pymodbus request per variable, as a reader without request planning does.

Idle time before a tick matters (on this machine a tick after 100 ms of idle costs about three
times a back-to-back one: both processes and the CPUs wake up), so the methods are interleaved
tick by tick at the same cadence: the collector ticks at multiples of the interval and the
baselines run half-way between, alternately. Back-to-back figures are printed too.

Prints a table, the ratios (target: collector <= 1.2x raw blocks, >= 50x faster than naive) and
finally one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

from _shared import start_child
from pymodbus.client import ModbusTcpClient

from data_collector import (
    CollectedVariables,
    DataCollectionContext,
    DataCollector,
    DataWriter,
    Quality,
    Variable,
)
from data_reader.modbus import ModbusDataReader

BLOCKS = 8
BLOCK_REGISTERS = 125
BLOCK_STRIDE = 200  # 75 unread registers between blocks: more than max_gap, so 8 requests
FIRST = 1000
TYPES = [  # (type, registers, value_type)
    ("uint16", 1, "int"),
    ("int16", 1, "int"),
    ("int32", 2, "int"),
    ("uint32:CDAB", 2, "int"),
    ("float32", 2, "float"),
    ("float32:CDAB", 2, "float"),
    ("int64", 4, "int"),
    ("float64:DCBA", 4, "float"),
    ("uint16;scale=0.1", 1, "float"),
]


class _Timed(ModbusDataReader):
    """The reader, timing each read() call."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.durations: list[float] = []
        self.bad = 0

    def read(self, variables: CollectedVariables) -> None:
        started = time.perf_counter()
        super().read(variables)
        self.durations.append(time.perf_counter() - started)
        self.bad += sum(1 for q in variables.qualities if q is not Quality.GOOD)


class _Count(DataWriter):
    def __init__(self) -> None:
        super().__init__()
        self.samples = 0

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        self.samples += len(variables)


def layout() -> tuple[list[Variable], list[tuple[int, int]]]:
    variables: list[Variable] = []
    blocks = []
    for b in range(BLOCKS):
        start = FIRST + BLOCK_STRIDE * b
        address, end = start, start + BLOCK_REGISTERS
        i = 0
        while True:
            kind, width, value_type = TYPES[i % len(TYPES)]
            if address + width > end:
                kind, width, value_type = TYPES[0]
                if address + width > end:
                    break
            variables.append(Variable(len(variables) + 1, f"hr:{address}:{kind}", value_type, "modbus"))
            address += width
            i += 1
        blocks.append((start, BLOCK_REGISTERS))
    return variables, blocks


def start_simulator(latency_ms: float) -> tuple[subprocess.Popen[str], int]:
    args = [
        "--port",
        "0",
        "--bulk",
        str(BLOCK_STRIDE * BLOCKS),
        "--latency-ms",
        str(latency_ms),
        "--duration",
        "170",
    ]
    proc, port = start_child("data_reader.modbus.simulator", args, r":(\d+) units", 30)
    return proc, int(port)


def _wait(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)


def ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1e3, ordered[int(0.9 * (len(ordered) - 1))] * 1e3


def measure(latency_ms: float, ticks: int, naive_ticks: int, interval_ms: int) -> dict[str, Any]:
    """One scenario: a simulator answering after ``latency_ms``; every method, interleaved."""
    variables, blocks = layout()
    widths = {kind: width for kind, width, _vt in TYPES}
    singles = [(int(v.address.split(":")[1]), widths[v.address.split(":", 2)[2]]) for v in variables]
    interval_s = interval_ms / 1000
    times: dict[str, list[float]] = {k: [] for k in ("raw", "direct", "naive", "hot_raw", "hot_direct")}
    proc, port = start_simulator(latency_ms)
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)

    def raw_tick(into: list[float]) -> None:
        started = time.perf_counter()
        for start, count in blocks:
            response = client.read_holding_registers(start, count=count, device_id=1)
            assert not response.isError()
        into.append(time.perf_counter() - started)

    def direct_tick(into: list[float]) -> None:
        batch = CollectedVariables.of(variables)
        started = time.perf_counter()
        direct_reader.read(batch)
        into.append(time.perf_counter() - started)

    def sleep_to_half_tick() -> None:
        # the collector ticks at multiples of the interval; the baselines run half-way between
        now = time.time()
        time.sleep((math.floor(now / interval_s) + 1.5) * interval_s - now)

    try:
        client.connect()  # type: ignore[no-untyped-call]  # pymodbus leaves connect() unannotated
        direct_reader = _Timed("127.0.0.1", port, timeout_s=2.0)
        for v in variables:
            direct_reader.validate_variable(v)
        direct_reader.read(CollectedVariables.of(variables))  # connects
        reader = _Timed("127.0.0.1", port, timeout_s=2.0)
        writer = _Count()
        context = DataCollectionContext(1, variables, default_interval_ms=interval_ms, min_interval_ms=10)
        with DataCollector(logging.getLogger("bench.modbus"), [reader], [writer]) as collector:
            collector.start(context)
            _wait(lambda: len(reader.durations) >= 1, 10)
            # Tick by tick, alternately: the collector's tick, then half an interval later a raw
            # block-read tick or a direct read() tick. Every method sees the same idle time before
            # its tick and the same load from elsewhere.
            for i in range(2 * ticks):
                sleep_to_half_tick()
                if i % 2 == 0:
                    raw_tick(times["raw"])
                else:
                    direct_tick(times["direct"])
            collector.pause(1)
            stats = collector.stats().readers["modbus"]
            through = reader.durations[1 : 1 + 2 * ticks]  # the first tick connects
            for _ in range(naive_ticks):
                sleep_to_half_tick()
                started = time.perf_counter()
                for address, width in singles:
                    client.read_holding_registers(address, count=width, device_id=1)
                times["naive"].append(time.perf_counter() - started)
            for _ in range(ticks):  # back to back ("hot": no idle time), interleaved
                raw_tick(times["hot_raw"])
                direct_tick(times["hot_direct"])
            collector.stop(1)
        requests_per_tick = direct_reader.stats.requests / (1 + ticks + ticks)
        bad = reader.bad + direct_reader.bad
        direct_reader.close()
    finally:
        client.close()  # type: ignore[no-untyped-call]  # pymodbus leaves close() unannotated
        proc.terminate()
        proc.wait(10)
    figures: dict[str, Any] = {
        "latency_ms": latency_ms,
        "variables": len(variables),
        "registers": sum(count for _start, count in blocks),
        "blocks": len(blocks),
        "requests_per_tick": requests_per_tick,
        "collector_read_ms": ms(through),
        "ticks": len(through),
        "missed_ticks": stats.missed_ticks,
        "bad_samples": bad,
        "samples_written": writer.samples,
    }
    for name, values in times.items():
        figures[f"{name}_ms"] = ms(values)
    return figures


def report(f: dict[str, Any]) -> None:
    print(
        f"\nsimulator answer latency {f['latency_ms']:g} ms: {f['registers']} holding registers in "
        f"{f['blocks']} blocks, {f['variables']} variables of mixed types; methods interleaved tick by tick"
    )
    print(f"{'method':<40}{'requests/tick':>14}{'median ms':>11}{'p90 ms':>9}")
    rows = [
        ("ModbusDataReader in DataCollector", f["requests_per_tick"], f["collector_read_ms"]),
        ("raw pymodbus block reads", f["blocks"], f["raw_ms"]),
        ("ModbusDataReader.read() direct", f["requests_per_tick"], f["direct_ms"]),
        ("naive: one request per variable", f["variables"], f["naive_ms"]),
        ("raw block reads, back to back", f["blocks"], f["hot_raw_ms"]),
        ("read() direct, back to back", f["requests_per_tick"], f["hot_direct_ms"]),
    ]
    for name, requests, (median, p90) in rows:
        print(f"{name:<40}{requests:>14g}{median:>11.3f}{p90:>9.3f}")
    f["collector_vs_raw"] = round(f["collector_read_ms"][0] / f["raw_ms"][0], 3)
    f["naive_vs_collector"] = round(f["naive_ms"][0] / f["collector_read_ms"][0], 1)
    f["naive_vs_raw"] = round(f["naive_ms"][0] / f["raw_ms"][0], 1)
    f["hot_direct_vs_raw"] = round(f["hot_direct_ms"][0] / f["hot_raw_ms"][0], 3)
    print(f"collector / raw blocks:        {f['collector_vs_raw']:.2f}x   (target <= 1.2x)")
    print(
        f"naive / collector:             {f['naive_vs_collector']:.1f}x faster   (target >= 50x; "
        f"even raw blocks are {f['naive_vs_raw']:.1f}x)"
    )
    print(f"back to back, read() / raw:    {f['hot_direct_vs_raw']:.2f}x")
    print(f"collector: {f['ticks']} ticks, {f['missed_ticks']} missed, {f['bad_samples']} BAD samples")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ticks", type=int, default=100, help="ticks per method, loopback scenario (default 100)"
    )
    parser.add_argument("--interval-ms", type=int, default=100, help="tick interval (default 100)")
    parser.add_argument("--latency-ms", type=float, default=2.0, help="device scenario latency (default 2)")
    args = parser.parse_args()
    loopback = measure(0.0, args.ticks, 10, args.interval_ms)
    report(loopback)
    device = measure(args.latency_ms, max(10, args.ticks // 4), 3, max(args.interval_ms, 200))
    report(device)

    def rounded(f: dict[str, Any]) -> dict[str, Any]:
        return {k: (round(v[0], 4) if isinstance(v, tuple) else v) for k, v in f.items()}

    print(json.dumps({"bench": "modbus", "loopback": rounded(loopback), "device": rounded(device)}))


if __name__ == "__main__":
    main()
