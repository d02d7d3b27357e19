"""The fleet example against the real Mosquitto, Redis and PostgreSQL: two collector processes.

``examples/fleet/run_fleet.py --collectors 2`` starts a Modbus and an OPC UA simulator per
collector and two ``data-collector run`` processes publishing into the one broker and Redis and
writing into the one PostgreSQL, stops them with SIGTERM after a few seconds and reports each
collector's accounting. Checked here, independently of the launcher's own counts: a subscriber of
this test (subscribed before the fleet starts) received every sample each collector says it wrote
to MQTT, with the collector's name in the payload and the topic; Redis holds them under the
collector's key prefix; PostgreSQL holds them under the collector's context id, in a run whose
metadata names the collector; the three stores hold the same samples (context, variable, read
time); nothing was lost, dropped or left unwritten; the run events carry the collector's name.
Services from ``DC_TEST_MQTT_URL``, ``DC_TEST_REDIS_URL``, ``DC_TEST_POSTGRES_URL``; skipped when
unreachable unless ``DC_REQUIRE_SERVICES=1``. Everything is named after a unique prefix and
removed at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from _cases.mqtt_cases import MQTT_URL, Subscriber, json_samples, require_broker
from _cases.redis_cases import REDIS_URL, delete_prefix, require_redis
from _cases.sql_cases import POSTGRES_URL, drop_tables, require_database

from data_collector import Quality

ROOT = Path(__file__).resolve().parent.parent
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COLLECTORS = 2
SECONDS = 4
INTERVAL_MS = 250
VARIABLES = {1, 2, 3, 4, 5, 6, 7}  # 4 Modbus registers, 3 OPC UA nodes (examples/fleet/run_fleet.py)


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _sql_ids(prefix: str) -> dict[str, set[str]]:
    """Per collector named in a run's metadata, the ``<context>:<variable>:<µs>`` ids of the sample
    rows that fall in that run's time span."""
    p = f"{prefix}_"
    query = f"""
        SELECT c.metadata->>'collector', s.context_id, v.variable_id, s.read_at
        FROM {p}samples s
        JOIN {p}variables v ON v.id = s.variable_key
        JOIN {p}contexts c ON c.context_id = s.context_id
         AND s.read_at >= c.start_date AND (c.end_date IS NULL OR s.read_at <= c.end_date)
    """
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(query)).all()
            (unmatched,) = conn.execute(sa.text(f"SELECT count(*) FROM {p}samples")).one()
    finally:
        engine.dispose()
    out: dict[str, set[str]] = defaultdict(set)
    for collector, cid, vid, read_at in rows:
        out[collector].add(f"{cid}:{vid}:{_us(read_at)}")
    assert unmatched == len(rows), "sample rows outside every run of their context, or in two runs"
    return out


def test_two_collectors_publish_every_sample_with_their_identity(tmp_path: Path) -> None:
    pytest.importorskip(
        "pymodbus", reason='the fleet reads Modbus simulators: pip install "data-collector[modbus]"'
    )
    pytest.importorskip(
        "asyncua", reason='the fleet reads OPC UA simulators: pip install "data-collector[opcua]"'
    )
    require_broker()
    require_redis()
    require_database(POSTGRES_URL)
    prefix = f"fleettest_{uuid.uuid4().hex[:10]}"
    names = [f"{prefix}-{k}" for k in range(1, COLLECTORS + 1)]
    sub = Subscriber([f"{prefix}/#"])
    try:
        done = subprocess.run(
            [
                sys.executable,
                "examples/fleet/run_fleet.py",
                *("--collectors", str(COLLECTORS), "--seconds", str(SECONDS)),
                *("--interval-ms", str(INTERVAL_MS), "--prefix", prefix, "--out", str(tmp_path)),
                *("--mqtt-url", MQTT_URL, "--redis-url", REDIS_URL, "--sql-url", POSTGRES_URL),
                "--json",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout.splitlines()[-1])
        assert report["problems"] == []
        collectors = {c["name"]: c for c in report["collectors"]}
        assert sorted(collectors) == names

        # the collectors' own accounting: a clean stop, every sample delivered written by every writer
        least = len(VARIABLES) * (SECONDS * 1000 // INTERVAL_MS) // 2  # half the ticks, on a busy machine
        for k, name in enumerate(names, 1):
            c = collectors[name]
            assert c["exit_status"] in (0, 1), c  # 1: some samples BAD (a busy machine), none lost
            assert c["context_id"] == k
            assert c["delivered"] >= least, c
            assert sorted(c["writers"]) == ["mqtt", "redis", "sql"]
            for counts in c["writers"].values():
                assert counts == {
                    "written": c["delivered"],
                    "lost": 0,
                    "dropped": 0,
                    "unwritten": 0,
                    "replayed": 0,  # a fresh folder: no spool of an earlier run
                }, c

        # MQTT, as this test's own subscriber received it
        total = sum(c["writers"]["mqtt"]["written"] for c in collectors.values())
        sub.wait(lambda msgs: len({s["id"] for s in json_samples(msgs)}) >= total, 30, "every sample")
        messages = sub.flush()
        mqtt_ids: dict[str, set[str]] = defaultdict(set)
        for m in messages:
            if not m.payload:
                continue
            doc = json.loads(m.payload)
            name = m.topic.split("/")[1]
            assert name in names, m.topic
            assert doc["collector"] == name  # the payload names the collector that published it
            k = names.index(name) + 1
            assert doc["context_id"] == k
            if "event" in doc:  # the retained run events carry the collector's metadata
                assert m.topic == f"{prefix}/{name}/{k}/context"
                assert doc["metadata"] == {"collector": name}
                continue
            assert m.topic == f"{prefix}/{name}/{k}/{doc['variable_id']}"
            mqtt_ids[name].add(doc["id"])
        assert {n: len(ids) for n, ids in mqtt_ids.items()} == {
            n: c["writers"]["mqtt"]["written"] for n, c in collectors.items()
        }

        # Redis: under each collector's key prefix, exactly once, the same samples
        from data_writer.redis import read_runs, read_samples

        for k, name in enumerate(names, 1):
            stored = read_samples(REDIS_URL, k, prefix=name)
            msg_ids = [s.msg_id for s in stored]
            assert len(msg_ids) == collectors[name]["writers"]["redis"]["written"]
            assert set(msg_ids) == mqtt_ids[name]
            assert {s.variable_id for s in stored} == VARIABLES
            good = {s.variable_id for s in stored if s.quality is Quality.GOOD}
            assert good == VARIABLES, f"{name}: no GOOD sample of {VARIABLES - good}"
            runs = read_runs(REDIS_URL, k, prefix=name)
            assert [r["metadata"] for r in runs] == [{"collector": name}]

        # PostgreSQL: one set of tables, each row in a run of its collector, the same samples
        sql_ids = _sql_ids(prefix)
        assert sorted(sql_ids) == names
        for name in names:
            assert len(sql_ids[name]) == collectors[name]["writers"]["sql"]["written"]
            assert sql_ids[name] == mqtt_ids[name]
    finally:
        sub.clear_retained()
        sub.close()
        for name in names:
            delete_prefix(REDIS_URL, name)
        drop_tables(POSTGRES_URL, f"{prefix}_")
