"""Plugins by name: readers and writers found through entry points, or registered in code.

Every plugin, the shipped ones included, is an entry point in the group ``data_collector.readers``
or ``data_collector.writers``. The shipped readers (``random``, ``modbus``, ``opcua``) and writers
(``noop``, ``csv``, ``sql``, ``hdf5``, ``redis``, ``archive``) are declared in this project's own
``pyproject.toml``, exactly as a third-party package declares its own::

    [project.entry-points."data_collector.readers"]
    s7 = "my_package.s7_reader:S7Reader"

after which ``type = "s7"`` works in a configuration file (``pip install`` of the package is all it
takes). Code may also call :func:`register_reader` / :func:`register_writer`. Names are looked up in
that order: registered in code, other distributions' entry points, data-collector's own. A plugin
that fails to load raises :class:`ConfigurationError` naming the plugin, its entry point and its
distribution (and the extra to install when one of the shipped plugins lacks its package).

The core imports no plugin: it knows the shipped ones only through their entry points. When the
package is imported from a source checkout (its ``pyproject.toml`` beside the package folder), its
own entry points are read from that file rather than from the installed metadata, which an
editable install records once at install time and which may lag behind the checkout.

Example::

    from data_collector import available_readers, reader_class, register_reader
    from data_reader.random import RandomDataReader

    class Simulated(RandomDataReader):
        reader_type = "simulated"

    register_reader("simulated", Simulated)
    print(available_readers())            # ['modbus', 'opcua', 'random', 'simulated', ...]
    reader = reader_class("simulated")()  # what a configuration file with type = "simulated" builds
"""

from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from pathlib import Path
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

#: This project's distribution name: its entry points are the shipped plugins.
OWN_DISTRIBUTION = "data-collector"
#: The extra that brings a shipped plugin's package, for the hint when it is missing.
_EXTRA = {
    "modbus": "modbus",
    "opcua": "opcua",
    "sql": "sql",
    "hdf5": "hdf5",
    "redis": "redis",
    "mqtt": "mqtt",
    "archive": "archive",
}
_GROUP: dict[Kind, str] = {"reader": READER_GROUP, "writer": WRITER_GROUP}
_BASE: dict[Kind, type] = {"reader": DataReader, "writer": DataWriter}
#: Where a source checkout keeps the project's entry points (beside the package folder).
_CHECKOUT_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

_lock = threading.Lock()
_registered: dict[Kind, dict[str, type]] = {"reader": {}, "writer": {}}


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """Where a plugin name comes from: ``source`` is ``"registered"`` or ``"entry point"``.

    ``target`` is ``module:attribute`` (or the class's qualified name when registered in code);
    ``distribution`` names the installed distribution of an entry point (``name version``).
    """

    kind: Kind
    name: str
    source: str
    target: str
    distribution: str | None = None


@dataclass(frozen=True, slots=True)
class _Found:
    entry_point: EntryPoint
    distribution: str | None
    own: bool


def register_reader(name: str, cls: type[DataReader]) -> None:
    """Make ``cls`` available under ``name`` (overrides entry points)."""
    _register("reader", name, cls)


def register_writer(name: str, cls: type[DataWriter]) -> None:
    """Make ``cls`` available under ``name`` (overrides entry points)."""
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


def checkout_entry_points(pyproject: Path | None = None) -> dict[str, dict[str, str]] | None:
    """``{group: {name: "module:attribute"}}`` declared by data-collector's ``pyproject.toml``.

    ``pyproject`` defaults to the one beside the package folder, where a source checkout has it.
    ``None`` when that file is missing or is not data-collector's (an installed wheel has none).
    """
    try:
        with (pyproject or _CHECKOUT_PYPROJECT).open("rb") as f:
            project = tomllib.load(f).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if not isinstance(project, dict) or project.get("name") != OWN_DISTRIBUTION:
        return None
    groups = project.get("entry-points", {})
    return {
        group: {str(name): str(value) for name, value in table.items()}
        for group, table in groups.items()
        if isinstance(table, dict)
    }


def _own_version() -> str:
    try:
        return version(OWN_DISTRIBUTION)
    except PackageNotFoundError:
        return "(not installed)"


def _entry_points(kind: Kind) -> dict[str, _Found]:
    group = _GROUP[kind]
    checkout = checkout_entry_points()
    found: dict[str, _Found] = {}
    own: dict[str, _Found] = {}
    for ep in entry_points(group=group):
        dist = _distribution(ep)
        mine = dist is not None and dist.split(" ")[0] == OWN_DISTRIBUTION
        if mine and checkout is not None:
            continue  # a source checkout's pyproject.toml replaces the (maybe stale) installed metadata
        target = own if mine else found
        target.setdefault(ep.name, _Found(ep, dist, mine))  # the first on sys.path wins, as for imports
    if checkout is not None:
        dist = f"{OWN_DISTRIBUTION} {_own_version()}"
        for name, value in checkout.get(group, {}).items():
            own.setdefault(name, _Found(EntryPoint(name, value, group), dist, True))
    for name, item in own.items():
        found.setdefault(name, item)  # other distributions may override a shipped plugin
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
    """Every reader name known now (registered in code or entry points)."""
    return _available("reader")


def available_writers() -> list[str]:
    """Every writer name known now (registered in code or entry points)."""
    return _available("writer")


def _available(kind: Kind) -> list[str]:
    with _lock:
        names = set(_registered[kind])
    return sorted(names | set(_entry_points(kind)))


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
    for name in sorted(set(registered) | set(eps)):
        if name in registered:
            cls = registered[name]
            infos.append(PluginInfo(kind, name, "registered", f"{cls.__module__}:{cls.__qualname__}"))
        else:
            item = eps[name]
            infos.append(PluginInfo(kind, name, "entry point", item.entry_point.value, item.distribution))
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
    item = _entry_points(kind).get(name)
    if item is None:
        raise ConfigurationError(f"unknown {kind} type {name!r}; known: {', '.join(_available(kind))}")
    ep = item.entry_point
    origin = f"entry point {ep.name} = {ep.value} in group {ep.group}" + (
        f", distribution {item.distribution}" if item.distribution else ""
    )
    try:
        loaded = ep.load()
    except ImportError as exc:
        extra = _EXTRA.get(name) if item.own else None
        if extra is None:
            raise ConfigurationError(
                f"{kind} plugin {name!r} ({origin}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        raise ConfigurationError(
            f'{kind} {name!r} needs a package that is not installed (pip install "data-collector[{extra}]")'
            f" ({origin}): {exc}"
        ) from exc
    except Exception as exc:
        raise ConfigurationError(
            f"{kind} plugin {name!r} ({origin}) failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(loaded, type) and issubclass(loaded, _BASE[kind])):
        raise ConfigurationError(
            f"{kind} plugin {name!r} ({origin}) is {loaded!r}, not a {_BASE[kind].__name__} subclass"
        )
    return loaded
