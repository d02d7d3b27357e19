"""Path templates of the archive writer: a sandboxed Jinja2 environment, its fields, the lexical checks.

A template is compiled once, at construction (syntax errors and fields that cannot exist for the
chosen ``per`` raise :class:`ConfigurationError` there), then rendered with the fields of one file
(:func:`fields`). A rendered path is checked lexically here (:func:`split_relative`: relative, no
``..``, not the writer's state folder, no control characters); the writer then checks on the file
system that each folder it opens lies inside the archive root (symbolic links included).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jinja2
import jinja2.meta
import jinja2.sandbox

from data_collector import ConfigurationError, DataCollectionContext, Variable

__all__ = [
    "DEFAULT_TEMPLATES",
    "NAME_MAX",
    "RESERVED",
    "STATE_DIR",
    "PathTemplate",
    "UnsafePathError",
    "fields",
    "slug",
    "split_relative",
    "variable_fields",
]

#: The folder under the root that holds the writers' journals, sequence numbers and locks.
STATE_DIR = ".archive"

#: The longest file or folder name (bytes) of the file systems the writer knows (ext4, xfs, btrfs...).
NAME_MAX = 255

#: The names a template sees besides the user's metadata keys.
RESERVED = frozenset(
    {"metadata", "deduced", "context", "context_id", "variable", "read_at", "seq", "ext", "per"}
)

#: The template used when none is given, per value of ``per``.
DEFAULT_TEMPLATES: Mapping[str, str] = {
    "sample": "context-{{ context_id }}/variable-{{ variable.id }}/"
    "{{ read_at.strftime('%Y%m%dT%H%M%S_%f') }}.{{ ext }}",
    "variable": "context-{{ context_id }}/variable-{{ variable.id }}/{{ '%08d' % seq }}.{{ ext }}",
    "batch": "context-{{ context_id }}/batch-{{ '%08d' % seq }}.{{ ext }}",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SEPARATORS = re.compile(r"[/\\]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class UnsafePathError(ConfigurationError):
    """A rendered path that is absolute, holds ``..``, or would leave the archive's root.

    A :class:`ConfigurationError`, so the collector takes it as permanent: the batch is not
    retried (with a spool it is kept in the spool's quarantine, see the README).
    """


def slug(value: object) -> str:
    """``value`` as text safe for one file-name component (the template filter ``slug``).

    Every run of characters other than ASCII letters, digits, ``.``, ``_`` and ``-`` becomes one
    ``_``; leading and trailing dots and underscores are removed (so ``..`` cannot come out);
    an empty result is ``_``.
    """
    text = _UNSAFE_CHARS.sub("_", str(value)).strip("._")
    return text or "_"


class PathTemplate:
    """A compiled path template: ``render(fields)`` gives the path text, errors as ConfigurationError."""

    def __init__(self, source: str, per: str, where: str) -> None:
        if not isinstance(source, str) or not source.strip():
            raise ConfigurationError(f"{where}: template must be a non-empty str, got {source!r}")
        self.source = source
        self._where = where
        env = jinja2.sandbox.SandboxedEnvironment(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        env.filters["slug"] = slug
        try:
            parsed = env.parse(source)
            self._template = env.from_string(parsed)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigurationError(
                f"{where}: template {source!r} has a syntax error (line {exc.lineno}): {exc.message}"
            ) from None
        self.names: frozenset[str] = frozenset(jinja2.meta.find_undeclared_variables(parsed))
        if per == "batch" and "variable" in self.names:
            raise ConfigurationError(
                f"{where}: template {source!r} uses 'variable', which a file of per = \"batch\" does not "
                'have (it holds many variables): use per = "variable" or per = "sample"'
            )
        #: names the template takes from the user's metadata (checked when a context starts)
        self.metadata_names: frozenset[str] = self.names - RESERVED

    def render(self, values: Mapping[str, Any]) -> str:
        """The template rendered with ``values``; :class:`ConfigurationError` naming what failed."""
        try:
            return self._template.render(values)
        except jinja2.UndefinedError as exc:
            known = sorted(k for k in values if k not in RESERVED)
            hint = f"; metadata keys: {', '.join(known)}" if known else "; the context has no metadata"
            raise ConfigurationError(
                f"{self._where}: template {self.source!r}: {exc.message}{hint}",
                field="template",
            ) from None
        except jinja2.exceptions.SecurityError as exc:
            raise ConfigurationError(
                f"{self._where}: template {self.source!r} tried something the sandbox forbids: {exc}",
                field="template",
            ) from None
        except Exception as exc:
            raise ConfigurationError(
                f"{self._where}: template {self.source!r} failed to render: {type(exc).__name__}: {exc}",
                field="template",
            ) from None

    def __repr__(self) -> str:
        return f"PathTemplate({self.source!r})"


def variable_fields(variable: Variable, context: DataCollectionContext) -> dict[str, Any]:
    """The ``variable`` of a template: id, address, value_type, reader_type, interval_ms (effective).

    ``name`` and ``unit`` are added when the :class:`Variable` has them (``Variable.name``,
    ``Variable.unit``; a configuration file's variable ``name`` and ``unit`` set them).
    """
    out: dict[str, Any] = {
        "id": variable.id,
        "address": variable.address,
        "value_type": variable.value_type,
        "reader_type": variable.reader_type,
        "interval_ms": context.interval_of(variable),
    }
    for attr in ("name", "unit"):
        value = getattr(variable, attr, None)
        if value is not None:
            out[attr] = value
    return out


def fields(
    context: DataCollectionContext,
    *,
    read_at: datetime,
    seq: int,
    ext: str,
    per: str,
    variable: Variable | None = None,
) -> dict[str, Any]:
    """What a template sees for one file (see the README's field table)."""
    user = dict(context.metadata)
    out: dict[str, Any] = {k: v for k, v in user.items() if k.isidentifier() and k not in RESERVED}
    out.update(
        metadata=user,
        deduced=dict(context.deduced_metadata),
        context_id=context.id,
        context={
            "id": context.id,
            "start": context.start_date,
            "duration_s": context.duration_s,
            "default_interval_ms": context.default_interval_ms,
        },
        read_at=read_at,
        seq=seq,
        ext=ext,
        per=per,
    )
    if variable is not None:
        out["variable"] = variable_fields(variable, context)
    return out


def split_relative(text: str, where: str) -> tuple[str, ...]:
    """The components of the rendered path ``text``; :class:`UnsafePathError` when it may not be used.

    Refused: an empty path, control characters (NUL, newline, ...), an absolute path (``/x``,
    ``\\x``, ``C:x``), a ``..`` component, a name longer than :data:`NAME_MAX` bytes, and a path
    into the writer's state folder (``.archive``).
    Both ``/`` and ``\\`` separate folders; empty and ``.`` components are dropped.
    """
    if not text or not text.strip():
        raise UnsafePathError(f"{where}: the template rendered an empty path", field="template")
    if _CONTROL.search(text):
        raise UnsafePathError(
            f"{where}: the rendered path {text!r} holds a control character", field="template"
        )
    if text[0] in "/\\" or _DRIVE.match(text):
        raise UnsafePathError(
            f"{where}: the rendered path {text!r} is absolute; it must be relative to the archive root",
            field="template",
        )
    parts = tuple(p for p in _SEPARATORS.split(text) if p not in ("", "."))
    if ".." in parts:
        raise UnsafePathError(
            f"{where}: the rendered path {text!r} holds '..'; it must stay inside the archive root "
            "(the filter slug makes a field safe: {{ variable.address | slug }})",
            field="template",
        )
    if not parts:
        raise UnsafePathError(f"{where}: the rendered path {text!r} names no file", field="template")
    long = next((p for p in parts if len(p.encode("utf-8", "surrogateescape")) > NAME_MAX), None)
    if long is not None:
        raise UnsafePathError(
            f"{where}: the rendered path {text!r} has a name longer than {NAME_MAX} bytes ({long[:40]!r}...)",
            field="template",
        )
    if parts[0] == STATE_DIR:
        raise UnsafePathError(
            f"{where}: the rendered path {text!r} lies in {STATE_DIR}/, the writer's own state folder",
            field="template",
        )
    return parts
