"""A real server restart: variables go BAD with the reason, then GOOD again by themselves.

The simulator runs as a child process so it can really be killed; it comes back on the same port
with its namespaces registered in the other order, so every namespace index moves. The monitored
items are checked on the server itself with an in-process simulator, stopped and started again.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import pytest
from _cases.opcua_cases import (
    AUX_URI,
    SIM_URI,
    SimulatorProcess,
    record_sampling_intervals,
    server_items,
    server_subscriptions,
)
from _util import LOG, RecordingWriter, wait_for

from data_collector import CollectedVariables, DataCollectionContext, DataCollector, Quality, Variable
from data_reader.opcua_data_reader import OpcUaDataReader
from data_reader.opcua_simulator import OpcUaSimulator

READERS = {1: "ua-poll", 2: "ua-sub"}  # context id -> reader type


def _variables(context_id: int) -> list[Variable]:
    rt = READERS[context_id]
    base = 10 * context_id
    return [
        Variable(base + 1, f"nsu={SIM_URI};s=Sim.Counter", "int", rt, interval_ms=100),
        Variable(base + 2, f"nsu={AUX_URI};s=Aux.Counter", "int", rt, interval_ms=100),
        Variable(base + 3, f"nsu={SIM_URI};s=Static.String", "str", rt, interval_ms=200),
    ]


def test_server_restart_with_moved_namespaces_recovers_in_both_modes() -> None:
    first = SimulatorProcess()
    second: SimulatorProcess | None = None
    try:
        assert "urn:data-collector:simulator = ns=2" in first.banner
        options = {"timeout_s": 2.0, "watchdog_interval_s": 0.5, "reconnect_max_delay_s": 1.0}
        poll = OpcUaDataReader(first.endpoint, reader_type="ua-poll", mode="poll", **options)  # type: ignore[arg-type]
        sub = OpcUaDataReader(first.endpoint, reader_type="ua-sub", mode="subscribe", **options)  # type: ignore[arg-type]
        writer = RecordingWriter()
        with DataCollector(LOG, [poll, sub], [writer]) as collector:
            for context_id in READERS:
                collector.start(DataCollectionContext(context_id, _variables(context_id)))

            def rows_since(since: datetime, quality: Quality) -> dict[int, list[object]]:
                found: dict[int, list[object]] = {}
                for row in list(writer.rows):
                    if row.read_at > since and row.quality is quality:
                        found.setdefault(row.variable_id, []).append(row)
                return found

            everything = {v.id for c in READERS for v in _variables(c)}
            start = datetime.now(UTC)
            wait_for(lambda: set(rows_since(start, Quality.GOOD)) == everything, 20, "GOOD values first")

            first.kill()
            killed = datetime.now(UTC)
            wait_for(
                lambda: set(rows_since(killed, Quality.BAD)) == everything, 20, "BAD values once stopped"
            )
            for row in [r for rows in rows_since(killed, Quality.BAD).values() for r in rows]:
                assert row.value is None  # type: ignore[attr-defined]
                assert "connect" in row.error  # type: ignore[attr-defined]  # the reason is told
            assert not poll.connected and not sub.connected

            second = SimulatorProcess(first.port, reverse_namespaces=True)
            assert "urn:data-collector:simulator = ns=3" in second.banner  # every index moved
            restarted = datetime.now(UTC)
            wait_for(lambda: set(rows_since(restarted, Quality.GOOD)) == everything, 30, "GOOD values again")
            # a few more ticks, then compare values read at the same tick
            again = datetime.now(UTC)
            wait_for(lambda: len(rows_since(again, Quality.GOOD).get(11, [])) >= 3, 10, "three more ticks")
            stats = {rt: r.opcua_stats() for rt, r in (("poll", poll), ("sub", sub))}
        for s in stats.values():
            assert s["reconnects"] >= 1
            assert s["namespaces"].index(SIM_URI) == 3 and s["namespaces"].index(AUX_URI) == 2
        assert (stats["sub"]["monitored_items"], stats["sub"]["sampling_intervals_ms"]) == (3, [100, 200])
        after = [r for r in writer.rows if r.read_at > again and r.quality is Quality.GOOD]
        for context_id in READERS:
            base = 10 * context_id
            by_tick: dict[datetime, dict[int, object]] = {}
            for row in after:
                if row.context_id == context_id:
                    by_tick.setdefault(row.read_at, {})[row.variable_id] = row.value
            assert {row.value for row in after if row.variable_id == base + 3} == {"hello"}
            pairs = [(t[base + 1], t[base + 2]) for t in by_tick.values() if base + 1 in t and base + 2 in t]
            assert pairs
            # Sim.Counter and Aux.Counter are written with the same number: the two namespace URIs
            # were resolved to their new indexes (the old ones would name the other namespace)
            assert sum(a == b for a, b in pairs) >= len(pairs) // 2, pairs
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_monitored_items_come_back_after_a_restart_with_the_same_intervals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record_sampling_intervals(monkeypatch)
    sim = OpcUaSimulator()
    sim.start()
    try:
        reader = OpcUaDataReader(
            sim.endpoint, mode="subscribe", timeout_s=2.0, watchdog_interval_s=0.5, reconnect_max_delay_s=1.0
        )
        counter = sim.address("Sim.Counter", by_uri=True)
        first = [
            Variable(1, counter, "int", "opcua", interval_ms=300),
            Variable(2, sim.address("Sim.Sine", by_uri=True), "float", "opcua"),  # default 400 ms
        ]
        second = [Variable(1, counter, "int", "opcua", interval_ms=200)]
        third = [Variable(3, sim.address("Static.Bool", by_uri=True), "bool", "opcua", interval_ms=500)]
        expected = [("Sim.Counter", 100), ("Sim.Sine", 400)]  # 100 = GCD(300, 200)
        writer = RecordingWriter()
        with DataCollector(LOG, [reader], [writer]) as collector:
            collector.start(DataCollectionContext(1, first, default_interval_ms=400))
            collector.start(DataCollectionContext(2, second))
            collector.start(DataCollectionContext(3, third))
            assert server_items(sim) == [*expected, ("Static.Bool", 500)]
            sim.stop()
            wait_for(lambda: not reader.connected, 10, "the session declared lost")
            began = time.monotonic()
            collector.stop(3)  # announced while the server is away: no error, no wait
            assert time.monotonic() - began < 1.5
            sim.start()  # the same port, a brand-new server: it knows no subscription
            wait_for(lambda: server_items(sim) == expected, 20, "the monitored items on the new server")
            assert server_subscriptions(sim) == 2
            restarted = datetime.now(UTC)

            def good_since_restart() -> set[int]:
                return {
                    r.variable_id for r in writer.rows if r.read_at > restarted and r.quality is Quality.GOOD
                }

            wait_for(lambda: good_since_restart() == {1, 2}, 20, "GOOD values again")
            assert reader.opcua_stats()["reconnects"] >= 1
            collector.stop(1)  # the announcements still work on the new session
            assert server_items(sim) == [("Sim.Counter", 200)]
        assert (server_items(sim), server_subscriptions(sim)) == ([], 0)
    finally:
        sim.stop()


def test_a_hung_server_is_detected_by_the_keepalive_and_recovered() -> None:
    server = SimulatorProcess()
    try:
        options = {"timeout_s": 1.0, "watchdog_interval_s": 0.5, "reconnect_max_delay_s": 1.0}
        readers = [
            OpcUaDataReader(server.endpoint, reader_type=rt, mode=mode, **options)  # type: ignore[arg-type]
            for rt, mode in (("ua-poll", "poll"), ("ua-sub", "subscribe"))
        ]
        variables = {
            rt: Variable(i, f"nsu={SIM_URI};s=Sim.Counter", "int", rt, 100)
            for i, rt in ((1, "ua-poll"), (2, "ua-sub"))
        }
        for reader in readers:
            reader.open()

        def read(reader: OpcUaDataReader) -> tuple[object, Quality, str | None, float]:
            batch = CollectedVariables.of([variables[reader.reader_type]])
            started = time.monotonic()
            reader.read(batch)
            return batch[0].value, batch[0].quality, batch[0].error, time.monotonic() - started

        try:
            assert all(read(r)[1] is Quality.GOOD for r in readers)
            server.process.send_signal(signal.SIGSTOP)  # the socket stays open: only the keep-alive can tell
            durations: list[float] = []

            def all_bad() -> bool:
                results = [read(r) for r in readers]
                durations.extend(res[3] for res in results)
                return all(res[1] is Quality.BAD for res in results)

            wait_for(all_bad, 15, "BAD values from the hung server")
            assert max(durations) < 3.0  # a read never waits much past its timeout
            wait_for(lambda: not any(r.connected for r in readers), 10, "the session declared lost")
            _, _, error, _ = read(readers[1])
            assert error is not None and ("keep-alive" in error or "timeout" in error), error
            server.process.send_signal(signal.SIGCONT)
            wait_for(lambda: all(read(r)[1] is Quality.GOOD for r in readers), 20, "GOOD values again")
            assert all(r.opcua_stats()["reconnects"] >= 1 for r in readers)
        finally:
            for reader in readers:
                reader.close()
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.kill()
