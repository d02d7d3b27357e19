"""Prometheus metrics (issue 14): ``DataCollector(metrics=registry)``, :mod:`data_collector.metrics`,
and ``data-collector run/capture --metrics-port``, scraped over real HTTP; ``run``'s status line.

The numbers a scrape shows are compared with ``stats()`` taken at the same quiet moment, so each
metric is the counter it claims to be; the default registry of prometheus-client is never touched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _util import LOG, RecordingWriter, free_port, wait_for
from cli_run_test import cli, command, environment

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    DataWriter,
    Variable,
)
from data_reader.random import RandomDataReader

prometheus_client = pytest.importorskip("prometheus_client", reason='needs "data-collector[metrics]"')
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from data_collector.metrics import CONTEXT_STATES, CollectorMetrics, render  # noqa: E402

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def variables() -> list[Variable]:
    return [
        Variable(1, "counter", "int", "random", interval_ms=20),
        Variable(2, "bad:unplugged", "float", "random", interval_ms=40),
    ]


def test_a_scrape_shows_stats_of_readers_writers_and_contexts() -> None:
    registry = CollectorRegistry()
    writer = RecordingWriter("rec")
    with DataCollector(LOG, [RandomDataReader()], [writer], metrics=registry) as c:
        c.start(DataCollectionContext(7, variables(), min_interval_ms=10))
        wait_for(lambda: len(writer.rows) >= 30, 20, "30 rows")
        running = scrape(registry)
        assert value(running, "data_collector_contexts") == 1
        for state in CONTEXT_STATES:
            expected = 1.0 if state == "running" else 0.0
            assert value(running, "data_collector_context_state", context="7", state=state) == expected
        assert value(running, "data_collector_context_samples_total", context="7") >= 30
        c.pause(7)  # nothing is read while paused: stats and a scrape now agree exactly
        wait_for(lambda: c.stats().writers["rec"].queue_depth == 0, 20, "an empty queue")
        stats = c.stats()
        samples = scrape(registry)
        rs, ws, cs = stats.readers["random"], stats.writers["rec"], stats.contexts[7]
        assert value(samples, "data_collector_context_state", context="7", state="paused") == 1
        assert value(samples, "data_collector_context_samples_total", context="7") == cs.samples
        for metric, expected in {
            "ticks": rs.ticks,
            "reads": rs.reads,
            "samples": rs.samples,
            "bad_samples": rs.bad_samples,
            "missed_ticks": rs.missed_ticks,
            "missed_samples": rs.missed_samples,
            "read_errors": rs.read_errors,
        }.items():
            assert value(samples, f"data_collector_reader_{metric}_total", reader_type="random") == expected
        assert rs.bad_samples > 0 and rs.samples >= 30
        assert value(samples, "data_collector_reader_tick_seconds", reader_type="random") == pytest.approx(
            rs.tick_ms / 1000
        )
        for q, us in (("0.5", rs.lateness_p50_us), ("0.99", rs.lateness_p99_us), ("1", rs.lateness_max_us)):
            got = value(samples, "data_collector_reader_lateness_seconds", reader_type="random", quantile=q)
            assert got == pytest.approx(us / 1e6)
        got = value(samples, "data_collector_reader_read_duration_seconds", reader_type="random", stat="max")
        assert got == pytest.approx(rs.max_read_ms / 1000) and got > 0
        for metric, expected in {
            "batches_total": ws.batches,
            "samples_delivered_total": ws.samples_delivered,
            "samples_written_total": ws.samples_written,
            "lost_samples_total": ws.lost_samples,
            "dropped_samples_total": ws.dropped_samples,
            "unwritten_samples_total": ws.unwritten_samples,
            "queue_samples": ws.queue_depth,
            "spooled_samples": ws.spooled_samples,
        }.items():
            assert value(samples, f"data_collector_writer_{metric}", writer="rec") == expected
        assert ws.samples_written == len(writer.rows) == cs.samples
    # close() takes the collector's metrics out of the registry
    assert not any(name.startswith("data_collector_") for name, _ in scrape(registry))


def test_nothing_goes_to_the_default_registry() -> None:
    before = set(REGISTRY._names_to_collectors)
    registry = CollectorRegistry()
    with DataCollector(LOG, [RandomDataReader()], [RecordingWriter()], metrics=registry) as c:
        c.start(DataCollectionContext(1, variables(), min_interval_ms=10))
        assert "data_collector_reader_reads_total" in generate_latest(registry).decode()
    with DataCollector(LOG, [RandomDataReader()], [RecordingWriter()]):
        pass
    assert set(REGISTRY._names_to_collectors) == before
    assert "data_collector" not in generate_latest(REGISTRY).decode()


def test_one_collector_per_registry_and_constant_labels() -> None:
    registry = CollectorRegistry()
    first = DataCollector(LOG, [RandomDataReader()], [RecordingWriter()], metrics=registry)
    try:
        with pytest.raises(ConfigurationError, match="already holds these metrics"):
            DataCollector(LOG, [RandomDataReader()], [RecordingWriter()], metrics=registry)
    finally:
        first.close()
    # the first one left the registry at close(): another collector may take its place
    registry = CollectorRegistry()
    with DataCollector(LOG, [RandomDataReader()], [RecordingWriter()]) as c:
        CollectorMetrics(c, labels={"site": "plant-3"}).register(registry)
        c.start(DataCollectionContext(3, variables(), min_interval_ms=10))
        wait_for(lambda: c.stats().readers["random"].reads > 0, 10, "a read")
        samples = scrape(registry)
    assert value(samples, "data_collector_reader_reads_total", site="plant-3", reader_type="random") > 0
    assert value(samples, "data_collector_context_state", site="plant-3", context="3", state="running") == 1
    assert all(dict(labels).get("site") == "plant-3" for _, labels in samples)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda c: CollectorMetrics(c, namespace="9bad"), "namespace"),
        (lambda c: CollectorMetrics(c, labels={"a-b": "x"}), "label name"),
        (lambda c: CollectorMetrics(c, labels={"writer": "x"}), "label of the metrics themselves"),
        (lambda c: CollectorMetrics(c, labels={"line": 2}), "must be a str"),  # type: ignore[dict-item]
        (lambda c: CollectorMetrics(c, exclude_writers="rec"), "exclude_writers"),
        (lambda c: CollectorMetrics(object()), "needs a DataCollector"),  # type: ignore[arg-type]
        (lambda c: CollectorMetrics(c).register(object()), "CollectorRegistry"),  # type: ignore[arg-type]
        (lambda c: DataCollector(LOG, [], [], metrics="registry"), "CollectorRegistry"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_are_configuration_errors(make: object, match: str) -> None:
    with (
        DataCollector(LOG, [RandomDataReader()], [RecordingWriter()]) as c,
        pytest.raises(ConfigurationError, match=match),
    ):
        make(c)  # type: ignore[operator]


def test_exclude_writers_and_render() -> None:
    with DataCollector(LOG, [RandomDataReader()], [RecordingWriter("a"), RecordingWriter("b")]) as c:
        c.start(DataCollectionContext(1, variables(), min_interval_ms=10))
        wait_for(lambda: c.stats().writers["a"].samples_written > 0, 10, "a write")
        text = render(c, exclude_writers=["b"], namespace="plant")
    samples = parse(text)
    assert value(samples, "plant_writer_samples_written_total", writer="a") > 0
    assert not any(dict(labels).get("writer") == "b" for _, labels in samples)


class _Outage(DataWriter):
    """Fails with a transient error until ``up`` is set (a store that is down)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = threading.Event()
        self.stored = 0

    @property
    def name(self) -> str:
        return "store"

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        if not self.up.is_set():
            raise OSError("store down")
        self.stored += len(variables)


def test_spool_and_errors_during_an_outage(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    writer = _Outage()
    with DataCollector(
        LOG, [RandomDataReader()], [writer], metrics=registry, spool_dir=tmp_path, write_retry_s=0.05
    ) as c:
        c.start(DataCollectionContext(1, variables(), min_interval_ms=10))
        wait_for(lambda: c.stats().writers["store"].spooled_samples >= 20, 20, "20 spooled samples")
        samples = scrape(registry)
        assert value(samples, "data_collector_writer_spooled_samples", writer="store") >= 20
        assert value(samples, "data_collector_writer_spool_bytes", writer="store") > 0
        assert value(samples, "data_collector_writer_oldest_spooled_seconds", writer="store") > 0
        assert value(samples, "data_collector_writer_write_errors_total", writer="store") > 0
        assert value(samples, "data_collector_writer_samples_written_total", writer="store") == 0
        writer.up.set()
        wait_for(lambda: c.stats().writers["store"].spooled_samples == 0, 20, "the spool written")
        c.stop(1)
        stats = c.stats().writers["store"]
        samples = scrape(registry)
        assert value(samples, "data_collector_writer_spooled_samples", writer="store") == 0
        assert (
            value(samples, "data_collector_writer_retried_ok_total", writer="store") == stats.retried_ok > 0
        )
        assert value(samples, "data_collector_writer_samples_written_total", writer="store") == writer.stored


# -- the command ---------------------------------------------------------------------------------------
CONFIG = """\
[[readers]]
type = "random"

[[writers]]
type = "csv"
path = "out.csv"

[[contexts]]
id = 1
min_interval_ms = 10
variables = [
  { id = 1, address = "counter", value_type = "int", interval_ms = 50 },
  { id = 2, address = "sine", value_type = "float", interval_ms = 100 },
]
"""


WRITER = "CsvFileDataWriter(out.csv)"  # the csv writer's name


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return str(response.read().decode())


def answers(url: str) -> bool:
    try:
        fetch(url)
    except OSError:
        return False
    return True


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "line.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def running(config: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    proc = subprocess.Popen(
        [*command(), "run", str(config), "--metrics-port", str(port), "--status-every", "0.5"],
        cwd=config.parent,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=60)


def test_run_serves_metrics_and_writes_status_lines(running: tuple[subprocess.Popen[str], str]) -> None:
    proc, url = running
    wait_for(lambda: answers(url), 30, "the metrics endpoint")

    def written() -> float:
        samples = parse(fetch(url))
        return samples.get(("data_collector_writer_samples_written_total", (("writer", WRITER),)), 0.0)

    wait_for(lambda: written() >= 20, 30, "20 samples written, as the endpoint says")
    samples = parse(fetch(url))
    assert value(samples, "data_collector_context_state", context="1", state="running") == 1
    assert value(samples, "data_collector_reader_reads_total", reader_type="random") > 0
    # the command's own live-view writer is not a writer of the user's
    assert {dict(labels).get("writer") for _, labels in samples} == {None, WRITER}
    time.sleep(1.2)  # at least two status lines (every 0.5 s)
    proc.send_signal(2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"metrics: {url}" in out
    status = [line for line in out.splitlines() if " status after " in line]
    assert len(status) >= 2, out
    assert "contexts 1 running;" in status[-1] and f"writer {WRITER}: " in status[-1]
    assert not answers(url)  # stopped with the command


def test_status_every_zero_and_quiet_write_no_status_line(config: Path) -> None:
    for extra in (["--status-every", "0"], ["-q", "--status-every", "0.2"]):
        result = cli(["run", str(config), "--duration", "1", *extra], cwd=config.parent)
        assert result.returncode == 0, result.stderr
        assert " status after " not in result.stdout + result.stderr


def test_a_port_in_use_fails_before_anything_starts(config: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = cli(["run", str(config), "--duration", "1", "--metrics-port", str(port)], cwd=config.parent)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert not (config.parent / "out.csv").exists()  # no writer was opened


def test_capture_serves_metrics_while_the_command_runs(config: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    child = textwrap.dedent(
        f"""
        import time, urllib.request
        deadline = time.monotonic() + 30
        while True:
            text = urllib.request.urlopen({url!r}, timeout=5).read().decode()
            line = [l for l in text.splitlines() if l.startswith("data_collector_context_samples_total")]
            if line and float(line[0].split()[-1]) >= 10 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        print(line[0])
        """
    )
    result = cli(
        ["capture", str(config), "--metrics-port", str(port), "--", sys.executable, "-c", child],
        cwd=config.parent,
        env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    assert result.returncode == 0, result.stderr
    name, number = result.stdout.split()
    assert name == 'data_collector_context_samples_total{context="1"}' and float(number) >= 10
    assert f"metrics: {url}" in result.stderr


def test_a_refused_registry_leaves_no_thread_behind() -> None:
    registry = CollectorRegistry()
    first = DataCollector(LOG, [RandomDataReader()], [RecordingWriter()], metrics=registry)
    try:
        before = {t.name for t in threading.enumerate()}
        with pytest.raises(ConfigurationError, match="already holds these metrics"):
            DataCollector(LOG, [RandomDataReader()], [RecordingWriter()], metrics=registry, latest_n=10)
        wait_for(lambda: {t.name for t in threading.enumerate()} <= before, 5, "no new thread")
    finally:
        first.close()


def test_without_prometheus_client_metrics_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # an installation without the extra: the import of prometheus_client fails
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setitem(sys.modules, "prometheus_client.core", None)
    monkeypatch.delitem(sys.modules, "data_collector.metrics")
    with pytest.raises(ConfigurationError, match=r'pip install "data-collector\[metrics\]"'):
        DataCollector(LOG, [RandomDataReader()], [RecordingWriter()], metrics=CollectorRegistry())
