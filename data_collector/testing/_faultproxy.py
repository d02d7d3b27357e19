"""Fault injection for tests: a loopback TCP proxy that can cut, reset and stall connections.

Public as :class:`data_collector.testing.FaultProxy` (and the ``fault_proxy`` fixture of the pytest
plugin, which closes the proxies it made after the test).

Put a :class:`FaultProxy` between a client (a writer, a reader, an MQTT or Redis client) and the
real server it talks to, point the client at ``proxy.port``, and break the link on purpose::

    with FaultProxy("127.0.0.1", 5432) as proxy:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test"
        ...
        proxy.reset_before_reply(b"COMMIT")  # the server commits, the client never hears it
        proxy.cut()                          # every connection reset, new ones refused ...
        proxy.restore()                      # ... until now
        proxy.stall(3.0)                     # nothing forwarded either way for 3 s
        proxy.wait_fired(1, timeout=10)      # the armed reset happened

Controls (all thread-safe; each returns once the proxy's I/O thread has applied it):

- :meth:`cut` resets every connection (RST) and closes the listening socket, so new connections are
  refused (``ECONNREFUSED``) until :meth:`restore`, which listens again on the same port.
- :meth:`reset_before_reply` / :meth:`reset_after_reply` arm a one-shot fault: the next request
  (client-to-server data) that contains ``match`` (any request if ``None``; ``skip`` matching
  requests let through first) is forwarded, and the connection that sent it is reset when the
  server's reply arrives: *before* the reply is forwarded (the server did the work, the client never
  learns it: a lost COMMIT acknowledgement) or right *after* the reply's first chunk is delivered.
  Several armed faults fire in the order they were armed, one per matching request.
- :meth:`reset_after_bytes` resets the connection that carries the ``n``-th byte (counted from the
  call, in one direction): exactly ``n`` bytes get through, then RST.
- :meth:`reset_all` resets every open connection now (new ones are still accepted).
- :meth:`stall` stops forwarding both ways (and accepting: new clients wait in the backlog) for
  ``seconds`` (or until :meth:`restore`); data sent meanwhile is delivered afterwards.
- :meth:`restore` ends a cut and a stall; :meth:`disarm` drops the armed resets.

Counters: :meth:`stats` (connections accepted, active, refused, resets, faults fired, bytes each
way). One I/O thread (``selectors``, non-blocking sockets) serves every connection, so the proxy
needs one thread whatever the load; at most ``max_connections`` connections are served at once
(more are reset on accept and counted as refused). :meth:`close` (or leaving the ``with`` block)
resets what is open and joins the thread. Protocol-agnostic: it matches bytes, never parses.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .._errors import ConfigurationError

__all__ = ["FaultProxy", "ProxyStats"]

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_CHUNK = 65536
_SIOCOUTQ = 0x5411  # Linux: bytes sent but not yet acknowledged by the peer
_LINGER_S = 2.0  # longest wait for the peer to acknowledge the last bytes before a reset

Direction = Literal["to_server", "to_client"]


@dataclass(frozen=True)
class ProxyStats:
    """Counters of a :class:`FaultProxy` (:meth:`FaultProxy.stats`)."""

    accepted: int  # connections accepted and forwarded
    active: int  # connections open now
    refused: int  # connections reset on accept (over max_connections)
    resets: int  # connections reset by a fault, a cut or reset_all
    faults_fired: int  # armed faults that have reset their connection
    bytes_to_server: int
    bytes_to_client: int


@dataclass
class _Armed:
    kind: Literal["before", "after"]
    match: bytes | None
    skip: int


class _Conn:
    __slots__ = (
        "after_flush_reset",
        "client",
        "client_eof",
        "connected",
        "pending",
        "server",
        "server_eof",
        "tail",
        "to_client",
        "to_server",
    )

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.connected = False
        self.to_server = bytearray()
        self.to_client = bytearray()
        self.client_eof = False  # the client sent FIN
        self.server_eof = False  # the server sent FIN
        self.pending: Literal["before", "after"] | None = None  # reset armed on this connection
        self.after_flush_reset: Direction | None = None  # reset once this buffer is flushed
        self.tail = b""  # end of the last client chunk, to match across chunk boundaries


def _hard_close(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer gets ECONNRESET, no TIME_WAIT."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """A TCP proxy on ``listen_host`` (a free port unless ``port`` is given) to the server at
    ``target_host:target_port``. Point the client under test at :attr:`port` (or :attr:`address`)
    instead of the server, then break the link on purpose:

    - :meth:`cut` / :meth:`restore`: every connection reset, new ones refused, until restored;
    - :meth:`reset_before_reply` / :meth:`reset_after_reply`: the connection of the next request
      (containing ``match``, after ``skip`` such requests) is reset when the server's reply comes,
      before forwarding it (the server did the work, the client never learns it) or right after;
    - :meth:`reset_after_bytes`: exactly ``n`` more bytes get through one way, then a reset;
    - :meth:`stall`: nothing forwarded (nor accepted) for a while; :meth:`reset_all`: reset now;
    - :meth:`stats`, :meth:`wait_fired`: what happened. :meth:`close` (or ``with``) ends it.

    Protocol-agnostic (it matches bytes, never parses), one I/O thread for every connection,
    every control thread-safe and applied when it returns. Bad arguments raise
    :class:`~data_collector.ConfigurationError`.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = 64,
        buffer_limit: int = 1 << 20,
        control_timeout_s: float = 10.0,
    ) -> None:
        if isinstance(target_port, bool) or not isinstance(target_port, int) or not 0 < target_port < 65536:
            raise ConfigurationError(f"FaultProxy: target_port must be an int 1..65535, got {target_port!r}")
        self.target = (target_host, target_port)
        self._listen_host = listen_host
        self._max = max_connections
        self._limit = buffer_limit
        self._control_timeout = control_timeout_s
        self._sel = selectors.DefaultSelector()
        self._masks: dict[socket.socket, int] = {}
        self._conns: dict[socket.socket, _Conn] = {}  # both sockets of a connection map to it
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._ops: collections.deque[tuple[Callable[[], None], threading.Event]] = collections.deque()
        self._ops_lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.port = self._listen(port)
        self._cut = False
        self._stalled_until: float | None = None  # monotonic deadline; inf = until restore()
        self._armed: collections.deque[_Armed] = collections.deque()
        self._byte_fault: tuple[Direction, int] | None = None
        self._accepted = self._refused = self._resets = self._fired = 0
        self._bytes_s = self._bytes_c = 0
        self._fired_cond = threading.Condition()
        self._lingering: dict[_Conn, float] = {}  # connections to reset once their last bytes are acked
        self._stop = False
        self._closed = False
        self._sel.register(self._wake_r, _READ)
        self._thread = threading.Thread(target=self._loop, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()

    # -- public controls ------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return self._listen_host, self.port

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy({self._listen_host}:{self.port} -> {self.target[0]}:{self.target[1]})"

    def cut(self) -> None:
        """Reset every connection and refuse new ones until :meth:`restore`."""

        def op() -> None:
            self._cut = True
            self._close_listener()
            self._reset_everything()

        self._control(op)

    def restore(self) -> None:
        """End a cut (listen again on the same port) and a stall."""

        def op() -> None:
            if self._cut:
                self._cut = False
                self._listen(self.port)
            self._stalled_until = None
            self._refresh_all()

        self._control(op)

    def stall(self, seconds: float | None = None) -> None:
        """Forward nothing (and accept nothing) for ``seconds``, or until :meth:`restore` if ``None``."""
        if seconds is not None and not seconds >= 0:
            raise ConfigurationError(f"stall seconds must be >= 0, got {seconds!r}")

        def op() -> None:
            self._stalled_until = float("inf") if seconds is None else time.monotonic() + seconds
            self._refresh_all()

        self._control(op)

    def reset_before_reply(self, match: bytes | None = None, *, skip: int = 0) -> None:
        """Reset the connection of the next (matching) request when its reply arrives, unforwarded."""
        self._arm(_Armed("before", match, skip))

    def reset_after_reply(self, match: bytes | None = None, *, skip: int = 0) -> None:
        """Reset the connection of the next (matching) request right after forwarding its reply."""
        self._arm(_Armed("after", match, skip))

    def reset_after_bytes(self, n: int, direction: Direction = "to_client") -> None:
        """Let exactly ``n`` more bytes through in ``direction``, then reset the connection carrying them."""
        if n < 1 or direction not in ("to_server", "to_client"):
            raise ConfigurationError(
                f"reset_after_bytes needs n >= 1 and a direction, got {n!r}, {direction!r}"
            )

        def op() -> None:
            self._byte_fault = (direction, n)

        self._control(op)

    def reset_all(self) -> None:
        """Reset every open connection now; new connections are still accepted."""
        self._control(self._reset_everything)

    def disarm(self) -> None:
        """Forget the armed resets that have not fired."""

        def op() -> None:
            self._armed.clear()
            self._byte_fault = None
            for conn in set(self._conns.values()):
                conn.pending = None

        self._control(op)

    def stats(self) -> ProxyStats:
        with self._fired_cond:
            return ProxyStats(
                self._accepted,
                len(set(self._conns.values())),
                self._refused,
                self._resets,
                self._fired,
                self._bytes_s,
                self._bytes_c,
            )

    def wait_fired(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``count`` armed faults in all have fired; AssertionError after ``timeout``."""
        with self._fired_cond:
            if not self._fired_cond.wait_for(lambda: self._fired >= count, timeout):
                raise AssertionError(f"{self!r}: {self._fired} of {count} faults fired in {timeout} s")

    def close(self) -> None:
        """Reset every connection, stop listening and end the I/O thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            with self._ops_lock:
                self._stop = True
            self._wake()
            self._thread.join(self._control_timeout)
        self._close_listener()
        for sock in list(self._conns):
            _hard_close(sock)
        self._conns.clear()
        with contextlib.suppress(OSError):
            self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- control plumbing -----------------------------------------------------------------------
    def _arm(self, fault: _Armed) -> None:
        if fault.skip < 0:
            raise ConfigurationError(f"skip must be >= 0, got {fault.skip!r}")
        self._control(lambda: self._armed.append(fault))

    def _control(self, op: Callable[[], None]) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        done = threading.Event()
        with self._ops_lock:
            self._ops.append((op, done))
        self._wake()
        if not done.wait(self._control_timeout):
            raise RuntimeError(f"{self!r}: the I/O thread did not answer within {self._control_timeout} s")

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _listen(self, port: int) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._listen_host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._listener = sock
        return int(sock.getsockname()[1])

    def _close_listener(self) -> None:
        sock, self._listener = self._listener, None
        if sock is not None:
            self._set_mask(sock, 0)
            sock.close()

    # -- the I/O thread ---------------------------------------------------------------------------
    def _stalled(self) -> bool:
        until = self._stalled_until
        if until is None:
            return False
        if time.monotonic() >= until:
            self._stalled_until = None
            self._refresh_all()
            return False
        return True

    def _loop(self) -> None:
        try:
            self._refresh_all()
            while True:
                with self._ops_lock:
                    if self._stop:
                        break
                    ops = list(self._ops)
                    self._ops.clear()
                for op, done in ops:
                    try:
                        op()
                    finally:
                        done.set()
                timeout: float | None = None
                if self._lingering:
                    self._reset_lingering()
                    timeout = 0.005 if self._lingering else None
                if self._stalled_until is not None:
                    timeout = max(0.0, min(timeout or 1.0, self._stalled_until - time.monotonic()))
                    self._stalled()
                for key, events in self._sel.select(timeout):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_r:
                        with contextlib.suppress(OSError):
                            while self._wake_r.recv(4096):
                                pass
                    elif sock is self._listener:
                        self._accept()
                    else:
                        conn = self._conns.get(sock)
                        if conn is not None:
                            self._service(conn, sock, events)
        finally:
            for sock in list(self._conns):
                _hard_close(sock)
            self._conns.clear()
            with self._ops_lock:
                for _, done in self._ops:
                    done.set()
                self._ops.clear()

    def _set_mask(self, sock: socket.socket, mask: int) -> None:
        old = self._masks.get(sock, 0)
        if mask == old:
            return
        if old == 0:
            self._sel.register(sock, mask)
        elif mask == 0:
            self._sel.unregister(sock)
        else:
            self._sel.modify(sock, mask)
        if mask:
            self._masks[sock] = mask
        else:
            self._masks.pop(sock, None)

    def _refresh_all(self) -> None:
        if self._listener is not None:
            self._set_mask(self._listener, 0 if self._stalled_until is not None else _READ)
        for conn in set(self._conns.values()):
            self._refresh(conn)

    def _refresh(self, conn: _Conn) -> None:
        if conn.client not in self._conns or conn in self._lingering:
            return
        if self._stalled_until is not None:
            self._set_mask(conn.client, 0)
            self._set_mask(conn.server, 0)
            return
        cmask = 0
        if not conn.client_eof and len(conn.to_server) < self._limit:
            cmask |= _READ
        if conn.to_client:
            cmask |= _WRITE
        smask = 0
        if not conn.connected:
            smask = _WRITE
        else:
            if not conn.server_eof and len(conn.to_client) < self._limit:
                smask |= _READ
            if conn.to_server:
                smask |= _WRITE
        self._set_mask(conn.client, cmask)
        self._set_mask(conn.server, smask)

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        for _ in range(64):
            try:
                client, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self._conns) // 2 >= self._max:
                with self._fired_cond:
                    self._refused += 1
                _hard_close(client)
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setblocking(False)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = server.connect_ex(self.target)
            if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                _hard_close(server)
                _hard_close(client)
                continue
            conn = _Conn(client, server)
            self._conns[client] = conn
            self._conns[server] = conn
            with self._fired_cond:
                self._accepted += 1
            self._refresh(conn)

    def _service(self, conn: _Conn, sock: socket.socket, events: int) -> None:
        if self._stalled():
            self._refresh(conn)
            return
        try:
            if sock is conn.server and not conn.connected:
                if events & _WRITE:
                    err = conn.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        self._drop(conn, reset=True)
                        return
                    conn.connected = True
            elif sock is conn.client:
                if events & _READ:
                    self._read_client(conn)
                if events & _WRITE and conn.client in self._conns:
                    self._flush(conn, "to_client")
            else:
                if events & _READ:
                    self._read_server(conn)
                if events & _WRITE and conn.client in self._conns:
                    self._flush(conn, "to_server")
        except OSError:
            self._drop(conn, reset=True)
            return
        if conn.client in self._conns:
            self._finish_if_done(conn)
        if conn.client in self._conns:
            self._refresh(conn)

    def _read_client(self, conn: _Conn) -> None:
        data = conn.client.recv(_CHUNK)
        if not data:
            conn.client_eof = True
            return
        if self._armed and conn.pending is None:
            seen = conn.tail + data
            head = self._armed[0]
            if head.match is None or head.match in seen:
                if head.skip > 0:
                    head.skip -= 1
                else:
                    self._armed.popleft()
                    conn.pending = head.kind
            if head.match:
                conn.tail = seen[-(len(head.match) - 1) :] if len(head.match) > 1 else b""
        data = self._apply_byte_fault(conn, data, "to_server")
        conn.to_server += data
        with self._fired_cond:
            self._bytes_s += len(data)

    def _read_server(self, conn: _Conn) -> None:
        data = conn.server.recv(_CHUNK)
        if not data:
            conn.server_eof = True
            return
        if conn.pending == "before":
            self._fire(conn)
            return
        if conn.pending == "after":
            conn.pending = None
            conn.after_flush_reset = "to_client"
        data = self._apply_byte_fault(conn, data, "to_client")
        conn.to_client += data
        with self._fired_cond:
            self._bytes_c += len(data)

    def _apply_byte_fault(self, conn: _Conn, data: bytes, direction: Direction) -> bytes:
        fault = self._byte_fault
        if fault is None or fault[0] != direction:
            return data
        left = fault[1]
        if len(data) < left:
            self._byte_fault = (direction, left - len(data))
            return data
        self._byte_fault = None
        conn.after_flush_reset = direction
        return data[:left]

    def _flush(self, conn: _Conn, direction: Direction) -> None:
        if direction == "to_client":
            buf, sock = conn.to_client, conn.client
        else:
            buf, sock = conn.to_server, conn.server
        if buf:
            sent = sock.send(buf)
            del buf[:sent]
        if not buf and conn.after_flush_reset == direction:
            # Reset only once the peer has the bytes: a reset drops what is still in the send queue.
            conn.after_flush_reset = None
            self._lingering[conn] = time.monotonic() + _LINGER_S
            self._set_mask(conn.client, 0)
            self._set_mask(conn.server, 0)

    def _reset_lingering(self) -> None:
        now = time.monotonic()
        for conn, deadline in list(self._lingering.items()):
            if conn.client not in self._conns:
                del self._lingering[conn]
                continue
            unacked = 0
            for sock in (conn.client, conn.server):
                with contextlib.suppress(OSError):
                    unacked += struct.unpack("i", fcntl.ioctl(sock, _SIOCOUTQ, b"\0\0\0\0"))[0]
            if unacked == 0 or now >= deadline:
                del self._lingering[conn]
                self._fire(conn)

    def _fire(self, conn: _Conn) -> None:
        with self._fired_cond:  # counted before the peer can see the reset
            self._fired += 1
            self._fired_cond.notify_all()
        self._drop(conn, reset=True)

    def _finish_if_done(self, conn: _Conn) -> None:
        """Pass half-closes on once the buffers are flushed; close when both sides are done."""
        if conn.client_eof and not conn.to_server and conn.connected:
            with contextlib.suppress(OSError):
                conn.server.shutdown(socket.SHUT_WR)
        if conn.server_eof and not conn.to_client:
            with contextlib.suppress(OSError):
                conn.client.shutdown(socket.SHUT_WR)
        if conn.client_eof and conn.server_eof and not conn.to_server and not conn.to_client:
            self._drop(conn, reset=False)

    def _drop(self, conn: _Conn, *, reset: bool) -> None:
        if reset:
            with self._fired_cond:
                self._resets += 1
        for sock in (conn.client, conn.server):
            self._set_mask(sock, 0)
            self._conns.pop(sock, None)
            if reset:
                _hard_close(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()

    def _reset_everything(self) -> None:
        for conn in set(self._conns.values()):
            self._drop(conn, reset=True)
