"""Condition waits and free ports for tests (public in :mod:`data_collector.testing`)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from .._errors import ConfigurationError

__all__ = ["free_port", "wait_for"]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` (every 5 ms) until it is true; AssertionError naming ``what`` after ``timeout`` s.

    For conditions nobody signals (a file that appears, a server that answers). Waits on a
    :class:`~data_collector.testing.MemoryWriter` use its own ``wait_for_*`` methods, which sleep
    until a write wakes them.
    """
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout >= 0:
        raise ConfigurationError(f"wait_for: timeout must be a number of seconds >= 0, got {timeout!r}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    if predicate():
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of ``host`` that was free a moment ago (nothing listens there once returned).

    Prefer servers that bind port 0 themselves (the simulators and :class:`FaultProxy` do); this
    is for a server that must be told its port, or for an address where nothing may listen.
    """
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
