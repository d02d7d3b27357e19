"""Which database errors pass (retry the batch later) and which do not (retrying cannot help).

Transient: the connection failed or went away (refused, reset, timed out, server shutting down or
restarting, failover to a read-only node), the server is short of something for now (locks,
deadlocks, serialization conflicts, connections, memory, disk), the SQLite file is busy, locked,
unreadable for now or the disk is full. Also any error while *connecting* (the caller says so):
nothing in the batch can cause it. Permanent: what the data or the statements cause, integrity,
data and programming errors (a value the column refuses, a missing or foreign table, a trigger
refusing the row), and anything unknown.

:class:`SqlWriterError` is what the writer and the read-back functions raise: the message names
the database (password masked) and the driver's error, ``transient`` carries the verdict.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from data_collector import WriterError

from ._url import safe_url, scrub

__all__ = ["SqlWriterError", "cause", "is_transient_error", "translate"]


class SqlWriterError(WriterError):
    """A database operation of the SQL writer failed; ``transient`` says whether retrying may help
    (the connection failed or the server is short of something) or not (the data or the
    statements are at fault). :meth:`SqlDataWriter.is_transient` answers from it."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


SqlWriterError.__module__ = "data_writer.sql"  # its public home

# MySQL/MariaDB server and client error numbers that say "try again later".
_MYSQL_TRANSIENT = frozenset(
    {
        1021,  # disk full
        1037,  # out of memory
        1038,  # out of sort memory
        1040,  # too many connections
        1041,  # out of memory (thread stack)
        1042,  # cannot get host name
        1043,  # bad handshake
        1053,  # server shutdown in progress
        1152,  # aborted connection
        1154,  # read error from connection pipe
        1155,  # fcntl error
        1156,  # packets out of order
        1158,  # network read error
        1159,  # network read timeout
        1160,  # network write error
        1161,  # network write timeout
        1180,  # error during COMMIT (storage engine)
        1205,  # lock wait timeout
        1213,  # deadlock
        1290,  # --read-only (a replica promoted late, failover)
        1836,  # read-only mode
        1927,  # connection killed
        2002,  # cannot connect through socket
        2003,  # cannot connect to server
        2004,  # cannot create TCP/IP socket
        2005,  # unknown server host
        2006,  # server has gone away
        2013,  # lost connection during query
        2014,  # commands out of sync (the connection is unusable)
        2055,  # lost connection at reading
        4031,  # disconnected by the server (idle timeout)
    }
)

# PostgreSQL SQLSTATE classes and codes that pass.
_PG_TRANSIENT_CLASSES = ("08", "53", "57", "58")  # connection, resources, operator intervention, system
_PG_TRANSIENT_CODES = frozenset(
    {
        "40001",  # serialization failure
        "40P01",  # deadlock detected
        "55P03",  # lock not available
        "25006",  # read-only transaction (a standby after failover)
    }
)

# SQLite primary result codes that pass.
_SQLITE_TRANSIENT = frozenset(
    {
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        7,  # SQLITE_NOMEM
        8,  # SQLITE_READONLY (the file or its directory not writable now)
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
    }
)


def _driver_verdict(orig: BaseException) -> bool | None:
    """The verdict from a driver exception's code, or None when it carries none we know."""
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        if isinstance(code, int):
            return (code & 0xFF) in _SQLITE_TRANSIENT
        text = str(orig).lower()
        return "locked" in text or "disk i/o" in text or "unable to open" in text or "disk is full" in text
    module = type(orig).__module__.split(".", 1)[0]
    if module in ("pymysql", "MySQLdb"):  # by error number (their SQLSTATE is mostly HY000)
        args: Any = getattr(orig, "args", ())
        if args and isinstance(args[0], int):
            return args[0] in _MYSQL_TRANSIENT
        return type(orig).__name__ in ("OperationalError", "InterfaceError")
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        return sqlstate in _PG_TRANSIENT_CODES or sqlstate[:2] in _PG_TRANSIENT_CLASSES
    if module in ("psycopg", "psycopg2", "pg8000", "asyncpg"):
        # No SQLSTATE: the client side failed (connection lost, closed, or never made).
        return type(orig).__name__ in ("OperationalError", "InterfaceError")
    return None


def is_transient_error(exc: BaseException, dialect: sa.Dialect | None = None) -> bool:
    """Whether retrying the operation that raised ``exc`` later may succeed (see the module)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        if isinstance(current, sa.exc.DisconnectionError | sa.exc.TimeoutError):
            return True
        if isinstance(current, sa.exc.DBAPIError):
            if current.connection_invalidated:
                return True
            orig = current.orig
            if isinstance(orig, BaseException):
                if dialect is not None and _is_disconnect(dialect, orig):
                    return True
                verdict = _driver_verdict(orig)
                if verdict is not None:
                    return verdict
            return isinstance(current, sa.exc.OperationalError | sa.exc.InterfaceError) and not isinstance(
                orig, BaseException
            )
        if isinstance(current, sa.exc.SQLAlchemyError):
            return False
        if isinstance(current, OSError | TimeoutError | ConnectionError):
            return True
        verdict = _driver_verdict(current)
        if verdict is not None:
            if not verdict and dialect is not None and _is_disconnect(dialect, current):
                return True
            return verdict
        current = current.__cause__
    return False


def _is_disconnect(dialect: sa.Dialect, orig: BaseException) -> bool:
    dbapi = getattr(dialect, "loaded_dbapi", None)
    if dbapi is None or not isinstance(orig, dbapi.Error):
        return False
    try:
        return bool(dialect.is_disconnect(orig, None, None))
    except Exception:
        return False


def _detail(exc: BaseException) -> str:
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
        return f"{type(orig).__name__}: {str(orig).strip()}"
    return f"{type(exc).__name__}: {str(exc).strip()}"


def translate(
    url: URL, what: str, exc: BaseException, prefix: str = "", transient: bool | None = None
) -> SqlWriterError:
    """A :class:`SqlWriterError` for ``exc`` raised while doing ``what`` on ``url`` (password masked)."""
    if transient is None:
        transient = is_transient_error(exc)
    return SqlWriterError(
        f"SqlDataWriter {safe_url(url)}: {prefix}{what} failed: {scrub(_detail(exc), url)}",
        transient=transient,
    )


def cause(url: URL, exc: BaseException) -> BaseException | None:
    """``exc`` unless its text (or that of its causes) shows the password: then no cause."""
    password = url.password
    if not password:
        return exc
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if str(password) in str(seen) or str(password) in repr(seen.args):
            return None
        seen = seen.__cause__ or seen.__context__
    return exc
