"""Pure schedule arithmetic: which variables a reader reads when, and for which contexts.

No threads, no clock. From the running, unpaused contexts, :class:`ReaderPlan` computes for one
reader type the boundaries at which something is due and, for a span of time that a wake-up
covers, the :class:`TickPlan`: the variables to read once, and for each context the items due for
it. Times are integer milliseconds since the Unix epoch.

A variable with effective interval ``i`` is due at ``t`` when ``t % i == 0``: boundaries are
aligned to wall-clock multiples, so a 1000 ms variable is read at whole seconds whichever context
asked. The GCD of the intervals (``tick_ms``) says which boundaries exist; the reader sleeps only
to the next one at which something is due (:meth:`ReaderPlan.next_due`), so 1000 ms and 1001 ms
cost about two wake-ups a second, not a thousand.

A wake-up covers the span ``(done, now]``: every boundary in it that it has not handled yet. For
each interval with a boundary in the span, the *latest* such boundary is covered by the one read
made now; every earlier boundary of that interval in the span is *missed*
(:meth:`ReaderPlan.missed`) and becomes, per context, a BAD sample stamped at that boundary.
Tick plans are memoised per set of due intervals in a bounded LRU, so memory does not grow with
the length of a run.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from ._model import DataCollectionContext, Variable
from ._onchange import DeliveryRules, delivery_rules

__all__ = ["Delivery", "Missed", "ReaderPlan", "TickPlan", "effective_interval"]

#: How many tick plans a reader keeps memoised (least recently used evicted first).
PLAN_CACHE_SIZE = 64


def effective_interval(context: DataCollectionContext, variable: Variable) -> int:
    """The interval (ms) at which ``context`` wants ``variable``."""
    return context.interval_of(variable)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The part of one read that goes to one context.

    ``indexes`` point into :attr:`TickPlan.variables` (the read order); ``variables`` are the
    context's own :class:`Variable` objects for those indexes. ``shared`` is true when they are
    the very objects read (so read items can be handed on as they are), and ``whole`` when the
    context gets every item of the read, in read order. ``on_change`` holds the on-change rules
    of its items (see :mod:`._onchange`), None when the context records every one of them.
    """

    context: DataCollectionContext
    indexes: tuple[int, ...]
    variables: tuple[Variable, ...]
    shared: bool
    whole: bool
    on_change: DeliveryRules | None = None


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What one wake-up does: read ``variables`` once, then hand each delivery its items."""

    variables: tuple[Variable, ...]
    deliveries: tuple[Delivery, ...]
    ids: frozenset[int] = frozenset()  # the ids of ``variables`` (for O(BAD) bookkeeping per read)


@dataclass(frozen=True, slots=True)
class Missed:
    """Boundaries of one interval that a wake-up passed without a read of their own.

    For ``context``, each of ``variables`` gets one BAD sample at each time in ``times_ms``.
    """

    context: DataCollectionContext
    interval_ms: int
    times_ms: tuple[int, ...]
    variables: tuple[Variable, ...]

    @property
    def samples(self) -> int:
        return len(self.times_ms) * len(self.variables)


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
    collector checks that before building a plan). ``since_ms`` gives, per context (same
    order), the time from which it wants samples (its start or resume): no missed sample is made
    for a boundary before it.
    """

    reader_type: str
    contexts: Sequence[DataCollectionContext]
    since_ms: Sequence[int] = ()
    tick_ms: int = field(init=False)
    variables: tuple[Variable, ...] = field(init=False)
    _intervals: dict[int, list[_Interest]] = field(init=False, repr=False)
    _by_context: dict[int, list[tuple[int, tuple[Variable, ...]]]] = field(init=False, repr=False)
    _cache: OrderedDict[frozenset[int], TickPlan] = field(init=False, repr=False)

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
        by_context: dict[int, list[tuple[int, tuple[Variable, ...]]]] = {}
        for interval, interests in intervals.items():
            per: dict[int, list[Variable]] = {}
            for it in interests:
                per.setdefault(it.context_index, []).append(it.variable)
            by_context[interval] = [(ci, tuple(vs)) for ci, vs in sorted(per.items())]
        self._by_context = by_context
        if len(self.since_ms) not in (0, len(self.contexts)):
            raise ValueError("since_ms must give one time per context")
        self._cache = OrderedDict()

    @classmethod
    def build(
        cls,
        reader_type: str,
        contexts: Iterable[DataCollectionContext],
        since_ms: Mapping[int, int] | None = None,
    ) -> ReaderPlan:
        """The plan of ``reader_type`` for ``contexts``; ``since_ms`` maps context id to start time."""
        ctxs = tuple(contexts)
        since = tuple((since_ms or {}).get(c.id, 0) for c in ctxs) if since_ms else ()
        return cls(reader_type, ctxs, since)

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

    # -- time arithmetic ------------------------------------------------------------------------
    def next_due(self, after_ms: int) -> int:
        """The first boundary strictly after ``after_ms`` at which something is due."""
        return min((after_ms // i + 1) * i for i in self._intervals)

    def last_due(self, at_ms: int) -> int:
        """The last boundary at or before ``at_ms`` at which something is due."""
        return max(at_ms // i * i for i in self._intervals)

    def due_intervals(self, done_ms: int, now_ms: int) -> frozenset[int]:
        """The intervals with at least one boundary in ``(done_ms, now_ms]``."""
        return frozenset(i for i in self._intervals if now_ms // i > done_ms // i)

    def boundaries(self, done_ms: int, now_ms: int, limit: int) -> Iterator[int]:
        """The due boundaries in ``(done_ms, now_ms]``, ascending, at most ``limit`` of them."""
        t = done_ms
        for _ in range(limit):
            t = self.next_due(t)
            if t > now_ms:
                return
            yield t

    # -- what a wake-up does --------------------------------------------------------------------
    def due(self, t_ms: int) -> TickPlan | None:
        """The tick plan at boundary ``t_ms`` alone, or ``None`` when nothing is due then."""
        return self.plan_for(frozenset(i for i in self._intervals if t_ms % i == 0))

    def plan_for(self, due_intervals: frozenset[int]) -> TickPlan | None:
        """The tick plan reading everything due at ``due_intervals`` (memoised, bounded LRU)."""
        if not due_intervals:
            return None
        cache = self._cache
        plan = cache.get(due_intervals)
        if plan is not None:
            cache.move_to_end(due_intervals)
            return plan
        plan = cache[due_intervals] = self._compute(due_intervals)
        if len(cache) > PLAN_CACHE_SIZE:
            cache.popitem(last=False)
        return plan

    def missed(self, done_ms: int, now_ms: int, max_samples: int) -> tuple[list[Missed], int]:
        """The boundaries in ``(done_ms, now_ms]`` that the read made now does not cover.

        Per interval, the latest boundary in the span is covered by the read; the earlier ones are
        missed, for each context that wants that interval (and wanted samples by then). Returns
        the missed items, at most ``max_samples`` samples in all, and how many more were missed
        beyond that bound (the oldest are the ones left out).
        """
        out: list[Missed] = []
        budget = max_samples
        over = 0
        since = self.since_ms
        for interval, per_context in self._by_context.items():
            count = now_ms // interval - done_ms // interval - 1
            if count <= 0:
                continue
            latest = now_ms // interval * interval
            for ci, variables in per_context:
                first = latest - count * interval  # the oldest missed boundary
                if since:
                    floor = since[ci]
                    if first < floor:
                        first = -(-floor // interval) * interval
                n = (latest - first) // interval
                if n <= 0:
                    continue
                fits = budget // len(variables)
                if fits < n:
                    over += (n - fits) * len(variables)
                    first = latest - fits * interval
                    n = fits
                if n <= 0:
                    continue
                budget -= n * len(variables)
                times = tuple(range(first, latest, interval))
                out.append(Missed(self.contexts[ci], interval, times, variables))
        return out, over

    def _compute(self, due_intervals: frozenset[int]) -> TickPlan:
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
                    on_change=delivery_rules(self.contexts[ci], own),
                )
            )
        read = tuple(self.variables[vi] for vi in read_order)
        return TickPlan(read, tuple(deliveries), frozenset(v.id for v in read))
