"""The pure schedule arithmetic, checked exhaustively against a brute-force oracle (hypothesis)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from data_collector import DataCollectionContext, Variable
from data_collector._schedule import ReaderPlan

INTERVALS = st.sampled_from([10, 20, 30, 50, 100, 150, 200, 250, 300, 1000, 7, 13, 60_000])


@st.composite
def contexts(draw: st.DrawFn) -> list[DataCollectionContext]:
    n = draw(st.integers(1, 4))
    out = []
    for cid in range(n):
        ids = draw(st.lists(st.integers(1, 8), min_size=0, max_size=6, unique=True))
        variables = []
        for vid in ids:
            rt = "r" if vid % 4 else "other"
            variables.append(Variable(vid, f"a{vid}", "float", rt, draw(st.one_of(st.none(), INTERVALS))))
        out.append(
            DataCollectionContext(cid, variables, min_interval_ms=1, default_interval_ms=draw(INTERVALS))
        )
    return out


@settings(max_examples=300, deadline=None)
@given(contexts(), st.integers(0, 10**6))
def test_plan_matches_brute_force(ctxs: list[DataCollectionContext], k: int) -> None:
    plan = ReaderPlan.build("r", ctxs)
    interest = [(c, v, c.interval_of(v)) for c in ctxs for v in c.variables if v.reader_type == "r"]
    if not interest:
        assert plan.empty and plan.tick_ms == 0
        return
    assert plan.tick_ms == math.gcd(*(i for _, _, i in interest))
    t = 1_700_000_000_000 // plan.tick_ms * plan.tick_ms + k * plan.tick_ms  # a tick in 2023+
    assert t % plan.tick_ms == 0
    tick = plan.due(t)
    expected = {(c.id, v.id) for c, v, i in interest if t % i == 0}
    if not expected:
        assert tick is None
        return
    assert tick is not None
    read_ids = [v.id for v in tick.variables]
    assert len(read_ids) == len(set(read_ids))  # each due variable read once
    assert set(read_ids) == {vid for _, vid in expected}
    got = set()
    for d in tick.deliveries:
        for idx, own in zip(d.indexes, d.variables, strict=True):
            assert tick.variables[idx].id == own.id
            assert own in d.context.variables  # the context's own Variable object
            got.add((d.context.id, own.id))
        if d.whole:
            assert list(d.indexes) == list(range(len(tick.variables)))
    assert got == expected
    assert plan.due(t) is tick  # cached


def test_origin_example_300_and_200() -> None:
    a = DataCollectionContext(1, [Variable(1, "v", "float", "r", 300)])
    b = DataCollectionContext(2, [Variable(1, "v", "float", "r", 200)])
    plan = ReaderPlan.build("r", [a, b])
    assert plan.tick_ms == 100
    base = 1_700_000_000_000 // 600 * 600  # a 600 ms multiple
    at_600 = plan.due(base)
    assert at_600 is not None and [v.id for v in at_600.variables] == [1]
    assert [d.context.id for d in at_600.deliveries] == [1, 2]
    assert plan.due(base + 100) is None
    d200 = plan.due(base + 200)
    assert d200 is not None and [d.context.id for d in d200.deliveries] == [2]
    d300 = plan.due(base + 300)
    assert d300 is not None and [d.context.id for d in d300.deliveries] == [1]
    # context 2's own Variable (200 ms) differs from the one read (300 ms): delivered as a copy
    assert not at_600.deliveries[1].shared and at_600.deliveries[0].whole


def test_whole_second_alignment() -> None:
    ctx = DataCollectionContext(
        1, [Variable(1, "v", "float", "r", 1000), Variable(2, "w", "float", "r", 250)]
    )
    plan = ReaderPlan.build("r", [ctx])
    assert plan.tick_ms == 250
    second = 1_700_000_000_000
    for t in range(second, second + 5000, 250):
        tick = plan.due(t)
        assert tick is not None
        assert (1 in [v.id for v in tick.variables]) == (t % 1000 == 0)
