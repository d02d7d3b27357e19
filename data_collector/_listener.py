"""Lifecycle listener of the collector."""

from __future__ import annotations

from ._model import DataCollectionContext

__all__ = ["DataCollectionListener"]


class DataCollectionListener:
    """Override the hooks you need; each is a no-op by default.

    Hooks are called in the thread of the collector call (or of the scheduler for a delayed
    start or a duration expiry). A hook that raises is logged and does not break the operation.
    """

    def before_start(self, context: DataCollectionContext) -> None:
        """Before a context starts (after its validation passed)."""

    def after_start(self, context: DataCollectionContext) -> None:
        """After a context started: ``start_date`` is set and reads are scheduled."""

    def before_pause(self, context: DataCollectionContext) -> None:
        """Before a context pauses."""

    def after_pause(self, context: DataCollectionContext) -> None:
        """After a context paused: it receives no more values until resumed."""

    def before_resume(self, context: DataCollectionContext) -> None:
        """Before a paused context resumes."""

    def after_resume(self, context: DataCollectionContext) -> None:
        """After a context resumed."""

    def before_stop(self, context: DataCollectionContext) -> None:
        """Before a context stops (by ``stop()``, ``close()`` or its duration)."""

    def after_stop(self, context: DataCollectionContext) -> None:
        """After a context stopped: ``end_date`` is set and its values were delivered to writers."""

    def before_close(self) -> None:
        """Before the collector closes."""

    def after_close(self) -> None:
        """After the collector closed and every thread, reader and writer was cleaned up."""
