"""OPC UA values (the bundled simulator's live nodes and constants) collected into a CSV file.

Run: ``python examples/opcua_to_csv.py [--seconds 5] [--mode subscribe] [--out data-collector-example]``.
Without ``--endpoint`` the example starts an :class:`OpcUaSimulator` of its own on a free port;
with ``--endpoint opc.tcp://host:port/`` it reads a simulator already running, e.g. one started
with ``python -m data_reader.opcua.simulator --port 4840``. Addresses use the namespace URI form,
so they stay right whatever index the server gives the namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections import Counter
from pathlib import Path

from data_collector import DataCollectionContext, DataCollector, Quality, Variable
from data_reader.opcua import OpcUaDataReader
from data_reader.opcua.simulator import NAMESPACE, OpcUaSimulator
from data_writer.csv import CsvFileDataWriter, read_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mode", choices=("poll", "subscribe"), default="poll")
    parser.add_argument("--out", default="data-collector-example")
    parser.add_argument("--endpoint", default=None, help="an already running simulator")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint
        if endpoint is None:
            endpoint = stack.enter_context(OpcUaSimulator()).endpoint
            print(f"simulator listening on {endpoint}")
        reader = OpcUaDataReader(endpoint, mode=args.mode, timeout_s=2.0)
        ns = f"nsu={NAMESPACE}"
        variables = [
            Variable(1, f"{ns};s=Sim.Sine", "float", "opcua", interval_ms=250),  # sine, period 10 s
            Variable(2, f"{ns};s=Sim.Ramp", "float", "opcua", interval_ms=250),  # ramp 0..100 (Float)
            Variable(3, f"{ns};s=Sim.Toggle", "bool", "opcua", interval_ms=500),
            Variable(4, f"{ns};s=Sim.Counter", "int", "opcua", interval_ms=500),  # +1 every 100 ms
            Variable(5, f"{ns};s=Sim.Text", "str", "opcua"),  # "tick N"
            Variable(6, f"{ns};s=Static.Double", "float", "opcua"),  # 3.25
            Variable(7, f"{ns};s=Static.Bytes", "bytes", "opcua"),  # b"\x00\x01\xfe\xff"
            Variable(8, f"{ns};s=Status.Uncertain", "float", "opcua"),  # 7.5, UNCERTAIN
            Variable(9, f"{ns};s=No.Such.Node", "float", "opcua"),  # BAD: BadNodeIdUnknown
        ]
        context = DataCollectionContext(
            1, variables, duration_s=args.seconds, metadata={"source": f"opcua {endpoint} ({args.mode})"}
        )
        csv_path = Path(args.out) / "opcua.csv"
        before = len(read_samples(csv_path)) if csv_path.exists() else 0
        with DataCollector(
            logging.getLogger("example"), [reader], [CsvFileDataWriter(csv_path)]
        ) as collector:
            collector.start(context)
            deadline = time.monotonic() + args.seconds + 5
            while collector.contexts() and time.monotonic() < deadline:
                time.sleep(0.1)  # the context ends by itself after --seconds
            stats = collector.stats().readers["opcua"]
            opcua = reader.opcua_stats()

    rows = read_samples(csv_path)[before:]
    qualities = Counter(row["quality"] for row in rows)
    print(f"CSV file: {csv_path.resolve()} ({len(rows)} rows this run)")
    print(f"qualities: {dict((str(q), n) for q, n in qualities.items())}")
    last = {row["variable_id"]: (row["value"], row["quality"], row["error"]) for row in rows}
    for v in variables:
        value, quality, error = last.get(v.id, (None, Quality.BAD, "never read"))
        print(f"  {v.id} {v.address:<50} {quality!s:<9} {value!r} {error or ''}")
    print(
        f"reader 'opcua' ({args.mode}): {stats.reads} reads, {stats.samples} samples, "
        f"{stats.missed_ticks} missed ticks, last read {stats.last_read_ms:.2f} ms; "
        f"{opcua['read_requests']} Read calls, {opcua['notifications']} notifications"
    )


if __name__ == "__main__":
    main()
