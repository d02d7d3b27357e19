"""On-change recording: deadband (absolute, percent), heartbeat, quality and error changes, NaN;
the settings on Variable, context and in configuration files; and the engine with real
collectors: two contexts recording one read differently, suppressed samples counted, the
writers, spool and events seeing only what is recorded, ``latest()`` every value read, and no
silent gaps (a missed boundary is still its recorded BAD sample)."""

from __future__ import annotations

import itertools
import math
import pickle
import threading
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from _util import LOG, CountingReader, RecordingWriter, Row, V, ms_of, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    DataReader,
    Quality,
    Variable,
)
from data_collector._config import ConfigFileError, loads_config
from data_collector._onchange import ChangeRule, ContextFilter, changed, delivery_rules, rule_of

GOOD, UNCERTAIN, BAD = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD


def rule(deadband: float = 0.0, percent: float | None = None, max_age_ms: int | None = None) -> ChangeRule:
    return ChangeRule(deadband, None if percent is None else percent / 100, max_age_ms, 100)


# -- settings: validation and resolution -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"deadband": -0.1}, "deadband must be a finite number >= 0, got -0.1"),
        ({"deadband": math.nan}, "got nan"),
        ({"deadband": math.inf}, "got inf"),
        ({"deadband": True}, "deadband must be a number >= 0, got True"),
        ({"deadband": "0.5"}, "got '0.5'"),
        ({"deadband": 10**400}, "an int of"),
        ({"deadband_percent": -1}, "deadband_percent must be a finite number >= 0, got -1"),
        ({"deadband": 1, "deadband_percent": 2}, "not both"),
        ({"max_age_s": 0}, "max_age_s must be a number of seconds > 0"),
        ({"max_age_s": -5}, "got -5"),
        ({"max_age_s": math.inf}, "got inf"),
        ({"max_age_s": 10**12}, "100 years"),
        ({"max_age_s": None, "deadband": [1]}, "got [1]"),
    ],
)
def test_bad_settings_raise_naming_the_value(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match="Variable 7: ") as exc:
        Variable(7, "sine", "float", "random", **kwargs)
    assert named in str(exc.value)
    with pytest.raises(ConfigurationError, match="DataCollectionContext 3: ") as exc:
        DataCollectionContext(3, [V(1)], **kwargs)
    assert named in str(exc.value)


def test_settings_are_kept_compared_and_pickled() -> None:
    v = Variable(1, "sine", "float", "random", 100, deadband_percent=2.5, max_age_s=60)
    assert (v.deadband, v.deadband_percent, v.max_age_s) == (None, 2.5, 60)
    plain = Variable(1, "sine", "float", "random", 100)
    assert v != plain and v.same_definition(plain)  # one device value, recorded differently
    assert pickle.loads(pickle.dumps(v)) == v and pickle.loads(pickle.dumps(plain)) == plain
    assert v.on_change_settings() == {"deadband_percent": 2.5, "max_age_s": 60}
    ctx = DataCollectionContext(1, [v], deadband=0.5, max_age_s=10)
    assert (ctx.deadband, ctx.deadband_percent, ctx.max_age_s) == (0.5, None, 10)


def test_rule_of_variable_replaces_context_deadband_and_heartbeat_separately() -> None:
    ctx = DataCollectionContext(
        1,
        [
            own_pct := Variable(1, "sine", "float", "random", 200, deadband_percent=5),
            own_age := Variable(2, "sine", "float", "random", max_age_s=2),
            plain := Variable(3, "sine", "float", "random"),
        ],
        deadband=0.5,
        max_age_s=30,
    )
    assert rule_of(ctx, own_pct) == ChangeRule(0.0, 0.05, 30_000, 200)  # its percent replaces 0.5
    assert rule_of(ctx, own_age) == ChangeRule(0.5, None, 2_000, 1000)
    assert rule_of(ctx, plain) == ChangeRule(0.5, None, 30_000, 1000)
    every = DataCollectionContext(2, [plain])
    assert rule_of(every, plain) is None
    assert delivery_rules(every, [plain]) is None  # nothing to filter: the engine skips the filter
    # max_age_s alone means on change with deadband 0
    assert rule_of(DataCollectionContext(3, [plain], max_age_s=0.0015), plain) == ChangeRule(
        0.0, None, 2, 1000
    )


# -- the change test ---------------------------------------------------------------------------------


class Uncomparable:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no")

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("new", "last", "r", "expected"),
    [
        (10.5, 10.0, rule(0.5), False),  # exactly the deadband: not more than it
        (10.51, 10.0, rule(0.5), True),
        (9.49, 10.0, rule(0.5), True),
        (10, 10.0, rule(0.0), False),  # 10 == 10.0
        (11, 10, rule(0.0), True),
        (2**60 + 1, 2**60, rule(0.0), True),  # ints compared exactly (no float rounding)
        (2**60 + 1, 2**60, rule(1.0), False),
        (102.0, 100.0, rule(percent=2), False),  # 2 % of the last recorded value
        (102.5, 100.0, rule(percent=2), True),
        (-102.5, -100.0, rule(percent=2), True),  # of its magnitude
        (0.001, 0.0, rule(percent=50), True),  # after a 0 every change is recorded
        (math.nan, math.nan, rule(1.0), False),  # NaN after NaN: unchanged
        (1.0, math.nan, rule(1e9), True),
        (math.nan, 1.0, rule(1e9), True),
        (math.inf, math.inf, rule(0.0), False),
        (math.inf, 1.0, rule(1e300), True),
        (1.0, math.inf, rule(percent=100), True),
        (-math.inf, math.inf, rule(0.0), True),
        (1e308, -1e308, rule(1e300), True),  # the difference overflows to inf
        (True, False, rule(5.0), True),  # bools are not numbers here: any change
        (True, 1, rule(5.0), False),  # values that compare equal are unchanged (True == 1)
        (True, 2, rule(5.0), True),
        (False, False, rule(0.0), False),
        ("b", "a", rule(100.0), True),
        ("a", "a", rule(0.0), False),
        (b"a", "a", rule(0.0), True),
        (Fraction(3, 2), 1, rule(0.4), True),
        (Uncomparable(), Uncomparable(), rule(0.0), True),  # cannot compare: recorded
        (None, 1.0, rule(0.0), True),
    ],
)
def test_changed(new: Any, last: Any, r: ChangeRule, expected: bool) -> None:
    assert changed(new, last, r) is expected


def test_numpy_values() -> None:
    np = pytest.importorskip("numpy")
    assert changed(np.float32(1.25), np.float32(1.0), rule(0.2)) is True
    assert changed(np.float32(1.25), 1.0, rule(0.3)) is False
    assert changed(np.int64(7), np.int64(7), rule(0.0)) is False
    f = ContextFilter(DataCollectionContext(1, [V(1)]), 0)
    r = delivery_rules(DataCollectionContext(1, [V(1)], deadband=0), [V(1)])
    assert r is not None
    for value in (np.array([1, 2]), np.array([1, 2]), np.array([1, 3])):  # arrays: no truth value
        assert f.select(r, [value], [GOOD], [None], 0) is None  # recorded, never an error


# -- the filter: decisions against a plain specification ---------------------------------------------


def spec_changed(new: Any, last: Any, deadband: Fraction, percent: Fraction | None) -> bool:
    """What the README says, written out with exact arithmetic."""

    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    if new == last:
        return False
    if number(new) and number(last):
        if math.isnan(new) or math.isnan(last):
            return not (math.isnan(new) and math.isnan(last))
        if math.isinf(new) or math.isinf(last):
            return True
        band = deadband if percent is None else abs(Fraction(last)) * percent / 100
        return abs(Fraction(new) - Fraction(last)) > band
    return True


quarters = st.integers(-400, 400).map(lambda k: k / 4)  # float arithmetic is exact on them
specials = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0])  # (huge values: test_changed)
numbers = st.one_of(quarters, quarters, quarters, st.integers(-100, 100), specials)
anything = st.one_of(numbers, st.sampled_from([True, False, "on", "off", b"on"]))
#: (deadband in quarters, percent, heartbeat ms, interval ms) per variable
variable_rules = st.tuples(
    st.sampled_from([0, 1, 2, 10]),
    st.sampled_from([None, None, 0, 25, 50, 100, 200]),
    st.sampled_from([None, 100, 250, 300, 1000]),
    st.sampled_from([100, 100, 200]),
)
qualities = st.sampled_from([GOOD, GOOD, GOOD, GOOD, UNCERTAIN, BAD])
error_texts = st.sampled_from([None, None, None, "e1", "e2"])


def sample(vs: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, Quality, str | None]]:
    return st.tuples(vs, qualities, error_texts)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Variable], list[tuple[int, list[Any]]]]:
    """Variables declared float (numbers, now and then something else) and str (anything), each
    with its own rule, and ticks of samples for all of them (enough of each for the screens)."""
    n_num = draw(st.integers(0, 12))
    n_other = draw(st.integers(0 if n_num else 1, 10))
    variables = []
    for i in range(n_num + n_other):
        band, percent, age, interval = draw(variable_rules)
        variables.append(
            Variable(
                i,
                f"x{i}",
                "float" if i < n_num else "str",
                "random",
                interval,
                deadband=None if percent is not None else band / 4,
                deadband_percent=percent,
                max_age_s=None if age is None else age / 1000,
            )
        )
    ticks = []
    now = 10_000_000
    for _ in range(draw(st.integers(1, 25))):
        now += draw(st.sampled_from([100, 100, 200, 300, 1000])) + draw(st.integers(-99, 99))
        mostly_good = draw(st.booleans())  # ticks where nothing but values move
        row: list[tuple[Any, Quality, str | None]] = []
        for i in range(len(variables)):
            values_of = numbers if i < n_num and draw(st.integers(0, 20)) else anything
            value = draw(values_of)
            if mostly_good:
                row.append((value, GOOD, None))
            else:
                row.append(draw(sample(st.just(value))))
        ticks.append((now, row))
    return variables, ticks


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_filter_records_exactly_what_the_rules_say(scenario: tuple[list[Variable], list[Any]]) -> None:
    variables, ticks = scenario
    # the context lists its variables in another order than they are read (another context
    # named them first): the filter's state slots are then not the delivery's positions
    ctx = DataCollectionContext(1, variables[::-1] if len(variables) % 2 else variables)
    rules = delivery_rules(ctx, variables)
    assert rules is not None
    vector, items = ContextFilter(ctx, 0), ContextFilter(ctx, 0)
    last: dict[int, tuple[Any, Quality, str | None, int]] = {}
    for now, row in ticks:
        values = [None if q is BAD else v for v, q, _ in row]
        qs = [q for _, q, _ in row]
        es = [e for _, _, e in row]
        expected = []
        for k, v in enumerate(variables):
            boundary = now - now % ctx.interval_of(v)
            prev = last.get(k)
            percent = None if v.deadband_percent is None else Fraction(v.deadband_percent)
            band = Fraction(v.deadband or 0)
            age = None if v.max_age_s is None else round(v.max_age_s * 1000)
            record = (
                prev is None
                or qs[k] is BAD
                or qs[k] is not prev[1]
                or es[k] != prev[2]
                or spec_changed(values[k], prev[0], band, percent)
                or (age is not None and boundary - prev[3] >= age)
            )
            if record:
                expected.append(k)
                last[k] = (values[k], qs[k], es[k], boundary)
        got_items = items.select(rules, values, qs, es, now, vector=False)
        got_vector = vector.select(rules, values, qs, es, now)
        want = None if len(expected) == len(variables) else expected
        assert got_items == want, (now, row)
        assert got_vector == want, (now, row)


def twenty(**settings: Any) -> tuple[ContextFilter, Any]:
    ctx = DataCollectionContext(
        1, [Variable(i, f"x{i}", "float", "random", 100, **settings) for i in range(20)]
    )
    rules = delivery_rules(ctx, ctx.variables)
    assert rules is not None and [len(g.positions) for g in rules.groups] == [20]  # one screened group
    return ContextFilter(ctx, 0), rules


GOOD20: list[Quality] = [GOOD] * 20
NONE20: list[str | None] = [None] * 20


@pytest.mark.parametrize("vector", [True, False], ids=["screens", "item-by-item"])
def test_a_bool_in_a_float_variable_is_judged_by_the_exact_rule(vector: bool) -> None:
    f, rules = twenty(deadband=5)
    values = [1.0] * 20
    assert f.select(rules, values, GOOD20, NONE20, 0, vector=vector) is None  # first samples
    assert f.select(rules, [1.0] * 20, GOOD20, NONE20, 100, vector=vector) == []
    assert f.select(rules, [True, *values[1:]], GOOD20, NONE20, 200, vector=vector) == []  # True == 1.0
    assert f.fallbacks == 0  # equal values are unchanged: no arithmetic, no type to look at
    # False after 1.0: within 5 as numbers, but a bool is not a number: recorded
    assert f.select(rules, [False, *values[1:]], GOOD20, NONE20, 300, vector=vector) == [0]
    assert f.fallbacks == (1 if vector else 0)  # the screen saw a bool: the exact rule decided
    assert f.select(rules, [2.0] * 20, GOOD20, NONE20, 400, vector=vector) == [0]  # after False
    assert f.fallbacks == (2 if vector else 0)  # a bool as the last recorded value


@pytest.mark.parametrize("vector", [True, False], ids=["screens", "item-by-item"])
def test_a_finite_value_after_an_infinite_one_is_recorded(vector: bool) -> None:
    f, rules = twenty(deadband_percent=50)
    values = [math.inf, *[4.0] * 19]
    assert f.select(rules, values, GOOD20, NONE20, 0, vector=vector) is None
    assert f.select(rules, [5.0] * 20, GOOD20, NONE20, 100, vector=vector) == [0]  # 50 % of inf is inf
    assert f.fallbacks == (1 if vector else 0)
    assert f.select(rules, [5.5] * 20, GOOD20, NONE20, 200, vector=vector) == []  # within 50 %
    assert f.fallbacks == (1 if vector else 0)  # no infinity left: screened


@pytest.mark.parametrize("vector", [True, False], ids=["screens", "item-by-item"])
def test_bad_items_are_always_recorded_without_leaving_the_screens(vector: bool) -> None:
    f, rules = twenty(deadband=5, max_age_s=1)
    values = [1.0] * 20
    assert f.select(rules, values, GOOD20, NONE20, 0, vector=vector) is None
    bad: list[Any] = [*values]
    qs = [*GOOD20]
    errors: list[str | None] = [*NONE20]
    bad[3], qs[3], errors[3] = None, BAD, "TimeoutError"
    assert f.select(rules, bad, qs, errors, 100, vector=vector) == [3]
    assert f.select(rules, bad, qs, errors, 200, vector=vector) == [3]  # BAD again: recorded again
    qs[3], errors[3] = UNCERTAIN, "TimeoutError"
    bad[3] = 1.0
    assert f.select(rules, bad, qs, errors, 300, vector=vector) == [3]  # quality changed
    assert f.select(rules, bad, qs, errors, 400, vector=vector) == []
    errors[3] = "stale"
    assert f.select(rules, bad, qs, errors, 500, vector=vector) == [3]  # error text changed
    assert f.select(rules, values, GOOD20, NONE20, 600, vector=vector) == [3]  # GOOD again
    assert f.select(rules, values, GOOD20, NONE20, 1000, vector=vector) == [i for i in range(20) if i != 3]
    assert f.fallbacks == 0  # heartbeats (1 s after 0 ms; item 3 was recorded at 600 ms)


def test_heartbeat_counts_boundaries_not_wake_up_times() -> None:
    ctx = DataCollectionContext(1, [V(1, 1000)], max_age_s=2.5)
    rules = delivery_rules(ctx, ctx.variables)
    assert rules is not None
    f = ContextFilter(ctx, 0)
    kept = [
        t // 1000
        for t in range(0, 20_000, 1000)
        if f.select(rules, [5.0], [GOOD], [None], t + (7 if t % 2000 else 900)) is None
    ]
    assert kept == [0, 3, 6, 9, 12, 15, 18]  # 2.5 s rounded up to the 1 s interval: every 3 s


def test_slow_drift_is_recorded_once_it_adds_up() -> None:
    ctx = DataCollectionContext(1, [V(1)], deadband=1.0)
    rules = delivery_rules(ctx, ctx.variables)
    assert rules is not None
    f = ContextFilter(ctx, 0)
    drift = [x * 0.25 for x in range(16)]  # 0.25 per read: never more than 1.0 from the last read
    kept = [v for i, v in enumerate(drift) if f.select(rules, [v], [GOOD], [None], i * 100) is None]
    assert kept == [0.0, 1.25, 2.5, 3.75]  # compared with the last *recorded* value


def test_mixed_delivery_filters_only_on_change_items() -> None:
    on = Variable(1, "sine", "float", "random", 100, deadband=10)
    every = Variable(2, "sine", "float", "random", 100)
    ctx = DataCollectionContext(1, [on, every])
    rules = delivery_rules(ctx, [on, every])
    assert rules is not None and rules.plain == (1,)
    f = ContextFilter(ctx, 0)
    assert f.select(rules, [1.0, 1.0], [GOOD, GOOD], [None, None], 0) is None
    assert f.select(rules, [2.0, 1.0], [GOOD, GOOD], [None, None], 100) == [1]
    assert f.select(rules, [2.0, 1.0], [GOOD, BAD], [None, "x"], 200) == [1]


# -- configuration files -----------------------------------------------------------------------------

TOML = """
[[readers]]
type = "random"

[[writers]]
type = "noop"

[[contexts]]
id = 1
deadband_percent = 2.0
max_age_s = 600
{context}

[[contexts.variables]]
id = 1
address = "sine"
value_type = "float"
deadband = 0.5
{variable}

[[contexts.variables]]
id = 2
address = "counter"
value_type = "int"
"""


def test_configuration_file_keys() -> None:
    config = loads_config(TOML.format(context="", variable="max_age_s = 60"))
    ctx = config.contexts[0]
    assert (ctx.deadband, ctx.deadband_percent, ctx.max_age_s) == (None, 2.0, 600)
    v1, v2 = ctx.variables
    assert (v1.deadband, v1.deadband_percent, v1.max_age_s) == (0.5, None, 60)
    assert rule_of(ctx, v1) == ChangeRule(0.5, None, 60_000, 1000)
    assert rule_of(ctx, v2) == ChangeRule(0.0, 0.02, 600_000, 1000)


@pytest.mark.parametrize(
    ("context", "variable", "line"),
    [
        ("deadband = -1", "", "contexts[0].deadband: -1: "),
        ("", "deadband_percent = 3", "contexts[0].variables[0].deadband: 0.5: give deadband"),
        ("", 'max_age_s = "1 min"', 'contexts[0].variables[0].max_age_s: "1 min": must be a number'),
        (
            "",
            "max_age_s = 0",
            "contexts[0].variables[0].max_age_s: 0: max_age_s must be a number of seconds > 0",
        ),
        ("deadband = 1", "", "contexts[0].deadband: 1: give deadband (absolute) or deadband_percent"),
        ("", "max_age_s = nan", "contexts[0].variables[0].max_age_s: nan: "),
        ("dead_band = 1", "", 'contexts[0].dead_band: 1: unknown key; did you mean "deadband"?'),
    ],
)
def test_configuration_file_errors_name_the_key(context: str, variable: str, line: str) -> None:
    with pytest.raises(ConfigFileError) as exc:
        loads_config(TOML.format(context=context, variable=variable), source="plant.toml")
    assert f"plant.toml: {line}" in str(exc.value)


# -- the engine ------------------------------------------------------------------------------------


def good_pairs(rows: list[Row]) -> list[tuple[Row, Row]]:
    """Consecutive recorded rows that are both GOOD (a missed boundary on a busy machine is BAD)."""
    return [(a, b) for a, b in itertools.pairwise(rows) if a.quality is GOOD and b.quality is GOOD]


def test_two_contexts_record_one_read_differently() -> None:
    reader = CountingReader()
    writer = RecordingWriter()
    every = DataCollectionContext(1, [V(1, 100), V(2, 100, "constant:5", "float")])
    on_change = DataCollectionContext(
        2,
        [
            Variable(1, "counter", "int", "random", 100, deadband=2.5),  # every third value
            Variable(2, "constant:5", "float", "random", 100),  # the context's heartbeat
        ],
        max_age_s=0.3,
    )
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(every)
        c.start(on_change)
        wait_for(lambda: len(writer.of(2, 2)) >= 6, 15, "heartbeats")
        c.pause(2)
        c.pause(1)
        stats = c.stats()
        wait_for(lambda: stats.writers["rec"].samples_delivered == len(writer.rows), 5, "the writer")
        c.stop(1)
        c.stop(2)
    # one read per tick, for both contexts: no variable twice in a read
    assert all(len(ids) == len(set(ids)) for _, ids in reader.calls)
    all1, all2 = writer.of(1, 1), writer.of(1, 2)
    rec1, rec2 = writer.of(2, 1), writer.of(2, 2)
    # what the on-change context recorded is what the other got at the same boundary (one read)
    by_time = {(r.variable_id, r.read_at): r.value for r in all1 + all2}
    assert all(by_time.get((r.variable_id, r.read_at), r.value) == r.value for r in rec1 + rec2)
    # counter (one step per read): consecutive GOOD records differ by 3, the first step beyond 2.5
    steps = [b.value - a.value for a, b in good_pairs(rec1)]
    assert steps and all(s == 3 for s in steps), steps
    # constant: the first sample, then the heartbeats, exactly 3 boundaries (300 ms) apart
    gaps = [ms_of(b.read_at) // 100 - ms_of(a.read_at) // 100 for a, b in good_pairs(rec2)]
    assert len(gaps) >= 4 and all(g == 3 for g in gaps), gaps
    assert all(r.value == 5.0 for r in rec2 if r.quality is GOOD)
    # counted: per context, recorded + suppressed = every sample read for it
    s1, s2 = stats.contexts[1], stats.contexts[2]
    assert s1.suppressed_samples == 0 and s1.samples == len(all1) + len(all2)
    assert s2.samples == len(rec1) + len(rec2) and s2.suppressed_samples > s2.samples
    assert stats.readers["random"].suppressed_samples == s2.suppressed_samples
    reads = stats.readers["random"].samples
    # context 2 started after context 1 and paused first: it got at most as many samples
    assert s2.samples + s2.suppressed_samples <= s1.samples <= reads
    w = stats.writers["rec"]
    assert w.samples_delivered == s1.samples + s2.samples == len(writer.rows)  # suppressed: never delivered


class Script(DataReader):
    """Reads one variable from a script of (value, quality, error); the last entry repeats."""

    reader_type = "script"

    def __init__(self, script: Sequence[tuple[Any, Quality, str | None]]) -> None:
        super().__init__()
        self.script = list(script)
        self.n = 0
        self.min_interval_ms = 10

    def read(self, variables: CollectedVariables) -> None:
        value, quality, error = self.script[min(self.n, len(self.script) - 1)]
        self.n += 1
        for item in variables:
            item.value, item.quality, item.error = value, quality, error


def test_quality_and_error_changes_and_every_bad_sample_are_recorded() -> None:
    script = [
        (1.0, GOOD, None),
        (1.0, GOOD, None),  # suppressed
        (1.0, UNCERTAIN, None),  # quality change
        (1.1, UNCERTAIN, None),  # within the deadband: suppressed
        (1.1, UNCERTAIN, "sensor drift"),  # error text change
        (None, BAD, "TimeoutError"),
        (None, BAD, "TimeoutError"),  # BAD: never suppressed, even unchanged
        (1.1, GOOD, None),  # back to GOOD
        (1.2, GOOD, None),  # suppressed
        (5.0, GOOD, None),  # beyond the deadband
        (5.0, GOOD, None),  # ... then suppressed while it repeats
    ]
    writer = RecordingWriter()
    reader = Script(script)
    ctx = DataCollectionContext(
        1, [Variable(1, "x", "float", "script", 20, deadband=0.5)], min_interval_ms=10
    )
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(ctx)
        wait_for(lambda: reader.n >= len(script) + 5, 10, "the script read")
        c.pause(1)
        stats = c.stats()
        c.stop(1)
    rows = [(r.value, r.quality, r.error) for r in writer.of(1, 1)]
    expected = [script[i] for i in (0, 2, 4, 5, 6, 7, 9)]
    missed = [r for r in writer.of(1, 1) if r.error and r.error.startswith("missed:")]
    assert not missed, "a busy machine: this test needs every boundary read"
    assert rows == expected
    assert stats.contexts[1].samples == len(expected)
    assert stats.contexts[1].samples + stats.contexts[1].suppressed_samples == stats.readers["script"].samples


class OnceSlow(CountingReader):
    """Reads fast, except one read that blocks ~0.6 s (its boundaries are missed)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def read(self, variables: CollectedVariables) -> None:
        super().read(variables)
        if len(self.calls) == 5:
            self.gate.wait(0.6)


def test_missed_boundaries_are_recorded_bad_in_an_on_change_context() -> None:
    reader = OnceSlow()
    writer = RecordingWriter()
    every = DataCollectionContext(1, [V(1, 50, "constant:7", "float")], min_interval_ms=10)
    on_change = DataCollectionContext(
        2, [Variable(1, "constant:7", "float", "random", 50)], min_interval_ms=10, deadband=0.5
    )
    with DataCollector(LOG, [reader], [writer]) as c:
        c.start(every)
        c.start(on_change)
        wait_for(lambda: len(writer.of(1)) >= 40, 15, "samples after the slow read")
        c.pause(2)
        stats = c.stats()
        c.stop(1)
        c.stop(2)
    all_rows, recorded = writer.of(1, 1), writer.of(2, 1)
    bad_all = [r.read_at for r in all_rows if r.quality is BAD]
    bad_rec = [r.read_at for r in recorded if r.quality is BAD]
    assert len(bad_rec) >= 8  # ~0.6 s of 50 ms boundaries
    assert set(bad_rec) <= set(bad_all)  # the same missed boundaries, each its BAD sample in both
    assert all(r.error and r.error.startswith("missed:") for r in recorded if r.quality is BAD)
    # the constant is recorded first, then only after the BAD stretch (a quality change)
    good = [r for r in recorded if r.quality is GOOD]
    assert len(good) == 2 and good[1].read_at > max(bad_rec)
    # no silent gap: every boundary from the first to the pause gave context 2 one sample, recorded
    # or suppressed (the every-sample context shows the boundaries; none of its own is missing)
    first, last = ms_of(recorded[0].read_at), ms_of(recorded[-1].read_at)
    boundaries = sorted(ms_of(r.read_at) // 50 for r in all_rows)
    assert boundaries == list(range(boundaries[0], boundaries[-1] + 1))
    s2 = stats.contexts[2]
    assert s2.samples == len(recorded)
    assert s2.samples + s2.suppressed_samples >= (last - first) // 50 + 1
    assert stats.readers["random"].missed_samples == len(bad_all) + len(bad_rec)


def test_filter_state_survives_other_contexts_and_restarts_on_resume() -> None:
    writer = RecordingWriter()
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        c.start(DataCollectionContext(1, [V(1, 50, "constant:1", "float")], min_interval_ms=10, deadband=0))
        wait_for(lambda: c.stats().contexts[1].suppressed_samples >= 3, 10, "suppressed samples")
        c.start(DataCollectionContext(2, [V(2, 20)], min_interval_ms=10))  # a new plan for the reader
        wait_for(lambda: len(writer.of(2)) >= 10, 10, "context 2")
        assert len(writer.of(1)) == 1  # still the first sample only
        c.pause(1)
        c.resume(1)  # a new stretch: its first sample is recorded
        wait_for(lambda: len(writer.of(1)) >= 2, 10, "the first sample after resume")
        wait_for(lambda: c.stats().contexts[1].suppressed_samples >= 6, 10, "suppressed samples")
        assert len(writer.of(1)) == 2


def test_latest_shows_reads_while_writers_spool_and_events_get_recorded_samples(tmp_path: Path) -> None:
    writer = RecordingWriter()
    ctx = DataCollectionContext(1, [V(1, 50)], min_interval_ms=10, deadband=1.5)  # counter: every other
    with DataCollector(LOG, [CountingReader()], [writer], latest_n=50, spool_dir=tmp_path) as c:
        sub = c.subscribe()
        c.start(ctx)
        wait_for(lambda: len(writer.of(1)) >= 6, 10, "recorded samples")
        c.pause(1)
        stats = c.stats()
        wait_for(lambda: stats.writers["rec"].samples_delivered == len(writer.rows), 5, "the writer")
        latest = [s.value for s in c.latest(1)]
        c.stop(1)
        events = []
        while (event := sub.get(1.0)) is not None and event.kind != "run_stopped":
            events.append(event)
    values = [r.value for r in writer.of(1, 1)]
    assert all(b - a == 2 for a, b in itertools.pairwise(values)), values  # every other value
    assert latest == list(range(latest[0], latest[0] + len(latest)))  # latest(): every value read
    s = stats.contexts[1]
    assert s.samples == len(values) and s.suppressed_samples >= s.samples - 1
    w = stats.writers["rec"]
    assert w.samples_delivered == s.samples  # the spool and the writer saw recorded samples only
    assert (
        w.samples_delivered
        == w.samples_written + w.lost_samples + w.dropped_samples + w.unwritten_samples + w.queue_depth
    )
    written = sum(e.samples for e in events if e.kind == "batch_written")
    assert written == len(writer.rows)
    deduced = ctx.deduced_metadata["on_change"]
    assert deduced == {"deadband": 1.5}
