"""Pure schedule arithmetic: which variables a reader reads at which tick, for which contexts.

No threads, no clock. From the running, unpaused contexts, :class:`ReaderPlan` computes for one
reader type the tick (the GCD of the effective intervals of its variables) and, for any tick time
``t_ms`` (milliseconds since the Unix epoch, a multiple of the tick), the :class:`TickPlan`:
the variables to read once, and for each context the items due for it at that tick.

A variable with interval ``i`` is due at ``t_ms`` when ``t_ms % i == 0``: ticks are aligned to
wall-clock multiples, so a 1000 ms variable is read at whole seconds whichever context asked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._model import DataCollectionContext, Variable

__all__ = ["Delivery", "ReaderPlan", "TickPlan", "effective_interval"]


def effective_interval(context: DataCollectionContext, variable: Variable) -> int:
    """The interval (ms) at which ``context`` wants ``variable``."""
    return context.interval_of(variable)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The part of one tick's read that goes to one context.

    ``indexes`` point into :attr:`TickPlan.variables` (the read order); ``variables`` are the
    context's own :class:`Variable` objects for those indexes. ``shared`` is true when they are
    the very objects read (so read items can be handed on as they are), and ``whole`` when the
    context gets every item of the read, in read order.
    """

    context: DataCollectionContext
    indexes: tuple[int, ...]
    variables: tuple[Variable, ...]
    shared: bool
    whole: bool


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What one tick does: read ``variables`` once, then hand each delivery its items."""

    variables: tuple[Variable, ...]
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class _Interest:
    var_index: int
    context_index: int
    variable: Variable


@dataclass
class ReaderPlan:
    """The schedule of one reader type for a fixed set of running contexts.

    ``contexts`` are in start order; each contributes its variables whose ``reader_type`` is
    ``reader_type``. The first context to name a variable id provides the representative
    :class:`Variable` that is read (contexts sharing an id must agree on its definition; the
    collector checks that before building a plan).
    """

    reader_type: str
    contexts: Sequence[DataCollectionContext]
    tick_ms: int = field(init=False)
    variables: tuple[Variable, ...] = field(init=False)
    _intervals: dict[int, list[_Interest]] = field(init=False, repr=False)
    _cache: dict[frozenset[int], TickPlan | None] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        order: dict[int, int] = {}
        reps: list[Variable] = []
        intervals: dict[int, list[_Interest]] = {}
        for ci, ctx in enumerate(self.contexts):
            for v in ctx.variables:
                if v.reader_type != self.reader_type:
                    continue
                vi = order.get(v.id)
                if vi is None:
                    vi = order[v.id] = len(reps)
                    reps.append(v)
                intervals.setdefault(ctx.interval_of(v), []).append(_Interest(vi, ci, v))
        self.variables = tuple(reps)
        self._intervals = intervals
        self.tick_ms = math.gcd(*intervals) if intervals else 0
        self._cache = {}

    @classmethod
    def build(cls, reader_type: str, contexts: Iterable[DataCollectionContext]) -> ReaderPlan:
        return cls(reader_type, tuple(contexts))

    @property
    def empty(self) -> bool:
        return not self.variables

    @property
    def intervals(self) -> tuple[int, ...]:
        """The distinct effective intervals in this plan, ascending."""
        return tuple(sorted(self._intervals))

    def variable_intervals(self) -> dict[Variable, int]:
        """Each variable read, with the interval at which it is read (GCD of the wanted intervals)."""
        out: dict[int, int] = {}
        for interval, interests in self._intervals.items():
            for it in interests:
                out[it.var_index] = math.gcd(out.get(it.var_index, 0), interval)
        return {self.variables[vi]: ms for vi, ms in sorted(out.items())}

    def due(self, t_ms: int) -> TickPlan | None:
        """The tick plan at ``t_ms`` (epoch ms), or ``None`` when nothing is due then."""
        key = frozenset(i for i in self._intervals if t_ms % i == 0)
        try:
            return self._cache[key]
        except KeyError:
            plan = self._cache[key] = self._compute(key)
            return plan

    def _compute(self, due_intervals: frozenset[int]) -> TickPlan | None:
        if not due_intervals:
            return None
        # per context: var_index -> the context's variable (a context names an id once)
        per_context: dict[int, dict[int, Variable]] = {}
        due_vars: set[int] = set()
        for interval in due_intervals:
            for it in self._intervals[interval]:
                per_context.setdefault(it.context_index, {})[it.var_index] = it.variable
                due_vars.add(it.var_index)
        read_order = sorted(due_vars)
        position = {vi: pos for pos, vi in enumerate(read_order)}
        deliveries = []
        for ci in sorted(per_context):
            wanted = per_context[ci]
            indexes = tuple(sorted(position[vi] for vi in wanted))
            own = tuple(wanted[read_order[p]] for p in indexes)
            shared = all(own[k] is self.variables[read_order[p]] for k, p in enumerate(indexes))
            deliveries.append(
                Delivery(
                    context=self.contexts[ci],
                    indexes=indexes,
                    variables=own,
                    shared=shared,
                    whole=shared and len(indexes) == len(read_order),
                )
            )
        return TickPlan(tuple(self.variables[vi] for vi in read_order), tuple(deliveries))
