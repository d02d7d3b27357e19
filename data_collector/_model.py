"""The value objects of data-collector: variables, contexts and collected values.

This module imports nothing else from the project (the bottom layer).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import itertools
import math
import re
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import PurePath
from typing import Any, ClassVar, Protocol, overload

from ._errors import ConfigurationError

__all__ = [
    "BUILTIN_VALUE_TYPES",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_DURATION_S",
    "MAX_ID",
    "MAX_INTERVAL_MS",
    "MAX_NAME_LENGTH",
    "MAX_UNIT_LENGTH",
    "MIN_ID",
    "ON_CHANGE_FIELDS",
    "CollectedVariable",
    "CollectedVariables",
    "DataCollectionContext",
    "Quality",
    "Variable",
    "json_metadata",
]

#: The longest ``duration_s`` a context may have (100 years).
MAX_DURATION_S = 100 * 365.25 * 86400

#: The longest interval (``interval_ms``, ``min_interval_ms``, ``default_interval_ms``): 366 days
#: in ms. Enough for a yearly reading, and far from what timers, sleeps and date arithmetic can hold.
MAX_INTERVAL_MS = 366 * 86_400_000

#: The range of variable and context ids: a signed 64-bit integer, what every shipped writer
#: (SQL ``BIGINT`` columns) can store.
MIN_ID = -(2**63)
MAX_ID = 2**63 - 1

#: The value types every reader understands; a reader may declare more in ``value_types``.
BUILTIN_VALUE_TYPES: frozenset[str] = frozenset({"float", "int", "bool", "str"})

#: The longest ``Variable.name`` (characters): a column title, a legend entry, a topic level.
MAX_NAME_LENGTH = 256
#: The longest ``Variable.unit`` (characters), e.g. "bar", "°C", "m³/h".
MAX_UNIT_LENGTH = 64
#: The longest ``Variable.description`` (characters).
MAX_DESCRIPTION_LENGTH = 4096


class Quality(enum.Enum):
    """How trustworthy a collected value is (the OPC UA status classes)."""

    GOOD = "GOOD"
    UNCERTAIN = "UNCERTAIN"
    BAD = "BAD"

    def __str__(self) -> str:
        return self.value


def _shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` for an error message, safe and short for huge ints and long texts."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond the int-to-str digit limit
        if isinstance(value, int):
            digits = int(math.log10(abs(value))) + 1
            return f"{'-' if value < 0 else ''}an int of about {digits} digits"
        raise
    except Exception as exc:  # a broken __repr__ must not hide the real problem
        return f"<{type(value).__name__} whose repr fails: {type(exc).__name__}>"
    if len(text) <= limit:
        return text
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{text[:12]}... (an int of {len(text.lstrip('-'))} digits)"
    return text[: limit - 3] + "..."


def _check_int(name: str, value: object, *, low: int, high: int, what: str, where: str = "") -> int:
    """``value`` when it is an int (not a bool) in ``low..high``, else :class:`ConfigurationError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{where}{name} must be an int, got {_shown(value)}")
    if value < low:
        if low == 1:
            raise ConfigurationError(f"{where}{name} must be > 0, got {_shown(value)}")
        raise ConfigurationError(f"{where}{name} must be at least {low} ({what}), got {_shown(value)}")
    if value > high:
        raise ConfigurationError(f"{where}{name} must be at most {high} ({what}), got {_shown(value)}")
    return value


def _check_id(name: str, value: object, where: str) -> int:
    return _check_int(name, value, low=MIN_ID, high=MAX_ID, what="a signed 64-bit integer", where=where)


def _check_interval(name: str, value: object, where: str) -> int:
    return _check_int(name, value, low=1, high=MAX_INTERVAL_MS, what="366 days in ms", where=where)


def _check_text(name: str, value: object, *, where: str = "") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}{name} must be a non-empty str, got {value!r}")
    return value


# -- on-change recording settings (of a Variable, and a context's defaults) ---------------------------
#: The fields that say how a context records a variable: on change (with a deadband and a
#: heartbeat) rather than every sample. See :mod:`data_collector._onchange` for what they mean.
ON_CHANGE_FIELDS = ("deadband", "deadband_percent", "max_age_s")


def _check_on_change(where: str, deadband: object, deadband_percent: object, max_age_s: object) -> None:
    """:class:`ConfigurationError` naming the first bad on-change setting (None is always fine)."""
    for name, value in (("deadband", deadband), ("deadband_percent", deadband_percent)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"{where}{name} must be a number >= 0, got {_shown(value)}", field=name)
        try:
            as_float = float(value)
        except OverflowError:
            as_float = math.inf
        if not math.isfinite(as_float) or value < 0:
            raise ConfigurationError(
                f"{where}{name} must be a finite number >= 0, got {_shown(value)}", field=name
            )
    if deadband is not None and deadband_percent is not None:
        raise ConfigurationError(
            f"{where}give deadband (absolute) or deadband_percent (of the last recorded value), not both "
            f"(got deadband={_shown(deadband)}, deadband_percent={_shown(deadband_percent)})",
            field="deadband",
        )
    if max_age_s is not None and (
        isinstance(max_age_s, bool)
        or not isinstance(max_age_s, int | float)
        or (isinstance(max_age_s, float) and not math.isfinite(max_age_s))
        or max_age_s <= 0
        or max_age_s > MAX_DURATION_S
    ):
        raise ConfigurationError(
            f"{where}max_age_s must be a number of seconds > 0 and at most {MAX_DURATION_S:g} "
            f"(100 years), got {_shown(max_age_s)}",
            field="max_age_s",
        )


#: Control characters refused in a name or unit (a description may hold tab and newlines).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _check_label(name: str, value: object, *, limit: int, multiline: bool, where: str) -> str | None:
    """``value`` when it is None or a str fit for a label (a name, unit or description) every
    store can hold: not empty, at most ``limit`` characters, no surrounding whitespace, no control
    characters (but tab and newlines in a ``multiline`` text), valid Unicode (no lone surrogates)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{where}{name} must be a str or None, got {_shown(value)}")
    if not value.strip():
        raise ConfigurationError(f"{where}{name} must not be empty or blank (use None), got {value!r}")
    if len(value) > limit:
        raise ConfigurationError(
            f"{where}{name} must be at most {limit} characters, got {len(value)}: {_shown(value)}"
        )
    if value != value.strip():
        raise ConfigurationError(f"{where}{name} must not start or end with whitespace, got {_shown(value)}")
    bad = (_CONTROL_IN_TEXT if multiline else _CONTROL).search(value)
    if bad is not None:
        raise ConfigurationError(
            f"{where}{name} must not hold the control character {bad.group()!r}, got {_shown(value)}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"{where}{name} must be valid Unicode (it holds a lone surrogate), got {_shown(value)}"
        ) from None
    return value


def _rebuild_variable(fields: tuple[tuple[str, Any], ...]) -> Variable:
    """A :class:`Variable` from ``(field name, value)`` pairs (unpickling)."""
    return Variable(**dict(fields))


@dataclass(frozen=True, slots=True, kw_only=False)
class Variable:
    """One value to collect: where it lives and how often to read it.

    ``value_type`` is a Python-oriented type name ("float", "int", "bool", "str"; readers may
    declare more); ``reader_type`` names the reader that reads it; ``interval_ms`` overrides the
    context's default interval. Immutable; invalid values raise :class:`ConfigurationError`.
    A variable holding a 1-D array (a waveform, a register block) keeps its element type as
    ``value_type`` ("float" for a float64 waveform): its values are 1-D NumPy arrays, which the
    CSV, SQL, HDF5 and archive writers store (each README says how).

    Ranges: ``id`` is a signed 64-bit integer (:data:`MIN_ID` .. :data:`MAX_ID`, what the SQL
    writer stores); ``interval_ms`` is 1 .. :data:`MAX_INTERVAL_MS` (366 days).

    On-change recording (keyword-only; ``None`` takes the context's setting): ``deadband``
    (absolute, >= 0) or ``deadband_percent`` (>= 0, of the last recorded value's magnitude), not
    both, and ``max_age_s`` (heartbeat: an unchanged value is recorded again after this long).
    A variable with any of them (its own or its context's) is recorded on change; see
    :mod:`data_collector._onchange`.

    Descriptive, keyword-only, each ``None`` or a str: ``name`` (a label for people: column
    titles, legends; at most :data:`MAX_NAME_LENGTH` characters), ``unit`` (e.g. ``"bar"``,
    ``"°C"``; at most :data:`MAX_UNIT_LENGTH`) and ``description`` (free text, may span lines; at
    most :data:`MAX_DESCRIPTION_LENGTH`). They are not empty, have no surrounding whitespace, no
    control characters (a description may hold tabs and newlines) and no lone surrogates. Writers
    store them once per variable; they are not part of the device definition
    (:meth:`same_definition`), so two contexts may label a shared variable differently.
    """

    id: int
    address: str
    value_type: str
    reader_type: str
    interval_ms: int | None = None
    # -- on-change recording (keyword-only, so positional fields may follow) --
    deadband: float | None = field(default=None, kw_only=True)
    deadband_percent: float | None = field(default=None, kw_only=True)
    max_age_s: float | None = field(default=None, kw_only=True)
    # --
    # -- descriptive labels (name, unit, description): keyword-only, stored by the writers ---------
    name: str | None = field(default=None, kw_only=True)
    unit: str | None = field(default=None, kw_only=True)
    description: str | None = field(default=None, kw_only=True)
    # -- end of the descriptive labels ------------------------------------------------------------
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        _check_id("id", self.id, where="Variable ")
        where = f"Variable {self.id}: "
        _check_text("address", self.address, where=where)
        _check_text("value_type", self.value_type, where=where)
        _check_text("reader_type", self.reader_type, where=where)
        if self.interval_ms is not None:
            _check_interval("interval_ms", self.interval_ms, where=where)
        _check_on_change(where, self.deadband, self.deadband_percent, self.max_age_s)
        # -- descriptive labels
        _check_label("name", self.name, limit=MAX_NAME_LENGTH, multiline=False, where=where)
        _check_label("unit", self.unit, limit=MAX_UNIT_LENGTH, multiline=False, where=where)
        _check_label(
            "description", self.description, limit=MAX_DESCRIPTION_LENGTH, multiline=True, where=where
        )
        # -- end of the descriptive labels
        key = (self.id, self.address, self.value_type, self.reader_type, self.interval_ms)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:  # computed once: variables key the readers' per-tick lookups
        return self._hash

    def __reduce__(self) -> tuple[Any, tuple[tuple[tuple[str, Any], ...]]]:
        # rebuilt through the constructor, so the cached hash is that of the receiving process;
        # by field name, so that every constructor field (keyword-only ones included) comes along
        fields = tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.init)
        return (_rebuild_variable, (fields,))

    def on_change_settings(self) -> dict[str, float]:
        """The on-change settings this variable gives itself (``deadband``, ...), without the None ones."""
        return {
            name: value
            for name, value in (
                ("deadband", self.deadband),
                ("deadband_percent", self.deadband_percent),
                ("max_age_s", self.max_age_s),
            )
            if value is not None
        }

    def same_definition(self, other: Variable) -> bool:
        """True when both describe the same device value (interval aside)."""
        return (
            self.id == other.id
            and self.address == other.address
            and self.value_type == other.value_type
            and self.reader_type == other.reader_type
        )


class DataCollectionContext:
    """A collection plan: variables, intervals, duration and user metadata.

    ``start_date`` and ``end_date`` (aware UTC datetimes) are ``None`` until the collector sets
    them on start and stop. Everything else is fixed at construction and validated there, raising
    :class:`ConfigurationError` naming the bad value. Ranges: ``id`` is a signed 64-bit integer
    (:data:`MIN_ID` .. :data:`MAX_ID`); ``min_interval_ms`` and ``default_interval_ms`` are ints in
    1 .. :data:`MAX_INTERVAL_MS` (366 days); ``duration_s`` is a finite int or float in
    (0, :data:`MAX_DURATION_S`] (100 years). ``metadata`` is a mapping with str keys, or a
    dataclass or attrs instance (taken as its fields); see :func:`json_metadata`.

    On-change recording defaults for its variables (keyword-only, see :class:`Variable`):
    ``deadband`` or ``deadband_percent`` and ``max_age_s``. A variable's own deadband (absolute
    or percent) replaces the context's; its own ``max_age_s`` replaces the context's.
    """

    __slots__ = (
        "_deadband",
        "_deadband_percent",
        "_deduced",
        "_default_interval_ms",
        "_duration_s",
        "_end_date",
        "_id",
        "_max_age_s",
        "_metadata",
        "_min_interval_ms",
        "_start_date",
        "_variables",
    )

    def __init__(
        self,
        id: int,
        variables: Iterable[Variable],
        min_interval_ms: int = 100,
        default_interval_ms: int = 1000,
        duration_s: float = 86400,
        metadata: Mapping[str, Any] | _DataclassRecord | _AttrsRecord | None = None,
        *,
        deadband: float | None = None,
        deadband_percent: float | None = None,
        max_age_s: float | None = None,
    ) -> None:
        _check_id("id", id, where="DataCollectionContext ")
        where = f"DataCollectionContext {id}: "
        _check_interval("min_interval_ms", min_interval_ms, where=where)
        _check_interval("default_interval_ms", default_interval_ms, where=where)
        if (
            isinstance(duration_s, bool)
            or not isinstance(duration_s, int | float)
            or (isinstance(duration_s, float) and not math.isfinite(duration_s))
            or duration_s <= 0  # exact for ints of any size (no conversion to float)
        ):
            raise ConfigurationError(
                f"{where}duration_s must be a finite number > 0, got {_shown(duration_s)}"
            )
        if duration_s > MAX_DURATION_S:
            raise ConfigurationError(
                f"{where}duration_s must be at most {MAX_DURATION_S:g} s (100 years), "
                f"got {_shown(duration_s)}"
            )
        if isinstance(variables, str | bytes) or not isinstance(variables, Iterable):
            raise ConfigurationError(f"{where}variables must be an iterable of Variable, got {variables!r}")
        plan = tuple(variables)
        seen: set[int] = set()
        for v in plan:
            if not isinstance(v, Variable):
                raise ConfigurationError(f"{where}variables must hold Variable objects, got {v!r}")
            if v.id in seen:
                raise ConfigurationError(f"{where}duplicate variable id {v.id}")
            seen.add(v.id)
        if metadata is not None and not isinstance(metadata, Mapping) and not _is_record(metadata):
            raise ConfigurationError(f"{where}metadata must be a mapping, got {metadata!r}")
        user = json_metadata(metadata or {}, f"{where}metadata") if metadata is not None else {}
        _check_on_change(where, deadband, deadband_percent, max_age_s)
        self._deadband = deadband
        self._deadband_percent = deadband_percent
        self._max_age_s = max_age_s
        self._id = id
        self._variables = plan
        self._min_interval_ms = min_interval_ms
        self._default_interval_ms = default_interval_ms
        self._duration_s = float(duration_s)
        self._metadata: Mapping[str, Any] = types.MappingProxyType(user)
        self._deduced: Mapping[str, Any] = types.MappingProxyType({})
        self._start_date: datetime | None = None
        self._end_date: datetime | None = None

    @property
    def id(self) -> int:
        return self._id

    @property
    def variables(self) -> tuple[Variable, ...]:
        return self._variables

    @property
    def min_interval_ms(self) -> int:
        return self._min_interval_ms

    @property
    def default_interval_ms(self) -> int:
        return self._default_interval_ms

    @property
    def duration_s(self) -> float:
        return self._duration_s

    @property
    def deadband(self) -> float | None:
        """The default absolute deadband of its variables (on-change recording), else None."""
        return self._deadband

    @property
    def deadband_percent(self) -> float | None:
        """The default deadband of its variables in percent of the last recorded value, else None."""
        return self._deadband_percent

    @property
    def max_age_s(self) -> float | None:
        """The default heartbeat of its on-change variables (seconds), else None."""
        return self._max_age_s

    @property
    def metadata(self) -> Mapping[str, Any]:
        """What the user stated (JSON-compatible; dataclasses, dates, paths, enums converted)."""
        return self._metadata

    @property
    def deduced_metadata(self) -> Mapping[str, Any]:
        """What the collector deduced (readers, writers, host, versions, start, end, how it ended).

        Empty until the context starts; completed when it stops. Kept apart from
        :attr:`metadata`, so nothing the user set is overwritten by a deduced value.
        """
        return self._deduced

    @property
    def start_date(self) -> datetime | None:
        """When the collector started the context (aware UTC), else ``None``."""
        return self._start_date

    @property
    def end_date(self) -> datetime | None:
        """When the collector stopped the context (aware UTC), else ``None``."""
        return self._end_date

    def interval_of(self, variable: Variable) -> int:
        """The effective interval of ``variable`` in this context, in ms."""
        return variable.interval_ms if variable.interval_ms is not None else self._default_interval_ms

    def __repr__(self) -> str:
        return (
            f"DataCollectionContext(id={self._id}, variables={len(self._variables)}, "
            f"default_interval_ms={self._default_interval_ms}, duration_s={self._duration_s:g})"
        )


class _DataclassRecord(Protocol):
    """A dataclass instance, as metadata (the type checker's view of what :func:`_is_record` accepts)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


class _AttrsRecord(Protocol):
    """An attrs instance, as metadata."""

    __attrs_attrs__: ClassVar[Any]


def _is_record(value: object) -> bool:
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)) or hasattr(
        type(value), "__attrs_attrs__"
    )


def json_metadata(value: Any, where: str = "metadata", depth: int = 0) -> Any:
    """``value`` as JSON-compatible data, or :class:`ConfigurationError` naming what cannot be stored.

    Mappings with str keys, lists, str, int (signed 64-bit), finite float, bool and None are
    kept; dataclass and attrs instances become dicts, tuples and sets lists (sets sorted when
    they can be), datetimes, dates and times ISO-8601 text, paths text, enums their value,
    NumPy scalars and arrays their Python equivalents. Anything else is refused.
    """
    if depth > 32:
        raise ConfigurationError(f"{where}: nested more than 32 levels deep")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not MIN_ID <= value <= MAX_ID:
            raise ConfigurationError(f"{where}: {_shown(value)} does not fit a signed 64-bit integer")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError(f"{where}: {value!r} cannot be stored as JSON (use None or a string)")
        return value
    if isinstance(value, enum.Enum):
        return json_metadata(value.value, where, depth + 1)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if _is_record(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        else:
            fields = {a.name: getattr(value, a.name) for a in type(value).__attrs_attrs__}
        return json_metadata(fields, where, depth + 1)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigurationError(f"{where}: key {k!r} is not a str")
            out[k] = json_metadata(v, f"{where}[{k!r}]", depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        if isinstance(value, set | frozenset):
            with contextlib.suppress(TypeError):
                items = sorted(items)
        return [json_metadata(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(items)]
    tolist = getattr(value, "tolist", None)  # NumPy scalars and arrays
    if callable(tolist) and type(value).__module__.startswith("numpy"):
        return json_metadata(tolist(), where, depth + 1)
    raise ConfigurationError(
        f"{where}: {type(value).__name__} value {value!r:.80} cannot be stored (JSON-compatible values, "
        "dataclasses, dates, paths and enums are)"
    )


_GOOD = Quality.GOOD


class CollectedVariable:
    """One read of one variable: ``variable``, ``value``, ``read_at`` (aware UTC), ``quality``, ``error``.

    The collector hands readers a :class:`CollectedVariables` batch; iterating it yields these
    items, through which the reader sets ``value``, ``quality`` (defaults to ``GOOD``) and
    optionally ``read_at`` and ``error``. An item left without a value is delivered as ``BAD``.

    An item is a view on one row of its batch (the batch keeps the values in columns, so a
    batch of 100,000 values costs the garbage collector nothing). An item built on its own,
    ``CollectedVariable(variable, value, read_at, quality, error)``, holds its own row until it
    is put into a batch, which then holds the row.
    """

    __slots__ = ("_b", "_i")

    _b: CollectedVariables
    _i: int

    def __init__(
        self,
        variable: Variable,
        value: Any = None,
        read_at: datetime | None = None,
        quality: Quality = _GOOD,
        error: str | None = None,
    ) -> None:
        batch = CollectedVariables.__new__(CollectedVariables)
        batch._vars = [variable]
        batch._values = [value]
        batch._read_ats = [read_at]
        batch._qualities = [quality]
        batch._errors = [error]
        self._b = batch
        self._i = 0

    @property
    def variable(self) -> Variable:
        return self._b._vars[self._i]

    @property
    def value(self) -> Any:
        return self._b._values[self._i]

    @value.setter
    def value(self, value: Any) -> None:
        self._b._values[self._i] = value

    @property
    def read_at(self) -> datetime | None:
        return self._b._read_ats[self._i]

    @read_at.setter
    def read_at(self, value: datetime | None) -> None:
        self._b._read_ats[self._i] = value

    @property
    def quality(self) -> Quality:
        return self._b._qualities[self._i]

    @quality.setter
    def quality(self, value: Quality) -> None:
        self._b._qualities[self._i] = value

    @property
    def error(self) -> str | None:
        return self._b._errors[self._i]

    @error.setter
    def error(self, value: str | None) -> None:
        self._b._errors[self._i] = value

    def set_bad(self, error: str) -> None:
        """Mark this item BAD with ``error`` and no value."""
        b, i = self._b, self._i
        b._values[i] = None
        b._qualities[i] = Quality.BAD
        b._errors[i] = error

    def __repr__(self) -> str:
        return (
            f"CollectedVariable(variable_id={self.variable.id}, value={self.value!r}, "
            f"read_at={self.read_at!r}, quality={self.quality}, error={self.error!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CollectedVariable):
            return NotImplemented
        return (
            self.variable == other.variable
            and self.value == other.value
            and self.read_at == other.read_at
            and self.quality is other.quality
            and self.error == other.error
        )

    __hash__ = None  # type: ignore[assignment]  # mutable


def _view(batch: CollectedVariables, index: int) -> CollectedVariable:
    item = object.__new__(CollectedVariable)
    item._b = batch
    item._i = index
    return item


class CollectedVariables(Sequence[CollectedVariable]):
    """An ordered, sized batch of :class:`CollectedVariable`: what a reader fills and writers get.

    Iterating or indexing yields item views. For speed, the batch also exposes its columns as
    live lists of equal length: :attr:`variables`, :attr:`values`, :attr:`read_ats`,
    :attr:`qualities` and :attr:`errors`. A reader may assign their elements by index (never
    change their length); a writer may read them, e.g. ``zip(batch.variables, batch.values)``.
    """

    __slots__ = ("_errors", "_qualities", "_read_ats", "_values", "_vars")

    _vars: list[Variable]
    _values: list[Any]
    _read_ats: list[datetime | None]
    _qualities: list[Quality]
    _errors: list[str | None]

    def __init__(self, items: Iterable[CollectedVariable] = ()) -> None:
        """A batch holding ``items``; each item becomes a view on its row in this batch."""
        items = list(items)
        self._vars = [it.variable for it in items]
        self._values = [it.value for it in items]
        self._read_ats = [it.read_at for it in items]
        self._qualities = [it.quality for it in items]
        self._errors = [it.error for it in items]
        for i, it in enumerate(items):
            it._b = self
            it._i = i

    @classmethod
    def of(cls, variables: Iterable[Variable], read_at: datetime | None = None) -> CollectedVariables:
        """A fresh batch with one empty (GOOD, no value) item per variable."""
        batch = cls.__new__(cls)
        batch._vars = list(variables)
        n = len(batch._vars)
        batch._values = [None] * n
        batch._read_ats = [read_at] * n
        batch._qualities = [_GOOD] * n
        batch._errors = [None] * n
        return batch

    @classmethod
    def _columns(
        cls,
        variables: list[Variable],
        values: list[Any],
        read_ats: list[datetime | None],
        qualities: list[Quality],
        errors: list[str | None],
    ) -> CollectedVariables:
        batch = cls.__new__(cls)
        batch._vars = variables
        batch._values = values
        batch._read_ats = read_ats
        batch._qualities = qualities
        batch._errors = errors
        return batch

    @property
    def variables(self) -> list[Variable]:
        """The variables, in order (do not modify)."""
        return self._vars

    @property
    def values(self) -> list[Any]:
        return self._values

    @property
    def read_ats(self) -> list[datetime | None]:
        return self._read_ats

    @property
    def qualities(self) -> list[Quality]:
        return self._qualities

    @property
    def errors(self) -> list[str | None]:
        return self._errors

    def __len__(self) -> int:
        return len(self._vars)

    def __iter__(self) -> Iterator[CollectedVariable]:
        return map(_view, itertools.repeat(self, len(self._vars)), range(len(self._vars)))

    @overload
    def __getitem__(self, index: int) -> CollectedVariable: ...

    @overload
    def __getitem__(self, index: slice) -> CollectedVariables: ...

    def __getitem__(self, index: int | slice) -> CollectedVariable | CollectedVariables:
        if isinstance(index, slice):
            return CollectedVariables._columns(
                self._vars[index],
                self._values[index],
                self._read_ats[index],
                self._qualities[index],
                self._errors[index],
            )
        n = len(self._vars)
        if not -n <= index < n:
            raise IndexError("CollectedVariables index out of range")
        return _view(self, index % n)

    def __repr__(self) -> str:
        return f"CollectedVariables({len(self._vars)} items)"
