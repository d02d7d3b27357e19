"""MQTT writer benchmark: samples/s into Mosquitto, MqttDataWriter against raw paho-mqtt in the same run.

Run: ``python bench/mqtt_bench.py [--url mqtt://127.0.0.1:1883] [--samples 20000] [--rounds 3]``

For QoS 0 and 1, JSON per sample, JSON per batch and Sparkplug B DDATA, ``--samples`` float
samples (batches of 100 variables, read times 100 ms apart, as a reader delivers them) go to the
broker three ways, rounds alternating:

- **ours**: ``MqttDataWriter.write()`` per batch (encoding from ``CollectedVariables`` included),
  each batch waiting until the broker acknowledged every message (QoS 1) or paho handed it to
  the socket (QoS 0) before the next, as the collector's writer thread does;
- **raw**: paho-mqtt 2.x alone, one client with its network thread, the same topics, the same
  in-flight window and the same per-batch wait, encoding each batch the obvious way by hand
  (``json.dumps`` of one dict per sample or of the batch; the Sparkplug ``Payload`` filled metric
  by metric with the same protobuf schema);
- **raw pre-encoded**: the same, publishing the writer's own payload bytes made beforehand: the
  client's floor, no encoding at all.

In both, the first batch after connecting is a warm-up and is not timed: right after the
writer's births and subscription, the broker's first acknowledgement can wait ~40 ms for a
delayed TCP ACK (see below), a one-off that would otherwise dominate the short Sparkplug runs.
The ratio is ours / raw (samples/s); ours / raw pre-encoded is shown beside it. Nobody subscribes
to the topics (unique per run), so the broker's fan-out is not measured. With Mosquitto's default
``set_tcp_nodelay false``, each QoS 1 batch ends with a delayed-ACK stall (~40 ms): small batches
are capped by it, for the raw client as for the writer. Prints a table, then one JSON line.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from data_collector import CollectedVariables, DataCollectionContext, Variable
from data_writer.mqtt import MqttDataWriter
from data_writer.mqtt.sparkplug import DataType, Payload

N_VARS = 100
INFLIGHT = 100  # the writer's default
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Messages = list[tuple[str, bytes]]


def batches(n_samples: int) -> tuple[DataCollectionContext, list[CollectedVariables]]:
    variables = [Variable(i, f"holding:{40001 + i}", "float", "modbus") for i in range(1, N_VARS + 1)]
    context = DataCollectionContext(1, variables)
    t0 = datetime(2026, 11, 22, tzinfo=UTC)
    out = []
    for b in range(max(1, n_samples // N_VARS)):
        batch = CollectedVariables.of(variables, t0 + timedelta(milliseconds=100 * b))
        batch.values[:] = [b * 0.001 + i for i in range(N_VARS)]
        out.append(batch)
    return context, out


def make_writer(host: str, port: int, case: dict[str, Any], prefix: str) -> MqttDataWriter:
    if case["payload"] == "sparkplug_b":
        return MqttDataWriter(
            host, port, payload="sparkplug_b", group_id=prefix, edge_node_id="bench", qos=case["qos"]
        )
    suffix = "/{variable_id}" if case["message"] == "sample" else ""
    return MqttDataWriter(
        host,
        port,
        topic=f"{prefix}/{{context_id}}{suffix}",
        message=case["message"],
        context_topic="",
        qos=case["qos"],
        client_id=f"bench-{prefix}",
    )


def run_ours(
    host: str,
    port: int,
    case: dict[str, Any],
    prefix: str,
    ctx: DataCollectionContext,
    data: list[CollectedVariables],
) -> float:
    writer = make_writer(host, port, case, prefix)
    writer.open()
    try:
        with writer.lock:
            writer.context_started(ctx)
            writer.write(ctx, data[0])  # warm-up, not timed (as for raw)
            start = time.perf_counter()
            for batch in data[1:]:
                writer.write(ctx, batch)
            elapsed = time.perf_counter() - start
    finally:
        writer.close()
    return N_VARS * (len(data) - 1) / elapsed


def pre_encoded(
    host: str,
    port: int,
    case: dict[str, Any],
    prefix: str,
    ctx: DataCollectionContext,
    data: list[CollectedVariables],
) -> list[Messages]:
    """The writer's own (topic, payload) messages of each batch, made beforehand."""
    writer = make_writer(host, port, case, prefix)
    if writer._json is not None:
        return [list(writer._json.messages(ctx.id, batch)) for batch in data]
    spb = writer._spb
    assert spb is not None

    class _Offline:  # what the node needs of a link to make its messages without one
        pub_lock = threading.RLock()
        online = False

    link: Any = _Offline()
    return [
        [(t, p() if callable(p) else p) for t, p, _q, _r in spb.data_messages(link, ctx, batch)]
        for batch in data
    ]


def hand_encoder(
    case: dict[str, Any], prefix: str, ctx: DataCollectionContext
) -> Callable[[CollectedVariables], Messages]:
    """What a hand-written publisher would do: json.dumps of dicts, or a Payload filled by hand."""
    cid, collector = ctx.id, f"bench-{prefix}"
    if case["payload"] == "sparkplug_b":
        topic = f"spBv1.0/{prefix}/DDATA/bench-raw/context-{cid}"
        seq = [0]

        def sparkplug(batch: CollectedVariables) -> Messages:
            payload = Payload()
            for var, value, t in zip(batch.variables, batch.values, batch.read_ats, strict=True):
                assert t is not None
                m = payload.metrics.add()
                m.alias = var.id
                m.timestamp = (t - _EPOCH) // timedelta(milliseconds=1)
                m.datatype = DataType.Double
                m.double_value = value
            payload.timestamp = int(time.time() * 1000)
            payload.seq = seq[0] = (seq[0] + 1) % 256
            return [(topic, payload.SerializeToString())]

        return sparkplug

    def sample(var: Variable, value: Any, t: datetime, quality: Any, error: Any) -> dict[str, Any]:
        return {
            "variable_id": var.id,
            "address": var.address,
            "reader_type": var.reader_type,
            "value_type": var.value_type,
            "id": f"{cid}:{var.id}:{(t - _EPOCH) // timedelta(microseconds=1)}",
            "read_at": t.isoformat(),
            "value": value,
            "quality": quality.value,
            "error": error,
        }

    def rows(batch: CollectedVariables) -> Any:
        return zip(batch.variables, batch.values, batch.read_ats, batch.qualities, batch.errors, strict=True)

    if case["message"] == "sample":

        def per_sample(batch: CollectedVariables) -> Messages:
            return [
                (
                    f"{prefix}/{cid}/{var.id}",
                    json.dumps(
                        {"context_id": cid, "collector": collector, **sample(var, v, t, q, e)},
                        ensure_ascii=False,
                    ).encode(),
                )
                for var, v, t, q, e in rows(batch)
            ]

        return per_sample

    def per_batch(batch: CollectedVariables) -> Messages:
        doc = {"context_id": cid, "collector": collector, "samples": [sample(*r) for r in rows(batch)]}
        return [(f"{prefix}/{cid}", json.dumps(doc, ensure_ascii=False).encode())]

    return per_batch


def run_raw(
    host: str,
    port: int,
    qos: int,
    data: list[CollectedVariables],
    encode: Callable[[CollectedVariables], Messages] | None,
    messages: list[Messages],
) -> float:
    """Samples/s of raw paho: per batch, encode (unless pre-encoded), publish, wait for every
    acknowledgement (QoS 1) or hand-over to the socket (QoS 0); connecting is not timed."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(INFLIGHT)
    cond = threading.Condition()
    acked = [0]

    def on_publish(*_a: Any) -> None:
        with cond:
            acked[0] += 1
            cond.notify_all()

    connected = threading.Event()
    client.on_publish = on_publish
    client.on_connect = lambda *_a: connected.set()
    client.connect(host, port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("raw paho: no CONNACK")
        n = 0
        start = 0.0
        for i, batch in enumerate(data):
            if i == 1:
                start = time.perf_counter()  # the first batch is a warm-up, not timed (as for ours)
            msgs = encode(batch) if encode is not None else messages[i]
            for topic, payload in msgs:
                client.publish(topic, payload, qos=qos)
            n += len(msgs)
            with cond:
                if not cond.wait_for(lambda: acked[0] >= n, 30):  # noqa: B023
                    raise RuntimeError("raw paho: acknowledgements missing")
        elapsed = time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()
    return N_VARS * (len(data) - 1) / elapsed


def measure(
    host: str,
    port: int,
    case: dict[str, Any],
    ctx: DataCollectionContext,
    data: list[CollectedVariables],
    rounds: int,
) -> dict[str, Any]:
    """One case (``payload``, ``message``, ``qos``), ``rounds`` alternating rounds of ours, raw and
    raw pre-encoded: the case with the message count, the medians (samples/s) and the ratios."""
    prefix = f"dcbench-{uuid.uuid4().hex[:10]}"
    messages = pre_encoded(host, port, case, prefix, ctx, data)
    encode = hand_encoder(case, prefix, ctx)
    ours: list[float] = []
    raw: list[float] = []
    floor: list[float] = []
    for _ in range(rounds):
        ours.append(run_ours(host, port, case, prefix, ctx, data))
        raw.append(run_raw(host, port, int(case["qos"]), data, encode, messages))
        floor.append(run_raw(host, port, int(case["qos"]), data, None, messages))
    o, r, f = statistics.median(ours), statistics.median(raw), statistics.median(floor)
    return {
        **case,
        "messages": sum(len(b) for b in messages),
        "ours": round(o),
        "raw": round(r),
        "ratio": round(o / r, 3),
        "raw_pre_encoded": round(f),
        "ratio_pre_encoded": round(o / f, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="run only the cases whose label holds this text")
    args = parser.parse_args()
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    ctx, data = batches(args.samples)
    n_samples = N_VARS * len(data)
    cases = [
        {"label": label, "payload": payload, "message": message, "qos": qos}
        for label, payload, message in (
            ("json per sample", "json", "sample"),
            ("json per batch", "json", "batch"),
            ("sparkplug DDATA", "sparkplug_b", "batch"),
        )
        for qos in (0, 1)
        if args.only in label
    ]
    print(
        f"{n_samples:,} float samples in batches of {N_VARS}, median of {args.rounds} rounds, {host}:{port}"
    )
    print(
        f"{'case':<16} {'qos':>3} {'messages':>8} {'ours/s':>10} {'raw/s':>10} {'ratio':>6}"
        f" {'raw pre-enc/s':>14} {'ratio':>6}"
    )
    results = []
    for case in cases:
        result = measure(host, port, case, ctx, data, args.rounds)
        results.append(result)
        o, r, f = result["ours"], result["raw"], result["raw_pre_encoded"]
        print(
            f"{case['label']:<16} {case['qos']:>3} {result['messages']:>8,} {o:>10,} {r:>10,}"
            f" {result['ratio']:>6.2f} {f:>14,} {result['ratio_pre_encoded']:>6.2f}",
            flush=True,
        )
    print(
        json.dumps(
            {
                "bench": "mqtt",
                "python": platform.python_version(),
                "paho_mqtt": version("paho-mqtt"),
                "protobuf": version("protobuf"),
                "samples": n_samples,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
