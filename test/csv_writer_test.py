"""CSV writer specifics: header once, append on reopen, refusal of foreign files, threads, flushing."""

from __future__ import annotations

import csv
import threading
from datetime import UTC, datetime, timedelta, timezone
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


# -- errors retrying cannot fix vs passing ones (issue 9, point 6) --------------------------------------
def _one(
    value: object, *, address: str = "a", error: str | None = None, at: datetime | None = None
) -> CollectedVariables:
    item = CollectedVariable(Variable(1, address, "str", "random"), value, at, Quality.GOOD, error)
    return CollectedVariables([item])


def test_a_foreign_header_is_a_permanent_error_naming_file_and_header(tmp_path: Path) -> None:
    path = tmp_path / "foreign.csv"
    path.write_text("time;tag;value\n1;2;3\n", encoding="utf-8")
    w = CsvFileDataWriter(path)
    with pytest.raises(WriterError) as info:
        w.open()
    assert not isinstance(info.value, OSError)
    assert str(path) in str(info.value) and "'time;tag;value'" in str(info.value), str(info.value)
    assert w.is_transient(info.value) is False
    # per context: refused at the write, also permanent
    (tmp_path / "c5.csv").write_text("time;tag;value\n", encoding="utf-8")
    w = CsvFileDataWriter(tmp_path / "c{context_id}.csv")
    w.open()
    with pytest.raises(WriterError) as info:
        w.write(DataCollectionContext(5, []), _batch(2))
    assert "c5.csv" in str(info.value) and w.is_transient(info.value) is False
    w.close()
    assert (tmp_path / "c5.csv").read_text(encoding="utf-8") == "time;tag;value\n"  # untouched


def test_a_binary_foreign_file_is_refused_with_its_header_shown(tmp_path: Path) -> None:
    path = tmp_path / "image.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + bytes(range(256)) * 4000)  # not UTF-8, ~1 MB
    w = CsvFileDataWriter(path)
    with pytest.raises(WriterError, match=r"another header \('\\\\x89PNG'") as info:
        w.open()
    assert w.is_transient(info.value) is False


def test_text_utf8_cannot_encode_is_escaped_never_an_error(tmp_path: Path) -> None:
    path = tmp_path / "surrogates.csv"
    w = CsvFileDataWriter(path)
    w.open()
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # 'caf\udce9', as from a latin-1 device
    w.write(CTX, _one(bad, address="a\ud800", error="lone \udfff"))
    w.write(CTX, _one("ok"))
    w.close()
    path.read_bytes().decode("utf-8")  # the file stays valid UTF-8
    rows = read_samples(path)
    assert [(r["value"], r["address"], r["error"]) for r in rows] == [
        ("caf\\udce9", "a\\ud800", "lone \\udfff"),
        ("ok", "a", None),
    ]


def test_a_failed_file_operation_is_transient_and_the_retry_writes_once(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the writer wants a directory", encoding="utf-8")
    w = CsvFileDataWriter(blocker / "c{context_id}.csv")
    w.open()
    ctx = DataCollectionContext(4, [])
    with pytest.raises(WriterError) as info:
        w.write(ctx, _batch(3))
    assert isinstance(info.value.__cause__, OSError) and w.is_transient(info.value) is True
    assert w.is_transient(OSError("disk full")) and w.is_transient(TimeoutError())
    assert not w.is_transient(ValueError("refused")) and not w.is_transient(
        UnicodeEncodeError("utf-8", "", 0, 1, "x")
    )
    blocker.unlink()  # what an operator does; the collector's retry then succeeds
    w.write(ctx, _batch(3))
    w.close()
    assert [r["variable_id"] for r in read_samples(blocker / "c4.csv")] == [0, 1, 2]


def test_a_directory_at_the_path_is_permanent(tmp_path: Path) -> None:
    (tmp_path / "out.csv").mkdir()
    w = CsvFileDataWriter(tmp_path / "out.csv")
    with pytest.raises(WriterError) as info:
        w.open()
    assert isinstance(info.value.__cause__, IsADirectoryError) and w.is_transient(info.value) is False


def test_read_at_is_written_as_utc_with_offset(tmp_path: Path) -> None:
    path = tmp_path / "times.csv"
    w = CsvFileDataWriter(path)
    w.open()
    times = [
        datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC),
        datetime(2026, 7, 1, 10, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=2))),  # -> 08:00 UTC
        datetime(2026, 1, 15, 12, 0, tzinfo=timezone(timedelta(0), "WET")),  # offset 0, not UTC
        datetime(2026, 7, 15, 12, 0, tzinfo=timezone(timedelta(hours=2), "CEST")),  # -> 10:00 UTC
        datetime(2026, 3, 4, 5, 6, 7, 890_000),  # naive: taken as UTC
        datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))),  # beyond UTC: own offset
    ]
    for t in times:
        w.write(CTX, _one("v", at=t))
    w.write(CTX, _one("v", at=None))
    w.close()
    with open(path, newline="", encoding="utf-8") as f:
        written = [r["read_at"] for r in csv.DictReader(f)]
    assert written == [
        "2026-01-02T03:04:05.678+00:00",
        "2026-07-01T08:00:00.250+00:00",
        "2026-01-15T12:00:00.000+00:00",
        "2026-07-15T10:00:00.000+00:00",
        "2026-03-04T05:06:07.890+00:00",
        "9999-12-31T23:00:00.000-05:00",
        "",
    ]
    back = [r["read_at"] for r in read_samples(path)]
    assert all(t is None or t.utcoffset() is not None for t in back)
    assert back[1] == times[1] and back[3] == times[3]


def test_runs_and_both_kinds_of_metadata_go_to_a_side_file(tmp_path: Path) -> None:
    import json as _json

    from _util import LOG, CountingReader, wait_for

    from data_collector import DataCollectionContext, DataCollector, Variable

    writer = CsvFileDataWriter(tmp_path / "ctx-{context_id}.csv")
    ctx = DataCollectionContext(
        4, [Variable(1, "counter", "int", "random", 50)], min_interval_ms=10, metadata={"lot": "L-9"}
    )
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        c.start(ctx)
        wait_for(lambda: (tmp_path / "ctx-4.csv").exists() and len(read_samples(tmp_path / "ctx-4.csv")) >= 2)
        c.stop(4)
    lines = [_json.loads(x) for x in (tmp_path / "ctx-4.csv.runs.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["started", "stopped"]
    assert (
        lines[0]["metadata"] == {"lot": "L-9"}
        and lines[0]["deduced_metadata"]["collector"]["library"] == "data-collector"
    )
    assert lines[1]["deduced_metadata"]["ended"] == "stopped" and lines[1]["end"] == ctx.end_date.isoformat()  # type: ignore[union-attr]
