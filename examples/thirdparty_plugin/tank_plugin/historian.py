"""A writer to a plant historian over TCP, and a small in-memory historian to test it against.

The protocol: one JSON request per line, one JSON answer per line. ``{"op": "put", "context": 1,
"samples": [[variable, read_at_us, value, quality, error], ...]}`` stores samples under their
identity (context, variable, read time): a sample sent again is ignored, so the collector's
retry of a batch whose answer was lost stores nothing twice (``exactly_once``). ``{"op": "run",
"context": 1, "start": iso, "end": iso or null, "metadata": {...}}`` records a run.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from datetime import UTC, datetime, timedelta
from io import BufferedReader
from typing import Any

from data_collector import CollectedVariables, DataCollectionContext, DataWriter, WriterError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class HistorianWriter(DataWriter):
    """Sends every batch to the historian at ``host:port`` and waits for its acknowledgement."""

    exactly_once = True  # the historian keys samples by identity: a retried batch is stored once

    def __init__(
        self, host: str = "127.0.0.1", port: int = 7700, *, timeout_s: float = 5.0, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._sock: socket.socket | None = None
        self._answers: BufferedReader | None = None

    def open(self) -> None:
        self._connect()

    def close(self) -> None:
        answers, sock = self._answers, self._sock
        self._sock = self._answers = None
        if answers is not None:
            with contextlib.suppress(OSError):  # a broken connection: it is gone anyway
                answers.close()
        if sock is not None:
            sock.close()

    def _connect(self) -> tuple[socket.socket, BufferedReader]:
        if self._sock is None or self._answers is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            self._sock, self._answers = sock, sock.makefile("rb")
        return self._sock, self._answers

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request, one answer. A connection error (OSError: transient, the collector retries
        the batch) drops the connection so that the retry opens a new one."""
        try:
            sock, answers = self._connect()
            sock.sendall(json.dumps(request).encode() + b"\n")
            line = answers.readline()
            if not line:
                raise ConnectionResetError("the historian closed the connection without an answer")
        except OSError:
            self.close()
            raise
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):  # the historian refused the request: retrying cannot help
            where = f"{self.host}:{self.port}"
            raise WriterError(f"historian {where} refused {request['op']}: {answer.get('error')}")
        return answer

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        samples = [
            [
                item.variable.id,
                (item.read_at - _EPOCH) // timedelta(microseconds=1),
                item.value,
                item.quality.name,
                item.error,
            ]
            for item in variables
            if item.read_at is not None
        ]
        self._call({"op": "put", "context": context.id, "samples": samples})

    def _run(self, context: DataCollectionContext) -> None:
        start, end = context.start_date, context.end_date
        self._call(
            {
                "op": "run",
                "context": context.id,
                "start": start.isoformat() if start else None,
                "end": end.isoformat() if end else None,
                "metadata": dict(context.metadata),
            }
        )

    def context_started(self, context: DataCollectionContext) -> None:
        self._run(context)

    def context_stopped(self, context: DataCollectionContext) -> None:
        self._run(context)


class HistorianServer:
    """An in-memory historian on ``host`` (a free port unless ``port`` is given), for tests and demos.

    ``with HistorianServer() as server:`` serves in a background thread; :meth:`samples` and
    :meth:`runs` read what it stores.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._samples: dict[tuple[int, int, int], tuple[Any, str, str | None]] = {}
        self._runs: dict[tuple[int, str | None], dict[str, Any]] = {}
        self._lock = threading.Lock()
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    answer = owner._handle(json.loads(line))
                    self.wfile.write(json.dumps(answer).encode() + b"\n")
                    self.wfile.flush()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                """A client whose connection broke (the fault tests break them on purpose): nothing to do."""

        self._server = Server((host, port), Handler)
        self.host, self.port = str(self._server.server_address[0]), int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="historian", daemon=True)

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if request.get("op") == "put":
                new = 0
                for variable, at_us, value, quality, error in request["samples"]:
                    key = (request["context"], variable, at_us)
                    if key not in self._samples:  # insert or ignore: identity keyed
                        self._samples[key] = (value, quality, error)
                        new += 1
                return {"ok": True, "stored": new}
            if request.get("op") == "run":
                run = self._runs.setdefault((request["context"], request["start"]), {})
                run.update(start=request["start"], end=request["end"], metadata=request["metadata"])
                return {"ok": True}
        return {"ok": False, "error": f"unknown op {request.get('op')!r}"}

    def samples(self, context_id: int) -> list[tuple[int, datetime, Any, str, str | None]]:
        """(variable, read_at, value, quality, error) of every sample stored for ``context_id``."""
        with self._lock:
            return [
                (variable, _EPOCH + timedelta(microseconds=at_us), *stored)
                for (cid, variable, at_us), stored in self._samples.items()
                if cid == context_id
            ]

    def run_contexts(self) -> list[int]:
        """The context ids with a recorded run."""
        with self._lock:
            return sorted({cid for cid, _ in self._runs})

    def runs(self, context_id: int) -> list[dict[str, Any]]:
        """The runs of ``context_id`` (``start``, ``end``: ISO text or None; ``metadata``), by start."""
        with self._lock:
            found = [dict(r) for (cid, _), r in self._runs.items() if cid == context_id]
        return sorted(found, key=lambda r: r["start"] or "")

    def __enter__(self) -> HistorianServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
