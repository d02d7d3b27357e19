"""The contract suites: what every reader and every writer must do, as pytest test classes.

A plugin's test module subclasses :class:`ReaderContract` or :class:`WriterContract`, fills in a
few hooks, and pytest runs every check on it. A failing check names the rule it found broken
(``broken rule writer.append (...)``); :data:`READER_RULES` and :data:`WRITER_RULES` list them.
"""

from __future__ import annotations

import importlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ClassVar, NoReturn

import pytest

from .._collector import DataCollector
from .._errors import ConfigurationError
from .._model import CollectedVariable, CollectedVariables, DataCollectionContext, Quality, Variable
from .._reader import DataReader
from .._writer import DataWriter
from ._factory import accounting_problems
from ._faultproxy import FaultProxy
from ._memory import MemoryWriter, Sample

__all__ = [
    "READER_RULES",
    "WRITER_RULES",
    "ReaderContract",
    "StoredRun",
    "StoredSample",
    "WriterContract",
]

LOG = logging.getLogger("data_collector.testing")

#: The reader rules: id -> what the rule says. Failure messages start with ``broken rule <id>``.
READER_RULES: Mapping[str, str] = {
    "reader.fills-every-item": (
        "read() gives every readable variable a GOOD value of its value_type (and an aware read_at if it "
        "sets one)"
    ),
    "reader.never-raises": "read() never raises: what it cannot read is marked BAD with a reason",
    "reader.bad-has-a-reason": "an item read() cannot read is BAD with a non-empty error text",
    "reader.bad-spoils-nothing": "an unreadable variable does not spoil the other variables of the same read",
    "reader.one-sample-per-boundary": (
        "through a DataCollector, every due variable gets exactly one sample per boundary of its interval"
    ),
    "reader.validate-variable": (
        "validate_variable() accepts the reader's good variables and rejects a bad one with a "
        "ConfigurationError naming its address, so DataCollector.start() fails and starts nothing"
    ),
    "reader.unreachable-is-bad": (
        "a device that does not answer does not make open() or read() raise: every item is BAD with a "
        "reason, and read() returns within read_timeout_s"
    ),
}

#: The writer rules: id -> what the rule says. Failure messages start with ``broken rule <id>``.
WRITER_RULES: Mapping[str, str] = {
    "writer.round-trip": (
        "every sample delivered is stored exactly once with its context, variable, read time (UTC, to the "
        "millisecond), value (and its type), quality and error"
    ),
    "writer.runs": "a store that records runs keeps each run's start, end and metadata",
    "writer.shared": "one writer serves several contexts fed from several reader threads",
    "writer.append": "a new writer on the same store appends: reopening never truncates nor overwrites",
    "writer.hooks": (
        "context_started/write/context_stopped calls, interleaved for two contexts, store each context's "
        "data and run; stopping one context ends nothing of the other"
    ),
    "writer.outage-is-transient": (
        "while the store is unreachable write() raises an error is_transient() accepts (the collector then "
        "retries), never returns as if it had stored the batch; it writes again once the store is back"
    ),
    "writer.arrays": (
        "a writer that claims array_values stores 1-D NumPy arrays (floats with NaN and -0.0, int64 "
        "extremes, bools, length 1, empty) and gives them back as equal NumPy arrays of the same kind"
    ),
    "writer.exactly-once": (
        "a writer that claims exactly_once stores every sample exactly once when connections are reset, "
        "cut or stalled and the collector retries the same batch"
    ),
}

_PYTYPES: dict[str, type] = {"float": float, "int": int, "bool": bool, "str": str}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _broken(rule: str, detail: str) -> NoReturn:
    text = READER_RULES.get(rule) or WRITER_RULES[rule]
    pytest.fail(f"broken rule {rule} ({text}):\n{detail}")


def _ms(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(milliseconds=1)


def _describe(v: Variable) -> str:
    return f"variable {v.id} {v.address!r} ({v.value_type})"


def _close_collector(collector: DataCollector) -> None:
    collector.close()
    problems = accounting_problems(collector.stats())
    if problems:
        raise AssertionError("the collector lost samples: " + "; ".join(problems))


# =================================================================================================
# readers
# =================================================================================================
class ReaderContract:
    """The checks every reader must pass. Subclass it as a pytest test class::

        class TestPlcReader(ReaderContract):
            @pytest.fixture(autouse=True)
            def _device(self, modbus_simulator):       # whatever the reader needs, per test
                self.sim = modbus_simulator

            def make_reader(self) -> DataReader:
                return PlcReader("127.0.0.1", self.sim.port)

            def make_variables(self) -> list[Variable]:
                return [Variable(1, "hr:100:int16", "int", "plc")]

    Hooks (``make_reader`` and ``make_variables`` are required; the others enable more checks,
    and the check they enable is skipped, with the reason, when they return nothing):

    - :meth:`make_reader`: a new reader of the device, at each call;
    - :meth:`make_variables`: variables the reader reads GOOD (their ``reader_type`` the reader's);
    - :meth:`expected_values`: per variable id, a predicate the value read must satisfy;
    - :meth:`invalid_variables`: variables :meth:`DataReader.validate_variable` must reject;
    - :meth:`unreadable_variables`: valid variables the device cannot serve (BAD when read);
    - :meth:`make_unreachable_reader`: a reader whose device does not answer (a port where
      nothing listens, a cut ``fault_proxy``, a frozen simulator).

    Settings (class attributes): ``interval_ms`` (100: the variables' interval when they have
    none), ``boundaries`` (5: samples per variable collected), ``read_timeout_s`` (10: longest
    read of an unreachable device), ``collect_timeout_s`` (30), ``own_timestamps`` (False; True
    for a reader that stamps ``read_at`` itself, e.g. with device timestamps: the boundary check
    then compares counts rather than read times). Rules: :data:`READER_RULES`.
    """

    interval_ms: ClassVar[int] = 100
    boundaries: ClassVar[int] = 5
    read_timeout_s: ClassVar[float] = 10.0
    collect_timeout_s: ClassVar[float] = 30.0
    own_timestamps: ClassVar[bool] = False

    # -- hooks -------------------------------------------------------------------------------------
    def make_reader(self) -> DataReader:
        """A new reader (required)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_reader() for ReaderContract")

    def make_variables(self) -> Sequence[Variable]:
        """Variables the reader reads GOOD (required)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_variables() for ReaderContract")

    def expected_values(self) -> Mapping[int, Callable[[Any], bool]]:
        """Per variable id, a predicate on the value read (true when it is right)."""
        return {}

    def invalid_variables(self) -> Sequence[Variable]:
        """Variables of the reader's type that ``validate_variable`` must reject."""
        return []

    def unreadable_variables(self) -> Sequence[Variable]:
        """Valid variables (ids apart from make_variables') that the device cannot serve."""
        return []

    def make_unreachable_reader(self) -> DataReader | None:
        """A reader of the same variables whose device does not answer, or None."""
        return None

    # -- helpers -----------------------------------------------------------------------------------
    def _variables(self) -> list[Variable]:
        variables = list(self.make_variables())
        if not variables:
            raise AssertionError(f"{type(self).__name__}.make_variables() returned no variable")
        return variables

    def _check_items(self, batch: CollectedVariables, expected: Mapping[int, Callable[[Any], bool]]) -> None:
        for item in batch:
            v = item.variable
            if item.quality is not Quality.GOOD:
                _broken(
                    "reader.fills-every-item",
                    f"{_describe(v)} was read {item.quality.name} (error {item.error!r}), "
                    f"value {item.value!r}",
                )
            self._check_value(v, item.value, expected)
            if item.read_at is not None and item.read_at.tzinfo is None:
                _broken("reader.fills-every-item", f"{_describe(v)}: read_at {item.read_at!r} is naive")

    @staticmethod
    def _check_value(v: Variable, value: Any, expected: Mapping[int, Callable[[Any], bool]]) -> None:
        pytype = _PYTYPES.get(v.value_type)
        if pytype is not None and type(value) is not pytype:
            _broken(
                "reader.fills-every-item",
                f"{_describe(v)}: the value {value!r} is a {type(value).__name__}, not a {pytype.__name__}",
            )
        check = expected.get(v.id)
        if check is not None and not check(value):
            _broken("reader.fills-every-item", f"{_describe(v)}: the value {value!r} is not the expected one")

    @staticmethod
    def _read(reader: DataReader, batch: CollectedVariables, what: str) -> float:
        """read() once; its duration in seconds. A raise is a broken rule."""
        started = time.monotonic()
        try:
            reader.read(batch)
        except Exception as exc:
            _broken(
                "reader.never-raises",
                f"{type(reader).__name__}.read() of {what} raised {type(exc).__name__}: {exc}",
            )
        return time.monotonic() - started

    def _collect(
        self, reader: DataReader, variables: list[Variable], context_id: int
    ) -> tuple[list[Sample], DataCollectionContext]:
        writer = MemoryWriter(name="contract")
        ctx = DataCollectionContext(
            context_id,
            variables,
            min_interval_ms=min(10, self.interval_ms),
            default_interval_ms=self.interval_ms,
        )
        collector = DataCollector(LOG, [reader], [writer], drain_timeout_s=self.collect_timeout_s)
        try:
            collector.start(ctx)
            writer.wait_for_each(
                [v.id for v in variables], self.boundaries, self.collect_timeout_s, context_id=context_id
            )
            collector.stop(context_id)
        finally:
            _close_collector(collector)
        return writer.of(context_id), ctx

    def _check_boundaries(self, samples: list[Sample], ctx: DataCollectionContext) -> None:
        by_var: dict[int, list[Sample]] = {v.id: [] for v in ctx.variables}
        for s in samples:
            by_var[s.variable_id].append(s)
        per_interval: dict[int, dict[int, list[int]]] = {}
        for v in ctx.variables:
            interval = ctx.interval_of(v)
            got = by_var[v.id]
            if self.own_timestamps:
                per_interval.setdefault(interval, {})[v.id] = [len(got)]
                continue
            slots = [_ms(s.read_at) // interval for s in got]
            seen: set[int] = set()
            for s, slot in zip(got, slots, strict=True):
                if slot in seen:
                    _broken(
                        "reader.one-sample-per-boundary",
                        f"{_describe(v)} got two samples for the boundary at "
                        f"{_EPOCH + timedelta(milliseconds=slot * interval)} (interval {interval} ms); "
                        f"the second: {s}",
                    )
                seen.add(slot)
            missing = sorted(set(range(min(slots), max(slots) + 1)) - seen)
            if missing:
                at = [str(_EPOCH + timedelta(milliseconds=m * interval)) for m in missing[:5]]
                _broken(
                    "reader.one-sample-per-boundary",
                    f"{_describe(v)} got no sample for {len(missing)} boundaries between its first and last "
                    f"sample (interval {interval} ms), e.g. {at}",
                )
            per_interval.setdefault(interval, {})[v.id] = sorted(slots)
        for interval, of_var in per_interval.items():
            distinct = {tuple(s) for s in of_var.values()}
            if len(distinct) > 1:
                counts = {vid: len(s) if not self.own_timestamps else s[0] for vid, s in of_var.items()}
                _broken(
                    "reader.one-sample-per-boundary",
                    f"the variables at {interval} ms of one context did not get the same boundaries: "
                    f"samples per variable {counts}",
                )

    # -- the checks --------------------------------------------------------------------------------
    def test_read_fills_every_item(self) -> None:
        """Rules reader.fills-every-item, reader.never-raises (a direct open/read/close)."""
        reader = self.make_reader()
        variables = self._variables()
        expected = self.expected_values()
        for v in variables:
            try:
                reader.validate_variable(v)
            except Exception as exc:
                _broken(
                    "reader.validate-variable", f"{_describe(v)} was rejected: {type(exc).__name__}: {exc}"
                )
        reader.open()
        try:
            batch = CollectedVariables.of(variables)
            self._read(reader, batch, f"{len(variables)} readable variables")
            self._check_items(batch, expected)
            again = CollectedVariables.of(variables)  # a second tick reads as well as the first
            self._read(reader, again, f"{len(variables)} readable variables (second read)")
            self._check_items(again, expected)
        finally:
            reader.close()

    def test_every_due_variable_gets_one_sample_per_boundary(self) -> None:
        """Rule reader.one-sample-per-boundary, and GOOD values through a DataCollector."""
        variables = self._variables()
        samples, ctx = self._collect(self.make_reader(), variables, 1)
        expected = self.expected_values()
        by_id = {v.id: v for v in variables}
        for s in samples:
            if s.quality is not Quality.GOOD:
                if s.error is not None and s.error.startswith("missed: reader busy"):
                    continue  # the machine was busy, not the reader: counted, not the reader's fault
                _broken(
                    "reader.fills-every-item",
                    f"through the collector {_describe(by_id[s.variable_id])} got a {s.quality.name} sample "
                    f"at {s.read_at}: {s.error!r}",
                )
            self._check_value(by_id[s.variable_id], s.value, expected)
        self._check_boundaries(samples, ctx)

    def test_validate_variable_rejects_bad_variables_with_configuration_error(self) -> None:
        """Rule reader.validate-variable."""
        invalid = list(self.invalid_variables())
        if not invalid:
            pytest.skip(f"{type(self).__name__}.invalid_variables() names no variable the reader must reject")
        reader = self.make_reader()
        for v in invalid:
            try:
                reader.validate_variable(v)
            except ConfigurationError as exc:
                if v.address not in str(exc):
                    _broken(
                        "reader.validate-variable",
                        f"the error for {_describe(v)} does not name its address: {exc}",
                    )
                continue
            except Exception as exc:
                _broken(
                    "reader.validate-variable",
                    f"{_describe(v)} raised {type(exc).__name__} (not a ConfigurationError): {exc}",
                )
            _broken("reader.validate-variable", f"validate_variable() accepted the invalid {_describe(v)}")
        writer = MemoryWriter(name="contract")
        collector = DataCollector(LOG, [reader], [writer])
        try:
            good = self._variables()
            for v in invalid:
                try:
                    collector.start(
                        DataCollectionContext(2, [*good, v], default_interval_ms=self.interval_ms)
                    )
                except ConfigurationError:
                    pass
                else:
                    _broken("reader.validate-variable", f"DataCollector.start() accepted {_describe(v)}")
                if collector.contexts():
                    _broken(
                        "reader.validate-variable", f"a start() refused for {_describe(v)} left a context"
                    )
        finally:
            _close_collector(collector)

    def test_unreadable_variables_are_bad_with_a_reason(self) -> None:
        """Rules reader.bad-has-a-reason, reader.bad-spoils-nothing, reader.never-raises."""
        unreadable = list(self.unreadable_variables())
        if not unreadable:
            pytest.skip(
                f"{type(self).__name__}.unreadable_variables() names no variable the device cannot serve"
            )
        variables = self._variables()
        reader = self.make_reader()
        for v in unreadable:
            reader.validate_variable(v)
        bad_ids = {v.id for v in unreadable}
        reader.open()
        try:
            for attempt in (1, 2):
                batch = CollectedVariables.of([*variables, *unreadable])
                self._read(reader, batch, f"good and unreadable variables (read {attempt})")
                for item in batch:
                    v = item.variable
                    if v.id in bad_ids:
                        if item.quality is not Quality.BAD:
                            _broken(
                                "reader.bad-has-a-reason",
                                f"the unreadable {_describe(v)} was read {item.quality.name}: {item.value!r}",
                            )
                        if not item.error or not item.error.strip():
                            _broken("reader.bad-has-a-reason", f"the BAD {_describe(v)} has no error text")
                    elif item.quality is not Quality.GOOD:
                        _broken(
                            "reader.bad-spoils-nothing",
                            f"{_describe(v)} was read {item.quality.name} ({item.error!r}) beside the "
                            f"unreadable {[_describe(u) for u in unreadable]}",
                        )
        finally:
            reader.close()

    def test_unreachable_device_is_bad_with_a_reason_within_the_timeout(self) -> None:
        """Rules reader.unreachable-is-bad, reader.never-raises, reader.bad-has-a-reason."""
        reader = self.make_unreachable_reader()
        if reader is None:
            pytest.skip(
                f"{type(self).__name__}.make_unreachable_reader() gives no reader of an unreachable device"
            )
        variables = self._variables()
        try:
            reader.open()
        except Exception as exc:
            _broken(
                "reader.unreachable-is-bad",
                f"open() raised {type(exc).__name__}: {exc} (collection must start; reads tell BAD)",
            )
        try:
            for attempt in (1, 2):
                batch = CollectedVariables.of(variables)
                took = self._read(reader, batch, f"an unreachable device (read {attempt})")
                if took > self.read_timeout_s:
                    _broken(
                        "reader.unreachable-is-bad",
                        f"read {attempt} took {took:.1f} s, more than read_timeout_s = "
                        f"{self.read_timeout_s} s",
                    )
                for item in batch:
                    if item.quality is not Quality.BAD:
                        _broken(
                            "reader.unreachable-is-bad",
                            f"{_describe(item.variable)} was read {item.quality.name} ({item.value!r}) "
                            "from a "
                            "device that does not answer",
                        )
                    if not item.error or not item.error.strip():
                        _broken(
                            "reader.bad-has-a-reason", f"the BAD {_describe(item.variable)} has no error text"
                        )
        finally:
            reader.close()

    def test_unreachable_device_gives_bad_samples_through_the_collector(self) -> None:
        """Rules reader.unreachable-is-bad and reader.one-sample-per-boundary through a DataCollector."""
        reader = self.make_unreachable_reader()
        if reader is None:
            pytest.skip(
                f"{type(self).__name__}.make_unreachable_reader() gives no reader of an unreachable device"
            )
        variables = self._variables()
        samples, ctx = self._collect(reader, variables, 3)
        for s in samples:
            if s.quality is not Quality.BAD or not s.error:
                _broken(
                    "reader.unreachable-is-bad",
                    f"through the collector, variable {s.variable_id} of an unreachable device got "
                    f"{s.quality.name} ({s.value!r}, error {s.error!r})",
                )
        self._check_boundaries(samples, ctx)


# =================================================================================================
# writers
# =================================================================================================
@dataclass(frozen=True)
class StoredSample:
    """One sample read back from a writer's store, as the store typed it."""

    context_id: int
    variable_id: int
    read_at: datetime  # aware UTC
    value: Any
    quality: Quality
    error: str | None


@dataclass(frozen=True)
class StoredRun:
    """One run of a context as a store recorded it (``context_started`` .. ``context_stopped``)."""

    start: datetime | None
    end: datetime | None
    metadata: Mapping[str, Any] = field(default_factory=dict)


class _ScriptedReader(DataReader):
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


class _ArrayReader(DataReader):
    """1-D NumPy arrays (the address says which; the first point of ``wave`` counts the reads)."""

    def __init__(self, reader_type: str) -> None:
        super().__init__(reader_type=reader_type, min_interval_ms=10)
        self.n = 0

    def read(self, variables: CollectedVariables) -> None:
        np: Any = importlib.import_module("numpy")
        self.n += 1
        n = self.n
        for item in variables:
            kind = item.variable.address
            if kind == "wave":
                item.value = np.concatenate([[float(n)], np.sin(np.linspace(0.0, 6.0, 999))])
            elif kind == "special":
                item.value = np.array([math.nan, -0.0, math.inf, -math.inf, 5e-324, n + 0.1])
            elif kind == "int64":
                item.value = np.array([2**63 - 1, -(2**63), n], dtype=np.int64)
            elif kind == "one":
                item.value = np.array([n], dtype=np.int64)
            elif kind == "empty":
                item.value = np.zeros(0, dtype=np.float64)
            elif kind == "bools":
                item.value = np.array([n % 2 == 0, True, False])


_ARRAY_KINDS = (
    ("wave", "float"),
    ("special", "float"),
    ("int64", "int"),
    ("one", "int"),
    ("empty", "float"),
    ("bools", "bool"),
)


def _same_array(stored: Any, delivered: Any) -> bool:
    """Equal 1-D NumPy arrays of the same dtype kind (NaN equal to NaN, -0.0 not equal to 0.0)."""
    np: Any = importlib.import_module("numpy")
    if not isinstance(stored, np.ndarray) or stored.shape != delivered.shape:
        return False
    if stored.dtype.kind != delivered.dtype.kind:
        return False
    if delivered.dtype.kind == "f":
        return bool(
            np.array_equal(stored, delivered, equal_nan=True)
            and (np.signbit(stored) == np.signbit(delivered)).all()
        )
    return bool(np.array_equal(stored, delivered))


_KINDS = (
    ("float", "float"),
    ("int", "int"),
    ("bool", "bool"),
    ("str", "str"),
    ("uncertain", "float"),
    ("bad", "int"),
)


def _value(vt: str, tick: int, vid: int) -> Any:
    if vt == "float":
        return tick + vid / 1000
    if vt == "int":
        return tick * 1000 + vid
    if vt == "bool":
        return (tick + vid) % 2 == 0
    return f"s{tick}-{vid}"


class WriterContract:
    """The checks every writer must pass. Subclass it as a pytest test class::

        class TestJsonLinesWriter(WriterContract):
            @pytest.fixture(autouse=True)
            def _store(self, tmp_path):                 # a new, empty store per test
                self.path = tmp_path / "samples.jsonl"

            def make_writer(self) -> DataWriter:        # a new writer on that store
                return JsonLinesWriter(self.path)

            def read_back(self, context_id: int) -> list[StoredSample]:
                return [StoredSample(...) for row in read_rows(self.path) if ...]

    Hooks (``make_writer`` and ``read_back`` are required):

    - :meth:`make_writer`: a new writer on the test's store, at each call (a second one on the
      same store is a reopen);
    - :meth:`read_back`: every sample stored for a context, read from the store itself;
    - :meth:`read_runs`: per context id, the runs the store recorded (None: it records none);
    - :meth:`proxy_target` and :meth:`make_proxied_writer`: for a store behind a TCP connection,
      the server's ``(host, port)`` and a writer on the same store connected through a
      :class:`FaultProxy` in front of it; they enable the fault checks (outage, and exactly-once
      for a writer whose class sets ``exactly_once = True``).

    Settings: ``typed_values`` (True: values come back with their type; False: compared as
    ``str``), ``array_values`` (True: the writer stores 1-D NumPy array values and gives them back
    as NumPy arrays; enables the arrays check), ``collect_timeout_s`` (30), ``fault_batches``
    (12: batches written under faults), ``outage_s`` (1.0). Rules: :data:`WRITER_RULES`.
    """

    typed_values: ClassVar[bool] = True
    array_values: ClassVar[bool] = False
    collect_timeout_s: ClassVar[float] = 30.0
    fault_batches: ClassVar[int] = 12
    outage_s: ClassVar[float] = 1.0

    # -- hooks -------------------------------------------------------------------------------------
    def make_writer(self) -> DataWriter:
        """A new writer on the test's store (required)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_writer() for WriterContract")

    def read_back(self, context_id: int) -> Sequence[StoredSample]:
        """Every sample stored for ``context_id``, read from the store (required)."""
        raise NotImplementedError(f"{type(self).__name__} must define read_back() for WriterContract")

    def read_runs(self) -> Mapping[int, Sequence[StoredRun]] | None:
        """Per context id, its recorded runs in start order; None if the store records none."""
        return None

    def proxy_target(self) -> tuple[str, int] | None:
        """``(host, port)`` of the server behind the store, or None (no network link)."""
        return None

    def make_proxied_writer(self, proxy: FaultProxy) -> DataWriter:
        """A new writer on the same store, connected through ``proxy`` (at ``proxy.address``)."""
        raise NotImplementedError(
            f"{type(self).__name__} gives a proxy_target() but no make_proxied_writer(proxy)"
        )

    # -- helpers -----------------------------------------------------------------------------------
    def _key(self, x: Sample | StoredSample) -> tuple[int, int, int]:
        return (x.context_id, x.variable_id, _ms(x.read_at))

    def _same(
        self, rule: str, delivered: Sequence[Sample | StoredSample], context_id: int, what: str
    ) -> None:
        """The store holds exactly ``delivered`` for ``context_id``: each once, as delivered."""
        stored = list(self.read_back(context_id))
        want: dict[tuple[int, int, int], Sample | StoredSample] = {}
        for d in delivered:
            want[self._key(d)] = d
        seen: dict[tuple[int, int, int], int] = {}
        for s in stored:
            seen[self._key(s)] = seen.get(self._key(s), 0) + 1
        twice = [k for k, n in seen.items() if n > 1]
        missing = [k for k in want if k not in seen]
        extra = [k for k in seen if k not in want]
        if twice or missing or extra:
            _broken(
                rule,
                f"{what}: context {context_id} has {len(stored)} samples stored for {len(want)} delivered: "
                f"{len(missing)} missing (e.g. {self._show(missing)}), {len(twice)} stored more than once "
                f"(e.g. {self._show(twice)}), {len(extra)} never delivered (e.g. {self._show(extra)})",
            )
        for s in stored:
            d = want[self._key(s)]
            if s.read_at.tzinfo is None or s.read_at.utcoffset() != timedelta(0):
                _broken(rule, f"{what}: {s} has read_at {s.read_at!r}, not an aware UTC time")
            if (s.quality, s.error) != (d.quality, d.error):
                _broken(rule, f"{what}: stored quality/error {(s.quality, s.error)} of {d}")
            if self.typed_values:
                if not (s.value == d.value and type(s.value) is type(d.value)) and not (
                    isinstance(d.value, float) and isinstance(s.value, float) and math.isnan(d.value)
                ):
                    _broken(rule, f"{what}: stored value {s.value!r} ({type(s.value).__name__}) of {d}")
            elif d.value is not None and str(s.value) != str(d.value):
                _broken(rule, f"{what}: stored value {s.value!r} of {d}")

    @staticmethod
    def _show(keys: list[tuple[int, int, int]]) -> str:
        return (
            ", ".join(f"variable {v} at {_EPOCH + timedelta(milliseconds=ms)}" for _c, v, ms in keys[:3])
            or "-"
        )

    def _run(self, contexts: list[DataCollectionContext], each: int) -> MemoryWriter:
        produced = MemoryWriter(name="delivered")
        writer = self.make_writer()
        readers = [_ScriptedReader("a"), _ScriptedReader("b")]
        collector = DataCollector(LOG, readers, [writer, produced], drain_timeout_s=self.collect_timeout_s)
        try:
            for ctx in contexts:
                collector.start(ctx)
            for ctx in contexts:
                produced.wait_for_samples(each, self.collect_timeout_s, context_id=ctx.id)
        finally:
            _close_collector(collector)
        return produced

    @staticmethod
    def _variables(reader_type: str, base: int) -> list[Variable]:
        return [Variable(base + i, addr, vt, reader_type, 50) for i, (addr, vt) in enumerate(_KINDS)]

    def _runs_of(self, context_id: int) -> list[StoredRun] | None:
        runs = self.read_runs()
        return None if runs is None else list(runs.get(context_id, []))

    @staticmethod
    def _start(ctx: DataCollectionContext, at: datetime) -> None:
        ctx._start_date = at  # what the collector sets before context_started()

    @staticmethod
    def _stop(ctx: DataCollectionContext, at: datetime) -> None:
        ctx._end_date = at

    # -- the checks --------------------------------------------------------------------------------
    def test_round_trip_of_every_type_and_quality(self) -> None:
        """Rules writer.round-trip and writer.runs."""
        ctx = DataCollectionContext(
            11, self._variables("a", 1), min_interval_ms=10, metadata={"batch": "B-7", "n": 3}
        )
        produced = self._run([ctx], 30)
        self._same("writer.round-trip", produced.of(11), 11, "one context through a DataCollector")
        runs = self._runs_of(11)
        if runs is not None:
            if len(runs) != 1:
                _broken("writer.runs", f"context 11 ran once; the store has {len(runs)} runs: {runs}")
            (run,) = runs
            if dict(run.metadata) != {"batch": "B-7", "n": 3}:
                _broken(
                    "writer.runs",
                    f"context 11's metadata {{'batch': 'B-7', 'n': 3}} is stored as {run.metadata}",
                )
            if (run.start, run.end) != (ctx.start_date, ctx.end_date):
                _broken(
                    "writer.runs",
                    f"context 11 ran {ctx.start_date} .. {ctx.end_date}; "
                    f"the store says {run.start} .. {run.end}",
                )

    def test_round_trip_of_array_values(self) -> None:
        """Rule writer.arrays (for a writer case with ``array_values = True``)."""
        if not self.array_values:
            pytest.skip(f"{type(self).__name__} does not set array_values")
        variables = [Variable(1 + i, addr, vt, "arrays", 50) for i, (addr, vt) in enumerate(_ARRAY_KINDS)]
        ctx = DataCollectionContext(13, variables, min_interval_ms=10)
        produced = MemoryWriter(name="delivered")
        collector = DataCollector(
            LOG,
            [_ArrayReader("arrays")],
            [self.make_writer(), produced],
            drain_timeout_s=self.collect_timeout_s,
        )
        try:
            collector.start(ctx)
            produced.wait_for_samples(5 * len(variables), self.collect_timeout_s, context_id=13)
        finally:
            _close_collector(collector)
        delivered = {self._key(d): d for d in produced.of(13)}
        stored = list(self.read_back(13))
        if sorted(self._key(s) for s in stored) != sorted(delivered):
            _broken(
                "writer.arrays",
                f"context 13: {len(stored)} samples stored for {len(delivered)} delivered (each once)",
            )
        for s in stored:
            d = delivered[self._key(s)]
            if s.quality != d.quality or not _same_array(s.value, d.value):
                _broken(
                    "writer.arrays",
                    f"variable {s.variable_id} ({variables[s.variable_id - 1].address}): stored {s.value!r} "
                    f"({s.quality}, {s.error}) for {d.value!r}",
                )

    def test_two_contexts_two_threads_one_writer(self) -> None:
        """Rule writer.shared."""
        c1 = DataCollectionContext(
            21, self._variables("a", 1) + self._variables("b", 100), min_interval_ms=10
        )
        c2 = DataCollectionContext(22, self._variables("b", 100)[:3], min_interval_ms=10)
        produced = self._run([c1, c2], 60)
        for cid in (21, 22):
            self._same("writer.shared", produced.of(cid), cid, "two contexts from two reader threads")

    def test_reopen_appends_never_truncates(self) -> None:
        """Rule writer.append."""
        variables = self._variables("a", 1)[:2]
        first = self._run([DataCollectionContext(31, variables, min_interval_ms=10)], 10).of(31)
        stored = len(self.read_back(31))
        if stored != len(first):
            _broken(
                "writer.round-trip", f"the first writer stored {stored} of {len(first)} samples of context 31"
            )
        second = self._run([DataCollectionContext(31, variables, min_interval_ms=10)], 10).of(31)
        now = len(self.read_back(31))
        if now < stored + len(second):
            _broken(
                "writer.append",
                f"context 31 had {stored} samples stored; a second writer on the same store wrote "
                f"{len(second)} more and the store now holds {now}, not {stored + len(second)}: reopening "
                "truncated or overwrote what was stored",
            )
        self._same("writer.append", [*first, *second], 31, "two writers one after the other on one store")
        runs = self._runs_of(31)
        if runs is not None and len(runs) != 2:
            _broken("writer.append", f"context 31 ran twice; the store keeps {len(runs)} runs: {runs}")

    def test_context_hooks_in_order_for_interleaved_contexts(self) -> None:
        """Rule writer.hooks: the calls the collector makes, for two contexts at once."""
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
        va = [Variable(1, "a", "float", "r"), Variable(2, "b", "int", "r")]
        vb = [Variable(3, "c", "str", "r"), Variable(4, "d", "bool", "r")]
        a = DataCollectionContext(41, va, metadata={"ctx": "A"})
        b = DataCollectionContext(42, vb, metadata={"ctx": "B"})

        def batch(variables: list[Variable], tick: int) -> CollectedVariables:
            at = t0 + timedelta(milliseconds=100 * tick)
            return CollectedVariables(
                CollectedVariable(v, _value(v.value_type, tick, v.id), at) for v in variables
            )

        sent: dict[int, list[CollectedVariable]] = {41: [], 42: []}
        writer = self.make_writer()

        def write(ctx: DataCollectionContext, variables: list[Variable], tick: int) -> None:
            part = batch(variables, tick)
            writer.write(ctx, part)
            sent[ctx.id] += part

        with writer.lock:
            writer.open()
            try:
                self._start(a, t0)
                writer.context_started(a)
                write(a, va, 1)
                write(a, va, 2)
                self._start(b, t0 + timedelta(milliseconds=250))
                writer.context_started(b)
                write(b, vb, 3)
                write(a, va, 3)
                self._stop(a, t0 + timedelta(milliseconds=350))
                writer.context_stopped(a)
                write(b, vb, 4)
                write(b, vb, 5)
                self._stop(b, t0 + timedelta(milliseconds=550))
                writer.context_stopped(b)
            finally:
                writer.close()
        for ctx in (a, b):
            delivered = [
                Sample(ctx.id, i.variable.id, i.read_at, i.value, i.quality, i.error)
                for i in sent[ctx.id]
                if i.read_at is not None
            ]
            self._same(
                "writer.hooks", delivered, ctx.id, "context_started/write/context_stopped of two contexts"
            )
            runs = self._runs_of(ctx.id)
            if runs is not None:
                if [(r.start, r.end) for r in runs] != [(ctx.start_date, ctx.end_date)]:
                    _broken(
                        "writer.hooks",
                        f"context {ctx.id} ran {ctx.start_date} .. {ctx.end_date}; the store has "
                        f"{[(str(r.start), str(r.end)) for r in runs]}",
                    )
                if dict(runs[0].metadata) != dict(ctx.metadata):
                    _broken("writer.hooks", f"context {ctx.id}'s metadata is stored as {runs[0].metadata}")

    # -- faults ------------------------------------------------------------------------------------
    def _proxied(self) -> tuple[FaultProxy, DataWriter]:
        target = self.proxy_target()
        if target is None:
            pytest.skip(
                f"{type(self).__name__}.proxy_target() is None: the store has no network link to break"
            )
        proxy = FaultProxy(*target)
        try:
            return proxy, self.make_proxied_writer(proxy)
        except BaseException:
            proxy.close()
            raise

    def _call_retrying(self, writer: DataWriter, call: Callable[[], None], what: str, rule: str) -> int:
        """Call like the collector: retry transient errors with capped backoff; the attempts it took."""
        deadline = time.monotonic() + 60
        delay = 0.05
        for attempt in range(1, 10_000):
            try:
                with writer.lock:
                    call()
                return attempt
            except Exception as exc:
                if not writer.is_transient(exc):
                    _broken(
                        rule,
                        f"{what} raised {type(exc).__name__}: {exc} under a network fault, "
                        "and is_transient() "
                        "calls it permanent: the collector would count the batch as lost",
                    )
                if time.monotonic() > deadline:
                    _broken(rule, f"{what} still failed after 60 s of retries: {type(exc).__name__}: {exc}")
                time.sleep(delay)  # the collector's backoff between retries
                delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")

    @staticmethod
    def _fault_batch(variables: list[Variable], t0: datetime, *ticks: int) -> CollectedVariables:
        return CollectedVariables(
            CollectedVariable(v, _value(v.value_type, tick, v.id), t0 + timedelta(milliseconds=100 * tick))
            for tick in ticks
            for v in variables
        )

    @staticmethod
    def _samples_of(ctx: DataCollectionContext, batches: list[CollectedVariables]) -> list[Sample]:
        return [
            Sample(ctx.id, i.variable.id, i.read_at, i.value, i.quality, i.error)
            for b in batches
            for i in b
            if i.read_at is not None
        ]

    def test_an_outage_makes_write_raise_a_transient_error(self) -> None:
        """Rule writer.outage-is-transient (needs proxy_target)."""
        proxy, writer = self._proxied()
        variables = [Variable(i, f"v{i}", vt, "r") for i, vt in enumerate(("float", "int", "str", "bool"), 1)]
        ctx = DataCollectionContext(51, variables)
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
        self._start(ctx, t0)
        batches = [self._fault_batch(variables, t0, tick) for tick in range(4)]
        rule = "writer.outage-is-transient"
        try:
            self._call_retrying(writer, writer.open, "open()", rule)
            self._call_retrying(writer, lambda: writer.context_started(ctx), "context_started()", rule)
            self._call_retrying(writer, lambda: writer.write(ctx, batches[0]), "write()", rule)
            proxy.cut()
            returned = False
            try:
                with writer.lock:
                    writer.write(ctx, batches[1])
                returned = True  # fine if the batch is stored by the end (a writer with a local buffer)
            except Exception as exc:
                if not writer.is_transient(exc):
                    _broken(
                        rule,
                        f"write() while the store is unreachable raised {type(exc).__name__}: {exc}, which "
                        "is_transient() calls permanent: the collector would count the batch as lost",
                    )
            proxy.restore()
            for b in batches[2 if returned else 1 :]:
                self._call_retrying(writer, partial(writer.write, ctx, b), "write() after the outage", rule)
            self._call_retrying(writer, lambda: writer.context_stopped(ctx), "context_stopped()", rule)
        finally:
            try:
                with writer.lock:
                    writer.close()
            finally:
                proxy.close()
        what = "writes before, during and after an outage"
        if returned:
            what += " (write() returned during the outage without an error)"
        self._same(rule, self._samples_of(ctx, batches), ctx.id, what)

    def test_exactly_once_under_network_faults(self) -> None:
        """Rule writer.exactly-once (needs proxy_target and a writer class with exactly_once = True)."""
        probe = self.make_writer()
        if not getattr(probe, "exactly_once", False):
            pytest.skip(f"{type(probe).__name__} does not claim exactly_once")
        proxy, writer = self._proxied()
        rng = random.Random(20240301)
        variables = [Variable(i, f"v{i}", ("float", "int", "str", "bool")[i % 4], "r") for i in range(1, 41)]
        ctx = DataCollectionContext(61, variables)
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60)
        self._start(ctx, t0)
        rule = "writer.exactly-once"
        batches: list[CollectedVariables] = []
        armed = 0
        try:
            self._call_retrying(writer, writer.open, "open()", rule)
            self._call_retrying(writer, lambda: writer.context_started(ctx), "context_started()", rule)
            for b in range(self.fault_batches):
                fault = ("before", "after", "before-later", "bytes-up", "bytes-down", "none")[b % 6]
                if fault == "before":
                    proxy.reset_before_reply()
                elif fault == "after":
                    proxy.reset_after_reply()
                elif fault == "before-later":
                    proxy.reset_before_reply(skip=rng.randint(1, 3))
                elif fault == "bytes-up":
                    proxy.reset_after_bytes(rng.randint(1, 2000), "to_server")
                elif fault == "bytes-down":
                    proxy.reset_after_bytes(rng.randint(1, 100), "to_client")
                armed += fault != "none"
                batch = self._fault_batch(variables, t0, 3 * b, 3 * b + 1)
                batches.append(batch)
                self._call_retrying(writer, partial(writer.write, ctx, batch), "write()", rule)
            proxy.disarm()
            fired = proxy.stats().faults_fired
            # an outage, then a stall, each outlasting a retry step
            proxy.cut()
            timer = threading.Timer(self.outage_s, proxy.restore)
            timer.start()
            try:
                batch = self._fault_batch(variables, t0, 3 * self.fault_batches)
                batches.append(batch)
                self._call_retrying(
                    writer, lambda: writer.write(ctx, batch), "write() during an outage", rule
                )
            finally:
                timer.cancel()
                proxy.restore()
            proxy.stall(self.outage_s)
            last = self._fault_batch(variables, t0, 3 * self.fault_batches + 1)
            batches.append(last)
            self._call_retrying(writer, lambda: writer.write(ctx, last), "write() through a stall", rule)
            self._call_retrying(writer, lambda: writer.context_stopped(ctx), "context_stopped()", rule)
        finally:
            try:
                with writer.lock:
                    writer.close()
            finally:
                proxy.close()
        self._same(
            rule, self._samples_of(ctx, batches), ctx.id, f"{len(batches)} batches written under faults"
        )
        if fired < armed // 2:
            raise AssertionError(
                f"only {fired} of {armed} armed faults hit the writer's connection: does "
                f"{type(self).__name__}.make_proxied_writer() connect through proxy.address?"
            )
