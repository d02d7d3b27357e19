"""Shared pieces of the commands: exit statuses, output helpers, argument types, logging."""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .._model import (
    MAX_DURATION_S,
    MAX_ID,
    MIN_ID,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_STARTUP = 3
EXIT_INTERRUPTED = 130

_log = logging.getLogger("data_collector.cli")

#: The deduced-metadata key the collector sets on the runs it replays from a spool.
REPLAYED_KEY = "replayed_from_spool"
#: The monitor writer's name (the live view of ``run``; it has a spool folder of its own).
MONITOR_NAME = "data-collector-cli-monitor"
#: The lock file ``run`` holds in its spool folder while it runs.
LOCK_NAME = "data-collector.lock"


# -- output ------------------------------------------------------------------------------------------
class _Screen:
    """A block of lines redrawn in place on a terminal (a transient :class:`rich.live.Live`), cleared
    before log lines. Lines wider than the terminal are cut, not wrapped, so the block keeps its height.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.console = Console(file=stream, highlight=False, markup=False, emoji=False)
        self.live: Live | None = None
        self.lock = threading.Lock()

    def show(self, lines: Sequence[str]) -> None:
        text = Text("\n".join(lines), no_wrap=True, overflow="crop")
        with self.lock:
            # the terminal's width now (it may have been resized); 120 when it reports none
            self.console.width = max(20, shutil.get_terminal_size((120, 40)).columns - 1)
            if self.live is None:
                self.live = Live(
                    text,
                    console=self.console,
                    auto_refresh=False,  # no thread of its own: redrawn when show() is called
                    transient=True,  # clear() erases the block
                    redirect_stdout=False,  # sys.stdout / sys.stderr stay as they are
                    redirect_stderr=False,
                )
                self.live.start(refresh=True)
            else:
                self.live.update(text, refresh=True)

    def clear(self) -> None:
        with self.lock:
            if self.live is not None:
                self.live.stop()
                self.live = None


class _LogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines on stderr that first clear the live screen, so the two never mix."""

    screen: _Screen | None = None

    def emit(self, record: logging.LogRecord) -> None:
        screen = self.screen
        if screen is not None:
            screen.clear()
        super().emit(record)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Iterable[int] = ()) -> list[str]:
    """Rows as aligned text lines (columns whose index is in ``right`` are right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right_set = set(right)
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if i in right_set else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def format_value(value: Any, limit: int = 40) -> str:
    """A value for a terminal table (floats in full precision, bytes in hex), cut to ``limit``."""
    if value is None:
        text = ""
    elif value is True or value is False:
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, bytes | bytearray):
        text = value.hex()
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:
        text = str(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


def format_bytes(n: int) -> str:
    """A byte count for people: ``0 B``, ``812 B``, ``1.5 KiB``, ``3.2 GiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# -- entry point -------------------------------------------------------------------------------------
def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _positive(text: str) -> float:
    """A number of seconds > 0 and at most 100 years (what timers and deadlines can hold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    if value > MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DURATION_S:g} s (100 years), got {text!r}")
    return value


def _seconds_or_off(text: str) -> float:
    """A number of seconds >= 0 (0: off), at most 100 years."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value == 0:
        return 0.0
    return _positive(text)


def _count(text: str) -> int:
    """A count of things: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _id(text: str) -> int:
    """A context or variable id: an int that fits a signed 64-bit integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer id: {text!r}") from None
    if not MIN_ID <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"must fit a signed 64-bit integer, got {text!r}")
    return value


def _ids(text: str) -> list[int]:
    """Comma-separated ids (``1,2,5``)."""
    return [_id(part.strip()) for part in text.split(",") if part.strip()]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (0: a free one), got {text!r}")
    return value


def _version() -> str:
    from .. import __version__

    return __version__


def _setup_logging(verbose: int, quiet: bool, err: IO[str]) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = _LogHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _LogHandler)]
    root.addHandler(handler)
    root.setLevel(level)
