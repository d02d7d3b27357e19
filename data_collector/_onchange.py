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
  - anything else (``bool``, ``str``, ``bytes``, ...): recorded on any change (``!=``, or a
    different type); a value that cannot be compared (``==`` raises, or gives no bool) is
    recorded;
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
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._model import ON_CHANGE_FIELDS, DataCollectionContext, Quality, Variable

__all__ = ["ChangeRule", "ContextFilter", "DeliveryRules", "delivery_rules", "on_change_metadata", "rule_of"]

_INF = math.inf
_BAD = Quality.BAD


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


@dataclass(frozen=True, slots=True)
class DeliveryRules:
    """The rules of the items of one delivery, as columns: ``ids`` and ``rules`` (None: record all)."""

    ids: tuple[int, ...]
    rules: tuple[ChangeRule | None, ...]


def delivery_rules(context: DataCollectionContext, variables: Sequence[Variable]) -> DeliveryRules | None:
    """The columns for :meth:`ContextFilter.select`, or None when no item is recorded on change."""
    rules = tuple(rule_of(context, v) for v in variables)
    if all(r is None for r in rules):
        return None
    return DeliveryRules(tuple(v.id for v in variables), rules)


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
    """Whether ``new`` differs from the last recorded value ``last`` beyond ``rule``'s deadband."""
    try:
        tn, tl = type(new), type(last)
        if tn is tl and (new == last or (new != new and last != last)):  # NaN equals NaN here
            return False
        if (tn is float or tn is int or _is_number(new)) and (tl is float or tl is int or _is_number(last)):
            diff = abs(new - last)
            fraction = rule.fraction
            threshold = rule.deadband if fraction is None else abs(last) * fraction
            # NaN on one side: ``not diff <= threshold``; an infinity: ``diff == inf``
            return bool(not diff <= threshold or diff == _INF)
        return True  # not numbers, and not equal (or of different types)
    except Exception:  # values that cannot be compared are recorded
        return True


class ContextFilter:
    """The on-change state of one context for one reader: the last recorded sample per variable.

    ``context`` and ``since_ms`` (its start or resume) identify the run it belongs to; the reader
    task drops it when the context leaves its plan or resumes.
    """

    __slots__ = ("_last", "context", "since_ms")

    def __init__(self, context: DataCollectionContext, since_ms: int) -> None:
        self.context = context
        self.since_ms = since_ms
        # variable id -> [value, quality, error, boundary ms] of its last recorded sample
        self._last: dict[int, list[Any]] = {}

    def select(
        self,
        rules: DeliveryRules,
        values: Sequence[Any],
        qualities: Sequence[Quality],
        errors: Sequence[str | None],
        now_ms: int,
    ) -> list[int] | None:
        """The indexes of the items to record, in order; None when every item is recorded.

        Updates the state with what it records. ``now_ms`` is the wake-up's time (the boundary
        of each item is the last multiple of its interval at or before it).
        """
        last_of = self._last
        keep: list[int] = []
        append = keep.append
        bad = _BAD
        for k, (vid, rule, value, quality, error) in enumerate(
            zip(rules.ids, rules.rules, values, qualities, errors, strict=True)
        ):
            if rule is None:
                append(k)
                continue
            last = last_of.get(vid)
            if last is not None and quality is last[1] and quality is not bad and error == last[2]:
                lv = last[0]
                try:  # the common unchanged case inline; changed() for the rest
                    moved = not (type(value) is type(lv) and value == lv) and changed(value, lv, rule)
                except Exception:  # ``==`` gave something without a truth value (an array)
                    moved = True
                if not moved:
                    age = rule.max_age_ms
                    if age is None:
                        continue
                    t = now_ms - now_ms % rule.interval_ms
                    if t - last[3] < age:
                        continue
                    last[0] = value
                    last[3] = t
                    append(k)
                    continue
            t = now_ms - now_ms % rule.interval_ms
            if last is None:
                last_of[vid] = [value, quality, error, t]
            else:
                last[0] = value
                last[1] = quality
                last[2] = error
                last[3] = t
            append(k)
        return None if len(keep) == len(values) else keep

    def note_bad(self, variable_id: int, error: str | None, at_ms: int) -> None:
        """A BAD sample recorded for the variable outside :meth:`select` (a missed boundary)."""
        self._last[variable_id] = [None, _BAD, error, at_ms]
