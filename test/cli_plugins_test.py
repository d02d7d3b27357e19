"""``data-collector plugins --verbose`` (issue 14): every option of every plugin, with its default
and type from the constructor and its meaning from the plugin's documentation."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Literal

import pytest
from cli_run_test import cli

from data_collector import (
    CollectedVariables,
    DataCollectionContext,
    DataWriter,
    plugins,
    reader_class,
    writer_class,
)
from data_collector._config_options import describe_options

ROOT = Path(__file__).resolve().parent.parent


def _sections(text: str) -> dict[str, list[str]]:
    """``plugins -v`` output: per "kind name", its option lines."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(("reader ", "writer ")) and ': type = "' in line:
            current = sections.setdefault(line.split(":")[0], [])
        elif current is not None and line.startswith("  "):
            current.append(line)
    return sections


def test_verbose_lists_every_constructor_option_of_every_plugin(tmp_path: Path) -> None:
    result = cli(["plugins", "--verbose"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --verbose here lists options; it does not turn logging up
    sections = _sections(result.stdout)
    shipped = [*plugins("reader"), *plugins("writer")]
    assert {f"{i.kind} {i.name}" for i in shipped} <= set(sections)
    for info in shipped:
        cls = reader_class(info.name) if info.kind == "reader" else writer_class(info.name)
        lines = sections[f"{info.kind} {info.name}"]
        heads = [line.strip().split()[0] for line in lines if not line.startswith("      ")]
        params = [
            name
            for name, p in inspect.signature(cls).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        assert set(params) <= set(heads), (info.name, params, heads)
        if info.kind == "reader":
            assert {"reader_type", "min_interval_ms"} <= set(heads)
        meanings = [line for line in lines if line.startswith("      ")]
        assert len(meanings) >= len(heads)  # every shipped option is explained
    modbus = sections["reader modbus"]
    assert "  host = ...  # required: a string" in modbus
    assert "  port = 502  # an integer" in modbus
    assert '  reader_type = "modbus"  # a string' in modbus
    assert "  logger  # Python only: a Logger" in modbus
    assert "      TCP port" in modbus
    sql = sections["writer sql"]
    assert '  table_prefix = "dc_"  # a string' in sql
    assert "  connect_timeout_s = 10.0  # a number" in sql
    assert "  sqlite_pragmas = {}  # a table" in sql
    assert any(
        line.startswith('  mode = "poll"  # one of "poll", "subscribe"') for line in sections["reader opcua"]
    )


def test_without_verbose_only_the_table(tmp_path: Path) -> None:
    result = cli(["plugins"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kind    type" in result.stdout and " = " not in result.stdout


def test_named_types_show_their_options(tmp_path: Path) -> None:
    result = cli(["plugins", "csv"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(_sections(result.stdout)) == {"writer csv"}
    assert '  delimiter = ","  # a string' in result.stdout
    assert "  path = ...  # required: a string (a path)" in result.stdout
    bad = cli(["plugins", "csv", "nosuch"], cwd=tmp_path)
    assert bad.returncode == 2 and "no reader or writer type 'nosuch'" in bad.stderr


class _Plugin(DataWriter):
    """A third-party writer that documents its options in its docstring only.

    - ``endpoint``: where the data goes
      (a URL).
    - ``retries`` (3): attempts per batch.
    """

    def __init__(
        self, endpoint: str, *, retries: int = 3, mode: Literal["a", "b"] = "a", token: bytes = b""
    ) -> None:
        super().__init__()

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        pass


def test_a_plugin_without_readme_documents_options_from_its_docstring() -> None:
    docs = {d.name: d for d in describe_options("writer", _Plugin)}
    assert list(docs) == ["endpoint", "retries", "mode", "token"]
    assert docs["endpoint"].toml() == "endpoint = ...  # required: a string"
    assert docs["endpoint"].meaning == "where the data goes (a URL)."
    assert (
        docs["retries"].toml() == "retries = 3  # an integer"
        and docs["retries"].meaning == "attempts per batch."
    )
    assert docs["mode"].toml() == 'mode = "a"  # one of "a", "b"' and docs["mode"].meaning == ""
    assert not docs["token"].in_file and docs["token"].toml().startswith("token  # Python only")


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_describe_options_matches_the_config_checker(kind: Literal["reader", "writer"]) -> None:
    """The options listed are exactly those the loader accepts in a file (constructor keywords,
    and for readers reader_type and min_interval_ms)."""
    for info in plugins(kind):
        cls = reader_class(info.name) if kind == "reader" else writer_class(info.name)
        listed = {d.name for d in describe_options(kind, cls)}
        accepted = {
            n
            for n, p in inspect.signature(cls).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        } | ({"reader_type", "min_interval_ms"} if kind == "reader" else set())
        assert listed == accepted, info.name
