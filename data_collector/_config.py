"""Configuration files: readers, writers and collection contexts described in TOML.

Serves plant engineers who commission a collection from a file and a terminal (the
``data-collector`` command) and programs that keep their collection plan outside the code. The
file is TOML (read with the standard library's :mod:`tomllib`) and can say everything the Python
API can: readers and writers by plugin name with their constructor options, the collector's
options, contexts with their variables, intervals, duration, delayed start and metadata.

Format (every key is optional unless marked *required*)::

    [collector]                      # DataCollector keyword options
    max_queue_samples = 5000000      #   samples a writer holds in memory (without a spool, more
                                     #   are dropped, counted; with one, they wait on disk)
    max_write_samples = 100000       #   most samples of one context handed to one write() when behind
    write_retry_s = 10               #   cap of the doubling backoff between attempts of a write that
                                     #   failed with a transient error (retried for as long as it takes;
                                     #   a permanent error loses the batch at once)
    drain_timeout_s = 60             #   how long stop/close wait for the writers
    spool_dir = "plant.spool"        #   store-and-forward: each writer's data goes to a spool on disk
                                     #   here first (relative to this file's folder); default: none
                                     #   (`data-collector run` spools to <file stem>.spool/ beside
                                     #   the file unless told otherwise)
    spool_sync_s = 1.0               #   the spool is synced to disk at least this often: at most
                                     #   this much of what was read is lost on a crash
    spool_max_bytes = "1 GiB"        #   bound per writer (bytes, or a string with B, KiB, MiB,
                                     #   GiB, TiB, kB, MB, GB, TB): when full, the oldest is dropped

    [metadata]                       # merged into every context's metadata (the context's wins)
    site = "Plant 3"

    [[readers]]                      # one table per reader (device, connection)
    type = "modbus"                  # *required*: plugin name (modbus, opcua, random, or a
                                     #   third-party name from the data_collector.readers entry points)
    reader_type = "press"            # the name variables use (default: the plugin's own, e.g. "modbus")
    host = "127.0.0.1"               # every other key is a constructor keyword argument
    port = 502

    [[writers]]                      # one table per writer
    type = "csv"                     # *required*: noop, csv, sql, or a data_collector.writers plugin
    path = "data/context-{context_id}.csv"

    [[contexts]]                     # one table per collection context
    id = 1                           # *required*: the context id (an int, unique in the file)
    default_interval_ms = 1000       # interval of variables without their own
    min_interval_ms = 100            # smallest interval accepted (a reader's min_interval_ms wins)
    duration_s = 3600                # the context ends by itself after this (default 24 h)
    start_at = 2026-05-04T06:00:00+02:00   # delayed start: a TOML date-time with an offset
    reader_type = "press"            # default reader_type of its variables
    value_type = "float"             # default value_type of its variables
    metadata = { batch = "B-1042", operator = "J. Doe" }
    deadband = 0.5                   # on-change recording, default of its variables: a value is
                                     #   recorded when it moved more than this (absolute) since the
                                     #   last recorded one; 0 records every change (default: none,
                                     #   every sample is recorded)
    deadband_percent = 2.0           #   or: more than this percent of the last recorded value
                                     #   (not both; a variable's own deadband replaces these)
    max_age_s = 600                  #   heartbeat: an unchanged value is recorded again after this
                                     #   long (seconds; alone, it means on change with deadband 0)

    [[contexts.variables]]           # one table per variable (or an array of inline tables)
    id = 1                           # *required*: the variable id (an int)
    address = "hr:0:float32"         # *required*: the address in the reader's syntax
    value_type = "float"             # float, int, bool, str (readers may add e.g. bytes)
    reader_type = "press"            # default: the context's, else the only reader's
    interval_ms = 500                # default: the context's default_interval_ms
    deadband = 0.1                   # on-change recording of this variable (deadband,
    max_age_s = 60                   #   deadband_percent, max_age_s): replaces the context's
    name = "Press 1 pressure"        # a label: stored by the writers, shown by the command line,
                                     #   the column title of `export --wide` and the legend of `plot`
    unit = "bar"                     # its unit (stored; `plot` draws one axis per unit)
    description = "after the valve"  # free text (stored)

    [[scans]]                        # parameter scans (``data-collector scan``): see
    name = "sweep"                   #   data_collector._config_scan for every key
    context_id = 100

On-change recording (``deadband``, ``deadband_percent``, ``max_age_s``): quality and error
changes and every BAD sample are always recorded; non-numeric values are recorded on any change.
What is not recorded is counted as suppressed in the statistics (see :mod:`._onchange`).

Environment variables: ``${NAME}`` and ``${NAME:-default}`` are replaced by their value before
the file is parsed, as written (so ``port = ${MODBUS_PORT:-502}`` is an integer and
``url = "postgresql+psycopg://dc:${DB_PASSWORD}@db/plant"`` keeps a secret out of the file);
``$${`` writes a literal ``${``. Relative paths in options are relative to the current directory,
except ``[collector] spool_dir``, which is relative to the configuration file's folder (the
folder given as ``base_dir`` to :func:`loads_config`, else the current directory).

Spool and writer names: a spool keeps one folder per writer, named after the writer's ``name``,
so with a spool two writers need different names (``name = "..."`` of a ``sql`` or ``noop``
writer; a ``csv`` writer is named after its path); the key path of the clash is reported.

Errors. :func:`load_config` validates everything that can be checked without connecting: the TOML
syntax, every key and its type, plugin names and their options (by the constructor's signature,
then by constructing the reader or writer, which does not connect), each variable against its
reader (address syntax, value type, interval against the minimum) and variable ids defined
differently in two contexts. It reports every problem it finds at once in a
:class:`ConfigFileError`, one line per problem naming the file, the key path and the bad value::

    plant.toml: contexts[0].variables[2].address: "hr:7:flaot32": unknown type 'flaot32' ...

Array indexes in key paths count from 0, in file order.

Example::

    import logging
    from data_collector._config import load_config

    config = load_config("examples/plant.toml")   # raises ConfigFileError listing every problem
    with config.collector(logging.getLogger("plant")) as collector:
        config.start(collector)                    # every context, at its start_at
        ...                                        # collector.contexts() empties as they end

    # the file's spool_dir (config.spool_dir) is used unless overridden: a folder, or None for none
    collector = config.collector(logging.getLogger("plant"), spool_dir="/var/spool/plant")

This module is the loader (TOML, key paths, contexts and variables); the loaded model and its
problems are in :mod:`._config_model`, ``${NAME}`` substitution in :mod:`._config_env`, and the
check of a plugin table against its constructor in :mod:`._config_options`.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from ._collector import DataCollector
from ._config_env import substitute
from ._config_model import (
    MISSING,
    ConfigFileError,
    ConfigIssue,
    Configuration,
    _join,
    _kind,
    _name_clashes,
    show_value,
)
from ._config_options import blame, check_options
from ._config_scan import load_scans
from ._errors import ConfigurationError
from ._model import (
    MAX_DURATION_S,
    MAX_ID,
    MAX_INTERVAL_MS,
    MIN_ID,
    ON_CHANGE_FIELDS,
    DataCollectionContext,
    Variable,
    _check_on_change,
)
from ._reader import DataReader
from ._registry import reader_class, writer_class
from ._writer import DataWriter

__all__ = ["ConfigFileError", "ConfigIssue", "Configuration", "load_config", "loads_config"]

_log = logging.getLogger("data_collector.config")


MAX_ISSUES = 100

_TOP_KEYS = ("collector", "metadata", "readers", "writers", "contexts", "scans")
_COLLECTOR_KEYS = (
    "max_queue_samples",
    "max_write_samples",
    "write_retry_s",
    "drain_timeout_s",
    "spool_dir",
    "spool_sync_s",
    "spool_max_bytes",
)
_BYTE_UNITS = {
    "b": 1,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}
_BYTES = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
_CONTEXT_KEYS = (
    "id",
    "variables",
    "min_interval_ms",
    "default_interval_ms",
    "duration_s",
    "metadata",
    "start_at",
    "reader_type",
    "value_type",
    *ON_CHANGE_FIELDS,
)
_VARIABLE_KEYS = (
    "id",
    "address",
    "value_type",
    "reader_type",
    "interval_ms",
    "name",
    "unit",
    "description",
    *ON_CHANGE_FIELDS,
)


# -- loading ----------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Configuration:
    """Read, check and build the configuration in the TOML file at ``path``.

    Raises :class:`ConfigFileError` listing every problem found (see the module documentation).
    ``environ`` replaces :data:`os.environ` for ``${NAME}`` substitutions.
    """
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigFileError(
            source, [ConfigIssue("", f"cannot read the file: {exc.strerror or exc}")]
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(source, [ConfigIssue("", f"not UTF-8 text: {exc}")]) from None
    return loads_config(text, source=source, environ=environ, base_dir=Path(source).parent)


def loads_config(
    text: str,
    *,
    source: str = "<string>",
    environ: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Configuration:
    """Check and build the configuration in the TOML ``text``; ``source`` names it in errors.

    ``base_dir`` is the folder a relative ``spool_dir`` is relative to (default: the current one).
    """
    return _Loader(source, os.environ if environ is None else environ, base_dir).load(text)


class _TooMany(Exception):
    """Internal: the issue limit was reached."""


@dataclass(slots=True)
class _VarEntry:
    variable: Variable
    path: str


class _Loader:
    def __init__(
        self, source: str, environ: Mapping[str, str], base_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.source = source
        self.environ = environ
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.issues: list[ConfigIssue] = []
        self.more = 0
        #: the reader_type each [[readers]] table gives or would give (None when unknown)
        self.reader_names: list[str | None] = []

    # -- issues ---------------------------------------------------------------------------------
    def issue(self, path: str, message: str, value: Any = MISSING) -> None:
        if len(self.issues) >= MAX_ISSUES:
            self.more += 1
            return
        self.issues.append(ConfigIssue(path, message, value))

    def fail(self) -> ConfigFileError:
        return ConfigFileError(self.source, self.issues, more=self.more)

    def unknown_keys(self, table: Mapping[str, Any], path: str, allowed: Sequence[str], what: str) -> None:
        for key, value in table.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                self.issue(_join(path, key), f"unknown key{hint} ({what} keys: {', '.join(allowed)})", value)

    def get_int(
        self,
        table: Mapping[str, Any],
        path: str,
        key: str,
        *,
        positive: bool = True,
        maximum: tuple[int, str] | None = None,
    ) -> Any:
        """The int at ``key`` (MISSING when absent or bad); ``maximum`` is (limit, what it means)."""
        value = table.get(key, MISSING)
        if value is MISSING:
            return MISSING
        if isinstance(value, bool) or not isinstance(value, int):
            self.issue(_join(path, key), f"must be an integer, got {_kind(value)}", value)
            return MISSING
        if positive and value <= 0:
            self.issue(_join(path, key), "must be > 0", value)
            return MISSING
        if maximum is not None and value > maximum[0]:
            self.issue(_join(path, key), f"must be at most {maximum[0]} ({maximum[1]})", value)
            return MISSING
        return value

    def get_interval(self, table: Mapping[str, Any], path: str, key: str) -> Any:
        return self.get_int(table, path, key, maximum=(MAX_INTERVAL_MS, "366 days in ms"))

    def get_id(self, table: Mapping[str, Any], path: str, what: str) -> Any:
        """The ``id`` of a context or variable table: an int that fits a signed 64-bit integer."""
        value = table.get("id", MISSING)
        if value is MISSING:
            self.issue(path, f'missing key "id" (the {what} id, an integer)')
        elif isinstance(value, bool) or not isinstance(value, int):
            self.issue(_join(path, "id"), f"must be an integer, got {_kind(value)}", value)
            return MISSING
        elif not MIN_ID <= value <= MAX_ID:
            self.issue(_join(path, "id"), f"must fit a signed 64-bit integer ({MIN_ID}..{MAX_ID})", value)
            return MISSING
        return value

    def get_str(self, table: Mapping[str, Any], path: str, key: str) -> Any:
        value = table.get(key, MISSING)
        if value is MISSING:
            return MISSING
        if not isinstance(value, str) or not value.strip():
            got = "an empty string" if isinstance(value, str) else _kind(value)
            self.issue(_join(path, key), f"must be a non-empty string, got {got}", value)
            return MISSING
        return value

    def get_on_change(self, table: Mapping[str, Any], path: str) -> dict[str, Any] | None:
        """The on-change keys of a context or variable table (checked), or None after an issue."""
        given = {k: table[k] for k in ON_CHANGE_FIELDS if k in table}
        for key, value in given.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.issue(_join(path, key), f"must be a number, got {_kind(value)}", value)
                return None
        try:
            _check_on_change("", *(given.get(k) for k in ON_CHANGE_FIELDS))
        except ConfigurationError as exc:
            key = exc.field if exc.field in given else next(iter(given))
            self.issue(_join(path, key), str(exc), given[key])
            return None
        return given

    def get_table(self, table: Mapping[str, Any], path: str, key: str) -> Any:
        value = table.get(key, MISSING)
        if value is MISSING:
            return MISSING
        if not isinstance(value, dict):
            self.issue(_join(path, key), f"must be a table, got {_kind(value)}", value)
            return MISSING
        return value

    def get_tables(
        self, table: Mapping[str, Any], base: str, key: str, what: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """The tables of the array ``key`` (``[[what]]``) of ``table`` (at ``base``) with their paths."""
        value = table.get(key, MISSING)
        if value is MISSING:
            return []
        path = _join(base, key)
        if not isinstance(value, list):
            self.issue(path, f"must be an array of tables ([[{what}]]), got {_kind(value)}", value)
            return []
        out = []
        for i, entry in enumerate(value):
            p = f"{path}[{i}]"
            if not isinstance(entry, dict):
                self.issue(p, f"must be a table, got {_kind(entry)}", entry)
                continue
            out.append((p, entry))
        return out

    # -- text -----------------------------------------------------------------------------------
    def substitute(self, text: str) -> str:
        return substitute(text, self.environ, self.issue)

    def load(self, text: str) -> Configuration:
        text = self.substitute(text)
        if self.issues:
            raise self.fail()
        try:
            doc = tomllib.loads(text)
        except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
            raise ConfigFileError(self.source, [ConfigIssue("", f"invalid TOML: {exc}")]) from None
        try:
            return self.build(doc)
        except _TooMany:
            raise self.fail() from None

    def build(self, doc: dict[str, Any]) -> Configuration:
        self.unknown_keys(doc, "", _TOP_KEYS, "top-level")
        collector_options = self.collector_options(doc)
        base_metadata = self.get_table(doc, "", "metadata")
        readers, reader_paths, broken = self.readers(doc)
        writers, writer_paths, writer_types = self.writers(doc)
        if "contexts" not in doc and "scans" not in doc:
            self.issue(
                "contexts", "missing: a configuration needs at least one [[contexts]] (or [[scans]]) table"
            )
        contexts, start_at, names, var_paths, ctx_paths = self.contexts(
            doc, {} if base_metadata is MISSING else base_metadata, readers, broken
        )
        scans = load_scans(
            self, doc, {} if base_metadata is MISSING else base_metadata, readers, broken, ctx_paths
        )
        if collector_options.get("spool_dir") is not None:
            for issue in _name_clashes(writers, writer_paths):
                self.issue(issue.path, issue.message, issue.value)
        if self.issues:
            raise self.fail()
        return Configuration(
            source=self.source,
            readers=list(readers.values()),
            writers=writers,
            contexts=contexts,
            start_at=start_at,
            collector_options=collector_options,
            variable_names=names,
            reader_paths=reader_paths,
            writer_paths=writer_paths,
            writer_types=writer_types,
            variable_paths=var_paths,
            context_paths=ctx_paths,
            scans=scans,
        )

    # -- [collector] ----------------------------------------------------------------------------
    def collector_options(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        table = self.get_table(doc, "", "collector")
        if table is MISSING:
            return {}
        self.unknown_keys(table, "collector", _COLLECTOR_KEYS, "[collector]")
        options = {k: v for k, v in table.items() if k in _COLLECTOR_KEYS}
        spool_dir = options.pop("spool_dir", None)
        if "spool_max_bytes" in options:
            size = _byte_size(options["spool_max_bytes"])
            if size is None:
                self.issue(
                    "collector.spool_max_bytes",
                    'must be an integer (bytes) or a string such as "512 MiB" '
                    "(units: B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)",
                    options["spool_max_bytes"],
                )
                return {}
            options["spool_max_bytes"] = size
        try:  # no spool_dir here: checking must not create the folder
            DataCollector(_log, [], [], **options).close()
        except (ConfigurationError, ArithmeticError, TypeError, ValueError) as exc:  # e.g. 10**400 s
            key = blame(str(exc), options)
            path = _join("collector", key) if key else "collector"
            self.issue(path, str(exc), table.get(key, MISSING) if key else MISSING)
            return {}
        if spool_dir is not None:
            folder = self.spool_folder(spool_dir)
            if folder is None:
                return {}
            options["spool_dir"] = folder
        return options

    def spool_folder(self, value: Any) -> str | None:
        """``[collector] spool_dir`` resolved against the file's folder (None after an issue)."""
        path = "collector.spool_dir"
        if not isinstance(value, str) or not value.strip():
            got = "an empty string" if isinstance(value, str) else _kind(value)
            self.issue(path, f"must be a folder path (a non-empty string), got {got}", value)
            return None
        folder = Path(os.path.expanduser(value))
        if not folder.is_absolute() and self.base_dir is not None:
            folder = self.base_dir / folder
        if folder.exists() and not folder.is_dir():
            self.issue(path, f"is not a folder: {str(folder)!r} is a file", value)
            return None
        return str(folder)

    # -- [[readers]] / [[writers]] ----------------------------------------------------------------
    def readers(self, doc: Mapping[str, Any]) -> tuple[dict[str, DataReader], dict[str, str], set[str]]:
        built: dict[str, DataReader] = {}
        paths: dict[str, str] = {}
        broken: set[str] = set()
        for path, entry in self.get_tables(doc, "", "readers", "readers"):
            cls, type_name = self.plugin_class("reader", entry, path)
            wanted = entry.get("reader_type")
            if not isinstance(wanted, str):
                wanted = getattr(cls, "reader_type", None) if cls is not None else type_name
            reader = self.construct("reader", cls, entry, path) if cls is not None else None
            if not isinstance(reader, DataReader):
                if isinstance(wanted, str) and wanted:
                    broken.add(wanted)
                self.reader_names.append(wanted if isinstance(wanted, str) and wanted else None)
                continue
            rt = reader.reader_type
            self.reader_names.append(rt if isinstance(rt, str) and rt.strip() else None)
            if not isinstance(rt, str) or not rt.strip():
                self.issue(
                    _join(path, "reader_type"),
                    f'{type(reader).__name__} has no reader_type: give one with reader_type = "..."',
                )
                continue
            if rt in built:
                self.issue(
                    _join(path, "reader_type"),
                    f"reader_type is already used by {paths[rt]}: give each reader its own reader_type",
                    rt,
                )
                continue
            built[rt] = reader
            paths[rt] = path
        return built, paths, broken

    def writers(self, doc: Mapping[str, Any]) -> tuple[list[DataWriter], list[str], list[str]]:
        built: list[DataWriter] = []
        paths: list[str] = []
        type_names: list[str] = []
        for path, entry in self.get_tables(doc, "", "writers", "writers"):
            cls, type_name = self.plugin_class("writer", entry, path)
            if cls is None:
                continue
            writer = self.construct("writer", cls, entry, path)
            if isinstance(writer, DataWriter):
                built.append(writer)
                paths.append(path)
                type_names.append(type_name or "")
        return built, paths, type_names

    def plugin_class(
        self, kind: Literal["reader", "writer"], entry: Mapping[str, Any], path: str
    ) -> tuple[type | None, str | None]:
        type_name = entry.get("type", MISSING)
        if type_name is MISSING:
            example = "modbus, opcua, random" if kind == "reader" else "csv, sql, noop"
            self.issue(path, f'missing key "type" (the {kind} plugin: {example}, or an installed plugin)')
            return None, None
        if not isinstance(type_name, str) or not type_name.strip():
            self.issue(_join(path, "type"), f"must be a non-empty string, got {_kind(type_name)}", type_name)
            return None, None
        try:
            cls: type = reader_class(type_name) if kind == "reader" else writer_class(type_name)
        except ConfigurationError as exc:
            self.issue(_join(path, "type"), str(exc), type_name)
            return None, type_name
        return cls, type_name

    def construct(
        self, kind: Literal["reader", "writer"], cls: type, entry: Mapping[str, Any], path: str
    ) -> object | None:
        options = {k: v for k, v in entry.items() if k != "type"}
        before = len(self.issues) + self.more
        late = check_options(kind, cls, options, path, self.issue)
        if len(self.issues) + self.more > before:
            return None
        kwargs = {k: v for k, v in options.items() if k not in late}
        try:
            obj: object = cls(**kwargs)
        except (ConfigurationError, TypeError, ValueError) as exc:
            blamed = blame(str(exc), options) or (next(iter(options)) if len(options) == 1 else None)
            self.issue(
                _join(path, blamed) if blamed else path, str(exc), options[blamed] if blamed else MISSING
            )
            return None
        except Exception as exc:
            self.issue(path, f"{cls.__name__} could not be created: {type(exc).__name__}: {exc}")
            return None
        for key, value in late.items():
            if key == "reader_type" and (not isinstance(value, str) or not value.strip()):
                got = "an empty string" if isinstance(value, str) else _kind(value)
                self.issue(_join(path, key), f"must be a non-empty string, got {got}", value)
                return None
            if key == "min_interval_ms" and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                self.issue(_join(path, key), "must be an integer > 0", value)
                return None
            setattr(obj, key, value)
        return obj

    # -- [[contexts]] ---------------------------------------------------------------------------
    def contexts(
        self,
        doc: Mapping[str, Any],
        base_metadata: Mapping[str, Any],
        readers: Mapping[str, DataReader],
        broken: set[str],
    ) -> tuple[
        list[DataCollectionContext],
        dict[int, datetime],
        dict[int, str],
        dict[tuple[int, int], str],
        dict[int, str],
    ]:
        contexts: list[tuple[DataCollectionContext, str, list[_VarEntry]]] = []
        start_at: dict[int, datetime] = {}
        names: dict[int, str] = {}
        var_paths: dict[tuple[int, int], str] = {}
        ctx_paths: dict[int, str] = {}
        entries = self.get_tables(doc, "", "contexts", "contexts")
        if "contexts" in doc and isinstance(doc["contexts"], list) and not doc["contexts"]:
            self.issue("contexts", "a configuration needs at least one context", doc["contexts"])
        for path, entry in entries:
            self.unknown_keys(entry, path, _CONTEXT_KEYS, "context")
            cid = self.get_id(entry, path, "context")
            if cid is MISSING:
                pass
            elif cid in ctx_paths:
                self.issue(_join(path, "id"), f"context id is already used by {ctx_paths[cid]}", cid)
                cid = MISSING
            else:
                ctx_paths[cid] = path
            options: dict[str, Any] = {}
            for key in ("min_interval_ms", "default_interval_ms"):
                value = self.get_interval(entry, path, key)
                if value is not MISSING:
                    options[key] = value
            duration = entry.get("duration_s", MISSING)
            if duration is not MISSING:
                if (
                    isinstance(duration, bool)
                    or not isinstance(duration, int | float)
                    or (isinstance(duration, float) and not math.isfinite(duration))
                    or duration <= 0  # exact for ints of any size
                ):
                    self.issue(_join(path, "duration_s"), "must be a number of seconds > 0", duration)
                elif duration > MAX_DURATION_S:
                    self.issue(
                        _join(path, "duration_s"),
                        f"must be at most {MAX_DURATION_S:g} s (100 years)",
                        duration,
                    )
                else:
                    options["duration_s"] = duration
            metadata = self.get_table(entry, path, "metadata")
            options["metadata"] = {**base_metadata, **({} if metadata is MISSING else metadata)}
            options.update(self.get_on_change(entry, path) or {})
            when = self.start_time(entry, path)
            default_rt = self.get_str(entry, path, "reader_type")
            default_vt = self.get_str(entry, path, "value_type")
            if default_rt is MISSING and len(self.reader_names) == 1 and self.reader_names[0]:
                default_rt = self.reader_names[0]  # the only reader reads every variable
            variables = self.variables(entry, path, default_rt, default_vt, readers, broken, names)
            if cid is MISSING:
                continue
            for v in variables:
                var_paths[(cid, v.variable.id)] = v.path
            if when is not None:
                start_at[cid] = when
            try:
                context = DataCollectionContext(cid, [v.variable for v in variables], **options)
            except ConfigurationError as exc:  # pre-checked: only unforeseen cases get here
                blamed = blame(str(exc), entry)
                self.issue(
                    _join(path, blamed) if blamed else path,
                    str(exc),
                    entry.get(blamed, MISSING) if blamed else MISSING,
                )
                continue
            contexts.append((context, path, variables))
        # a variable its reader refuses (a bad address...) is reported for that reason alone: a
        # "defined differently" line about it would only repeat the typo, before the real cause
        before = len(self.issues)
        self.check_with_readers(contexts, readers, broken)
        self.check_conflicts(contexts, refused={issue.path for issue in self.issues[before:]})
        return [c for c, _p, _v in contexts], start_at, names, var_paths, ctx_paths

    def start_time(self, entry: Mapping[str, Any], path: str) -> datetime | None:
        value = entry.get("start_at", MISSING)
        if value is MISSING:
            return None
        when = value
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                self.issue(
                    _join(path, "start_at"), "not a date-time (write 2026-05-04T06:00:00+02:00)", value
                )
                return None
        if not isinstance(when, datetime):
            self.issue(
                _join(path, "start_at"),
                f"must be a date-time with a UTC offset, e.g. 2026-05-04T06:00:00+02:00, got {_kind(value)}",
                value,
            )
            return None
        if when.tzinfo is None:
            self.issue(
                _join(path, "start_at"),
                "needs a UTC offset (e.g. 2026-05-04T06:00:00+02:00 or 2026-05-04T04:00:00Z)",
                value,
            )
            return None
        return when

    def variables(
        self,
        entry: Mapping[str, Any],
        path: str,
        default_rt: Any,
        default_vt: Any,
        readers: Mapping[str, DataReader],
        broken: set[str],
        names: dict[int, str],
    ) -> list[_VarEntry]:
        if "variables" not in entry:
            self.issue(path, 'missing key "variables" (the [[contexts.variables]] of the context)')
            return []
        tables = self.get_tables(entry, path, "variables", "contexts.variables")
        vpath_base = _join(path, "variables")
        if isinstance(entry["variables"], list) and not entry["variables"]:
            self.issue(vpath_base, "a context needs at least one variable", entry["variables"])
        out: list[_VarEntry] = []
        seen: dict[int, str] = {}
        for vpath, table in tables:
            before = len(self.issues) + self.more
            self.unknown_keys(table, vpath, _VARIABLE_KEYS, "variable")
            vid = self.get_id(table, vpath, "variable")
            if vid is MISSING:
                pass
            elif vid in seen:
                self.issue(
                    _join(vpath, "id"), f"duplicate variable id in this context (also {seen[vid]})", vid
                )
            else:
                seen[vid] = vpath
            address = self.get_str(table, vpath, "address")
            if address is MISSING and "address" not in table:
                self.issue(vpath, 'missing key "address"')
            value_type = self.get_str(table, vpath, "value_type")
            if value_type is MISSING and "value_type" not in table:
                value_type = default_vt
                if value_type is MISSING:
                    self.issue(vpath, 'missing key "value_type" (float, int, bool, str, ...)')
            reader_type = self.get_str(table, vpath, "reader_type")
            if reader_type is MISSING and "reader_type" not in table:
                reader_type = default_rt
                if reader_type is MISSING:
                    known = ", ".join(sorted({*readers, *broken})) or "none configured"
                    self.issue(vpath, f'missing key "reader_type" (the reader that reads it: {known})')
            interval = self.get_interval(table, vpath, "interval_ms")
            labels: dict[str, str] = {}
            for label_key in ("name", "unit", "description"):
                label = table.get(label_key, MISSING)
                if label is MISSING:
                    continue
                if not isinstance(label, str):
                    self.issue(_join(vpath, label_key), f"must be a string, got {_kind(label)}", label)
                else:
                    labels[label_key] = label
            name = labels.get("name", MISSING)
            on_change = self.get_on_change(table, vpath)
            if len(self.issues) + self.more > before or on_change is None:
                continue
            try:
                variable = Variable(
                    vid,
                    address,
                    value_type,
                    reader_type,
                    None if interval is MISSING else interval,
                    name=labels.get("name"),
                    unit=labels.get("unit"),
                    description=labels.get("description"),
                    **on_change,
                )
            except ConfigurationError as exc:
                key = blame(str(exc), table)
                self.issue(
                    _join(vpath, key) if key else vpath, str(exc), table.get(key, MISSING) if key else MISSING
                )
                continue
            if isinstance(name, str):
                names.setdefault(vid, name)
            out.append(_VarEntry(variable, vpath))
        return out

    def check_conflicts(
        self,
        contexts: list[tuple[DataCollectionContext, str, list[_VarEntry]]],
        refused: AbstractSet[str] = frozenset(),
    ) -> None:
        """Variable ids defined differently in two contexts (none about a variable whose own
        definition has an issue at one of the paths in ``refused``)."""

        def has_issue(entry: _VarEntry) -> bool:
            return any(p == entry.path or p.startswith((entry.path + ".", entry.path + "[")) for p in refused)

        first: dict[int, _VarEntry] = {}
        for _context, _path, variables in contexts:
            for entry in variables:
                v = entry.variable
                seen = first.get(v.id)
                if seen is None:
                    first[v.id] = entry
                    continue
                if seen.variable.same_definition(v) or has_issue(entry) or has_issue(seen):
                    continue
                other = seen.variable
                field = next(
                    f for f in ("address", "value_type", "reader_type") if getattr(v, f) != getattr(other, f)
                )
                self.issue(
                    _join(entry.path, field),
                    f"variable {v.id} is defined differently in {seen.path} ({field} = "
                    f"{show_value(getattr(other, field))}); one id must mean one device value in every "
                    "context",
                    getattr(v, field),
                )

    def check_with_readers(
        self,
        contexts: list[tuple[DataCollectionContext, str, list[_VarEntry]]],
        readers: Mapping[str, DataReader],
        broken: set[str],
    ) -> None:
        probe = DataCollector(_log, list(readers.values()), [])
        try:
            for context, path, variables in contexts:
                by_id = {e.variable.id: e for e in variables}
                usable = []
                for entry in variables:
                    rt = entry.variable.reader_type
                    if rt in broken:
                        continue
                    if rt not in readers:
                        known = ", ".join(show_value(r) for r in sorted({*readers, *broken})) or "none"
                        self.issue(
                            _join(entry.path, "reader_type"),
                            f"no reader has this reader_type (configured: {known})",
                            rt,
                        )
                        continue
                    usable.append(entry.variable)
                if not usable:
                    continue
                ctx = context if len(usable) == len(context.variables) else _like(context, usable)
                try:
                    probe.check(ctx)
                    continue
                except ConfigurationError:
                    pass
                for v in usable:  # find every problem, not just the first
                    try:
                        probe.check(_like(context, [v]))
                    except ConfigurationError as exc:
                        self.variable_issue(exc, context, path, by_id)
                        if len(self.issues) >= MAX_ISSUES:
                            raise _TooMany() from None
        finally:
            probe.close()

    def variable_issue(
        self,
        exc: ConfigurationError,
        context: DataCollectionContext,
        path: str,
        by_id: Mapping[int, _VarEntry],
    ) -> None:
        entry = by_id.get(exc.variable_id) if exc.variable_id is not None else None
        if entry is None:
            self.issue(path, str(exc))
            return
        v = entry.variable
        field = exc.field or "address"
        message = _clean(str(exc))
        if field == "interval_ms" and v.interval_ms is None:
            self.issue(
                _join(path, "default_interval_ms"),
                f"{message} (variable {v.id} at {entry.path} has no interval_ms of its own)",
                context.default_interval_ms,
            )
            return
        if field == "value_type":
            self.issue(_join(entry.path, field), message, v.value_type)
            return
        if field == "reader_type":
            self.issue(_join(entry.path, field), message, v.reader_type)
            return
        value = getattr(v, field, MISSING) if field in _VARIABLE_KEYS else MISSING
        self.issue(_join(entry.path, field) if field in _VARIABLE_KEYS else entry.path, message, value)


def _byte_size(value: Any) -> int | None:
    """An int of bytes, or a string such as ``"512 MiB"`` in bytes (None when it is neither)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    match = _BYTES.fullmatch(value)
    if match is None:
        return None
    unit = _BYTE_UNITS.get((match.group(2) or "b").lower())
    if unit is None:
        return None
    return int(float(match.group(1)) * unit) if "." in match.group(1) else int(match.group(1)) * unit


def _like(context: DataCollectionContext, variables: list[Variable]) -> DataCollectionContext:
    return DataCollectionContext(
        context.id,
        variables,
        min_interval_ms=context.min_interval_ms,
        default_interval_ms=context.default_interval_ms,
        duration_s=context.duration_s,
    )


_PREFIX = re.compile(r"^(?:context -?\d+: )?(?:variable -?\d+(?: address '(?:[^'\\]|\\.)*')?: )?")


def _clean(message: str) -> str:
    """The message without a leading ``context N: variable N address '...': `` (the key path says it)."""
    cleaned = _PREFIX.sub("", message, count=1)
    return cleaned or message
