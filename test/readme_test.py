"""Every ```python block of README.md runs as written (issue 14), each in a fresh interpreter.

Blocks run one by one in an empty folder with this checkout on ``PYTHONPATH``; a block that needs
a device starts the bundled simulator itself. A block that is deliberately a fragment is preceded
by ``<!-- not-run: reason -->`` (the README says so); there must be few of them. Each block must
exit 0 without a traceback within its time limit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_FRAGMENTS = 3
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(\S.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    heading: str
    code: str
    not_run: str | None  # the reason, for a marked fragment


def blocks(text: str) -> list[Block]:
    out: list[Block] = []
    lines = text.splitlines()
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("#").strip()
        fence = re.match(r"^(```+)(\w*)\s*$", line)
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == fence.group(1))
            if fence.group(2) == "python":
                previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
                marked = NOT_RUN.match(previous.strip())
                out.append(
                    Block(i + 1, heading, "\n".join(lines[i + 1 : end]) + "\n", marked and marked.group(1))
                )
            i = end
        i += 1
    return out


BLOCKS = blocks(README.read_text(encoding="utf-8"))


def _id(block: Block) -> str:
    return f"L{block.line}-" + re.sub(r"\W+", "-", block.heading.lower()).strip("-")


def test_the_readme_has_python_blocks_and_few_fragments() -> None:
    assert len(BLOCKS) >= 8
    fragments = [b for b in BLOCKS if b.not_run is not None]
    assert len(fragments) <= MAX_FRAGMENTS, [(b.line, b.not_run) for b in fragments]
    assert "<!-- not-run: reason -->" in README.read_text(encoding="utf-8")  # the convention is told


def test_the_parser_finds_marks() -> None:
    text = (
        "# A\n\n```python\nprint(1)\n```\n\n<!-- not-run: a sketch -->\n"
        "```python\nx(\n```\n```bash\nls\n```\n"
    )
    assert [(b.heading, b.code, b.not_run) for b in blocks(text)] == [
        ("A", "print(1)\n", None),
        ("A", "x(\n", "a sketch"),
    ]


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.not_run is None], ids=_id)
def test_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    script = tmp_path / f"readme_line_{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    where = f"README.md line {block.line} ({block.heading})"
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, f"{where}:\n{result.stderr}"
