"""Plugins by name: readers and writers found through a registry plus entry points.

Built-in names: readers ``random``, ``modbus``, ``opcua``; writers ``noop``, ``csv``, ``sql``.
Third-party packages add theirs through entry points in the groups ``data_collector.readers``
and ``data_collector.writers``, e.g. in their ``pyproject.toml``::

    [project.entry-points."data_collector.readers"]
    s7 = "my_package.s7_reader:S7Reader"

after which ``type = "s7"`` works in a configuration file (``pip install`` of the package is all it
takes). Code may also call :func:`register_reader` / :func:`register_writer`. Names are looked up in
that order: registered in code, entry points, built-ins. A plugin that fails to load raises
:class:`ConfigurationError` naming the plugin, its entry point and its distribution.

Example::

    from data_collector._registry import available_readers, reader_class, register_reader
    from data_reader.random_data_reader import RandomDataReader

    class Simulated(RandomDataReader):
        reader_type = "simulated"

    register_reader("simulated", Simulated)
    print(available_readers())            # ['modbus', 'opcua', 'random', 'simulated', ...]
    reader = reader_class("simulated")()  # what a configuration file with type = "simulated" builds
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Literal

from ._errors import ConfigurationError
from ._reader import DataReader
from ._writer import DataWriter

__all__ = [
    "READER_GROUP",
    "WRITER_GROUP",
    "PluginInfo",
    "available_readers",
    "available_writers",
    "plugins",
    "reader_class",
    "register_reader",
    "register_writer",
    "unregister_reader",
    "unregister_writer",
    "writer_class",
]

READER_GROUP = "data_collector.readers"
WRITER_GROUP = "data_collector.writers"

Kind = Literal["reader", "writer"]

_BUILTIN: dict[Kind, dict[str, str]] = {
    "reader": {
        "random": "data_reader.random_data_reader:RandomDataReader",
        "modbus": "data_reader.modbus_data_reader:ModbusDataReader",
        "opcua": "data_reader.opcua_data_reader:OpcUaDataReader",
    },
    "writer": {
        "noop": "data_writer.noop_data_writer:NoopDataWriter",
        "csv": "data_writer.csv_file_data_writer:CsvFileDataWriter",
        "sql": "data_writer.sql_data_writer:SqlDataWriter",
    },
}
_EXTRA = {"modbus": "modbus", "opcua": "opcua", "sql": "sql"}
_GROUP: dict[Kind, str] = {"reader": READER_GROUP, "writer": WRITER_GROUP}
_BASE: dict[Kind, type] = {"reader": DataReader, "writer": DataWriter}

_lock = threading.Lock()
_registered: dict[Kind, dict[str, type]] = {"reader": {}, "writer": {}}


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """Where a plugin name comes from: ``source`` is ``"registered"``, ``"entry point"`` or ``"built-in"``.

    ``target`` is ``module:attribute`` (or the class's qualified name when registered in code);
    ``distribution`` names the installed distribution of an entry point (``name version``).
    """

    kind: Kind
    name: str
    source: str
    target: str
    distribution: str | None = None


def register_reader(name: str, cls: type[DataReader]) -> None:
    """Make ``cls`` available under ``name`` (overrides entry points and built-ins)."""
    _register("reader", name, cls)


def register_writer(name: str, cls: type[DataWriter]) -> None:
    """Make ``cls`` available under ``name`` (overrides entry points and built-ins)."""
    _register("writer", name, cls)


def unregister_reader(name: str) -> None:
    """Forget a reader registered with :func:`register_reader` (no error if there is none)."""
    with _lock:
        _registered["reader"].pop(name, None)


def unregister_writer(name: str) -> None:
    """Forget a writer registered with :func:`register_writer` (no error if there is none)."""
    with _lock:
        _registered["writer"].pop(name, None)


def _register(kind: Kind, name: str, cls: type) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"a {kind} name must be a non-empty str, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, _BASE[kind])):
        raise ConfigurationError(f"{kind} {name!r}: {cls!r} is not a {_BASE[kind].__name__} subclass")
    with _lock:
        _registered[kind][name] = cls


def _entry_points(kind: Kind) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=_GROUP[kind]):
        found.setdefault(ep.name, ep)  # the first on sys.path wins, as for imports
    return found


def _distribution(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    try:
        return f"{dist.name} {dist.version}"
    except Exception:  # a broken METADATA file must not hide the real error
        return None


def available_readers() -> list[str]:
    """Every reader name known now (registered, entry points, built-ins)."""
    return _available("reader")


def available_writers() -> list[str]:
    """Every writer name known now (registered, entry points, built-ins)."""
    return _available("writer")


def _available(kind: Kind) -> list[str]:
    with _lock:
        names = set(_registered[kind])
    return sorted(names | set(_entry_points(kind)) | set(_BUILTIN[kind]))


def plugins(kind: Kind) -> list[PluginInfo]:
    """Every ``kind`` (``"reader"`` or ``"writer"``) name and where it comes from, sorted by name.

    Nothing is imported: a broken plugin is listed too (:func:`reader_class` / :func:`writer_class`
    then says what is wrong with it).
    """
    if kind not in _GROUP:
        raise ConfigurationError(f"kind must be 'reader' or 'writer', got {kind!r}")
    with _lock:
        registered = dict(_registered[kind])
    eps = _entry_points(kind)
    infos = []
    for name in sorted(set(registered) | set(eps) | set(_BUILTIN[kind])):
        if name in registered:
            cls = registered[name]
            infos.append(PluginInfo(kind, name, "registered", f"{cls.__module__}:{cls.__qualname__}"))
        elif name in eps:
            ep = eps[name]
            infos.append(PluginInfo(kind, name, "entry point", ep.value, _distribution(ep)))
        else:
            infos.append(PluginInfo(kind, name, "built-in", _BUILTIN[kind][name]))
    return infos


def reader_class(name: str) -> type[DataReader]:
    """The reader class called ``name``; :class:`ConfigurationError` when unknown or broken."""
    cls = _lookup("reader", name)
    assert issubclass(cls, DataReader)
    return cls


def writer_class(name: str) -> type[DataWriter]:
    """The writer class called ``name``; :class:`ConfigurationError` when unknown or broken."""
    cls = _lookup("writer", name)
    assert issubclass(cls, DataWriter)
    return cls


def _lookup(kind: Kind, name: str) -> type:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"a {kind} type must be a non-empty str, got {name!r}")
    with _lock:
        cls = _registered[kind].get(name)
    if cls is not None:
        return cls
    ep = _entry_points(kind).get(name)
    if ep is not None:
        dist = _distribution(ep)
        origin = f"entry point {ep.name} = {ep.value} in group {ep.group}" + (
            f", distribution {dist}" if dist else ""
        )
        try:
            loaded = ep.load()
        except Exception as exc:
            raise ConfigurationError(
                f"{kind} plugin {name!r} ({origin}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        if not (isinstance(loaded, type) and issubclass(loaded, _BASE[kind])):
            raise ConfigurationError(
                f"{kind} plugin {name!r} ({origin}) is {loaded!r}, not a {_BASE[kind].__name__} subclass"
            )
        return loaded
    target = _BUILTIN[kind].get(name)
    if target is None:
        raise ConfigurationError(f"unknown {kind} type {name!r}; known: {', '.join(_available(kind))}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRA.get(name)
        hint = f' (pip install "data-collector[{extra}]")' if extra else ""
        raise ConfigurationError(
            f"{kind} {name!r} needs a package that is not installed{hint}: {exc}"
        ) from exc
    loaded = getattr(module, attr)
    assert isinstance(loaded, type)
    return loaded
