"""ruff and mypy are clean: what each covers, honestly.

- ruff check: the whole tree; ruff format --check: the three packages.
- mypy (strict): the folders listed in pyproject.toml ``[tool.mypy] files``: data_collector,
  data_reader, data_writer, examples, test and bench, that is every folder holding Python code
  (:func:`test_mypy_covers_every_python_folder`); the run must say it checked every one of those
  files (:func:`test_mypy_strict_clean`). mypy's cache (``.mypy_cache``) keeps a repeated run short.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install -e '.[test]')")
def test_ruff_clean() -> None:
    check = _run(["ruff", "check", "."])
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = _run(["ruff", "format", "--check", "data_collector", "data_reader", "data_writer"])
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def _mypy_folders() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        files: list[str] = tomllib.load(f)["tool"]["mypy"]["files"]
    return files


def _python_files(folders: list[str]) -> list[Path]:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts]


def test_mypy_strict_clean() -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    result = _run([sys.executable, "-m", "mypy"])
    assert result.returncode == 0, result.stdout + result.stderr
    # every file of the configured folders was checked (not, say, a folder mypy could not see)
    checked = re.search(r"no issues found in (\d+) source files", result.stdout)
    assert checked is not None, result.stdout
    assert int(checked.group(1)) == len(_python_files(_mypy_folders())), result.stdout


def test_mypy_covers_every_python_folder() -> None:
    files = _mypy_folders()
    assert files == ["data_collector", "data_reader", "data_writer", "examples", "test", "bench"]
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: which folders belong to the project is unknown")
    tracked = _run(["git", "ls-files", "*.py"])
    assert tracked.returncode == 0, tracked.stderr
    with_python = {line.split("/")[0] for line in tracked.stdout.splitlines() if "/" in line}
    # a folder of Python code that mypy does not check would have to be named here with the reason
    assert with_python <= set(files), f"not type-checked: {sorted(with_python - set(files))}"
