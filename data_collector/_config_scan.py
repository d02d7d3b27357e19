"""``[[scans]]`` in a configuration file: parameter scans (:class:`~data_collector.Scan`).

Format (keys marked *required*; the others are optional)::

    [[scans]]
    name = "sweep"                   # *required*: letters, digits, _ (names the scan table)
    context_id = 100                 # *required*: the id of every point's run (not a [[contexts]] id)
    default_interval_ms = 200        # interval of the measured variables without their own
    min_interval_ms = 100
    reader_type = "plc"              # default reader_type of its variables and setpoints
    value_type = "float"             # default value_type of its variables and setpoints
    samples = 5                      # capture each point until every measured variable has 5
                                     #   samples, or: duration_s = 2.0 (exactly one of them)
    on_error = "continue"            # a failed point: "continue" with the next, or "stop"
    retries = 0                      # do a failed point again this many times first
    journal = "sweep.journal.jsonl"  # the resume journal (relative to this file's folder);
                                     #   default: <file stem>.scan-<name>.jsonl beside the file
    allow_bad_samples = false        # true: BAD samples do not fail a point
    capture_timeout_s = 30           # samples mode: fail a point whose samples do not come
    store_timeout_s = 60             # how long a point waits for its data to be stored
    read_back = true                 # default read_back of the setpoints
    metadata = { campaign = "C-7" }  # user metadata of every point's run
    zip = [["flow", "valve"]]        # parameters that advance together (same number of values)

    [scans.settle]                   # after writing, before capturing (see Settle)
    time_s = 0.5
    variable = "flow_rb"             # a setpoint or a measured column: read until within
    target = "flow"                  #   tolerance of target (a number or a setpoint)
    tolerance = 0.05
    timeout_s = 30
    hold_s = 0
    poll_s = 0.1

    [[scans.setpoints]]              # every setpoint, in writing order
    name = "flow"                    # *required*: its column name
    id = 101                         # *required*: the variable id
    address = "hr:401"               # *required*
    value_type = "int"               # float, int, bool or str
    reader_type = "plc"              # the reader that writes it (it must be able to write)
    base = 0                         # *required*: its value where no parameter sets it
    read_back = true
    tolerance = 0.5                  # numbers read back may differ this much

    [[scans.variables]]              # the measured variables (keys of [[contexts.variables]]);
    id = 1                           #   `name` is the column name (default var_<id>)
    address = "ir:0:float32"
    name = "flow_rb"

    [scans.parameters]               # setpoint = values, in scan order (the first changes slowest)
    temp = [20, 30, 40]
    flow = { start = 0, stop = 30, step = 10 }      # or { start, stop, count }: stop included

Every problem is reported with its key path (``scans[0].setpoints[1].base``), as for the rest of
the file.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._collector import DataCollector
from ._config_model import MISSING, _join, _kind, show_value
from ._errors import ConfigurationError
from ._model import MAX_DURATION_S, MAX_ID, MIN_ID, DataCollectionContext, Variable
from ._reader import DataReader
from ._scan import SETPOINT_TYPES, Scan, Setpoint, Settle, _typed
from ._scan_rows import COLUMN_NAME

if TYPE_CHECKING:
    from ._config import _Loader

__all__ = ["SCAN_KEYS", "load_scans"]

_log = logging.getLogger("data_collector.config")

SCAN_KEYS = (
    "name",
    "context_id",
    "default_interval_ms",
    "min_interval_ms",
    "reader_type",
    "value_type",
    "metadata",
    "variables",
    "setpoints",
    "parameters",
    "zip",
    "samples",
    "duration_s",
    "settle",
    "on_error",
    "journal",
    "allow_bad_samples",
    "capture_timeout_s",
    "store_timeout_s",
    "read_back",
    "retries",
)
SETPOINT_KEYS = (
    "name",
    "id",
    "address",
    "value_type",
    "reader_type",
    "interval_ms",
    "base",
    "read_back",
    "tolerance",
)
SETTLE_KEYS = ("time_s", "variable", "target", "tolerance", "timeout_s", "hold_s", "poll_s")
RANGE_KEYS = ("start", "stop", "step", "count")


def load_scans(
    loader: _Loader,
    doc: Mapping[str, Any],
    base_metadata: Mapping[str, Any],
    readers: Mapping[str, DataReader],
    broken: set[str],
    context_paths: Mapping[int, str],
) -> list[Scan]:
    """The ``[[scans]]`` of ``doc``, checked (issues go to ``loader``)."""
    out: list[Scan] = []
    names: dict[str, str] = {}
    ids: dict[int, str] = {}
    for path, entry in loader.get_tables(doc, "", "scans", "scans"):
        scan = _Scan(loader, path, entry, base_metadata, readers, broken).build(context_paths, names, ids)
        if scan is not None:
            out.append(scan)
    return out


class _Scan:
    """The checks of one ``[[scans]]`` table."""

    def __init__(
        self,
        loader: _Loader,
        path: str,
        entry: Mapping[str, Any],
        base_metadata: Mapping[str, Any],
        readers: Mapping[str, DataReader],
        broken: set[str],
    ) -> None:
        self.loader = loader
        self.path = path
        self.entry = entry
        self.base_metadata = base_metadata
        self.readers = readers
        self.broken = broken
        self.issue = loader.issue

    def at(self, *keys: str | int) -> str:
        path = self.path
        for key in keys:
            path = f"{path}[{key}]" if isinstance(key, int) else _join(path, key)
        return path

    def count(self) -> int:
        return len(self.loader.issues) + self.loader.more

    def build(
        self, context_paths: Mapping[int, str], names: dict[str, str], ids: dict[int, str]
    ) -> Scan | None:
        entry, loader = self.entry, self.loader
        before = self.count()
        loader.unknown_keys(entry, self.path, SCAN_KEYS, "scan")
        name = entry.get("name", MISSING)
        if name is MISSING:
            self.issue(self.path, 'missing key "name" (the scan\'s name: letters, digits and _)')
        elif not isinstance(name, str) or not COLUMN_NAME.fullmatch(name):
            self.issue(
                self.at("name"), "must be letters, digits and _ (not starting with a digit, at most 60)", name
            )
            name = MISSING
        elif name in names:
            self.issue(self.at("name"), f"is already the name of {names[name]}", name)
            name = MISSING
        else:
            names[name] = self.path
        cid = entry.get("context_id", MISSING)
        if cid is MISSING:
            self.issue(self.path, 'missing key "context_id" (the id of the runs of its points, an integer)')
        else:
            if isinstance(cid, bool) or not isinstance(cid, int) or not MIN_ID <= cid <= MAX_ID:
                self.issue(self.at("context_id"), "must be an integer that fits a signed 64-bit integer", cid)
                cid = MISSING
            elif cid in context_paths:
                self.issue(
                    self.at("context_id"),
                    f"is the id of {context_paths[cid]}: give the scan's runs a context id of their own",
                    cid,
                )
                cid = MISSING
            elif cid in ids:
                self.issue(self.at("context_id"), f"is already the context id of {ids[cid]}", cid)
                cid = MISSING
            else:
                ids[cid] = self.path
        options: dict[str, Any] = {}
        for key in ("min_interval_ms", "default_interval_ms"):
            value = loader.get_interval(entry, self.path, key)
            if value is not MISSING:
                options[key] = value
        metadata = loader.get_table(entry, self.path, "metadata")
        options["metadata"] = {**self.base_metadata, **({} if metadata is MISSING else metadata)}
        default_rt = loader.get_str(entry, self.path, "reader_type")
        default_vt = loader.get_str(entry, self.path, "value_type")
        if default_rt is MISSING and len(loader.reader_names) == 1 and loader.reader_names[0]:
            default_rt = loader.reader_names[0]
        read_back = self.boolean(entry, "read_back", True)
        columns: dict[int, str] = {}
        if "variables" not in entry:
            self.issue(self.path, 'missing key "variables" (the [[scans.variables]] measured at every point)')
            variables = []
        else:
            variables = loader.variables(
                entry, self.path, default_rt, default_vt, self.readers, self.broken, {}
            )
            for vpath, table in loader.get_tables(entry, self.path, "variables", "scans.variables"):
                col = table.get("name", MISSING)
                if isinstance(col, str) and (not COLUMN_NAME.fullmatch(col) or len(col) > 52):
                    self.issue(
                        _join(vpath, "name"),
                        "a scan's variable names are its column names: letters, digits and _ "
                        "(not starting with a digit, at most 52)",
                        col,
                    )
                elif isinstance(col, str) and isinstance(table.get("id"), int):
                    columns[table["id"]] = col
        setpoints = self.setpoints(default_rt, default_vt, read_back)
        by_name = {sp.name: sp for sp, _p in setpoints}
        parameters = self.parameters(by_name)
        zipped = self.zipped()
        samples = loader.get_int(entry, self.path, "samples", maximum=(10**9, "a billion"))
        duration = self.seconds(entry, "duration_s")
        if "samples" not in entry and "duration_s" not in entry:
            self.issue(self.path, 'missing key "samples" or "duration_s" (how long each point is captured)')
        elif "samples" in entry and "duration_s" in entry:
            self.issue(self.at("duration_s"), 'give "samples" or "duration_s", not both', entry["duration_s"])
        settle = self.settle()
        on_error = entry.get("on_error", "continue")
        if on_error not in ("continue", "stop"):
            self.issue(self.at("on_error"), 'must be "continue" or "stop"', on_error)
        journal = self.journal(name)
        allow_bad = self.boolean(entry, "allow_bad_samples", False)
        retries = loader.get_int(entry, self.path, "retries", positive=False, maximum=(100, "tries"))
        if isinstance(retries, int) and retries < 0:
            self.issue(self.at("retries"), "must be >= 0", retries)
            retries = MISSING
        capture_timeout = self.seconds(entry, "capture_timeout_s")
        store_timeout = self.seconds(entry, "store_timeout_s")
        self.check_readers(variables, setpoints, cid, options)
        if self.count() > before or name is MISSING or cid is MISSING:
            return None
        try:
            context = DataCollectionContext(cid, [v.variable for v in variables], **options)
        except ConfigurationError as exc:
            self.issue(self.path, str(exc))
            return None
        try:
            return Scan(
                name,
                context,
                [sp for sp, _p in setpoints],
                parameters,
                zip=zipped,
                samples=None if samples is MISSING else samples,
                duration_s=None if duration is MISSING else duration,
                settle=settle,
                on_error=on_error,
                journal=journal,
                columns=columns,
                allow_bad_samples=allow_bad,
                capture_timeout_s=None if capture_timeout is MISSING else capture_timeout,
                store_timeout_s=60.0 if store_timeout is MISSING else store_timeout,
                retries=0 if retries is MISSING else retries,
            )
        except ConfigurationError as exc:
            self.issue(self.blame(str(exc)), _strip(str(exc), name))
            return None

    def blame(self, message: str) -> str:
        for word, key in (
            ("zip", "zip"),
            ("settle", "settle"),
            ("column", "variables"),
            ("parameters", "parameters"),
            ("setpoint", "setpoints"),
            ("points", "parameters"),
        ):
            if word in message:
                return self.at(key)
        return self.path

    # -- parts -------------------------------------------------------------------------------------
    def boolean(self, table: Mapping[str, Any], key: str, default: bool, base: str | None = None) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.issue(_join(base or self.path, key), f"must be true or false, got {_kind(value)}", value)
            return default
        return value

    def seconds(self, table: Mapping[str, Any], key: str, base: str | None = None) -> Any:
        value = table.get(key, MISSING)
        if value is MISSING:
            return MISSING
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 < value <= MAX_DURATION_S / 2
        ):
            self.issue(_join(base or self.path, key), "must be a number of seconds > 0", value)
            return MISSING
        return float(value)

    def setpoints(self, default_rt: Any, default_vt: Any, read_back: bool) -> list[tuple[Setpoint, str]]:
        entry, loader = self.entry, self.loader
        if "setpoints" not in entry:
            self.issue(
                self.path, 'missing key "setpoints" (the [[scans.setpoints]]: every setpoint with its base)'
            )
            return []
        tables = loader.get_tables(entry, self.path, "setpoints", "scans.setpoints")
        if isinstance(entry["setpoints"], list) and not entry["setpoints"]:
            self.issue(self.at("setpoints"), "a scan needs at least one setpoint", entry["setpoints"])
        out: list[tuple[Setpoint, str]] = []
        names: dict[str, str] = {}
        ids: dict[int, str] = {}
        for spath, table in tables:
            before = self.count()
            loader.unknown_keys(table, spath, SETPOINT_KEYS, "setpoint")
            name = table.get("name", MISSING)
            if name is MISSING:
                self.issue(spath, 'missing key "name" (the setpoint\'s column name)')
            elif not isinstance(name, str) or not COLUMN_NAME.fullmatch(name) or name in ("point", "time_us"):
                self.issue(
                    _join(spath, "name"),
                    "must be letters, digits and _ (not starting with a digit, at most 60; not point or "
                    "time_us): it names a column",
                    name,
                )
            elif name in names:
                self.issue(_join(spath, "name"), f"is already the name of {names[name]}", name)
            else:
                names[name] = spath
            vid = loader.get_id(table, spath, "variable")
            if isinstance(vid, int) and vid in ids:
                self.issue(_join(spath, "id"), f"{ids[vid]} writes the same variable", vid)
            elif isinstance(vid, int):
                ids[vid] = spath
            address = loader.get_str(table, spath, "address")
            if "address" not in table:
                self.issue(spath, 'missing key "address"')
            value_type = loader.get_str(table, spath, "value_type")
            if "value_type" not in table:
                value_type = default_vt
                if value_type is MISSING:
                    self.issue(spath, 'missing key "value_type" (float, int, bool or str)')
            if isinstance(value_type, str) and value_type not in SETPOINT_TYPES:
                self.issue(
                    _join(spath, "value_type"),
                    f"a setpoint's value_type must be one of {', '.join(SETPOINT_TYPES)}",
                    value_type,
                )
            reader_type = loader.get_str(table, spath, "reader_type")
            if "reader_type" not in table:
                reader_type = default_rt
                if reader_type is MISSING:
                    known = ", ".join(sorted({*self.readers, *self.broken})) or "none configured"
                    self.issue(spath, f'missing key "reader_type" (the reader that writes it: {known})')
            interval = loader.get_interval(table, spath, "interval_ms")
            sp_read_back = self.boolean(table, "read_back", read_back, spath)
            tolerance = table.get("tolerance", None)
            if tolerance is not None and (
                isinstance(tolerance, bool)
                or not isinstance(tolerance, int | float)
                or not math.isfinite(tolerance)
                or tolerance < 0
            ):
                self.issue(_join(spath, "tolerance"), "must be a number >= 0", tolerance)
            base = table.get("base", MISSING)
            if base is MISSING:
                self.issue(spath, 'missing key "base" (the setpoint\'s value where no parameter sets it)')
            elif isinstance(value_type, str) and value_type in SETPOINT_TYPES:
                try:
                    _typed(base, value_type, "base")
                except ConfigurationError as exc:
                    self.issue(_join(spath, "base"), str(exc).removeprefix("base: "), base)
            if self.count() > before:
                continue
            try:
                variable = Variable(
                    vid, address, value_type, reader_type, None if interval is MISSING else interval
                )
                setpoint = Setpoint(name, variable, base, sp_read_back, tolerance)
            except ConfigurationError as exc:
                self.issue(spath, str(exc))
                continue
            out.append((setpoint, spath))
        self.setpoint_paths = {sp.name: p for sp, p in out}
        return out

    def parameters(self, setpoints: Mapping[str, Setpoint]) -> dict[str, list[Any]]:
        table = self.loader.get_table(self.entry, self.path, "parameters")
        if table is MISSING:
            if "parameters" not in self.entry:
                self.issue(self.path, 'missing key "parameters" (setpoint = [values] in scan order)')
            return {}
        if not table:
            self.issue(self.at("parameters"), "a scan needs at least one parameter", table)
        out: dict[str, list[Any]] = {}
        for pname, spec in table.items():
            ppath = self.at("parameters", pname)
            sp = setpoints.get(pname)
            if sp is None:
                if pname not in getattr(self, "setpoint_paths", {}):
                    known = ", ".join(setpoints) or "none"
                    self.issue(ppath, f"is not a setpoint of this scan (setpoints: {known})", spec)
                continue
            values = self.values(spec, ppath)
            if values is None:
                continue
            vt = sp.variable.value_type
            typed: list[Any] = []
            for i, v in enumerate(values):
                try:
                    typed.append(_typed(v, vt, "value"))
                except ConfigurationError as exc:
                    where = f"{ppath}[{i}]" if isinstance(spec, list) else ppath
                    self.issue(where, str(exc).removeprefix("value: "), v)
                    break
            else:
                out[pname] = typed
        return out

    def values(self, spec: Any, ppath: str) -> list[Any] | None:
        if isinstance(spec, list):
            if not spec:
                self.issue(ppath, "has no values", spec)
                return None
            return spec
        if isinstance(spec, dict):
            self.loader.unknown_keys(spec, ppath, RANGE_KEYS, "range")
            missing = [k for k in ("start", "stop") if k not in spec]
            if missing:
                self.issue(
                    ppath,
                    f'a range needs "start", "stop" and "step" or "count" (missing: {", ".join(missing)})',
                )
                return None
            try:
                return Scan.range(spec["start"], spec["stop"], step=spec.get("step"), count=spec.get("count"))
            except ConfigurationError as exc:
                self.issue(ppath, str(exc).removeprefix("range: "), spec)
                return None
        self.issue(
            ppath,
            f"must be a list of values or a range {{ start, stop, step }} / {{ start, stop, count }}, "
            f"got {_kind(spec)}",
            spec,
        )
        return None

    def zipped(self) -> list[list[str]]:
        value = self.entry.get("zip", MISSING)
        if value is MISSING:
            return []
        if not isinstance(value, list) or not all(
            isinstance(g, list) and all(isinstance(n, str) for n in g) for g in value
        ):
            self.issue(self.at("zip"), 'must be a list of lists of parameter names, e.g. [["a", "b"]]', value)
            return []
        return value

    def settle(self) -> Settle | None:
        table = self.loader.get_table(self.entry, self.path, "settle")
        if table is MISSING:
            return None
        spath = self.at("settle")
        self.loader.unknown_keys(table, spath, SETTLE_KEYS, "settle")
        try:
            return Settle(**{k: v for k, v in table.items() if k in SETTLE_KEYS})
        except ConfigurationError as exc:
            message = str(exc).removeprefix("Settle: ")
            key = next((k for k in SETTLE_KEYS if message.startswith(k)), None)
            self.issue(
                _join(spath, key) if key else spath, message, table.get(key, MISSING) if key else MISSING
            )
            return None

    def journal(self, name: Any) -> Path | None:
        value = self.entry.get("journal", MISSING)
        base = self.loader.base_dir
        if value is MISSING:
            if base is None or not isinstance(name, str):
                return None
            stem = Path(self.loader.source).stem
            return base / f"{stem}.scan-{name}.jsonl"
        if not isinstance(value, str) or not value.strip():
            self.issue(self.at("journal"), "must be a file path (a non-empty string)", value)
            return None
        path = Path(os.path.expanduser(value))
        if not path.is_absolute() and base is not None:
            path = base / path
        if path.is_dir():
            self.issue(self.at("journal"), f"is a folder ({str(path)!r}), not a file", value)
            return None
        return path

    def check_readers(
        self,
        variables: Sequence[Any],
        setpoints: Sequence[tuple[Setpoint, str]],
        cid: Any,
        options: Mapping[str, Any],
    ) -> None:
        """Every variable and setpoint against its reader, as ``start()`` would check it."""
        probe = DataCollector(_log, list(self.readers.values()), [])
        context_id = cid if isinstance(cid, int) else 0
        intervals = {k: v for k, v in options.items() if k in ("min_interval_ms", "default_interval_ms")}
        try:
            items = [(e.variable, e.path) for e in variables] + [(sp.variable, p) for sp, p in setpoints]
            for variable, vpath in items:
                rt = variable.reader_type
                if rt in self.broken:
                    continue
                if rt not in self.readers:
                    known = ", ".join(show_value(r) for r in sorted({*self.readers, *self.broken})) or "none"
                    self.issue(
                        _join(vpath, "reader_type"),
                        f"no reader has this reader_type (configured: {known})",
                        rt,
                    )
                    continue
                try:
                    probe.check(DataCollectionContext(context_id, [variable], **intervals))
                except ConfigurationError as exc:
                    field = exc.field or "address"
                    if field == "interval_ms" and variable.interval_ms is None:
                        self.issue(self.at("default_interval_ms"), _clean(str(exc)))
                    else:
                        self.issue(_join(vpath, field), _clean(str(exc)), getattr(variable, field, MISSING))
            for sp, spath in setpoints:
                reader = self.readers.get(sp.variable.reader_type)
                if reader is not None and not reader.supports_write:
                    self.issue(
                        _join(spath, "reader_type"),
                        f"reader {sp.variable.reader_type!r} ({type(reader).__name__}) cannot write: a "
                        "setpoint needs a reader that writes (modbus, opcua, ...)",
                        sp.variable.reader_type,
                    )
        finally:
            probe.close()


def _strip(message: str, name: Any) -> str:
    return message.removeprefix(f"scan {name!r}: ")


def _clean(message: str) -> str:
    from ._config import _clean as clean

    return clean(message)
