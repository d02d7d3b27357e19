"""The testing kit: test your own readers and writers the way data-collector tests its own.

Install with ``pip install "data-collector[testing]"`` (pytest, and pymodbus and asyncua for the
simulators). pytest then loads the plugin :mod:`data_collector.testing.plugin` by itself, with the
fixtures ``modbus_simulator``, ``opcua_simulator``, ``fault_proxy``, ``memory_writer`` and
``collector_factory`` (``pytest --fixtures`` documents them).

The contract suites check a plugin against the rules every shipped reader and writer passes::

    from data_collector import DataReader, Variable
    from data_collector.testing import ReaderContract

    class TestPlcReader(ReaderContract):
        def make_reader(self) -> DataReader:
            return PlcReader(...)

        def make_variables(self) -> list[Variable]:
            return [Variable(1, "DB1.DBW0", "int", "plc")]

and :class:`WriterContract` likewise (``make_writer``, ``read_back``). A failing check names the
rule it found broken (:data:`READER_RULES`, :data:`WRITER_RULES`). A writer whose retries never
duplicate a sample says so with ``exactly_once = True`` on its class; the suite then checks it
behind a :class:`FaultProxy` that resets, cuts and stalls its connection.

Also here: :class:`MemoryWriter` (thread-safe, with waits), :class:`CollectorFactory` and
:func:`assert_nothing_lost` (the accounting of ``DataCollector.stats()``), :func:`wait_for`,
:func:`free_port`. Importing this package needs pytest; it never imports a plugin (the
simulator fixtures import theirs when a test asks for them).
"""

from ._contracts import (
    READER_RULES,
    WRITER_RULES,
    ReaderContract,
    StoredRun,
    StoredSample,
    WriterContract,
)
from ._factory import CollectorFactory, accounting_problems, assert_nothing_lost
from ._faultproxy import FaultProxy, ProxyStats
from ._memory import MemoryWriter, Sample
from ._wait import free_port, wait_for

__all__ = [
    "READER_RULES",
    "WRITER_RULES",
    "CollectorFactory",
    "FaultProxy",
    "MemoryWriter",
    "ProxyStats",
    "ReaderContract",
    "Sample",
    "StoredRun",
    "StoredSample",
    "WriterContract",
    "accounting_problems",
    "assert_nothing_lost",
    "free_port",
    "wait_for",
]
