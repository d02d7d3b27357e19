"""A deadline for the SQL writer's database operations on drivers without a read timeout.

psycopg (libpq) has a connect timeout but none for an operation on an established connection:
a server or a link that stops answering (a stalled proxy or NAT, a hung server) blocks the
writer's ``write()`` for as long as the stall lasts. TCP keepalives and ``tcp_user_timeout`` catch
a peer that is gone, not one whose kernel still acknowledges while nothing answers. So the writer
watches each operation: when one lasts longer than ``io_timeout_s``, :class:`Watchdog` shuts the
connection's socket down (``shutdown(SHUT_RDWR)`` on a duplicate of its descriptor, so a
descriptor number reused meanwhile is never touched), the driver's blocked call fails at once
with a connection error, and the writer reports a transient error: the collector retries the
batch with backoff and, the samples being keyed, stores each exactly once.

One thread per watchdog, started at the first operation and ended by :meth:`Watchdog.close`;
watching costs a ``dup`` and a condition notify per operation (microseconds, once per batch).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

__all__ = ["Watch", "Watchdog"]


class Watch:
    """One watched operation; ``fired`` tells, once it is over, whether its deadline passed."""

    __slots__ = ("fired",)

    def __init__(self) -> None:
        self.fired = False


class Watchdog:
    """Shuts down the socket of an operation that outlasts ``timeout_s`` (one operation at a time)."""

    def __init__(self, label: str, timeout_s: float) -> None:
        self.label = label
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._deadline = 0.0
        self._fired = False
        self._generation = 0  # of the thread that should run; close() moves it on
        self._thread: threading.Thread | None = None
        #: operations whose socket was shut down
        self.fired_count = 0

    @contextlib.contextmanager
    def watch(self, fileno: int) -> Iterator[Watch]:
        """Watch the operation run in the ``with`` block on the socket ``fileno``."""
        watch = Watch()
        try:
            sock = socket.socket(fileno=os.dup(fileno))
        except OSError:  # not a socket (or already closed): nothing to watch
            yield watch
            return
        try:
            with self._cond:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._loop, args=(self._generation,), name=self.label, daemon=True
                    )
                    self._thread.start()
                self._sock = sock
                self._fired = False
                self._deadline = time.monotonic() + self.timeout_s
                self._cond.notify()
            try:
                yield watch
            finally:
                with self._cond:
                    watch.fired = self._fired
                    self._sock = None
        finally:
            sock.close()  # the duplicate only; the driver's descriptor stays its own

    def close(self) -> None:
        """End the thread (the writer is closing; a later operation starts a new one); idempotent."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _loop(self, generation: int) -> None:
        with self._cond:
            while generation == self._generation:
                sock = self._sock
                if sock is None or self._fired:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._fired = True
                self.fired_count += 1
                with contextlib.suppress(OSError):  # already closed by the peer: fine
                    sock.shutdown(socket.SHUT_RDWR)
