"""``data-collector plugins``: the reader and writer types and where they come from."""

from __future__ import annotations

import argparse
from typing import IO

from .._errors import ConfigurationError
from .._registry import PluginInfo, plugins, reader_class, writer_class
from ._common import EXIT_FAILED, EXIT_OK, table


# -- plugins / simulator --------------------------------------------------------------------------------
def _cmd_plugins(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    rows = []
    broken = 0
    infos: list[PluginInfo] = [*plugins("reader"), *plugins("writer")]
    for info in infos:
        try:
            cls = reader_class(info.name) if info.kind == "reader" else writer_class(info.name)
            status = f"ok ({cls.__module__}.{cls.__qualname__})"
        except ConfigurationError as exc:
            broken += 1
            status = f"BROKEN: {exc}"
        origin = info.source + (f" ({info.distribution})" if info.distribution else "")
        rows.append((info.kind, info.name, origin, status))
    out.write("\n".join(table(["kind", "type", "from", "status"], rows)) + "\n")
    return EXIT_FAILED if broken else EXIT_OK
