"""``data-collector read CONFIG``: read every variable once (commissioning)."""

from __future__ import annotations

import argparse
import threading
import time
from typing import IO, Any

from .._config import load_config
from .._model import (
    CollectedVariables,
    Quality,
    Variable,
)
from .._reader import DataReader
from ._common import EXIT_FAILED, EXIT_OK, _log, format_value, table


# -- read ------------------------------------------------------------------------------------------
def _cmd_read(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    config = load_config(args.config)
    contexts = [config.context(cid) for cid in args.context] if args.context else list(config.contexts)
    variables: dict[int, Variable] = {}
    where: dict[int, list[int]] = {}
    for context in contexts:
        for v in context.variables:
            variables.setdefault(v.id, v)
            where.setdefault(v.id, []).append(context.id)
    by_reader: dict[str, list[Variable]] = {}
    for v in variables.values():
        by_reader.setdefault(v.reader_type, []).append(v)
    readers = {r.reader_type: r for r in config.readers}
    results: dict[int, tuple[Any, Quality, str | None, float]] = {}
    lock = threading.Lock()

    def work(reader: DataReader, wanted: list[Variable]) -> None:
        t0 = time.perf_counter()
        try:
            reader.open()
        except Exception as exc:
            with lock:
                for v in wanted:
                    results[v.id] = (None, Quality.BAD, f"open failed: {exc}", 0.0)
            return
        try:
            batch = CollectedVariables.of(wanted)
            t0 = time.perf_counter()
            reader.read(batch)
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                for item in batch:
                    quality, error = item.quality, item.error
                    if item.value is None and quality is not Quality.BAD:
                        quality, error = Quality.BAD, error or "no value"
                    results[item.variable.id] = (item.value, quality, error, ms)
        except Exception as exc:
            with lock:
                for v in wanted:
                    results[v.id] = (None, Quality.BAD, f"read failed: {type(exc).__name__}: {exc}", 0.0)
        finally:
            try:
                reader.close()
            except Exception:
                _log.exception("closing reader %r failed", reader.reader_type)

    started = time.monotonic()
    threads = []
    for rt, wanted in by_reader.items():
        thread = threading.Thread(target=work, args=(readers[rt], wanted), name=f"read-{rt}", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = started + args.timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - started
    rows = []
    counts = {q: 0 for q in Quality}
    with lock:
        final = dict(results)
    for v in variables.values():
        value, quality, error, _ms = final.get(
            v.id, (None, Quality.BAD, f"no answer within {args.timeout:g} s", 0.0)
        )
        counts[quality] += 1
        row = [
            v.id,
            config.variable_names.get(v.id, ""),
            v.reader_type,
            v.address,
            v.value_type,
            format_value(value),
            quality,
            format_value(error, 300),
        ]
        if len(contexts) > 1:
            row.insert(0, ",".join(str(c) for c in where[v.id]))
        rows.append(row)
    headers = ["id", "name", "reader", "address", "type", "value", "quality", "error"]
    right = [0]
    if len(contexts) > 1:
        headers.insert(0, "contexts")
        right = [1]
    out.write("\n".join(table(headers, rows, right=right)) + "\n")
    summary = ", ".join(f"{n} {q}" for q, n in counts.items() if n)
    out.write(
        f"read {len(variables)} variables from {len(by_reader)} readers in {elapsed:.2f} s: {summary}\n"
    )
    out.flush()
    return EXIT_FAILED if counts[Quality.BAD] else EXIT_OK
