"""Contract cases of the archive writer: JSON per batch, CSV per sample, structured .npy per variable.

(The plain ``.npy`` of ``per = "sample"`` holds the value alone, without quality or read time, so
it cannot answer the contract's read-back; its round trip is in archive_writer_test.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from data_collector import DataWriter

from . import StoredSample, WriterCase, WriterHarness


class _ArchiveHarness(WriterHarness):
    def __init__(self, root: Path, per: str, fmt: str) -> None:
        pytest.importorskip(
            "jinja2", reason='the archive writer needs Jinja2: pip install "data-collector[archive]"'
        )
        self.root = root
        self.per = per
        self.fmt = fmt

    def new_writer(self) -> DataWriter:
        from data_writer.archive import ArchiveDataWriter

        # the default templates put every file of context N under context-N/
        return ArchiveDataWriter(self.root, per=self.per, format=self.fmt)  # type: ignore[arg-type]

    def read_back(self, context_id: int) -> list[StoredSample]:
        from data_writer.archive import read_samples

        out = []
        folder = self.root / f"context-{context_id}"
        for path in sorted(p for p in folder.rglob(f"*.{self.fmt}") if p.is_file()):
            for s in read_samples(path):
                assert s.read_at is not None
                cid = context_id if s.context_id is None else s.context_id
                out.append(StoredSample(cid, s.variable_id, s.read_at, s.value, s.quality, s.error))
        return out


def _case(per: str, fmt: str) -> Any:
    @contextmanager
    def make(tmp: Path) -> Iterator[WriterHarness]:
        yield _ArchiveHarness(tmp / "archive", per, fmt)

    return make


WRITER_CASES = [
    WriterCase("archive-json-per-batch", _case("batch", "json")),
    WriterCase("archive-csv-per-sample", _case("sample", "csv")),
    WriterCase("archive-npy-per-variable", _case("variable", "npy")),
]
