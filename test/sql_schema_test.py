"""Schema versions 2 and 3 of the SQL writer: reading a few variables of many, and migrating
version 1 stores (version 2 stores: ``sql_metadata_test.py``).

On real SQLite, PostgreSQL and MariaDB: the loose index scan (one seek per distinct read time)
answers "these variables over this range" exactly like a scan would; a version 1 store is refused
with a message naming ``migrate_store``, which moves its samples (dropping the duplicates version
1 could store) so that the writer appends to them without re-storing any.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _cases.sql_cases import make_v1_store, sql_store
from sqlalchemy import event

from data_collector import (
    CollectedVariable,
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    Variable,
)
from data_writer.sql import (
    SCHEMA_VERSION,
    MigrationResult,
    SqlDataWriter,
    migrate_store,
    read_contexts,
    read_samples,
)

T0 = datetime(2024, 4, 2, 12, 0, 0, 250000, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    with sql_store(request.param, tmp_path) as s:
        yield s


def _at(tick: int) -> datetime:
    return T0 + timedelta(milliseconds=100 * tick)


def test_a_few_variables_of_many_over_a_time_range(store: tuple[str, str]) -> None:
    url, prefix = store
    variables = [Variable(i, f"v{i}", "float", "r") for i in range(1, 301)]
    redefined = Variable(7, "v7-new", "float", "r")  # same id, another definition
    writer = SqlDataWriter(url, table_prefix=prefix)
    statements: list[str] = []
    try:
        ctx = DataCollectionContext(1, variables)
        for tick in range(60):
            batch = CollectedVariables(CollectedVariable(v, tick + v.id / 1000, _at(tick)) for v in variables)
            writer.write(ctx, batch)
        writer.write(  # another context in the same time range: never mixed in
            DataCollectionContext(2, variables[:10]),
            CollectedVariables(CollectedVariable(v, -1.0, _at(5)) for v in variables[:10]),
        )
        writer.write(
            DataCollectionContext(1, [redefined]),
            CollectedVariables([CollectedVariable(redefined, 99.5, _at(20) + timedelta(microseconds=1))]),
        )
        event.listen(writer.engine, "before_cursor_execute", lambda c, cur, st, *a: statements.append(st))

        rows = writer.read_samples(1, variable_ids=[9, 7], start=_at(10), end=_at(40))
        expected = [(_at(t), vid, t + vid / 1000) for t in range(10, 40) for vid in (7, 9)]
        expected.append((_at(20) + timedelta(microseconds=1), 7, 99.5))
        expected.sort()
        assert [(r.read_at, r.variable_id, r.value) for r in rows] == expected
        assert {r.address for r in rows if r.variable_id == 7} == {"v7", "v7-new"}
        loose = "GROUP BY" if writer.engine.dialect.name == "mysql" else "RECURSIVE"
        assert any(loose in s.upper() for s in statements)  # one seek per distinct read time

        statements.clear()  # many variables: scanning the range is cheaper, same answer
        many = list(range(1, 61))
        rows = writer.read_samples(1, variable_ids=many, start=_at(50))
        assert len(rows) == 10 * 60 and rows[0].read_at == _at(50) and rows[-1].read_at == _at(59)
        assert [r.variable_id for r in rows[:60]] == many
        assert not any(loose in s.upper() for s in statements)

        whole = writer.read_samples(1, variable_ids=[300])  # no bounds, one variable
        assert [r.value for r in whole] == [t + 0.3 for t in range(60)]
        assert writer.read_samples(1, variable_ids=[]) == []
        assert writer.read_samples(1, variable_ids=[12345]) == []
        assert len(writer.read_samples(2)) == 10
    finally:
        writer.close()


# -- version 1 stores -----------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b) and type(a) is type(b)


def test_version_1_store_is_refused_then_migrated(store: tuple[str, str]) -> None:
    url, prefix = store
    expected = make_v1_store(url, prefix, T0)
    writer = SqlDataWriter(url, table_prefix=prefix)
    with pytest.raises(ConfigurationError, match=r"schema version 1.*migrate_store"):
        writer.open()
    writer.close()
    with pytest.raises(ConfigurationError, match=r"schema version 1.*migrate_store"):
        read_samples(url, 3, table_prefix=prefix)  # reading too says what to do

    result = migrate_store(url, table_prefix=prefix)
    assert result == MigrationResult(1, SCHEMA_VERSION, 5, 1)  # five samples, one duplicate dropped
    rows = read_samples(url, 3, table_prefix=prefix)
    expected.sort(key=lambda e: (e[1], e[0]))
    assert [(r.variable_id, r.read_at, r.quality) for r in rows] == [(e[0], e[1], e[3]) for e in expected]
    for row, e in zip(rows, expected, strict=True):
        assert _same(row.value, e[2]), (row, e)
    assert [(r.metadata, r.deduced_metadata) for r in read_contexts(url, 3, table_prefix=prefix)] == [
        ({"a": 1}, {})
    ]

    # The writer appends to the migrated samples and recognises them as stored.
    again = SqlDataWriter(url, table_prefix=prefix)
    try:
        var = Variable(20, "y", "float", "r")
        ctx = DataCollectionContext(3, [var])
        again.write(ctx, CollectedVariables([CollectedVariable(var, 7, T0)]))  # stored by version 1
        assert again.duplicates_skipped == 1 and again.samples_written == 0
        again.write(ctx, CollectedVariables([CollectedVariable(var, 8, T0 + timedelta(seconds=5))]))
        assert again.samples_written == 1
    finally:
        again.close()
    assert len(read_samples(url, 3, table_prefix=prefix)) == 6
    nothing_left = MigrationResult(SCHEMA_VERSION, SCHEMA_VERSION, 6, 0)
    assert migrate_store(url, table_prefix=prefix) == nothing_left
    engine = sa.create_engine(url)
    try:
        assert not sa.inspect(engine).has_table(f"{prefix}samples_v1")
    finally:
        engine.dispose()


def test_migrate_store_without_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no SQLite database"):
        migrate_store(f"sqlite:///{tmp_path / 'absent.sqlite'}")
    empty = tmp_path / "empty.sqlite"
    sa.create_engine(f"sqlite:///{empty}").connect().close()
    with pytest.raises(ConfigurationError, match="no data-collector tables"):
        migrate_store(f"sqlite:///{empty}", table_prefix="plant_")
