"""The errors of the archive writer (both :class:`data_collector.WriterError`)."""

from __future__ import annotations

from data_collector import WriterError

__all__ = ["ArchiveWriteError", "Refused"]


class ArchiveWriteError(WriterError):
    """A failed file operation of the archive writer; :attr:`transient` says whether retrying may fix it."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Refused(ArchiveWriteError):
    """A value the chosen format cannot hold (the message says why and what to use instead); permanent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)
