"""The pytest plugin of data-collector's testing kit: fixtures for testing readers and writers.

Installed with ``pip install "data-collector[testing]"``, pytest loads it by itself (entry point
``pytest11``); elsewhere (a source checkout that is not installed) load it with
``-p data_collector.testing.plugin`` or ``pytest_plugins = ["data_collector.testing.plugin"]`` in
a top-level ``conftest.py``. ``pytest --fixtures`` lists the fixtures with their documentation:

- ``modbus_simulator``, ``opcua_simulator``: a simulator started on a free loopback port, stopped
  after the test; options through a marker, e.g.
  ``@pytest.mark.modbus_simulator(unit_ids=[1, 2], latency_s=0.01)``;
- ``fault_proxy``: a factory of :class:`~data_collector.testing.FaultProxy` in front of any TCP server;
- ``memory_writer``: a :class:`~data_collector.testing.MemoryWriter`;
- ``collector_factory``: builds collectors, closes them after the test, and fails the test when
  one lost, dropped or left unwritten a sample.

The simulators come from the plugins' folders (``data_reader.modbus.simulator``,
``data_reader.opcua.simulator``), imported inside their fixtures only: loading this plugin
imports neither pymodbus nor asyncua, and a missing one skips the tests that need it, saying
which extra to install.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ._factory import CollectorFactory
from ._faultproxy import FaultProxy
from ._memory import MemoryWriter

if TYPE_CHECKING:  # the plugins' simulators, for the fixtures' types only (imported lazily)
    from data_reader.modbus.simulator import ModbusSimulator
    from data_reader.opcua.simulator import OpcUaSimulator

__all__ = [
    "collector_factory",
    "fault_proxy",
    "memory_writer",
    "modbus_simulator",
    "opcua_simulator",
    "pytest_configure",
]

_EXTRA = 'pip install "data-collector[testing]"'


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "modbus_simulator(**options): options of the modbus_simulator fixture's ModbusSimulator "
        "(unit_ids, latency_s, holding, max_read_registers, ...)",
    )
    config.addinivalue_line(
        "markers",
        "opcua_simulator(**options): options of the opcua_simulator fixture's OpcUaSimulator "
        "(bulk, update_interval_s, users, certificate, ...)",
    )


def _marker_options(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    marker = request.node.get_closest_marker(name)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(f"@pytest.mark.{name} takes keyword options only, got {marker.args!r}")
    return dict(marker.kwargs)


def _need(module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        pytest.skip(f"{module} is not installed ({exc}); {_EXTRA} or the {extra} extra")


@pytest.fixture
def modbus_simulator(request: pytest.FixtureRequest) -> Iterator[ModbusSimulator]:
    """A started Modbus TCP simulator (pymodbus) on 127.0.0.1, on a free port; stopped after the test.

    Point a reader at ``("127.0.0.1", modbus_simulator.port)``, unit 1. Its register map holds live
    signals and constants (see ``data_reader.modbus.simulator``). Program it while the test runs:
    ``set_value("hr:400:float32", 21.5)``, ``set_registers(...)``; faults: ``freeze()`` / ``thaw()``
    (no answers at all), ``refuse(address, count, table="h")`` (exception 2 for a range),
    ``drop_unit(unit)`` / ``restore_unit(unit)``, ``clear_faults()``; ``requests`` and
    ``request_count()`` tell what a client sent. Options: ``@pytest.mark.modbus_simulator(unit_ids=[1, 2],
    latency_s=0.005, max_read_registers=60, ...)`` (the ``ModbusSimulator`` keyword arguments).
    """
    _need("pymodbus", "modbus")
    from data_reader.modbus.simulator import ModbusSimulator

    options = _marker_options(request, "modbus_simulator")
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    with ModbusSimulator(**options) as sim:
        yield sim


@pytest.fixture
def opcua_simulator(request: pytest.FixtureRequest) -> Iterator[OpcUaSimulator]:
    """A started OPC UA simulator (asyncua) on 127.0.0.1, on a free port; stopped after the test.

    Connect to ``opcua_simulator.endpoint``; ``opcua_simulator.address("Sim.Sine")`` gives a node's
    NodeId string (see ``data_reader.opcua.simulator`` for the nodes: live values, constants of
    every type, setpoints). Program it: ``set_value(name, value)``, ``add_variable(name, value)``,
    ``delete_node(name)``; faults: ``freeze()`` / ``thaw()`` (the server stops answering),
    ``refuse(*names, status="BadOutOfService")``, ``send_status_change(status)``,
    ``clear_faults()``, ``stop()`` / ``start()`` (a restart on the same port). Options:
    ``@pytest.mark.opcua_simulator(bulk=1000, users={"op": "pw"}, ...)``.
    """
    _need("asyncua", "opcua")
    from data_reader.opcua.simulator import OpcUaSimulator

    options = _marker_options(request, "opcua_simulator")
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    with OpcUaSimulator(**options) as sim:
        yield sim


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Factory of fault-injection proxies: ``proxy = fault_proxy(host, port)`` in front of any TCP server.

    Point the client under test at ``proxy.port`` (``proxy.address``) instead of the server, then
    break the link: ``cut()`` / ``restore()`` (connections reset, new ones refused),
    ``reset_before_reply(match=None)`` (the server does the work, the client never hears it),
    ``reset_after_reply()``, ``reset_after_bytes(n, direction)``, ``stall(seconds)``,
    ``reset_all()``; ``stats()`` and ``wait_fired(n)`` tell what happened. Every proxy made is
    closed after the test. Keyword arguments go to :class:`~data_collector.testing.FaultProxy`.
    """
    made: list[FaultProxy] = []

    def make(host: str, port: int, **options: Any) -> FaultProxy:
        proxy = FaultProxy(host, port, **options)
        made.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in reversed(made):
            proxy.close()


@pytest.fixture
def memory_writer() -> MemoryWriter:
    """A thread-safe writer keeping every sample and hook call in memory (name ``"memory"``).

    ``samples``, ``of(context_id, variable_id)``, ``events`` (started/data/stopped in order),
    ``batches``; waits that wake on each write: ``wait_for_samples(n, timeout, context_id=...,
    variable_id=...)``, ``wait_for_each(variable_ids, n, timeout)``, ``wait_for_event("stopped",
    context_id)``, ``wait_until(predicate, timeout, what)``; ``fail_with(OSError(...))`` makes
    writes fail (``None``: write again). The default writer of ``collector_factory``.
    """
    return MemoryWriter()


@pytest.fixture
def collector_factory(memory_writer: MemoryWriter) -> Iterator[CollectorFactory]:
    """Builds DataCollectors for the test and closes them after it, failing the test if one lost data.

    ``collector = collector_factory([reader])`` writes to ``memory_writer``;
    ``collector_factory(readers, writers, listeners, spool_dir=..., ...)`` takes the collector's
    arguments. After the test every collector is closed (newest first) and the test fails when a
    writer's ``stats()`` show lost, dropped or unwritten samples, quarantined batches, or counts
    that do not add up; ``allow_loss=True`` exempts a collector that loses samples on purpose.
    """
    factory = CollectorFactory([memory_writer])
    try:
        yield factory
    finally:
        problems = factory.close_all()
    if problems:
        pytest.fail("collector_factory: samples went missing:\n" + "\n".join(problems), pytrace=False)
