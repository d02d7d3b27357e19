"""``data-collector run CONFIG``: collect until every context ends or Ctrl-C.

On a terminal a live table is redrawn; otherwise (a service, a log file) one status line is
written every ``--status-every`` seconds. ``--metrics-port`` serves ``stats()`` to Prometheus
(:mod:`data_collector.metrics`) while the command runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import IO

from .._config import Configuration, load_config
from ._common import EXIT_OK, _duration, _is_tty
from ._session import MetricsServer, _Session, _spool_dir, _Stopper, lock_spool, metrics_server


def _cmd_run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    config = load_config(args.config)
    spool_dir = _spool_dir(args, config)
    lock, status = lock_spool(spool_dir, err)
    if status != EXIT_OK:
        return status
    try:
        metrics = metrics_server(args)
        try:
            return _run(args, config, spool_dir, out, err, metrics)
        finally:
            if metrics is not None:
                metrics.close()
    finally:
        if lock is not None:
            lock.release()


def _run(
    args: argparse.Namespace,
    config: Configuration,
    spool_dir: Path | None,
    out: IO[str],
    err: IO[str],
    metrics: MetricsServer | None,
) -> int:
    live = _is_tty(out) and not args.quiet
    session = _Session(config, out, err, live=live, spool_dir=spool_dir)
    session.metrics = metrics
    with _Stopper(err) as stopper:
        status = session.start()
        if status != EXIT_OK:
            return status
        if not args.quiet:
            count = len(config.variables)
            spool = f"spooling to {spool_dir}" if spool_dir is not None else "no spool (--no-spool)"
            lines = [
                f"collecting {len(config.contexts)} contexts, {count} variables from {args.config}; "
                f"{spool}; Ctrl-C stops and writes every value read",
                *session.replay_lines(),
            ]
            if metrics is not None:
                lines.append(f"metrics: {metrics.url}")
            out.write("\n".join(lines) + "\n")
            out.flush()
        until = time.monotonic() + args.duration if args.duration is not None else None
        reason = session.watch(
            stopper,
            until=until,
            render=lambda: session.status_lines(
                f"data-collector run {args.config}: {_duration(time.monotonic() - session.started)}"
                " (Ctrl-C to stop)"
            ),
            # without a terminal: one status line every --status-every seconds (0: none)
            progress=session.status_line if not args.quiet and args.status_every > 0 else None,
            progress_s=args.status_every or 60.0,
        )
        if not args.quiet and reason.startswith("stopped"):
            out.write(f"{reason}: stopping, writing every value read...\n")
            out.flush()
        session.stop()
    lines, status = session.summary(reason)
    if not args.quiet:
        out.write("\n".join(lines) + "\n")
        out.flush()
    elif status != EXIT_OK:
        err.write(lines[-1] + "\n")  # --quiet: only why the status is not 0
        err.flush()
    return status
