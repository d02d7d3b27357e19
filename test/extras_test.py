"""``pip install "data-collector[all]"`` installs everything every command needs (issue 14).

``all`` must name every other extra (so an extra added later, e.g. for plotting, cannot be left
out of it silently), and the packages the commands import: pandas and pyarrow (``export`` to
Parquet) and prometheus-client (``--metrics-port``).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _extras() -> dict[str, list[str]]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        extras: dict[str, list[str]] = tomllib.load(f)["project"]["optional-dependencies"]
    return extras


def _expanded(name: str, extras: dict[str, list[str]]) -> set[str]:
    """The requirement names ``name`` brings, following ``data-collector[...]`` references."""
    out: set[str] = set()
    for requirement in extras[name]:
        own = re.fullmatch(r"data-collector\[([^\]]+)\]", requirement.replace(" ", ""))
        if own:
            for inner in own.group(1).split(","):
                out |= {f"extra:{inner}"} | _expanded(inner, extras)
        else:
            out.add(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower())
    return out


def test_all_names_every_other_extra() -> None:
    extras = _extras()
    everything = _expanded("all", extras)
    # `test` (this project's own tools) and `testing` (pytest and simulators for a user's own test
    # suite, see README "Testing your own reader or writer") serve tests, not commands
    missing = [
        name
        for name in extras
        if name not in ("all", "test", "testing") and f"extra:{name}" not in everything
    ]
    assert missing == [], f"[all] leaves out the extras {missing}"


def test_all_brings_what_the_commands_import() -> None:
    everything = _expanded("all", _extras())
    for package in ("pandas", "pyarrow", "prometheus-client", "sqlalchemy", "pymodbus", "asyncua", "tables"):
        assert package in everything, package


def test_the_test_extra_installs_all() -> None:
    assert "extra:all" in _expanded("test", _extras())
