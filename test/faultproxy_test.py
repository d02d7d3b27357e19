"""The fault-injection proxy (test/_faultproxy.py) against a small real echo server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from _faultproxy import FaultProxy
from _util import wait_for


class EchoServer:
    """Echoes every byte back; remembers what each connection sent. One thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.received: list[bytearray] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.closing = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.05)
        deadline = time.monotonic() + 300
        while not self.closing and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            buf = bytearray()
            with self.lock:
                self.received.append(buf)
                self.conns.append(conn)
            t = threading.Thread(target=self._echo, args=(conn, buf), daemon=True)
            self.threads.append(t)
            t.start()

    def _echo(self, conn: socket.socket, buf: bytearray) -> None:
        conn.settimeout(30)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                with self.lock:
                    buf += data
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def all_received(self) -> bytes:
        with self.lock:
            return b"".join(bytes(b) for b in self.received)

    def close(self) -> None:
        self.closing = True
        self.acceptor.join(5)
        self.sock.close()
        with self.lock:
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
        for t in [self.acceptor, *self.threads]:
            t.join(5)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.port) as p:
        yield p


def connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(proxy.address, timeout=timeout)


def recv_exactly(sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            data = sock.recv(n - len(out))
        except ConnectionResetError:
            if not out:
                raise
            break  # reset after some bytes: return those
        if not data:
            break
        out += data
    return bytes(out)


def assert_reset(sock: socket.socket, timeout: float = 5.0) -> None:
    """The connection was reset: the next recv raises ECONNRESET (or ends) with no data."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return
    assert data == b"", f"expected a reset, got {data!r}"


def test_forwards_both_ways_on_many_connections(proxy: FaultProxy, echo: EchoServer) -> None:
    socks = [connect(proxy) for _ in range(5)]
    try:
        for round_ in range(3):
            for i, s in enumerate(socks):
                msg = f"conn {i} round {round_}".encode()
                s.sendall(msg)
                assert recv_exactly(s, len(msg)) == msg
        stats = proxy.stats()
        assert stats.accepted == 5 and stats.active == 5 and stats.resets == 0
        sent = sum(len(f"conn {i} round {r}") for i in range(5) for r in range(3))
        assert stats.bytes_to_server == stats.bytes_to_client == sent
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: proxy.stats().active == 0, 5, "connections closed through the proxy")


def test_large_transfer_with_back_pressure(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * (16 * 1024)  # 4 MiB, more than the proxy's buffer limit
    with connect(proxy, timeout=20) as s:
        sender = threading.Thread(target=s.sendall, args=(payload,), daemon=True)
        sender.start()
        got = recv_exactly(s, len(payload), timeout=30)
        sender.join(10)
    assert got == payload


def test_half_close_is_passed_on(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        s.sendall(b"last words")
        s.shutdown(socket.SHUT_WR)
        assert recv_exactly(s, 10) == b"last words"
        assert s.recv(10) == b""  # the echo server saw EOF and closed: EOF comes back


def test_cut_resets_connections_and_refuses_until_restore(proxy: FaultProxy) -> None:
    s = connect(proxy)
    s.sendall(b"ping")
    assert recv_exactly(s, 4) == b"ping"
    proxy.cut()
    assert_reset(s)
    s.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=2)
    proxy.restore()
    with connect(proxy) as again:
        again.sendall(b"back")
        assert recv_exactly(again, 4) == b"back"
    assert proxy.stats().resets == 1


def test_reset_before_reply_delivers_the_request_but_not_the_reply(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    with connect(proxy) as s:
        s.sendall(b"BEGIN")
        assert recv_exactly(s, 5) == b"BEGIN"
        proxy.reset_before_reply(b"COMMIT")
        s.sendall(b"COMMIT")
        assert_reset(s)
    proxy.wait_fired(1, timeout=5)
    wait_for(lambda: echo.all_received() == b"BEGINCOMMIT", 5, "the server got the COMMIT")
    assert proxy.stats().bytes_to_client == 5  # the reply to COMMIT never went out


def test_reset_after_reply_delivers_the_reply_then_resets(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        proxy.reset_after_reply()
        s.sendall(b"COMMIT")
        assert recv_exactly(s, 6) == b"COMMIT"
        proxy.wait_fired(1, timeout=5)
        assert_reset(s)


def test_match_and_skip_choose_the_request(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        proxy.reset_after_reply(b"COMMIT", skip=1)
        for msg in (b"SELECT 1", b"COMMIT", b"SELECT 2"):  # the first COMMIT is let through
            s.sendall(msg)
            assert recv_exactly(s, len(msg)) == msg
        assert proxy.stats().faults_fired == 0
        s.sendall(b"COMMIT")  # the second one fires
        assert recv_exactly(s, 6) == b"COMMIT"
        assert_reset(s)
    assert proxy.stats().faults_fired == 1


def test_match_across_chunk_boundaries(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        proxy.reset_before_reply(b"COMMIT")
        s.sendall(b"xxCOM")
        assert recv_exactly(s, 5) == b"xxCOM"
        s.sendall(b"MITyy")
        assert_reset(s)
    assert proxy.stats().faults_fired == 1


def test_faults_fire_on_the_connection_that_sent_the_request(proxy: FaultProxy) -> None:
    with connect(proxy) as quiet, connect(proxy) as victim:
        proxy.reset_before_reply(b"COMMIT")
        quiet.sendall(b"SELECT")
        assert recv_exactly(quiet, 6) == b"SELECT"
        victim.sendall(b"COMMIT")
        assert_reset(victim)
        quiet.sendall(b"still here")
        assert recv_exactly(quiet, 10) == b"still here"


def test_reset_after_bytes_lets_exactly_n_through(proxy: FaultProxy, echo: EchoServer) -> None:
    with connect(proxy) as s:
        proxy.reset_after_bytes(5, "to_client")
        s.sendall(b"hello world")
        assert recv_exactly(s, 11) == b"hello"
        assert_reset(s)
    with connect(proxy) as s:
        proxy.reset_after_bytes(3, "to_server")
        s.sendall(b"abcdef")
        proxy.wait_fired(2, timeout=5)
        try:
            got = recv_exactly(s, 6)  # what the echo sent back before the reset, if anything
        except ConnectionResetError:
            got = b""
        assert got in (b"", b"abc")
        assert_reset(s)
    wait_for(lambda: echo.all_received() == b"hello worldabc", 5, "exactly 3 bytes at the server")


def test_stall_holds_traffic_until_restore(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        proxy.stall()
        s.sendall(b"held")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(4)
        late = socket.create_connection(proxy.address, timeout=5)  # waits in the backlog
        late.sendall(b"late")
        proxy.restore()
        assert recv_exactly(s, 4) == b"held"
        assert recv_exactly(late, 4) == b"late"
        late.close()


def test_timed_stall_ends_by_itself(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        proxy.stall(0.6)
        started = time.monotonic()
        s.sendall(b"wait")
        assert recv_exactly(s, 4, timeout=10) == b"wait"
        waited = time.monotonic() - started
    assert 0.5 <= waited < 5, waited


def test_reset_all_keeps_accepting(proxy: FaultProxy) -> None:
    a, b = connect(proxy), connect(proxy)
    a.sendall(b"1")
    b.sendall(b"2")
    assert recv_exactly(a, 1) == b"1" and recv_exactly(b, 1) == b"2"
    proxy.reset_all()
    assert_reset(a)
    assert_reset(b)
    a.close()
    b.close()
    with connect(proxy) as c:
        c.sendall(b"3")
        assert recv_exactly(c, 1) == b"3"
    assert proxy.stats().resets == 2


def test_target_down_resets_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = int(s.getsockname()[1])  # nothing listens once closed
    with FaultProxy("127.0.0.1", dead_port) as proxy:
        try:
            c = connect(proxy)
        except ConnectionResetError:
            return  # reset before connect() returned (a busy machine): reset all the same
        with c:
            try:
                c.sendall(b"anyone?")
            except (ConnectionResetError, BrokenPipeError):
                return
            assert_reset(c)


def test_max_connections_refuses_the_excess(echo: EchoServer) -> None:
    with FaultProxy("127.0.0.1", echo.port, max_connections=2) as proxy:
        a, b = connect(proxy), connect(proxy)
        for s in (a, b):
            s.sendall(b"ok")
            assert recv_exactly(s, 2) == b"ok"
        try:
            c = connect(proxy)
        except ConnectionResetError:
            pass  # reset before connect() returned
        else:
            assert_reset(c)
            c.close()
        assert proxy.stats().refused == 1
        a.close()
        b.close()


def test_disarm_and_close(echo: EchoServer) -> None:
    proxy = FaultProxy("127.0.0.1", echo.port)
    s = connect(proxy)
    proxy.reset_before_reply()
    proxy.disarm()
    s.sendall(b"safe")
    assert recv_exactly(s, 4) == b"safe"
    proxy.close()
    proxy.close()  # idempotent
    assert not proxy._thread.is_alive()
    assert_reset(s)
    s.close()
    with pytest.raises(OSError):
        socket.create_connection(proxy.address, timeout=2)
    with pytest.raises(RuntimeError, match="closed"):
        proxy.cut()
