"""Environment substitution in configuration files: ``${NAME}``, ``${NAME:-default}``, ``$${``.

Applied to the file's text before TOML parsing, outside comments, so a substituted value may be a
number (``port = ${PORT:-502}``) or part of a string (``url = "postgresql://u:${DB_PASSWORD}@h/db"``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping
from typing import Any

_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}\n]*))?\}")
_TOKENS = re.compile(
    r'"""(?:\\.|[^\\])*?"""'  # multi-line basic string
    r"|'''[\s\S]*?'''"  # multi-line literal string
    r'|"(?:\\.|[^"\\\n])*"'  # basic string
    r"|'[^'\n]*'"  # literal string
    r"|#[^\n]*"  # comment
)


def _comment_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) offsets of the TOML comments of ``text`` (``#`` outside strings, to the line end)."""
    return [m.span() for m in _TOKENS.finditer(text) if m.group(0).startswith("#")]


def substitute(text: str, environ: Mapping[str, str], issue: Callable[[str, str, Any], None]) -> str:
    """``text`` with ``${NAME}`` / ``${NAME:-default}`` replaced from ``environ`` (``$${`` is a literal
    ``${``; comments are left alone); an unset variable without a default is reported to ``issue``
    (key path, message, value) and left as written."""
    if "${" not in text:
        return text
    comments = _comment_spans(text)
    starts = [a for a, _b in comments]

    def in_comment(pos: int) -> bool:
        i = bisect.bisect_right(starts, pos) - 1
        return i >= 0 and pos < comments[i][1]

    def replace(match: re.Match[str]) -> str:
        if in_comment(match.start()):
            return match.group(0)
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            issue(
                f"line {text.count(chr(10), 0, match.start()) + 1}",
                f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)",
                match.group(0),
            )
            return match.group(0)
        return value

    return _ENV.sub(replace, text)


# -- the whole file -------------------------------------------------------------------------
