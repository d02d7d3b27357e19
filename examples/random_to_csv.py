"""Two contexts sharing variables at different intervals, collected into CSV for a few seconds.

Run: ``python examples/random_to_csv.py [--seconds 4] [--out data-collector-example]``
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from pathlib import Path

from data_collector import DataCollectionContext, DataCollectionListener, DataCollector, Variable
from data_reader.random import RandomDataReader
from data_writer.csv import CsvFileDataWriter, read_samples


class Announce(DataCollectionListener):
    def after_start(self, context: DataCollectionContext) -> None:
        print(f"context {context.id} started at {context.start_date:%H:%M:%S.%f}")

    def after_stop(self, context: DataCollectionContext) -> None:
        print(f"context {context.id} stopped at {context.end_date:%H:%M:%S.%f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", default="data-collector-example")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    out = Path(args.out)
    csv_path = out / "samples.csv"
    # Variable 1 is shared: context 1 wants it every 300 ms, context 2 every 200 ms, so the reader
    # ticks every 100 ms and reads it once at each 600 ms multiple for both.
    temperature = Variable(1, "sine:5", "float", "random", interval_ms=300)
    context_1 = DataCollectionContext(
        1,
        [temperature, Variable(2, "counter", "int", "random", interval_ms=500)],
        duration_s=args.seconds,
        metadata={"operator": "example", "line": "A"},
    )
    context_2 = DataCollectionContext(
        2,
        [
            Variable(1, "sine:5", "float", "random", interval_ms=200),
            Variable(3, "random", "bool", "random", interval_ms=1000),
            Variable(4, "constant:ready", "str", "random"),
        ],
        duration_s=args.seconds,
    )
    before = Counter(row["context_id"] for row in read_samples(csv_path)) if csv_path.exists() else Counter()
    with DataCollector(
        logging.getLogger("example"), [RandomDataReader()], [CsvFileDataWriter(csv_path)], [Announce()]
    ) as collector:
        collector.start(context_1)
        collector.start(context_2)
        deadline = time.monotonic() + args.seconds + 5
        while collector.contexts() and time.monotonic() < deadline:
            time.sleep(0.1)  # the contexts end by themselves after --seconds
        stats = collector.stats()
    reader = stats.readers["random"]
    rows = Counter(row["context_id"] for row in read_samples(csv_path))
    print(f"CSV file: {csv_path.resolve()}")
    for cid in (1, 2):
        print(f"context {cid}: {rows[cid] - before[cid]} rows this run")
    print(
        f"reader 'random': {reader.reads} reads, {reader.samples} samples, "
        f"{reader.missed_ticks} missed ticks, lateness p99 {reader.lateness_p99_us} us"
    )


if __name__ == "__main__":
    main()
