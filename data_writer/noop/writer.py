"""No-op writer: logs each batch at DEBUG and keeps nothing.

Serves no store; useful to try a configuration, to watch values in a log and to benchmark the
collector without storage costs. Options: ``NoopDataWriter(logger=None)`` (defaults to the
``data_writer.noop`` logger). ``written`` counts the samples it was given.

Example::

    import logging
    logging.basicConfig(level=logging.DEBUG)
    from data_writer.noop import NoopDataWriter
    writer = NoopDataWriter()   # pass it to DataCollector(..., writers=[writer])
"""

from __future__ import annotations

import logging

from data_collector import CollectedVariables, DataCollectionContext, DataWriter

__all__ = ["NoopDataWriter"]


class NoopDataWriter(DataWriter):
    """Logs batches at DEBUG (one line per sample) and counts them."""

    def __init__(self, logger: logging.Logger | None = None, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._log = logger if logger is not None else logging.getLogger("data_writer.noop")
        self.written = 0

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        self.written += len(variables)
        log = self._log
        if log.isEnabledFor(logging.DEBUG):
            for item in variables:
                log.debug(
                    "context %d variable %d %s = %r (%s) at %s%s",
                    context.id,
                    item.variable.id,
                    item.variable.address,
                    item.value,
                    item.quality,
                    item.read_at.isoformat() if item.read_at else None,
                    f" error: {item.error}" if item.error else "",
                )
