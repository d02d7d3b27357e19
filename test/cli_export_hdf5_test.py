"""``data-collector export run.h5``: an HDF5 file of the hdf5 writer to CSV and Parquet, with the
columns and text of the SQL export (the same samples written to both stores export alike)."""

from __future__ import annotations

import csv
import io
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from cli_demo_export_test import TRICKY, cli, same

from data_collector import CollectedVariable, CollectedVariables, DataCollectionContext, Quality, Variable
from data_writer.csv import parse_value

pytest.importorskip("tables")
from data_writer.hdf5 import Hdf5DataWriter

BASE = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
VARIABLES = [Variable(i + 1, f"addr:{i + 1}", vt, "plc") for i, (vt, _v) in enumerate(TRICKY)]


def batches(cid: int, ticks: range) -> list[CollectedVariables]:
    out = []
    for tick in ticks:
        at = BASE + timedelta(seconds=tick, microseconds=cid)
        items = []
        for v, (_vt, value) in zip(VARIABLES, TRICKY, strict=True):
            if value is None:
                items.append(CollectedVariable(v, None, at, Quality.BAD, "device timeout"))
            elif isinstance(value, str):
                items.append(CollectedVariable(v, f"{value} {tick}", at, Quality.UNCERTAIN, None))
            else:
                items.append(CollectedVariable(v, value, at, Quality.GOOD, None))
        out.append(CollectedVariables(items))
    return out


def fill(writer: Any, runs: list[tuple[int, range]]) -> list[tuple[int, CollectedVariable]]:
    """Write runs of contexts through ``writer``; every (context id, sample) written, in order."""
    written = []
    with writer.lock:
        writer.open()
        for cid, ticks in runs:
            context = DataCollectionContext(cid, VARIABLES, metadata={"batch": f"B-{cid}"})
            context._start_date = BASE + timedelta(seconds=ticks.start)
            writer.context_started(context)
            for batch in batches(cid, ticks):
                writer.write(context, batch)
                written += [(cid, item) for item in batch]
            context._end_date = BASE + timedelta(seconds=ticks.stop)
            context._deduced = MappingProxyType({"ended": "completed"})  # as the collector's stop says
            writer.context_stopped(context)
        writer.close()
    return written


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Path, str, list[tuple[int, CollectedVariable]]]:
    """The same samples in an HDF5 file and an SQLite store; and the samples as written."""
    pytest.importorskip("sqlalchemy")
    from data_writer.sql_data_writer import SqlDataWriter

    runs = [(1, range(0, 3)), (2, range(0, 3))]
    h5 = tmp_path / "runs.h5"
    written = fill(Hdf5DataWriter(h5, flush_s=0), runs)
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    fill(SqlDataWriter(url), runs)  # the same batches (batches() is deterministic)
    return h5, url, written


def test_hdf5_to_csv_is_the_sql_export(stores: tuple[Path, str, list[Any]], tmp_path: Path) -> None:
    h5, url, written = stores
    from_h5 = cli(["export", str(h5), "-o", "h5.csv"], tmp_path)
    assert from_h5.returncode == 0, from_h5.stderr
    assert f"exported {len(written)} samples of 2 contexts from {h5}" in from_h5.stderr
    from_sql = cli(["export", url, "-o", "sql.csv"], tmp_path)
    assert from_sql.returncode == 0, from_sql.stderr
    text = (tmp_path / "h5.csv").read_text(encoding="utf-8")
    assert text == (tmp_path / "sql.csv").read_text(encoding="utf-8")

    rows = list(csv.DictReader(io.StringIO(text)))
    expected = sorted(written, key=lambda w: (w[0], w[1].read_at, w[1].variable.id))
    assert len(rows) == len(expected)
    for row, (cid, item) in zip(rows, expected, strict=True):
        v = item.variable
        assert (int(row["context_id"]), int(row["variable_id"]), row["address"]) == (cid, v.id, v.address)
        assert (row["value_type"], row["reader_type"]) == (v.value_type, v.reader_type)
        assert datetime.fromisoformat(row["read_at"]) == item.read_at
        assert same(parse_value(row["value"], row["value_type"]), item.value), (row, item)
        assert row["quality"] == item.quality.value and (row["error"] or None) == item.error

    # to standard output, one context, some variables, a time window: as from SQL
    args = ["--context", "2", "--variables", "1,3,16", "--start", (BASE + timedelta(seconds=1)).isoformat()]
    part = cli(["export", str(h5), *args], tmp_path)
    assert part.returncode == 0, part.stderr
    assert part.stdout == cli(["export", url, *args], tmp_path).stdout
    assert [r["variable_id"] for r in csv.DictReader(io.StringIO(part.stdout))] == ["1", "3", "16"] * 2


def test_hdf5_to_parquet_is_the_sql_export(stores: tuple[Path, str, list[Any]], tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    h5, url, written = stores
    for source, name in ((str(h5), "h5.parquet"), (url, "sql.parquet")):
        done = cli(["export", source, "-o", f"out/{name}"], tmp_path)
        assert done.returncode == 0, done.stderr
    a = pq.read_table(tmp_path / "out" / "h5.parquet")
    b = pq.read_table(tmp_path / "out" / "sql.parquet")
    assert a.schema == b.schema
    assert a.column_names[:6] == [
        "context_id",
        "variable_id",
        "address",
        "value_type",
        "reader_type",
        "read_at",
    ]
    rows_a, rows_b = a.to_pylist(), b.to_pylist()
    assert len(rows_a) == len(rows_b) == len(written)
    for x, y in zip(rows_a, rows_b, strict=True):
        assert x.keys() == y.keys() and all(same(x[k], y[k]) for k in x), (x, y)
    expected = sorted(written, key=lambda w: (w[0], w[1].read_at, w[1].variable.id))
    for row, (cid, item) in zip(rows_a, expected, strict=True):
        assert (row["context_id"], row["variable_id"], row["read_at"]) == (
            cid,
            item.variable.id,
            item.read_at,
        )
        if item.value is None:
            assert row["value"] is None and row["value_float"] is None
        else:
            assert same(parse_value(row["value"], row["value_type"]), item.value)


def test_runs_listing_selection_and_detection_by_signature(tmp_path: Path) -> None:
    h5 = tmp_path / "runs.h5"
    fill(Hdf5DataWriter(h5, flush_s=0), [(1, range(0, 2)), (2, range(0, 2)), (1, range(10, 13))])

    listing = cli(["export", str(h5), "--list"], tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["context", "run", "start", "end", "ended", "samples", "metadata"]
    assert [line.split()[:2] for line in lines[1:]] == [["1", "1"], ["1", "2"], ["2", "1"]]
    assert {line.split()[4] for line in lines[1:]} == {"completed"}
    assert [line.split()[5] for line in lines[1:]] == [str(2 * len(TRICKY)), str(3 * len(TRICKY)), "32"]
    assert '{"batch": "B-1"}' in lines[1]

    second = cli(["export", str(h5), "--context", "1", "--run", "2"], tmp_path)
    assert second.returncode == 0, second.stderr
    times = {r["read_at"] for r in csv.DictReader(io.StringIO(second.stdout))}
    assert sorted(times) == [(BASE + timedelta(seconds=s, microseconds=1)).isoformat() for s in (10, 11, 12)]
    everything = cli(["export", str(h5)], tmp_path)
    both = cli(["export", str(h5), "--context", "1", "--context", "2", "--run", "1", "--run", "2"], tmp_path)
    assert both.stdout == everything.stdout
    assert len(list(csv.DictReader(io.StringIO(everything.stdout)))) == 7 * len(TRICKY)

    renamed = tmp_path / "experiment.data"  # no .h5 suffix: found by the HDF5 signature
    shutil.copy(h5, renamed)
    again = cli(["export", str(renamed)], tmp_path)
    assert again.returncode == 0 and again.stdout == everything.stdout, again.stderr

    foreign = tmp_path / "foreign.h5"
    import tables

    with tables.open_file(str(foreign), "w") as f:
        f.create_array(f.root, "x", [1, 2, 3])
    refused = cli(["export", str(foreign)], tmp_path)
    assert refused.returncode == 2 and "not a file of the data-collector HDF5 writer" in refused.stderr
    missing = cli(["export", "nothing.h5"], tmp_path)
    assert missing.returncode == 2 and "no such file: 'nothing.h5'" in missing.stderr
    # a run or context the file does not have is a usage error, not an empty export
    for args, message in (
        (["--context", "9"], "no context 9 in"),
        (["--context", "1", "--run", "7"], "no run 7 (context 1: runs 1..2)"),
    ):
        wrong = cli(["export", str(h5), *args], tmp_path)
        assert wrong.returncode == 2 and message in wrong.stderr, wrong.stderr
