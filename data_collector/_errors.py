"""The exception tree of data-collector.

Every error the library raises on purpose derives from :class:`DataCollectionError`,
so plant software can catch one type::

    DataCollectionError
    ├── ConfigurationError            bad Variable, context, address, interval, type, plugin name
    │   ├── ConflictingVariableError  same variable id defined differently in two running contexts
    │   └── ConfigFileError           a configuration file's problems, each with its key path
    │                                 (``issues``; defined in ``data_collector._config_model``)
    ├── ContextStateError             an operation that the context's state does not allow
    │   ├── UnknownContextError       stop/pause/resume/... of an id that is not started
    │   └── ContextAlreadyStartedError start of an id that is already started (or scheduled)
    ├── CollectorClosedError          any call after ``close()``
    ├── ReaderError                   a reader's device or driver failed (translated, ``from`` the cause)
    │   └── WriteNotSupportedError    ``DataReader.write`` on a reader that cannot write
    └── WriterError                   a writer's store or driver failed (translated, ``from`` the cause)

:class:`ConfigurationError` is also a :class:`ValueError` and the context state errors are also
:class:`LookupError`/:class:`RuntimeError`, so code written against the builtin types keeps working.
"""

from __future__ import annotations

__all__ = [
    "CollectorClosedError",
    "ConfigurationError",
    "ConflictingVariableError",
    "ContextAlreadyStartedError",
    "ContextStateError",
    "DataCollectionError",
    "ReaderError",
    "UnknownContextError",
    "WriteNotSupportedError",
    "WriterError",
]


class DataCollectionError(Exception):
    """Root of every error raised by data-collector."""


class ConfigurationError(DataCollectionError, ValueError):
    """A value given to the library is invalid; the message names the value.

    When the bad value belongs to a variable of a context, ``context_id``, ``variable_id`` and
    ``field`` (e.g. ``"address"``, ``"interval_ms"``) say which, so that a configuration file
    can point at the exact key.
    """

    def __init__(
        self,
        message: str,
        *,
        context_id: int | None = None,
        variable_id: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.context_id = context_id
        self.variable_id = variable_id
        self.field = field


class ConflictingVariableError(ConfigurationError):
    """A variable id is defined differently in two contexts that would run together."""


class ContextStateError(DataCollectionError, RuntimeError):
    """The operation is not allowed in the context's current state."""


class UnknownContextError(ContextStateError, LookupError):
    """No started context has this id."""


class ContextAlreadyStartedError(ContextStateError):
    """A context with this id is already started or scheduled."""


class CollectorClosedError(DataCollectionError, RuntimeError):
    """The collector was closed; it accepts no more calls."""


class ReaderError(DataCollectionError):
    """A reader failed to talk to its device."""


class WriteNotSupportedError(ReaderError):
    """The reader cannot write values to its device."""


class WriterError(DataCollectionError):
    """A writer failed to reach or update its store."""
