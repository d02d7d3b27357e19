"""1-D array values (issue 15, item 3): through a DataCollector with a spool into the SQL (SQLite,
PostgreSQL, MariaDB), CSV and HDF5 writers and back, exactly; and the random reader's ``wave``."""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _cases.sql_cases import sql_store
from _util import wait_for

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    DataReader,
    DataWriter,
    Quality,
    Variable,
)
from data_reader.random import RandomDataReader
from data_writer.csv import CsvFileDataWriter
from data_writer.csv import read_samples as csv_samples
from data_writer.hdf5 import Hdf5DataWriter, table_keys
from data_writer.hdf5 import read_frame as hdf5_frame
from data_writer.hdf5 import read_samples as hdf5_samples
from data_writer.sql import SqlDataWriter
from data_writer.sql import read_samples as sql_samples

LOG = logging.getLogger("array-values-test")

#: a NaN with the sign bit and a payload (kept by SQL and HDF5, not by CSV's JSON)
ODD_NAN = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0123))[0]

#: (address, value_type, value) of each test variable
ARRAYS: list[tuple[str, str, Any]] = [
    ("floats", "float", np.array([1.0, np.nan, -0.0, np.inf, -np.inf, 5e-324, 0.1, -1.5e308])),
    ("int64", "int", np.array([2**63 - 1, -(2**63), 0, -1], dtype=np.int64)),
    ("empty-float", "float", np.array([], dtype=np.float64)),
    ("empty-int", "int", np.array([], dtype=np.int64)),
    ("one-float", "float", np.array([2.5])),
    ("one-int", "int", np.array([-7], dtype=np.int64)),
    ("bools", "bool", np.array([True, False, True])),
    ("wave", "float", np.sin(np.linspace(0.0, 2 * np.pi, 1000))),
    ("scalar", "float", 1.25),  # a scalar beside arrays still comes back a float
]
ODD = ("odd-nan", "float", np.array([ODD_NAN, 1.0]))


class ArrayReader(DataReader):
    """Reads the fixed values of :data:`ARRAYS` (by address), fresh copies every tick."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(reader_type="arrays", min_interval_ms=10)
        self.values = values
        self.reads = 0

    def read(self, variables: CollectedVariables) -> None:
        self.reads += 1
        for i, v in enumerate(variables.variables):
            value = self.values[v.address]
            variables.values[i] = value.copy() if isinstance(value, np.ndarray) else value


def same(got: Any, want: Any, *, bits: bool, dtype: bool = True) -> bool:
    """``got`` equals ``want``: arrays elementwise (NaN equal NaN, -0.0 not 0.0), bit for bit if
    ``bits``, with the same dtype if ``dtype``."""
    if not isinstance(want, np.ndarray):
        return type(got) is type(want) and got == want
    if not isinstance(got, np.ndarray) or got.shape != want.shape:
        return False
    if dtype and got.dtype != want.dtype:
        return False
    if bits:
        return got.astype(want.dtype).tobytes() == want.tobytes()
    if want.dtype.kind == "f":
        return bool(np.array_equal(got, want, equal_nan=True) and (np.signbit(got) == np.signbit(want)).all())
    return bool(np.array_equal(got, want))


def collect(writer: DataWriter, tmp_path: Path, cases: list[tuple[str, str, Any]]) -> int:
    """Run the cases through a collector with a spool into ``writer``; the number of reads."""
    reader = ArrayReader({a: v for a, _, v in cases})
    variables = [Variable(i + 1, a, vt, "arrays") for i, (a, vt, _) in enumerate(cases)]
    with DataCollector(LOG, [reader], [writer], spool_dir=tmp_path / "spool") as c:
        c.start(DataCollectionContext(7, variables, min_interval_ms=50))
        wait_for(lambda: reader.reads >= 3, 10, "three reads")
        c.stop(7)
        stats = c.stats().writers[writer.name]
    assert stats.lost_batches == 0
    return reader.reads


def check(
    rows: list[tuple[int, Any, Quality]], cases: list[tuple[str, str, Any]], reads: int, **how: Any
) -> None:
    assert len(rows) == reads * len(cases)  # every sample once
    for vid, value, quality in rows:
        address, _, want = cases[vid - 1]
        assert quality is Quality.GOOD, (address, value)
        assert same(value, want, **how), (address, value, want)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_sql_stores_arrays_exactly(kind: str, tmp_path: Path) -> None:
    cases = [*ARRAYS, ODD]
    with sql_store(kind, tmp_path) as (url, prefix):
        reads = collect(SqlDataWriter(url, table_prefix=prefix), tmp_path, cases)
        rows = sql_samples(url, 7, table_prefix=prefix)
        check([(r.variable_id, r.value, r.quality) for r in rows], cases, reads, bits=True)


def test_sql_stored_text_is_the_documented_form(tmp_path: Path) -> None:
    import sqlalchemy as sa

    with sql_store("sqlite", tmp_path) as (url, prefix):
        collect(SqlDataWriter(url, table_prefix=prefix), tmp_path, [("one-float", "float", np.array([1.0]))])
        with sa.create_engine(url).connect() as conn:
            kinds = conn.exec_driver_sql(f"SELECT DISTINCT value_kind, value_text FROM {prefix}samples").all()
    assert kinds == [("array", "<f8:AAAAAAAA8D8=")]


def test_csv_stores_arrays_as_json_lists(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    reads = collect(CsvFileDataWriter(path), tmp_path, ARRAYS)
    rows = csv_samples(path)
    check([(r["variable_id"], r["value"], r["quality"]) for r in rows], ARRAYS, reads, bits=False)
    text = path.read_text()
    assert '"[1.0, NaN, -0.0, Infinity, -Infinity, 5e-324, 0.1, -1.5e+308]"' in text
    assert '"[9223372036854775807, -9223372036854775808, 0, -1]"' in text


def test_hdf5_stores_arrays_as_array_columns(tmp_path: Path) -> None:
    import h5py

    cases = [*ARRAYS, ODD]
    path = tmp_path / "out.h5"
    reads = collect(Hdf5DataWriter(path), tmp_path, cases)
    rows = hdf5_samples(path, 7)
    check([(r.variable_id, r.value, r.quality) for r in rows], cases, reads, bits=True)
    frame = hdf5_frame(path, 7)
    check(
        list(zip(frame["variable_id"], frame["value"], frame["quality"].map(Quality), strict=True)),
        cases,
        reads,
        bits=True,
    )
    keys = {k.rsplit("/", 1)[1] for k in table_keys(path, 7)}
    assert {
        "float_array_8",
        "int_array_4",
        "float_array_1",
        "int_array_1",
        "bool_array_3",
        "float_array_1000",
    } <= keys
    with h5py.File(path) as f:
        wave = f["context_7/run_1/float_array_1000"]["value"]
        assert wave.shape == (reads, 1000)
        assert np.array_equal(wave[0], ARRAYS[7][2])


def test_arrays_the_writers_cannot_store_are_refused_per_sample(tmp_path: Path) -> None:
    cases = [
        ("matrix", "float", np.zeros((2, 2))),
        ("text", "str", np.array(["a", "b"])),
        ("ok", "float", 1.0),
    ]
    with sql_store("sqlite", tmp_path) as (url, prefix):
        collect(SqlDataWriter(url, table_prefix=prefix), tmp_path / "sql", cases)
        sql_rows = sql_samples(url, 7, table_prefix=prefix)
    path = tmp_path / "out.h5"
    collect(Hdf5DataWriter(path), tmp_path / "h5", cases)
    for rows in (sql_rows, hdf5_samples(path, 7)):
        by_id = {r.variable_id: r for r in rows}
        assert by_id[1].quality is Quality.BAD and by_id[1].value is None and "2-D" in (by_id[1].error or "")
        assert by_id[2].quality is Quality.BAD and by_id[2].value is None and "<U1" in (by_id[2].error or "")
        assert by_id[3].quality is Quality.GOOD and by_id[3].value == 1.0


def test_random_wave_signal() -> None:
    reader = RandomDataReader()
    kinds = {"float": np.float64, "int": np.int64, "bool": np.bool_}
    variables = [Variable(i, "wave:16:2", vt, "random") for i, vt in enumerate(kinds, 1)]
    batch = CollectedVariables.of([*variables, Variable(9, "wave:0", "float", "random")])
    reader.read(batch)
    for value, want in zip(batch.values, [*kinds.values(), np.float64], strict=True):
        assert isinstance(value, np.ndarray) and value.dtype == want
    assert [len(v) for v in batch.values] == [16, 16, 16, 0]
    floats, ints = batch.values[0], batch.values[1]
    assert np.all(np.abs(floats) <= 1.0) and np.array_equal(ints, np.rint(100 * floats).astype(np.int64))
    for address, vt, needle in [
        ("wave:16", "str", "not str"),
        ("wave", "float", "point count"),
        ("wave:-1", "float", "0 .. 1000000"),
        ("wave:4:0", "float", "> 0"),
    ]:
        with pytest.raises(ConfigurationError, match=needle):
            reader.validate_variable(Variable(20, address, vt, "random"))


def test_random_wave_through_the_collector_into_csv(tmp_path: Path) -> None:
    path = tmp_path / "wave.csv"
    writer = CsvFileDataWriter(path)
    with DataCollector(LOG, [RandomDataReader()], [writer], spool_dir=tmp_path / "spool") as c:
        c.start(DataCollectionContext(3, [Variable(1, "wave:64", "float", "random", 50)], min_interval_ms=50))
        wait_for(lambda: path.exists() and len(path.read_text().splitlines()) >= 3, 10, "two rows")
        c.stop(3)
    rows = csv_samples(path)
    assert rows and all(r["quality"] is Quality.GOOD for r in rows)
    assert all(isinstance(r["value"], np.ndarray) and r["value"].shape == (64,) for r in rows)


def test_export_and_wide_frame_keep_arrays(tmp_path: Path) -> None:
    import pandas as pd
    from cli_demo_export_test import cli

    from data_collector import wide_frame

    cases = [("three", "float", np.array([0.5, np.nan, 2.0])), ("scalar", "float", 1.25)]
    path = tmp_path / "out.h5"
    reads = collect(Hdf5DataWriter(path), tmp_path, cases)
    frame = wide_frame(hdf5_samples(path, 7))
    assert frame.shape == (reads, 2) and frame["2"].dtype == np.float64
    assert all(same(v, cases[0][2], bits=True) for v in frame["1"])
    done = cli(["export", str(path), "--context", "7", "--wide", "-o", str(tmp_path / "w.csv")], tmp_path)
    assert done.returncode == 0, done.stderr
    wide = pd.read_csv(tmp_path / "w.csv")
    assert wide["1"].tolist() == ["[0.5, NaN, 2.0]"] * reads
    done = cli(["export", str(path), "--context", "7", "-o", str(tmp_path / "long.csv")], tmp_path)
    assert done.returncode == 0, done.stderr
    back = [r for r in csv_samples_export(tmp_path / "long.csv") if r[0] == "1"]
    assert back == [("1", "[0.5, NaN, 2.0]")] * reads


def csv_samples_export(path: Path) -> list[tuple[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return [(r["variable_id"], r["value"]) for r in csv.DictReader(f)]


def test_an_opcua_array_node_is_read_as_a_numpy_array(tmp_path: Path) -> None:
    from asyncua import ua

    from data_reader.opcua import OpcUaDataReader
    from data_reader.opcua.simulator import OpcUaSimulator

    with OpcUaSimulator() as sim:
        wave = [0.5, -0.0, float("nan"), 1e300]
        sim.add_variable("Arr.Wave", wave, ua.VariantType.Double)
        sim.add_variable("Arr.Counts", [2**63 - 1, -(2**63), 3], ua.VariantType.Int64)
        sim.add_variable("Arr.Empty", [], ua.VariantType.Double)
        sim.add_variable("Arr.Big", [2**64 - 1], ua.VariantType.UInt64)
        variables = [
            Variable(1, sim.address("Arr.Wave"), "float", "opcua"),
            Variable(2, sim.address("Arr.Counts"), "int", "opcua"),
            Variable(3, sim.address("Arr.Empty"), "float", "opcua"),
            Variable(4, sim.address("Arr.Big"), "int", "opcua"),
        ]
        reader = OpcUaDataReader(sim.endpoint, timeout_s=5.0)
        reader.open()
        try:
            batch = CollectedVariables.of(variables)
            reader.read(batch)
        finally:
            reader.close()
    values = batch.values
    assert batch.qualities[:3] == [Quality.GOOD] * 3, batch.errors
    assert same(values[0], np.array(wave), bits=True)
    assert same(values[1], np.array([2**63 - 1, -(2**63), 3], dtype=np.int64), bits=True)
    assert same(values[2], np.zeros(0), bits=True)
    assert batch.qualities[3] is Quality.BAD and "beyond int64" in (batch.errors[3] or "")
