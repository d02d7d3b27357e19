"""Parameter scans: write a whole configuration through writable readers, settle, capture, repeat.

Serves measurement campaigns (characterising a device, a process window, a sensor) that today
are a script of nested loops around "set the setpoints, wait, record". A :class:`Scan` has a
*base configuration* (a value for every setpoint variable), *parameters* (setpoints with a list
or range of values) and the measured variables (a :class:`DataCollectionContext`). Its points
are the Cartesian product of the parameters' values, in a fixed order: the first parameter is
the outermost loop (it changes slowest), the last the innermost (it changes at every point), as
:func:`itertools.product` and nested ``for`` loops give them; parameters named together in
``zip`` advance together as one dimension (standing where the first of them stands).

For every point, in order:

1. **write the whole configuration**: every setpoint (not only those that changed), in the
   order the setpoints were given, through the reader that owns its variable
   (:meth:`DataReader.write`); then each setpoint with ``read_back`` is read back and compared
   (numbers within the setpoint's ``tolerance``, else within a relative 1e-6: a float32
   register holds 0.1 as 0.10000000149). A refused write, a failed read or a mismatch fails the
   point, with the setpoint, the value and the device's answer in the error;
2. **settle**: wait ``time_s``, then, when a settle variable is given, read it until it is
   within ``tolerance`` of its target (a number, or the value of a setpoint at this point) for
   ``hold_s``, failing the point after ``timeout_s``;
3. **capture** the measured variables with the collector's capture machinery (one run of the
   scan's context per point): for ``duration_s`` seconds, or until every measured variable has
   ``samples`` samples (the capture stops right after the read that completes them). The run's
   deduced metadata holds, under ``scan``, the scan's name, the point's number and its whole
   configuration, the writes made (with the values read back) and the settle result; under
   ``scan_result``, added when the run stops, the capture's ``status`` (``completed``,
   ``failed`` with ``error``, ``interrupted``) and the samples per column. A point that fails
   before its capture still gets a run (started and stopped at once) so that every point's
   configuration and status are in the store. (A run that the collector's spool replays after
   a crash has the ``scan`` entry of its start and, if it had stopped, its ``scan_result``; a
   run cut short by the crash has none and ``ended: abnormal...``.);
4. the point is **complete** once its run is stored (the capture returns when the writers
   stored everything read, flushed; the scan checks that no writer lost, dropped or still
   holds a sample) and every writer that keeps a scan table
   (:meth:`DataWriter.write_scan_rows`: the HDF5 and SQL writers) stored its merged rows:
   one row per read with ``point``, one column per setpoint (the point's configuration),
   ``time_us`` (the read's boundary: its time rounded down to the variable's interval, so that
   the reads of one boundary by several readers share a row) and a value and
   ``<name>_quality`` column per measured variable (see :class:`ScanRows`). In ``samples``
   mode the merged rows are the first ``samples`` samples of each measured variable; a sample
   read after them, before the stop took effect, stays in the point's run
   (``samples_after_limit`` in its metadata). Only then the point is written to the
   journal as complete.

A point that fails (a write refused, a mismatch, no settling, BAD samples unless
``allow_bad_samples``, data not stored) is done again up to ``retries`` times, then recorded as
failed; the scan goes on with the next point (``on_error="continue"``) or stops (``"stop"``).

Resuming: with a ``journal`` (a JSON-lines file, each line fsync-ed), a scan that was
interrupted (Ctrl-C, a crash, kill -9, a device fault) is run again with ``resume=True`` and
skips the points the journal records as complete; the others (failed, interrupted, never
reached) are done again. A journal belongs to one scan definition (its points, setpoints,
measured variables and capture): another definition is refused, and so is a journal that
holds points when ``resume`` is not given (use a new journal or remove it to start over).

Example::

    from data_collector import DataCollectionContext, DataCollector, Scan, Setpoint, Settle, Variable

    measured = DataCollectionContext(
        100, [Variable(1, "ir:0:float32", "float", "plc")], default_interval_ms=200
    )
    scan = Scan(
        "sweep",
        measured,
        [Setpoint("temp_sp", Variable(10, "hr:400", "int", "plc"), base=20),
         Setpoint("flow_sp", Variable(11, "hr:401", "int", "plc"), base=0)],
        {"temp_sp": [20, 30, 40], "flow_sp": Scan.range(0, 30, step=10)},
        samples=5,
        settle=Settle(time_s=1.0),
        journal="sweep.journal.jsonl",
    )
    with DataCollector(log, [plc], [Hdf5DataWriter("sweep.h5")]) as collector:
        result = scan.run(collector, resume=True)
    frame = pandas.read_hdf("sweep.h5", "/scans/sweep")   # 12 points x 5 rows
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import threading
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from ._collector import DataCollector
from ._errors import ConfigurationError, DataCollectionError
from ._model import (
    MAX_DURATION_S,
    MAX_ID,
    MIN_ID,
    CollectedVariables,
    DataCollectionContext,
    Quality,
    Variable,
    json_metadata,
)
from ._scan_rows import COLUMN_NAME, ScanColumn, ScanRows

try:
    import fcntl
except ImportError:  # Windows: journals are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "JOURNAL_FORMAT",
    "MAX_POINTS",
    "Scan",
    "ScanPoint",
    "ScanProgress",
    "ScanResult",
    "Setpoint",
    "Settle",
]

_log = logging.getLogger("data_collector.scan")

#: The first line of every scan journal names its format.
JOURNAL_FORMAT = "data-collector-scan-journal"
JOURNAL_VERSION = 1
#: The most points one scan may have.
MAX_POINTS = 1_000_000
#: The value types a setpoint may have (what a scan table column holds).
SETPOINT_TYPES = ("float", "int", "bool", "str")
_RESERVED = ("point", "time_us")
_STR_WIDTHS = (64, 256, 1024, 4096, 16384, 65536)
_MEASURED_STR_WIDTH = 256
_QUALITY_WIDTH = 16
_NAT = -(2**63)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

OnError = Literal["continue", "stop"]
Phase = Literal[
    "writing", "settling", "capturing", "retrying", "completed", "failed", "skipped", "interrupted"
]


# -- values -----------------------------------------------------------------------------------------
def _typed(value: Any, value_type: str, where: str) -> Any:
    """``value`` as a setpoint of ``value_type`` holds it, else :class:`ConfigurationError`."""
    if value_type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"{where}: {value!r} is not a number (the setpoint is a float)")
        number = float(value)
        if not math.isfinite(number):
            raise ConfigurationError(f"{where}: {value!r} is not a finite number")
        return number
    if value_type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"{where}: {value!r} is not an integer (the setpoint is an int)")
        if not MIN_ID <= value <= MAX_ID:
            raise ConfigurationError(f"{where}: {value!r} does not fit a signed 64-bit integer")
        return value
    if value_type == "bool":
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where}: {value!r} is not true or false (the setpoint is a bool)")
        return value
    if not isinstance(value, str):
        raise ConfigurationError(f"{where}: {value!r} is not a string (the setpoint is a str)")
    return value


def _same(written: Any, read: Any, value_type: str, tolerance: float | None) -> bool:
    """Whether the value read back is the value written (numbers within the tolerance)."""
    if value_type in ("float", "int") and isinstance(read, int | float) and not isinstance(read, bool):
        if tolerance is not None:
            return abs(float(read) - float(written)) <= tolerance
        if value_type == "int" and isinstance(read, int):
            return bool(read == written)
        return math.isclose(float(read), float(written), rel_tol=1e-6, abs_tol=1e-12)
    return bool(read == written) and type(read) is type(written)


def _width(texts: Iterable[str]) -> int:
    longest = max((len(t.encode("utf-8")) for t in texts), default=0)
    for w in _STR_WIDTHS:
        if longest <= w:
            return w
    raise ConfigurationError(f"a setpoint text of {longest} bytes is longer than a scan table holds (65536)")


def _kind(value_type: str) -> Literal["int", "float", "bool", "str"]:
    return value_type if value_type in ("int", "float", "bool") else "str"  # type: ignore[return-value]


def _time_us(at: datetime | None) -> int:
    if at is None:
        return _NAT
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    delta = at - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _column_value(value: Any, kind: str) -> tuple[Any, bool]:
    """``value`` as a merged-table cell of ``kind``, and whether it fitted."""
    if value is None:
        return {"float": math.nan, "int": 0, "bool": False, "str": ""}[kind], True
    try:
        if kind == "float":
            return float(value), True
        if kind == "int":
            number = int(value)
            return (number, True) if MIN_ID <= number <= MAX_ID else (0, False)
        if kind == "bool":
            return bool(value), True
    except (TypeError, ValueError, OverflowError):
        return {"float": math.nan, "int": 0, "bool": False}[kind], False
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex(), True
    return str(value), True


def _short(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _err(exc: BaseException) -> str:
    return _short(str(exc) if isinstance(exc, DataCollectionError) else f"{type(exc).__name__}: {exc}")


# -- the definition -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Setpoint:
    """A setpoint of a scan: its column ``name``, its ``variable`` (written through the reader
    of ``variable.reader_type``) and its ``base`` value (written at every point where no
    parameter sets it). ``read_back`` (default True): read it after writing and compare;
    ``tolerance``: the largest difference a number read back may have (default: a relative
    1e-6)."""

    name: str
    variable: Variable
    base: Any
    read_back: bool = True
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not COLUMN_NAME.fullmatch(self.name) or self.name in _RESERVED:
            raise ConfigurationError(
                f"Setpoint name must be letters, digits and _ (not starting with a digit, at most 60, "
                f"not {' or '.join(_RESERVED)}): it names a column; got {self.name!r}"
            )
        where = f"setpoint {self.name!r}"
        if not isinstance(self.variable, Variable):
            raise ConfigurationError(f"{where}: variable must be a Variable, got {self.variable!r}")
        if self.variable.value_type not in SETPOINT_TYPES:
            raise ConfigurationError(
                f"{where}: value_type must be one of {', '.join(SETPOINT_TYPES)}, got "
                f"{self.variable.value_type!r}"
            )
        object.__setattr__(self, "base", _typed(self.base, self.variable.value_type, f"{where}: base"))
        if not isinstance(self.read_back, bool):
            raise ConfigurationError(f"{where}: read_back must be True or False, got {self.read_back!r}")
        if self.tolerance is not None and (
            isinstance(self.tolerance, bool)
            or not isinstance(self.tolerance, int | float)
            or not math.isfinite(self.tolerance)
            or self.tolerance < 0
        ):
            raise ConfigurationError(f"{where}: tolerance must be a number >= 0, got {self.tolerance!r}")


@dataclass(frozen=True, slots=True)
class Settle:
    """How a point settles after its configuration was written, before its capture.

    Wait ``time_s`` seconds; then, when ``variable`` names a setpoint or a measured column,
    read it (every ``poll_s`` seconds) until it is within ``tolerance`` of ``target`` (a number,
    or the name of a setpoint: its value at the point; default: the variable's own setpoint
    value when ``variable`` is a setpoint) and stays there for ``hold_s``; after ``timeout_s``
    without that, the point fails.
    """

    time_s: float = 0.0
    variable: str | None = None
    target: float | str | None = None
    tolerance: float = 0.0
    timeout_s: float = 60.0
    hold_s: float = 0.0
    poll_s: float = 0.1

    def __post_init__(self) -> None:
        for name, low, positive in (
            ("time_s", 0.0, False),
            ("tolerance", 0.0, False),
            ("timeout_s", 0.0, True),
            ("hold_s", 0.0, False),
            ("poll_s", 0.0, True),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < low
                or (positive and value == 0)
                or value > MAX_DURATION_S
            ):
                bound = "> 0" if positive else ">= 0"
                raise ConfigurationError(f"Settle: {name} must be a number {bound}, got {value!r}")
        if self.variable is not None and (not isinstance(self.variable, str) or not self.variable):
            raise ConfigurationError(
                f"Settle: variable must be a setpoint or column name, got {self.variable!r}"
            )
        if self.target is not None and (
            isinstance(self.target, bool)
            or not isinstance(self.target, int | float | str)
            or (isinstance(self.target, float) and not math.isfinite(self.target))
        ):
            raise ConfigurationError(
                f"Settle: target must be a number or a setpoint name, got {self.target!r}"
            )
        if self.variable is None and self.target is not None:
            raise ConfigurationError("Settle: a target needs a variable to compare with it")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"time_s": self.time_s}
        if self.variable is not None:
            out.update(
                variable=self.variable,
                target=self.target,
                tolerance=self.tolerance,
                timeout_s=self.timeout_s,
                hold_s=self.hold_s,
            )
        return out


@dataclass(frozen=True, slots=True)
class ScanPoint:
    """One point of a scan: its ``index`` (0-based, in scan order), its whole ``configuration``
    (every setpoint's value) and the values of the scanned ``parameters`` at it."""

    index: int
    configuration: Mapping[str, Any]
    parameters: Mapping[str, Any]

    def label(self) -> str:
        """``temp_sp=20 flow_sp=0.5`` (the scanned parameters)."""
        return " ".join(f"{k}={_show(v)}" for k, v in self.parameters.items())


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


@dataclass(frozen=True, slots=True)
class ScanProgress:
    """Where a running scan is, handed to ``Scan.run(progress=...)`` at every step.

    ``phase`` of ``point``: ``writing``, ``settling``, ``capturing``, then ``completed``,
    ``failed`` (``error`` says why), ``skipped`` (complete in the journal) or ``interrupted``;
    ``retrying`` (with the ``error``) when an attempt failed and ``retries`` allow another.
    ``done`` counts complete points (including those skipped), ``failed`` the points failed in
    this run; ``eta_s`` is the time the points left may take (the mean of this run's points so
    far; ``None`` before the first).
    """

    point: ScanPoint
    phase: Phase
    total: int
    done: int
    failed: int
    elapsed_s: float
    eta_s: float | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What :meth:`Scan.run` did: the points ``completed`` in this run, those ``skipped``
    (complete in the journal already), ``failed`` (index -> error), whether it was
    ``interrupted`` (the ``stop`` event) or ``stopped_on_error`` (``on_error="stop"``),
    ``rows`` (index -> merged rows of each point completed in this run) and ``started`` (when
    the scan began: its journal's first run)."""

    total: int
    completed: tuple[int, ...]
    skipped: tuple[int, ...]
    failed: Mapping[int, str]
    interrupted: bool
    stopped_on_error: bool
    rows: Mapping[int, int]
    started: datetime

    @property
    def complete(self) -> bool:
        """Every point of the scan is complete (now or in an earlier run)."""
        return len(self.completed) + len(self.skipped) == self.total


class _PointFailed(Exception):
    """Internal: the point failed (the message says why)."""


class _Interrupted(Exception):
    """Internal: the stop event was set while a point ran."""


# -- the scan ----------------------------------------------------------------------------------------
class Scan:
    """A parameter scan; see the module documentation.

    ``Scan(name, context, setpoints, parameters, *, zip=(), samples=None, duration_s=None,
    settle=None, on_error="continue", journal=None, columns=None, allow_bad_samples=False,
    capture_timeout_s=None, store_timeout_s=60)``:

    - ``name``: letters, digits and ``_`` (it names the scan table);
    - ``context``: the measured variables, their intervals and the user metadata of every
      point's run; its id is the id of those runs;
    - ``setpoints``: every setpoint (:class:`Setpoint`, with its base value), in writing order;
    - ``parameters``: setpoint name -> the values it takes, in scan order (first outermost);
      :meth:`range` makes evenly spaced values;
    - ``zip``: groups of parameter names that advance together (same number of values);
    - ``samples`` or ``duration_s`` (one of them): how long each point is captured;
    - ``columns``: measured variable id -> its column name (default ``var_<id>``,
      ``var_m<id>`` for a negative id);
    - ``capture_timeout_s``: in ``samples`` mode, when the samples have not come after this
      long the point fails (default: ten times the samples' span plus 10 s);
    - ``store_timeout_s``: how long a point waits for its data to be stored;
    - ``retries``: a failed point is done again (the whole configuration written again) up to
      this many times before it counts as failed (every attempt is in the journal and has its
      run); 0 by default.

    Bad arguments raise :class:`ConfigurationError` naming them.
    """

    def __init__(
        self,
        name: str,
        context: DataCollectionContext,
        setpoints: Sequence[Setpoint],
        parameters: Mapping[str, Iterable[Any]],
        *,
        zip: Sequence[Sequence[str]] = (),
        samples: int | None = None,
        duration_s: float | None = None,
        settle: Settle | None = None,
        on_error: OnError = "continue",
        journal: str | os.PathLike[str] | None = None,
        columns: Mapping[int, str] | None = None,
        allow_bad_samples: bool = False,
        capture_timeout_s: float | None = None,
        store_timeout_s: float = 60.0,
        retries: int = 0,
    ) -> None:
        if not isinstance(name, str) or not COLUMN_NAME.fullmatch(name):
            raise ConfigurationError(
                f"Scan name must be letters, digits and _ (not starting with a digit, at most 60): it "
                f"names the scan table; got {name!r}"
            )
        where = f"scan {name!r}"
        self.name = name
        if not isinstance(context, DataCollectionContext):
            raise ConfigurationError(f"{where}: context must be a DataCollectionContext, got {context!r}")
        if not context.variables:
            raise ConfigurationError(f"{where}: the context has no variables to measure")
        self.context = context
        sps = list(setpoints) if isinstance(setpoints, Iterable) else None
        if not sps:
            raise ConfigurationError(f"{where}: setpoints must be a non-empty sequence of Setpoint")
        for sp in sps:
            if not isinstance(sp, Setpoint):
                raise ConfigurationError(f"{where}: setpoints must hold Setpoint objects, got {sp!r}")
        self.setpoints: tuple[Setpoint, ...] = tuple(sps)
        by_name: dict[str, Setpoint] = {}
        by_id: dict[int, Setpoint] = {}
        for sp in self.setpoints:
            if sp.name in by_name:
                raise ConfigurationError(f"{where}: two setpoints are named {sp.name!r}")
            other = by_id.get(sp.variable.id)
            if other is not None:
                raise ConfigurationError(
                    f"{where}: setpoints {other.name!r} and {sp.name!r} write the same variable "
                    f"{sp.variable.id}"
                )
            by_name[sp.name] = sp
            by_id[sp.variable.id] = sp
        self._by_name = by_name
        for v in context.variables:
            same = by_id.get(v.id)
            if same is not None and not same.variable.same_definition(v):
                raise ConfigurationError(
                    f"{where}: variable {v.id} is measured as {v.address!r} "
                    f"({v.value_type}, {v.reader_type}) "
                    f"but setpoint {same.name!r} defines it as {same.variable.address!r} "
                    f"({same.variable.value_type}, {same.variable.reader_type})"
                )
        self.parameters = self._parameters(parameters, where)
        self.zip = self._zip(zip, where)
        if (samples is None) == (duration_s is None):
            raise ConfigurationError(
                f"{where}: give exactly one of samples and duration_s (how long a point is captured)"
            )
        if samples is not None and (
            isinstance(samples, bool) or not isinstance(samples, int) or not 0 < samples <= 10**9
        ):
            raise ConfigurationError(f"{where}: samples must be an int from 1 to 10**9, got {samples!r}")
        if duration_s is not None and (
            isinstance(duration_s, bool)
            or not isinstance(duration_s, int | float)
            or not math.isfinite(duration_s)
            or not 0 < duration_s <= MAX_DURATION_S / 2
        ):
            raise ConfigurationError(
                f"{where}: duration_s must be a number of seconds > 0, got {duration_s!r}"
            )
        self.samples = samples
        self.duration_s = float(duration_s) if duration_s is not None else None
        if settle is not None and not isinstance(settle, Settle):
            raise ConfigurationError(f"{where}: settle must be a Settle, got {settle!r}")
        self.settle = settle or Settle()
        if on_error not in ("continue", "stop"):
            raise ConfigurationError(f'{where}: on_error must be "continue" or "stop", got {on_error!r}')
        self.on_error: OnError = on_error
        self.journal = Path(journal) if journal is not None else None
        if not isinstance(allow_bad_samples, bool):
            raise ConfigurationError(
                f"{where}: allow_bad_samples must be True or False, got {allow_bad_samples!r}"
            )
        self.allow_bad_samples = allow_bad_samples
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
            raise ConfigurationError(f"{where}: retries must be an int from 0 to 100, got {retries!r}")
        self.retries = retries
        for label, value in (("capture_timeout_s", capture_timeout_s), ("store_timeout_s", store_timeout_s)):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 < value <= MAX_DURATION_S / 2
            ):
                raise ConfigurationError(f"{where}: {label} must be a number of seconds > 0, got {value!r}")
        span_s = max(context.interval_of(v) for v in context.variables) / 1000 * (samples or 0)
        self.capture_timeout_s = (
            float(capture_timeout_s) if capture_timeout_s is not None else 10 * span_s + 10
        )
        self.store_timeout_s = float(store_timeout_s)
        self.columns = self._columns(columns, where)
        self._check_settle(where)
        self.points: tuple[ScanPoint, ...] = self._points(where)
        self.table_columns: tuple[ScanColumn, ...] = self._table_columns()
        self.fingerprint = self._fingerprint()

    # -- building ----------------------------------------------------------------------------------
    def _parameters(self, parameters: Mapping[str, Iterable[Any]], where: str) -> dict[str, tuple[Any, ...]]:
        if not isinstance(parameters, Mapping) or not parameters:
            raise ConfigurationError(
                f"{where}: parameters must be a non-empty mapping of setpoint name -> values"
            )
        out: dict[str, tuple[Any, ...]] = {}
        for pname, values in parameters.items():
            sp = self._by_name.get(pname) if isinstance(pname, str) else None
            if sp is None:
                raise ConfigurationError(
                    f"{where}: parameters[{pname!r}] is not a setpoint "
                    f"(setpoints: {', '.join(self._by_name)})"
                )
            if isinstance(values, str | bytes) or not isinstance(values, Iterable):
                raise ConfigurationError(
                    f"{where}: parameters[{pname!r}] must be a list of values, got {values!r}"
                )
            items = list(itertools.islice(values, MAX_POINTS + 1))
            if not items:
                raise ConfigurationError(f"{where}: parameters[{pname!r}] has no values")
            if len(items) > MAX_POINTS:
                raise ConfigurationError(f"{where}: parameters[{pname!r}] has more than {MAX_POINTS} values")
            typed = tuple(
                _typed(v, sp.variable.value_type, f"{where}: parameters[{pname!r}][{i}]")
                for i, v in enumerate(items)
            )
            out[pname] = typed
        return out

    def _zip(self, groups: Sequence[Sequence[str]], where: str) -> tuple[tuple[str, ...], ...]:
        if isinstance(groups, str) or not isinstance(groups, Sequence):
            raise ConfigurationError(
                f"{where}: zip must be a list of lists of parameter names, got {groups!r}"
            )
        seen: dict[str, int] = {}
        out = []
        for i, group in enumerate(groups):
            if isinstance(group, str) or not isinstance(group, Sequence) or len(group) < 2:
                raise ConfigurationError(
                    f"{where}: zip[{i}] must list at least two parameter names, got {group!r}"
                )
            for pname in group:
                if pname not in self.parameters:
                    raise ConfigurationError(f"{where}: zip[{i}]: {pname!r} is not a parameter")
                if pname in seen:
                    raise ConfigurationError(f"{where}: zip[{i}]: {pname!r} is already in zip[{seen[pname]}]")
                seen[pname] = i
            lengths = {len(self.parameters[p]) for p in group}
            if len(lengths) != 1:
                counts = ", ".join(f"{p}: {len(self.parameters[p])}" for p in group)
                raise ConfigurationError(
                    f"{where}: zip[{i}]: zipped parameters need as many values each ({counts})"
                )
            out.append(tuple(group))
        return tuple(out)

    def _columns(self, columns: Mapping[int, str] | None, where: str) -> dict[int, str]:
        if columns is not None and not isinstance(columns, Mapping):
            raise ConfigurationError(f"{where}: columns must map variable ids to names, got {columns!r}")
        given = dict(columns or {})
        ids = {v.id for v in self.context.variables}
        for vid in given:
            if vid not in ids:
                raise ConfigurationError(f"{where}: columns names variable {vid!r}, which is not measured")
        out: dict[int, str] = {}
        taken: dict[str, str] = {n: "a reserved column" for n in _RESERVED}
        for sp in self.setpoints:
            taken[sp.name] = f"setpoint {sp.name!r}"
        for v in self.context.variables:
            col = given.get(v.id) or (f"var_{v.id}" if v.id >= 0 else f"var_m{-v.id}")
            if not isinstance(col, str) or not COLUMN_NAME.fullmatch(col) or len(col) > 52:
                raise ConfigurationError(
                    f"{where}: the column name of variable {v.id} must be letters, digits and _ "
                    f"(not starting with a digit, at most 52), got {col!r}"
                )
            for name in (col, f"{col}_quality"):
                if name in taken:
                    raise ConfigurationError(
                        f"{where}: variable {v.id} would have the column {name!r}, which is {taken[name]}"
                    )
                taken[name] = f"the column of variable {v.id}"
            out[v.id] = col
        return out

    def _check_settle(self, where: str) -> None:
        s = self.settle
        if s.variable is None:
            return
        variable = self._settle_variable()
        if variable is None:
            raise ConfigurationError(
                f"{where}: settle variable {s.variable!r} is neither a setpoint nor a measured column"
            )
        if variable.value_type not in ("float", "int"):
            raise ConfigurationError(
                f"{where}: settle variable {s.variable!r} is not a number ({variable.value_type})"
            )
        if isinstance(s.target, str):
            sp = self._by_name.get(s.target)
            if sp is None:
                raise ConfigurationError(f"{where}: settle target {s.target!r} is not a setpoint")
            if sp.variable.value_type not in ("float", "int"):
                raise ConfigurationError(f"{where}: settle target {s.target!r} is not a number")
        elif s.target is None and s.variable not in self._by_name:
            raise ConfigurationError(
                f"{where}: settle variable {s.variable!r} is not a setpoint: give a target "
                "(a number or a setpoint)"
            )

    def _settle_variable(self) -> Variable | None:
        name = self.settle.variable
        if name is None:
            return None
        sp = self._by_name.get(name)
        if sp is not None:
            return sp.variable
        for v in self.context.variables:
            if self.columns[v.id] == name:
                return v
        return None

    def _points(self, where: str) -> tuple[ScanPoint, ...]:
        dims: list[tuple[str, ...]] = []
        placed: set[str] = set()
        for pname in self.parameters:
            if pname in placed:
                continue
            group = next((g for g in self.zip if pname in g), (pname,))
            dims.append(group)
            placed.update(group)
        count = 1
        for group in dims:
            count *= len(self.parameters[group[0]])
            if count > MAX_POINTS:
                raise ConfigurationError(f"{where}: more than {MAX_POINTS} points")
        base = {sp.name: sp.base for sp in self.setpoints}
        points = []
        ranges = [range(len(self.parameters[g[0]])) for g in dims]
        for index, combo in enumerate(itertools.product(*ranges)):
            chosen: dict[str, Any] = {}
            for group, i in zip(dims, combo, strict=True):
                for pname in group:
                    chosen[pname] = self.parameters[pname][i]
            params = {p: chosen[p] for p in self.parameters}
            config = {**base, **params}
            points.append(ScanPoint(index, types.MappingProxyType(config), types.MappingProxyType(params)))
        return tuple(points)

    def _table_columns(self) -> tuple[ScanColumn, ...]:
        cols = [ScanColumn("point", "int", "point")]
        for sp in self.setpoints:
            kind = _kind(sp.variable.value_type)
            width = _width(str(p.configuration[sp.name]) for p in self.points) if kind == "str" else 0
            cols.append(ScanColumn(sp.name, kind, "setpoint", width, sp.variable.id))
        cols.append(ScanColumn("time_us", "int", "time"))
        for v in self.context.variables:
            kind = _kind(v.value_type)
            col = self.columns[v.id]
            cols.append(ScanColumn(col, kind, "value", _MEASURED_STR_WIDTH if kind == "str" else 0, v.id))
            cols.append(ScanColumn(f"{col}_quality", "str", "quality", _QUALITY_WIDTH, v.id))
        return tuple(cols)

    def _fingerprint(self) -> str:
        """What a journal must match: points, setpoints, measured variables and capture."""
        what = {
            "name": self.name,
            "context_id": self.context.id,
            "setpoints": [
                [
                    sp.name,
                    sp.variable.id,
                    sp.variable.address,
                    sp.variable.value_type,
                    sp.variable.reader_type,
                ]
                for sp in self.setpoints
            ],
            "measured": [
                [
                    v.id,
                    v.address,
                    v.value_type,
                    v.reader_type,
                    self.context.interval_of(v),
                    self.columns[v.id],
                ]
                for v in self.context.variables
            ],
            "points": [dict(p.configuration) for p in self.points],
            "capture": {"samples": self.samples, "duration_s": self.duration_s},
        }
        text = json.dumps(what, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # -- description --------------------------------------------------------------------------------
    @staticmethod
    def range(start: float, stop: float, *, step: float | None = None, count: int | None = None) -> list[Any]:
        """Evenly spaced values from ``start`` to ``stop``, both included: ``step`` apart (the
        last value is the last one not past ``stop``) or ``count`` of them. Ints when ``start``,
        ``stop`` and ``step`` are ints; floats are computed as ``start + i * step`` and rounded
        to 12 significant digits (``0.1 * 3`` is ``0.3``, not ``0.30000000000000004``)."""
        for label, value in (("start", start), ("stop", stop)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigurationError(f"range: {label} must be a finite number, got {value!r}")
        if (step is None) == (count is None):
            raise ConfigurationError("range: give exactly one of step and count")
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_POINTS:
                raise ConfigurationError(f"range: count must be an int from 1 to {MAX_POINTS}, got {count!r}")
            if count == 1:
                if start != stop:
                    raise ConfigurationError(
                        f"range: count = 1 needs start == stop, got {start!r} and {stop!r}"
                    )
                return [start]
            span = (stop - start) / (count - 1)
            return [_round(start + i * span) for i in builtins.range(count - 1)] + [stop]
        assert step is not None
        if (
            isinstance(step, bool)
            or not isinstance(step, int | float)
            or not math.isfinite(step)
            or step == 0
        ):
            raise ConfigurationError(f"range: step must be a finite number other than 0, got {step!r}")
        if (stop - start) * step < 0:
            raise ConfigurationError(
                f"range: step {step!r} goes away from stop (start {start!r}, stop {stop!r}): "
                "give it the other sign"
            )
        n = math.floor((stop - start) / step + 1e-9) + 1
        if n > MAX_POINTS:
            raise ConfigurationError(f"range: more than {MAX_POINTS} values")
        if all(isinstance(x, int) for x in (start, stop, step)):
            return [start + i * step for i in builtins.range(n)]
        return [_round(start + i * step) for i in builtins.range(n)]

    def definition(self) -> dict[str, Any]:
        """The scan as JSON-compatible data (stored beside its table and in each point's run)."""
        out: dict[str, Any] = {
            "name": self.name,
            "context_id": self.context.id,
            "points": len(self.points),
            "order": "Cartesian product of the parameters in the order given: the first changes slowest",
            "setpoints": [
                {
                    "name": sp.name,
                    "variable_id": sp.variable.id,
                    "address": sp.variable.address,
                    "value_type": sp.variable.value_type,
                    "reader_type": sp.variable.reader_type,
                    "base": sp.base,
                    "read_back": sp.read_back,
                }
                for sp in self.setpoints
            ],
            "parameters": {k: list(v) for k, v in self.parameters.items()},
            "zip": [list(g) for g in self.zip],
            "measured": [
                {"variable_id": v.id, "address": v.address, "column": self.columns[v.id]}
                for v in self.context.variables
            ],
            "settle": self.settle.describe(),
            "on_error": self.on_error,
            "retries": self.retries,
            "fingerprint": self.fingerprint,
        }
        out["capture"] = (
            {"samples": self.samples} if self.samples is not None else {"duration_s": self.duration_s}
        )
        result: dict[str, Any] = json_metadata(out, f"scan {self.name!r}")
        return result

    def shape(self) -> str:
        """``3 x 4 (temp_sp, flow_sp)``: the dimensions in scan order."""
        dims: list[str] = []
        placed: set[str] = set()
        for pname in self.parameters:
            if pname in placed:
                continue
            group = next((g for g in self.zip if pname in g), (pname,))
            placed.update(group)
            dims.append(f"{'+'.join(group)}: {len(self.parameters[pname])}")
        return " x ".join(dims)

    def writes(self, point: ScanPoint) -> list[tuple[Setpoint, Any]]:
        """The writes of ``point``, in order: every setpoint with its value there."""
        return [(sp, point.configuration[sp.name]) for sp in self.setpoints]

    def journal_state(self) -> dict[int, dict[str, Any]]:
        """The last journal entry of every point it records (``{}`` without a journal or entries).

        Raises :class:`ConfigurationError` when the journal belongs to another scan definition.
        """
        if self.journal is None or not self.journal.exists():
            return {}
        return _Journal.read(self.journal, self)[1]

    def probe_context(self) -> DataCollectionContext:
        """A context holding every variable the scan reads or writes (checks, opening readers)."""
        variables = {v.id: v for v in self.context.variables}
        for sp in self.setpoints:
            variables.setdefault(sp.variable.id, sp.variable)
        return DataCollectionContext(
            self.context.id,
            list(variables.values()),
            min_interval_ms=self.context.min_interval_ms,
            default_interval_ms=self.context.default_interval_ms,
        )

    def check(self, collector: DataCollector) -> None:
        """Check the scan against ``collector``'s readers as :meth:`run` would, connecting nowhere:
        every variable as ``start()`` checks it, and the setpoints' readers can write."""
        collector.check(self.probe_context())
        for sp in self.setpoints:
            reader = collector.readers[sp.variable.reader_type]
            if not reader.supports_write:
                raise ConfigurationError(
                    f"scan {self.name!r}: setpoint {sp.name!r}: reader {sp.variable.reader_type!r} "
                    f"({type(reader).__name__}) cannot write",
                    variable_id=sp.variable.id,
                    field="reader_type",
                )

    def __repr__(self) -> str:
        mode = f"samples={self.samples}" if self.samples is not None else f"duration_s={self.duration_s:g}"
        return f"Scan({self.name!r}, context={self.context.id}, points={len(self.points)}, {mode})"

    # -- running ------------------------------------------------------------------------------------
    def run(
        self,
        collector: DataCollector,
        *,
        resume: bool = False,
        progress: Callable[[ScanProgress], None] | None = None,
        stop: threading.Event | None = None,
    ) -> ScanResult:
        """Run the scan's points on ``collector`` (see the module documentation); returns when
        every point was done, the scan stopped on an error, or ``stop`` was set (the point in
        progress is then stopped and recorded as interrupted, its data written).

        ``resume``: skip the points the journal records as complete (a journal that holds
        points needs it). ``progress`` is called (in this thread) at every step of every point.
        The collector is left open; its writers keep the runs and the scan table.
        """
        if progress is not None and not callable(progress):
            raise ConfigurationError(f"progress must be callable, got {progress!r}")
        if stop is not None and not isinstance(stop, threading.Event):
            raise ConfigurationError(f"stop must be a threading.Event, got {stop!r}")
        if resume and self.journal is None:
            raise ConfigurationError(f"scan {self.name!r} has no journal to resume from (Scan(journal=...))")
        stop = stop or threading.Event()
        self.check(collector)
        journal = _Journal.open(self.journal, self, resume) if self.journal is not None else None
        try:
            return _Runner(self, collector, journal, progress, stop).run()
        finally:
            if journal is not None:
                journal.close()


def _round(x: float) -> float:
    return float(f"{x:.12g}")


# -- the journal ---------------------------------------------------------------------------------------
class _Journal:
    """The scan's journal: a header line, then one line per point attempt (fsync-ed)."""

    def __init__(self, path: Path, f: IO[str], started: datetime, entries: dict[int, dict[str, Any]]) -> None:
        self.path = path
        self._f = f
        self.started = started
        self.entries = entries

    @staticmethod
    def read(path: Path, scan: Scan) -> tuple[datetime | None, dict[int, dict[str, Any]], int]:
        """(start, the last entry per point, the byte length of the complete lines)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"scan journal {path}: cannot read it: {exc.strerror or exc}") from None
        entries: dict[int, dict[str, Any]] = {}
        started: datetime | None = None
        good = 0
        lines = data.split(b"\n")
        for number, raw in enumerate(lines, start=1):
            last = number == len(lines)
            if not raw.strip():
                if not last:
                    good += len(raw) + 1
                continue
            try:
                entry = json.loads(raw)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except ValueError:
                if last:  # a line cut by a crash: ignored (and cut off when resuming)
                    break
                raise ConfigurationError(f"scan journal {path}: line {number} is damaged") from None
            if number == 1:
                if entry.get("format") != JOURNAL_FORMAT:
                    raise ConfigurationError(
                        f"scan journal {path}: not a scan journal (first line: {raw[:80]!r})"
                    )
                if entry.get("version", 0) > JOURNAL_VERSION:
                    raise ConfigurationError(f"scan journal {path}: written by a newer data-collector")
                if entry.get("scan") != scan.name or entry.get("fingerprint") != scan.fingerprint:
                    raise ConfigurationError(
                        f"scan journal {path} belongs to another scan definition "
                        f"(scan {entry.get('scan')!r}, {entry.get('points')} points); the points, "
                        "setpoints, measured variables or capture changed: give this scan a journal of "
                        "its own, or remove that one to start over"
                    )
                try:
                    started = datetime.fromisoformat(str(entry["started"]))
                except (KeyError, ValueError):
                    raise ConfigurationError(f"scan journal {path}: its header has no start time") from None
            else:
                point = entry.get("point")
                if isinstance(point, int) and 0 <= point < len(scan.points):
                    previous = entries.get(point)
                    entry["attempts"] = (previous or {}).get("attempts", 0) + 1
                    entries[point] = entry
            good += len(raw) + (0 if last else 1)
        if started is None and data.strip():
            raise ConfigurationError(f"scan journal {path}: its first line is damaged")
        return started, entries, good

    @classmethod
    def open(cls, path: Path | None, scan: Scan, resume: bool) -> _Journal:
        assert path is not None
        started: datetime | None = None
        entries: dict[int, dict[str, Any]] = {}
        good = 0
        exists = path.exists() and path.stat().st_size > 0
        if exists:
            started, entries, good = cls.read(path, scan)
            if entries and not resume:
                complete = sum(1 for e in entries.values() if e.get("status") == "completed")
                raise ConfigurationError(
                    f"scan journal {path} already records {len(entries)} points of scan {scan.name!r} "
                    f"({complete} of {len(scan.points)} complete): resume it (--resume), or remove the "
                    "journal to start over"
                )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigurationError(f"scan journal {path}: cannot open it: {exc.strerror or exc}") from None
        f = os.fdopen(fd, "r+", encoding="utf-8")
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise DataCollectionError(
                        f"scan journal {path} is in use by another running scan"
                    ) from None
            if started is None:
                started = datetime.now(UTC)
                f.truncate(0)
                header = {
                    "format": JOURNAL_FORMAT,
                    "version": JOURNAL_VERSION,
                    "scan": scan.name,
                    "fingerprint": scan.fingerprint,
                    "points": len(scan.points),
                    "started": started.isoformat(),
                    "definition": scan.definition(),
                }
                f.write(json.dumps(header, ensure_ascii=False) + "\n")
                _sync(f)
                _sync_dir(path.parent)
            else:
                f.truncate(good)  # a line a crash cut short
                f.seek(good)
                if good and not path.read_bytes().endswith(b"\n"):
                    f.write("\n")
                    _sync(f)
            f.seek(0, os.SEEK_END)
        except BaseException:
            f.close()
            raise
        return cls(path, f, started, entries)

    def record(self, entry: dict[str, Any]) -> None:
        entry = json_metadata(entry, "scan journal entry")
        self._f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        _sync(self._f)
        previous = self.entries.get(entry["point"])
        entry["attempts"] = (previous or {}).get("attempts", 0) + 1
        self.entries[entry["point"]] = entry

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()


def _sync(f: IO[str]) -> None:
    f.flush()
    os.fsync(f.fileno())


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- one run of a scan ---------------------------------------------------------------------------------
class _Tap:
    """Counts and keeps the samples delivered to a point's context (called in reader threads)."""

    def __init__(self, ids: Iterable[int], limit: int | None) -> None:
        self.counts = dict.fromkeys(ids, 0)
        self.limit = limit
        self.samples: list[tuple[int, datetime | None, Any, Quality, str | None]] = []
        self.reached = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, batch: CollectedVariables) -> None:
        rows = list(
            zip(
                [v.id for v in batch.variables],
                batch.read_ats,
                batch.values,
                batch.qualities,
                batch.errors,
                strict=True,
            )
        )
        with self._lock:
            self.samples.extend(rows)
            counts = self.counts
            for vid, *_ in rows:
                if vid in counts:
                    counts[vid] += 1
            if self.limit is not None and all(c >= self.limit for c in counts.values()):
                self.reached.set()

    def snapshot(self) -> tuple[dict[int, int], list[tuple[int, datetime | None, Any, Quality, str | None]]]:
        with self._lock:
            return dict(self.counts), list(self.samples)


@dataclass
class _Outcome:
    status: Literal["completed", "failed", "interrupted"]
    error: str | None = None
    rows: int = 0
    samples: int = 0
    start: str | None = None
    end: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Runner:
    def __init__(
        self,
        scan: Scan,
        collector: DataCollector,
        journal: _Journal | None,
        progress: Callable[[ScanProgress], None] | None,
        stop: threading.Event,
    ) -> None:
        self.scan = scan
        self.collector = collector
        self.journal = journal
        self.progress = progress
        self.stop = stop
        self.started = journal.started if journal is not None else datetime.now(UTC)
        self.t0 = time.monotonic()
        self.durations: list[float] = []
        self.done = sum(
            1 for e in (journal.entries.values() if journal else ()) if e.get("status") == "completed"
        )
        self.failed = 0
        self.definition = scan.definition()
        self.table_writers = [w for w in collector.writers if w.supports_scan_rows]

    def tell(self, point: ScanPoint, phase: Phase, error: str | None = None) -> None:
        if self.progress is None:
            return
        left = len(self.scan.points) - self.done - (1 if phase in ("writing", "settling", "capturing") else 0)
        mean = sum(self.durations) / len(self.durations) if self.durations else None
        eta = None
        if mean is not None:
            eta = max(0.0, left) * mean
        report = ScanProgress(
            point,
            phase,
            len(self.scan.points),
            self.done,
            self.failed,
            time.monotonic() - self.t0,
            eta,
            error,
        )
        try:
            self.progress(report)
        except Exception:
            _log.exception("scan %r: the progress callback raised; ignored", self.scan.name)

    def run(self) -> ScanResult:
        scan = self.scan
        if not self.table_writers:
            _log.info("scan %r: no writer keeps a scan table; each point's run holds its data", scan.name)
        # writers and every reader the scan needs are opened now (a spool is replayed first)
        self.collector._prepare([scan.probe_context()])
        entries = self.journal.entries if self.journal is not None else {}
        completed: list[int] = []
        skipped: list[int] = []
        failed: dict[int, str] = {}
        rows: dict[int, int] = {}
        interrupted = stopped = False
        for point in scan.points:
            if entries.get(point.index, {}).get("status") == "completed":
                skipped.append(point.index)
                self.tell(point, "skipped")
                continue
            if self.stop.is_set():
                interrupted = True
                break
            t = time.monotonic()
            for attempt in builtins.range(scan.retries + 1):
                outcome = self.point(point)
                if self.journal is not None:
                    self.journal.record(
                        {
                            "point": point.index,
                            "status": outcome.status,
                            "error": outcome.error,
                            "configuration": dict(point.configuration),
                            "start": outcome.start,
                            "end": outcome.end,
                            "samples": outcome.samples,
                            "rows": outcome.rows,
                            "at": datetime.now(UTC).isoformat(),
                        }
                    )
                if outcome.status != "failed" or attempt == scan.retries:
                    break
                _log.warning(
                    "scan %r: point %d (%s), attempt %d of %d failed: %s; trying again",
                    scan.name,
                    point.index,
                    point.label(),
                    attempt + 1,
                    scan.retries + 1,
                    outcome.error,
                )
                self.tell(point, "retrying", outcome.error)
            self.durations.append(time.monotonic() - t)
            if outcome.status == "completed":
                completed.append(point.index)
                rows[point.index] = outcome.rows
                self.done += 1
                self.tell(point, "completed")
            elif outcome.status == "interrupted":
                interrupted = True
                self.tell(point, "interrupted", outcome.error)
                break
            else:
                assert outcome.error is not None
                failed[point.index] = outcome.error
                self.failed += 1
                _log.error(
                    "scan %r: point %d (%s) failed: %s", scan.name, point.index, point.label(), outcome.error
                )
                self.tell(point, "failed", outcome.error)
                if scan.on_error == "stop":
                    stopped = True
                    break
        return ScanResult(
            total=len(scan.points),
            completed=tuple(completed),
            skipped=tuple(skipped),
            failed=types.MappingProxyType(failed),
            interrupted=interrupted,
            stopped_on_error=stopped,
            rows=types.MappingProxyType(rows),
            started=self.started,
        )

    # -- one point --------------------------------------------------------------------------------
    def info(self, point: ScanPoint, **more: Any) -> dict[str, Any]:
        attempts = 0
        if self.journal is not None:
            attempts = self.journal.entries.get(point.index, {}).get("attempts", 0)
        return {
            "scan": {
                "name": self.scan.name,
                "point": point.index,
                "points": len(self.scan.points),
                "attempt": attempts + 1,
                "started": self.started.isoformat(),
                "configuration": dict(point.configuration),
                "parameters": dict(point.parameters),
                **more,
            }
        }

    def point(self, point: ScanPoint) -> _Outcome:
        writes: list[dict[str, Any]] = []
        settle: dict[str, Any] = {}
        try:
            self.tell(point, "writing")
            self.write_configuration(point, writes)
            self.tell(point, "settling")
            settle = self.settle(point)
        except _Interrupted:
            return self.record_failure(point, writes, settle, "interrupted", "interrupted before the capture")
        except _PointFailed as exc:
            return self.record_failure(point, writes, settle, "failed", str(exc))
        self.tell(point, "capturing")
        return self.capture(point, writes, settle)

    def fresh_context(self) -> DataCollectionContext:
        c = self.scan.context
        limit = self.scan.capture_timeout_s if self.scan.samples is not None else (self.scan.duration_s or 0)
        return DataCollectionContext(
            c.id,
            c.variables,
            min_interval_ms=c.min_interval_ms,
            default_interval_ms=c.default_interval_ms,
            duration_s=min(MAX_DURATION_S, limit + self.scan.store_timeout_s + 3600),
            metadata=c.metadata,
        )

    def record_failure(
        self,
        point: ScanPoint,
        writes: list[dict[str, Any]],
        settle: dict[str, Any],
        status: Literal["failed", "interrupted"],
        error: str,
    ) -> _Outcome:
        """A point that failed before its capture: a run started and stopped at once records it."""
        context = self.fresh_context()
        info = self.info(point, writes=writes, settle=settle)
        try:
            self.collector._begin_capture(context, None, info)
            self.collector._finish(context, status, {"scan_result": {"status": status, "error": error}})
        except DataCollectionError as exc:
            _log.error(
                "scan %r: the failed point %d could not be recorded as a run: %s",
                self.scan.name,
                point.index,
                exc,
            )
        start = context.start_date.isoformat() if context.start_date else None
        end = context.end_date.isoformat() if context.end_date else None
        return _Outcome(status, error, start=start, end=end)

    def write_configuration(self, point: ScanPoint, writes: list[dict[str, Any]]) -> None:
        readers = self.collector.readers
        for sp, value in self.scan.writes(point):
            if self.stop.is_set():
                raise _Interrupted()
            v = sp.variable
            try:
                readers[v.reader_type].write(v, value)
            except Exception as exc:
                raise _PointFailed(
                    f"writing {sp.name} = {_show(value)} to variable {v.id} ({v.address!r} on reader "
                    f"{v.reader_type!r}) failed: {_err(exc)}"
                ) from exc
            writes.append({"setpoint": sp.name, "variable_id": v.id, "value": value})
        for entry, (sp, value) in zip(writes, self.scan.writes(point), strict=True):
            if not sp.read_back:
                continue
            read = self.read_one(sp.variable, f"reading back {sp.name}")
            entry["read_back"] = read
            if not _same(value, read, sp.variable.value_type, sp.tolerance):
                tol = f" (tolerance {sp.tolerance:g})" if sp.tolerance is not None else ""
                raise _PointFailed(
                    f"setpoint {sp.name} read back {_show(read)} after writing {_show(value)}{tol} "
                    f"(variable {sp.variable.id}, {sp.variable.address!r} "
                    f"on reader {sp.variable.reader_type!r})"
                )

    def read_one(self, variable: Variable, what: str) -> Any:
        reader = self.collector.readers[variable.reader_type]
        batch = CollectedVariables.of([variable])
        try:
            reader.read(batch)
        except Exception as exc:
            raise _PointFailed(f"{what}: the read raised {_err(exc)}") from exc
        item = batch[0]
        if item.quality is Quality.BAD or item.value is None:
            raise _PointFailed(
                f"{what}: variable {variable.id} ({variable.address!r}) is BAD: {item.error or 'no value'}"
            )
        return item.value

    def settle(self, point: ScanPoint) -> dict[str, Any]:
        s = self.scan.settle
        out: dict[str, Any] = {}
        t0 = time.monotonic()
        if s.time_s > 0:
            if self.stop.wait(s.time_s):
                raise _Interrupted()
            out["waited_s"] = round(time.monotonic() - t0, 3)
        variable = self.scan._settle_variable()
        if variable is None:
            return out
        target_name = s.target if isinstance(s.target, str) else None
        if s.target is None:
            target_name = s.variable
        target = float(point.configuration[target_name]) if target_name is not None else float(s.target)  # type: ignore[arg-type]
        out.update(variable=s.variable, target=target, tolerance=s.tolerance)
        start = time.monotonic()
        deadline = start + s.timeout_s
        within_since: float | None = None
        last: Any = None
        last_error = ""
        for _ in range(10**9):  # bounded by the deadline
            now = time.monotonic()
            try:
                last = self.read_one(variable, "settle")
                last_error = ""
            except _PointFailed as exc:
                last, last_error = None, str(exc)
            now = time.monotonic()
            if last is not None and abs(float(last) - target) <= s.tolerance:
                within_since = within_since if within_since is not None else now
                if now - within_since >= s.hold_s:
                    out.update(value=last, after_s=round(now - start, 3))
                    return out
            else:
                within_since = None
            if now >= deadline:
                seen = f"{s.variable} = {_show(last)}" if last is not None else last_error
                raise _PointFailed(
                    f"did not settle: {seen}, not within {s.tolerance:g} of {target:g}"
                    f"{f' for {s.hold_s:g} s' if s.hold_s else ''} after {s.timeout_s:g} s"
                )
            if self.stop.wait(min(s.poll_s, max(0.0, deadline - now))):
                raise _Interrupted()
        raise AssertionError("unreachable")

    def counters(self) -> dict[str, tuple[int, int]]:
        """Per writer: (lost + dropped + unwritten samples, queue depth)."""
        return {
            name: (ws.lost_samples + ws.dropped_samples + ws.unwritten_samples, ws.queue_depth)
            for name, ws in self.collector.stats().writers.items()
        }

    def capture(self, point: ScanPoint, writes: list[dict[str, Any]], settle: dict[str, Any]) -> _Outcome:
        scan = self.scan
        context = self.fresh_context()
        tap = _Tap([v.id for v in context.variables], scan.samples)
        before = self.counters()
        info = self.info(point, writes=writes, settle=settle)
        try:
            self.collector._begin_capture(context, None, info, tap)
        except DataCollectionError as exc:
            return _Outcome("failed", f"the capture did not start: {_err(exc)}")
        ended: Literal["completed", "failed", "interrupted"] = "completed"
        error: str | None = None
        try:
            if scan.samples is not None:
                deadline = time.monotonic() + scan.capture_timeout_s
                while not tap.reached.is_set():
                    if self.stop.is_set():
                        ended, error = "interrupted", "interrupted during the capture"
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        counts, _ = tap.snapshot()
                        short = ", ".join(
                            f"{scan.columns[vid]}: {n}" for vid, n in counts.items() if n < scan.samples
                        )
                        ended = "failed"
                        error = (
                            f"the capture did not get {scan.samples} samples of every measured variable "
                            f"within {scan.capture_timeout_s:g} s ({short})"
                        )
                        break
                    tap.reached.wait(min(left, 0.05))
            elif self.stop.wait(scan.duration_s):
                ended, error = "interrupted", "interrupted during the capture"
        except BaseException as exc:
            self.collector._finish(
                context, "exception", {"scan_result": {"status": "interrupted", "error": _err(exc)}}
            )
            raise
        counts, samples = tap.snapshot()
        kept, after = self.select(samples)
        bad = [(vid, err) for vid, _at, _v, q, err in kept if q is Quality.BAD]
        if ended == "completed" and bad and not scan.allow_bad_samples:
            vid, first = bad[0]
            ended = "failed"
            error = f"{len(bad)} of {len(kept)} samples BAD (e.g. {scan.columns.get(vid, vid)}: {first})"
        summary: dict[str, Any] = {
            "status": ended,
            "samples": {scan.columns[vid]: n for vid, n in counts.items()},
            "bad_samples": len(bad),
        }
        if after:
            summary["samples_after_limit"] = after
        if error is not None:
            summary["error"] = error
        # the outcome goes under a key of its own, added at the stop: a spool replay of the run
        # (after a crash) restores the deduced metadata of its start, which has no such key
        self.collector._finish(context, ended, {"scan_result": summary})
        start = context.start_date.isoformat() if context.start_date else None
        end = context.end_date.isoformat() if context.end_date else None
        outcome = _Outcome(ended, error, samples=len(samples), start=start, end=end)
        if ended != "completed":
            return outcome
        try:
            self.check_stored(before)
            table = self.rows(point, kept)
            self.store_rows(table)
        except _Interrupted:
            return _Outcome(
                "interrupted",
                "interrupted while storing the point",
                samples=len(samples),
                start=start,
                end=end,
            )
        except _PointFailed as exc:
            return _Outcome("failed", str(exc), samples=len(samples), start=start, end=end)
        outcome.rows = len(table)
        return outcome

    def select(
        self, samples: list[tuple[int, datetime | None, Any, Quality, str | None]]
    ) -> tuple[list[tuple[int, datetime | None, Any, Quality, str | None]], int]:
        """The samples of the merged rows (samples mode: the first N per variable) and how many
        more were read."""
        limit = self.scan.samples
        if limit is None:
            return samples, 0
        order = sorted(range(len(samples)), key=lambda i: _time_us(samples[i][1]))
        taken: dict[int, int] = {}
        kept = []
        for i in order:
            vid = samples[i][0]
            n = taken.get(vid, 0)
            if n < limit:
                taken[vid] = n + 1
                kept.append(samples[i])
        return kept, len(samples) - len(kept)

    def check_stored(self, before: Mapping[str, tuple[int, int]]) -> None:
        """The capture returned: every sample read must be in every writer (bounded wait)."""
        deadline = time.monotonic() + self.scan.store_timeout_s
        while True:
            now_counters = self.counters()
            lost = {n: c[0] - before.get(n, (0, 0))[0] for n, c in now_counters.items()}
            lost = {n: x for n, x in lost.items() if x > 0}
            if lost:
                names = ", ".join(f"{n}: {x}" for n, x in lost.items())
                raise _PointFailed(
                    f"samples of the point were lost, dropped or left unwritten by writers ({names})"
                )
            queued = {n: c[1] for n, c in now_counters.items() if c[1] > 0}
            if not queued:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(f"{n}: {x}" for n, x in queued.items())
                raise _PointFailed(
                    f"the point's data was not stored within {self.scan.store_timeout_s:g} s "
                    f"(still queued: {names})"
                )
            if self.stop.wait(0.05):
                raise _Interrupted()

    def rows(
        self, point: ScanPoint, kept: list[tuple[int, datetime | None, Any, Quality, str | None]]
    ) -> ScanRows:
        scan = self.scan
        # a row per boundary: a read's time rounded down to its variable's interval (readers read
        # at or just after a boundary, each at its own moment); a second sample of a variable at
        # one boundary (a reader stamping its own times) gets a row of its own
        interval_us = {v.id: scan.context.interval_of(v) * 1000 for v in scan.context.variables}
        by_time: dict[tuple[int, int], dict[int, tuple[Any, Quality]]] = {}
        for vid, at, value, quality, _err_text in kept:
            t = _time_us(at)
            step = interval_us.get(vid)
            if t != _NAT and step:
                t -= t % step
            k = 0
            while vid in by_time.get((t, k), {}):
                k += 1
            by_time.setdefault((t, k), {})[vid] = (value, quality)
        keys = sorted(by_time)
        values: dict[str, list[Any]] = {c.name: [] for c in scan.table_columns}
        misfit = 0
        for key in keys:
            t = key[0]
            cells = by_time[key]
            for c in scan.table_columns:
                if c.role == "point":
                    values[c.name].append(point.index)
                elif c.role == "setpoint":
                    values[c.name].append(point.configuration[c.name])
                elif c.role == "time":
                    values[c.name].append(t)
                elif c.role == "value":
                    assert c.variable_id is not None
                    cell = cells.get(c.variable_id)
                    value, fits = _column_value(cell[0] if cell else None, c.kind)
                    misfit += not fits
                    values[c.name].append(value)
                else:
                    assert c.variable_id is not None
                    cell = cells.get(c.variable_id)
                    values[c.name].append(cell[1].value if cell else "")
        if misfit:
            _log.warning(
                "scan %r point %d: %d values do not fit their scan table column (stored as 0/NaN there; the "
                "point's run holds them)",
                scan.name,
                point.index,
                misfit,
            )
        return ScanRows(
            scan.name,
            scan.context.id,
            self.started,
            point.index,
            scan.table_columns,
            values,
            self.definition,
        )

    def store_rows(self, rows: ScanRows) -> None:
        for writer in self.table_writers:
            deadline = time.monotonic() + self.scan.store_timeout_s
            delay = 0.1
            while True:
                try:
                    with writer.lock:
                        writer.write_scan_rows(rows)
                    break
                except Exception as exc:
                    transient = False
                    with contextlib.suppress(Exception):
                        transient = bool(writer.is_transient(exc))
                    if not transient or time.monotonic() + delay > deadline:
                        raise _PointFailed(
                            f"writer {writer.name} did not store the point's scan rows: {_err(exc)}"
                        ) from exc
                    _log.warning(
                        "scan %r: writer %s: %s; trying again", self.scan.name, writer.name, _err(exc)
                    )
                    if self.stop.wait(delay):
                        raise _Interrupted() from exc
                    delay = min(delay * 2, 5.0)
