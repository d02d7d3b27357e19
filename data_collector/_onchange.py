"""On-change recording: which of the samples read for a context that context records.

By default a context records every sample read for it. A variable whose effective settings (its
own, else its context's) include ``deadband``, ``deadband_percent`` or ``max_age_s`` is recorded
*on change* instead, by each context on its own (two contexts reading the same variable may
record it differently). For such a variable, a sample is recorded when

- it is the first one the context gets since it started or resumed;
- it is BAD (a BAD sample is never suppressed, including the BAD samples of missed boundaries);
- its quality differs from that of the last recorded sample (GOOD, UNCERTAIN, BAD), or its
  ``error`` text does;
- its value changed beyond the deadband against the **last recorded** value (not the last read
  one, so a slow drift is recorded once it adds up to more than the deadband):

  - numbers (``int``, ``float``, any :class:`numbers.Real` but ``bool``): recorded when
    ``|new - last| > deadband``, or with ``deadband_percent`` when
    ``|new - last| > deadband_percent / 100 * |last|`` (percent of the last recorded value's
    magnitude, as Kepware's data logger does; so after a recorded 0 every change is recorded,
    and a value that crosses zero is better given an absolute deadband). A deadband of 0 (the
    default when only ``max_age_s`` is given) records every change;
  - NaN counts as a value of its own: NaN after NaN is unchanged, a number after NaN or NaN
    after a number is a change; an infinity after anything else is a change;
  - values that compare equal (``==``) are unchanged (so ``1``, ``1.0`` and ``True`` are one
    value); anything else that is not a number (``bool``, ``str``, ``bytes``, ...) is recorded on
    any change; a value that cannot be compared (``==`` raises, or gives no truth value, as a
    NumPy array does) is recorded;
- or the heartbeat is due: with ``max_age_s``, an unchanged value is recorded again at the first
  due boundary at least ``max_age_s`` after the boundary of the last recorded sample, so the
  recorded samples of an unchanged value are at most ``max_age_s`` apart, rounded up to a
  multiple of the variable's interval (ages count in boundaries, the collector's own clock,
  never in a reader's ``read_at``, which may be a device's timestamp).

Everything else is *suppressed*: counted (``ReaderStats.suppressed_samples`` and
``ContextStats.suppressed_samples``) and handed to no writer, spool or event.

No silent gaps, with on-change recording: every due boundary still yields exactly one sample for
the context, and that sample is recorded or suppressed. A suppressed sample is not a gap: it was
read GOOD (or UNCERTAIN) with the quality and error of the last recorded sample and within the
deadband of its value, so the last recorded value still holds, and the heartbeat bounds how old
it can be. A boundary that passed without a read is still a recorded BAD sample, and so is
every BAD read. Per context: samples read for it (and missed) = samples delivered to its
writers + samples suppressed.

The filter state (the last recorded sample per context and variable) lives in the reader task,
is kept when other contexts start or stop, starts afresh when the context resumes, and is not
persisted: a new run records its first sample. A variable without on-change settings costs
nothing: a tick whose deliveries have none does not enter this module.

Speed. The state is kept in columns (one list per field, a slot per variable of the context),
and a delivery of many items is screened with C-level passes over its columns (``map`` of
``operator`` functions, ``itertools.compress``): which items changed quality or error, which
values differ (``!=``), or for ``float``/``int`` variables which moved beyond the deadband
(``abs(new - last) <= threshold``), and whose heartbeat is due. Only the items that screen as
moved are checked one by one (:func:`changed`, the exact rule), so the cost per item is a few
tens of nanoseconds, whatever the share that changes. Whenever a screen cannot be trusted (a
bool or other type among the values of a ``float`` variable, an infinite threshold, anything
that raises), the delivery falls back to the item-by-item loop, which is the reference: both
give the same decisions (checked by ``test/onchange_test.py``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import abs as _abs
from operator import add, ge, is_, is_not, itemgetter, le, mul, ne, not_, sub
from typing import Any

from ._model import ON_CHANGE_FIELDS, DataCollectionContext, Quality, Variable

__all__ = [
    "ChangeRule",
    "ContextFilter",
    "DeliveryRules",
    "changed",
    "delivery_rules",
    "on_change_metadata",
    "rule_of",
]

_INF = math.inf
_GOOD = Quality.GOOD
_BAD = Quality.BAD
#: The heartbeat of an item without one (never due).
_NO_AGE = 1 << 62
#: Value types compared as numbers by the vectorised screen (others: ``!=`` then :func:`changed`).
NUMERIC_VALUE_TYPES = frozenset({"float", "int"})
#: Groups smaller than this are filtered item by item (the screens' set-up would cost more).
VECTOR_MIN_ITEMS = 8
_NUMBERS = frozenset({int, float, type(None)})
#: The most per-group hints a filter keeps (beyond: dropped, they are only shortcuts).
_MAX_HINTS = 512


@dataclass(frozen=True, slots=True)
class ChangeRule:
    """The effective on-change settings of one variable in one context.

    ``deadband`` is absolute (0 when ``fraction`` is used); ``fraction`` is ``deadband_percent``
    / 100, else None; ``max_age_ms`` the heartbeat in ms (None: none); ``interval_ms`` the
    variable's interval in the context (the heartbeat's ages count in its boundaries).
    """

    deadband: float
    fraction: float | None
    max_age_ms: int | None
    interval_ms: int


def rule_of(context: DataCollectionContext, variable: Variable) -> ChangeRule | None:
    """How ``context`` records ``variable``: a :class:`ChangeRule`, or None for every sample.

    A variable's own deadband (absolute or percent) replaces the context's; its own
    ``max_age_s`` replaces the context's. On change when any of the three is set.
    """
    band, percent = variable.deadband, variable.deadband_percent
    if band is None and percent is None:
        band, percent = context.deadband, context.deadband_percent
    age = variable.max_age_s if variable.max_age_s is not None else context.max_age_s
    if band is None and percent is None and age is None:
        return None
    return ChangeRule(
        deadband=float(band) if band is not None else 0.0,
        fraction=float(percent) / 100.0 if percent is not None else None,
        max_age_ms=math.ceil(age * 1000) if age is not None else None,
        interval_ms=context.interval_of(variable),
    )


def _getter(
    indexes: tuple[int, ...], size: int, *, ascending: bool = True
) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """A function picking ``indexes`` (distinct, below ``size``) out of a sequence of ``size``.

    ``ascending``: the caller knows them in ascending order (then all of them is the identity).
    """
    if len(indexes) == size and (ascending or indexes == tuple(range(size))):  # all, in order
        return lambda seq: seq
    if len(indexes) == 1:
        (only,) = indexes
        return lambda seq: (seq[only],)
    get: Callable[[Sequence[Any]], Sequence[Any]] = itemgetter(*indexes)
    return get


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: keys the filter's hints
class _Group:
    """Items of one delivery that are compared the same way, as columns.

    ``positions`` in the delivery, ``slots`` in the filter's state; ``numeric`` for variables
    declared float or int; ``fractions`` None when no item has a percent deadband; ``ages``
    ``_NO_AGE`` for items without a heartbeat; ``interval`` when all items share one.
    """

    positions: tuple[int, ...]
    slots: tuple[int, ...]
    rules: tuple[ChangeRule, ...]
    numeric: bool
    bands: tuple[float, ...]
    fractions: tuple[float, ...] | None
    ages: tuple[int, ...]
    intervals: tuple[int, ...]
    interval: int | None
    any_age: bool
    at: Callable[[Sequence[Any]], Sequence[Any]]  # picks the group's items out of a delivery column
    state: Callable[[Sequence[Any]], Sequence[Any]]  # picks the group's slots out of a state column


def _group(
    positions: list[int], slots: list[int], rules: list[ChangeRule], numeric: bool, size: int, n_slots: int
) -> _Group:
    intervals = tuple(r.interval_ms for r in rules)
    ages = tuple(r.max_age_ms if r.max_age_ms is not None else _NO_AGE for r in rules)
    pos, sl = tuple(positions), tuple(slots)
    return _Group(
        positions=pos,
        slots=sl,
        rules=tuple(rules),
        numeric=numeric,
        bands=tuple(r.deadband for r in rules),
        fractions=tuple(r.fraction or 0.0 for r in rules)
        if any(r.fraction is not None for r in rules)
        else None,
        ages=ages,
        intervals=intervals,
        interval=intervals[0] if len(set(intervals)) == 1 else None,
        any_age=any(a != _NO_AGE for a in ages),
        at=_getter(pos, size),
        state=_getter(sl, n_slots, ascending=False),  # read order: the context's order may differ
    )


@dataclass(frozen=True, slots=True)
class DeliveryRules:
    """How a context records the items of one delivery: ``plain`` positions are always recorded;
    ``groups`` hold the others (numbers apart from the rest)."""

    plain: tuple[int, ...]
    groups: tuple[_Group, ...]
    size: int


def delivery_rules(context: DataCollectionContext, variables: Sequence[Variable]) -> DeliveryRules | None:
    """The rules of a delivery of ``variables`` to ``context``, or None when it records every item."""
    rules = [rule_of(context, v) for v in variables]
    if all(r is None for r in rules):
        return None
    slot_of = {v.id: i for i, v in enumerate(context.variables)}
    n_slots = len(context.variables)
    plain: list[int] = []
    parts: dict[bool, tuple[list[int], list[int], list[ChangeRule]]] = {}
    for k, (v, r) in enumerate(zip(variables, rules, strict=True)):
        if r is None:
            plain.append(k)
            continue
        positions, slots, group_rules = parts.setdefault(v.value_type in NUMERIC_VALUE_TYPES, ([], [], []))
        positions.append(k)
        slots.append(slot_of[v.id])
        group_rules.append(r)
    groups = tuple(
        _group(positions, slots, group_rules, numeric, len(variables), n_slots)
        for numeric, (positions, slots, group_rules) in sorted(parts.items())
    )
    return DeliveryRules(tuple(plain), groups, len(variables))


def on_change_metadata(context: DataCollectionContext) -> dict[str, Any] | None:
    """What a store keeps about the context's on-change recording (deduced metadata), or None.

    ``{"deadband": ..., "max_age_s": ..., "variables": {"<id>": {...}}}``: the context's
    defaults and each variable's own settings (only those given), so a reader of the store
    knows that a missing sample of such a variable means "unchanged", not "not read".
    """
    out: dict[str, Any] = {
        name: getattr(context, name) for name in ON_CHANGE_FIELDS if getattr(context, name) is not None
    }
    own = {str(v.id): v.on_change_settings() for v in context.variables if v.on_change_settings()}
    if own:
        out["variables"] = own
    return out or None


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def changed(new: Any, last: Any, rule: ChangeRule) -> bool:
    """Whether ``new`` differs from the last recorded value ``last`` beyond ``rule``'s deadband.

    The exact rule (the module documentation says it in words).
    """
    try:
        if new == last:
            return False
        tn, tl = type(new), type(last)
        if (tn is float or tn is int or _is_number(new)) and (tl is float or tl is int or _is_number(last)):
            diff = abs(new - last)
            if diff != diff:  # NaN on one side at least: NaN after NaN is unchanged
                return not (new != new and last != last)
            fraction = rule.fraction
            threshold = rule.deadband if fraction is None else abs(last) * fraction
            return bool(diff == _INF or not diff <= threshold)
        return True  # not numbers, and not equal
    except Exception:  # values that cannot be compared are recorded
        return True


class _Fallback(Exception):
    """Internal: a screen cannot be trusted for this delivery; filter it item by item."""


class ContextFilter:
    """The on-change state of one context for one reader: the last recorded sample per variable.

    ``context`` and ``since_ms`` (its start or resume) identify the run it belongs to; the reader
    task drops it when the context leaves its plan or resumes. The state is four columns with a
    slot per variable of the context: value, quality (None: nothing recorded yet), error and the
    boundary (ms) of the last recorded sample.
    """

    __slots__ = (
        "_beats",
        "_dense",
        "_errors",
        "_qualities",
        "_slot",
        "_times",
        "_values",
        "context",
        "fallbacks",
        "since_ms",
    )

    def __init__(self, context: DataCollectionContext, since_ms: int) -> None:
        self.context = context
        self.since_ms = since_ms
        n = len(context.variables)
        self._slot = {v.id: i for i, v in enumerate(context.variables)}
        self._values: list[Any] = [None] * n
        self._qualities: list[Quality | None] = [None] * n
        self._errors: list[str | None] = [None] * n
        self._times: list[int] = [0] * n
        self.fallbacks = 0  # deliveries the screens handed to the item-by-item loop
        # hints per group (a group lives in a memoised tick plan; a new plan makes new ones, so
        # they are dropped beyond a bound): deliveries left without the ``!=`` pass, and the
        # earliest time (ms) a heartbeat can be due
        self._dense: dict[_Group, int] = {}
        self._beats: dict[_Group, int] = {}

    def select(
        self,
        rules: DeliveryRules,
        values: Sequence[Any],
        qualities: Sequence[Quality],
        errors: Sequence[str | None],
        now_ms: int,
        *,
        vector: bool = True,
    ) -> list[int] | None:
        """The positions of the items to record, in order; None when every item is recorded.

        Updates the state with what it records. ``now_ms`` is the wake-up's time (the boundary
        of each item is the last multiple of its interval at or before it). ``vector=False``
        filters item by item (the reference the screens are tested against).
        """
        keep: list[int] = list(rules.plain)
        if len(self._beats) + len(self._dense) > _MAX_HINTS:
            self._beats.clear()  # safe: the next delivery of each group looks at every heartbeat
            self._dense.clear()
        for g in rules.groups:
            if vector and len(g.positions) >= VECTOR_MIN_ITEMS:
                try:
                    picked = self._screen(g, values, qualities, errors, now_ms)
                except Exception:  # _Fallback, or a value the screens cannot handle
                    self.fallbacks += 1
                    picked = self._items(g, values, qualities, errors, now_ms)
            else:
                picked = self._items(g, values, qualities, errors, now_ms)
            keep += picked
        if len(keep) == rules.size:
            return None
        if rules.plain or len(rules.groups) > 1:
            keep.sort()
        return keep

    def _items(
        self,
        g: _Group,
        values: Sequence[Any],
        qualities: Sequence[Quality],
        errors: Sequence[str | None],
        now_ms: int,
    ) -> list[int]:
        """The reference: each item of ``g`` in turn (records it in the state when kept)."""
        lv, lq, le, lt = self._values, self._qualities, self._errors, self._times
        bad = _BAD
        keep: list[int] = []
        for k, pos in enumerate(g.positions):
            s = g.slots[k]
            rule = g.rules[k]
            value, quality, error = values[pos], qualities[pos], errors[pos]
            t = now_ms - now_ms % rule.interval_ms
            last_q = lq[s]
            if (
                last_q is not None
                and quality is last_q
                and quality is not bad
                and error == le[s]
                and not changed(value, lv[s], rule)
                and t - lt[s] < g.ages[k]
            ):
                continue  # suppressed
            lv[s], lq[s], le[s], lt[s] = value, quality, error, t
            keep.append(pos)
        return keep

    def _screen(
        self,
        g: _Group,
        values: Sequence[Any],
        qualities: Sequence[Quality],
        errors: Sequence[str | None],
        now_ms: int,
    ) -> list[int]:
        """The same decisions as :meth:`_items`, from C-level passes over the group's columns."""
        vals, qs, es = g.at(values), g.at(qualities), g.at(errors)
        lv, lq, le = g.state(self._values), g.state(self._qualities), g.state(self._errors)
        m = len(vals)
        every = range(m)
        picked: set[int] = set()
        # a different quality (or nothing recorded yet: None), BAD, a different error text
        if qs.count(_GOOD) != m or lq.count(_GOOD) != m:
            picked.update(compress(every, map(is_not, qs, lq)))
            picked.update(compress(every, map(is_, qs, repeat(_BAD))))
        if es.count(None) != m or le.count(None) != m:
            picked.update(compress(every, map(ne, es, le)))
        # values that moved: screened, then checked one by one with the exact rule
        # (``!=`` raises for values without a truth value, such as NumPy arrays: item by item then)
        moved = self._moved_numbers(g, vals, lv, every) if g.numeric else compress(every, map(ne, vals, lv))
        rules = g.rules
        picked.update(k for k in moved if k not in picked and changed(vals[k], lv[k], rules[k]))
        # heartbeats due: looked for only once the earliest one can be (recorded times only grow,
        # so the earliest possible heartbeat computed after a look stays a lower bound)
        beat = g.any_age and now_ms >= self._beats.get(g, 0)
        if beat:
            if g.interval is not None:
                boundaries: Iterable[int] = repeat(now_ms - now_ms % g.interval)
            else:
                boundaries = map(sub, repeat(now_ms), map(_mod_of(now_ms), g.intervals))
            picked.update(compress(every, map(ge, map(sub, boundaries, g.state(self._times)), g.ages)))
        if picked:
            lv_all, lq_all, le_all, lt_all = self._values, self._qualities, self._errors, self._times
            slots, positions, intervals = g.slots, g.positions, g.intervals
            out = sorted(picked)
            for k in out:
                s = slots[k]
                lv_all[s], lq_all[s], le_all[s] = vals[k], qs[k], es[k]
                lt_all[s] = now_ms - now_ms % intervals[k]
        if beat:
            self._beats[g] = min(map(add, g.state(self._times), g.ages))
        return [positions[k] for k in out] if picked else []

    def _moved_numbers(
        self, g: _Group, vals: Sequence[Any], lv: Sequence[Any], every: range
    ) -> Iterable[int]:
        """Items of a float/int group whose ``abs(new - last)`` is not within the threshold.

        Values equal to the last recorded ones are unchanged whatever the deadband, so a ``!=``
        pass first narrows the deadband arithmetic to the values that differ at all; when most
        of them differ (noisy values), that pass is skipped for the next 32 deliveries.
        """
        skip = self._dense.get(g, 0)
        if skip > 0:
            self._dense[g] = skip - 1
            return _moved_numbers_of(g.bands, g.fractions, vals, lv, every)
        m = len(vals)
        differ = list(compress(every, map(ne, vals, lv)))
        self._dense[g] = 32 if len(differ) * 4 > m and None not in lv else 0  # (None: first samples)
        if len(differ) == m:
            return _moved_numbers_of(g.bands, g.fractions, vals, lv, every)
        if not differ:
            return ()
        pick = _getter(tuple(differ), m)
        moved = _moved_numbers_of(
            pick(g.bands),
            None if g.fractions is None else pick(g.fractions),
            pick(vals),
            pick(lv),
            range(len(differ)),
        )
        return [differ[k] for k in moved]

    def note_bad(self, variable_id: int, error: str | None, at_ms: int) -> None:
        """A BAD sample recorded for the variable outside :meth:`select` (a missed boundary)."""
        s = self._slot.get(variable_id)
        if s is not None:
            self._values[s], self._qualities[s], self._errors[s], self._times[s] = None, _BAD, error, at_ms


def _moved_numbers_of(
    bands: Sequence[float],
    fractions: Sequence[float] | None,
    vals: Sequence[Any],
    lv: Sequence[Any],
    every: range,
) -> list[int]:
    """The items whose ``abs(new - last)`` is not within ``bands + fractions * abs(last)``."""
    types = set(map(type, vals))
    types.update(map(type, lv))
    if not types <= _NUMBERS:  # a bool, a NumPy scalar, a str...: the exact loop decides
        raise _Fallback
    if type(None) in types:  # BAD now or before (or nothing recorded): picked by quality
        ok = [k for k in compress(every, map(is_not, vals, repeat(None))) if lv[k] is not None]
        if not ok:
            return []
        pick = _getter(tuple(ok), len(vals))
        moved = _moved_numbers_of(
            pick(bands), None if fractions is None else pick(fractions), pick(vals), pick(lv), range(len(ok))
        )
        return [ok[k] for k in moved]
    diffs = map(_abs, map(sub, vals, lv))
    if fractions is None:
        thresholds: Sequence[float] = bands
    else:
        relative = map(mul, map(_abs, lv), fractions)
        thresholds = list(map(add, bands, relative) if any(bands) else relative)
        if _INF in thresholds:  # an infinite last value: the exact rule decides
            raise _Fallback
    return list(compress(every, map(not_, map(le, diffs, thresholds))))


def _mod_of(now_ms: int) -> Callable[[int], int]:
    return now_ms.__mod__
