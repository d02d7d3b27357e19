"""HDF5 writer benchmark: Hdf5DataWriter through a DataCollector, and against raw PyTables appends.

Run: ``python bench/hdf5_bench.py [--minutes 5] [--ramp-seconds 60] [--dir DIR]``

(a) 10,000 random float variables at 100 ms (100,000 samples/s) for ``--minutes`` into one HDF5
    file through a DataCollector with the RandomDataReader and default writer options (zlib 1,
    shuffle, chunks of 8192 rows, flush every 2 s): samples/s written to disk, file size per million
    samples, the writer's busy share (time in ``write()`` and in flushes over the elapsed time),
    flush duration (mean/max: how long a crash could catch the file in a flush), CPU seconds per
    million samples, dropped, lost and missed samples.
(b) In the same run, the writer against raw PyTables: the same rows (100 batches of the 10,000
    variables read by the RandomDataReader) written by ``Hdf5DataWriter.write()`` (conversion from
    ``CollectedVariables`` included) with a ``flush()`` every 20 batches, and by
    ``Table.append`` of the rows already as NumPy records with the same row type, chunk shape,
    compression and flush cadence; rounds alternate (ours, raw, ...), median of each; the ratio
    is ours rows/s over raw rows/s.
(c) The highest rate sustained for ``--ramp-seconds`` (default 60) with nothing dropped or lost
    and the writer keeping up (its queue at the end below 2 flush intervals of samples), growing
    the variable count at 100 ms as ``bench/engine_bench.py`` does; missed ticks (the reader's)
    are shown beside it.

``--complib`` / ``--complevel`` change the compression of every file (default: the writer's,
zlib 1). Prints a table per part, then one JSON line. Asserts nothing. Files go to a temporary folder
(``--dir`` to choose it) and are deleted (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import tables

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_collector import CollectedVariables, DataCollectionContext, DataCollector, Variable
from data_reader.random import RandomDataReader
from data_writer.hdf5 import Hdf5DataWriter
from data_writer.hdf5._layout import QUALITY_NAMES, sample_dtype, time_us

LOG = logging.getLogger("bench")
INTERVAL_MS = 100
#: compression of every file (``--complib`` / ``--complevel``; the writer's defaults otherwise)
COMPRESSION: dict[str, Any] = {"complib": "zlib", "complevel": 1}


def collect(n_vars: int, seconds: float, folder: Path, tag: str) -> dict[str, Any]:
    """``n_vars`` random floats at 100 ms for ``seconds`` into an HDF5 file through a collector."""
    path = folder / f"{tag}.h5"
    writer = Hdf5DataWriter(path, **COMPRESSION)
    reader = RandomDataReader(reader_type="bench", min_interval_ms=1)
    variables = [Variable(i, "random", "float", "bench", INTERVAL_MS) for i in range(n_vars)]
    ctx = DataCollectionContext(1, variables, min_interval_ms=1, duration_s=86400)
    depths: list[int] = []
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(ctx)
        time.sleep(2 * INTERVAL_MS / 1000)  # settle: first ticks
        s0 = c.stats()
        f0, w0, fl0, n0 = writer.samples_flushed, writer.write_seconds, writer.flush_seconds, writer.flushes
        cpu0, t0 = time.process_time(), time.monotonic()
        end = t0 + seconds
        while (now := time.monotonic()) < end:
            time.sleep(min(1.0, end - now))
            depths.append(c.stats().writers[writer.name].queue_depth)
        t1, cpu1 = time.monotonic(), time.process_time()
        f1, w1, fl1, n1 = writer.samples_flushed, writer.write_seconds, writer.flush_seconds, writer.flushes
        s1 = c.stats()
        stop0 = time.monotonic()
        c.stop(1)
        drain_s = time.monotonic() - stop0
        s2 = c.stats()
    r0, r1 = s0.readers["bench"], s1.readers["bench"]
    ws = s2.writers[writer.name]
    elapsed = t1 - t0
    flushed = f1 - f0
    size = path.stat().st_size
    total = writer.samples_flushed
    rate_in = (r1.samples - r0.samples) / elapsed
    return {
        "variables": n_vars,
        "interval_ms": INTERVAL_MS,
        "seconds": round(elapsed, 1),
        "samples_per_s_read": round(rate_in),
        "samples_per_s_written": round(flushed / elapsed),
        "writer_busy": round(((w1 - w0) + (fl1 - fl0)) / elapsed, 3),
        "write_us_per_sample": round((w1 - w0) / flushed * 1e6, 3) if flushed else None,
        "flush_us_per_sample": round((fl1 - fl0) / flushed * 1e6, 3) if flushed else None,
        "flushes": n1 - n0,
        "flush_ms_mean": round((fl1 - fl0) / max(1, n1 - n0) * 1000, 1),
        "flush_ms_max": round(writer.max_flush_seconds * 1000, 1),
        "cpu_s_per_M": round((cpu1 - cpu0) / max(1, flushed) * 1e6, 2),
        "file_mb_per_M_samples": round(size / max(1, total) * 1e6 / 1e6, 2),
        "file_mb": round(size / 1e6, 1),
        "queue_end": depths[-1] if depths else 0,
        "queue_max": max(depths) if depths else 0,
        "drain_s": round(drain_s, 2),
        "missed_ticks": r1.missed_ticks - r0.missed_ticks,
        "missed_samples": r1.missed_samples - r0.missed_samples,
        "dropped": ws.dropped_samples,
        "lost": ws.lost_samples,
        "written_total": total,
        "delivered_total": ws.samples_delivered,
    }


def sustained(r: dict[str, Any]) -> bool:
    """Nothing dropped or lost, and the writer keeping up (its queue within two flush intervals).

    Missed ticks are shown but do not count: they are the reader's (a busy machine delays a tick),
    and the collector records each missed boundary as a BAD sample that the writer stores too.
    """
    keeps_up = r["queue_end"] <= 2 * 2.0 * r["samples_per_s_read"]
    return bool(r["dropped"] == 0 and r["lost"] == 0 and keeps_up)


def make_batches(n_vars: int, count: int) -> tuple[list[CollectedVariables], list[np.ndarray[Any, Any]]]:
    """``count`` batches of ``n_vars`` floats read by the RandomDataReader, and the same rows as records."""
    reader = RandomDataReader(reader_type="bench")
    variables = [Variable(i, "random", "float", "bench", INTERVAL_MS) for i in range(n_vars)]
    t0 = datetime.now(UTC).replace(microsecond=0)
    dtype = sample_dtype("float")
    batches, records = [], []
    for k in range(count):
        at = t0 + timedelta(milliseconds=INTERVAL_MS * k)
        batch = CollectedVariables.of(variables, at)
        reader.read(batch)
        batches.append(batch)
        rec = np.empty(n_vars, dtype=dtype)
        rec["time_us"] = time_us(at)
        rec["variable_id"] = [v.id for v in variables]
        rec["value"] = batch.values
        rec["quality"] = QUALITY_NAMES[0]
        records.append(rec)
    return batches, records


def ours(batches: list[CollectedVariables], path: Path, every: int) -> tuple[float, float, int]:
    writer = Hdf5DataWriter(path, flush_s=3600, **COMPRESSION)
    ctx = DataCollectionContext(1, batches[0].variables, duration_s=86400)
    ctx._start_date = datetime.now(UTC)
    writer.context_started(ctx)
    t0, c0 = time.perf_counter(), time.process_time()
    for k, batch in enumerate(batches, 1):
        writer.write(ctx, batch)
        if k % every == 0:
            writer.flush()
    writer.flush()
    t1, c1 = time.perf_counter(), time.process_time()
    writer.close()
    return t1 - t0, c1 - c0, path.stat().st_size


def raw(records: list[np.ndarray[Any, Any]], path: Path, every: int) -> tuple[float, float, int]:
    h5 = tables.open_file(str(path), "w")
    group = h5.create_group("/", "context_1")
    group = h5.create_group(group, "run_1")
    table = h5.create_table(
        group,
        "float",
        description=records[0].dtype,
        filters=tables.Filters(shuffle=True, **COMPRESSION),
        chunkshape=(8192,),
    )
    h5.flush()
    t0, c0 = time.perf_counter(), time.process_time()
    for k, rec in enumerate(records, 1):
        table.append(rec)
        if k % every == 0:
            table.flush()
            h5.flush()
    table.flush()
    h5.flush()
    t1, c1 = time.perf_counter(), time.process_time()
    h5.close()
    return t1 - t0, c1 - c0, path.stat().st_size


def part_ratio(folder: Path, rounds: int = 5) -> dict[str, Any]:
    n_vars, count, every = 10_000, 100, 20
    batches, records = make_batches(n_vars, count)
    rows = n_vars * count
    results: dict[str, list[tuple[float, float, int]]] = {"ours": [], "raw": []}
    for k in range(rounds):
        order = ("ours", "raw") if k % 2 == 0 else ("raw", "ours")
        for name in order:
            path = folder / f"ratio-{name}-{k}.h5"
            results[name].append(ours(batches, path, every) if name == "ours" else raw(records, path, every))
            path.unlink()
    med = {
        name: (statistics.median(x[0] for x in r), statistics.median(x[1] for x in r))
        for name, r in results.items()
    }
    out = {
        "rows": rows,
        "batch": n_vars,
        "flush_every_batches": every,
        "rounds": rounds,
        "ours_rows_per_s": round(rows / med["ours"][0]),
        "raw_rows_per_s": round(rows / med["raw"][0]),
        "ours_cpu_rows_per_s": round(rows / med["ours"][1]),
        "raw_cpu_rows_per_s": round(rows / med["raw"][1]),
        "ours_file_mb": round(results["ours"][0][2] / 1e6, 2),
        "raw_file_mb": round(results["raw"][0][2] / 1e6, 2),
    }
    out["ratio"] = round(out["ours_rows_per_s"] / out["raw_rows_per_s"], 3)
    out["ratio_cpu"] = round(out["ours_cpu_rows_per_s"] / out["raw_cpu_rows_per_s"], 3)
    return out


def show_run(r: dict[str, Any]) -> None:
    print(
        f"{r['variables']:>7} {r['samples_per_s_read']:>10,} {r['samples_per_s_written']:>10,} "
        f"{r['writer_busy']:>6.2f} {r['flush_ms_mean']:>7.1f} {r['flush_ms_max']:>7.1f} "
        f"{r['file_mb_per_M_samples']:>7.2f} {r['cpu_s_per_M']:>7.2f} {r['queue_max']:>8,} "
        f"{r['missed_ticks']:>6} {r['dropped']:>7} {r['lost']:>5}  {'yes' if sustained(r) else 'no'}",
        flush=True,
    )


HEADER = (
    f"{'vars':>7} {'read/s':>10} {'written/s':>10} {'busy':>6} {'fl ms':>7} {'fl max':>7} "
    f"{'MB/M':>7} {'cpu/M':>7} {'queue':>8} {'missed':>6} {'dropped':>7} {'lost':>5}  ok"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="part (a), default 5")
    ap.add_argument("--ramp-seconds", type=float, default=60.0, help="per step of part (c), default 60")
    ap.add_argument("--dir", type=Path, default=None, help="where the files go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument("--only", choices=("main", "ratio", "ramp"), help="run one part")
    ap.add_argument("--complib", default="zlib", help='compression (default "zlib", the writer\'s)')
    ap.add_argument("--complevel", type=int, default=1, help="compression level (default 1, the writer's)")
    args = ap.parse_args()
    COMPRESSION.update(complib=args.complib, complevel=args.complevel)
    logging.basicConfig(level=logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="hdf5-bench-", dir=args.dir))
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    print(
        f"# hdf5_bench  python {platform.python_version()}  PyTables {tables.__version__}  "
        f"HDF5 {tables.hdf5_version}  cores {os.cpu_count()}  load {load_before:.2f}  "
        f"{args.complib} {args.complevel}  files in {folder}",
        flush=True,
    )
    run = {"main", "ratio", "ramp"} if args.only is None else {args.only}
    main_run: dict[str, Any] | None = None
    ratio: dict[str, Any] | None = None
    ramp: list[dict[str, Any]] = []
    best = 0
    try:
        if "main" in run:
            print(
                f"\n(a) 10,000 variables at {INTERVAL_MS} ms for {args.minutes:g} min into HDF5", flush=True
            )
            print(HEADER)
            main_run = collect(10_000, args.minutes * 60, folder, "main")
            show_run(main_run)
            if not args.keep:
                (folder / "main.h5").unlink()
        if "ratio" in run:
            print(
                "\n(b) Hdf5DataWriter vs raw PyTables Table.append, same rows/chunks/compression", flush=True
            )
            ratio = part_ratio(folder)
            print(f"{'':>6} {'rows/s':>11} {'rows/CPU s':>11} {'file MB':>8}")
            for name in ("ours", "raw"):
                print(
                    f"{name:>6} {ratio[name + '_rows_per_s']:>11,} {ratio[name + '_cpu_rows_per_s']:>11,} "
                    f"{ratio[name + '_file_mb']:>8.2f}"
                )
            print(f"ratio ours/raw: {ratio['ratio']:.3f} (wall), {ratio['ratio_cpu']:.3f} (CPU)", flush=True)
        if "ramp" in run:
            print(
                f"\n(c) growing the variable count at {INTERVAL_MS} ms, {args.ramp_seconds:g} s per step",
                flush=True,
            )
            print(HEADER)
            for n in (20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000, 150_000, 200_000):
                r = collect(n, args.ramp_seconds, folder, f"ramp-{n}")
                ramp.append(r)
                show_run(r)
                if not args.keep:
                    (folder / f"ramp-{n}.h5").unlink()
                if not sustained(r):
                    break
                best = r["samples_per_s_written"]
            print(f"\nhighest rate sustained with nothing dropped: {best:,} samples/s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(
        json.dumps(
            {
                "bench": "hdf5",
                "compression": COMPRESSION,
                "load_before": load_before,
                "load_after": round(os.getloadavg()[0], 2),
                "main": main_run,
                "vs_raw_pytables": ratio,
                "ramp": ramp,
                "max_rate_sustained": best,
            }
        )
    )


if __name__ == "__main__":
    main()
