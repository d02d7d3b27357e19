"""Live data: the last samples of each variable, and events for subscribers.

Nothing here runs in a reader's thread: a reader task hands each read batch to :class:`LiveData`
(one ``deque.append``), whose own thread keeps the last ``n`` samples of every variable; events
go to every subscriber's bounded queue and a subscriber with a callback gets its own delivery
thread, so a slow subscriber never delays a read, a write or another subscriber. What does not
fit a subscriber's queue is dropped and counted for that subscriber.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ._model import CollectedVariable, CollectedVariables, Variable

__all__ = ["CollectionEvent", "LiveData", "Subscription"]

EventKind = Literal["run_started", "batch_written", "run_stopped"]
#: The most samples per variable :meth:`DataCollector.latest` can keep.
MAX_LATEST = 100_000
_MAX_PENDING_BATCHES = 10_000


@dataclass(frozen=True, slots=True)
class CollectionEvent:
    """Something that happened: a run started or stopped, or a writer stored a batch.

    ``writer`` names the writer of a ``batch_written`` event (``None`` otherwise); ``samples``
    is the size of the batch written (0 otherwise); ``at`` when it happened (aware UTC).
    """

    kind: EventKind
    context_id: int
    at: datetime
    writer: str | None = None
    samples: int = 0


class Subscription:
    """One subscriber's bounded event queue; iterate it, or give :meth:`DataCollector.subscribe` a callback.

    ``dropped`` counts the events that did not fit (``max_events``). :meth:`close` ends it.
    """

    def __init__(
        self,
        owner: LiveData,
        callback: Callable[[CollectionEvent], None] | None,
        max_events: int,
        log: logging.Logger,
    ) -> None:
        self._owner = owner
        self._callback = callback
        self._max = max_events
        self._log = log
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[CollectionEvent] = collections.deque()
        self._closed = False
        self.dropped = 0
        self._thread: threading.Thread | None = None
        if callback is not None:
            self._thread = threading.Thread(target=self._deliver, name="dc-subscriber", daemon=True)
            self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def _put(self, event: CollectionEvent) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self._max:
                self.dropped += 1
                return
            self._queue.append(event)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> CollectionEvent | None:
        """The next event, waiting up to ``timeout`` seconds (``None``: until one comes or close)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._queue.popleft()

    def __iter__(self) -> Iterator[CollectionEvent]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        """Stop receiving events (the callback thread ends after the event it is handling)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._owner._remove(self)

    def _deliver(self) -> None:
        assert self._callback is not None
        while True:
            event = self.get()
            if event is None:
                return
            try:
                self._callback(event)
            except Exception:
                self._log.exception("event subscriber %r raised; ignored", self._callback)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LiveData:
    """The last ``n`` samples per variable id, and the subscribers of events."""

    def __init__(self, latest_n: int, log: logging.Logger) -> None:
        self.latest_n = latest_n
        self._log = log
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: collections.deque[CollectedVariables] = collections.deque()
        self._latest: dict[
            int, collections.deque[tuple[Variable, Any, datetime | None, Any, str | None]]
        ] = {}
        self._subscribers: list[Subscription] = []
        self._closed = False
        self._observed = 0  # batches handed to observe() (and kept)
        self._processed = 0  # of those, the ones already in the rings
        self.dropped_batches = 0
        self._thread: threading.Thread | None = None
        if latest_n > 0:
            self._thread = threading.Thread(target=self._run, name="dc-live", daemon=True)
            self._thread.start()

    # -- latest values ----------------------------------------------------------------------------
    def observe(self, batch: CollectedVariables) -> None:
        """A read batch (from a reader's thread: O(1), never blocks for long)."""
        with self._cond:
            if len(self._pending) >= _MAX_PENDING_BATCHES:
                self.dropped_batches += 1
                return
            self._pending.append(batch)
            self._observed += 1
            self._cond.notify_all()

    def _run(self) -> None:
        n = self.latest_n
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending:
                    return
                batches = list(self._pending)
                self._pending.clear()
            latest = self._latest
            for b in batches:
                for v, value, at, q, err in zip(
                    b.variables, b.values, b.read_ats, b.qualities, b.errors, strict=True
                ):
                    ring = latest.get(v.id)
                    if ring is None:
                        ring = latest[v.id] = collections.deque(maxlen=n)
                    ring.append((v, value, at, q, err))
            with self._cond:
                self._processed += len(batches)
                self._cond.notify_all()

    def latest(self, variable_id: int, n: int) -> list[CollectedVariable]:
        ring = self._latest.get(variable_id)
        if ring is None:
            return []
        items = list(ring)[-n:]
        return [CollectedVariable(v, value, at, q, err) for v, value, at, q, err in items]

    def flush(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until the batches observed so far are in :meth:`latest`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._observed
            while self._processed < target and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    # -- events -----------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[CollectionEvent], None] | None, max_events: int) -> Subscription:
        sub = Subscription(self, callback, max_events, self._log)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s is not sub]

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscribers)

    def emit(self, kind: EventKind, context_id: int, writer: str | None = None, samples: int = 0) -> None:
        subscribers = self._subscribers
        if not subscribers:
            return
        event = CollectionEvent(kind, context_id, datetime.now(UTC), writer, samples)
        for sub in subscribers:
            sub._put(event)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.close()
        if self._thread is not None:
            self._thread.join(1.0)
