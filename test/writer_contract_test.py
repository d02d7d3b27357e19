"""One contract for every writer (cases from test/_cases/*_cases.py): what is delivered is stored.

Round trip of every value type and quality, metadata, two contexts sharing one writer from two
reader threads, reopen-and-append, exact row counts after close().
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _cases import StoredSample, WriterCase, WriterHarness, all_writer_cases
from _util import LOG, RecordingWriter, Row, wait_for

from data_collector import (
    CollectedVariables,
    DataCollectionContext,
    DataCollector,
    DataReader,
    Quality,
    Variable,
)

CASES = all_writer_cases()


class ScriptedReader(DataReader):
    """Deterministic values of every type and quality; the address says which."""

    def __init__(self, reader_type: str) -> None:
        super().__init__(reader_type=reader_type, min_interval_ms=10)
        self.n = 0

    def read(self, variables: CollectedVariables) -> None:
        self.n += 1
        n = self.n
        for item in variables:
            kind = item.variable.address
            if kind == "float":
                item.value = n + 0.125
            elif kind == "int":
                item.value = -(n * 1_000_003)
            elif kind == "bool":
                item.value = n % 2 == 0
            elif kind == "str":
                item.value = f'v{n} Grüße, "quoted"\nline'
            elif kind == "uncertain":
                item.value = n * 0.5
                item.quality = Quality.UNCERTAIN
                item.error = "stale"
            elif kind == "bad":
                item.set_bad(f"timeout #{n}")


def _variables(rt: str, base: int) -> list[Variable]:
    kinds = [
        ("float", "float"),
        ("int", "int"),
        ("bool", "bool"),
        ("str", "str"),
        ("uncertain", "float"),
        ("bad", "int"),
    ]
    return [Variable(base + i, addr, vt, rt, 50) for i, (addr, vt) in enumerate(kinds)]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WriterHarness]:
    case: WriterCase = request.param
    with case.make(tmp_path) as h:
        yield h


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _key(x: Row | StoredSample) -> tuple[int, int, int]:
    """Identity of a sample: context, variable and read time truncated to the millisecond."""
    return (x.context_id, x.variable_id, (x.read_at - _EPOCH) // timedelta(milliseconds=1))


def _check_same(delivered: list[Row], stored: list[StoredSample]) -> None:
    assert len(stored) == len(delivered)
    by_key = {_key(r): r for r in delivered}
    assert len(by_key) == len(delivered)
    for s in stored:
        r = by_key[_key(s)]
        assert s.read_at.tzinfo is not None and s.read_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert (s.quality, s.error) == (r.quality, r.error), (s, r)
        assert s.value == r.value and type(s.value) is type(r.value), (s, r)


def _run(writer: Any, contexts: list[DataCollectionContext], rows_each: int) -> RecordingWriter:
    rec = RecordingWriter()
    readers = [ScriptedReader("a"), ScriptedReader("b")]
    with DataCollector(LOG, readers, [writer, rec]) as c:
        for ctx in contexts:
            c.start(ctx)
        wait_for(lambda: all(len(rec.of(ctx.id)) >= rows_each for ctx in contexts), 20, "rows")
    return rec


def test_round_trip_of_every_type_and_quality(harness: WriterHarness) -> None:
    ctx = DataCollectionContext(11, _variables("a", 1), min_interval_ms=10, metadata={"batch": "B-7", "n": 3})
    rec = _run(harness.new_writer(), [ctx], 30)
    stored = harness.read_back(11)
    _check_same(rec.of(11), stored)
    assert {s.quality for s in stored} == {Quality.GOOD, Quality.UNCERTAIN, Quality.BAD}
    runs = harness.read_contexts()
    if runs is not None:
        (run,) = runs[11]
        assert run["metadata"] == {"batch": "B-7", "n": 3}
        assert run["start"] == ctx.start_date and run["end"] == ctx.end_date


def test_two_contexts_two_threads_one_writer(harness: WriterHarness) -> None:
    c1 = DataCollectionContext(21, _variables("a", 1) + _variables("b", 100), min_interval_ms=10)
    c2 = DataCollectionContext(22, _variables("b", 100)[:3], min_interval_ms=10)
    rec = _run(harness.new_writer(), [c1, c2], 60)
    for cid in (21, 22):
        _check_same(rec.of(cid), harness.read_back(cid))


def test_reopen_appends_never_overwrites(harness: WriterHarness) -> None:
    ctx = DataCollectionContext(31, _variables("a", 1)[:2], min_interval_ms=10)
    first = _run(harness.new_writer(), [ctx], 10)
    n1 = len(harness.read_back(31))
    assert n1 == len(first.of(31))
    second = _run(
        harness.new_writer(), [DataCollectionContext(31, _variables("a", 1)[:2], min_interval_ms=10)], 10
    )
    stored = harness.read_back(31)
    assert len(stored) == n1 + len(second.of(31))
    _check_same(first.of(31) + second.of(31), stored)
    runs = harness.read_contexts()
    if runs is not None:
        assert len(runs[31]) == 2
