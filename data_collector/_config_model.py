"""The loaded configuration (:class:`Configuration`) and its problems (:class:`ConfigIssue`,
:class:`ConfigFileError`), with how a problem shows the value at its key path.

Built by :mod:`data_collector._config` (the loader); see there for the file format.
"""

from __future__ import annotations

import json
import logging
import os
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from ._collector import DataCollector
from ._errors import ConfigurationError
from ._listener import DataCollectionListener
from ._model import DataCollectionContext, Variable
from ._reader import DataReader
from ._scan import Scan
from ._writer import DataWriter

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _Missing:
    """No value at the key path (a missing key)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()

#: The most problems one error lists.


# -- problems --------------------------------------------------------------------------------------
def show_value(value: Any, limit: int = 120) -> str:
    """``value`` as it would be written in TOML (strings in double quotes), cut to ``limit`` chars."""
    text = _show(value, 0)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any, depth: int) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if depth > 3:
        return "..."
    if isinstance(value, list):
        shown = [_show(v, depth + 1) for v in value[:8]]
        return "[" + ", ".join(shown + (["..."] if len(value) > 8 else [])) + "]"
    if isinstance(value, dict):
        items = [f"{_key(str(k))} = {_show(v, depth + 1)}" for k, v in list(value.items())[:8]]
        return "{" + ", ".join(items + (["..."] if len(value) > 8 else [])) + "}"
    return repr(value)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _join(path: str, key: str) -> str:
    return f"{path}.{_key(key)}" if path else _key(key)


def _kind(value: Any) -> str:
    """The TOML name of a value's type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "offset date-time" if value.tzinfo is not None else "local date-time"
    if isinstance(value, date):
        return "date"
    if isinstance(value, time):
        return "time"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem of a configuration: where (``path``, e.g. ``contexts[0].variables[2].address``,
    empty for the whole file or ``line N`` before parsing), the bad ``value`` (:data:`MISSING` when
    the key is absent) and what is wrong (``message``)."""

    path: str
    message: str
    value: Any = MISSING

    def __str__(self) -> str:
        parts = [self.path] if self.path else []
        if self.value is not MISSING:
            parts.append(show_value(self.value))
        parts.append(self.message)
        return ": ".join(parts)


class ConfigFileError(ConfigurationError):
    """A configuration file has problems; ``issues`` lists every one found, ``source`` names the file.

    The message holds one line per issue: ``<file>: <key path>: <bad value>: <what is wrong>``.
    """

    def __init__(self, source: str, issues: Sequence[ConfigIssue], *, more: int = 0) -> None:
        self.source = source
        self.issues = tuple(issues)
        lines = [f"{source}: {issue}" for issue in self.issues]
        if more:
            lines.append(f"{source}: ... and {more} more problems")
        super().__init__("\n".join(lines) if lines else f"{source}: invalid configuration")


# -- the loaded configuration --------------------------------------------------------------------
class Configuration:
    """A validated configuration: built readers, writers and contexts, ready to collect.

    The readers and writers are constructed (not opened: nothing has connected yet); the contexts
    are fresh. Build one collector from it with :meth:`collector` and start the contexts with
    :meth:`start`; load the file again for another run.
    """

    def __init__(
        self,
        *,
        source: str,
        readers: Sequence[DataReader],
        writers: Sequence[DataWriter],
        contexts: Sequence[DataCollectionContext],
        start_at: Mapping[int, datetime],
        collector_options: Mapping[str, Any],
        variable_names: Mapping[int, str],
        reader_paths: Mapping[str, str],
        writer_paths: Sequence[str],
        writer_types: Sequence[str],
        variable_paths: Mapping[tuple[int, int], str],
        context_paths: Mapping[int, str],
        scans: Sequence[Scan] = (),
    ) -> None:
        self.source = source
        self.readers: tuple[DataReader, ...] = tuple(readers)
        self.writers: tuple[DataWriter, ...] = tuple(writers)
        self.contexts: tuple[DataCollectionContext, ...] = tuple(contexts)
        self.start_at: Mapping[int, datetime] = types.MappingProxyType(dict(start_at))
        self.collector_options: Mapping[str, Any] = types.MappingProxyType(dict(collector_options))
        #: variable id -> the ``name`` given in the file (the first one; also ``Variable.name``)
        self.variable_names: Mapping[int, str] = types.MappingProxyType(dict(variable_names))
        #: reader_type -> key path of its reader table (``readers[0]``)
        self.reader_paths: Mapping[str, str] = types.MappingProxyType(dict(reader_paths))
        #: key path of each writer table, in order
        self.writer_paths: tuple[str, ...] = tuple(writer_paths)
        #: the plugin type of each writer, in order
        self.writer_types: tuple[str, ...] = tuple(writer_types)
        self._variable_paths = dict(variable_paths)
        self._context_paths = dict(context_paths)
        #: the ``[[scans]]`` of the file, in file order (``data-collector scan``)
        self.scans: tuple[Scan, ...] = tuple(scans)

    @property
    def spool_dir(self) -> Path | None:
        """The file's ``[collector] spool_dir`` (resolved against the file's folder), else None."""
        value = self.collector_options.get("spool_dir")
        return Path(value) if value is not None else None

    def spool_issues(self) -> list[ConfigIssue]:
        """Writers that cannot share one spool: two with the same ``name`` (one issue per clash)."""
        return _name_clashes(self.writers, self.writer_paths)

    @property
    def variables(self) -> list[Variable]:
        """Every distinct variable of every context (by id, first definition), in file order."""
        seen: dict[int, Variable] = {}
        for context in self.contexts:
            for v in context.variables:
                seen.setdefault(v.id, v)
        return list(seen.values())

    def context(self, context_id: int) -> DataCollectionContext:
        """The context with this id; :class:`ConfigurationError` when there is none."""
        for context in self.contexts:
            if context.id == context_id:
                return context
        known = ", ".join(str(c.id) for c in self.contexts)
        raise ConfigurationError(f"{self.source}: no context with id {context_id!r} (contexts: {known})")

    def scan(self, name: str) -> Scan:
        """The scan named ``name``; :class:`ConfigurationError` when there is none."""
        for scan in self.scans:
            if scan.name == name:
                return scan
        known = ", ".join(repr(s.name) for s in self.scans) or "none"
        raise ConfigurationError(f"{self.source}: no scan named {name!r} (scans: {known})")

    def path_of(
        self, context_id: int | None, variable_id: int | None = None, field: str | None = None
    ) -> str:
        """The key path of a context, one of its variables, or one of their fields (``""`` if unknown)."""
        if context_id is None:
            return ""
        if variable_id is None:
            base = self._context_paths.get(context_id, "")
        else:
            base = self._variable_paths.get((context_id, variable_id), "")
        return _join(base, field) if base and field else base

    def describe_error(self, exc: ConfigurationError) -> str:
        """``exc`` (raised by the collector for one of these contexts) as ``<file>: <key path>: <msg>``."""
        path = self.path_of(exc.context_id, exc.variable_id, exc.field)
        return f"{self.source}: {path}: {exc}" if path else f"{self.source}: {exc}"

    def collector(
        self,
        logger: logging.Logger | None = None,
        listeners: Iterable[DataCollectionListener] = (),
        *,
        extra_writers: Iterable[DataWriter] = (),
        spool_dir: str | os.PathLike[str] | _Missing | None = MISSING,
    ) -> DataCollector:
        """A :class:`DataCollector` over the configured readers and writers (plus ``extra_writers``).

        ``spool_dir`` overrides the file's (a folder, or None for no spool). With a spool, writers
        with the same name raise a :class:`ConfigFileError` naming their key paths.
        """
        options = dict(self.collector_options)
        if not isinstance(spool_dir, _Missing):
            options["spool_dir"] = spool_dir
        if options.get("spool_dir") is None:
            options.pop("spool_dir", None)
        else:
            issues = self.spool_issues()
            if issues:
                raise ConfigFileError(self.source, issues)
        return DataCollector(
            logger if logger is not None else logging.getLogger("data_collector"),
            self.readers,
            [*self.writers, *extra_writers],
            listeners,
            **options,
        )

    def start(self, collector: DataCollector) -> None:
        """Start every context on ``collector``, in file order, each at its ``start_at`` if any."""
        for context in self.contexts:
            collector.start(context, at=self.start_at.get(context.id))

    def __repr__(self) -> str:
        return (
            f"Configuration({self.source!r}: {len(self.readers)} readers, {len(self.writers)} writers, "
            f"{len(self.contexts)} contexts)"
        )


def _name_clashes(writers: Sequence[DataWriter], paths: Sequence[str]) -> list[ConfigIssue]:
    """One issue per writer whose ``name`` an earlier writer has (a spool keeps a folder per name)."""
    issues = []
    first: dict[str, str] = {}
    for writer, path in zip(writers, paths, strict=True):
        name = writer.name
        if name in first:
            issues.append(
                ConfigIssue(
                    path,
                    f"writer name {show_value(name)} is also the name of {first[name]}: with a spool each "
                    'writer needs a name of its own (its spool folder): give one a name = "..."',
                )
            )
        else:
            first[name] = path
    return issues
