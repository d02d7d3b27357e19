"""Archive writer benchmark: .npy files of 1,000-point float64 arrays, ours vs raw ``numpy.save``.

Run: ``nice python bench/archive_bench.py [--files 500] [--rounds 3] [--dir DIR] [--keep]``

Every side writes the same arrays (1,000 float64 points, 8,128 bytes per file with the .npy
header), one file each, into its own folder on the same disk (``--dir``, default a temporary
folder under the current one), in rounds; within a round the sides take turns every 100 files
(in a rotating order), so that the disk's ups and downs fall on all of them alike; the median of
the rounds is shown, and the median of the per-round ratios. ``ArchiveDataWriter.write()`` is
called directly (``per = "sample"``, ``format = "npy"``, template ``{{ '%08d' % seq }}.npy``),
so the figures are the writer's, not the collector's.

Durability: the writer fsyncs each file and, before ``write()`` returns, the folder it linked
into (once per ``write()``); so the raw side it is compared with does the same: ``numpy.save`` to
an open file, ``fsync`` of the file, and ``fsync`` of the folder once per batch. Sides:

- ``ours, 1 per write``: one array per ``write()`` (a waveform per tick): file + folder fsync each;
- ``raw, fsync file+folder``: the same durability, raw;
- ``ours, 100 per write``: 100 arrays per ``write()`` (100 waveforms per tick): the folder fsync
  once per 100 files;
- ``raw, fsync file, folder/100``: the same durability, raw;
- ``raw, no fsync``: plain ``numpy.save(path, array)``, for information (no durability at all).

The ratios (ours files/s over raw files/s at the same durability) are printed; ≥ 0.8 is expected.
Asserts nothing. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_collector import CollectedVariable, CollectedVariables, DataCollectionContext, Variable
from data_writer.archive import ArchiveDataWriter

POINTS = 1000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def arrays(n: int) -> list[np.ndarray[Any, np.dtype[np.float64]]]:
    rng = np.random.default_rng(7)
    return [rng.random(POINTS) for _ in range(n)]


class Ours:
    """``ArchiveDataWriter.write()`` of ``per_write`` arrays per call, into ``folder``."""

    def __init__(self, folder: Path, per_write: int) -> None:
        self.variable = Variable(1, "wave", "float", "bench")
        self.context = DataCollectionContext(1, [self.variable])
        self.writer = ArchiveDataWriter(folder, "{{ '%08d' % seq }}.npy", per="sample", format="npy")
        self.writer.open()
        self.per_write = per_write
        self.n = 0

    def write(self, chunk: list[Any]) -> float:
        batches = []
        for i in range(0, len(chunk), self.per_write):
            items = []
            for a in chunk[i : i + self.per_write]:
                self.n += 1
                items.append(CollectedVariable(self.variable, a, T0 + timedelta(milliseconds=self.n)))
            batches.append(CollectedVariables(items))
        start = time.perf_counter()
        for b in batches:
            self.writer.write(self.context, b)
        return time.perf_counter() - start

    def close(self) -> None:
        self.writer.close()
        assert self.writer.files_written == self.n


class Raw:
    """``numpy.save`` of each array into ``folder``; with ``dir_every``: fsync of each file, and of
    the folder every ``dir_every`` files."""

    def __init__(self, folder: Path, dir_every: int | None) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self.dir_every = dir_every
        self.dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        self.n = 0

    def write(self, chunk: list[Any]) -> float:
        start = time.perf_counter()
        for a in chunk:
            self.n += 1
            path = self.folder / f"{self.n:08d}.npy"
            if self.dir_every is None:
                np.save(path, a)
                continue
            with open(path, "wb") as f:
                np.save(f, a)
                f.flush()
                os.fsync(f.fileno())
            if self.n % self.dir_every == 0:
                os.fsync(self.dfd)
        return time.perf_counter() - start

    def close(self) -> None:
        if self.dir_every is not None:
            os.fsync(self.dfd)
        os.close(self.dfd)


SIDES: dict[str, Callable[[Path], Ours | Raw]] = {
    "ours, 1 per write": lambda f: Ours(f, 1),
    "raw, fsync file+folder": lambda f: Raw(f, 1),
    "ours, 100 per write": lambda f: Ours(f, 100),
    "raw, fsync file, folder/100": lambda f: Raw(f, 100),
    "raw, no fsync": lambda f: Raw(f, None),
}
CHUNK = 100


def one_round(base: Path, data: list[Any], r: int) -> dict[str, float]:
    """Seconds per side; the sides take turns every ``CHUNK`` files (in a rotating order), so that
    the disk's ups and downs (other programs) fall on all of them alike."""
    sides = {name: make(base / f"r{r}-s{i}") for i, (name, make) in enumerate(SIDES.items())}
    spent = dict.fromkeys(sides, 0.0)
    names = list(sides)
    for k, i in enumerate(range(0, len(data), CHUNK)):
        chunk = data[i : i + CHUNK]
        for name in names[k % len(names) :] + names[: k % len(names)]:
            spent[name] += sides[name].write(chunk)
    for side in sides.values():
        side.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500, help="files per side and round (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, sides alternating (default 3)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temporary folder here)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the files")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="archive-bench-", dir=args.dir or Path.cwd()))
    data = arrays(args.files)
    np.save(base / "probe.npy", data[0])
    size = (base / "probe.npy").stat().st_size
    times: dict[str, list[float]] = {name: [] for name in SIDES}
    try:
        for r in range(args.rounds):
            for name, seconds in one_round(base, data, r).items():
                times[name].append(seconds)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    results = {}
    print(
        f"archive bench: {args.files} files of {POINTS} float64 ({size} bytes) per side and round, "
        f"{args.rounds} rounds, medians; {base.parent} ({platform.platform()})"
    )
    print(f"{'side':<30} {'files/s':>10} {'MB/s':>8}")
    for name, ts in times.items():
        t = statistics.median(ts)
        fps = args.files / t
        results[name] = {"files_per_s": round(fps, 1), "mb_per_s": round(fps * size / 1e6, 2), "seconds": ts}
        print(f"{name:<30} {fps:>10.0f} {fps * size / 1e6:>8.2f}")

    def ratio(ours_side: str, raw_side: str) -> tuple[float, list[float]]:
        per_round = [tr / to for to, tr in zip(times[ours_side], times[raw_side], strict=True)]
        return statistics.median(per_round), per_round

    r1, r1s = ratio("ours, 1 per write", "raw, fsync file+folder")
    r100, r100s = ratio("ours, 100 per write", "raw, fsync file, folder/100")
    for label, median, rs in (("1 per write:  ", r1, r1s), ("100 per write:", r100, r100s)):
        shown = " ".join(f"{x:.2f}" for x in rs)
        print(
            f"ratio ours/raw files/s, same durability, {label} {median:.2f}"
            f" (rounds: {shown}; expected >= 0.8)"
        )
    print(
        json.dumps(
            {
                "bench": "archive",
                "files": args.files,
                "rounds": args.rounds,
                "bytes_per_file": size,
                "results": results,
                "ratio_1_per_write": round(r1, 3),
                "ratio_100_per_write": round(r100, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
