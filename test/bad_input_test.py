"""Bad input raises a DataCollectionError naming the bad value and leaves the collector as it was."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from _util import LOG, CountingReader, RecordingWriter, wait_for

from data_collector import (
    CollectorClosedError,
    ConfigurationError,
    ConflictingVariableError,
    ContextAlreadyStartedError,
    ContextStateError,
    DataCollectionContext,
    DataCollectionError,
    DataCollector,
    DataReader,
    UnknownContextError,
    Variable,
)
from data_collector._model import MAX_DURATION_S, MAX_ID, MAX_INTERVAL_MS, MIN_ID


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: Variable(1, "sine", "float", "random", 0), "interval_ms must be > 0, got 0"),
        (lambda: Variable(1, "sine", "float", "random", -5), "got -5"),
        (lambda: Variable(1, "sine", "float", "random", 1.5), "got 1.5"),  # type: ignore[arg-type]
        (lambda: Variable("x", "sine", "float", "random"), "got 'x'"),  # type: ignore[arg-type]
        (lambda: Variable(1, "", "float", "random"), "address"),
        (lambda: Variable(1, "sine", "", "random"), "value_type"),
        (lambda: Variable(1, "sine", "float", None), "reader_type"),  # type: ignore[arg-type]
        (lambda: DataCollectionContext(1, [], min_interval_ms=0), "min_interval_ms must be > 0, got 0"),
        (lambda: DataCollectionContext(1, [], default_interval_ms=-1), "got -1"),
        (lambda: DataCollectionContext(1, [], duration_s=0), "duration_s"),
        (lambda: DataCollectionContext(1, [], duration_s=float("inf")), "inf"),
        (
            lambda: DataCollectionContext(
                1, [Variable(4, "sine", "float", "random"), Variable(4, "ramp", "float", "random")]
            ),
            "duplicate variable id 4",
        ),
        (lambda: DataCollectionContext(1, ["nope"]), "'nope'"),  # type: ignore[list-item]
        (lambda: DataCollectionContext(1, [], metadata=[1]), "metadata"),  # type: ignore[arg-type]
        (lambda: DataCollector("log", [], []), "'log'"),  # type: ignore[arg-type]
        (lambda: DataCollector(LOG, [object()], []), "object"),  # type: ignore[list-item]
        (lambda: DataCollector(LOG, [CountingReader(), CountingReader()], []), "'random'"),
        (lambda: DataCollector(LOG, [], [], max_queue_samples=0), "max_queue_samples"),
        (lambda: CountingReader(min_interval_ms=0), "min_interval_ms"),
    ],
)
def test_constructors_reject_bad_values(make: Callable[[], Any], needle: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make()
    assert needle in str(info.value)
    assert isinstance(info.value, DataCollectionError) and isinstance(info.value, ValueError)


def test_variable_is_frozen_and_keyword_friendly() -> None:
    v = Variable(id=1, address="sine", value_type="float", reader_type="random", interval_ms=100)
    with pytest.raises(AttributeError):
        v.interval_ms = 5  # type: ignore[misc]
    assert v == Variable(1, "sine", "float", "random", 100) and hash(v) == hash(
        Variable(1, "sine", "float", "random", 100)
    )


class _Strict(CountingReader):
    """Rejects addresses starting with 'bad' (as a protocol reader would)."""

    def validate_variable(self, variable: Variable) -> None:
        if variable.address.startswith("bad"):
            raise ConfigurationError(f"variable {variable.id}: bad address {variable.address!r}")
        super().validate_variable(variable)


class _Limited(CountingReader):
    min_interval_ms = 500


def _V(
    id: int, interval: int | None = 100, address: str = "counter", vt: str = "int", rt: str = "random"
) -> Variable:
    return Variable(id, address, vt, rt, interval)


BAD_STARTS: list[tuple[str, Callable[[], DataCollectionContext], type[DataCollectionError], str]] = [
    ("below context minimum", lambda: DataCollectionContext(9, [_V(1, 50)]), ConfigurationError, "50 ms"),
    (
        "below reader minimum",
        lambda: DataCollectionContext(9, [_V(1, 200, rt="limited")]),
        ConfigurationError,
        "500 ms of reader 'limited'",
    ),
    ("unknown reader type", lambda: DataCollectionContext(9, [_V(1, rt="plc")]), ConfigurationError, "'plc'"),
    (
        "unknown value type",
        lambda: DataCollectionContext(9, [_V(1, vt="complex")]),
        ConfigurationError,
        "'complex'",
    ),
    (
        "reader rejects address",
        lambda: DataCollectionContext(9, [_V(1, address="bad:7")]),
        ConfigurationError,
        "'bad:7'",
    ),
    (
        "reader signal unknown",
        lambda: DataCollectionContext(9, [_V(1, address="squarewave")]),
        ConfigurationError,
        "'squarewave'",
    ),
    (
        "same id, other address",
        lambda: DataCollectionContext(9, [_V(1, address="random")]),
        ConflictingVariableError,
        "address='random'",
    ),
    (
        "same id, other value type",
        lambda: DataCollectionContext(9, [_V(1, vt="float")]),
        ConflictingVariableError,
        "value_type='float'",
    ),
    (
        "same id, other reader",
        lambda: DataCollectionContext(9, [_V(1, rt="limited", interval=500)]),
        ConflictingVariableError,
        "reader_type='limited'",
    ),
    (
        "already running id",
        lambda: DataCollectionContext(1, [_V(5)]),
        ContextAlreadyStartedError,
        "context 1",
    ),
]


@pytest.fixture
def running() -> Any:
    reader = _Strict()
    writer = RecordingWriter()
    c = DataCollector(LOG, [reader, _Limited("limited")], [writer])
    c.start(DataCollectionContext(1, [_V(1)]))
    c.start(DataCollectionContext(2, [_V(2)]))
    c.pause(2)
    wait_for(lambda: len(writer.of(1)) >= 2)
    yield c, writer
    c.close()


def _unchanged(c: DataCollector, writer: RecordingWriter) -> None:
    assert {cid: c.state(cid) for cid in c.contexts()} == {1: "running", 2: "paused"}
    n = len(writer.of(1))
    wait_for(lambda: len(writer.of(1)) >= n + 2, what="context 1 still collecting")
    assert c.stats().readers["random"].tick_ms == 100


@pytest.mark.parametrize(("label", "make", "error", "needle"), BAD_STARTS, ids=[b[0] for b in BAD_STARTS])
def test_start_rejects_and_changes_nothing(
    running: Any, label: str, make: Callable[[], DataCollectionContext], error: type[Exception], needle: str
) -> None:
    c, writer = running
    ctx = make()
    with pytest.raises(error) as info:
        c.start(ctx)
    assert needle in str(info.value), str(info.value)
    assert ctx.start_date is None or ctx.id == 1
    assert "limited" not in c.stats().readers or c.stats().readers["limited"].tick_ms == 0
    _unchanged(c, writer)


@pytest.mark.parametrize(
    ("call", "error", "needle"),
    [
        (lambda c: c.stop(42), UnknownContextError, "42"),
        (lambda c: c.pause(42), UnknownContextError, "42"),
        (lambda c: c.resume(42), UnknownContextError, "42"),
        (lambda c: c.pause(2), ContextStateError, "paused"),
        (lambda c: c.resume(1), ContextStateError, "running"),
        (lambda c: c.start("ctx"), ConfigurationError, "'ctx'"),
        (
            lambda c: c.start(DataCollectionContext(9, [_V(9)]), at="tomorrow"),
            ConfigurationError,
            "'tomorrow'",
        ),
        (lambda c: c.add_listener(object()), ConfigurationError, "object"),
    ],
)
def test_bad_calls_raise_and_change_nothing(
    running: Any, call: Callable[[DataCollector], Any], error: type[Exception], needle: str
) -> None:
    c, writer = running
    with pytest.raises(error) as info:
        call(c)
    assert needle in str(info.value)
    _unchanged(c, writer)


def test_every_call_after_close_raises() -> None:
    c = DataCollector(LOG, [CountingReader()], [RecordingWriter()])
    c.start(DataCollectionContext(1, [_V(1)]))
    c.close()
    for call in (
        lambda: c.start(DataCollectionContext(2, [_V(1)])),
        lambda: c.stop(1),
        lambda: c.pause(1),
        lambda: c.resume(1),
        lambda: c.add_listener(__import__("data_collector").DataCollectionListener()),
        lambda: c.__enter__(),
    ):
        with pytest.raises(CollectorClosedError):
            call()
    c.close()  # still idempotent


def test_failing_writer_open_starts_nothing() -> None:
    class Unreachable(RecordingWriter):
        def open(self) -> None:
            raise ConnectionRefusedError("db.plant:5432 refused")

    from data_collector import WriterError

    reader = CountingReader()
    with DataCollector(LOG, [reader], [Unreachable()]) as c:
        ctx = DataCollectionContext(1, [_V(1)])
        with pytest.raises(WriterError, match=r"db\.plant:5432"):
            c.start(ctx)
        assert c.contexts() == {} and ctx.start_date is None
        assert reader.opened == 0 and c.stats().readers == {}


def test_reader_without_type_and_skipped_init() -> None:
    class NoType(DataReader):
        def read(self, variables: Any) -> None:
            pass

    with pytest.raises(ConfigurationError, match="reader_type"):
        DataCollector(LOG, [NoType()], [])

    class OwnInit(DataReader):
        reader_type = "own"

        def __init__(self, x: int) -> None:
            super().__init__()
            self.x = x

        def read(self, variables: Any) -> None:
            pass

    assert OwnInit(1).reader_type == "own"  # base __init__ keeps the class attribute
    assert CountingReader("two").reader_type == "two" and CountingReader().reader_type == "random"


def test_conflict_check_ignores_stopped_contexts() -> None:
    with DataCollector(logging.getLogger("t"), [CountingReader()], [RecordingWriter()]) as c:
        c.start(DataCollectionContext(1, [_V(1)]))
        c.stop(1)
        c.start(DataCollectionContext(2, [_V(1, address="random")]))  # no longer a conflict
        assert c.state(2) == "running"


def test_check_validates_like_start_and_points_at_the_field(running: Any) -> None:
    c, writer = running
    good = DataCollectionContext(8, [_V(8)])
    c.check(good)  # fine, and nothing started
    assert 8 not in c.contexts()
    with pytest.raises(ConfigurationError) as info:
        c.check(DataCollectionContext(8, [_V(8), _V(9, address="bad:1")]))
    assert (info.value.context_id, info.value.variable_id, info.value.field) == (8, 9, "address")
    with pytest.raises(ConfigurationError) as info:
        c.check(DataCollectionContext(8, [_V(8, 20)]))
    assert (info.value.variable_id, info.value.field) == (8, "interval_ms")
    # conflicts against contexts meant to run beside it
    with pytest.raises(ConflictingVariableError) as info:
        c.check(good, DataCollectionContext(10, [_V(8, address="random")]))
    assert info.value.field == "id"
    _unchanged(c, writer)


# -- numeric ranges (issue 9, point 7) -----------------------------------------------------------------
HUGE = 10**400


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        # intervals: at most MAX_INTERVAL_MS (366 days); 1e13 ms used to kill the reader thread
        (lambda: Variable(1, "sine", "float", "random", 10**13), "got 10000000000000"),
        (lambda: Variable(1, "sine", "float", "random", MAX_INTERVAL_MS + 1), f"got {MAX_INTERVAL_MS + 1}"),
        (lambda: Variable(1, "sine", "float", "random", HUGE), "an int of 401 digits"),
        (lambda: Variable(1, "sine", "float", "random", True), "interval_ms must be an int, got True"),
        (lambda: Variable(1, "sine", "float", "random", float("nan")), "got nan"),  # type: ignore[arg-type]
        (lambda: Variable(1, "sine", "float", "random", float("inf")), "got inf"),  # type: ignore[arg-type]
        (lambda: DataCollectionContext(1, [], min_interval_ms=10**13), "min_interval_ms must be at most"),
        (
            lambda: DataCollectionContext(1, [], default_interval_ms=10**13),
            "default_interval_ms must be at most",
        ),
        (lambda: DataCollectionContext(1, [], default_interval_ms=HUGE), "an int of 401 digits"),
        (lambda: DataCollectionContext(1, [], min_interval_ms=False), "got False"),
        # durations: 10**400 used to raise OverflowError
        (lambda: DataCollectionContext(1, [], duration_s=HUGE), "duration_s must be at most"),
        (lambda: DataCollectionContext(1, [], duration_s=-HUGE), "duration_s must be a finite number > 0"),
        (lambda: DataCollectionContext(1, [], duration_s=float("nan")), "got nan"),
        (lambda: DataCollectionContext(1, [], duration_s=float("-inf")), "got -inf"),
        (lambda: DataCollectionContext(1, [], duration_s=True), "got True"),
        (lambda: DataCollectionContext(1, [], duration_s="60"), "got '60'"),  # type: ignore[arg-type]
        # ids: a signed 64-bit integer, what the SQL writer stores
        (lambda: Variable(2**63, "sine", "float", "random"), "got 9223372036854775808"),
        (lambda: Variable(-(2**63) - 1, "sine", "float", "random"), "got -9223372036854775809"),
        (lambda: Variable(10**5000, "sine", "float", "random"), "an int of about 5001 digits"),
        (lambda: Variable(False, "sine", "float", "random"), "got False"),
        (lambda: DataCollectionContext(2**64, []), "got 18446744073709551616"),
        (lambda: DataCollectionContext(-HUGE, []), "-10000000000"),
        (lambda: DataCollectionContext(1.0, []), "got 1.0"),  # type: ignore[arg-type]
    ],
)
def test_numbers_out_of_range_raise_configuration_error(make: Callable[[], Any], needle: str) -> None:
    with pytest.raises(ConfigurationError) as info:  # never OverflowError, TypeError, ...
        make()
    assert needle in str(info.value), str(info.value)
    assert len(str(info.value)) < 300  # a huge value is named, not printed in full


def test_range_limits_are_accepted() -> None:
    v = Variable(MAX_ID, "sine", "float", "random", MAX_INTERVAL_MS)
    assert (v.id, v.interval_ms) == (2**63 - 1, 366 * 86_400_000)
    assert Variable(MIN_ID, "sine", "float", "random", 1).id == -(2**63)
    ctx = DataCollectionContext(
        MIN_ID, [v], min_interval_ms=MAX_INTERVAL_MS, default_interval_ms=MAX_INTERVAL_MS, duration_s=10**9
    )
    assert (ctx.id, ctx.duration_s) == (-(2**63), 1e9)
    assert DataCollectionContext(MAX_ID, [], duration_s=MAX_DURATION_S).duration_s == MAX_DURATION_S


def test_a_variable_at_the_longest_interval_runs_beside_a_fast_one() -> None:
    """The reader thread survives the longest interval (it died of an OverflowError at 1e13 ms)."""
    writer = RecordingWriter()
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        c.start(DataCollectionContext(MAX_ID, [_V(1, MAX_INTERVAL_MS), _V(2, 100)]))
        wait_for(lambda: len(writer.of(MAX_ID)) >= 5, what="the 100 ms variable keeps being read")
        assert c.state(MAX_ID) == "running"
