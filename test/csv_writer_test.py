"""CSV writer specifics: header once, append on reopen, refusal of foreign files, threads, flushing."""

from __future__ import annotations

import csv
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from data_collector import (
    CollectedVariable,
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    Quality,
    Variable,
    WriterError,
)
from data_writer.csv_file_data_writer import COLUMNS, CsvFileDataWriter, read_samples


def _batch(n: int, start: int = 0, vt: str = "float") -> CollectedVariables:
    at = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    return CollectedVariables(
        CollectedVariable(Variable(i, f"addr,{i}", vt, "random"), float(i) if vt == "float" else str(i), at)
        for i in range(start, start + n)
    )


CTX = DataCollectionContext(3, [])


def test_header_once_and_append_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.csv"
    for round_ in range(3):
        w = CsvFileDataWriter(path)
        w.open()
        w.write(CTX, _batch(2, start=10 * round_))
        w.close()
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert sum(1 for line in lines if line.startswith("context_id")) == 1
    rows = read_samples(path)
    assert [r["variable_id"] for r in rows] == [0, 1, 10, 11, 20, 21]
    assert rows[0]["address"] == "addr,0"  # quoted properly
    assert rows[0]["read_at"] == datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    assert "2026-01-02T03:04:05.678+00:00" in lines[1]
    assert rows[0]["quality"] is Quality.GOOD and rows[0]["value"] == 0.0


def test_refuses_a_file_with_another_header(tmp_path: Path) -> None:
    path = tmp_path / "foreign.csv"
    path.write_text("a,b,c\n1,2,3\n")
    w = CsvFileDataWriter(path)
    with pytest.raises(WriterError, match="another header"):
        w.open()
    assert path.read_text() == "a,b,c\n1,2,3\n"  # untouched


def test_flushes_each_batch(tmp_path: Path) -> None:
    path = tmp_path / "live.csv"
    w = CsvFileDataWriter(path)
    w.open()
    w.write(CTX, _batch(3))
    assert len(read_samples(path)) == 3  # visible before close
    w.close()


def test_per_context_files(tmp_path: Path) -> None:
    w = CsvFileDataWriter(tmp_path / "c{context_id}.csv")
    w.open()
    w.write(DataCollectionContext(1, []), _batch(1))
    w.write(DataCollectionContext(2, []), _batch(2))
    w.context_stopped(DataCollectionContext(1, []))
    w.close()
    assert len(read_samples(tmp_path / "c1.csv")) == 1 and len(read_samples(tmp_path / "c2.csv")) == 2
    assert w.path_for(7) == tmp_path / "c7.csv"


def test_bad_template_and_delimiter() -> None:
    with pytest.raises(ConfigurationError, match="plant"):
        CsvFileDataWriter("out-{plant}.csv")
    with pytest.raises(ConfigurationError, match="';;'"):
        CsvFileDataWriter("out.csv", delimiter=";;")


def test_many_threads_never_interleave_rows(tmp_path: Path) -> None:
    path = tmp_path / "threads.csv"
    w = CsvFileDataWriter(path)
    w.open()
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        barrier.wait(10)
        for j in range(50):
            w.write(CTX, _batch(20, start=k * 10_000 + j * 100, vt="str"))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    w.close()
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + 8 * 50 * 20
    assert all(len(r) == len(COLUMNS) for r in rows)
    ids = sorted(int(r[1]) for r in rows[1:])
    assert len(set(ids)) == len(ids)
