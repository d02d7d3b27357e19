"""Contract cases of the HDF5 writer: one file for every context, and one file per run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from data_collector import DataWriter

from . import StoredRun, StoredSample, WriterCase, WriterHarness


class _Hdf5Harness(WriterHarness):
    def __init__(self, tmp: Path, template: str) -> None:
        pytest.importorskip(
            "tables", reason='the HDF5 writer needs PyTables: pip install "data-collector[hdf5]"'
        )
        self.tmp = tmp
        self.template = str(tmp / template)

    def new_writer(self) -> DataWriter:
        from data_writer.hdf5 import Hdf5DataWriter

        return Hdf5DataWriter(self.template, flush_s=0.2)

    def _files(self) -> list[Path]:
        return sorted(self.tmp.rglob("*.h5"))

    def read_back(self, context_id: int) -> list[StoredSample]:
        from data_writer.hdf5 import read_samples

        out = []
        for path in self._files():
            for s in read_samples(path, context_id):
                assert s.read_at is not None
                out.append(StoredSample(s.context_id, s.variable_id, s.read_at, s.value, s.quality, s.error))
        return out

    def read_runs(self) -> dict[int, list[StoredRun]] | None:
        from data_writer.hdf5 import list_runs

        runs: dict[int, list[StoredRun]] = {}
        for path in self._files():
            for r in list_runs(path):
                runs.setdefault(r.context_id, []).append(StoredRun(r.start, r.end, r.metadata))
        for found in runs.values():
            found.sort(key=lambda r: r.start or datetime.min.replace(tzinfo=UTC))
        return runs


@contextmanager
def _single(tmp: Path) -> Iterator[WriterHarness]:
    yield _Hdf5Harness(tmp, "all.h5")


@contextmanager
def _per_run(tmp: Path) -> Iterator[WriterHarness]:
    yield _Hdf5Harness(tmp, "ctx-{context_id}/run-{start:%Y%m%d-%H%M%S.%f}.h5")


WRITER_CASES = [
    WriterCase("hdf5", _single, array_values=True),
    WriterCase("hdf5-per-run", _per_run, array_values=True),
]
