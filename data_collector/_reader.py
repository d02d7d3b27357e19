"""The reader base class (public home: :mod:`data_reader`)."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

from ._errors import ConfigurationError, WriteNotSupportedError
from ._model import MAX_INTERVAL_MS, CollectedVariables, Variable

__all__ = ["DataReader"]


class DataReader(abc.ABC):
    """Reads the values of variables from one device, connection or source.

    Subclasses set the class attribute ``reader_type`` (the name variables refer to) and
    implement :meth:`read`. The collector calls :meth:`open` before first use, :meth:`read`
    once per tick from the reader's own thread with every due variable, and :meth:`close`
    when the collector closes.

    ``read`` sets ``value``, ``quality`` and optionally ``read_at``/``error`` on every item. A
    device that cannot be reached is reported by marking items ``BAD`` with an error text;
    ``read`` should not raise (if it does, the collector marks every item of the tick ``BAD``)
    and should not block much past its own timeout: boundaries that pass while it runs become
    BAD samples ("missed: previous read still running"). A ``read_at`` left ``None`` is the
    time the read was scheduled; a naive one is taken as UTC (logged once).

    ``reader_type`` and ``min_interval_ms`` may be overridden per instance through the
    constructor so that two devices served by one class are two reader types; a subclass that
    overrides ``__init__`` calls ``super().__init__()``.
    """

    #: The name variables use in ``Variable.reader_type`` to be read by this reader.
    reader_type: str = ""
    #: When set, the minimum interval for this reader's variables (overrides the context's).
    min_interval_ms: int | None = None
    #: Value types this reader supports beyond the built-in float, int, bool and str.
    value_types: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, reader_type: str | None = None, min_interval_ms: int | None = None) -> None:
        cls = type(self).__name__
        if reader_type is not None:
            if not isinstance(reader_type, str) or not reader_type.strip():
                raise ConfigurationError(f"{cls}: reader_type must be a non-empty str, got {reader_type!r}")
            self.reader_type = reader_type
        if min_interval_ms is not None:
            if (
                isinstance(min_interval_ms, bool)
                or not isinstance(min_interval_ms, int)
                or not 0 < min_interval_ms <= MAX_INTERVAL_MS
            ):
                raise ConfigurationError(
                    f"{cls}: min_interval_ms must be an int > 0 (at most {MAX_INTERVAL_MS}), "
                    f"got {min_interval_ms!r}"
                )
            self.min_interval_ms = min_interval_ms

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (connections, clients). Called once before the first read."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Called once when the collector closes."""

    def validate_variable(self, variable: Variable) -> None:  # noqa: B027 - optional hook
        """Raise :class:`ConfigurationError` if this reader cannot read ``variable``.

        Called by ``DataCollector.start()`` for every variable of this reader type, before
        anything starts, so a bad address fails the call that received it. The default accepts
        every variable.
        """

    def variables_changed(self, intervals: Mapping[Variable, int]) -> None:  # noqa: B027 - optional hook
        """The set of variables the collector reads with this reader changed.

        Called with every variable now scheduled for this reader and the interval (ms) at which
        it is read (the GCD of the intervals the running contexts want), whenever a context
        starts, stops, pauses or resumes, before the reader's thread gets the new schedule;
        called with an empty mapping when nothing is scheduled any more. Called from the thread
        that made the change, outside the collector's lock (it may call back into the
        collector), never concurrently with itself, but possibly while :meth:`read` of the
        previous schedule is still running in the reader's thread. Readers that subscribe to
        their device (rather than poll it) use it to create and remove subscriptions. The
        default does nothing; an exception is logged and does not stop the change.
        """

    @abc.abstractmethod
    def read(self, variables: CollectedVariables) -> None:
        """Fill value, quality (and optionally read_at, error) of every item."""

    def write(self, variable: Variable, value: Any) -> None:
        """Write ``value`` to the device location of ``variable``.

        Optional capability: readers that cannot write raise :class:`WriteNotSupportedError`.
        """
        raise WriteNotSupportedError(
            f"{type(self).__name__} (reader_type {self.reader_type!r}) cannot write: "
            f"refused writing {value!r} to variable {variable.id} at {variable.address!r}"
        )

    @property
    def supports_write(self) -> bool:
        """True when :meth:`write` is implemented by this reader."""
        return type(self).write is not DataReader.write

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reader_type={self.reader_type!r})"
