"""A writer appending one JSON object per sample to a file (never truncating it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from data_collector import CollectedVariables, DataCollectionContext, DataWriter


class JsonLinesWriter(DataWriter):
    """Appends ``{"context", "variable", "read_at", "value", "quality", "error"}`` lines to ``path``."""

    def __init__(self, path: str | Path, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.path = Path(path)
        self._file: IO[str] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")  # append: a reopen keeps what is there

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        if self._file is None:
            self.open()
        assert self._file is not None
        lines = [
            json.dumps(
                {
                    "context": context.id,
                    "variable": item.variable.id,
                    "read_at": item.read_at.isoformat() if item.read_at else None,
                    "value": item.value,
                    "quality": item.quality.name,
                    "error": item.error,
                },
                ensure_ascii=False,
            )
            for item in variables
        ]
        self._file.write("".join(line + "\n" for line in lines))
        self._file.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every sample of a file the writer wrote, in order (nothing if there is no file)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
