"""Option checking: a plugin table's keys and values against its class's constructor.

Used by the loader (:mod:`data_collector._config`) before it constructs a reader or writer, so
that an unknown key, a missing option or a value of the wrong type is reported with its key path
instead of as the constructor's TypeError; :func:`blame` finds the option an error message names.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal, Union

from ._config_model import _join, _kind, show_value


def check_options(
    kind: Literal["reader", "writer"],
    cls: type,
    options: Mapping[str, Any],
    path: str,
    issue: Callable[..., None],
) -> dict[str, Any]:
    """Check a plugin table's ``options`` against ``cls``'s constructor, before calling it.

    Reports to ``issue(key path, message[, value])`` every unknown option (with the closest known
    name), every missing required option and every value its type hint cannot accept (a
    configuration file gives str, int, float, bool, datetimes, arrays and tables only). Returns the
    options set on the object after construction (a reader's ``reader_type``/``min_interval_ms``
    when its constructor does not take them).
    """
    late: dict[str, Any] = {}
    try:
        signature: inspect.Signature | None = inspect.signature(cls)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        params = signature.parameters
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        named = [
            name
            for name, p in params.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
        settable = ("reader_type", "min_interval_ms") if kind == "reader" else ()
        for key, value in options.items():
            if key in named or var_kw:
                continue
            if key in settable:
                late[key] = value
                continue
            known = list(dict.fromkeys([*named, *settable]))
            close = difflib.get_close_matches(key, known, n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            issue(
                _join(path, key),
                f"unknown option of {kind} {cls.__name__}{hint} (options: {', '.join(known) or 'none'})",
                value,
            )
        for name, p in params.items():
            if p.default is not inspect.Parameter.empty or name in options:
                continue
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
                issue(path, f'missing key "{name}" (a required option of {kind} {cls.__name__})')
            elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
                issue(
                    path,
                    f"{kind} {cls.__name__} needs the positional-only argument {name!r}, which a "
                    "configuration file cannot give",
                )
        hints = _hints(cls)
        for key, value in options.items():
            hint_type = hints.get(key)
            if hint_type is not None and _accepts(hint_type, value) is False:
                expected = _describe_hint(hint_type)
                got = "" if expected.startswith("one of") else f", got {_kind(value)}"
                issue(_join(path, key), f"option {key} of {cls.__name__} must be {expected}{got}", value)
    return late


def blame(message: str, options: Mapping[str, Any]) -> str | None:
    """The option key that ``message`` names first (None when it names none)."""
    best: tuple[int, str] | None = None
    for key in options:
        match = re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), key)
    return best[1] if best else None


# -- option types -----------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # unresolvable annotations: the constructor checks its own arguments
        return {}


_MAPPINGS: tuple[Any, ...] = (dict, Mapping, typing.MutableMapping)
_SEQUENCES: tuple[Any, ...] = (
    list,
    tuple,
    set,
    frozenset,
    Sequence,
    Iterable,
    typing.Collection,
    typing.MutableSequence,
    typing.AbstractSet,
)


def _accepts(hint: Any, value: Any) -> bool | None:
    """Whether a TOML ``value`` fits the annotation ``hint`` (None: cannot tell)."""
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        results = [_accepts(a, value) for a in args]
        if any(r is True for r in results):
            return True
        return False if all(r is False for r in results) else None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is typing.Annotated or origin is typing.ClassVar:
        return _accepts(args[0], value) if args else None
    target = origin if origin is not None else hint
    if target is bool:
        return isinstance(value, bool)
    if target is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if target is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if target is str:
        return isinstance(value, str)
    if target is bytes:
        return False
    if target in _MAPPINGS:
        return isinstance(value, dict)
    if target in _SEQUENCES:
        return isinstance(value, list)
    if isinstance(target, type):
        if issubclass(target, PurePath) or target is os.PathLike:
            return isinstance(value, str)
        return isinstance(value, target)
    return None


def _describe_hint(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        parts = [_describe_hint(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if origin is Literal:
        return "one of " + ", ".join(show_value(a) for a in args)
    target = origin if origin is not None else hint
    names: dict[Any, str] = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if target in names:
        return names[target]
    if target in _MAPPINGS:
        return "a table"
    if target in _SEQUENCES:
        return "an array"
    if isinstance(target, type) and (issubclass(target, PurePath) or target is os.PathLike):
        return "a string (a path)"
    name = getattr(target, "__name__", str(target))
    return f"a {name} (which a configuration file cannot give)"


# -- option documentation (``data-collector plugins --verbose``, docs/configuration.md) -------------
@dataclass(frozen=True, slots=True)
class OptionDoc:
    """One option of a reader or writer, as a configuration file gives it.

    ``type`` describes the values a file may give (``"a string"``, ``"an integer or a number"``...).
    ``default``: ``None`` when the option is required, ``""`` when it is not set by default (None in
    Python), else the default as a TOML value (``is_value``) or, where the code's default is None
    and the plugin's documentation says what that means, those words (``"3 keep-alives"``).
    ``meaning`` comes from the plugin's documentation (empty when it says nothing); ``in_file`` is
    False for options a configuration file cannot give (a Python object such as a logger).
    """

    name: str
    type: str
    default: str | None
    meaning: str
    in_file: bool = True
    is_value: bool = True

    def toml(self) -> str:
        """The option as a TOML line with its default and type, e.g. ``port = 502  # an integer``."""
        if not self.in_file:
            return f"{self.name}  # Python only: {self.type.replace(_CANNOT, '')}"
        if self.default is None:
            return f"{self.name} = ...  # required: {self.type}"
        if self.default == "":
            return f"{self.name}  # not set by default: {self.type}"
        if not self.is_value:
            return f"{self.name}  # default: {self.default}: {self.type}"
        return f"{self.name} = {self.default}  # {self.type}"


_CANNOT = " (which a configuration file cannot give)"


_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def _readme_options(cls: type) -> dict[str, tuple[str, str]]:
    """Per option, (default, meaning) from the ``| option | default | meaning |`` table of the
    README.md in the plugin's folder (a row may name several options: ```a`, `b```)."""
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:
        return {}
    if source is None:
        return {}
    folder = Path(source).resolve().parent
    rows: dict[str, tuple[str, str]] = {}
    for readme in (folder / "README.md", folder.parent / "README.md"):
        try:
            lines = readme.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        in_options = False
        for line in lines:
            stripped = line.strip()
            if not stripped.startswith("|"):
                in_options = False
                continue
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if cells[0].lower() == "option":
                in_options = True
                continue
            if not in_options or len(cells) < 3 or set(cells[0]) <= set("-: "):
                continue
            for name in _NAME.findall(cells[0]):
                rows.setdefault(name, (cells[1], "|".join(cells[2:]).strip()))
        if rows:
            break
    return rows


def _docstring_meanings(cls: type) -> dict[str, str]:
    """``- ``name`` (default): meaning`` bullets of the class, ``__init__`` and module docstrings."""
    texts = [inspect.getdoc(cls) or "", inspect.getdoc(cls.__init__) or ""]  # type: ignore[misc]
    module = inspect.getmodule(cls)
    if module is not None:
        texts.append(inspect.getdoc(module) or "")
    meanings: dict[str, str] = {}
    bullet = re.compile(r"^\s*[-*]\s+``([A-Za-z_][A-Za-z0-9_]*)``(?:\s*\([^)]*\))?\s*[:,-]?\s*(.*)$")
    for text in texts:
        lines = text.splitlines()
        for i, line in enumerate(lines):
            match = bullet.match(line)
            if not match:
                continue
            parts = [match.group(2).strip()]
            for more in lines[i + 1 :]:  # the bullet's continuation lines
                if not more.startswith("  ") or bullet.match(more) or not more.strip():
                    break
                parts.append(more.strip())
            meanings.setdefault(match.group(1), " ".join(p for p in parts if p))
    return meanings


def describe_options(kind: Literal["reader", "writer"], cls: type) -> list[OptionDoc]:
    """The options a configuration table of ``cls`` takes, in constructor order: type and default
    from the constructor's signature and annotations, meaning from the plugin's README option
    table (``| option | default | meaning |``) or its docstrings (``- ``name``: ...`` bullets).

    A reader also takes ``reader_type`` and ``min_interval_ms`` (set after construction when its
    constructor does not take them).
    """
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        params = []
    hints = _hints(cls)
    readme = _readme_options(cls)
    meanings = {**_docstring_meanings(cls), **{k: m for k, (_d, m) in readme.items()}}
    docs: list[OptionDoc] = []
    for p in params:
        if p.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            continue
        hint = hints.get(p.name)
        type_text, in_file = _file_type(hint) if hint is not None else ("any value", True)
        is_value = True
        said = readme.get(p.name, ("", ""))[0].strip()
        shown: str | None
        if p.default is inspect.Parameter.empty:
            shown = None
        elif p.default is None and p.name == "reader_type" and kind == "reader":
            shown = show_value(str(getattr(cls, "reader_type", "")))
        elif p.default is None and said.strip("`") not in ("", "None", "none", "null"):
            # what None means, as the plugin's README says it: a value (`{}`) or words
            single = re.fullmatch(r"`([^`]*)`", said)
            shown, is_value = (
                (single.group(1), True) if single and _is_toml(single.group(1)) else (said, False)
            )
        elif p.default is None:
            shown = ""
        else:
            shown = _toml_default(p.default)
        docs.append(OptionDoc(p.name, type_text, shown, meanings.get(p.name, ""), in_file, is_value))
    if kind == "reader":
        named = {d.name for d in docs}
        own_type = show_value(str(getattr(cls, "reader_type", "")))
        for name, type_text, default, meaning in (
            ("reader_type", "a string", own_type, "the name variables use"),
            ("min_interval_ms", "an integer", "", "minimum interval of this reader's variables"),
        ):
            if name not in named:
                docs.append(OptionDoc(name, type_text, default, meanings.get(name, meaning)))
    return docs


def _file_type(hint: Any) -> tuple[str, bool]:
    """What a configuration file may give for ``hint`` (``"a string or a table"``), and whether it
    can give anything at all."""
    origin = typing.get_origin(hint)
    members = typing.get_args(hint) if origin is Union or origin is types.UnionType else (hint,)
    parts = [_describe_hint(m) for m in members if m is not type(None)]
    usable = [p for p in dict.fromkeys(parts) if "cannot give" not in p]
    if "a string (a path)" in usable and "a string" in usable:
        usable.remove("a string")
    if not usable:
        return " or ".join(dict.fromkeys(parts)), False
    return " or ".join(usable), True


def _is_toml(text: str) -> bool:
    try:
        tomllib.loads(f"x = {text}")
    except tomllib.TOMLDecodeError:
        return False
    return True


def _toml_default(value: Any) -> str:
    if isinstance(value, str | bool | int | float | list | dict):
        return show_value(value)
    if isinstance(value, tuple):
        return show_value(list(value))
    if isinstance(value, PurePath):
        return show_value(str(value))
    return repr(value)
