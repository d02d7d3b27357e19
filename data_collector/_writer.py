"""The writer base class (public home: :mod:`data_writer`)."""

from __future__ import annotations

import abc
import threading
from typing import ClassVar

from ._errors import ConfigurationError
from ._model import CollectedVariables, DataCollectionContext

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
    """

    #: False for a writer whose batches should not go through the collector's spool (e.g. a
    #: live view): it gets them from memory only, and needs no name of its own.
    spooled: ClassVar[bool] = True

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
