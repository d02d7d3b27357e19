"""Schema version 4 of the SQL writer on SQLite, PostgreSQL and MariaDB (real servers, a table prefix
of its own per test):

- the variables table holds each definition once, with the user's variable id, name, unit and
  description; a relabelled variable gets a row of its own and older samples keep their labels;
- ``<prefix>samples_view`` read with ``pandas.read_sql`` names everything: context and variable id,
  name, unit, an unambiguous read time, a numeric value column, the value's text, quality, error;
- a version 3 store is read as it is, upgraded by a writer (columns and view added, version 4
  recorded) or by ``migrate_store``; writes stay exactly-once with labels;
- ``read_wide_frame`` / ``read_samples_frame`` give typed columns; runs and unknown contexts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _cases.sql_cases import make_v2_store, sql_store

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataWriter,
    Variable,
)
from data_writer.sql import (
    SCHEMA_VERSION,
    MigrationResult,
    SqlDataWriter,
    has_context,
    migrate_store,
    read_samples,
    read_samples_frame,
    read_wide_frame,
    stored_schema_version,
)
from data_writer.sql._schema import VIEW_COLUMNS

pd = pytest.importorskip("pandas")

T0 = datetime(2025, 2, 3, 4, 5, 6, 789_012, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    with sql_store(request.param, tmp_path) as s:
        yield s


def variables() -> list[Variable]:
    return [
        Variable(
            11, "hr:0", "float", "plc", 1000, name="Ram force", unit="kN", description="load cell\nunder it"
        ),
        Variable(12, "hr:2", "int", "plc", 1000, name="Strokes"),
        Variable(13, "coil:1", "bool", "plc", 1000, name="Motor", unit=None),
        Variable(14, "hr:9", "str", "plc", 1000, name="Recipe"),
        Variable(15, "hr:20", "float", "plc", 1000),  # no labels
    ]


VALUES: list[list[Any]] = [
    [1.25, 7, True, "R-1", float("nan")],
    [None, 8, False, "R-1", float("inf")],  # the force BAD
    [2.5, None, True, "R-2", -1.5],  # the strokes BAD
]


def write_ticks(
    writer: DataWriter, context: DataCollectionContext, start: datetime, values: list[list[Any]]
) -> None:
    vs = list(context.variables)
    for i, row in enumerate(values):
        batch = CollectedVariables.of(vs, start + timedelta(seconds=i))
        for item, value in zip(batch, row, strict=True):
            if value is None:
                item.set_bad("device timeout")
            else:
                item.value = value
        writer.write(context, batch)


def fill(url: str, prefix: str, vs: list[Variable] | None = None, runs: int = 1) -> DataCollectionContext:
    """Context 3 with ``runs`` runs of three ticks each (run n starts at T0 + 10 n s)."""
    writer = SqlDataWriter(url, table_prefix=prefix)
    context = DataCollectionContext(3, vs or variables(), metadata={"lot": "L-7"})
    with writer.lock:
        for n in range(runs):
            context._start_date = T0 + timedelta(seconds=10 * n)
            context._end_date = None
            writer.context_started(context)
            write_ticks(writer, context, T0 + timedelta(seconds=10 * n), VALUES)
            context._end_date = T0 + timedelta(seconds=10 * n + 2)
            writer.context_stopped(context)
        writer.close()
    return context


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def test_each_definition_is_stored_once_with_id_name_unit_and_description(store: tuple[str, str]) -> None:
    url, prefix = store
    fill(url, prefix)
    rows = query(
        url,
        f"SELECT id, variable_id, name, unit, description, address FROM {prefix}variables "
        "ORDER BY variable_id",
    )
    assert [r[1:] for r in rows] == [
        (11, "Ram force", "kN", "load cell\nunder it", "hr:0"),
        (12, "Strokes", None, None, "hr:2"),
        (13, "Motor", None, None, "coil:1"),
        (14, "Recipe", None, None, "hr:9"),
        (15, None, None, None, "hr:20"),
    ]
    keys = [r[0] for r in rows]
    assert keys != [r[1] for r in rows]  # the variable key is not the variable id: the view joins them
    stored = read_samples(url, 3, table_prefix=prefix)
    assert [(s.variable_id, s.name, s.unit) for s in stored[:5]] == [
        (11, "Ram force", "kN"),
        (12, "Strokes", None),
        (13, "Motor", None),
        (14, "Recipe", None),
        (15, None, None),
    ]

    # a relabelled variable gets a row of its own; the samples stored before keep their labels
    relabelled = [
        Variable(11, "hr:0", "float", "plc", 1000, name="Ram force (filtered)", unit="kN"),
        *variables()[1:],
    ]
    writer = SqlDataWriter(url, table_prefix=prefix)
    context = DataCollectionContext(3, relabelled)
    with writer.lock:
        write_ticks(writer, context, T0 + timedelta(seconds=60), VALUES[:1])
        # the same batch again (a retry, a replay): stored once
        write_ticks(writer, context, T0 + timedelta(seconds=60), VALUES[:1])
        assert writer.duplicates_skipped == 5
        writer.close()
    names = query(url, f"SELECT name FROM {prefix}variables WHERE variable_id = 11 ORDER BY id")
    assert names == [("Ram force",), ("Ram force (filtered)",)]
    force = [(s.read_at, s.name) for s in read_samples(url, 3, variable_ids=[11], table_prefix=prefix)]
    assert force == [
        (T0, "Ram force"),
        (T0 + timedelta(seconds=1), "Ram force"),
        (T0 + timedelta(seconds=2), "Ram force"),
        (T0 + timedelta(seconds=60), "Ram force (filtered)"),
    ]


def test_the_samples_view_is_self_explanatory(store: tuple[str, str]) -> None:
    url, prefix = store
    fill(url, prefix)
    engine = sa.create_engine(url)
    try:
        frame = pd.read_sql(f"SELECT * FROM {prefix}samples_view ORDER BY read_at, variable_id", engine)
    finally:
        engine.dispose()
    backend = sa.make_url(url).get_backend_name()
    assert tuple(frame.columns) == VIEW_COLUMNS
    assert len(frame) == 15 and set(frame["context_id"]) == {3}
    assert list(frame["variable_id"][:5]) == [11, 12, 13, 14, 15]
    assert list(frame["name"][:4]) == ["Ram force", "Strokes", "Motor", "Recipe"] and pd.isna(
        frame["name"][4]
    )
    assert frame["unit"][0] == "kN" and pd.isna(frame["unit"][1])
    # read_at: an instant with its zone (PostgreSQL), ISO text with +00:00 (SQLite), UTC (MariaDB)
    if backend == "postgresql":
        assert str(frame["read_at"].dtype).endswith("UTC]")
        times = list(frame["read_at"])
    elif backend == "sqlite":
        assert frame["read_at"][0] == "2025-02-03 04:05:06.789012+00:00"
        times = list(pd.to_datetime(frame["read_at"], utc=True))
    else:
        times = list(pd.to_datetime(frame["read_at"]).dt.tz_localize("UTC"))
    assert times[0] == pd.Timestamp(T0) and times[-1] == pd.Timestamp(T0 + timedelta(seconds=2))
    # one numeric value column: floats, ints and bools as numbers; texts beside
    assert str(frame["value"].dtype) == "float64"
    first = frame[frame["read_at"] == frame["read_at"][0]].reset_index(drop=True)
    assert list(first["value"][:3]) == [1.25, 7.0, 1.0] and math.isnan(first["value"][3])
    assert first["value_text"][3] == "R-1" and pd.isna(first["value_text"][0])
    nan = first.iloc[4]  # NaN where the database has it (PostgreSQL), else NULL; the text says "nan"
    assert math.isnan(nan["value"]) and nan["value_text"] == "nan"
    second = frame.iloc[5:10].reset_index(drop=True)
    assert (second["quality"][0], second["error"][0]) == ("BAD", "device timeout") and math.isnan(
        second["value"][0]
    )
    assert second["value_text"][4] == "inf"
    if backend in ("postgresql", "sqlite"):
        assert second["value"][4] == math.inf
    assert list(frame["quality"][:5]) == ["GOOD"] * 5


def test_a_version_3_store_is_read_as_it_is_then_upgraded_by_a_writer(store: tuple[str, str]) -> None:
    url, prefix = store
    make_v2_store(url, prefix, T0, version=3)
    assert stored_schema_version(url, table_prefix=prefix) == 3
    assert [(s.value, s.name, s.unit) for s in read_samples(url, 3, table_prefix=prefix)] == [
        (0, None, None),
        (1, None, None),
    ]
    assert stored_schema_version(url, table_prefix=prefix) == 3  # reading changed nothing
    engine = sa.create_engine(url)
    try:
        assert f"{prefix}samples_view" not in sa.inspect(engine).get_view_names()
    finally:
        engine.dispose()

    writer = SqlDataWriter(url, table_prefix=prefix)
    context = DataCollectionContext(
        3, [Variable(1, "counter", "int", "random", 1000, name="Counter", unit="1")]
    )
    with writer.lock:
        write_ticks(writer, context, T0 + timedelta(seconds=5), [[5]])
        writer.close()
    assert stored_schema_version(url, table_prefix=prefix) == SCHEMA_VERSION
    rows = read_samples(url, 3, table_prefix=prefix)
    assert [(s.value, s.name, s.unit) for s in rows] == [
        (0, None, None),
        (1, None, None),
        (5, "Counter", "1"),
    ]
    view = query(url, f"SELECT variable_id, name, quality FROM {prefix}samples_view ORDER BY read_at")
    assert view == [(1, None, "GOOD"), (1, None, "GOOD"), (1, "Counter", "GOOD")]
    # the old definition (no labels) is reused by a writer without labels: no new variable row
    plain = SqlDataWriter(url, table_prefix=prefix)
    with plain.lock:
        write_ticks(
            plain,
            DataCollectionContext(3, [Variable(1, "counter", "int", "random")]),
            T0 + timedelta(seconds=6),
            [[6]],
        )
        plain.close()
    assert query(url, f"SELECT COUNT(*) FROM {prefix}variables")[0][0] == 2


def test_migrate_store_brings_version_3_to_4(store: tuple[str, str]) -> None:
    url, prefix = store
    make_v2_store(url, prefix, T0, version=3)
    assert migrate_store(url, table_prefix=prefix) == MigrationResult(3, SCHEMA_VERSION, 2, 0)
    assert query(
        url, f"SELECT variable_id, name, unit, value FROM {prefix}samples_view ORDER BY read_at"
    ) == [
        (1, None, None, 0),
        (1, None, None, 1),
    ]
    assert migrate_store(url, table_prefix=prefix) == MigrationResult(SCHEMA_VERSION, SCHEMA_VERSION, 2, 0)


def test_wide_and_long_frames_are_typed(store: tuple[str, str]) -> None:
    url, prefix = store
    fill(url, prefix, runs=2)
    wide = read_wide_frame(url, 3, table_prefix=prefix)
    assert list(wide.columns) == ["Ram force", "Strokes", "Motor", "Recipe", "15"]
    assert wide.index.name == "read_at" and str(wide.index.tz) == "UTC" and len(wide) == 6
    assert str(wide["Ram force"].dtype) == "float64" and math.isnan(wide["Ram force"].iloc[1])  # BAD: missing
    assert (
        str(wide["Strokes"].dtype) == "Int64" and wide["Strokes"].isna().tolist() == [False, False, True] * 2
    )
    assert str(wide["Motor"].dtype) == "bool" and wide["Motor"].tolist() == [True, False, True] * 2
    assert wide["Recipe"].tolist() == ["R-1", "R-1", "R-2"] * 2
    assert str(wide["15"].dtype) == "float64" and wide["15"].iloc[1] == math.inf
    assert wide.attrs["units"] == {
        "Ram force": "kN",
        "Strokes": None,
        "Motor": None,
        "Recipe": None,
        "15": None,
    }
    second = read_wide_frame(url, 3, run=2, table_prefix=prefix)
    assert list(second.index) == [pd.Timestamp(T0 + timedelta(seconds=10 + s)) for s in range(3)]
    late = read_wide_frame(
        url, 3, start=T0 + timedelta(seconds=11), end=T0 + timedelta(seconds=12), table_prefix=prefix
    )
    assert list(late.index) == [pd.Timestamp(T0 + timedelta(seconds=11))]
    only = read_wide_frame(url, 3, variable_ids=[12], table_prefix=prefix)
    assert list(only.columns) == ["Strokes"] and str(only["Strokes"].dtype) == "Int64"
    with pytest.raises(ConfigurationError, match="no context 99"):
        read_wide_frame(url, 99, table_prefix=prefix)
    with pytest.raises(ConfigurationError, match=r"context 3 has no run 3 \(it has runs 1..2\)"):
        read_wide_frame(url, 3, run=3, table_prefix=prefix)
    with pytest.raises(ConfigurationError, match="run must be an int >= 1"):
        read_samples(url, 3, run=0, table_prefix=prefix)
    assert has_context(url, 3, table_prefix=prefix) and not has_context(url, 99, table_prefix=prefix)

    long = read_samples_frame(url, 3, run=1, table_prefix=prefix)
    assert len(long) == 15 and str(long["read_at"].dtype) == "datetime64[us, UTC]"
    assert str(long["variable_id"].dtype) == "int64" and long["value"].dtype == object  # mixed kinds
    assert str(long["value_float"].dtype) == "float64"
    assert long["value_float"].tolist()[:3] == [1.25, 7.0, 1.0] and math.isnan(long["value_float"][3])
    assert long["name"].tolist()[:2] == ["Ram force", "Strokes"] and long["unit"][0] == "kN"
    floats = read_samples_frame(url, 3, variable_ids=[11], table_prefix=prefix)
    assert str(floats["value"].dtype) == "float64"
    ints = read_samples_frame(url, 3, variable_ids=[12], table_prefix=prefix)
    assert str(ints["value"].dtype) == "Int64"
