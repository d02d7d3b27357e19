"""A thread-safe writer that keeps everything in memory, with waits that wake on each write."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._errors import ConfigurationError
from .._model import CollectedVariables, DataCollectionContext, Quality
from .._writer import DataWriter

__all__ = ["MemoryWriter", "Sample"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample as a writer got it: context, variable, read time (aware UTC), value, quality, error."""

    context_id: int
    variable_id: int
    read_at: datetime
    value: Any
    quality: Quality
    error: str | None


def _seconds(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise ConfigurationError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


class MemoryWriter(DataWriter):
    """Keeps every sample and every hook call in memory, in order; safe from any thread.

    Give it to a :class:`~data_collector.DataCollector` (or take the ``memory_writer`` fixture)
    and wait for what the test needs; each wait sleeps until a write wakes it and raises
    :class:`AssertionError` saying what it got when ``timeout`` passes::

        writer = MemoryWriter()
        with DataCollector(log, [reader], [writer]) as c:
            c.start(context)
            writer.wait_for_samples(10, timeout=5, variable_id=1)
        assert writer.events[0] == ("started", context.id)

    ``samples``, ``events`` (``("started" | "data" | "stopped", context_id)``) and ``batches``
    (``(context_id, size)``) are snapshots. :meth:`fail_with` makes every later call of
    :meth:`write` raise (a store that is down: an ``OSError`` is transient, so the collector
    retries) until ``fail_with(None)``; ``delay_s`` makes every write that slow.
    """

    def __init__(self, *, name: str = "memory", delay_s: float = 0.0) -> None:
        super().__init__(name=name)
        self.delay_s = _seconds(delay_s)
        self._cond = threading.Condition()
        self._samples: list[Sample] = []
        self._events: list[tuple[str, int]] = []
        self._batches: list[tuple[int, int]] = []
        self._failure: BaseException | None = None
        self.opened = 0
        self.closed = 0
        self.failed_writes = 0

    # -- the writer ------------------------------------------------------------------------------
    def open(self) -> None:
        with self._cond:
            self.opened += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed += 1
            self._cond.notify_all()

    def context_started(self, context: DataCollectionContext) -> None:
        with self._cond:
            self._events.append(("started", context.id))
            self._cond.notify_all()

    def context_stopped(self, context: DataCollectionContext) -> None:
        with self._cond:
            self._events.append(("stopped", context.id))
            self._cond.notify_all()

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        rows = [
            Sample(context.id, v.id, t, value, q, e)
            for v, t, value, q, e in zip(
                variables.variables,
                variables.read_ats,
                variables.values,
                variables.qualities,
                variables.errors,
                strict=True,
            )
            if t is not None
        ]
        if len(rows) != len(variables):
            raise ConfigurationError(
                f"{self.name}: a batch of context {context.id} holds samples without read_at"
            )
        with self._cond:
            failure = self._failure
            if failure is not None:
                self.failed_writes += 1
                raise failure
            self._samples.extend(rows)
            self._batches.append((context.id, len(rows)))
            self._events.append(("data", context.id))
            self._cond.notify_all()

    # -- faults ----------------------------------------------------------------------------------
    def fail_with(self, exc: BaseException | None) -> None:
        """Make every later :meth:`write` raise ``exc`` (``None``: write again)."""
        if exc is not None and not isinstance(exc, BaseException):
            raise ConfigurationError(f"fail_with takes an exception or None, got {exc!r}")
        with self._cond:
            self._failure = exc

    # -- what it got -----------------------------------------------------------------------------
    @property
    def samples(self) -> list[Sample]:
        """Every sample written so far, in write order (a copy)."""
        with self._cond:
            return list(self._samples)

    @property
    def events(self) -> list[tuple[str, int]]:
        """``("started" | "data" | "stopped", context_id)`` in call order (a copy)."""
        with self._cond:
            return list(self._events)

    @property
    def batches(self) -> list[tuple[int, int]]:
        """``(context_id, number of samples)`` of every successful write, in order (a copy)."""
        with self._cond:
            return list(self._batches)

    def of(self, context_id: int | None = None, variable_id: int | None = None) -> list[Sample]:
        """The samples of one context and/or one variable (``None``: any), in write order."""
        with self._cond:
            return self._select(context_id, variable_id)

    def count(self, context_id: int | None = None, variable_id: int | None = None) -> int:
        with self._cond:
            return len(self._select(context_id, variable_id))

    def clear(self) -> None:
        """Forget every sample, event and batch (the open/close counters stay)."""
        with self._cond:
            self._samples.clear()
            self._events.clear()
            self._batches.clear()

    def _select(self, context_id: int | None, variable_id: int | None) -> list[Sample]:
        return [
            s
            for s in self._samples
            if (context_id is None or s.context_id == context_id)
            and (variable_id is None or s.variable_id == variable_id)
        ]

    # -- waits -----------------------------------------------------------------------------------
    def wait_until(self, predicate: Callable[[MemoryWriter], bool], timeout: float, what: str) -> None:
        """Wait until ``predicate(self)`` holds (checked after every write and hook call)."""
        deadline = time.monotonic() + _seconds(timeout)
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.name}: timed out after {timeout} s waiting for {what} "
                        f"(got {len(self._samples)} samples in {len(self._batches)} batches, "
                        f"events {self._events[-6:]}{' ...' if len(self._events) > 6 else ''})"
                    )
                self._cond.wait(min(left, 0.5))

    def wait_for_samples(
        self,
        n: int,
        timeout: float = 10.0,
        *,
        context_id: int | None = None,
        variable_id: int | None = None,
    ) -> list[Sample]:
        """Wait until at least ``n`` samples (of ``context_id`` / ``variable_id`` if given) arrived;
        returns them."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigurationError(f"wait_for_samples: n must be an int >= 0, got {n!r}")
        where = "".join(
            f" of {name} {value}"
            for name, value in (("context", context_id), ("variable", variable_id))
            if value is not None
        )
        self.wait_until(
            lambda w: len(w._select(context_id, variable_id)) >= n, timeout, f"{n} samples{where}"
        )
        return self.of(context_id, variable_id)

    def wait_for_each(
        self, variable_ids: Iterable[int], n: int, timeout: float = 10.0, *, context_id: int | None = None
    ) -> None:
        """Wait until every one of ``variable_ids`` has at least ``n`` samples (of ``context_id``)."""
        ids = list(variable_ids)

        def done(w: MemoryWriter) -> bool:
            counts: dict[int, int] = dict.fromkeys(ids, 0)
            for s in w._samples:
                if s.variable_id in counts and (context_id is None or s.context_id == context_id):
                    counts[s.variable_id] += 1
            return all(c >= n for c in counts.values())

        self.wait_until(done, timeout, f"{n} samples of each of the variables {ids}")

    def wait_for_event(self, kind: str, context_id: int, timeout: float = 10.0) -> None:
        """Wait until the hook ``kind`` (``"started"``, ``"stopped"``, ``"data"``) was called for
        ``context_id``."""
        if kind not in ("started", "stopped", "data"):
            raise ConfigurationError(f"wait_for_event: kind must be started, stopped or data, got {kind!r}")
        self.wait_until(lambda w: (kind, context_id) in w._events, timeout, f"{kind} of context {context_id}")

    def __repr__(self) -> str:
        return f"MemoryWriter(name={self.name!r}, samples={len(self._samples)})"
