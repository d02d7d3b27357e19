"""The configuration file reference (``docs/configuration.md``), generated from the code.

Serves users writing a configuration file: every key of every table with its type, default and an
example, and every option of every shipped reader and writer. Defaults come from the constructors
(:class:`DataCollector`, :class:`DataCollectionContext`, :class:`Variable`, each plugin), the keys
from the loader's own lists (:mod:`data_collector._config`), plugin options from their signatures
and README option tables (:func:`describe_options`); only the meanings and examples of the core
keys are written here. A key the loader accepts that this module does not describe makes
:func:`render` raise, so the page cannot silently fall behind; ``test/docs_test.py`` regenerates it
and compares. Regenerate with::

    python -m data_collector._config_reference -o docs/configuration.md
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _config
from ._collector import DataCollector
from ._config_model import show_value
from ._config_options import OptionDoc, describe_options
from ._errors import ConfigurationError
from ._model import DataCollectionContext, Variable
from ._registry import OWN_DISTRIBUTION, PluginInfo, plugins, reader_class, writer_class

__all__ = ["render"]

COMMAND = "python -m data_collector._config_reference -o docs/configuration.md"


@dataclass(frozen=True)
class Key:
    """One key of a core table. ``default``: a str as shown, or a callable giving it from the code."""

    name: str
    type: str
    default: str | Callable[[], str]
    example: str
    meaning: str


def _from(cls: Callable[..., Any], parameter: str) -> Callable[[], str]:
    """The default of ``parameter`` of ``cls``'s constructor, as TOML."""

    def shown() -> str:
        default = inspect.signature(cls).parameters[parameter].default
        if default is inspect.Parameter.empty:
            return "(required)"
        if default is None:
            return "not set"
        if isinstance(default, int) and not isinstance(default, bool) and default >= 10**6:
            return f"`{default}` ({default:_})".replace("_", ",")
        return f"`{show_value(default)}`"

    return shown


def _bytes_default() -> str:
    default = inspect.signature(DataCollector).parameters["spool_max_bytes"].default
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if default % size == 0:
            return f'`"{default // size} {unit}"` ({default:,} bytes)'
    return f"`{default}`"


SECTIONS: dict[str, tuple[str, str, list[Key]]] = {
    "top": (
        "The file",
        "A TOML file; every table is optional except `[[contexts]]`.",
        [
            Key("collector", "table", "`{}`", "`[collector]`", "Options of the collector itself (below)."),
            Key(
                "metadata",
                "table",
                "`{}`",
                '`[metadata]` `site = "Plant 3"`',
                "Merged into every context's metadata (a context's own key wins); stored by the writers.",
            ),
            Key(
                "readers",
                "array of tables",
                "`[]`",
                '`[[readers]]` `type = "modbus"`',
                "One table per reader (device, connection): `type` names the plugin, every other key is "
                "an option of it (see [Readers](#readers)).",
            ),
            Key(
                "writers",
                "array of tables",
                "`[]`",
                '`[[writers]]` `type = "csv"`',
                "One table per writer: `type` names the plugin, every other key is an option of it "
                "(see [Writers](#writers)).",
            ),
            Key(
                "contexts",
                "array of tables",
                "(required)",
                "`[[contexts]]` `id = 1`",
                "One table per collection context (below); at least one.",
            ),
            Key(
                "scans",
                "array of tables",
                "`[]`",
                '`[[scans]]` `name = "sweep"`',
                "Parameter scans run by `data-collector scan CONFIG --name NAME`: setpoints with their "
                "base values, parameters, settle condition and capture (see the README's \"Parameter "
                'scans" and the commented `examples/scan.toml`).',
            ),
        ],
    ),
    "collector": (
        "[collector]",
        "Keyword options of `DataCollector` (all optional).",
        [
            Key(
                "max_queue_samples",
                "integer, 1 to 10**12",
                _from(DataCollector, "max_queue_samples"),
                "`1000000`",
                "Samples a writer holds in memory. Without a spool more are dropped (counted, logged); with "
                "one they wait on disk.",
            ),
            Key(
                "max_write_samples",
                "integer, 1 to 10**12",
                _from(DataCollector, "max_write_samples"),
                "`50000`",
                "Most samples of one context handed to one `write()` when a writer is behind.",
            ),
            Key(
                "write_retry_s",
                "number of seconds > 0",
                _from(DataCollector, "write_retry_s"),
                "`10`",
                "Cap of the doubling backoff between attempts of a write that failed with a transient "
                "error (retried for as long as it takes; a permanent error loses the batch at once).",
            ),
            Key(
                "drain_timeout_s",
                "number of seconds >= 0",
                _from(DataCollector, "drain_timeout_s"),
                "`30`",
                "How long stop and close wait for the writers; what is left then is counted unwritten "
                "(and stays in the spool).",
            ),
            Key(
                "spool_dir",
                "string (a folder)",
                "not set (`data-collector run`: `<file stem>.spool/` beside the file)",
                '`"/var/spool/plant"`',
                "Store-and-forward: every batch goes to a spool on disk here before its writer gets it. "
                "Relative to the configuration file's folder.",
            ),
            Key(
                "spool_sync_s",
                "number of seconds > 0",
                _from(DataCollector, "spool_sync_s"),
                "`0.5`",
                "The spool is synced to disk at least this often: a crash loses at most this much of what "
                "was read.",
            ),
            Key(
                "spool_max_bytes",
                'integer (bytes) or string with a unit ("512 MiB"; B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)',
                _bytes_default,
                '`"512 MiB"`',
                "Bound of each writer's spool; when full, the oldest data is dropped (counted, logged).",
            ),
        ],
    ),
    "context": (
        "[[contexts]]",
        "One table per collection context.",
        [
            Key("id", "integer (signed 64-bit), unique in the file", "(required)", "`1`", "The context id."),
            Key(
                "variables",
                "array of tables",
                "(required)",
                "`[[contexts.variables]]`",
                "The variables of the context (below); at least one.",
            ),
            Key(
                "default_interval_ms",
                "integer, 1 to 366 days in ms",
                _from(DataCollectionContext, "default_interval_ms"),
                "`500`",
                "Interval of the variables without their own `interval_ms`.",
            ),
            Key(
                "min_interval_ms",
                "integer, 1 to 366 days in ms",
                _from(DataCollectionContext, "min_interval_ms"),
                "`10`",
                "The smallest interval accepted in this context (a reader's own `min_interval_ms` wins).",
            ),
            Key(
                "duration_s",
                "number of seconds > 0, at most 100 years",
                _from(DataCollectionContext, "duration_s"),
                "`3600`",
                "The context ends by itself after this long.",
            ),
            Key(
                "start_at",
                "offset date-time (or such a string)",
                "not set (starts at once)",
                "`2026-05-04T06:00:00+02:00`",
                "Delayed start; `data-collector capture` ignores it.",
            ),
            Key(
                "metadata",
                "table",
                "`{}`",
                '`{ batch = "B-1042", operator = "J. Doe" }`',
                "User metadata of the context's runs, stored by the writers (merged over `[metadata]`).",
            ),
            Key(
                "reader_type",
                "string",
                "not set (the only reader's, when there is one)",
                '`"press"`',
                "Default `reader_type` of its variables.",
            ),
            Key(
                "value_type",
                "string",
                "not set",
                '`"float"`',
                "Default `value_type` of its variables.",
            ),
            Key(
                "deadband",
                "number >= 0",
                "not set (every sample recorded)",
                "`0.5`",
                "On-change recording for its variables: a numeric value is recorded when it moved more "
                "than this from the last recorded one (quality/error changes and BAD samples always are).",
            ),
            Key(
                "deadband_percent",
                "number >= 0 (not with `deadband`)",
                "not set",
                "`2.0`",
                "As `deadband`, in percent of the last recorded value's magnitude.",
            ),
            Key(
                "max_age_s",
                "number of seconds > 0",
                "not set (no heartbeat)",
                "`600`",
                "On-change heartbeat: an unchanged value is recorded again this long after the last "
                "recorded one (alone: record on any change, deadband 0).",
            ),
        ],
    ),
    "variable": (
        "[[contexts.variables]]",
        "One table per variable (or an array of inline tables).",
        [
            Key(
                "id",
                "integer (signed 64-bit), unique in the context",
                _from(Variable, "id"),
                "`1`",
                "The variable id; the same id in two contexts must mean the same device value "
                "(address, value type, reader).",
            ),
            Key(
                "address",
                "string",
                _from(Variable, "address"),
                '`"hr:0:float32"`',
                "Where the value lives, in the reader's address syntax (see the reader's README).",
            ),
            Key(
                "value_type",
                'string: `"float"`, `"int"`, `"bool"`, `"str"` (readers may add more, e.g. `"bytes"`)',
                "the context's `value_type` (required without one)",
                '`"float"`',
                "The Python type of the values.",
            ),
            Key(
                "reader_type",
                "string",
                "the context's `reader_type`, else the only reader's",
                '`"press"`',
                "The reader that reads it (a reader table's `reader_type`, by default its plugin's own).",
            ),
            Key(
                "interval_ms",
                "integer, 1 to 366 days in ms",
                "the context's `default_interval_ms`",
                "`200`",
                "How often it is read, on wall-clock multiples of the interval.",
            ),
            Key(
                "name",
                "string",
                "not set",
                '`"Press 1 pressure"`',
                "A label for people (at most 256 characters): stored by the writers, shown by the command "
                "line, the column title of `export --wide` and the legend of `plot`.",
            ),
            Key(
                "unit",
                "string",
                "not set",
                '`"bar"`',
                "Its unit (at most 64 characters): stored by the writers; `plot` draws one axis per unit.",
            ),
            Key(
                "description",
                "string",
                "not set",
                '`"after the valve"`',
                "Free text (may span lines, at most 4096 characters), stored by the writers.",
            ),
            Key(
                "deadband",
                "number >= 0",
                "the context's",
                "`0.1`",
                "On-change deadband of this variable (replaces the context's `deadband`/`deadband_percent`).",
            ),
            Key(
                "deadband_percent",
                "number >= 0 (not with `deadband`)",
                "the context's",
                "`1.0`",
                "On-change deadband in percent of the last recorded value's magnitude.",
            ),
            Key(
                "max_age_s",
                "number of seconds > 0",
                "the context's",
                "`60`",
                "On-change heartbeat of this variable (replaces the context's).",
            ),
        ],
    ),
}

_LOADER_KEYS = {
    "top": "_TOP_KEYS",
    "collector": "_COLLECTOR_KEYS",
    "context": "_CONTEXT_KEYS",
    "variable": "_VARIABLE_KEYS",
}


def _check_complete() -> None:
    """Every key the loader accepts is described here, and nothing else."""
    problems = []
    for section, attribute in _LOADER_KEYS.items():
        accepted = list(getattr(_config, attribute))
        described = [k.name for k in SECTIONS[section][2]]
        missing = [k for k in accepted if k not in described]
        extra = [k for k in described if k not in accepted]
        if missing:
            problems.append(f"{SECTIONS[section][0]}: describe {', '.join(missing)} in {__name__}.SECTIONS")
        if extra:
            problems.append(f"{SECTIONS[section][0]}: {', '.join(extra)} no longer accepted by the loader")
    if problems:
        raise ConfigurationError("the configuration reference is out of date: " + "; ".join(problems))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _core_table(keys: Sequence[Key]) -> list[str]:
    lines = ["| key | type | default | example | meaning |", "|---|---|---|---|---|"]
    for k in keys:
        default = k.default() if callable(k.default) else k.default
        lines.append(
            f"| `{k.name}` | {_cell(k.type)} | {_cell(default)} | {_cell(k.example)} | {_cell(k.meaning)} |"
        )
    return lines


def _default_cell(doc: OptionDoc) -> str:
    if not doc.in_file:
        return "Python only"
    if doc.default is None:
        return "(required)"
    if doc.default == "":
        return "not set"
    return f"`{doc.default}`" if doc.is_value else doc.default


def _plugin_section(info: PluginInfo, cls: type, root: Path) -> list[str]:
    lines = [
        f"### `{info.name}`",
        "",
        f'`type = "{info.name}"`: `{cls.__module__}.{cls.__qualname__}`'
        + (f"; see [its README]({_readme_link(cls, root)})." if _readme_link(cls, root) else "."),
        "",
        "| option | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for doc in describe_options(info.kind, cls):
        kind = doc.type.replace(" (which a configuration file cannot give)", "")
        lines.append(f"| `{doc.name}` | {_cell(kind)} | {_cell(_default_cell(doc))} | {_cell(doc.meaning)} |")
    sample = _sample(cls)
    if sample:
        lines += ["", "Example (its `sample.toml`):", "", "```toml", sample.rstrip("\n"), "```"]
    return [*lines, ""]


def _folder(cls: type) -> Path | None:
    source = inspect.getsourcefile(cls)
    return Path(source).resolve().parent if source else None


def _readme_link(cls: type, root: Path) -> str:
    folder = _folder(cls)
    if folder is None or not (folder / "README.md").exists():
        return ""
    try:
        return "../" + (folder / "README.md").relative_to(root).as_posix()
    except ValueError:
        return ""


def _sample(cls: type) -> str:
    folder = _folder(cls)
    if folder is None:
        return ""
    try:
        return (folder / "sample.toml").read_text(encoding="utf-8")
    except OSError:
        return ""


def render() -> str:
    """The Markdown of ``docs/configuration.md``; :class:`ConfigurationError` when a key the loader
    accepts is not described here, or a shipped plugin cannot be loaded (a missing extra)."""
    _check_complete()
    root = Path(__file__).resolve().parent.parent
    out = [
        "# Configuration file reference",
        "",
        f"<!-- Generated from the code by `{COMMAND}`: do not edit by hand. "
        "test/docs_test.py fails when it differs from what the code generates. -->",
        "",
        "A configuration file is TOML. `data-collector validate FILE` checks it without connecting; every "
        "problem is reported with its key path (`contexts[0].variables[2].address`, indexes from 0) and "
        "the bad value. The commented example is [examples/plant.toml](../examples/plant.toml).",
        "",
        "- `${NAME}` and `${NAME:-default}` are replaced by the environment variable before parsing, as "
        'written (`port = ${MODBUS_PORT:-502}` is an integer; `url = "postgresql+psycopg://dc:${DB_PASSWORD}@db/'
        'plant"` keeps a secret out of the file); `$${` writes a literal `${`.',
        "- Relative paths in options are relative to the current directory, except `[collector] spool_dir` "
        "(relative to the file's folder).",
        '- "not set" means the key is absent (TOML has no null); the code\'s default applies.',
        "",
    ]
    for section in ("top", "collector", "context", "variable"):
        title, intro, keys = SECTIONS[section]
        out += [f"## {title}", "", intro, "", *_core_table(keys), ""]
    for kind, title in (("reader", "Readers"), ("writer", "Writers")):
        out += [
            f"## {title}",
            "",
            f"`[[{kind}s]]` tables: `type` (required) names the plugin; every other key is an option of its "
            "constructor (`data-collector plugins --verbose` lists them for every installed plugin, "
            "third-party ones included)."
            + (
                " Every reader also takes `reader_type` (the name its variables use) and `min_interval_ms`."
                if kind == "reader"
                else ""
            ),
            "",
        ]
        for info in sorted(plugins(kind), key=lambda i: i.name):  # type: ignore[arg-type]
            if (info.distribution or "").split(" ")[0] != OWN_DISTRIBUTION:
                continue  # third-party plugins installed here are not part of this page
            cls = reader_class(info.name) if kind == "reader" else writer_class(info.name)
            out += _plugin_section(info, cls, root)
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the reference to ``-o FILE`` (default: standard output); ``--check``: exit 1 when
    ``FILE`` differs from what the code generates."""
    parser = argparse.ArgumentParser(prog="python -m data_collector._config_reference", description=__doc__)
    parser.add_argument("-o", "--output", default=None, help="the file to write (default: standard output)")
    parser.add_argument(
        "--check", action="store_true", help="only compare --output with what would be written"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            sys.stderr.write(f"{path} is out of date: run {COMMAND}\n")
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
