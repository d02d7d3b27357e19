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
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import PurePath
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
