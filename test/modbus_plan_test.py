"""Request planning (pure): coalescing within limits, hole bridging, remembered splits."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from data_reader._modbus._address import Table, parse_address
from data_reader._modbus._plan import Entry, SizeLimit, SplitMemory, plan_requests, split_request

HR = Table.HOLDING_REGISTER


def entries(*addresses: str) -> list[Entry]:
    return [Entry(i, parse_address(a), None) for i, a in enumerate(addresses)]


def spans(requests: list) -> list[tuple[int, int]]:  # type: ignore[type-arg]
    return [(r.start, r.count) for r in requests]


def test_1000_contiguous_registers_make_8_requests() -> None:
    es = entries(*(f"hr:{a}" for a in range(1000)))
    requests = plan_requests(1, HR, es, limit=125, max_gap=0)
    assert spans(requests) == [(125 * i, 125) for i in range(8)]
    assert sorted(e.index for r in requests for e in r.entries) == list(range(1000))


def test_2000_bits_per_request_and_bit_gaps() -> None:
    es = entries(*(f"coil:{a}" for a in range(0, 4001, 2)))
    requests = plan_requests(1, Table.COIL, es, limit=2000, max_gap=16)
    assert all(r.count <= 2000 for r in requests)
    assert len(requests) == 3


def test_gaps_are_bridged_up_to_max_gap_and_values_are_not_split() -> None:
    es = entries("hr:0:float32", "hr:5", "hr:20:int64", "hr:100")
    assert spans(plan_requests(1, HR, es, limit=125, max_gap=2)) == [(0, 2), (5, 1), (20, 4), (100, 1)]
    assert spans(plan_requests(1, HR, es, limit=125, max_gap=3)) == [(0, 6), (20, 4), (100, 1)]
    assert spans(plan_requests(1, HR, es, limit=125, max_gap=14)) == [(0, 24), (100, 1)]
    assert spans(plan_requests(1, HR, es, limit=125, max_gap=76)) == [(0, 101)]
    # a value never straddles two requests: the limit closes the request before it
    assert spans(plan_requests(1, HR, entries("hr:0", "hr:4:int64"), limit=6, max_gap=10)) == [(0, 1), (4, 4)]


def test_overlapping_values_share_a_request() -> None:
    es = entries("hr:10:float64", "hr:11", "hr:12.3", "hr:10:uint32")
    requests = plan_requests(1, HR, es, limit=125, max_gap=0)
    assert spans(requests) == [(10, 4)]
    offsets = sorted((d[0], d[3]) for d in requests[0].decoders)
    assert offsets == [(0, 0), (1, 2), (2, 2), (3, 0)]  # byte offsets for struct values, register for the bit


def test_remembered_holes_and_isolated_values_change_the_plan() -> None:
    memory = SplitMemory()
    es = entries("hr:0", "hr:10", "hr:20", "hr:30")
    assert spans(plan_requests(1, HR, es, limit=125, max_gap=20, memory=memory)) == [(0, 31)]
    version = memory.version
    assert memory.add_hole(1, HR, 12, 18)
    assert not memory.add_hole(1, HR, 12, 18)
    assert memory.version == version + 1
    assert spans(plan_requests(1, HR, es, limit=125, max_gap=20, memory=memory)) == [(0, 11), (20, 11)]
    # other units and tables are unaffected
    assert spans(plan_requests(2, HR, es, limit=125, max_gap=20, memory=memory)) == [(0, 31)]
    memory.add_alone(1, HR, 30, 31)
    assert spans(plan_requests(1, HR, es, limit=125, max_gap=20, memory=memory)) == [
        (0, 11),
        (20, 1),
        (30, 1),
    ]
    memory.clear()
    assert memory.hole_count == memory.alone_count == 0


def test_remembered_boundaries_are_never_crossed() -> None:
    memory = SplitMemory()
    es = entries(*(f"hr:{a}" for a in range(90, 110)))
    assert spans(plan_requests(1, HR, es, limit=125, max_gap=0, memory=memory)) == [(90, 20)]
    assert memory.add_cut(1, HR, 100)
    assert not memory.add_cut(1, HR, 100)
    assert spans(plan_requests(1, HR, es, limit=125, max_gap=0, memory=memory)) == [(90, 10), (100, 10)]
    assert memory.hole_count == 1
    # a value spanning the boundary can only be read alone
    es = entries("hr:97", "hr:99:uint32", "hr:102")
    assert spans(plan_requests(1, HR, es, limit=125, max_gap=5, memory=memory)) == [
        (97, 1),
        (99, 2),
        (102, 1),
    ]


def test_a_learnt_size_limit_bisects_then_settles() -> None:
    memory = SplitMemory()
    assert memory.limit(1, HR, 125) == 125
    memory.note_answered(1, HR, 31)
    assert memory.limit(1, HR, 125) == 125 and memory.sizes() == {}  # nothing refused yet
    version = memory.version
    assert memory.refuse_size(1, HR, 62)
    assert memory.version > version
    assert not memory.refuse_size(1, HR, 80)  # not news: 62 is already refused
    assert not memory.refuse_size(1, HR, 20)  # 31 was answered: the size is not why 20 was refused
    assert memory.limit(1, HR, 125) == (31 + 62) // 2
    memory.note_answered(1, HR, 46)
    assert memory.limit(1, HR, 125) == 54
    memory.note_answered(1, HR, 54)
    memory.note_answered(1, HR, 58)
    memory.note_answered(1, HR, 60)
    assert memory.limit(1, HR, 125) == 61
    size = memory.size(1, HR)
    assert size is not None and not size.settled
    assert memory.refuse_size(1, HR, 61)
    assert size.settled and memory.limit(1, HR, 125) == 60
    assert memory.limit(1, HR, 40) == 40  # the configured limit still caps it
    assert memory.limit(2, HR, 125) == 125  # other units and tables keep their own
    assert memory.limit(1, Table.COIL, 2000) == 2000
    memory.clear()
    assert memory.limit(1, HR, 125) == 125


def test_a_request_ended_by_the_limit_counts_as_passed() -> None:
    # float64 values: a 61-register limit reads 15 of them (60 registers); nothing in 61..61 to test
    size = SizeLimit(answered=60, refused=62)
    assert size.limit(125) == 61 and not size.settled
    memory = SplitMemory()
    memory.note_answered(1, HR, 60)
    memory.refuse_size(1, HR, 62)
    (first, *_rest) = plan_requests(
        1, HR, entries(*(f"hr:{4 * i}:float64" for i in range(40))), limit=61, max_gap=0, memory=memory
    )
    assert (first.count, first.limit, first.full) == (60, 61, True)
    memory.note_answered(1, HR, first.count, first.limit)
    assert memory.size(1, HR).settled and memory.limit(1, HR, 125) == 61  # type: ignore[union-attr]
    # an answer at least as large as the refused size means the size was not the reason
    memory.note_answered(1, HR, 70)
    assert memory.sizes() == {} and memory.limit(1, HR, 125) == 125


def test_split_prefers_the_widest_hole_then_the_middle() -> None:
    es = entries("hr:0", "hr:2", "hr:10", "hr:11")
    (request,) = plan_requests(1, HR, es, limit=125, max_gap=20)
    halves = split_request(request)
    assert halves is not None
    left, right, hole = halves
    assert (spans([left]), spans([right]), hole) == ([(0, 3)], [(10, 2)], (3, 10))
    contiguous = plan_requests(1, HR, entries("hr:0", "hr:1", "hr:2", "hr:3"), limit=125, max_gap=0)[0]
    halves = split_request(contiguous)
    assert halves is not None
    assert (spans([halves[0]]), spans([halves[1]]), halves[2]) == ([(0, 2)], [(2, 2)], None)
    single = plan_requests(1, HR, entries("hr:0:float32", "hr:1"), limit=125, max_gap=0)[0]
    assert split_request(single) is None


@settings(max_examples=300, deadline=None)
@given(
    starts=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=120),
    widths=st.lists(st.sampled_from([1, 2, 4]), min_size=120, max_size=120),
    max_gap=st.integers(min_value=0, max_value=64),
    limit=st.integers(min_value=4, max_value=125),
)
def test_plan_properties(starts: list[int], widths: list[int], max_gap: int, limit: int) -> None:
    types = {1: "uint16", 2: "uint32", 4: "uint64"}
    es = entries(*(f"hr:{s}:{types[w]}" for s, w in zip(starts, widths, strict=False)))
    requests = plan_requests(1, HR, es, limit=limit, max_gap=max_gap)
    # every value is in exactly one request, entirely inside it
    seen = sorted(e.index for r in requests for e in r.entries)
    assert seen == list(range(len(es)))
    for r in requests:
        assert 1 <= r.count <= limit
        for e in r.entries:
            assert r.start <= e.start and e.end <= r.end
        # no hole wider than max_gap is bridged
        covered = sorted((e.start, e.end) for e in r.entries)
        end = covered[0][1]
        for s, e_end in covered[1:]:
            assert s - end <= max_gap
            end = max(end, e_end)
    # requests are sorted; they overlap only where values overlap and did not fit one request
    for a, b in itertools.pairwise(requests):
        assert a.start <= b.start
        if b.start < a.end:
            assert any(e.start < a.end for e in b.entries)
    # minimality for contiguous runs: a run of values that fits one request is one request
    if max_gap >= 3000 + 4 and max(e.end for e in es) - min(e.start for e in es) <= limit:
        assert len(requests) == 1
