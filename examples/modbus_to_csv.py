"""Modbus TCP values (the bundled simulator's signals and constants) collected into a CSV file.

Run: ``python examples/modbus_to_csv.py [--seconds 5] [--out data-collector-example]``.
Without ``--port`` the example starts a :class:`ModbusSimulator` of its own on a free port; with
``--port N`` it reads a simulator (or a device with the same map) already listening on
``--host``:N, e.g. one started with ``python -m data_reader.modbus.simulator --port 5020``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections import Counter
from pathlib import Path

from data_collector import DataCollectionContext, DataCollector, Quality, Variable
from data_reader.modbus import ModbusDataReader
from data_reader.modbus.simulator import ModbusSimulator
from data_writer.csv import CsvFileDataWriter, read_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", default="data-collector-example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="an already running simulator or device")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with contextlib.ExitStack() as stack:
        port = args.port
        if port is None:
            port = stack.enter_context(ModbusSimulator(args.host, 0, period_s=4.0)).port
            print(f"simulator listening on {args.host}:{port}")
        reader = ModbusDataReader(args.host, port, timeout_s=0.5)
        variables = [
            Variable(1, "hr:0:float32", "float", "modbus", interval_ms=250),  # sine, amplitude 100
            Variable(2, "hr:2:float32", "float", "modbus", interval_ms=250),  # ramp 0..100
            Variable(3, "hr:9.0", "bool", "modbus", interval_ms=250),  # square wave (bit 0 of hr 9)
            Variable(4, "ir:6:int16;scale=0.01", "float", "modbus"),  # the sine again, scaled int16
            Variable(5, "hr:4:uint32", "int", "modbus"),  # seconds since the simulator started
            Variable(6, "hr:252:float32:CDAB", "float", "modbus"),  # constant -1234.5625, words swapped
            Variable(7, "hr:300:string8", "str", "modbus"),  # "data-collector"
            Variable(8, "coil:3", "bool", "modbus"),  # True
        ]
        context = DataCollectionContext(
            1, variables, duration_s=args.seconds, metadata={"source": f"modbus {args.host}:{port}"}
        )
        csv_path = Path(args.out) / "modbus.csv"
        before = len(read_samples(csv_path)) if csv_path.exists() else 0
        with DataCollector(
            logging.getLogger("example"), [reader], [CsvFileDataWriter(csv_path)]
        ) as collector:
            collector.start(context)
            deadline = time.monotonic() + args.seconds + 5
            while collector.contexts() and time.monotonic() < deadline:
                time.sleep(0.1)  # the context ends by itself after --seconds
            stats = collector.stats().readers["modbus"]

    rows = read_samples(csv_path)[before:]
    qualities = Counter(row["quality"] for row in rows)
    print(f"CSV file: {csv_path.resolve()} ({len(rows)} rows this run)")
    print(f"qualities: {dict((str(q), n) for q, n in qualities.items())}")
    last = {row["variable_id"]: row["value"] for row in rows if row["quality"] is Quality.GOOD}
    for v in variables:
        print(f"  {v.id} {v.address:<24} last value {last.get(v.id)!r}")
    print(
        f"reader 'modbus': {stats.reads} reads, {stats.samples} samples, {stats.missed_ticks} missed ticks, "
        f"last read {stats.last_read_ms:.2f} ms"
    )


if __name__ == "__main__":
    main()
