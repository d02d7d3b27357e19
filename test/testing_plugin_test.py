"""A third-party plugin project tested with the kit, in a pytest subprocess of its own.

The example plugin (``examples/thirdparty_plugin``: its own pyproject.toml, a reader, two
writers, their contract tests) is copied to a temporary directory and put on the path; pytest runs
there with the kit's plugin loaded by ``-p data_collector.testing.plugin`` (this checkout is not
what the environment's installed metadata describes). It passes; deliberately broken copies fail,
naming the rule they break; ``pytest --fixtures`` documents the fixtures. The ``pytest11`` entry
point itself is checked with a distribution's metadata made from this checkout's pyproject.toml
(as ``pip install`` writes it), without ``-p``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "thirdparty_plugin"
PLUGIN = "data_collector.testing.plugin"


def _project(tmp_path: Path, edits: dict[str, tuple[str, str]] | None = None) -> Path:
    """A copy of the example plugin project; ``edits``: file -> (text, replacement), each must apply."""
    project = tmp_path / "plugin"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    for name, (old, new) in (edits or {}).items():
        path = project / name
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{name} no longer holds {old!r}: update this test"
        path.write_text(text.replace(old, new), encoding="utf-8")
    return project


def _pytest(
    project: Path, *args: str, site: Path | None = None, plugin: bool = True, quiet: bool = True
) -> subprocess.CompletedProcess[str]:
    paths = [str(p) for p in (site, project, ROOT) if p is not None]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTEST_ADDOPTS", None)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *(["-q"] if quiet else [])]
    if plugin:
        command += ["-p", PLUGIN]
    return subprocess.run(
        [*command, *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_example_plugin_passes_the_contracts(tmp_path: Path) -> None:
    done = _pytest(_project(tmp_path), "-rs")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    passed = re.search(r"(\d+) passed", out)
    assert passed is not None and int(passed.group(1)) >= 15, out
    for name in ("TestTankReader", "TestJsonLinesWriter", "TestHistorianWriter"):
        assert name not in out or "SKIPPED" in out, out  # nothing failed
    # the historian is checked behind the proxy (not skipped); the file writer has no link to break
    assert "TestHistorianWriter.proxy_target() is None" not in out
    assert "JsonLinesWriter does not claim exactly_once" in out


BROKEN = {
    "raises in read": (
        {
            "tank_plugin/reader.py": (
                "                    self._disconnect()  # reconnect at the next read\n",
                "                    self._disconnect()  # reconnect at the next read\n"
                "                    raise\n",
            )
        },
        "TestTankReader",
        ["test_unreachable_device_is_bad_with_a_reason_within_the_timeout"],
        "broken rule reader.never-raises",
    ),
    "truncates on reopen": (
        {
            "tank_plugin/jsonl.py": (
                'self.path.open("a", encoding="utf-8")',
                'self.path.open("w", encoding="utf-8")',
            )
        },
        "TestJsonLinesWriter",
        ["test_reopen_appends_never_truncates"],
        "broken rule writer.append",
    ),
    "loses a batch under the proxy": (
        {
            "tank_plugin/historian.py": (
                '        self._call({"op": "put", "context": context.id, "samples": samples})',
                "        try:\n"
                '            self._call({"op": "put", "context": context.id, "samples": samples})\n'
                "        except OSError:\n"
                "            return  # the bug: the batch is gone, and the collector counts it written",
            )
        },
        "TestHistorianWriter",
        ["test_an_outage_makes_write_raise_a_transient_error", "test_exactly_once_under_network_faults"],
        "broken rule writer.exactly-once",
    ),
}


@pytest.mark.parametrize("variant", sorted(BROKEN))
def test_a_broken_plugin_fails_naming_the_rule(variant: str, tmp_path: Path) -> None:
    edits, cls, failing, rule = BROKEN[variant]
    done = _pytest(_project(tmp_path, edits), "-k", cls, "-rf")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    failed = sorted(re.findall(rf"FAILED tests/test_contracts\.py::{cls}::(\w+)", out))
    assert failed == sorted(failing), out
    assert rule in out, out
    assert re.search(r"\d+ passed", out), out  # the other rules of the class still pass


def test_the_proxy_loss_breaks_the_outage_rule_too(tmp_path: Path) -> None:
    edits, _cls, _failing, _rule = BROKEN["loses a batch under the proxy"]
    done = _pytest(_project(tmp_path, edits), "-k", "TestHistorianWriter and outage")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "broken rule writer.outage-is-transient" in out
    assert "write() returned during the outage without an error" in out
    assert "1 missing" in out or re.search(r"\d+ missing", out), out


def test_collector_factory_fails_a_test_that_lost_samples(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "tests" / "test_loss.py").write_text(
        "from data_collector import DataCollectionContext, Variable\n"
        "from data_collector.testing import wait_for\n"
        "from data_reader.random import RandomDataReader\n\n\n"
        "def test_loses(collector_factory, memory_writer):\n"
        "    memory_writer.fail_with(ValueError('refused'))  # permanent: lost\n"
        "    c = collector_factory([RandomDataReader()])\n"
        "    v = Variable(1, 'counter', 'int', 'random', 20)\n"
        "    c.start(DataCollectionContext(1, [v], min_interval_ms=10))\n"
        "    wait_for(lambda: c.stats().writers['memory'].lost_samples > 0, 10)\n",
        encoding="utf-8",
    )
    done = _pytest(project, "tests/test_loss.py")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 passed, 1 error" in out, out  # the test body passed; its teardown failed it
    assert "collector_factory: samples went missing" in out and "writer memory:" in out and "lost" in out


FIXTURES = {
    "modbus_simulator": "A started Modbus TCP simulator (pymodbus) on 127.0.0.1",
    "opcua_simulator": "A started OPC UA simulator (asyncua) on 127.0.0.1",
    "fault_proxy": "Factory of fault-injection proxies",
    "memory_writer": "A thread-safe writer keeping every sample and hook call in memory",
    "collector_factory": "Builds DataCollectors for the test and closes them after it",
}


def _check_fixture_listing(out: str) -> None:
    assert f"fixtures defined from {PLUGIN}" in out, out
    for name, doc in FIXTURES.items():
        assert re.search(rf"^{name} -- .*plugin\.py:\d+\n\s+{re.escape(doc)}", out, re.M), (name, out)


def test_pytest_fixtures_lists_the_fixtures_with_their_docstrings(tmp_path: Path) -> None:
    done = _pytest(_project(tmp_path), "--fixtures")
    assert done.returncode == 0, done.stdout + done.stderr
    _check_fixture_listing(done.stdout)


def _installed_metadata(site: Path) -> None:
    """A ``data-collector`` distribution's metadata with this checkout's declared entry points,
    as ``pip install`` writes it (the code itself comes from this checkout on PYTHONPATH)."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    info = site / "data_collector-0.1.0+kitcheck.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: 0.1.0+kitcheck\n", encoding="utf-8"
    )
    lines = []
    for group, table in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in table.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")


def test_the_pytest11_entry_point_loads_the_plugin_without_p(tmp_path: Path) -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        declared = tomllib.load(f)["project"]["entry-points"]["pytest11"]
    assert declared == {PLUGIN: PLUGIN}  # named as the module: "-p" and the entry point load it once
    site = tmp_path / "site"
    _installed_metadata(site)
    project = _project(tmp_path)
    done = _pytest(project, "--fixtures", site=site, plugin=False)
    assert done.returncode == 0, done.stdout + done.stderr
    _check_fixture_listing(done.stdout)
    traced = _pytest(project, "--trace-config", "--co", site=site, plugin=False, quiet=False)
    assert re.search(r"data-collector-0\.1\.0\+kitcheck at .*plugin\.py", traced.stdout), traced.stdout
    both = _pytest(project, "--co", site=site, plugin=True)  # the entry point and -p: no conflict
    assert both.returncode == 0, both.stdout + both.stderr
    off = subprocess.run(  # the control: with entry points off, the fixtures are gone
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--fixtures"],
        cwd=project,
        env={
            **os.environ,
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            "PYTHONPATH": os.pathsep.join([str(site), str(project), str(ROOT)]),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "modbus_simulator --" not in off.stdout


def test_the_readme_section_shows_the_example_as_it_runs() -> None:
    """The README's code is the example's own (which the tests above run), and its rules are the kit's."""
    from data_collector.testing import READER_RULES, WRITER_RULES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Testing your own reader or writer\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    source = (EXAMPLE / "tests" / "test_contracts.py").read_text(encoding="utf-8")
    assert len(blocks) == 2 and all(block in source for block in blocks)
    named = re.findall(r"`((?:reader|writer)\.[a-z-]+)`", section)
    assert sorted(named) == sorted([*READER_RULES, *WRITER_RULES])
    assert "cd examples/thirdparty_plugin && python -m pytest" in section
    for fixture in FIXTURES:
        assert f"| `{fixture}` |" in section
