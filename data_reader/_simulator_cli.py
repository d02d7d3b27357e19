"""Private helpers shared by the simulators' command lines (``python -m data_reader.<kind>.simulator``).

A bad argument is one ``error:`` line and exit status 2, not argparse's usage text and
``sys.exit``: :class:`ArgumentParser` raises :class:`ArgumentError`, which ``main`` reports.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["ArgumentError", "ArgumentParser", "port"]


class ArgumentError(Exception):
    """A bad command-line argument (the message names it)."""


class ArgumentParser(argparse.ArgumentParser):
    """Reports a bad argument by raising (main prints one line), not with usage and sys.exit."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(message)


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (0: a free one), got {text}")
    return value
