"""Helpers shared by the tests: a recording writer, a counting reader, short random-reader
variables; condition waits and free ports come from the testing kit (:mod:`data_collector.testing`)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from data_collector import (
    CollectedVariables,
    DataCollectionContext,
    DataCollectionListener,
    DataWriter,
    Quality,
    Variable,
)
from data_collector.testing import free_port, wait_for
from data_reader.random_data_reader import RandomDataReader

__all__ = [
    "LOG",
    "CountingReader",
    "EventLog",
    "RecordingWriter",
    "Row",
    "V",
    "free_port",
    "ms_of",
    "wait_for",
]

LOG = logging.getLogger("test.dc")


@dataclass(frozen=True)
class Row:
    context_id: int
    variable_id: int
    read_at: datetime
    value: Any
    quality: Quality
    error: str | None


class RecordingWriter(DataWriter):
    """Keeps every row and every hook call, in order."""

    def __init__(self, name: str = "rec") -> None:
        super().__init__()
        self._name = name
        self.rows: list[Row] = []
        self.events: list[tuple[str, int]] = []
        self.batches: list[tuple[int, int]] = []
        self.opened = 0
        self.closed = 0

    @property
    def name(self) -> str:
        return self._name

    def open(self) -> None:
        self.opened += 1

    def close(self) -> None:
        self.closed += 1

    def context_started(self, context: DataCollectionContext) -> None:
        self.events.append(("started", context.id))

    def context_stopped(self, context: DataCollectionContext) -> None:
        self.events.append(("stopped", context.id))

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        self.batches.append((context.id, len(variables)))
        for item in variables:
            assert item.read_at is not None
            self.rows.append(
                Row(context.id, item.variable.id, item.read_at, item.value, item.quality, item.error)
            )
        self.events.append(("data", context.id))

    def of(self, context_id: int, variable_id: int | None = None) -> list[Row]:
        return [
            r
            for r in list(self.rows)
            if r.context_id == context_id and (variable_id is None or r.variable_id == variable_id)
        ]


class CountingReader(RandomDataReader):
    """A random reader that records each read() call: (wall time, variable ids), thread name."""

    def __init__(self, reader_type: str = "random", delay_s: float = 0.0, **kw: Any) -> None:
        super().__init__(reader_type=reader_type, **kw)
        self.calls: list[tuple[float, tuple[int, ...]]] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s
        self.opened = 0
        self.closed = 0

    def open(self) -> None:
        self.opened += 1

    def close(self) -> None:
        self.closed += 1

    def read(self, variables: CollectedVariables) -> None:
        self.calls.append((time.time(), tuple(i.variable.id for i in variables)))
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        super().read(variables)


class EventLog(DataCollectionListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, int | None]] = []

    def _add(self, name: str, context: DataCollectionContext | None = None) -> None:
        self.events.append((name, context.id if context is not None else None))

    def before_start(self, context: DataCollectionContext) -> None:
        self._add("before_start", context)

    def after_start(self, context: DataCollectionContext) -> None:
        self._add("after_start", context)

    def before_pause(self, context: DataCollectionContext) -> None:
        self._add("before_pause", context)

    def after_pause(self, context: DataCollectionContext) -> None:
        self._add("after_pause", context)

    def before_resume(self, context: DataCollectionContext) -> None:
        self._add("before_resume", context)

    def after_resume(self, context: DataCollectionContext) -> None:
        self._add("after_resume", context)

    def before_stop(self, context: DataCollectionContext) -> None:
        self._add("before_stop", context)

    def after_stop(self, context: DataCollectionContext) -> None:
        self._add("after_stop", context)

    def before_close(self) -> None:
        self._add("before_close")

    def after_close(self) -> None:
        self._add("after_close")


def ms_of(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime (rounded)."""
    return round(dt.timestamp() * 1000)


def V(
    id: int, interval: int | None = 100, address: str = "counter", vt: str = "int", rt: str = "random"
) -> Variable:
    """A variable for short test plans: the random reader's ``counter`` as an int every 100 ms
    unless told otherwise."""
    return Variable(id, address, vt, rt, interval)
