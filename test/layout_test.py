"""The layout: one folder per plugin, a core that imports no plugin, old import paths that still work.

- the core (``data_collector`` minus its CLI) imports nothing from ``data_reader``/``data_writer``,
  with one exception: the testing kit (``data_collector/testing/``) imports the plugins' simulators
  (``data_reader.modbus.simulator``, ``data_reader.opcua.simulator``) for its fixtures, inside the
  fixture functions only (or under ``TYPE_CHECKING``), so importing the kit imports no plugin;
  only the testing kit imports pytest;
- plugins import only the public API of ``data_collector`` (``from data_collector import ...``);
- every plugin folder has a ``README.md`` (options table, runnable example) and a ``sample.toml``
  that ``data-collector validate`` accepts, naming the folder's own plugin;
- the README examples run;
- the old module paths re-export the new modules;
- every public package's ``__all__`` is exactly its public names.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = ("_cli.py", "__main__.py")

#: Plugin modules not moved to their folder yet (another step of the layout change): they still
#: import private modules of data_collector. Remove an entry when its plugin moves.
NOT_YET_MOVED: tuple[str, ...] = ()


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (relative imports resolved)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _deferred_imports(path: Path) -> set[int]:
    """Lines of the imports of ``path`` that run only when called: inside a function, or under
    ``if TYPE_CHECKING:`` (never at import time)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        deferred = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or (
            isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        )
        if deferred:
            lines |= {n.lineno for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
    return lines


#: What the testing kit may import from the plugins, deferred only (see the module docstring).
TESTING_MAY_IMPORT = ("data_reader.modbus.simulator", "data_reader.opcua.simulator")


def _core_files() -> list[Path]:
    return [
        p
        for p in sorted((ROOT / "data_collector").rglob("*.py"))
        if p.name not in CLI and "cli" not in p.relative_to(ROOT / "data_collector").parts[:-1]
    ]


def _allowed_in_testing(path: Path, line: int, module: str) -> bool:
    return (
        path.relative_to(ROOT).parts[:2] == ("data_collector", "testing")
        and any(module == m or module.startswith(m + ".") for m in TESTING_MAY_IMPORT)
        and line in _deferred_imports(path)
    )


def test_the_core_imports_no_plugin() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in _core_files()
        for line, module in _imports(path)
        if module.split(".")[0] in ("data_reader", "data_writer", "rich")  # rich: the CLI's only
        and not _allowed_in_testing(path, line, module)
    ]
    assert len(_core_files()) > 5
    assert offenders == []
    pytest_users = {
        path.relative_to(ROOT).as_posix()
        for path in _core_files()
        for _line, module in _imports(path)
        if module.split(".")[0] in ("pytest", "_pytest")
    }
    assert pytest_users and all(p.startswith("data_collector/testing/") for p in pytest_users), pytest_users


def test_the_testing_kits_plugin_imports_are_deferred(tmp_path: Path) -> None:
    testing = ROOT / "data_collector" / "testing"
    used = [
        (path, line, module)
        for path in sorted(testing.rglob("*.py"))
        for line, module in _imports(path)
        if module.split(".")[0] in ("data_reader", "data_writer")
    ]
    assert used and all(_allowed_in_testing(p, line, m) for p, line, m in used), used
    probe = tmp_path / "data_collector" / "testing" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "import data_reader.modbus.simulator\n"
        "if TYPE_CHECKING:\n    import data_reader.opcua.simulator\n"
        "def f() -> None:\n    from data_reader.modbus.simulator import ModbusSimulator\n"
    )
    assert _deferred_imports(probe) == {4, 6}
    code = (
        "import sys, data_collector.testing, data_collector.testing.plugin\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in "
        "('data_reader', 'data_writer', 'pymodbus', 'asyncua')]\n"
        "assert loaded == [], loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_import_walk_sees_plugin_imports(tmp_path: Path) -> None:
    probe = tmp_path / "data_collector" / "cli" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "import json\n\ndef f() -> None:\n"
        "    from data_reader.random import reader\n"
        "    from ...data_writer import csv\n"
    )
    found = _imports(probe, tmp_path)
    assert (4, "data_reader.random") in found and (5, "data_writer.csv") in found


def _plugin_files() -> list[Path]:
    files = []
    for pkg in ("data_reader", "data_writer"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not any(rel == skip or rel.startswith(skip) for skip in NOT_YET_MOVED):
                files.append(path)
    return files


def test_plugins_import_only_the_public_api() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in _plugin_files()
        for line, module in _imports(path)
        if module.startswith("data_collector.") and module.split(".")[1].startswith("_")
    ]
    assert offenders == []


def plugin_folders() -> list[Path]:
    return sorted(
        p
        for pkg in ("data_reader", "data_writer")
        for p in (ROOT / pkg).iterdir()
        if (p / "__init__.py").is_file() and not p.name.startswith("_")
    )


def test_the_plugin_folders() -> None:
    names = {f"{p.parent.name}/{p.name}" for p in plugin_folders()}
    assert {
        "data_reader/modbus",
        "data_reader/opcua",
        "data_reader/random",
        "data_writer/archive",
        "data_writer/csv",
        "data_writer/noop",
        "data_writer/redis",
        "data_writer/sql",
        "data_writer/hdf5",
    } <= names


@pytest.mark.parametrize("folder", plugin_folders(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_plugin_folder_has_a_readme_and_a_sample_that_validates(folder: Path, tmp_path: Path) -> None:
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert readme.startswith(f"# `{folder.name}`"), readme[:80]
    for section in ("## Options", "## Example", "| option | default | meaning |", "```python"):
        assert section in readme, f"{folder}/README.md lacks {section!r}"
    sample = folder / "sample.toml"
    kind = "readers" if folder.parent.name == "data_reader" else "writers"
    text = sample.read_text(encoding="utf-8")  # ${VAR} substitutions: not TOML before loading
    assert re.search(rf'^\[\[{kind}\]\]\ntype = "{folder.name}"', text, re.M), (
        f"{sample} uses no {folder.name}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODBUS_", "OPCUA_"))}
    done = subprocess.run(
        [sys.executable, "-m", "data_collector", "validate", "--no-spool", str(sample)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{sample}: OK" in done.stdout
    assert list(tmp_path.iterdir()) == []  # validating creates nothing


@pytest.mark.parametrize("folder", plugin_folders(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_readme_example_runs(folder: Path, tmp_path: Path) -> None:
    readme = (folder / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks
    for code in blocks:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{folder}/README.md example:\n{code}\n{done.stdout}{done.stderr}"


OLD_PATHS = [
    ("data_reader.modbus_data_reader", "data_reader.modbus.reader"),
    ("data_reader.modbus_simulator", "data_reader.modbus.simulator"),
    ("data_reader._modbus._address", "data_reader.modbus._address"),
    ("data_reader._modbus._plan", "data_reader.modbus._plan"),
    ("data_reader._modbus._client", "data_reader.modbus._client"),
    ("data_reader.opcua_data_reader", "data_reader.opcua.reader"),
    ("data_reader.opcua_simulator", "data_reader.opcua.simulator"),
    ("data_reader._opcua._address", "data_reader.opcua._address"),
    ("data_reader._opcua._convert", "data_reader.opcua._convert"),
    ("data_reader._opcua._link", "data_reader.opcua._link"),
    ("data_reader._opcua._loop", "data_reader.opcua._loop"),
    ("data_reader._opcua._ua", "data_reader.opcua._ua"),
    ("data_reader.random_data_reader", "data_reader.random.reader"),
    ("data_writer.csv_file_data_writer", "data_writer.csv.writer"),
    ("data_writer.noop_data_writer", "data_writer.noop.writer"),
    ("data_writer.sql_data_writer", "data_writer.sql"),
    ("data_writer._sql._codec", "data_writer.sql._codec"),
    ("data_writer._sql._errors", "data_writer.sql._errors"),
    ("data_writer._sql._schema", "data_writer.sql._schema"),
    ("data_writer._sql._store", "data_writer.sql._store"),
    ("data_writer._sql._url", "data_writer.sql._url"),
]


@pytest.mark.parametrize(("old", "new"), OLD_PATHS)
def test_old_import_paths_re_export_the_new_modules(old: str, new: str) -> None:
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    assert old_module is not new_module
    assert old_module.__all__ == new_module.__all__
    names = [n for n in vars(new_module) if not n.startswith("__")]
    assert set(new_module.__all__) <= set(names)
    for name in names:  # public and private names alike (tests import private helpers)
        assert getattr(old_module, name) is getattr(new_module, name), name
    with pytest.raises(AttributeError):
        old_module.no_such_name  # noqa: B018


@pytest.mark.parametrize("kind", ["modbus", "opcua"])
def test_old_simulator_modules_still_run(kind: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"data_reader.{kind}_simulator", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--port" in done.stdout


PACKAGES = [
    "data_collector",
    "data_collector.testing",
    "data_reader",
    "data_writer",
    "data_reader.modbus",
    "data_reader.opcua",
    "data_reader.random",
    "data_writer.archive",
    "data_writer.csv",
    "data_writer.noop",
    "data_writer.redis",
    "data_writer.mqtt",
    "data_writer.sql",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exactly_the_public_names(name: str) -> None:
    package = importlib.import_module(name)
    public = {n for n, v in vars(package).items() if not n.startswith("_") and not isinstance(v, ModuleType)}
    assert public == set(package.__all__) - {"__version__"}
    assert len(package.__all__) == len(set(package.__all__))


COMMANDS = (
    "run",
    "capture",
    "scan",
    "validate",
    "read",
    "demo",
    "export",
    "plot",
    "migrate",
    "plugins",
    "simulator",
    "spool",
    "tail",
)


def test_the_cli_is_a_package_with_one_module_per_command() -> None:
    import data_collector._cli as alias
    import data_collector.cli as cli

    assert alias.main is cli.main
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert isinstance(commands, dict) and sorted(commands) == sorted(COMMANDS)
    for name, sub in commands.items():
        module = importlib.import_module(f"data_collector.cli.{name}")
        func = sub.get_default("func")
        assert func.__module__ == module.__name__, (name, func)
    with (ROOT / "pyproject.toml").open("rb") as f:
        import tomllib

        assert tomllib.load(f)["project"]["scripts"]["data-collector"] == "data_collector.cli:main"


def test_the_old_sql_module_also_answers_the_names_of_its_split_modules() -> None:
    # data_writer.sql_data_writer held the writer and the read-back API in one module; both moved
    # (data_writer.sql.writer, data_writer.sql.read) and the old module still answers their names.
    import data_writer.sql.read as read
    import data_writer.sql.writer as writer
    import data_writer.sql_data_writer as old

    for module in (writer, read):
        for name in vars(module):
            if not name.startswith("__"):
                assert hasattr(old, name), name
    assert old.samples_to_frame is read.samples_to_frame
    assert old.SqlDataWriter is writer.SqlDataWriter
