"""The synchronous pymodbus TCP client, with a connect that keeps its error and sets TCP_NODELAY."""

from __future__ import annotations

import contextlib
import socket

from pymodbus.client import ModbusTcpClient

__all__ = ["TcpClient"]


class TcpClient(ModbusTcpClient):
    """:class:`ModbusTcpClient` without retries, whose failed connects say why (``last_error``).

    pymodbus logs a failed connect at ERROR level and returns False; the reader retries with
    backoff and reports the reason in the items' error text, so this connect does not log.
    """

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        super().__init__(host, port=port, timeout=timeout_s, retries=0, name=f"modbus {host}:{port}")
        self.last_error = ""

    def connect(self) -> bool:
        if self.socket is not None:
            return True
        params = self.comm_params
        try:
            sock = socket.create_connection(
                (params.host, params.port),
                timeout=params.timeout_connect,
                source_address=params.source_address,
            )
        except OSError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return False
        with contextlib.suppress(OSError):  # not a TCP socket
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket = sock
        self.last_error = ""
        return True

    def abort(self) -> None:
        """Wake a request waiting for its answer in another thread (it fails as a lost connection).

        Only shuts the socket down; the thread using the client closes it.
        """
        sock = self.socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
        self.socket = None
