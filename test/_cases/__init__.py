"""Plugin cases for the contract suites (the public ones of :mod:`data_collector.testing`).

Each module ``test/_cases/<name>_cases.py`` may define ``READER_CONTRACTS`` (subclasses of
:class:`~data_collector.testing.ReaderContract`, one per reader configuration) and/or
``WRITER_CASES: list[WriterCase]`` (a store and a way to read it back);
``reader_contract_test.py`` and ``writer_contract_test.py`` collect them all, so every shipped
plugin passes the same public contract a user's plugin would. A case whose server or optional
package is missing raises ``pytest.skip`` (unless ``DC_REQUIRE_SERVICES=1``, where it must fail
instead: use :func:`require_service`).

The skip rule for servers (PostgreSQL, MariaDB, Redis, MQTT): a test skips, with the reason, when
its server is unreachable (:func:`require_service`) or refuses the test's credentials
(:func:`require_login`: authentication failed, or the test database does not exist), unless
``DC_REQUIRE_SERVICES=1``, where it fails instead. Any other error is a test failure.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from data_collector import DataWriter
from data_collector.testing import FaultProxy, ReaderContract, StoredRun, StoredSample

__all__ = [
    "StoredRun",
    "StoredSample",
    "WriterCase",
    "WriterHarness",
    "all_reader_contracts",
    "all_writer_cases",
    "require_service",
]


class WriterHarness:
    """What a writer case yields: writers onto one store, and a way to read the store back."""

    def new_writer(self) -> DataWriter:  # pragma: no cover - interface
        raise NotImplementedError

    def read_back(self, context_id: int) -> list[StoredSample]:  # pragma: no cover - interface
        """Every sample stored for ``context_id``, in storage order."""
        raise NotImplementedError

    def read_runs(self) -> dict[int, list[StoredRun]] | None:
        """Per context id, its recorded runs in start order, or None if not stored.

        The default converts :meth:`read_contexts` (the older form, still used by some cases)."""
        runs = self.read_contexts()
        if runs is None:
            return None
        return {cid: [StoredRun(r["start"], r["end"], r["metadata"]) for r in rs] for cid, rs in runs.items()}

    def read_contexts(self) -> dict[int, list[dict[str, Any]]] | None:
        """Per context id, its runs as ``{"start", "end", "metadata"}`` dicts, or None (not stored)."""
        return None

    def proxy_target(self) -> tuple[str, int] | None:
        """``(host, port)`` of the store's server, or None (no network link)."""
        return None

    def new_proxied_writer(self, proxy: FaultProxy) -> DataWriter:  # pragma: no cover - interface
        """A writer on the same store through ``proxy`` (only with a :meth:`proxy_target`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class WriterCase:
    id: str
    #: make(tmp_path) -> context manager yielding a WriterHarness on an empty store
    make: Callable[[Path], AbstractContextManager[WriterHarness]]
    #: value types whose values come back exactly typed (others come back as str)
    typed_values: bool = True
    #: 1-D NumPy array values come back as NumPy arrays (the writer.arrays contract check)
    array_values: bool = False


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it under ``DC_REQUIRE_SERVICES=1`` (CI)."""
    if os.environ.get("DC_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (DC_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def require_service(host: str, port: int, what: str) -> None:
    """Skip (or fail under DC_REQUIRE_SERVICES=1) when host:port does not accept connections."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        skip_or_fail(f"{what} unreachable at {host}:{port}: {exc}")


#: The skip rule's verdict per server (the login is tried once per test run): None when usable,
#: else why the tests cannot log in.
_LOGINS: dict[str, str | None] = {}


def require_login(key: str, login: Callable[[], str | None]) -> None:
    """Skip (or fail under DC_REQUIRE_SERVICES=1) when ``login()`` says the server refused the
    test's credentials (it returns the reason; None: logged in). ``login()`` runs once per ``key``;
    an error it raises is a real failure, not a skip."""
    if key not in _LOGINS:
        _LOGINS[key] = login()
    reason = _LOGINS[key]
    if reason is not None:
        skip_or_fail(reason)


def _modules() -> Iterator[Any]:
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.endswith("_cases"):
            yield importlib.import_module(f"{__name__}.{info.name}")


def all_reader_contracts() -> list[type[ReaderContract]]:
    return [cls for mod in _modules() for cls in getattr(mod, "READER_CONTRACTS", [])]


def all_writer_cases() -> list[WriterCase]:
    return [case for mod in _modules() for case in getattr(mod, "WRITER_CASES", [])]
