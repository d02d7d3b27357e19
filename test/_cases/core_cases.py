"""Contract cases of the core plugins: the CSV and noop writers and the random reader."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from data_collector import DataReader, DataWriter, Quality, Variable
from data_collector.testing import ReaderContract
from data_reader.random_data_reader import RandomDataReader
from data_writer.csv_file_data_writer import CsvFileDataWriter, read_samples
from data_writer.noop import NoopDataWriter

from . import StoredSample, WriterCase, WriterHarness


class _CsvHarness(WriterHarness):
    def __init__(self, tmp: Path, template: str) -> None:
        self.template = str(tmp / template)

    def new_writer(self) -> DataWriter:
        return CsvFileDataWriter(self.template)

    def read_back(self, context_id: int) -> list[StoredSample]:
        path = Path(self.template.format(context_id=context_id))
        if not path.exists():
            return []
        return [
            StoredSample(
                r["context_id"], r["variable_id"], r["read_at"], r["value"], r["quality"], r["error"]
            )
            for r in read_samples(path)
            if r["context_id"] == context_id
        ]


@contextmanager
def _csv_single(tmp: Path) -> Iterator[WriterHarness]:
    yield _CsvHarness(tmp, "all.csv")


@contextmanager
def _csv_per_context(tmp: Path) -> Iterator[WriterHarness]:
    yield _CsvHarness(tmp, "ctx-{context_id}/samples.csv")


class _Keep(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _NoopHarness(WriterHarness):
    """The noop writer's store is its log: one DEBUG record per sample, whose arguments are the
    sample's own objects (context id, variable id, address, value, quality, read time, error)."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(f"test.noop.{uuid.uuid4().hex}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.handler = _Keep(self.records)
        self.logger.addHandler(self.handler)

    def new_writer(self) -> DataWriter:
        return NoopDataWriter(self.logger)

    def read_back(self, context_id: int) -> list[StoredSample]:
        out = []
        for record in list(self.records):
            assert isinstance(record.args, tuple)
            cid, vid, _address, value, quality, at, error = record.args
            if cid == context_id:
                assert isinstance(vid, int) and isinstance(quality, Quality)
                text = str(error).removeprefix(" error: ") or None
                out.append(StoredSample(cid, vid, datetime.fromisoformat(str(at)), value, quality, text))
        return out


@contextmanager
def _noop(tmp: Path) -> Iterator[WriterHarness]:
    harness = _NoopHarness()
    try:
        yield harness
    finally:
        harness.logger.removeHandler(harness.handler)


WRITER_CASES = [
    WriterCase("csv", _csv_single, array_values=True),
    WriterCase("csv-per-context", _csv_per_context, array_values=True),
    WriterCase("noop", _noop),
]


class RandomContract(ReaderContract):
    """The random reader: every signal and value type, and its always-BAD ``bad:<reason>``."""

    def make_reader(self) -> DataReader:
        return RandomDataReader()

    def make_variables(self) -> list[Variable]:
        return [
            Variable(1, "sine", "float", "random", 100),
            Variable(2, "ramp:2", "int", "random", 100),
            Variable(3, "random", "bool", "random", 100),
            Variable(4, "constant:hello", "str", "random", 100),
            Variable(5, "constant:-7", "int", "random", 100),
            Variable(6, "constant:2.5", "float", "random", 100),
            Variable(7, "constant:on", "bool", "random", 100),
            Variable(8, "counter", "int", "random", 100),
        ]

    def expected_values(self) -> dict[int, Callable[[Any], bool]]:
        return {
            1: lambda v: -1.0 <= v <= 1.0 and math.isfinite(v),
            2: lambda v: 0 <= v < 100,
            3: lambda v: v in (True, False),
            4: lambda v: v == "hello",
            5: lambda v: v == -7,
            6: lambda v: v == 2.5,
            7: lambda v: v is True,
            8: lambda v: v >= 1,
        }

    def invalid_variables(self) -> list[Variable]:
        return [
            Variable(90, "no-such-signal", "float", "random"),
            Variable(91, "constant:abc", "int", "random"),
            Variable(92, "sine:-1", "float", "random"),
        ]

    def unreadable_variables(self) -> list[Variable]:
        return [Variable(95, "bad:sensor unplugged", "float", "random")]


READER_CONTRACTS = [RandomContract]
