"""The writer base class (public home: :mod:`data_writer`)."""

from __future__ import annotations

import abc
import threading
from typing import ClassVar

from ._errors import ConfigurationError
from ._model import CollectedVariables, DataCollectionContext
from ._scan_rows import ScanRows

__all__ = ["DataWriter"]

_LOCK_GUARD = threading.Lock()


class DataWriter(abc.ABC):
    """Persists or publishes collected values.

    The collector runs each writer in its own thread fed by a bounded queue and calls, in the
    order the data arrived: :meth:`context_started`, :meth:`write` for each batch, and
    :meth:`context_stopped`. Every call the collector makes holds :attr:`lock`, a re-entrant
    lock of this writer, so one instance can be shared by any number of contexts and threads;
    code that calls the writer directly should hold it too.

    When :meth:`write` raises, :meth:`is_transient` decides: a transient error (connection,
    timeout, disk full) is retried, the same batch in the same order, with capped backoff for as
    long as the queue has room, while other contexts' batches go on; a permanent error counts the
    batch as lost at once. When the collector is behind, several queued batches of one context
    arrive as one larger batch. Writers never overwrite or truncate data already stored:
    reopening appends. The collector calls :meth:`close` from the writer's own thread after the
    last write; a writer still busy in :meth:`write` when ``DataCollector.close()`` gives up is
    never called again (not even :meth:`close`).

    Durability. By default a batch counts as stored when :meth:`write` returns: the collector
    then counts it as written and removes it from its spool. A writer that buffers (appends to a
    file in large chunks, sends in bursts) sets :attr:`flush_interval_s` to a number of seconds
    and implements :meth:`flush`: its calls then count as stored only once a later
    :meth:`flush` returned. The collector calls :meth:`flush` from the writer's thread, under
    :attr:`lock`: at most ``flush_interval_s`` after the first call not flushed yet (0: after
    every call), when no batch has come for a moment (0.25 s, or ``flush_interval_s`` if
    shorter), after each :meth:`context_stopped` (so ``stop()`` returns with the run stored),
    and before :meth:`close`. Until then the batches stay in the spool, so a crash loses none of
    them: the next collector replays them (a writer that may have stored some of them before the
    crash skips those, as the HDF5 writer does). When :meth:`flush` raises, :meth:`is_transient`
    decides, as for a write: a transient error is retried (only :meth:`flush`, with the same
    backoff as writes) and the writer must keep what it holds so that a later :meth:`flush`
    stores it exactly once (the collector does not write those batches again, which would store
    them twice); a permanent error means the writer gave up what it held since its last
    successful flush: those batches count as lost (quarantined with a spool).
    """

    #: False for a writer whose batches should not go through the collector's spool (e.g. a
    #: live view): it gets them from memory only, and needs no name of its own.
    spooled: ClassVar[bool] = True

    #: ``None``: :meth:`write` and the hooks have stored what they were given when they return.
    #: A number of seconds (>= 0): they may keep it in memory until :meth:`flush`, which the
    #: collector calls at most this long after the first call not flushed yet (see above).
    #: Read once, when the collector opens the writer.
    flush_interval_s: float | None = None

    #: True for a writer whose store never holds a sample twice when the collector retries a
    #: batch whose :meth:`write` failed, also when the store had done the failed attempt and only
    #: the acknowledgement was lost (e.g. writes keyed by the sample's identity). A claim, not a
    #: switch: the testing kit's ``WriterContract`` checks it behind a proxy that resets, cuts and
    #: stalls the writer's connection.
    exactly_once: ClassVar[bool] = False

    def __init__(self, *, name: str | None = None) -> None:
        self._dc_lock = threading.RLock()
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise ConfigurationError(f"{type(self).__name__}: name must be a non-empty str, got {name!r}")
            self._dc_name = name

    @property
    def lock(self) -> threading.RLock:
        """The writer's re-entrant lock (created on first use if ``__init__`` was skipped)."""
        lock: threading.RLock | None = self.__dict__.get("_dc_lock")
        if lock is None:
            with _LOCK_GUARD:
                lock = self.__dict__.setdefault("_dc_lock", threading.RLock())
        return lock

    @property
    def name(self) -> str:
        """A label for logs and statistics, and the folder of this writer's spool.

        The class name unless given to ``__init__`` (``super().__init__(name="historian")``) or
        overridden by a subclass. With a spool, every writer of a collector needs a name of its
        own, stable across runs.
        """
        name: str | None = self.__dict__.get("_dc_name")
        return name if name is not None else type(self).__name__

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (files, connections). Called once before the first write."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources. Called once when the collector closes."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Store durably everything taken since the last flush (with :attr:`flush_interval_s`)."""

    def context_started(self, context: DataCollectionContext) -> None:  # noqa: B027
        """A context started: ``context.start_date`` and ``metadata`` are set."""

    def context_stopped(self, context: DataCollectionContext) -> None:  # noqa: B027
        """A context stopped: every batch of it was handed to :meth:`write` before this call."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether retrying the call that raised ``exc`` may succeed.

        The collector retries a batch whose :meth:`write` raised a transient error (with capped
        backoff, never holding back other contexts' batches for longer than one retry step) and
        counts a batch whose error is permanent as lost at once, logging the reason. The default
        takes :class:`OSError` (connection refused or reset, disk full, ...) and
        :class:`TimeoutError` as transient and every other exception as permanent (a value the
        store refuses, an encoding error, a file that is not ours). Writers whose driver has its
        own connection errors override this.
        """
        return isinstance(exc, OSError | TimeoutError)

    @abc.abstractmethod
    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        """Persist or publish one batch of one context."""

    def write_scan_rows(self, rows: ScanRows) -> None:
        """Store the merged rows of one completed scan point (optional capability).

        A :class:`~data_collector.Scan` calls it from its own thread, holding :attr:`lock`, after
        the point's run was stored, with the point's rows (see :class:`~data_collector.ScanRows`):
        the writer appends them to one table per scan, replacing the rows that table already
        holds for ``rows.point`` (so storing a point again never duplicates it), and returns
        once they are stored. Raise as :meth:`write` does (:meth:`is_transient` decides whether
        the scan tries again). Writers that keep no scan table leave this as it is.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no scan table")

    @property
    def supports_scan_rows(self) -> bool:
        """True when :meth:`write_scan_rows` is implemented by this writer."""
        return type(self).write_scan_rows is not DataWriter.write_scan_rows

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
