"""Scale-out: N collector processes, each with its own configuration and devices, into one broker
and one database.

Run: ``python examples/fleet/run_fleet.py [--collectors 3] [--seconds 30] [--out fleet-run]``

For each collector ``k`` (1..N) the launcher starts its devices (a Modbus TCP simulator and an
OPC UA simulator, child processes on free ports), writes its configuration ``<out>/<prefix>-k.toml``
and starts ``data-collector run`` on it (a child process). Every collector publishes into the one
Mosquitto (``--mqtt-url``) and Redis (``--redis-url``) and writes into the one PostgreSQL
(``--sql-url``). After ``--seconds`` the launcher stops the collectors as a service manager does
(SIGTERM: each stops its context and writes every value read), then the simulators, and prints
each collector's own accounting (samples read; per writer written, lost, dropped, unwritten) beside
what the stores hold for it: distinct samples seen by an MQTT subscriber, Redis stream entries, SQL
rows. Exit status 0 when every collector exited cleanly and every store holds every sample written.

Collector identity, the same name ``<prefix>-k`` everywhere (``fleet-1``, ``fleet-2``, ...):

- MQTT: ``client_id`` (the ``collector`` field of every JSON payload) and the topic
  ``<prefix>/<name>/<context id>/<variable id>``;
- Redis: the key prefix (``<name>:stream:<context id>``, ``<name>:latest:...``, ``<name>:runs:...``);
- SQL: one set of tables for the fleet (``<prefix>_samples`` ...); collector ``k`` runs context
  id ``k``, so a sample row's ``context_id`` says which collector read it, and the run's metadata
  (``<prefix>_contexts.metadata``) holds ``collector = "<name>"``;
- the ``[metadata] collector`` key also reaches the MQTT context events and the Redis runs hash.

The configurations are ordinary files: ``data-collector validate <out>/fleet-1.toml`` and
``data-collector run <out>/fleet-1.toml`` work on them (as long as their simulators run). Each
spools to ``<out>/<name>.spool/``; a rerun in the same folder first writes what an earlier run
left there. Children run in sessions of their own, so Ctrl-C reaches only the launcher, which
then stops them in order; each child also ends by itself (``--duration``) should the launcher die.

The functions here (:class:`FleetSpec`, :func:`collector_config`, :class:`Fleet`,
:class:`MqttTap`, :func:`parse_summary`) are used by ``bench/northbound_bench.py`` and
``test/fleet_test.py``.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]

DEVICES = ("simulators", "modbus", "random")
WRITERS = ("mqtt", "redis", "sql")
OPCUA_NS = "nsu=urn:data-collector:simulator"
#: (id, name, address, value_type) of the variables every collector reads from its simulators
MODBUS_VARIABLES = (
    (1, "sine", "hr:0:float32", "float"),
    (2, "ramp", "hr:2:float32", "float"),
    (3, "seconds", "hr:4:uint32", "int"),
    (4, "square", "hr:9.0", "bool"),
)
OPCUA_VARIABLES = (
    (5, "ua sine", f"{OPCUA_NS};s=Sim.Sine", "float"),
    (6, "ua counter", f"{OPCUA_NS};s=Sim.Counter", "int"),
    (7, "ua text", f"{OPCUA_NS};s=Sim.Text", "str"),
)
#: ids of the ``bulk`` variables: BULK_ID + i (Modbus holding register 1000 + i, or a random sine)
BULK_ID = 1000
_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,30}")
_DEFAULT_PORTS = {"mqtt": 1883, "redis": 6379, "postgresql": 5432, "mysql": 3306, "mariadb": 3306}


@dataclass(frozen=True)
class FleetSpec:
    """What the fleet is: how many collectors, what each reads, where they write.

    ``devices``: ``"simulators"`` (a Modbus and an OPC UA simulator per collector, 7 variables),
    ``"modbus"`` (a Modbus simulator per collector, 4 variables) or ``"random"`` (no device: the
    ``random`` reader); ``bulk`` adds that many variables per collector (Modbus holding registers
    1000.., or random sines). ``prefix`` names everything of the fleet: collectors ``<prefix>-k``,
    the MQTT topic root, the Redis key prefixes, the SQL tables ``<prefix>_*``.
    """

    collectors: int = 3
    interval_ms: int = 500
    devices: str = "simulators"
    bulk: int = 0
    writers: tuple[str, ...] = WRITERS
    prefix: str = "fleet"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_qos: int = 1
    mqtt_message: str = "sample"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_max_age_s: int = 86_400
    sql_url: str = "postgresql+psycopg://postgres@127.0.0.1/test"
    spool: bool = True  # each collector spools to <out>/<name>.spool/ (False: data-collector run --no-spool)

    def __post_init__(self) -> None:
        if not 1 <= self.collectors <= 100:
            raise ValueError(f"collectors must be from 1 to 100, got {self.collectors}")
        if self.devices not in DEVICES:
            raise ValueError(f"devices must be one of {', '.join(DEVICES)}, got {self.devices!r}")
        if self.bulk < 0 or (self.devices == "random" and self.bulk == 0):
            raise ValueError(f"bulk must be >= 0 (>= 1 with devices = random), got {self.bulk}")
        unknown = set(self.writers) - set(WRITERS)
        if not self.writers or unknown:
            raise ValueError(f"writers must be some of {', '.join(WRITERS)}, got {','.join(self.writers)}")
        if not _PREFIX.fullmatch(self.prefix):
            raise ValueError(
                f"prefix must be lowercase letters, digits and _ (a letter first, at most 31), "
                f"got {self.prefix!r}"
            )
        if self.mqtt_message not in ("sample", "batch"):
            raise ValueError(f"mqtt_message must be sample or batch, got {self.mqtt_message!r}")

    # -- identity ------------------------------------------------------------------------------
    def name(self, k: int) -> str:
        """The name of collector ``k`` (1-based): its MQTT client id, Redis prefix, metadata."""
        return f"{self.prefix}-{k}"

    def context_id(self, k: int) -> int:
        """The context id collector ``k`` runs: unique across the fleet."""
        return k

    @property
    def table_prefix(self) -> str:
        return f"{self.prefix}_"

    @property
    def names(self) -> list[str]:
        return [self.name(k) for k in range(1, self.collectors + 1)]

    def variables(self) -> list[tuple[int, str, str, str, str]]:
        """(id, name, address, value_type, reader_type) of the variables of one collector."""
        out = []
        if self.devices in ("simulators", "modbus"):
            out += [(*v, "plc") for v in MODBUS_VARIABLES]
        if self.devices == "simulators":
            out += [(*v, "gateway") for v in OPCUA_VARIABLES]
        for i in range(self.bulk):
            if self.devices == "random":
                out.append((BULK_ID + i, f"signal {i}", f"sine:{5 + i % 20}", "float", "random"))
            else:
                out.append((BULK_ID + i, f"register {1000 + i}", f"hr:{1000 + i}", "int", "plc"))
        return out


def _host_port(url: str, scheme: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or _DEFAULT_PORTS.get(scheme, 0)


def _toml(value: object) -> str:
    """A TOML value: strings as basic strings (JSON escapes are TOML escapes), numbers, booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=True)


def collector_config(spec: FleetSpec, k: int, ports: dict[str, int], *, duration_s: float = 86_400) -> str:
    """The TOML configuration of collector ``k``, reading the simulators at ``ports``
    (``{"modbus": port, "opcua": port}``, as its devices need)."""
    name = spec.name(k)
    lines = [
        f"# Collector {k} of the fleet {spec.prefix!r}: written by examples/fleet/run_fleet.py.",
        f"#     data-collector validate {name}.toml   /   data-collector run {name}.toml",
        "# It spools to <this file's stem>.spool/ beside it (data-collector run's default).",
        "",
        "# merged into every context's metadata: SQL contexts table, MQTT context events, Redis runs",
        "[metadata]",
        f"collector = {_toml(name)}",
        "",
    ]
    if "modbus" in ports:
        lines += [
            "[[readers]]",
            'type = "modbus"',
            'reader_type = "plc"',
            'host = "127.0.0.1"',
            f"port = {ports['modbus']}",
            "timeout_s = 1.0",
            "",
        ]
    if "opcua" in ports:
        lines += [
            "[[readers]]",
            'type = "opcua"',
            'reader_type = "gateway"',
            f'endpoint = "opc.tcp://127.0.0.1:{ports["opcua"]}/"',
            'mode = "subscribe"',
            "timeout_s = 2.0",
            "",
        ]
    if spec.devices == "random":
        lines += ["[[readers]]", 'type = "random"', ""]
    if "mqtt" in spec.writers:
        host, port = _host_port(spec.mqtt_url, "mqtt")
        per_variable = "/{variable_id}" if spec.mqtt_message == "sample" else ""
        lines += [
            "[[writers]]",
            'type = "mqtt"',
            'name = "mqtt"',
            f"host = {_toml(host)}",
            f"port = {port}",
            f"client_id = {_toml(name)}  # the collector's identity: 'collector' in every payload",
            f"topic = {_toml(spec.prefix + '/{client_id}/{context_id}' + per_variable)}",
            f"context_topic = {_toml(spec.prefix + '/{client_id}/{context_id}/context')}  # run events",
            f"message = {_toml(spec.mqtt_message)}",
            f"qos = {spec.mqtt_qos}",
            "",
        ]
    if "redis" in spec.writers:
        lines += [
            "[[writers]]",
            'type = "redis"',
            'name = "redis"',
            f"url = {_toml(spec.redis_url)}",
            f"prefix = {_toml(name)}  # every key of this collector: {name}:stream:<context id>, ...",
            f"max_age_s = {spec.redis_max_age_s}",
            "",
        ]
    if "sql" in spec.writers:
        lines += [
            "[[writers]]",
            'type = "sql"',
            'name = "sql"',
            f"url = {_toml(spec.sql_url)}",
            f"table_prefix = {_toml(spec.table_prefix)}  # one set of tables for the whole fleet",
            "",
        ]
    lines += [
        "[[contexts]]",
        f"id = {spec.context_id(k)}  # unique in the fleet: a SQL row's context_id names its collector",
        f"duration_s = {duration_s:g}",
        f"default_interval_ms = {spec.interval_ms}",
        "variables = [",
    ]
    for vid, vname, address, value_type, reader_type in spec.variables():
        lines.append(
            f"    {{ id = {vid}, name = {_toml(vname)}, address = {_toml(address)}, "
            f"value_type = {_toml(value_type)}, reader_type = {_toml(reader_type)} }},"
        )
    lines += ["]", ""]
    return "\n".join(lines)


# -- child processes ---------------------------------------------------------------------------------
class Child:
    """A child process in a session of its own; its stdout lines are kept (and logged with its
    stderr to ``log``) and the first line matching ``ready`` is awaited by :meth:`wait_ready`."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, ready: str) -> None:
        self.name = name
        self.log_path = log
        self.lines: list[str] = []
        self._ready = re.compile(ready)
        self._match: re.Match[str] | None = None
        self.ready_at: float | None = None  # time.monotonic() when the ready line came
        self._cond = threading.Condition()
        self._log: IO[str] = log.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self._log.write(line + "\n")
            self._log.flush()
            with self._cond:
                self.lines.append(line)
                if self._match is None:
                    self._match = self._ready.search(line)
                    if self._match is not None:
                        self.ready_at = time.monotonic()
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_ready(self, timeout_s: float) -> re.Match[str]:
        """The match of the ready line; RuntimeError when the child exits or is silent too long."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._match is None:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._cond.wait(min(left, 0.2))
            if self._match is not None:
                return self._match
        state = "exited" if self.proc.poll() is not None else f"not ready after {timeout_s:g} s"
        raise RuntimeError(f"{self.name} {state}: see {self.log_path}")

    def stop(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int | None:
        """The exit status, or None when still running after ``timeout_s``."""
        try:
            status = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(5)
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)

    def close(self) -> None:
        self.kill()
        self._log.close()


# -- what a collector says at the end ------------------------------------------------------------------
@dataclass
class WriterCounts:
    written: int
    lost: int
    dropped: int
    unwritten: int
    replayed: int = 0  # of written: samples an earlier run left in the spool (read before this run)

    @property
    def this_run(self) -> int:
        """Samples read by this run and written."""
        return self.written - self.replayed


@dataclass
class CollectorReport:
    """A collector's accounting, from the summary ``data-collector run`` prints when it ends."""

    name: str
    context_id: int
    exit_status: int | None = None
    delivered: int = 0  # samples of its context that reached its writers
    bad: int = 0
    read: int = 0  # samples its readers produced
    missed: int = 0
    writers: dict[str, WriterCounts] = field(default_factory=dict)
    problem: str = ""  # the summary's "exit status 1: ..." line, if any
    stored: dict[str, int] = field(default_factory=dict)  # store -> samples found there

    @property
    def clean_stop(self) -> bool:
        return self.exit_status in (0, 1) and bool(self.writers)

    def not_written(self) -> int:
        return sum(w.lost + w.dropped + w.unwritten for w in self.writers.values())


_CONTEXT = re.compile(r"^context (\d+): (\d+) samples, (\d+) bad$")
_WRITER = re.compile(
    r"^writer (.+?): (\d+) samples written, (\d+) lost, (\d+) dropped, (\d+) unwritten"
    r"(?:.*; spool: (\d+) replayed)?"
)
_READER = re.compile(
    r"^reader (.+?): (\d+) reads, (\d+) samples \((\d+) bad\), (\d+) missed ticks, (\d+) missed samples$"
)


def parse_summary(report: CollectorReport, lines: Sequence[str]) -> None:
    """Fill ``report`` from the summary lines of ``data-collector run`` (the last ones printed)."""
    for line in lines:
        if m := _CONTEXT.match(line):
            if int(m[1]) == report.context_id:
                report.delivered, report.bad = int(m[2]), int(m[3])
        elif m := _WRITER.match(line):
            report.writers[m[1]] = WriterCounts(*(int(g or 0) for g in m.groups()[1:]))
        elif m := _READER.match(line):
            report.read += int(m[3])
            report.missed += int(m[6])
        elif line.startswith("exit status "):
            report.problem = line


# -- an MQTT subscriber counting what it receives per collector ------------------------------------------
class MqttTap:
    """A paho-mqtt subscriber (QoS 1) to ``<prefix>/#``: per collector (the payload's ``collector``),
    the distinct samples received and the repeats (at-least-once delivery: a sample whose read
    time is not after the last one received for its variable is a repeat, since the first
    occurrences of a variable's samples arrive in read order), and the latency from each
    sample's read time to its receipt (a histogram in 0.1 ms steps). Samples read before the
    subscriber started (replayed from a spool of an earlier run) are only counted, in ``older``."""

    def __init__(self, url: str, prefix: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        host, port = _host_port(url, "mqtt")
        self.since_us = time.time_ns() // 1000
        self.samples: Counter[str] = Counter()
        self.older: Counter[str] = Counter()
        self.repeats: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []  # context started / stopped (retained)
        self.event_topics: set[str] = set()
        self.latency: Counter[int] = Counter()  # 0.1 ms steps -> samples
        self.errors: list[str] = []
        self._last: dict[tuple[str, int, int], int] = {}
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-tap-{uuid.uuid4().hex[:8]}")
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()
        self._client.subscribe(f"{prefix}/#", qos=1)
        if not subscribed.wait(10):
            self.close()
            raise RuntimeError(f"MQTT subscriber: no SUBACK from {host}:{port}")

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        now_us = time.time_ns() // 1000
        if not msg.payload:
            return
        try:
            doc = json.loads(msg.payload)
            if "event" in doc:
                with self._lock:
                    self.events.append(doc)
                    self.event_topics.add(msg.topic)
                return
            collector = doc["collector"]
            cid = doc["context_id"]
            items = doc.get("samples", [doc])
            with self._lock:
                last_us, step = -1, 0
                for s in items:
                    read_us = int(s["id"].rsplit(":", 1)[1])
                    if read_us < self.since_us:
                        self.older[collector] += 1
                        continue
                    key = (collector, cid, s["variable_id"])
                    if read_us <= self._last.get(key, -1):
                        self.repeats[collector] += 1
                        continue
                    self._last[key] = read_us
                    self.samples[collector] += 1
                    if read_us != last_us:
                        last_us, step = read_us, (now_us - read_us) // 100
                    self.latency[step] += 1
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            with self._lock:
                self.errors.append(f"{msg.topic}: {exc!r}")

    def received(self) -> int:
        with self._lock:
            return sum(self.samples.values())

    def percentile_ms(self, q: float) -> float | None:
        """The ``q`` (0..1) quantile of the read-to-receipt latency, ms (None without samples)."""
        with self._lock:
            steps = sorted(self.latency.items())
        total = sum(n for _s, n in steps)
        if not total:
            return None
        cumulative, bounds = 0, []
        for _s, n in steps:
            cumulative += n
            bounds.append(cumulative)
        index = bisect.bisect_left(bounds, max(1, int(q * total + 0.999999)))
        return steps[min(index, len(steps) - 1)][0] / 10

    def clear_retained(self) -> None:
        """Remove the retained run events received (an empty retained message on each topic)."""
        with self._lock:
            topics = sorted(self.event_topics)
        for topic in topics:
            self._client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# -- what the stores hold ---------------------------------------------------------------------------------
def redis_counts(spec: FleetSpec, since_ms: int) -> dict[str, int]:
    """Per collector, the entries of its context's stream read at or after ``since_ms``."""
    import redis

    client: Any = redis.Redis.from_url(spec.redis_url)
    try:
        out = {}
        for k in range(1, spec.collectors + 1):
            key = f"{spec.name(k)}:stream:{spec.context_id(k)}"
            n, start = 0, f"{since_ms}-0"
            while True:  # in pages of 10,000 entries
                page = client.xrange(key, start, "+", count=10_000)
                n += len(page)
                if len(page) < 10_000:
                    break
                start = "(" + page[-1][0].decode()
            out[spec.name(k)] = n
        return out
    finally:
        client.close()


def sql_counts(spec: FleetSpec, since_ms: int) -> dict[str, int]:
    """Per collector, the sample rows of its context read at or after ``since_ms``."""
    import sqlalchemy as sa

    engine = sa.create_engine(spec.sql_url)
    try:
        table = sa.Table(f"{spec.table_prefix}samples", sa.MetaData(), autoload_with=engine)
        since: Any = since_ms * 1000
        if engine.dialect.name != "sqlite":  # SQLite keeps µs since 1970, the others timestamps
            from datetime import UTC, datetime

            since = datetime.fromtimestamp(since_ms / 1000, UTC)
        query = (
            sa.select(table.c.context_id, sa.func.count())
            .where(table.c.read_at >= since)
            .group_by(table.c.context_id)
        )
        with engine.connect() as conn:
            rows = {int(cid): int(n) for cid, n in conn.execute(query)}
        return {spec.name(k): int(rows.get(spec.context_id(k), 0)) for k in range(1, spec.collectors + 1)}
    finally:
        engine.dispose()


def unreachable(spec: FleetSpec) -> str:
    """Which service of the fleet's writers does not accept a connection ("" when all do)."""
    for writer in spec.writers:
        if writer == "sql":
            import sqlalchemy as sa

            u = sa.make_url(spec.sql_url)
            if u.get_backend_name() == "sqlite":
                continue
            host, port = u.host or "127.0.0.1", u.port or _DEFAULT_PORTS.get(u.get_backend_name(), 0)
        else:
            host, port = _host_port(spec.redis_url if writer == "redis" else spec.mqtt_url, writer)
        try:
            with socket.create_connection((host, port), timeout=2):
                pass
        except OSError as exc:
            return f"{writer} at {host}:{port} does not answer ({exc}): see --{writer}-url"
    return ""


# -- the fleet -----------------------------------------------------------------------------------------------
class Fleet:
    """Starts a fleet's simulators and collectors (:meth:`start`), stops them (:meth:`stop`) and
    collects each collector's report; a context manager that stops whatever still runs."""

    def __init__(self, spec: FleetSpec, out: Path, *, max_seconds: float = 3600) -> None:
        self.spec = spec
        self.out = out
        self.max_seconds = max_seconds  # every child ends by itself after about this long
        self.simulators: list[Child] = []
        self.collectors: list[Child] = []
        self.reports: list[CollectorReport] = []
        self.configs: list[Path] = []
        self.started_ms = 0
        self.stopped_at: float | None = None  # time.monotonic() when stop() began

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        try:  # left early (an error, a second Ctrl-C): still stop the collectors gracefully first
            if any(c.proc.poll() is None for c in self.collectors):
                self.stop(timeout_s=60)
        finally:
            for child in [*self.collectors, *self.simulators]:
                child.close()

    def _python(self, *args: str) -> list[str]:
        return [sys.executable, "-m", *args]

    def start(self, ready_timeout_s: float = 90.0) -> None:
        """Start every simulator, write every configuration, start every collector and wait until
        each says it is collecting."""
        spec = self.spec
        self.out.mkdir(parents=True, exist_ok=True)
        life = f"{self.max_seconds + 120:g}"
        ready = {
            "modbus": r"listening on [^:]+:(\d+)",
            "opcua": r"listening on opc\.tcp://[^:]+:(\d+)/",
        }
        kinds = {"simulators": ("modbus", "opcua"), "modbus": ("modbus",), "random": ()}[spec.devices]
        devices: list[tuple[int, str, Child]] = []  # (collector, kind, its simulator)
        for k in range(1, spec.collectors + 1):
            for kind in kinds:
                bulk = ["--bulk", str(spec.bulk)] if kind == "modbus" and spec.bulk else []
                argv = self._python(f"data_reader.{kind}.simulator", "--port", "0", *bulk, "--duration", life)
                sim = Child(
                    f"{spec.name(k)} {kind} simulator",
                    argv,
                    self.out / f"{spec.name(k)}-{kind}.log",
                    ready[kind],
                )
                self.simulators.append(sim)
                devices.append((k, kind, sim))
        ports: list[dict[str, int]] = [{} for _ in range(spec.collectors)]
        for k, kind, sim in devices:
            ports[k - 1][kind] = int(sim.wait_ready(ready_timeout_s)[1])
        self.started_ms = time.time_ns() // 1_000_000
        for k in range(1, spec.collectors + 1):
            name = spec.name(k)
            path = self.out / f"{name}.toml"
            path.write_text(collector_config(spec, k, ports[k - 1]), encoding="utf-8")
            self.configs.append(path)
            self.reports.append(CollectorReport(name, spec.context_id(k)))
            spool = [] if spec.spool else ["--no-spool"]
            self.collectors.append(
                Child(
                    name,
                    self._python(
                        "data_collector", "run", str(path), "--duration", f"{self.max_seconds:g}", *spool
                    ),
                    self.out / f"{name}.log",
                    r"^collecting ",
                )
            )
        for collector in self.collectors:
            collector.wait_ready(ready_timeout_s)

    def stop(self, timeout_s: float = 180.0) -> list[CollectorReport]:
        """SIGTERM every collector (each stops its context and writes every value read), wait for
        each (killed after ``timeout_s``), then stop the simulators; the collectors' reports."""
        self.stopped_at = time.monotonic()
        for collector in self.collectors:
            collector.stop(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for collector, report in zip(self.collectors, self.reports, strict=True):
            report.exit_status = collector.wait(max(0.0, deadline - time.monotonic()))
            if report.exit_status is None:
                collector.kill()
                report.problem = f"did not stop within {timeout_s:g} s: killed (see {collector.log_path})"
            parse_summary(report, collector.lines)
        for sim in self.simulators:  # SIGTERM: SIGINT is ignored by a launcher started with "&"
            sim.stop(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for sim in self.simulators:
            if sim.wait(max(0.0, deadline - time.monotonic())) is None:
                sim.kill()
        return self.reports

    def collecting_s(self) -> float:
        """Seconds from the first collector collecting to the stop (0 before both)."""
        ready = [c.ready_at for c in self.collectors if c.ready_at is not None]
        return self.stopped_at - min(ready) if ready and self.stopped_at is not None else 0.0

    def count_stores(self, tap: MqttTap | None) -> None:
        """Fill each report's ``stored``: what the subscriber, Redis and the SQL tables hold."""
        spec = self.spec
        found: dict[str, dict[str, int]] = {}
        if tap is not None:
            found["mqtt"] = dict(tap.samples)
        if "redis" in spec.writers:
            found["redis"] = redis_counts(spec, self.started_ms)
        if "sql" in spec.writers:
            found["sql"] = sql_counts(spec, self.started_ms)
        for report in self.reports:
            report.stored = {store: counts.get(report.name, 0) for store, counts in found.items()}


def wait_for_tap(tap: MqttTap, reports: Sequence[CollectorReport], timeout_s: float = 30.0) -> None:
    """Wait (bounded) until the subscriber received what the collectors say they published."""
    want = sum(r.writers["mqtt"].this_run for r in reports if "mqtt" in r.writers)
    deadline = time.monotonic() + timeout_s
    while tap.received() < want and time.monotonic() < deadline:
        time.sleep(0.05)


def check(reports: Sequence[CollectorReport]) -> list[str]:
    """Every problem of the run: a collector that did not stop cleanly, samples not written, a
    store holding other than what its writer wrote."""
    problems = []
    for r in reports:
        if not r.clean_stop:
            problems.append(f"{r.name}: exit status {r.exit_status} {r.problem}".rstrip())
        if r.not_written():
            problems.append(f"{r.name}: {r.not_written()} samples lost, dropped or unwritten")
        for store, n in r.stored.items():
            w = r.writers.get(store)
            if w is None:
                problems.append(f"{r.name}: no accounting of its {store} writer")
                continue
            if n != w.this_run:
                problems.append(f"{r.name}: {store} holds {n} samples, its writer wrote {w.this_run}")
            if w.this_run != r.delivered:
                problems.append(f"{r.name}: its {store} writer wrote {w.this_run} of {r.delivered} samples")
    return problems


def print_table(reports: Sequence[CollectorReport], writers: Sequence[str], out: IO[str]) -> None:
    """One line per collector: samples read, BAD, missed, not written (lost + dropped + unwritten,
    all writers), and per writer the samples it wrote with, in brackets, what its store holds."""
    head = f"{'collector':<14} {'context':>7} {'read':>9} {'bad':>5} {'missed':>6} {'not written':>11}"
    head += "".join(f"  {w + ' (in store)':>20}" for w in writers)
    out.write(head + "\n")
    for r in reports:
        line = f"{r.name:<14} {r.context_id:>7} {r.read:>9} {r.bad:>5} {r.missed:>6} {r.not_written():>11}"
        for w in writers:
            c, stored = r.writers.get(w), r.stored.get(w)
            cell = "-" if c is None else f"{c.this_run} ({'-' if stored is None else stored})"
            line += f"  {cell:>20}"
        out.write(line + "\n")


def report_json(spec: FleetSpec, reports: Sequence[CollectorReport], **extra: Any) -> dict[str, Any]:
    return {
        "fleet": spec.prefix,
        "collectors": [
            {
                "name": r.name,
                "context_id": r.context_id,
                "exit_status": r.exit_status,
                "read": r.read,
                "delivered": r.delivered,
                "bad": r.bad,
                "missed": r.missed,
                "writers": {name: vars(c) for name, c in r.writers.items()},
                "stored": r.stored,
            }
            for r in reports
        ],
        **extra,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--collectors", type=int, default=3, help="collector processes (3)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long they collect (30)")
    parser.add_argument("--interval-ms", type=int, default=500, help="interval of every variable (500)")
    parser.add_argument(
        "--devices", choices=DEVICES, default="simulators", help="what each collector reads (simulators)"
    )
    parser.add_argument("--bulk", type=int, default=0, help="more variables per collector (0)")
    parser.add_argument("--writers", default=",".join(WRITERS), help="mqtt,redis,sql (all three)")
    parser.add_argument("--prefix", default="fleet", help="names of collectors, topics, keys, tables (fleet)")
    parser.add_argument("--mqtt-url", default=FleetSpec.mqtt_url)
    parser.add_argument("--mqtt-message", choices=("sample", "batch"), default="sample")
    parser.add_argument("--redis-url", default=FleetSpec.redis_url)
    parser.add_argument("--sql-url", default=FleetSpec.sql_url)
    parser.add_argument(
        "--out", default="fleet-run", help="folder of configurations, spools, logs (fleet-run)"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the reports")
    args = parser.parse_args(argv)
    try:
        spec = FleetSpec(
            collectors=args.collectors,
            interval_ms=args.interval_ms,
            devices=args.devices,
            bulk=args.bulk,
            writers=tuple(w.strip() for w in args.writers.split(",") if w.strip()),
            prefix=args.prefix,
            mqtt_url=args.mqtt_url,
            mqtt_message=args.mqtt_message,
            redis_url=args.redis_url,
            sql_url=args.sql_url,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if not args.seconds > 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    down = unreachable(spec)
    if down:
        print(f"error: {down}", file=sys.stderr)
        return 3
    out = Path(args.out).resolve()
    tap = MqttTap(spec.mqtt_url, spec.prefix) if "mqtt" in spec.writers else None
    interrupted = False
    try:
        with Fleet(spec, out, max_seconds=args.seconds + 60) as fleet:
            print(
                f"starting {spec.collectors} collectors "
                f"({spec.devices}, {len(spec.variables())} variables each)"
            )
            try:
                fleet.start()
            except RuntimeError as exc:  # a child did not start: its log says why
                print(f"error: {exc}", file=sys.stderr)
                return 3
            for path in fleet.configs:
                print(f"  {path.stem}: {path} (log {path.with_suffix('.log')})")
            print(f"collecting for {args.seconds:g} s ...", flush=True)
            try:
                time.sleep(args.seconds)
            except KeyboardInterrupt:
                interrupted = True
                print("Ctrl-C: stopping the collectors", flush=True)
            reports = fleet.stop()
            if tap is not None:
                wait_for_tap(tap, reports)
            fleet.count_stores(tap)
    finally:
        if tap is not None:
            tap.close()
    print()
    print("each collector's own accounting, and what the stores hold for it (this run):")
    print_table(reports, spec.writers, sys.stdout)
    problems = check(reports)
    if tap is not None and tap.repeats:
        print(f"MQTT samples received more than once (at least once delivery): {dict(tap.repeats)}")
    print()
    print(f"consume:  python examples/fleet/consume_mqtt.py --prefix {spec.prefix}")
    print(f"          python examples/fleet/consume_redis.py --prefix {spec.prefix}")
    print(f"          python examples/fleet/query_sql.py --prefix {spec.prefix}")
    for p in problems:
        print(f"PROBLEM: {p}")
    if not problems:
        print(
            "every collector stopped cleanly and wrote every sample it read; each store holds exactly "
            "those (MQTT: the distinct samples a subscriber received)"
        )
    if args.json:
        print(json.dumps(report_json(spec, reports, problems=problems, interrupted=interrupted)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
