"""The argument parser and :func:`main` of the ``data-collector`` command."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO

from .._config import ConfigFileError
from .._errors import ConfigurationError, DataCollectionError
from ._common import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STARTUP,
    _count,
    _id,
    _ids,
    _port,
    _positive,
    _seconds_or_off,
    _setup_logging,
    _version,
)
from .capture import CAPTURE_HELP, _cmd_capture
from .demo import _cmd_demo
from .export import _cmd_export
from .migrate import _cmd_migrate
from .plot import _cmd_plot
from .plugins import _cmd_plugins
from .read import _cmd_read
from .run import _cmd_run
from .scan import SCAN_HELP, _cmd_scan
from .simulator import _cmd_simulator
from .spool import _cmd_spool
from .tail import _cmd_tail
from .validate import _cmd_validate


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``data-collector`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    common.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parser = argparse.ArgumentParser(
        prog="data-collector",
        description="Collect values from industrial equipment as a TOML configuration file says.",
        epilog="Exit status: 0 ok, 1 values lost or read BAD, 2 configuration error, 3 startup error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    spooling = argparse.ArgumentParser(add_help=False)
    group = spooling.add_mutually_exclusive_group()
    group.add_argument(
        "--spool-dir",
        default=None,
        metavar="DIR",
        help="spool to DIR (default: the file's [collector] spool_dir, else <file stem>.spool/ beside "
        "the configuration file)",
    )
    group.add_argument(
        "--no-spool", action="store_true", help="no spool: values not written yet are lost on a crash"
    )

    metrics = argparse.ArgumentParser(add_help=False)
    metrics.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve the collector's statistics for Prometheus at http://ADDR:PORT/metrics while it runs "
        "(0: a free port; needs the extra metrics: prometheus-client)",
    )
    metrics.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        metavar="ADDR",
        help="the address --metrics-port listens on (127.0.0.1; 0.0.0.0 for a Prometheus on another host)",
    )

    p = sub.add_parser(
        "run",
        parents=[common, spooling, metrics],
        help="collect until the contexts end or Ctrl-C",
        description="Collect until every context ends, or Ctrl-C / SIGTERM. Every value read goes to a "
        "spool on disk first (default: <file stem>.spool/ beside the configuration file, unless its "
        "[collector] spool_dir says otherwise) and leaves it once its writer stored it: after a crash "
        "or with a store that is down, the next run writes it first.",
    )
    p.add_argument("config", help="the TOML configuration file")
    p.add_argument("--duration", type=_positive, default=None, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--status-every",
        type=_seconds_or_off,
        default=60.0,
        metavar="S",
        help="without a terminal (a service, a log file): write one status line every S seconds "
        "(default 60; 0: none)",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "capture",
        parents=[common, spooling, metrics],
        help="collect exactly while a command runs; exit with its status",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s CONFIG [--context ID ...] [--metadata KEY=VALUE ...] [options] -- COMMAND ARGS...",
        description=CAPTURE_HELP,
    )
    p.add_argument("config", help="the TOML configuration file")
    p.add_argument(
        "--context",
        type=_id,
        action="append",
        metavar="ID",
        help="capture this context (repeatable; default all)",
    )
    p.add_argument(
        "--metadata",
        action="append",
        metavar="KEY=VALUE",
        help="add to the runs' user metadata: KEY=VALUE (a string) or KEY:=JSON (21.5, true, [1,2]...); "
        "repeatable",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 instead of 0 when the command succeeded but collection was not clean",
    )
    p.add_argument(
        "command",
        nargs="*",
        help="the command and its arguments (after --, so that their options are not taken as ours)",
    )
    p.set_defaults(func=_cmd_capture)

    p = sub.add_parser(
        "scan",
        parents=[common, spooling],
        help="run a parameter scan of the file ([[scans]]); --resume, --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=SCAN_HELP,
    )
    p.add_argument("config", help="the TOML configuration file")
    p.add_argument("--name", default=None, help="the scan to run (needed when the file has several)")
    p.add_argument("--resume", action="store_true", help="skip the points the journal records as complete")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the points and the writes they would make; connect nowhere",
    )
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser(
        "validate", parents=[common, spooling], help="check a configuration without connecting"
    )
    p.add_argument("config", help="the TOML configuration file")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "spool",
        parents=[common],
        help="what a spool holds per writer; put quarantined batches back, or drop it",
        description="List per writer what a spool holds (samples not written yet, bytes, the oldest) "
        "and what it quarantined (batches a writer refused for good, with the reason). Exit status 1 "
        "when batches are quarantined. Change a spool only while no run uses it.",
    )
    p.add_argument("target", metavar="DIR", help="a spool folder, or a configuration file (its spool)")
    action = p.add_mutually_exclusive_group()
    action.add_argument(
        "--retry-quarantine",
        action="store_true",
        help="put every quarantined batch back into its writer's spool: the next run writes it first",
    )
    action.add_argument(
        "--drop", action="store_true", help="delete everything spooled and quarantined (needs --yes)"
    )
    p.add_argument("--yes", action="store_true", help="with --drop: really delete (else it says what)")
    p.set_defaults(func=_cmd_spool)

    p = sub.add_parser("read", parents=[common], help="read every variable once and print a table")
    p.add_argument("config", help="the TOML configuration file")
    p.add_argument(
        "--context", type=_id, action="append", metavar="ID", help="only this context (repeatable)"
    )
    p.add_argument("--timeout", type=_positive, default=30.0, metavar="S", help="give up after S s (30)")
    p.set_defaults(func=_cmd_read)

    p = sub.add_parser("demo", parents=[common], help="simulators -> SQLite and CSV, with live values")
    p.add_argument("--seconds", type=_positive, default=20.0, help="how long to collect (default 20)")
    p.add_argument("--out", default="data-collector-demo", help="output directory (./data-collector-demo)")
    p.add_argument("--modbus-port", type=_port, default=0, help="Modbus simulator port (0: a free one)")
    p.add_argument("--opcua-port", type=_port, default=0, help="OPC UA simulator port (0: a free one)")
    p.add_argument("--no-opcua", action="store_true", help="leave the OPC UA simulator out")
    p.set_defaults(func=_cmd_demo)

    source_options = argparse.ArgumentParser(add_help=False)  # export and plot
    source_options.add_argument(
        "source",
        help="a SQLAlchemy URL, an SQLite file, a .toml with a sql writer, or an HDF5 file of the hdf5 "
        "writer (.h5/.hdf5, or any name with the HDF5 signature)",
    )
    source_options.add_argument(
        "--run",
        type=_id,
        action="append",
        metavar="N",
        help="only run N of the context (1: its first, as --list numbers them; repeatable)",
    )
    source_options.add_argument(
        "--from",
        "--start",
        dest="start",
        default=None,
        help="from this ISO-8601 time (included; UTC if no offset)",
    )
    source_options.add_argument(
        "--to", "--end", dest="end", default=None, help="until this ISO-8601 time (excluded)"
    )
    source_options.add_argument("--table-prefix", default="dc_", help="table prefix of the store (dc_)")
    source_options.add_argument(
        "--writer", type=int, default=0, help="which sql writer of a .toml (0: the first)"
    )

    p = sub.add_parser(
        "export",
        parents=[common, source_options],
        help="samples of a SQL store or an HDF5 file to CSV or Parquet (long, or --wide)",
        description="Write the samples of a SQL store or an HDF5 file as CSV or Parquet: one row per sample, "
        "or with --wide one row per read time and one column per variable (its name, else its id; BAD "
        "samples empty). An unknown context or run, or an output file that is not .csv or .parquet, is "
        "a usage error (exit status 2).",
    )
    p.add_argument("--context", type=_id, action="append", metavar="ID", help="this context (default all)")
    p.add_argument("--list", action="store_true", help="list the recorded context runs instead")
    p.add_argument(
        "--wide", action="store_true", help="one column per variable, one row per read time (one context)"
    )
    p.add_argument("-o", "--output", default=None, help="output file (.csv or .parquet); default stdout")
    p.add_argument("--format", choices=("csv", "parquet"), default=None, help="default: by the file name")
    p.add_argument("--variables", type=_ids, default=None, metavar="ID,ID", help="only these variable ids")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "plot",
        parents=[common, source_options],
        help="draw variables of a stored context over time into a PNG, SVG or PDF file",
        description="Draw the chosen variables of one context (or one run of it) of a SQL store or an HDF5 "
        "file over time: one axis per unit, BAD stretches shaded. Needs matplotlib (extra 'plot').",
    )
    p.add_argument(
        "--context", type=_id, default=None, metavar="ID", help="the context (default: the only one)"
    )
    p.add_argument(
        "--variables",
        default=None,
        metavar="ID|NAME,...",
        help="only these variables, by id or name (default: every numeric one)",
    )
    p.add_argument("-o", "--output", required=True, help="the picture file: .png, .svg or .pdf")
    p.add_argument("--title", default=None, help="the title (default: the context, run and source)")
    p.add_argument("--width", type=_positive, default=10.0, metavar="IN", help="width in inches (10)")
    p.add_argument("--height", type=_positive, default=None, metavar="IN", help="height in inches (by axes)")
    p.add_argument("--dpi", type=_positive, default=100.0, help="dots per inch of a PNG (100)")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser(
        "tail",
        parents=[common],
        help="follow the Redis writer's streams live, one line per sample",
        description='Follow the streams of the Redis writer (type = "redis") live: XREAD BLOCK, one plain '
        "line per sample (read time, context, variable, quality, value as JSON, error). Ctrl-C ends it "
        "with exit status 0. While Redis is unreachable it keeps trying where it left off.",
    )
    p.add_argument("url", metavar="REDIS_URL", help="e.g. redis://127.0.0.1:6379/0 (rediss:// for TLS)")
    p.add_argument("--prefix", default="dc", help="the writer's key prefix (dc)")
    p.add_argument("--context", type=_id, default=None, metavar="ID", help="only this context")
    p.add_argument("--variable", type=_id, default=None, metavar="ID", help="only this variable")
    p.add_argument(
        "--from-start", action="store_true", help="print what the streams hold first (default: only new)"
    )
    p.add_argument("--count", type=_count, default=None, metavar="N", help="end after N lines")
    p.add_argument("--seconds", type=_positive, default=None, metavar="S", help="end after S seconds")
    p.set_defaults(func=_cmd_tail)

    p = sub.add_parser(
        "migrate",
        parents=[common],
        help="bring the tables of an older SQL writer to this version's schema",
        description="Migrate the tables of a SQL store written by an older data-collector to this "
        "version's schema, in place (samples kept, repeated ones dropped). Run it once, with no writer "
        "running on the store; on a current store it does nothing. Exit status with --check: 0 current, "
        "1 older (migrate it).",
    )
    p.add_argument("source", help="a SQLAlchemy URL, an SQLite file, or a .toml with a sql writer")
    p.add_argument("--check", action="store_true", help="only say which schema version the store has")
    p.add_argument("--table-prefix", default="dc_", help="table prefix of the store (dc_)")
    p.add_argument("--writer", type=int, default=0, help="which sql writer of a .toml (0: the first)")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser(
        "plugins",
        parents=[common],
        help="list reader and writer types (-v: with their options)",
        description="List the reader and writer types a configuration file can name, where each comes "
        "from, and whether it loads. With --verbose, or for the TYPEs given, also every option of each: "
        "its default (as TOML), the values a file may give, and what it means.",
    )
    p.add_argument("types", nargs="*", metavar="TYPE", help="only these types, with their options")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("simulator", help="run the Modbus or OPC UA simulator (options after the name)")
    p.add_argument("kind", choices=("modbus", "opcua"))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the simulator's options (--help lists them)")
    p.set_defaults(func=_cmd_simulator, verbose=0, quiet=False)
    return parser


def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``capture ... -- COMMAND ARGS``: the arguments before ``--`` and the command after it
    (taken apart before parsing, so that the command's own options are never ours)."""
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is None or argv[first] != "capture" or "--" not in argv[first + 1 :]:
        return argv, None
    cut = argv.index("--", first + 1)
    return argv[:cut], argv[cut + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``data-collector`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
    out, err = sys.stdout, sys.stderr
    head, command = _split_command(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(head)
    if command is not None:
        args.command = command
    if args.command != "simulator":
        # plugins: --verbose lists options, it does not raise the log level
        _setup_logging(0 if args.func is _cmd_plugins else args.verbose, args.quiet, err)
    func: Callable[[argparse.Namespace, IO[str], IO[str]], int] = args.func
    try:
        return func(args, out, err)
    except ConfigFileError as exc:
        err.write(f"{exc}\n")
        return EXIT_CONFIG
    except ConfigurationError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_CONFIG
    except DataCollectionError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_STARTUP
    except BrokenPipeError:  # e.g. `data-collector export ... | head`
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
