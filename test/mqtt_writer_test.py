"""The MQTT writer against the real Mosquitto, read back by a real paho-mqtt subscriber.

JSON per sample and per batch, and Sparkplug B decoded with the protobuf schema: exactly the
samples read arrive, in order per variable; Sparkplug sequence numbers wrap at 255, births come
again after a reconnect and on an NCMD rebirth request, the broker delivers NDEATH when a
collector process is killed (kill -9); a broker outage through the fault proxy loses nothing with
a spool (at least once: the message ids de-duplicate to exactly the produced set); bad options
are ConfigurationError; the password shows nowhere. Broker from ``DC_TEST_MQTT_URL``; skipped
when unreachable unless ``DC_REQUIRE_SERVICES=1``. Every test uses its own topic prefix.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _cases.mqtt_cases import (
    SparkplugView,
    Subscriber,
    json_samples,
    json_stored,
    require_broker,
    unique_prefix,
)
from _faultproxy import FaultProxy
from _util import LOG, CountingReader, RecordingWriter, Row, wait_for

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    Quality,
    Variable,
    loads_config,
    writer_class,
)

ROOT = Path(__file__).resolve().parent.parent
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture
def broker() -> tuple[str, int]:
    return require_broker()


@pytest.fixture
def proxy(broker: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(*broker) as p:
        yield p


def _writer(host: str, port: int, **kw: Any) -> Any:
    from data_writer.mqtt import MqttDataWriter

    return MqttDataWriter(host, port, **kw)


def _ms_key(context_id: int, variable_id: int, read_at: datetime) -> tuple[int, int, int]:
    return (context_id, variable_id, (read_at - _EPOCH) // timedelta(milliseconds=1))


def _assert_same_samples(stored: list[Any], produced: list[Row]) -> None:
    """``stored`` holds every produced sample exactly once, with its value, quality and error."""
    assert len(stored) == len(produced), (len(stored), len(produced))
    by_key = {_ms_key(r.context_id, r.variable_id, r.read_at): r for r in produced}
    assert len(by_key) == len(produced)
    for s in stored:
        r = by_key[_ms_key(s.context_id, s.variable_id, s.read_at)]
        assert (s.value, s.quality, s.error) == (r.value, r.quality, r.error), (s, r)


def _assert_in_order_per_variable(stored: list[Any]) -> None:
    last: dict[tuple[int, int], datetime] = {}
    for s in stored:
        key = (s.context_id, s.variable_id)
        assert key not in last or s.read_at > last[key], f"variable {key} out of order at {s.read_at}"
        last[key] = s.read_at


def _variables() -> list[Variable]:
    return [
        Variable(1, "counter", "int", "random", 100),
        Variable(2, "sine", "float", "random", 100),
        Variable(3, "random", "bool", "random", 200),
        Variable(4, "constant:ready", "str", "random", 300),
    ]


# -- JSON ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("message", ["sample", "batch"])
def test_json_subscriber_receives_exactly_the_samples_read_in_order(
    broker: tuple[str, int], message: str
) -> None:
    from data_writer.mqtt import message_id

    prefix = unique_prefix()
    sub = Subscriber([f"{prefix}/#"])
    try:
        topic = f"{prefix}/{{context_id}}" + ("/{variable_id}" if message == "sample" else "")
        writer = _writer(*broker, topic=topic, message=message, context_topic=f"{prefix}/{{context_id}}/ctx")
        produced = RecordingWriter()
        with DataCollector(LOG, [CountingReader()], [writer, produced]) as c:
            c.start(DataCollectionContext(5, _variables(), metadata={"line": "L3"}))
            wait_for(lambda: len(produced.of(5)) >= 40, 20, "samples")
            c.stop(5)
        received = sub.flush()
        docs = json_samples(received)
        stored = [json_stored(d) for d in docs]
        _assert_same_samples(stored, produced.of(5))
        _assert_in_order_per_variable(stored)
        ids = [message_id(5, d["variable_id"], json_stored(d).read_at) for d in docs]
        assert [d["id"] for d in docs] == ids
        assert {d["collector"] for d in docs} == {writer.client_id}
        if message == "sample":
            assert {m.topic for m in received if not m.topic.endswith("/ctx")} == {
                f"{prefix}/5/{v.id}" for v in _variables()
            }
        else:
            data = [m for m in received if m.topic == f"{prefix}/5"]
            assert 0 < len(data) < len(docs)  # batches, not one message per sample
        events = [m for m in received if m.topic == f"{prefix}/5/ctx"]
        assert [e.retain for e in events] == [False, False]  # live subscriber: not from the store
        import json

        started, stopped = (json.loads(e.payload) for e in events)
        assert (started["event"], stopped["event"]) == ("started", "stopped")
        assert stopped["metadata"] == {"line": "L3"} and stopped["end"] is not None
        assert [v["id"] for v in stopped["variables"]] == [1, 2, 3, 4]
        late = Subscriber([f"{prefix}/5/ctx"])  # the context topic is retained: a late subscriber gets it
        try:
            got = late.wait(lambda ms: len(ms) >= 1, 10, "the retained context event")
            assert got[0].retain and json.loads(got[0].payload)["event"] == "stopped"
        finally:
            late.close()
    finally:
        sub.clear_retained()
        sub.close()


def _batch(variables: list[Variable], t: datetime, values: list[Any]) -> CollectedVariables:
    batch = CollectedVariables.of(variables, t)
    for item, value in zip(batch, values, strict=True):
        if value is None:
            item.set_bad("device timeout")
        else:
            item.value = value
    return batch


def test_json_values_of_every_kind(broker: tuple[str, int]) -> None:
    import json

    prefix = unique_prefix()
    sub = Subscriber([f"{prefix}/#"])
    try:
        writer = _writer(*broker, topic=f"{prefix}/{{address}}", context_topic="")
        vs = [
            Variable(1, "a+b#c", "float", "r"),
            Variable(2, "i", "int", "r"),
            Variable(3, "b", "bool", "r"),
            Variable(4, "s", "str", "r"),
            Variable(5, "x", "bytes", "r"),
            Variable(6, "n", "float", "r"),
            Variable(7, "bad", "int", "r"),
        ]
        ctx = DataCollectionContext(9, vs)
        t = datetime(2026, 11, 22, 8, 15, 0, 100_000, tzinfo=UTC)
        values = [float("inf"), -(2**63), True, 'Grüße "q"\n\udc80', b"\x00\xff", float("nan"), None]
        writer.open()
        try:
            with writer.lock:
                writer.context_started(ctx)
                writer.write(ctx, _batch(vs, t, values))
        finally:
            writer.close()
        docs = {d["variable_id"]: d for d in json_samples(sub.flush())}
        assert docs[1]["value"] == "Infinity" and docs[6]["value"] == "NaN"
        assert docs[2]["value"] == -(2**63) and docs[3]["value"] is True
        assert docs[4]["value"] == values[3]  # a lone surrogate: a \\u escape, decoded back as it was
        assert docs[5]["value"] == "00ff"
        assert (docs[7]["value"], docs[7]["quality"], docs[7]["error"]) == (None, "BAD", "device timeout")
        assert docs[1]["read_at"] == "2026-11-22T08:15:00.100000+00:00"
        assert docs[1]["id"] == f"9:1:{(t - _EPOCH) // timedelta(microseconds=1)}"
        topics = {m.topic for m in sub.flush()}
        assert f"{prefix}/a_b_c" in topics  # wildcards of a field value replaced in the topic
        json.loads(sub.flush()[0].payload)
    finally:
        sub.close()


@pytest.mark.parametrize("qos", [0, 2])
def test_qos_0_and_2(broker: tuple[str, int], qos: int) -> None:
    prefix = unique_prefix()
    sub = Subscriber([f"{prefix}/#"])
    try:
        writer = _writer(*broker, topic=f"{prefix}/{{variable_id}}", context_topic="", qos=qos)
        vs = [Variable(i, "counter", "int", "r") for i in range(1, 6)]
        ctx = DataCollectionContext(1, vs)
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        writer.open()
        try:
            with writer.lock:
                for n in range(50):
                    writer.write(ctx, _batch(vs, t0 + timedelta(seconds=n), [n] * 5))
        finally:
            writer.close()
        docs = sub.wait(lambda ms: len(ms) >= 250, 20, "250 samples")
        assert len(docs) == 250
        for vid in range(1, 6):
            assert [d["value"] for d in json_samples(docs) if d["variable_id"] == vid] == list(range(50))
    finally:
        sub.close()


def test_retained_last_value(broker: tuple[str, int]) -> None:
    prefix = unique_prefix()
    sub = Subscriber([f"{prefix}/#"])
    try:
        writer = _writer(*broker, topic=f"{prefix}/{{variable_id}}", context_topic="", retain=True)
        vs = [Variable(1, "c", "int", "r"), Variable(2, "d", "int", "r")]
        ctx = DataCollectionContext(1, vs)
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        writer.open()
        try:
            with writer.lock:
                for n in range(5):
                    writer.write(ctx, _batch(vs, t0 + timedelta(seconds=n), [n, 10 + n]))
        finally:
            writer.close()
        sub.flush()
        late = Subscriber([f"{prefix}/#"])
        try:
            got = late.wait(lambda ms: len(ms) >= 2, 10, "the retained values")
            assert sorted((m.topic, json_samples([m])[0]["value"]) for m in got) == [
                (f"{prefix}/1", 4),
                (f"{prefix}/2", 14),
            ]
            assert all(m.retain for m in got)
        finally:
            late.close()
    finally:
        sub.clear_retained()
        sub.close()


# -- Sparkplug B ---------------------------------------------------------------------------------------
def _spb(host: str, port: int, group: str, **kw: Any) -> Any:
    return _writer(host, port, payload="sparkplug_b", group_id=group, edge_node_id="node-1", **kw)


def test_sparkplug_births_data_by_alias_and_exact_samples(broker: tuple[str, int]) -> None:
    from data_writer.mqtt.sparkplug import DataType, value_of

    group = unique_prefix()
    sub = Subscriber([f"spBv1.0/{group}/#"])
    view = SparkplugView(group)
    try:
        produced = RecordingWriter()
        writer = _spb(*broker, group)
        with DataCollector(LOG, [CountingReader()], [writer, produced]) as c:
            c.start(DataCollectionContext(3, _variables()))
            wait_for(lambda: len(produced.of(3)) >= 40, 20, "samples")
            c.stop(3)
        received = sub.flush()
        msgs = view.decode(received)
        kinds = [k for k, _r, _p in msgs]
        assert kinds[0] == "NBIRTH" and kinds[1] == "DBIRTH" and kinds[-2:] == ["DDEATH", "NDEATH"]
        assert set(kinds[2:-2]) == {"DDATA"}
        nbirth = msgs[0][2]
        assert nbirth.seq == 0
        node = {m.name: m for m in nbirth.metrics}
        assert value_of(node["bdSeq"]) == 0 and node["bdSeq"].datatype == DataType.Int64
        assert node["Node Control/Rebirth"].datatype == DataType.Boolean
        assert msgs[-1][2].metrics[0].name == "bdSeq" and value_of(msgs[-1][2].metrics[0]) == 0
        dbirth = msgs[1]
        assert dbirth[1] == ["node-1", "context-3"]
        born = {m.name: m for m in dbirth[2].metrics}
        assert {n: (DataType(m.datatype).name) for n, m in born.items()} == {
            "random/counter": "Int64",
            "random/sine": "Double",
            "random/random": "Boolean",
            "random/constant:ready": "String",
        }
        assert len({m.alias for m in born.values()}) == 4 and all(m.is_null for m in born.values())
        for _k, _r, payload in msgs[2:-2]:
            assert all(m.alias and not m.name and not m.datatype for m in payload.metrics)
        assert [p.seq for _k, _r, p in msgs[:-1]] == [i % 256 for i in range(len(msgs) - 1)]
        stored = [s for s, _m in view.samples(received)]
        _assert_same_samples(stored, produced.of(3))
        _assert_in_order_per_variable(stored)
    finally:
        sub.close()


def test_sparkplug_quality_error_and_bad_values(broker: tuple[str, int]) -> None:
    group = unique_prefix()
    sub = Subscriber([f"spBv1.0/{group}/#"])
    view = SparkplugView(group)
    try:
        writer = _spb(*broker, group)
        vs = [Variable(1, "i", "int", "r"), Variable(2, "f", "float", "r"), Variable(3, "s", "int", "r")]
        ctx = DataCollectionContext(4, vs)
        t = datetime(2026, 3, 1, tzinfo=UTC)
        batch = _batch(vs, t, [2**70, 1.5, None])
        batch[1].quality = Quality.UNCERTAIN
        writer.open()
        try:
            with writer.lock:
                writer.context_started(ctx)
                writer.write(ctx, batch)
        finally:
            writer.close()
        got = {s.variable_id: s for s, _m in view.samples(sub.flush())}
        assert got[1].value is None and got[1].quality is Quality.BAD
        assert "does not fit" in (got[1].error or "")
        assert got[2].value == 1.5 and got[2].quality is Quality.UNCERTAIN and got[2].error is None
        assert got[3].value is None and got[3].quality is Quality.BAD and got[3].error == "device timeout"
    finally:
        sub.close()


def test_sparkplug_seq_wraps_at_255(broker: tuple[str, int]) -> None:
    group = unique_prefix()
    sub = Subscriber([f"spBv1.0/{group}/#"])
    view = SparkplugView(group)
    try:
        writer = _spb(*broker, group)
        vs = [Variable(1, "c", "int", "r")]
        ctx = DataCollectionContext(1, vs)
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        writer.open()
        try:
            with writer.lock:
                writer.context_started(ctx)
                for n in range(300):
                    writer.write(ctx, _batch(vs, t0 + timedelta(seconds=n), [n]))
        finally:
            writer.close()
        msgs = view.decode(sub.wait(lambda ms: len(ms) >= 303, 20, "births, 300 DDATA and NDEATH"))
        assert [k for k, _r, _p in msgs].count("DDATA") == 300
        seqs = [p.seq for k, _r, p in msgs if k != "NDEATH"]
        assert seqs == [i % 256 for i in range(302)]
        assert seqs[255:258] == [255, 0, 1]
        assert [s.value for s, _m in view.samples(sub.flush())] == list(range(300))
    finally:
        sub.close()


def test_sparkplug_rebirth_after_reconnect_and_on_ncmd(broker: tuple[str, int], proxy: FaultProxy) -> None:
    from data_writer.mqtt.sparkplug import DataType, Payload, value_of

    group = unique_prefix()
    sub = Subscriber([f"spBv1.0/{group}/#"])
    view = SparkplugView(group)
    try:
        writer = _spb("127.0.0.1", proxy.port, group, reconnect_max_s=1.0)
        vs = [Variable(1, "c", "int", "r"), Variable(2, "f", "float", "r")]
        ctx = DataCollectionContext(1, vs)
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        writer.open()
        try:
            with writer.lock:
                writer.context_started(ctx)
                writer.write(ctx, _batch(vs, t0, [1, 0.5]))
            sub.wait(lambda ms: len(ms) >= 3, 10, "NBIRTH, DBIRTH, DDATA")
            proxy.reset_all()  # the broker sees the connection die: it publishes the will
            wait_for(lambda: writer.connections == 2, 15, "the writer to reconnect")
            msgs = view.decode(sub.wait(lambda ms: len(ms) >= 6, 10, "NDEATH and the new births"))
            kinds = [k for k, _r, _p in msgs]
            assert sorted(kinds[3:6]) == ["DBIRTH", "NBIRTH", "NDEATH"]
            ndeath = next(p for k, _r, p in msgs if k == "NDEATH")
            births = [p for k, _r, p in msgs if k == "NBIRTH"]
            bd = [value_of(next(m for m in b.metrics if m.name == "bdSeq")) for b in births]
            assert value_of(ndeath.metrics[0]) == bd[0] == 0 and bd[1] == 1 == writer.bd_seq
            assert births[1].seq == 0
            dbirths = [p for k, _r, p in msgs if k == "DBIRTH"]
            assert dbirths[1].seq == 1
            last = {m.name: value_of(m) for m in dbirths[1].metrics}
            assert last == {"r/c": 1, "r/f": 0.5}  # the rebirth carries the last values
            with writer.lock:
                writer.write(ctx, _batch(vs, t0 + timedelta(seconds=1), [2, 1.5]))
            # a host asks for a rebirth: NCMD Node Control/Rebirth = true
            cmd = Payload()
            cmd.timestamp = int(time.time() * 1000)
            m = cmd.metrics.add()
            m.name = "Node Control/Rebirth"
            m.datatype = DataType.Boolean
            m.boolean_value = True
            sub.publish(f"spBv1.0/{group}/NCMD/node-1", cmd.SerializeToString())
            msgs = view.decode(
                sub.wait(lambda ms: [m.topic.split("/")[2] for m in ms].count("DBIRTH") >= 3, 10, "rebirth")
            )
            kinds = [k for k, _r, _p in msgs]
            assert kinds[-2:] == ["NBIRTH", "DBIRTH"]
            nbirth, dbirth = msgs[-2][2], msgs[-1][2]
            assert (nbirth.seq, dbirth.seq) == (0, 1)
            assert value_of(next(m for m in nbirth.metrics if m.name == "bdSeq")) == 1  # same connection
            assert {mm.name: value_of(mm) for mm in dbirth.metrics} == {"r/c": 2, "r/f": 1.5}
        finally:
            writer.close()
        stored = [s.value for s, _m in view.samples(sub.flush()) if s.variable_id == 1]
        assert stored == [1, 2]
    finally:
        sub.close()


_CHILD = """
import logging, sys, time
from data_collector import DataCollectionContext, DataCollector, Variable
from data_reader.random import RandomDataReader
from data_writer.mqtt import MqttDataWriter

host, port, group = sys.argv[1], int(sys.argv[2]), sys.argv[3]
writer = MqttDataWriter(
    host, port, payload="sparkplug_b", group_id=group, edge_node_id="doomed", keepalive_s=5
)
with DataCollector(logging.getLogger("child"), [RandomDataReader()], [writer]) as c:
    c.start(DataCollectionContext(1, [Variable(1, "counter", "int", "random", 100)]))
    time.sleep(120)
"""


def test_sparkplug_ndeath_when_the_collector_process_is_killed(broker: tuple[str, int]) -> None:
    from data_writer.mqtt.sparkplug import value_of

    group = unique_prefix()
    sub = Subscriber([f"spBv1.0/{group}/#"])
    view = SparkplugView(group)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", textwrap.dedent(_CHILD), broker[0], str(broker[1]), group]
    child = subprocess.Popen(args, env=env)
    try:
        sub.wait(lambda ms: sum("/DDATA/" in m.topic for m in ms) >= 3, 30, "the child's births and data")
        assert sum("/NDEATH/" in m.topic for m in sub.flush()) == 0
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        msgs = view.decode(sub.wait(lambda ms: any("/NDEATH/" in m.topic for m in ms), 20, "NDEATH"))
        nbirth = next(p for k, _r, p in msgs if k == "NBIRTH")
        ndeath = next(p for k, _r, p in msgs if k == "NDEATH")
        assert msgs[-1][0] == "NDEATH" and msgs[-1][1] == ["doomed"]
        assert value_of(ndeath.metrics[0]) == value_of(next(m for m in nbirth.metrics if m.name == "bdSeq"))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        sub.close()


# -- outages -------------------------------------------------------------------------------------------
def _drained(c: DataCollector, name: str) -> bool:
    return c.stats().writers[name].queue_depth == 0


@pytest.mark.parametrize("payload", ["json", "sparkplug_b"])
def test_broker_outage_with_spool_loses_nothing(
    broker: tuple[str, int], proxy: FaultProxy, tmp_path: Path, payload: str
) -> None:
    prefix = unique_prefix()
    if payload == "json":
        sub = Subscriber([f"{prefix}/#"])
        writer = _writer(
            "127.0.0.1",
            proxy.port,
            topic=f"{prefix}/{{context_id}}/{{variable_id}}",
            context_topic=f"{prefix}/{{context_id}}/ctx",
            reconnect_max_s=1.0,
            timeout_s=3.0,
        )
    else:
        sub = Subscriber([f"spBv1.0/{prefix}/#"])
        writer = _spb("127.0.0.1", proxy.port, prefix, reconnect_max_s=1.0, timeout_s=3.0)
    try:
        produced = RecordingWriter()
        variables = [Variable(i, "counter", "int", "random", 100) for i in (1, 2, 3)]
        with DataCollector(
            LOG, [CountingReader()], [writer, produced], spool_dir=tmp_path / "spool", write_retry_s=0.5
        ) as c:
            c.start(DataCollectionContext(1, variables))
            wait_for(lambda: c.stats().writers[writer.name].samples_written >= 30, 15, "first samples")
            # the broker goes silent (what the writer sends stays in the proxy), then away: what
            # was sent meanwhile is lost on the wire, and only acknowledgements tell
            proxy.stall()
            down_at = time.monotonic()
            wait_for(lambda: time.monotonic() - down_at >= 2, 3, "two seconds of silence")
            proxy.cut()
            wait_for(lambda: time.monotonic() - down_at >= 12, 12, "twelve seconds of outage")
            s = c.stats().writers[writer.name]
            assert s.queue_depth >= 250 and s.spooled_samples >= 250, s  # ~12 s x 30 samples/s waiting
            assert not writer.connected
            proxy.restore()
            wait_for(lambda: _drained(c, writer.name), 60, "the backlog published after the outage")
            c.stop(1)
            s = c.stats().writers[writer.name]
        assert s.lost_samples == s.dropped_samples == s.unwritten_samples == 0 and s.write_errors >= 1
        assert writer.connections >= 2
        received = sub.flush()
        if payload == "json":
            docs = json_samples(received)
            first: dict[str, Any] = {}
            for d in docs:
                first.setdefault(d["id"], d)
            stored = [json_stored(d) for d in first.values()]
        else:
            view = SparkplugView(prefix)
            pairs = view.samples(received)
            seen: dict[tuple[int, int, int], Any] = {}
            for smp, _m in pairs:
                seen.setdefault(_ms_key(smp.context_id, smp.variable_id, smp.read_at), smp)
            stored = list(seen.values())
            assert any(m.is_historical for _s, m in pairs)  # read during the outage, sent after
            bdseqs = [p for k, _r, p in view.decode(received) if k == "NBIRTH"]
            assert len(bdseqs) >= 2
        _assert_same_samples(stored, produced.of(1))  # de-duplicated: exactly the produced set
        _assert_in_order_per_variable(stored)
    finally:
        sub.clear_retained()
        sub.close()


def test_a_stall_longer_than_timeout_s_replaces_the_connection(
    broker: tuple[str, int], proxy: FaultProxy, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    sub = Subscriber([f"{prefix}/#"])
    writer = _writer(
        "127.0.0.1",
        proxy.port,
        topic=f"{prefix}/{{variable_id}}",
        context_topic="",
        timeout_s=1.0,
        reconnect_max_s=1.0,
    )
    try:
        produced = RecordingWriter()
        with DataCollector(
            LOG, [CountingReader()], [writer, produced], spool_dir=tmp_path / "spool", write_retry_s=0.5
        ) as c:
            c.start(DataCollectionContext(1, [Variable(1, "counter", "int", "random", 100)]))
            wait_for(lambda: c.stats().writers[writer.name].samples_written >= 5, 15, "first samples")
            proxy.stall(4.0)
            stalled_at = time.monotonic()
            wait_for(lambda: time.monotonic() - stalled_at >= 4.5, 6, "the stall to pass")
            wait_for(lambda: _drained(c, writer.name), 30, "the backlog published after the stall")
            c.stop(1)
            s = c.stats().writers[writer.name]
        assert s.lost_samples == s.dropped_samples == 0 and s.write_errors >= 1
        assert writer.connections >= 2
        first: dict[str, Any] = {}
        for d in json_samples(sub.flush()):
            first.setdefault(d["id"], d)
        _assert_same_samples([json_stored(d) for d in first.values()], produced.of(1))
    finally:
        sub.close()


def test_broker_down_at_start_then_up_with_spool(
    broker: tuple[str, int], proxy: FaultProxy, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    sub = Subscriber([f"{prefix}/#"])
    writer = _writer(
        "127.0.0.1", proxy.port, topic=f"{prefix}/{{variable_id}}", context_topic="", reconnect_max_s=1.0
    )
    try:
        produced = RecordingWriter()
        proxy.cut()
        with DataCollector(
            LOG, [CountingReader()], [writer, produced], spool_dir=tmp_path / "spool", write_retry_s=0.5
        ) as c:
            c.start(DataCollectionContext(1, [Variable(1, "counter", "int", "random", 100)]))
            wait_for(lambda: len(produced.of(1)) >= 20, 10, "samples read while the broker is down")
            proxy.restore()
            wait_for(lambda: c.stats().writers[writer.name].samples_written >= 20, 30, "the spooled samples")
            c.stop(1)
        _assert_same_samples([json_stored(d) for d in json_samples(sub.flush())], produced.of(1))
    finally:
        sub.close()


def test_open_without_a_broker_is_a_transient_error(proxy: FaultProxy) -> None:
    from data_writer.mqtt import MqttWriteError

    proxy.cut()
    writer = _writer("127.0.0.1", proxy.port, connect_timeout_s=2.0)
    with pytest.raises(MqttWriteError, match=f"127.0.0.1:{proxy.port}") as info:
        writer.open()
    assert writer.is_transient(info.value)
    with pytest.raises(MqttWriteError, match="not open"):
        writer.write(DataCollectionContext(1, [Variable(1, "c", "int", "r")]), CollectedVariables())


# -- options ---------------------------------------------------------------------------------------------
BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"port": 0}, "port"),
    ({"port": 70000}, "70000"),
    ({"port": "1883"}, "'1883'"),
    ({"port": True}, "port"),
    ({"qos": 3}, "qos must be 0, 1 or 2, got 3"),
    ({"qos": "1"}, "'1'"),
    ({"payload": "xml"}, "'xml'"),
    ({"message": "row"}, "'row'"),
    ({"topic": "plant/{context_id}/{name}"}, "{name}"),
    ({"topic": "plant/+/{variable_id}"}, "wildcard"),
    ({"topic": "plant/#"}, "wildcard"),
    ({"topic": "$SYS/{context_id}"}, "$SYS"),
    ({"topic": ""}, "topic"),
    ({"topic": "plant/{context_id"}, "plant/{context_id"),
    ({"topic": "plant/{variable_id}", "message": "batch"}, "{variable_id}"),
    ({"context_topic": "ctx/{variable_id}"}, "{variable_id}"),
    ({"keepalive_s": -1}, "keepalive_s"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"timeout_s": float("nan")}, "nan"),
    ({"max_inflight": 0}, "max_inflight"),
    ({"host": ""}, "host"),
    ({"host": "a b"}, "'a b'"),
    ({"password": "pw"}, "password needs username"),
    ({"clean_session": False}, "client_id"),
    ({"key_file": __file__}, "cert_file"),
    ({"ca_file": "/no/such/ca.pem"}, "/no/such/ca.pem"),
    ({"tls_insecure": True}, "tls_insecure"),
    ({"group_id": "g"}, "group_id applies to payload = 'sparkplug_b'"),
    ({"payload": "sparkplug_b", "edge_node_id": "n"}, "group_id"),
    ({"payload": "sparkplug_b", "group_id": "g"}, "edge_node_id"),
    ({"payload": "sparkplug_b", "group_id": "a/b", "edge_node_id": "n"}, "'a/b'"),
    ({"payload": "sparkplug_b", "group_id": "g", "edge_node_id": "n+"}, "'n+'"),
    ({"payload": "sparkplug_b", "group_id": "g", "edge_node_id": "n", "topic": "x"}, "topic applies"),
    ({"payload": "sparkplug_b", "group_id": "g", "edge_node_id": "n", "retain": True}, "retain applies"),
    ({"payload": "sparkplug_b", "group_id": "g", "edge_node_id": "n", "device_id": "d/{context_id}"}, "d/"),
    ({"payload": "sparkplug_b", "group_id": "g", "edge_node_id": "n", "metric_name": "{nope}"}, "{nope}"),
]


@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS, ids=[str(o) for o, _n in BAD_OPTIONS])
def test_bad_options_are_configuration_errors(options: dict[str, Any], named: str) -> None:
    pytest.importorskip("paho.mqtt")
    from data_writer.mqtt import MqttDataWriter

    with pytest.raises(ConfigurationError) as info:
        MqttDataWriter(**options)
    assert named in str(info.value)


def test_configuration_file_builds_the_writer_and_reports_bad_keys() -> None:
    pytest.importorskip("paho.mqtt")
    from data_writer.mqtt import MqttDataWriter

    assert writer_class("mqtt") is MqttDataWriter
    base = (
        '[[readers]]\ntype = "random"\n[[contexts]]\nid = 1\n'
        'variables = [{id = 1, address = "sine", value_type = "float"}]\n'
    )
    config = loads_config(
        base + '[[writers]]\ntype = "mqtt"\nport = 1884\ntopic = "p/{context_id}/{variable_id}"\n'
    )
    (writer,) = config.writers
    assert isinstance(writer, MqttDataWriter) and writer.port == 1884
    with pytest.raises(ConfigurationError) as info:
        loads_config(base + '[[writers]]\ntype = "mqtt"\nqos = 5\n')
    assert "writers[0]" in str(info.value) and "qos" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        loads_config(base + '[[writers]]\ntype = "mqtt"\ntopic = "p/{nope}"\n')
    assert "{nope}" in str(info.value)


def test_the_password_is_never_shown(proxy: FaultProxy, caplog: pytest.LogCaptureFixture) -> None:
    from data_writer.mqtt import MqttWriteError

    secret = "s3cr3t-pa55"
    writer = _writer("127.0.0.1", proxy.port, username="plant", password=secret, connect_timeout_s=2.0)
    assert secret not in repr(writer) and secret not in writer.name and "plant" in repr(writer)
    assert secret not in repr(writer._options)
    caplog.set_level(logging.DEBUG)
    writer.open()  # Mosquitto here allows anonymous clients and ignores the credentials
    try:
        proxy.reset_all()
        wait_for(lambda: writer.connections >= 2, 15, "a reconnect")
        proxy.cut()
        with pytest.raises(MqttWriteError) as info:
            ctx = DataCollectionContext(1, [Variable(1, "c", "int", "r")])
            with writer.lock:
                writer.write(ctx, _batch(list(ctx.variables), datetime.now(UTC), [1]))
        assert secret not in str(info.value)
    finally:
        writer.close()
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)
    assert all(secret not in str(r.args) for r in caplog.records)
