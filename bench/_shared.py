"""Helpers shared by the benchmarks: a simulator in a child process, and the raw drivers' connections.

Imported by the scripts of this folder (``python bench/<name>.py`` puts the folder on ``sys.path``).
"""

from __future__ import annotations

import queue
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def start_child(
    module: str, args: list[str], ready: str, timeout_s: float
) -> tuple[subprocess.Popen[str], str]:
    """Run ``python -m module *args`` in the project root; returns it with the first group of
    ``ready`` matched in its first line of output (printed when it serves), or exits the bench."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    line = lines.get(timeout=timeout_s)
    match = re.search(ready, line)
    if match is None:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, match.group(1)


def reachable(url: str | sa.URL) -> bool:
    """Whether the database server of ``url`` accepts a TCP connection (SQLite: always)."""
    u = sa.make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return True
    try:
        with socket.create_connection(
            (u.host or "127.0.0.1", u.port or _DEFAULT_PORTS.get(backend, 0)), timeout=2
        ):
            return True
    except OSError:
        return False


def connect_psycopg(url: sa.URL) -> Any:
    """A plain psycopg connection to the PostgreSQL database of ``url``."""
    import psycopg

    return psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))


def connect_pymysql(url: sa.URL) -> Any:
    """A plain PyMySQL connection to the MariaDB/MySQL database of ``url`` (utf8mb4)."""
    import pymysql

    return pymysql.connect(
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        database=url.database,
        charset="utf8mb4",
    )
