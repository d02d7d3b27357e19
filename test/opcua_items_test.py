"""OPC UA subscribe mode: monitored nodes that appear late or vanish (real asyncua server).

A node that does not exist when it is subscribed must be followed once it is added, within a
few seconds and without a new session; a monitored node that is deleted must make only its own
variable BAD, the session and the other items staying up; a status change about the
subscription itself still replaces the session.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from _util import wait_for

from data_collector import CollectedVariables, Quality, Variable
from data_reader.opcua_data_reader import OpcUaDataReader
from data_reader.opcua_simulator import OpcUaSimulator

INTERVAL_MS = 200


@pytest.fixture(scope="module")
def sim() -> Iterator[OpcUaSimulator]:
    with OpcUaSimulator() as simulator:
        yield simulator


def read(reader: OpcUaDataReader, variables: list[Variable]) -> dict[int, tuple[object, Quality, str | None]]:
    batch = CollectedVariables.of(variables)
    reader.read(batch)
    return {item.variable.id: (item.value, item.quality, item.error) for item in batch}


def subscribed(sim: OpcUaSimulator, variables: list[Variable], **options: object) -> OpcUaDataReader:
    options.setdefault("timeout_s", 3.0)
    reader = OpcUaDataReader(sim.endpoint, mode="subscribe", **options)  # type: ignore[arg-type]
    reader.open()
    reader.variables_changed({v: INTERVAL_MS for v in variables})
    return reader


def read_until(
    reader: OpcUaDataReader,
    variables: list[Variable],
    done: dict[int, object],
    steady: list[int],
    timeout_s: float,
) -> float:
    """Read every 50 ms until each id of ``done`` reads that (value, quality, error) or matches it
    (a callable); every read, the ``steady`` ids must be GOOD. Returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout_s
    while True:
        got = read(reader, variables)
        for vid in steady:
            assert got[vid][1] is Quality.GOOD, (vid, got[vid])
        if all(want(got[vid]) if callable(want) else got[vid] == want for vid, want in done.items()):
            return time.monotonic() - start
        assert time.monotonic() < deadline, f"not reached within {timeout_s} s: {got}"
        time.sleep(0.05)


def gone(value: tuple[object, Quality, str | None]) -> bool:
    return value[1] is Quality.BAD and "BadNodeIdUnknown" in (value[2] or "")


def test_a_node_added_later_is_followed_within_seconds_without_a_reconnect(sim: OpcUaSimulator) -> None:
    later = Variable(1, f"ns={sim.namespace_index};s=Later.Value", "float", "opcua")
    live = Variable(2, sim.address("Sim.Counter"), "int", "opcua")
    reader = subscribed(sim, [later, live])
    try:
        # BAD with the status name, the other variable GOOD, for 2 s (while the item is retried
        # on its own backoff: 0.5 s, 1 s, 2 s...)
        observed = time.monotonic()
        while time.monotonic() - observed < 2.0:
            got = read(reader, [later, live])
            assert gone(got[1]), got[1]
            assert got[2][1] is Quality.GOOD, got[2]
            time.sleep(0.1)
        sim.add_variable("Later.Value", 4.5)
        took = read_until(reader, [later, live], {1: (4.5, Quality.GOOD, None)}, steady=[2], timeout_s=8)
        assert took < 5.0, took
        sim.set_value("Later.Value", 5.5)  # followed by the subscription, not read once
        read_until(reader, [later, live], {1: (5.5, Quality.GOOD, None)}, steady=[2], timeout_s=3)
        stats = reader.opcua_stats()
        assert stats["item_retries"] >= 2
        assert (stats["reconnects"], stats["failed_items"], stats["monitored_items"]) == (0, 0, 2)
    finally:
        reader.close()


def test_an_announcement_retries_failed_items_at_once(sim: OpcUaSimulator) -> None:
    later = Variable(1, f"ns={sim.namespace_index};s=Announced.Value", "float", "opcua")
    live = Variable(2, sim.address("Static.Int32"), "int", "opcua")
    # timeout_s: how long variables_changed waits for the server (long: a loaded machine)
    reader = subscribed(sim, [later, live], timeout_s=10.0)
    try:
        assert gone(read(reader, [later])[1])
        # after retries 0.5, 1 and 2 s apart the next one is 4 s away ("item_retries": a
        # reader that never retries fails here)
        wait_for(lambda: reader.opcua_stats().get("item_retries", 0) >= 3, 10, "three retries of the item")
        sim.add_variable("Announced.Value", 1.25)
        reader.variables_changed({later: INTERVAL_MS, live: INTERVAL_MS})  # e.g. a context started
        # the announcement created the item before it returned: its value arrives with the server's
        # first notification, well before the item's own next retry (4 s away)
        took = read_until(reader, [later, live], {1: (1.25, Quality.GOOD, None)}, steady=[2], timeout_s=2.5)
        assert took < 2.5
        assert reader.opcua_stats()["reconnects"] == 0
    finally:
        reader.close()


@pytest.mark.parametrize("notify", ["status_change", "data_change"])
def test_a_deleted_node_makes_only_its_variable_bad_and_comes_back(sim: OpcUaSimulator, notify: str) -> None:
    name = f"Doomed.{notify}"
    sim.add_variable(name, 1.5)
    variables = [
        Variable(1, sim.address(name), "float", "opcua"),
        Variable(2, sim.address("Static.Double"), "float", "opcua"),
        Variable(3, sim.address("Sim.Counter"), "int", "opcua"),
    ]
    reader = subscribed(sim, variables)
    try:
        read_until(reader, variables, {1: (1.5, Quality.GOOD, None)}, steady=[2, 3], timeout_s=5)
        assert reader.opcua_stats()["subscriptions"] == 1  # the three share one subscription
        sim.delete_node(name, notify=notify)
        read_until(reader, variables, {1: gone}, steady=[2, 3], timeout_s=5)
        # the others keep being delivered, on the same session
        counter = read(reader, variables)[3][0]
        read_until(reader, variables, {3: lambda v: v[0] > counter}, steady=[2, 3], timeout_s=3)
        assert gone(read(reader, variables)[1])
        assert reader.opcua_stats()["monitored_items"] == 2
        sim.add_variable(name, 2.5)  # back: followed again, still on the same session
        took = read_until(reader, variables, {1: (2.5, Quality.GOOD, None)}, steady=[2, 3], timeout_s=8)
        assert took < 5.0, took
        stats = reader.opcua_stats()
        assert (stats["reconnects"], stats["items_lost"], stats["monitored_items"]) == (0, 1, 3)
        # a status change about the subscription itself still replaces the session
        sim.send_status_change("BadTimeout")
        wait_for(lambda: reader.opcua_stats()["reconnects"] == 1, 10, "a reconnect")
        read_until(reader, variables, {1: (2.5, Quality.GOOD, None)}, steady=[], timeout_s=10)
    finally:
        reader.close()
