"""``data-collector plugins [-v] [TYPE ...]``: the reader and writer types, where they come from,
and with ``--verbose`` the options each takes (from its constructor and its documentation)."""

from __future__ import annotations

import argparse
import textwrap
from typing import IO

from .._config_options import describe_options
from .._errors import ConfigurationError
from .._registry import PluginInfo, plugins, reader_class, writer_class
from ._common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, table


# -- plugins / simulator --------------------------------------------------------------------------------
def _cmd_plugins(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    rows = []
    broken = 0
    infos: list[PluginInfo] = [*plugins("reader"), *plugins("writer")]
    wanted: list[str] = list(args.types or [])
    unknown = [name for name in wanted if name not in {i.name for i in infos}]
    if unknown:
        known = ", ".join(sorted({i.name for i in infos}))
        err.write(f"error: no reader or writer type {', '.join(map(repr, unknown))} (types: {known})\n")
        return EXIT_CONFIG
    if wanted:
        infos = [i for i in infos if i.name in wanted]
    details: list[str] = []
    for info in infos:
        try:
            cls = reader_class(info.name) if info.kind == "reader" else writer_class(info.name)
            status = f"ok ({cls.__module__}.{cls.__qualname__})"
            if args.verbose or wanted:
                details += ["", *option_lines(info, cls)]
        except ConfigurationError as exc:
            broken += 1
            status = f"BROKEN: {exc}"
        origin = info.source + (f" ({info.distribution})" if info.distribution else "")
        rows.append((info.kind, info.name, origin, status))
    out.write("\n".join([*table(["kind", "type", "from", "status"], rows), *details]) + "\n")
    return EXIT_FAILED if broken else EXIT_OK


def option_lines(info: PluginInfo, cls: type, width: int = 100) -> list[str]:
    """The options of a plugin as TOML-like lines (``name = default  # type``), each followed by
    its meaning, for ``plugins --verbose``."""
    lines = [f'{info.kind} {info.name}: type = "{info.name}" ({cls.__module__}.{cls.__qualname__})']
    docs = describe_options(info.kind, cls)
    if not docs:
        lines.append("  (no options)")
    for doc in docs:
        lines.append("  " + doc.toml())
        if doc.meaning:
            lines += textwrap.wrap(doc.meaning, width, initial_indent="      ", subsequent_indent="      ")
    return lines
