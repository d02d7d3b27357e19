"""The value objects of data-collector: variables, contexts and collected values.

This module imports nothing else from the project (the bottom layer).
"""

from __future__ import annotations

import enum
import math
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload

from ._errors import ConfigurationError

__all__ = [
    "BUILTIN_VALUE_TYPES",
    "CollectedVariable",
    "CollectedVariables",
    "DataCollectionContext",
    "Quality",
    "Variable",
]

#: The value types every reader understands; a reader may declare more in ``value_types``.
BUILTIN_VALUE_TYPES: frozenset[str] = frozenset({"float", "int", "bool", "str"})


class Quality(enum.Enum):
    """How trustworthy a collected value is (the OPC UA status classes)."""

    GOOD = "GOOD"
    UNCERTAIN = "UNCERTAIN"
    BAD = "BAD"

    def __str__(self) -> str:
        return self.value


def _check_int(name: str, value: object, *, positive: bool = True, where: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{where}{name} must be an int, got {value!r}")
    if positive and value <= 0:
        raise ConfigurationError(f"{where}{name} must be > 0, got {value!r}")
    return value


def _check_text(name: str, value: object, *, where: str = "") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}{name} must be a non-empty str, got {value!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=False)
class Variable:
    """One value to collect: where it lives and how often to read it.

    ``value_type`` is a Python-oriented type name ("float", "int", "bool", "str"; readers may
    declare more); ``reader_type`` names the reader that reads it; ``interval_ms`` overrides the
    context's default interval. Immutable; invalid values raise :class:`ConfigurationError`.
    """

    id: int
    address: str
    value_type: str
    reader_type: str
    interval_ms: int | None = None

    def __post_init__(self) -> None:
        _check_int("id", self.id, positive=False, where="Variable ")
        where = f"Variable {self.id}: "
        _check_text("address", self.address, where=where)
        _check_text("value_type", self.value_type, where=where)
        _check_text("reader_type", self.reader_type, where=where)
        if self.interval_ms is not None:
            _check_int("interval_ms", self.interval_ms, where=where)

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
    them on start and stop. Everything else is fixed at construction and validated there.
    """

    __slots__ = (
        "_default_interval_ms",
        "_duration_s",
        "_end_date",
        "_id",
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
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        _check_int("id", id, positive=False, where="DataCollectionContext ")
        where = f"DataCollectionContext {id}: "
        _check_int("min_interval_ms", min_interval_ms, where=where)
        _check_int("default_interval_ms", default_interval_ms, where=where)
        if (
            isinstance(duration_s, bool)
            or not isinstance(duration_s, int | float)
            or not math.isfinite(duration_s)
            or duration_s <= 0
        ):
            raise ConfigurationError(f"{where}duration_s must be a finite number > 0, got {duration_s!r}")
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
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ConfigurationError(f"{where}metadata must be a mapping, got {metadata!r}")
        self._id = id
        self._variables = plan
        self._min_interval_ms = min_interval_ms
        self._default_interval_ms = default_interval_ms
        self._duration_s = float(duration_s)
        self._metadata: Mapping[str, Any] = types.MappingProxyType(dict(metadata or {}))
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
    def metadata(self) -> Mapping[str, Any]:
        return self._metadata

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


class CollectedVariable:
    """One read of one variable: value, read time (aware UTC), quality and error text.

    Created by the collector for each due variable of a tick; the reader fills ``value``,
    ``quality`` (defaults to ``GOOD``) and optionally ``read_at`` and ``error``. An item left
    without a value is delivered as ``BAD``.
    """

    __slots__ = ("error", "quality", "read_at", "value", "variable")

    def __init__(
        self,
        variable: Variable,
        value: Any = None,
        read_at: datetime | None = None,
        quality: Quality = Quality.GOOD,
        error: str | None = None,
    ) -> None:
        self.variable = variable
        self.value = value
        self.read_at = read_at
        self.quality = quality
        self.error = error

    def set_bad(self, error: str) -> None:
        """Mark this item BAD with ``error`` and no value."""
        self.value = None
        self.quality = Quality.BAD
        self.error = error

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


class CollectedVariables(Sequence[CollectedVariable]):
    """An ordered, sized batch of :class:`CollectedVariable`: what a reader fills and writers get."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[CollectedVariable] = ()) -> None:
        self._items: list[CollectedVariable] = items if type(items) is list else list(items)

    @classmethod
    def of(cls, variables: Iterable[Variable]) -> CollectedVariables:
        """A fresh batch with one empty item per variable."""
        return cls([CollectedVariable(v) for v in variables])

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[CollectedVariable]:
        return iter(self._items)

    @overload
    def __getitem__(self, index: int) -> CollectedVariable: ...

    @overload
    def __getitem__(self, index: slice) -> CollectedVariables: ...

    def __getitem__(self, index: int | slice) -> CollectedVariable | CollectedVariables:
        if isinstance(index, slice):
            return CollectedVariables(self._items[index])
        return self._items[index]

    def __repr__(self) -> str:
        return f"CollectedVariables({len(self._items)} items)"
