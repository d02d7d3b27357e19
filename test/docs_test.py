"""``docs/configuration.md`` is what the code generates (issue 14), and describes every key.

The page is regenerated here and compared with the committed file: a default changed in a
constructor, a key added to the loader or an option added to a shipped plugin makes this test fail
until ``python -m data_collector._config_reference -o docs/configuration.md`` is run again (a key
the loader accepts but the generator does not describe makes the generator itself fail). The
examples of the core keys are loaded as one configuration file, so each is a value the loader
accepts.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from data_collector import ConfigurationError, loads_config
from data_collector import _config as loader
from data_collector._config_reference import COMMAND, SECTIONS, render

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "configuration.md"


def _rendered() -> str:
    try:
        return render()
    except ConfigurationError as exc:
        if "pip install" in str(exc):  # a shipped plugin's optional package is missing here
            pytest.skip(f"cannot describe every shipped plugin: {exc}")
        raise


def test_the_page_is_what_the_code_generates() -> None:
    assert PAGE.read_text(encoding="utf-8") == _rendered(), (
        f"docs/configuration.md is out of date: run {COMMAND}"
    )


def test_check_mode_tells_an_outdated_page(tmp_path: Path) -> None:
    _rendered()
    page = tmp_path / "configuration.md"
    page.write_text(PAGE.read_text(encoding="utf-8").replace("| `port` |", "| `prot` |", 1))
    args = [sys.executable, "-m", "data_collector._config_reference", "-o", str(page)]
    stale = subprocess.run([*args, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert stale.returncode == 1 and "out of date" in stale.stderr
    subprocess.run(args, cwd=ROOT, check=True, timeout=120)
    fresh = subprocess.run([*args, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert page.read_text(encoding="utf-8") == PAGE.read_text(encoding="utf-8")


@pytest.mark.parametrize("attribute", ["_TOP_KEYS", "_COLLECTOR_KEYS", "_CONTEXT_KEYS", "_VARIABLE_KEYS"])
def test_a_key_the_loader_accepts_but_the_page_omits_fails_generation(
    attribute: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, attribute, (*getattr(loader, attribute), "brand_new_key"))
    with pytest.raises(ConfigurationError, match="describe brand_new_key"):
        render()


def test_every_core_key_and_every_shipped_plugin_option_is_on_the_page() -> None:
    text = _rendered()
    for section, attribute in (
        ("top", "_TOP_KEYS"),
        ("collector", "_COLLECTOR_KEYS"),
        ("context", "_CONTEXT_KEYS"),
        ("variable", "_VARIABLE_KEYS"),
    ):
        title = SECTIONS[section][0]
        part = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        rows = re.findall(r"^\| `([a-z_]+)` \|", part, re.M)
        assert sorted(rows) == sorted(getattr(loader, attribute)), title
    for name in ("modbus", "opcua", "random", "csv", "sql", "noop", "hdf5", "redis", "mqtt"):
        assert f"### `{name}`\n" in text
    assert '| `table_prefix` | a string | `"dc_"` |' in text


def _example(text: str) -> str:
    return text.strip().removeprefix("`").removesuffix("`")


def test_the_examples_are_values_the_loader_accepts() -> None:
    def block(section: str, skip: tuple[str, ...] = ()) -> str:
        return "\n".join(
            f"{k.name} = {_example(k.example)}" for k in SECTIONS[section][2] if k.name not in skip
        )

    text = "\n".join(
        [
            "[collector]",
            block("collector"),
            "[metadata]",
            'site = "Plant 3"',
            "[[readers]]",
            'type = "modbus"',
            'host = "127.0.0.1"',
            'reader_type = "press"',
            "[[writers]]",
            'type = "noop"',
            "[[contexts]]",
            block("context", skip=("variables", "deadband_percent")),  # exclusive with deadband
            "[[contexts.variables]]",
            block("variable", skip=("deadband",)),
        ]
    )
    config = loads_config(text, source="examples.toml")
    (context,) = config.contexts
    assert context.id == 1 and context.default_interval_ms == 500 and context.metadata["batch"] == "B-1042"
    (variable,) = context.variables
    assert (variable.address, variable.value_type, variable.reader_type, variable.interval_ms) == (
        "hr:0:float32",
        "float",
        "press",
        200,
    )
    assert config.collector_options["spool_max_bytes"] == 512 << 20


def test_readme_and_example_point_to_the_page() -> None:
    assert "docs/configuration.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/configuration.md" in (ROOT / "examples" / "plant.toml").read_text(encoding="utf-8")
