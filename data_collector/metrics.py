"""Prometheus metrics of a :class:`~data_collector.DataCollector` (prometheus-client, extra ``metrics``).

Serves plants whose monitoring scrapes Prometheus endpoints (Prometheus, Grafana Agent, Telegraf's
``prometheus`` input, VictoriaMetrics...). :class:`CollectorMetrics` is a prometheus-client
*collector*: it calls :meth:`DataCollector.stats` when the registry is scraped and turns the
snapshot into metric families, so collecting costs nothing per sample and the numbers are the
very counters ``stats()`` returns. Nothing is registered anywhere implicitly (never in
prometheus-client's default ``REGISTRY``) and no HTTP server is started: you pass a registry, and
serve it yourself, or let the ``data-collector`` command do it (``run --metrics-port 9108``).

Example::

    import logging
    from prometheus_client import CollectorRegistry, start_http_server
    from data_collector import DataCollector
    from data_reader.random import RandomDataReader

    registry = CollectorRegistry()
    with DataCollector(logging.getLogger("plant"), [RandomDataReader()], [], metrics=registry) as c:
        server, thread = start_http_server(9108, "127.0.0.1", registry=registry)
        ...                                   # GET http://127.0.0.1:9108/metrics
        server.shutdown()

``DataCollector(..., metrics=registry)`` registers a :class:`CollectorMetrics` of itself in
``registry`` and unregisters it at ``close()``. One collector per registry (the metric names are
the same for every collector: serve two collectors of one process on two registries);
``CollectorMetrics(c, labels={"site": "plant-3"}).register(registry)`` adds constant labels.

Metrics (prefix ``data_collector_``, configurable with ``namespace``); counters end in ``_total``:

- per reader type (label ``reader_type``): ``reader_ticks_total``, ``reader_reads_total``,
  ``reader_samples_total``, ``reader_bad_samples_total``, ``reader_missed_ticks_total``,
  ``reader_missed_samples_total``, ``reader_read_errors_total``; gauges ``reader_tick_seconds``,
  ``reader_variables``, ``reader_lateness_seconds`` (label ``quantile``: 0.5, 0.99 and 1 for the
  maximum, over the last 10,000 wake-ups), ``reader_read_duration_seconds`` (label ``stat``:
  ``last`` or ``max``);
- per writer (label ``writer``): ``writer_batches_total``, ``writer_samples_delivered_total``,
  ``writer_samples_written_total``, ``writer_write_errors_total``, ``writer_retried_ok_total``,
  ``writer_lost_batches_total``, ``writer_lost_samples_total``, ``writer_dropped_batches_total``,
  ``writer_dropped_samples_total``, ``writer_unwritten_samples_total``,
  ``writer_replayed_samples_total``, ``writer_flushes_total``; gauges ``writer_queue_samples``,
  ``writer_max_queue_samples``, ``writer_unflushed_samples``, ``writer_spooled_samples``,
  ``writer_spool_bytes``, ``writer_oldest_spooled_seconds``, ``writer_quarantined_batches``;
- per context (label ``context``): ``context_samples_total``, and ``context_state`` (label
  ``state``: 1 for the context's state, 0 for the others); ``contexts``, the number of started or
  scheduled contexts. A stopped context leaves these families, as it leaves ``stats()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import ConfigurationError

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import CollectorRegistry
except ImportError as _exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        'data_collector.metrics needs prometheus-client: pip install "data-collector[metrics]"'
    ) from _exc

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ._collector import CollectorStats, DataCollector

__all__ = ["CONTEXT_STATES", "CollectorMetrics", "render"]

#: Every state a context can be in (``context_state`` has one sample per state).
CONTEXT_STATES = ("scheduled", "starting", "running", "paused", "stopping")

_LABEL_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

# (name, help, attribute of the stats record) -- counters get "_total" from prometheus-client
_READER_COUNTERS = (
    ("reader_ticks", "Wake-ups of the reader's thread at a due boundary.", "ticks"),
    ("reader_reads", "read() calls.", "reads"),
    ("reader_samples", "Values read, one per variable and read (BAD ones included).", "samples"),
    ("reader_bad_samples", "Samples read with quality BAD.", "bad_samples"),
    ("reader_missed_ticks", "Due boundaries passed without their own read.", "missed_ticks"),
    ("reader_missed_samples", "BAD samples made for boundaries passed without a read.", "missed_samples"),
    ("reader_read_errors", "read() calls (or ticks) that raised.", "read_errors"),
)
_WRITER_COUNTERS = (
    ("writer_batches", "Batches handed to the writer's queue.", "batches"),
    ("writer_samples_delivered", "Samples handed to the writer's queue.", "samples_delivered"),
    (
        "writer_samples_written",
        "Samples the writer stored (flushed, for writers that buffer).",
        "samples_written",
    ),
    ("writer_write_errors", "Failed write() or flush() calls (retried or not).", "write_errors"),
    ("writer_retried_ok", "Writes or flushes that succeeded after failures.", "retried_ok"),
    ("writer_lost_batches", "Batches given up (an error retrying cannot fix).", "lost_batches"),
    ("writer_lost_samples", "Samples given up (an error retrying cannot fix).", "lost_samples"),
    ("writer_dropped_batches", "Batches dropped: queue or spool full.", "dropped_batches"),
    ("writer_dropped_samples", "Samples dropped: queue or spool full.", "dropped_samples"),
    ("writer_unwritten_samples", "Samples still queued when close() gave up.", "unwritten_samples"),
    ("writer_replayed_samples", "Samples of an earlier run replayed from the spool.", "replayed_samples"),
    ("writer_flushes", "flush() calls that succeeded.", "flushes"),
)
_WRITER_GAUGES = (
    (
        "writer_queue_samples",
        "Samples delivered but not written yet (queued, being written, unflushed).",
        "queue_depth",
    ),
    ("writer_max_queue_samples", "The largest queue depth seen.", "max_queue_depth"),
    (
        "writer_unflushed_samples",
        "Samples taken by a buffering writer, not flushed yet.",
        "unflushed_samples",
    ),
    ("writer_spooled_samples", "Samples in the writer's spool on disk, not written yet.", "spooled_samples"),
    ("writer_spool_bytes", "Bytes of the writer's spool on disk.", "spool_bytes"),
    ("writer_oldest_spooled_seconds", "Age of the oldest sample in the spool (0: none).", "oldest_spooled_s"),
    ("writer_quarantined_batches", "Batches in the spool's quarantine folder.", "quarantined_batches"),
)


class CollectorMetrics:
    """A prometheus-client collector of one :class:`DataCollector`'s :meth:`~DataCollector.stats`.

    ``namespace`` prefixes every metric name (``data_collector``); ``labels`` are added to every
    sample (e.g. ``{"collector": "press-line-2"}`` to tell collectors apart in one registry);
    writers named in ``exclude_writers`` are left out. Register it in a registry of yours with
    :meth:`register` (or ``registry.register(metrics)``); it reads the collector only while the
    registry is scraped, also after ``close()`` (then the final counters).
    """

    def __init__(
        self,
        collector: DataCollector,
        *,
        namespace: str = "data_collector",
        labels: Mapping[str, str] | None = None,
        exclude_writers: Iterable[str] = (),
    ) -> None:
        from ._collector import DataCollector

        if not isinstance(collector, DataCollector):
            raise ConfigurationError(f"CollectorMetrics needs a DataCollector, got {collector!r}")
        if not isinstance(namespace, str) or not _valid_name(namespace):
            raise ConfigurationError(
                f"namespace must be a metric name prefix (letters, digits, _; not starting with a digit), "
                f"got {namespace!r}"
            )
        extra = dict(labels or {})
        for key, value in extra.items():
            if not isinstance(key, str) or not _valid_name(key) or key.startswith("__"):
                raise ConfigurationError(f"labels: {key!r} is not a Prometheus label name")
            if key in ("reader_type", "writer", "context", "state", "quantile", "stat"):
                raise ConfigurationError(f"labels: {key!r} is a label of the metrics themselves")
            if not isinstance(value, str):
                raise ConfigurationError(f"labels: the value of {key!r} must be a str, got {value!r}")
        if isinstance(exclude_writers, str):
            raise ConfigurationError(
                f"exclude_writers must be names (a list), got the str {exclude_writers!r}"
            )
        self.collector = collector
        self.namespace = namespace
        self.labels: Mapping[str, str] = extra
        self.exclude_writers = frozenset(exclude_writers)

    def register(self, registry: CollectorRegistry) -> CollectorMetrics:
        """Register in ``registry`` (returns self); :class:`ConfigurationError` when its metric
        names are taken there already (by another collector: one per registry)."""
        if not isinstance(registry, CollectorRegistry):
            raise ConfigurationError(
                f"metrics must be a prometheus_client.CollectorRegistry, got {registry!r}"
            )
        try:
            registry.register(self)
        except ValueError:  # prometheus_client's DuplicateTimeseries
            taken = sorted(self._name(name) for name, _doc, _attr in _READER_COUNTERS)
            raise ConfigurationError(
                f"the registry already holds these metrics (e.g. {taken[0]}): another collector's? Use "
                "one registry per collector"
            ) from None
        return self

    def _name(self, name: str) -> str:
        return f"{self.namespace}_{name}"

    def describe(self) -> list[Metric]:
        """The metric families without samples (lets a registry check for duplicate names)."""
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        """The metric families of a fresh ``stats()`` snapshot."""
        return iter(self._families(self.collector.stats()))

    def _families(self, stats: CollectorStats | None) -> list[Metric]:
        keys = list(self.labels)
        values = list(self.labels.values())
        families: list[Metric] = []

        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            family = CounterMetricFamily(self._name(name), doc, labels=[*keys, *labels])
            families.append(family)
            return family

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            family = GaugeMetricFamily(self._name(name), doc, labels=[*keys, *labels])
            families.append(family)
            return family

        readers = sorted(stats.readers.items()) if stats is not None else []
        for name, doc, attr in _READER_COUNTERS:
            fam_c = counter(name, doc, ["reader_type"])
            for rt, rs in readers:
                fam_c.add_metric([*values, rt], getattr(rs, attr))
        fam = gauge(
            "reader_tick_seconds", "The reader's tick: the GCD of its variables' intervals.", ["reader_type"]
        )
        for rt, rs in readers:
            fam.add_metric([*values, rt], rs.tick_ms / 1000)
        fam = gauge(
            "reader_variables", "Variables the reader reads for the running contexts.", ["reader_type"]
        )
        for rt, rs in readers:
            fam.add_metric([*values, rt], rs.variables)
        fam = gauge(
            "reader_lateness_seconds",
            "Wake-up lateness after the boundary over the last 10,000 wake-ups (quantile 1: the maximum).",
            ["reader_type", "quantile"],
        )
        for rt, rs in readers:
            for q, us in (
                ("0.5", rs.lateness_p50_us),
                ("0.99", rs.lateness_p99_us),
                ("1", rs.lateness_max_us),
            ):
                fam.add_metric([*values, rt, q], us / 1e6)
        fam = gauge(
            "reader_read_duration_seconds",
            "Duration of read() calls: the last one, and the longest.",
            ["reader_type", "stat"],
        )
        for rt, rs in readers:
            fam.add_metric([*values, rt, "last"], rs.last_read_ms / 1000)
            fam.add_metric([*values, rt, "max"], rs.max_read_ms / 1000)

        writers = (
            sorted((n, w) for n, w in stats.writers.items() if n not in self.exclude_writers)
            if stats is not None
            else []
        )
        for name, doc, attr in _WRITER_COUNTERS:
            fam_c = counter(name, doc, ["writer"])
            for wn, ws in writers:
                fam_c.add_metric([*values, wn], getattr(ws, attr))
        for name, doc, attr in _WRITER_GAUGES:
            fam = gauge(name, doc, ["writer"])
            for wn, ws in writers:
                fam.add_metric([*values, wn], getattr(ws, attr))

        contexts = sorted(stats.contexts.items()) if stats is not None else []
        fam = gauge("contexts", "Contexts started or scheduled (stopped ones leave).", [])
        if stats is not None:
            fam.add_metric(values, len(contexts))
        fam_c = counter("context_samples", "Samples delivered for the context.", ["context"])
        for cid, cs in contexts:
            fam_c.add_metric([*values, str(cid)], cs.samples)
        fam = gauge("context_state", "1 for the context's state, 0 for the others.", ["context", "state"])
        for cid, cs in contexts:
            for state in CONTEXT_STATES:
                fam.add_metric([*values, str(cid), state], 1.0 if cs.state == state else 0.0)
        return families


def render(collector: DataCollector, **options: Any) -> str:
    """The metrics of ``collector`` in the Prometheus text format (for a log, a test, a file
    for node_exporter's textfile collector), through a registry of its own; ``options`` are
    :class:`CollectorMetrics`'s."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=True)
    CollectorMetrics(collector, **options).register(registry)
    return generate_latest(registry).decode("utf-8")


def _valid_name(name: str) -> bool:
    return bool(name) and not name[0].isdigit() and set(name) <= _LABEL_NAME_OK
