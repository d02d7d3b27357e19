"""``data-collector simulator {modbus,opcua}``: run a shipped simulator."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import IO, Any

from .._errors import DataCollectionError
from ._common import EXIT_CONFIG, EXIT_STARTUP, _port


def _cmd_simulator(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    options = list(args.args)
    try:
        _check_port_options(options)
    except argparse.ArgumentTypeError as exc:
        err.write(f"error: simulator {args.kind}: {exc}\n")
        return EXIT_CONFIG
    module = "data_reader.modbus.simulator" if args.kind == "modbus" else "data_reader.opcua.simulator"
    try:
        sim: Any = importlib.import_module(module)
    except ImportError as exc:
        err.write(
            f'error: the {args.kind} simulator needs pip install "data-collector[{args.kind}]" ({exc})\n'
        )
        return EXIT_CONFIG
    try:
        result = sim.main(options)
    except DataCollectionError:
        raise  # main() maps it to its exit status
    except (OSError, RuntimeError) as exc:  # e.g. the port is in use
        err.write(f"error: simulator {args.kind} failed to start: {exc}\n")
        return EXIT_STARTUP
    return int(result or 0)


def _check_port_options(options: Sequence[str]) -> None:
    """Check every ``--port N`` / ``--port=N`` (or an abbreviation such as ``--po``) of a simulator's
    options, so a bad port is one line and exit status 2 whatever the simulator does with it."""
    for i, token in enumerate(options):
        if token == "--":
            return
        name, eq, value = token.partition("=")
        if len(name) < 4 or not "--port".startswith(name):
            continue
        if not eq:
            if i + 1 >= len(options):
                return  # the simulator's own parser says that --port needs a value
            value = options[i + 1]
        try:
            _port(value)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"--port: {exc}") from None
