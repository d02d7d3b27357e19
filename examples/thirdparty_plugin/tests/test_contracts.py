"""The plugin passes data-collector's contract suites: its reader against the Modbus simulator,
its writers against a file and a historian server, the historian also behind a fault proxy."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tank_plugin import HistorianServer, HistorianWriter, JsonLinesWriter, TankReader, read_jsonl

from data_collector import DataReader, DataWriter, Quality, Variable
from data_collector.testing import FaultProxy, ReaderContract, StoredRun, StoredSample, WriterContract
from data_reader.modbus.simulator import ModbusSimulator


class TestTankReader(ReaderContract):
    @pytest.fixture(autouse=True)
    def _device(self, modbus_simulator: ModbusSimulator, fault_proxy: Callable[..., FaultProxy]) -> None:
        self.sim = modbus_simulator  # a Modbus TCP server on a free port, stopped after the test
        self.sim.set_value("hr:400:float32", 71.5)  # the tank's level
        self.proxy = fault_proxy

    def make_reader(self) -> DataReader:
        return TankReader("127.0.0.1", self.sim.port, timeout_s=1.0)

    def make_variables(self) -> list[Variable]:
        return [
            Variable(1, "level:400", "float", "tank"),
            Variable(2, "level:0", "float", "tank"),  # the simulator's sine, -100 .. 100
            Variable(3, "count:120", "int", "tank"),
            Variable(4, "alarm:3", "bool", "tank"),
        ]

    def expected_values(self) -> dict[int, Callable[[Any], bool]]:
        return {
            1: lambda v: v == 71.5,
            2: lambda v: math.isfinite(v) and -100 <= v <= 100,
            3: lambda v: v == 54321,
            4: lambda v: v is True,
        }

    def invalid_variables(self) -> list[Variable]:
        return [
            Variable(90, "volume:3", "float", "tank"),
            Variable(91, "level:x", "float", "tank"),
            Variable(92, "level:400", "str", "tank"),
        ]

    def unreadable_variables(self) -> list[Variable]:
        return [Variable(95, "level:600", "float", "tank")]  # the controller has no register 600

    def make_unreachable_reader(self) -> DataReader:
        proxy = self.proxy(*self.sim.address)  # between the reader and the controller ...
        proxy.cut()  # ... refusing every connection
        return TankReader("127.0.0.1", proxy.port, timeout_s=1.0)


class TestJsonLinesWriter(WriterContract):
    @pytest.fixture(autouse=True)
    def _store(self, tmp_path: Path) -> None:
        self.path = tmp_path / "samples.jsonl"

    def make_writer(self) -> DataWriter:
        return JsonLinesWriter(self.path)

    def read_back(self, context_id: int) -> list[StoredSample]:
        return [
            StoredSample(
                row["context"],
                row["variable"],
                datetime.fromisoformat(row["read_at"]),
                row["value"],
                Quality[row["quality"]],
                row["error"],
            )
            for row in read_jsonl(self.path)
            if row["context"] == context_id
        ]


class TestHistorianWriter(WriterContract):
    @pytest.fixture(autouse=True)
    def _store(self) -> Iterator[None]:
        with HistorianServer() as server:
            self.server = server
            yield

    def make_writer(self) -> DataWriter:
        return HistorianWriter(self.server.host, self.server.port, timeout_s=2.0)

    def read_back(self, context_id: int) -> list[StoredSample]:
        return [
            StoredSample(context_id, variable, read_at, value, Quality[quality], error)
            for variable, read_at, value, quality, error in self.server.samples(context_id)
        ]

    def read_runs(self) -> dict[int, list[StoredRun]]:
        return {
            cid: [
                StoredRun(
                    datetime.fromisoformat(r["start"]) if r["start"] else None,
                    datetime.fromisoformat(r["end"]) if r["end"] else None,
                    r["metadata"],
                )
                for r in self.server.runs(cid)
            ]
            for cid in self.server.run_contexts()
        }

    def proxy_target(self) -> tuple[str, int]:
        return self.server.host, self.server.port

    def make_proxied_writer(self, proxy: FaultProxy) -> DataWriter:
        return HistorianWriter(*proxy.address, timeout_s=2.0)
