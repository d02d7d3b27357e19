"""Collectors made for a test, closed after it, and the accounting check that nothing was lost."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .._collector import CollectorStats, DataCollector
from .._errors import ConfigurationError
from .._listener import DataCollectionListener
from .._reader import DataReader
from .._writer import DataWriter

__all__ = ["CollectorFactory", "accounting_problems", "assert_nothing_lost"]

LOG = logging.getLogger("data_collector.testing")


def accounting_problems(stats: CollectorStats) -> list[str]:
    """What ``stats`` says went missing, one line per writer: lost, dropped or unwritten samples,
    quarantined batches, or a ``samples_delivered`` that its parts do not add up to."""
    problems = []
    for name, w in stats.writers.items():
        missing = [
            f"{count} {what}"
            for what, count in (
                ("lost", w.lost_samples),
                ("dropped", w.dropped_samples),
                ("unwritten", w.unwritten_samples),
            )
            if count
        ]
        if w.quarantined_batches:
            missing.append(f"{w.quarantined_batches} batches quarantined")
        parts = w.samples_written + w.lost_samples + w.dropped_samples + w.unwritten_samples + w.queue_depth
        if parts != w.samples_delivered:
            missing.append(
                f"delivered {w.samples_delivered} != written {w.samples_written} + lost {w.lost_samples} + "
                f"dropped {w.dropped_samples} + unwritten {w.unwritten_samples} + queued {w.queue_depth}"
            )
        if missing:
            problems.append(f"writer {name}: {', '.join(missing)} (of {w.samples_delivered} delivered)")
    return problems


def assert_nothing_lost(collector: DataCollector | CollectorStats) -> None:
    """AssertionError naming each writer that lost, dropped or left unwritten a sample (per ``stats()``)."""
    stats = collector.stats() if isinstance(collector, DataCollector) else collector
    problems = accounting_problems(stats)
    if problems:
        raise AssertionError("samples went missing: " + "; ".join(problems))


class CollectorFactory:
    """Builds :class:`~data_collector.DataCollector` objects for one test and closes them after it.

    ``factory(readers, writers=None, listeners=(), *, allow_loss=False, **options)`` returns a new
    collector (``options`` are the collector's keyword arguments: ``spool_dir``, ``drain_timeout_s``
    ...); without ``writers`` it writes to ``default_writers`` (the ``memory_writer`` fixture).
    :meth:`close_all` closes every collector made (newest first) and returns what their
    ``stats()`` say went missing, except for collectors made with ``allow_loss=True`` (a test that
    loses samples on purpose).
    """

    def __init__(
        self, default_writers: Iterable[DataWriter] = (), logger: logging.Logger | None = None
    ) -> None:
        self.default_writers = list(default_writers)
        self.logger = logger if logger is not None else LOG
        self._made: list[tuple[DataCollector, bool]] = []

    def __call__(
        self,
        readers: Iterable[DataReader],
        writers: Iterable[DataWriter] | None = None,
        listeners: Iterable[DataCollectionListener] = (),
        *,
        allow_loss: bool = False,
        **options: Any,
    ) -> DataCollector:
        if not isinstance(allow_loss, bool):
            raise ConfigurationError(f"allow_loss must be a bool, got {allow_loss!r}")
        chosen = self.default_writers if writers is None else list(writers)
        collector = DataCollector(self.logger, readers, chosen, listeners, **options)
        self._made.append((collector, allow_loss))
        return collector

    @property
    def collectors(self) -> list[DataCollector]:
        """Every collector made so far, oldest first."""
        return [c for c, _ in self._made]

    def close_all(self) -> list[str]:
        """Close every collector made (newest first); what went missing in those that may not lose."""
        problems: list[str] = []
        for index, (collector, allow_loss) in reversed(list(enumerate(self._made))):
            collector.close()
            if not allow_loss:
                problems += [f"collector #{index + 1}: {p}" for p in accounting_problems(collector.stats())]
        return problems
