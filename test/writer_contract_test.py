"""Every shipped writer passes the public writer contract (data_collector.testing.WriterContract).

The stores come from ``test/_cases/*_cases.py`` (``WRITER_CASES``: CSV, noop (its log), SQL on
SQLite, PostgreSQL and MariaDB, HDF5, Redis); each becomes a ``WriterContract`` test class here,
exactly as a user's ``class TestMyWriter(WriterContract)`` would. The store of each test is made
by the case (and skipped, with the reason, when its server is unreachable, unless
``DC_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from _cases import WriterCase, WriterHarness, all_writer_cases

from data_collector import DataWriter
from data_collector.testing import WRITER_RULES, FaultProxy, StoredRun, StoredSample, WriterContract

CASES = all_writer_cases()


class _CaseContract(WriterContract):
    """The writer contract on the store of one :class:`WriterCase`."""

    case: ClassVar[WriterCase]
    harness: WriterHarness

    @pytest.fixture(autouse=True)
    def _store(self, tmp_path: Path) -> Iterator[None]:
        with self.case.make(tmp_path) as harness:
            self.harness = harness
            yield

    def make_writer(self) -> DataWriter:
        return self.harness.new_writer()

    def read_back(self, context_id: int) -> Sequence[StoredSample]:
        return self.harness.read_back(context_id)

    def read_runs(self) -> Mapping[int, Sequence[StoredRun]] | None:
        return self.harness.read_runs()

    def proxy_target(self) -> tuple[str, int] | None:
        return self.harness.proxy_target()

    def make_proxied_writer(self, proxy: FaultProxy) -> DataWriter:
        return self.harness.new_proxied_writer(proxy)


for _case in CASES:
    _name = "Test_" + _case.id.replace("-", "_")
    globals()[_name] = type(
        _name,
        (_CaseContract,),
        {"case": _case, "typed_values": _case.typed_values, "array_values": _case.array_values},
    )


def test_every_shipped_writer_has_a_case() -> None:
    ids = {c.id for c in CASES}
    assert {"csv", "noop", "sql-sqlite", "sql-postgresql", "sql-mariadb", "hdf5", "redis-per-context"} <= ids
    assert len(WRITER_RULES) >= 7
