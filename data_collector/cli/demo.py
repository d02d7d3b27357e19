"""``data-collector demo``: the embedded simulators collected into SQLite and CSV, with live values."""

from __future__ import annotations

import argparse
import contextlib
import csv
import time
from pathlib import Path
from typing import IO, Any

from .._config import loads_config
from ._common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, _duration, _is_tty
from ._session import _Session, _Stopper

# -- demo ----------------------------------------------------------------------------------------------
DEMO_CONFIG = """
# The configuration `data-collector demo` runs (${...} are filled in by the demo).
[[readers]]
type = "modbus"
reader_type = "modbus"
host = "127.0.0.1"
port = ${MODBUS_PORT}
timeout_s = 0.5

[[writers]]
type = "sql"
url = "sqlite:///${DEMO_DIR}/demo.sqlite"

[[writers]]
type = "csv"
path = "${DEMO_DIR}/samples.csv"

[[contexts]]
id = ${CONTEXT_ID}
duration_s = ${SECONDS}
reader_type = "modbus"
metadata = { started_by = "data-collector demo" }

[[contexts.variables]]
id = 1
address = "hr:0:float32"
value_type = "float"
interval_ms = 250
name = "Modbus sine"
unit = "bar"

[[contexts.variables]]
id = 2
address = "hr:2:float32"
value_type = "float"
interval_ms = 500
name = "Modbus ramp"
unit = "mm"

[[contexts.variables]]
id = 3
address = "hr:4:uint32"
value_type = "int"
name = "Modbus seconds counter"
unit = "s"

[[contexts.variables]]
id = 4
address = "hr:9.0"
value_type = "bool"
interval_ms = 500
name = "Modbus square wave"

[[contexts.variables]]
id = 5
address = "hr:240:float32"
value_type = "float"
name = "Modbus constant"
unit = "kW"

[[contexts.variables]]
id = 6
address = "hr:300:string8"
value_type = "str"
interval_ms = 2000
name = "Modbus text"
"""

#: Appended to :data:`DEMO_CONFIG` when the OPC UA simulator runs too.
DEMO_OPCUA = """
[[readers]]
type = "opcua"
reader_type = "opcua"
endpoint = "opc.tcp://127.0.0.1:${OPCUA_PORT}/"
timeout_s = 2.0

[[contexts.variables]]
id = 11
address = "nsu=urn:data-collector:simulator;s=Sim.Sine"
value_type = "float"
reader_type = "opcua"
interval_ms = 250
name = "OPC UA sine"
unit = "bar"

[[contexts.variables]]
id = 12
address = "nsu=urn:data-collector:simulator;s=Sim.Counter"
value_type = "int"
reader_type = "opcua"
name = "OPC UA counter"

[[contexts.variables]]
id = 13
address = "nsu=urn:data-collector:simulator;s=Sim.Toggle"
value_type = "bool"
reader_type = "opcua"
interval_ms = 500
name = "OPC UA toggle"

[[contexts.variables]]
id = 14
address = "nsu=urn:data-collector:simulator;s=Static.Double"
value_type = "float"
reader_type = "opcua"
name = "OPC UA constant"
unit = "kW"
"""


def _next_context_id(sqlite_path: Path) -> int:
    if not sqlite_path.exists():
        return 1
    try:
        from data_writer.sql import read_contexts

        runs = read_contexts(f"sqlite:///{sqlite_path}")
    except Exception:  # no tables yet, or not ours: start at 1
        return 1
    return max((run.context_id for run in runs), default=0) + 1


def _cmd_demo(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    try:
        from data_reader.modbus.simulator import ModbusSimulator
    except ImportError as exc:
        err.write(f'error: the demo needs pymodbus: pip install "data-collector[all]" ({exc})\n')
        return EXIT_CONFIG
    use_opcua = not args.no_opcua
    if use_opcua:
        try:
            from data_reader.opcua.simulator import OpcUaSimulator
        except ImportError:
            err.write('note: OPC UA left out (pip install "data-collector[opcua]")\n')
            use_opcua = False
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sqlite_path = out_dir / "demo.sqlite"
    csv_path = out_dir / "samples.csv"
    context_id = _next_context_id(sqlite_path)
    modbus = ModbusSimulator("127.0.0.1", args.modbus_port)
    opcua: Any = OpcUaSimulator("127.0.0.1", args.opcua_port) if use_opcua else None
    with contextlib.ExitStack() as stack:
        modbus.start()
        stack.callback(modbus.stop)
        if opcua is not None:
            opcua.start()
            stack.callback(opcua.stop)
        out.write(
            f"simulators: Modbus TCP on 127.0.0.1:{modbus.port}"
            + (f", OPC UA on {opcua.endpoint}" if opcua is not None else "")
            + "\n"
        )
        environ = {
            "MODBUS_PORT": str(modbus.port),
            "OPCUA_PORT": str(opcua.port) if opcua is not None else "0",
            "DEMO_DIR": out_dir.as_posix(),
            "CONTEXT_ID": str(context_id),
            "SECONDS": repr(float(args.seconds)),
        }
        text = DEMO_CONFIG + (DEMO_OPCUA if opcua is not None else "")
        config = loads_config(text, source="demo", environ=environ)
        session = _Session(config, out, err, live=_is_tty(out))
        with _Stopper(err) as stopper:
            status = session.start()
            if status != EXIT_OK:
                return status
            out.write(
                f"collecting {len(config.variables)} variables into {out_dir}/ for {args.seconds:g} s "
                "(Ctrl-C stops)\n"
            )
            out.flush()

            def render() -> list[str]:
                elapsed = time.monotonic() - session.started
                samples, _bad, _latest = session.monitor.snapshot()
                title = (
                    f"demo: {elapsed:.1f} / {args.seconds:g} s, {samples.get(context_id, 0)} samples "
                    f"(context {context_id})"
                )
                return session.values_lines(title)

            def progress() -> str:
                samples, bad, _latest = session.monitor.snapshot()
                elapsed = time.monotonic() - session.started
                return f"{elapsed:.0f} s: {samples.get(context_id, 0)} samples, {bad.get(context_id, 0)} bad"

            reason = session.watch(
                stopper, until=session.started + args.seconds + 10, render=render, progress=progress
            )
            session.stop()
    samples, bad, _latest = session.monitor.snapshot()
    lost = 0
    if session.stats is not None:
        lost = sum(
            ws.lost_samples + ws.dropped_samples + ws.unwritten_samples
            for name, ws in session.stats.writers.items()
            if name != session.monitor.name
        )
    sql_rows = csv_rows = -1
    with contextlib.suppress(Exception):
        from data_writer.sql import read_samples

        sql_rows = len(read_samples(f"sqlite:///{sqlite_path}", context_id))
    with contextlib.suppress(Exception), open(csv_path, newline="", encoding="utf-8") as f:
        csv_rows = sum(1 for row in csv.DictReader(f) if row["context_id"] == str(context_id))
    lines = session.values_lines("last values:")
    lines += [
        "",
        f"demo done ({reason}): {samples.get(context_id, 0)} samples ({bad.get(context_id, 0)} bad, "
        f"{lost} lost) of {len(config.variables)} variables in {_duration(session.elapsed)}, "
        f"context {context_id}",
        "the data is in:",
        f"  SQLite  {sqlite_path}  ({sql_rows} rows of context {context_id}; tables dc_samples, "
        "dc_variables, dc_contexts; view dc_samples_view)",
        f"  CSV     {csv_path}  ({csv_rows} rows of context {context_id})",
        "look at it with:",
        f"  data-collector export {sqlite_path} --context {context_id}",
        f"  data-collector export {sqlite_path} --context {context_id} --wide -o {out_dir}/wide.csv",
        f"  data-collector plot {sqlite_path} --context {context_id} -o {out_dir}/plot.png",
        f"  (in SQL: select * from dc_samples_view where context_id = {context_id})",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()
    return EXIT_FAILED if lost else EXIT_OK
