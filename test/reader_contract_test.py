"""One contract for every reader (cases from test/_cases/*_cases.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _cases import ReaderCase, all_reader_cases
from _util import LOG, RecordingWriter, wait_for

from data_collector import (
    CollectedVariables,
    DataCollectionContext,
    DataCollector,
    DataReader,
    Quality,
    Variable,
)

CASES = all_reader_cases()
PYTYPES = {"float": float, "int": int, "bool": bool, "str": str}

Made = tuple[DataReader, list[Variable], dict[int, Callable[[Any], bool]]]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Iterator[Made]:
    rc: ReaderCase = request.param
    with rc.make() as made:
        yield made


def _check(
    variables: list[Variable], values: dict[int, Any], expected: dict[int, Callable[[Any], bool]]
) -> None:
    for v in variables:
        value = values[v.id]
        pytype = PYTYPES.get(v.value_type)
        if pytype is not None:
            assert type(value) is pytype, (v, value)
        if v.id in expected:
            assert expected[v.id](value), (v, value)


def test_values_through_the_collector(case: Made) -> None:
    reader, variables, expected = case
    writer = RecordingWriter()
    ctx = DataCollectionContext(1, variables, min_interval_ms=10)
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(ctx)
        wait_for(lambda: all(len(writer.of(1, v.id)) >= 3 for v in variables), 30, "3 reads of each variable")
    rows = writer.of(1)
    bad = [r for r in rows if r.quality is not Quality.GOOD]
    assert bad == []
    last = {r.variable_id: r.value for r in rows}
    _check(variables, last, expected)
    for r in rows:
        assert r.read_at.tzinfo is not None


def test_validate_accepts_and_direct_read(case: Made) -> None:
    reader, variables, expected = case
    for v in variables:
        reader.validate_variable(v)
    reader.open()
    try:
        batch = CollectedVariables.of(variables)
        reader.read(batch)
        assert all(item.quality is Quality.GOOD for item in batch), list(batch)
        _check(variables, {item.variable.id: item.value for item in batch}, expected)
    finally:
        reader.close()
