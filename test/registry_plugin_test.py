"""Plugins by name: the shipped ones (this project's own entry points), code registration, and a
real installed distribution's entry points.

The third-party plugin is a tiny distribution written to a temporary directory: a package plus a
``*.dist-info`` with METADATA and entry_points.txt. On ``sys.path`` (or ``PYTHONPATH`` of a
subprocess) that is an installed distribution for :mod:`importlib.metadata`, exactly as after
``pip install``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import uuid
from pathlib import Path

import pytest

from data_collector import ConfigurationError, DataReader, DataWriter, PluginInfo, _registry
from data_collector._config import ConfigFileError, loads_config
from data_collector._registry import (
    available_readers,
    available_writers,
    plugins,
    reader_class,
    register_reader,
    register_writer,
    unregister_reader,
    unregister_writer,
    writer_class,
)
from data_reader.random_data_reader import RandomDataReader
from data_writer.csv_file_data_writer import CsvFileDataWriter
from data_writer.noop_data_writer import NoopDataWriter

ROOT = Path(__file__).resolve().parent.parent

PLUGIN_SOURCE = '''
"""A third-party data-collector plugin: a reader and a writer."""
import json
import threading

from data_collector import CollectedVariables, ConfigurationError, DataCollectionContext
from data_collector import DataReader, DataWriter


class EchoReader(DataReader):
    """Reads "say:<text>" as <prefix><text>, and "count" as a per-variable counter."""

    reader_type = "echo"

    def __init__(self, *, prefix: str = "", reader_type: str | None = None) -> None:
        super().__init__(reader_type=reader_type)
        self.prefix = prefix
        self.counts = {}

    def validate_variable(self, variable):
        if not (variable.address.startswith("say:") or variable.address == "count"):
            raise ConfigurationError(
                f"EchoReader: address {variable.address!r} is neither say:<text> nor count"
            )

    def read(self, variables: CollectedVariables) -> None:
        for item in variables:
            address = item.variable.address
            if address == "count":
                self.counts[item.variable.id] = self.counts.get(item.variable.id, 0) + 1
                item.value = self.counts[item.variable.id]
            else:
                item.value = self.prefix + address[4:]


class JsonLinesWriter(DataWriter):
    """Appends one JSON object per sample to ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.file = None

    def open(self) -> None:
        self.file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        for item in variables:
            self.file.write(json.dumps({"context": context.id, "variable": item.variable.id,
                                        "value": item.value, "quality": str(item.quality)}) + "\\n")
        self.file.flush()


not_a_class = 42
'''


def make_distribution(base: Path) -> tuple[Path, str]:
    """A site directory holding an installed distribution ``dcplug-<id>`` with data_collector entry points."""
    package = f"dcplug_{uuid.uuid4().hex[:10]}"
    site = base / "site"
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(PLUGIN_SOURCE, encoding="utf-8")
    info = site / f"{package}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1.0\nSummary: test plugin\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [data_collector.readers]
            echo = {package}:EchoReader
            broken = {package}.missing:Nope
            notareader = {package}:not_a_class

            [data_collector.writers]
            jsonl = {package}:JsonLinesWriter
            """
        ),
        encoding="utf-8",
    )
    (info / "top_level.txt").write_text(package + "\n", encoding="utf-8")
    return site, package


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    site, package = make_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    return site, package


def test_built_in_names() -> None:
    assert reader_class("random") is RandomDataReader
    assert writer_class("csv") is CsvFileDataWriter
    assert writer_class("noop") is NoopDataWriter
    assert {"random", "modbus", "opcua"} <= set(available_readers())
    assert {"noop", "csv", "sql"} <= set(available_writers())
    info = {p.name: p for p in plugins("writer")}["sql"]
    assert (info.source, info.target) == ("entry point", "data_writer.sql:SqlDataWriter")
    assert info.distribution is not None and info.distribution.startswith("data-collector ")
    with pytest.raises(ConfigurationError, match=r"unknown reader type 'randon'; known: .*random"):
        reader_class("randon")
    with pytest.raises(ConfigurationError, match="non-empty str"):
        writer_class("")


SHIPPED = {
    "data_collector.readers": {
        "random": "data_reader.random:RandomDataReader",
        "modbus": "data_reader.modbus:ModbusDataReader",
        "opcua": "data_reader.opcua:OpcUaDataReader",
    },
    "data_collector.writers": {
        "noop": "data_writer.noop:NoopDataWriter",
        "csv": "data_writer.csv:CsvFileDataWriter",
        "sql": "data_writer.sql:SqlDataWriter",
        "hdf5": "data_writer.hdf5:Hdf5DataWriter",
        "redis": "data_writer.redis:RedisDataWriter",
        "mqtt": "data_writer.mqtt:MqttDataWriter",
        "archive": "data_writer.archive:ArchiveDataWriter",
    },
}


def test_shipped_plugins_are_the_projects_own_entry_points() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        declared = tomllib.load(f)["project"]["entry-points"]
    assert {group: declared[group] for group in SHIPPED} == SHIPPED
    assert _registry.checkout_entry_points() == declared
    listed: dict[tuple[str, str], PluginInfo] = {
        (p.kind, p.name): p for p in [*plugins("reader"), *plugins("writer")]
    }
    for group, table in SHIPPED.items():
        kind = "reader" if group.endswith("readers") else "writer"
        for name, target in table.items():
            info = listed[kind, name]
            assert (info.source, info.target) == ("entry point", target)
            module, _, attr = target.partition(":")
            cls = (reader_class if kind == "reader" else writer_class)(name)
            assert cls is getattr(__import__(module, fromlist=[attr]), attr)
    assert not hasattr(_registry, "_BUILTIN")


def own_metadata(base: Path, entry_points: str) -> Path:
    """A site directory with an installed ``data-collector`` distribution declaring ``entry_points``."""
    site = base / "own-site"
    info = site / "data_collector-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: data-collector\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    return site


STALE = "[data_collector.readers]\nrandom = data_reader.random:RandomDataReader\nghost = nowhere:Nope\n"


def test_installed_metadata_serves_outside_a_source_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(own_metadata(tmp_path, STALE)))
    monkeypatch.setattr(_registry, "_CHECKOUT_PYPROJECT", tmp_path / "no-checkout" / "pyproject.toml")
    assert _registry.checkout_entry_points() is None
    assert {"ghost", "random"} <= set(available_readers())
    assert "modbus" not in available_readers()  # not in this (installed) metadata
    info = {p.name: p for p in plugins("reader")}["ghost"]
    assert (info.source, info.target, info.distribution) == (
        "entry point",
        "nowhere:Nope",
        "data-collector 0.1.0",
    )
    with pytest.raises(ConfigurationError, match=r"reader plugin 'ghost' \(entry point ghost = nowhere:Nope"):
        reader_class("ghost")


def test_a_source_checkout_replaces_stale_installed_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(own_metadata(tmp_path, STALE)))
    assert "ghost" not in available_readers()  # the checkout's pyproject.toml wins over the metadata
    assert {"random", "modbus", "opcua"} <= set(available_readers())


def test_a_missing_extra_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "data-collector"\n[project.entry-points."data_collector.readers"]\n'
        'modbus = "data_reader.no_such_module_here:Nope"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(_registry, "_CHECKOUT_PYPROJECT", pyproject)
    with pytest.raises(
        ConfigurationError,
        match=r'needs a package that is not installed \(pip install "data-collector\[modbus\]"\)',
    ):
        reader_class("modbus")


def test_register_in_code_overrides_and_unregisters() -> None:
    class Loud(RandomDataReader):
        reader_type = "loud"

    class Quiet(NoopDataWriter):
        pass

    register_reader("random", Loud)
    register_writer("quiet-test", Quiet)
    try:
        assert reader_class("random") is Loud
        assert writer_class("quiet-test") is Quiet
        assert {p.name: p.source for p in plugins("reader")}["random"] == "registered"
        config = loads_config(
            '[[readers]]\ntype = "random"\n[[writers]]\ntype = "quiet-test"\n'
            '[[contexts]]\nid = 1\nvariables = [{ id = 1, address = "sine", value_type = "float" }]\n'
        )
        assert isinstance(config.readers[0], Loud) and config.readers[0].reader_type == "loud"
        assert isinstance(config.writers[0], Quiet)
    finally:
        unregister_reader("random")
        unregister_writer("quiet-test")
    assert reader_class("random") is RandomDataReader
    with pytest.raises(ConfigurationError, match="unknown writer type 'quiet-test'"):
        writer_class("quiet-test")
    with pytest.raises(ConfigurationError, match="not a DataReader subclass"):
        register_reader("bad", NoopDataWriter)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="non-empty str"):
        register_writer(" ", NoopDataWriter)


def test_entry_point_plugins_of_an_installed_distribution(plugin_site: tuple[Path, str]) -> None:
    _site, package = plugin_site
    assert {"echo", "broken", "notareader"} <= set(available_readers())
    assert "jsonl" in available_writers()
    echo = reader_class("echo")
    assert issubclass(echo, DataReader) and echo.__module__ == package
    jsonl = writer_class("jsonl")
    assert issubclass(jsonl, DataWriter) and jsonl.__name__ == "JsonLinesWriter"
    info = {p.name: p for p in plugins("reader")}["echo"]
    assert (info.source, info.target, info.distribution) == (
        "entry point",
        f"{package}:EchoReader",
        f"{package} 0.1.0",
    )

    with pytest.raises(ConfigurationError) as error:
        reader_class("broken")
    message = str(error.value)
    assert message.startswith(
        f"reader plugin 'broken' (entry point broken = {package}.missing:Nope in group "
    )
    assert f"distribution {package} 0.1.0" in message and "ModuleNotFoundError" in message
    with pytest.raises(
        ConfigurationError, match=r"reader plugin 'notareader' .* is 42, not a DataReader subclass"
    ):
        reader_class("notareader")

    # in a configuration file: options are checked against the plugin's own signature
    text = """
[[readers]]
type = "echo"
prefix = ">"

[[writers]]
type = "jsonl"
path = "out.jsonl"

[[contexts]]
id = 1
variables = [
    { id = 1, address = "say:hi", value_type = "str" },
    { id = 2, address = "count", value_type = "int" },
]
"""
    config = loads_config(text, source="plugin.toml")
    assert (
        type(config.readers[0]).__name__ == "EchoReader"
        and type(config.writers[0]).__name__ == "JsonLinesWriter"
    )
    with pytest.raises(ConfigFileError) as problems:
        loads_config(
            text.replace('prefix = ">"', 'prefx = ">"').replace("say:hi", "shout:hi"), source="plugin.toml"
        )
    assert str(problems.value).splitlines() == [
        'plugin.toml: readers[0].prefx: ">": unknown option of reader EchoReader; did you mean "prefix"? '
        "(options: prefix, reader_type, min_interval_ms)",
    ]  # the reader failed, so its variables are not checked against it (no cascade)
    with pytest.raises(ConfigFileError) as problems:
        loads_config(text.replace("say:hi", "shout:hi"), source="plugin.toml")
    assert str(problems.value) == (
        'plugin.toml: contexts[0].variables[0].address: "shout:hi": '
        "EchoReader: address 'shout:hi' is neither say:<text> nor count"
    )
    with pytest.raises(ConfigFileError) as problems:
        loads_config(text.replace('type = "echo"', 'type = "broken"'), source="plugin.toml")
    first = str(problems.value).splitlines()[0]
    assert first.startswith(
        "plugin.toml: readers[0].type: \"broken\": reader plugin 'broken' (entry point broken = "
    )


# -- through the command line, in a subprocess whose PYTHONPATH holds the distribution -------------
def cli(args: list[str], cwd: Path, site: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = Path(sysconfig.get_path("scripts")) / "data-collector"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "data_collector._cli"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_third_party_plugin_runs_from_a_config_file(tmp_path: Path) -> None:
    site, package = make_distribution(tmp_path)
    (tmp_path / "plugin.toml").write_text(
        """
[[readers]]
type = "echo"
prefix = "plc says "

[[writers]]
type = "jsonl"
path = "samples.jsonl"

[[contexts]]
id = 4
duration_s = 1.2
default_interval_ms = 200
variables = [
    { id = 1, address = "say:hello", value_type = "str" },
    { id = 2, address = "count", value_type = "int" },
]
""",
        encoding="utf-8",
    )
    listed = cli(["plugins"], tmp_path, site)
    assert listed.returncode == 1, listed.stdout + listed.stderr  # two of the plugin's entries are broken
    rows = {line.split()[1]: line for line in listed.stdout.splitlines()[1:]}
    assert f"entry point ({package} 0.1.0)" in rows["echo"] and f"ok ({package}.EchoReader)" in rows["echo"]
    assert "BROKEN: reader plugin 'broken'" in rows["broken"]
    assert "ok (data_reader.random.reader.RandomDataReader)" in rows["random"]

    run = cli(["run", "plugin.toml"], tmp_path, site)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "every context ended" in run.stdout
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    hello = [s["value"] for s in samples if s["variable"] == 1]
    counts = [s["value"] for s in samples if s["variable"] == 2]
    assert hello and set(hello) == {"plc says hello"}
    assert counts == list(range(1, len(counts) + 1)) and len(counts) >= 3
    assert {s["context"] for s in samples} == {4} and {s["quality"] for s in samples} == {"GOOD"}
    assert f"context 4: {len(samples)} samples, 0 bad" in run.stdout


def test_broken_plugin_gives_a_clear_error_naming_it(tmp_path: Path) -> None:
    site, package = make_distribution(tmp_path)
    (tmp_path / "broken.toml").write_text(
        '[[readers]]\ntype = "broken"\n\n[[contexts]]\nid = 1\n'
        'variables = [{ id = 1, address = "x", value_type = "int" }]\n',
        encoding="utf-8",
    )
    for command in ("validate", "run", "read"):
        result = cli([command, "broken.toml"], tmp_path, site)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr.startswith(
            f"broken.toml: readers[0].type: \"broken\": reader plugin 'broken' (entry point broken = "
            f"{package}.missing:Nope in group data_collector.readers, distribution {package} 0.1.0) "
            f"failed to load: ModuleNotFoundError: No module named '{package}.missing'"
        ), result.stderr
        assert "Traceback" not in result.stderr
