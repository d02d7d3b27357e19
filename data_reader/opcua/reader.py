"""OPC UA reader: values of OPC UA server nodes, polled or subscribed (asyncua, extra ``opcua``).

Serves any OPC UA server reachable over ``opc.tcp`` (PLCs, SCADA gateways, KEPServerEX, Prosys,
open62541, asyncua, ...). The asyncua client runs in the reader's own thread and event loop; the
collector's calls (:meth:`~OpcUaDataReader.read`, :meth:`~OpcUaDataReader.write`) are synchronous.

Addresses (``Variable.address``) are NodeId strings::

    ns=2;s=Boiler.Temp                          string identifier
    ns=2;i=1001                                 numeric identifier (i=2258 alone: namespace 0)
    ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a GUID identifier
    ns=2;b=M/RbKBsRVkePCePcx24oRA==             opaque identifier (base64)
    nsu=urn:plant;s=Boiler.Temp                 namespace by URI, resolved at every (re)connect

A malformed address fails ``DataCollector.start()`` with :class:`ConfigurationError`; a node the
server does not know only makes its own variable ``BAD`` (``BadNodeIdUnknown``).

Value types: ``float``, ``int``, ``bool``, ``str`` and ``bytes`` (ByteString). The OPC UA status
code gives the quality (Good / Uncertain / Bad by its severity) and, unless Good, its name is the
error text (``BadNodeIdUnknown``, ``UncertainLastUsableValue``, ...). A value that does not fit the
variable's type (a float 2.5 read as ``int``) is ``BAD`` with the reason.

Options (keyword arguments). The connection and security ones (``timeout_s``, ``security_*``,
certificates and keys, user identity, session, watchdog, reconnect and keep-alive timing) may
instead be given as one frozen :class:`~data_reader.opcua.options.OpcUaConnection` object,
``connection=OpcUaConnection(...)`` (shared by several readers; not both ways at once):

- ``mode``: ``"poll"`` (default) reads all due nodes of a tick in one Read service call (split
  only by the server's MaxNodesPerRead); ``"subscribe"`` monitors the nodes instead (see below).
- ``timeout_s`` (5): per request; a tick never waits much longer.
- ``source_timestamps`` (False): use the server's SourceTimestamp as ``read_at`` (else the tick time).
- ``security_policy`` ``"None"`` (default) / ``"Basic256Sha256"`` / ``"Aes128Sha256RsaOaep"`` /
  ``"Aes256Sha256RsaPss"`` with ``security_mode`` ``"Sign"`` / ``"SignAndEncrypt"`` (default),
  ``certificate`` + ``private_key`` (+ ``private_key_password``) of this client (paths or
  PEM/DER bytes) and optionally ``server_certificate`` (pinned; else taken from the server's
  endpoint list). ``application_uri`` defaults to the URI in the client certificate.
- user authentication: anonymous (default), ``username`` + ``password``, or
  ``user_certificate`` + ``user_private_key``. Passwords never appear in logs or error texts.
- reconnection: session loss is detected by a keep-alive watchdog (``watchdog_interval_s``, 1 s),
  dead sockets and silent subscriptions; variables are ``BAD`` with the reason meanwhile, and the
  reader reconnects with a capped exponential backoff (``reconnect_min_delay_s`` 0.5 s to
  ``reconnect_max_delay_s`` 10 s), resolving namespace URIs and re-creating subscriptions.
- ``item_retry_max_s`` (5): subscribe mode, the cap of a failed monitored item's retry delay.
- ``reader_type`` (``"opcua"``), ``min_interval_ms``: as for every :class:`DataReader`.

Subscribe mode: the monitored items follow the contexts' variables. The collector tells the
reader (:meth:`~OpcUaDataReader.variables_changed`) every variable it reads with it and the
interval at which it reads it (the GCD of the intervals the running contexts want, a context's
``default_interval_ms`` applying to variables without ``interval_ms``) whenever a context starts,
stops, pauses or resumes. The reader then creates one monitored item per new node and interval
(sampling interval = that interval; one subscription per interval, publishing at least every
250 ms), moves an item whose interval changed, and deletes the items (and subscriptions) no longer
read; a stop or pause with nothing else running deletes them all. It waits for the server (at
most ``timeout_s``) so the first tick of the new schedule finds the items in place; a server out
of reach delays nothing: the items are created when it answers. After every reconnect the items
of the last announced set are created again. New items are primed with one Read, so the first
tick has a value; each tick then delivers the latest value received, UNCERTAIN when the server
has not confirmed it for ``max_age_s`` (default: three keep-alive periods, ``keepalive_s`` 1 s).
Server queues hold one value per item and the client keeps only the latest one per node (no
client-side queue), so no queue can overflow and silently drop recent data.

Nodes that appear or vanish (subscribe mode): a monitored item the server refuses (a node that
does not exist yet: ``BadNodeIdUnknown``; too many items...) makes its variables ``BAD`` with the
status name, and is created again on its own backoff (0.5 s doubling up to ``item_retry_max_s``,
5 s) and at once after every announcement, without touching the session, so a node added later
is followed within a few seconds. A node deleted while monitored makes only its own variables
``BAD`` (``BadNodeIdUnknown``) and is retried the same way, the session and the other items
staying up: servers say so by a data change with that status, or by a StatusChangeNotification
about a node (python-opcua; it does not name the item, so the subscription's nodes are read once
to find it). A server that says nothing (asyncua 2.1's own ``delete_nodes``, asyncua issue
#1771) leaves the item GOOD with its last value: nothing on the wire tells it from a value that
does not change. A status change about the subscription itself (``BadTimeout``...) still
replaces the session.
:meth:`~OpcUaDataReader.opcua_stats` counts reconnects, failing items, their retries and lost items.

Used directly, without a collector, a subscribe-mode reader monitors a node the first time
:meth:`~OpcUaDataReader.read` gets a variable that was never announced, at the variable's
``interval_ms`` or else ``default_interval_ms`` (1000), waiting at most ``first_value_wait_s``
(``min(timeout_s, 2)``) for its first value; such items stay until the reader closes or the next
announcement (which replaces the whole set). A variable the last announcement removed is not
monitored again on read: it gets the last value received (a tick of the schedule that just ended
may still read it), UNCERTAIN once older than ``max_age_s`` (3 s by default).

:meth:`~OpcUaDataReader.write` writes a value to a node (converted to the node's data type).

Example (runnable: it starts the bundled simulator)::

    import logging, time
    from data_collector import DataCollectionContext, DataCollector, Variable
    from data_reader.opcua import OpcUaDataReader
    from data_reader.opcua.simulator import OpcUaSimulator
    from data_writer.csv import CsvFileDataWriter

    with OpcUaSimulator() as sim:                       # opc.tcp://127.0.0.1:<free port>
        reader = OpcUaDataReader(sim.endpoint, mode="subscribe")
        variables = [
            Variable(1, "nsu=urn:data-collector:simulator;s=Sim.Sine", "float", "opcua", interval_ms=500),
            Variable(2, "nsu=urn:data-collector:simulator;s=Sim.Counter", "int", "opcua", interval_ms=1000),
        ]
        with DataCollector(logging.getLogger("dc"), [reader], [CsvFileDataWriter("opcua.csv")]) as dc:
            dc.start(DataCollectionContext(1, variables))
            time.sleep(5)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from data_collector import (
    CollectedVariable,
    CollectedVariables,
    ConfigurationError,
    DataReader,
    Quality,
    ReaderError,
    Variable,
)

from ._address import NodeAddress, UnknownNamespaceError, parse_address
from ._connection import ConnectFailed, LinkOptions, describe_error
from ._convert import VALUE_TYPES, convert, quality_of, status_name, to_variant
from ._link import Link
from ._loop import LoopThread
from ._subscriptions import ItemKey, MonitoredItem
from ._ua import read_value_id, ua
from .options import OpcUaConnection, PathOrBytes, _check_positive

__all__ = ["OpcUaDataReader"]

_logger = logging.getLogger(__name__)

_CONNECTION_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(OpcUaConnection) if f.init
}


class OpcUaDataReader(DataReader):
    """Reads OPC UA nodes by polling or subscription (see the module docstring for the options)."""

    reader_type = "opcua"
    value_types = frozenset(VALUE_TYPES - {"float", "int", "bool", "str"})

    def __init__(
        self,
        endpoint: str,
        *,
        reader_type: str | None = None,
        min_interval_ms: int | None = None,
        mode: Literal["poll", "subscribe"] = "poll",
        timeout_s: float = 5.0,
        security_policy: str = "None",
        security_mode: str | None = None,
        certificate: PathOrBytes | None = None,
        private_key: PathOrBytes | None = None,
        private_key_password: str | None = None,
        server_certificate: PathOrBytes | None = None,
        application_uri: str | None = None,
        username: str | None = None,
        password: str | None = None,
        user_certificate: PathOrBytes | None = None,
        user_private_key: PathOrBytes | None = None,
        user_private_key_password: str | None = None,
        source_timestamps: bool = False,
        max_age_s: float | None = None,
        default_interval_ms: int = 1000,
        first_value_wait_s: float | None = None,
        session_timeout_s: float = 60.0,
        watchdog_interval_s: float = 1.0,
        reconnect_min_delay_s: float = 0.5,
        reconnect_max_delay_s: float = 10.0,
        keepalive_s: float = 1.0,
        item_retry_max_s: float = 5.0,
        logger: logging.Logger | None = None,
        connection: OpcUaConnection | None = None,
    ) -> None:
        super().__init__(reader_type=reader_type, min_interval_ms=min_interval_ms)
        cls = type(self).__name__
        endpoint, url_user, url_password = _split_endpoint(endpoint, cls)
        if mode not in ("poll", "subscribe"):
            raise ConfigurationError(f"{cls}: mode must be 'poll' or 'subscribe', got {mode!r}")
        _check_positive(cls, "item_retry_max_s", item_retry_max_s)
        if max_age_s is not None:
            _check_positive(cls, "max_age_s", max_age_s)
        if first_value_wait_s is not None and (
            isinstance(first_value_wait_s, bool)
            or not isinstance(first_value_wait_s, int | float)
            or not 0 <= first_value_wait_s < math.inf
        ):
            raise ConfigurationError(
                f"{cls}: first_value_wait_s must be a number >= 0, got {first_value_wait_s!r}"
            )
        if (
            isinstance(default_interval_ms, bool)
            or not isinstance(default_interval_ms, int)
            or default_interval_ms <= 0
        ):
            raise ConfigurationError(
                f"{cls}: default_interval_ms must be an int > 0, got {default_interval_ms!r}"
            )
        keywords: dict[str, Any] = {
            "timeout_s": timeout_s,
            "security_policy": security_policy,
            "security_mode": security_mode,
            "certificate": certificate,
            "private_key": private_key,
            "private_key_password": private_key_password,
            "server_certificate": server_certificate,
            "application_uri": application_uri,
            "username": username,
            "password": password,
            "user_certificate": user_certificate,
            "user_private_key": user_private_key,
            "user_private_key_password": user_private_key_password,
            "session_timeout_s": session_timeout_s,
            "watchdog_interval_s": watchdog_interval_s,
            "reconnect_min_delay_s": reconnect_min_delay_s,
            "reconnect_max_delay_s": reconnect_max_delay_s,
            "keepalive_s": keepalive_s,
        }
        if connection is not None:
            if not isinstance(connection, OpcUaConnection):
                raise ConfigurationError(
                    f"{cls}: connection must be an OpcUaConnection, got {type(connection).__name__}"
                )
            given = [name for name, value in keywords.items() if value != _CONNECTION_DEFAULTS[name]]
            if given:
                raise ConfigurationError(
                    f"{cls}: give the connection options either as connection= or as keywords, not both "
                    f"(also given as keywords: {', '.join(given)})"
                )
        if url_user is not None:  # user info in the endpoint URL, unless given otherwise
            base = connection if connection is not None else None
            named = base.username if base is not None else keywords["username"]
            if named is None:
                given_password = base.password if base is not None else keywords["password"]
                changes = {
                    "username": url_user,
                    "password": given_password if given_password is not None else url_password,
                }
                if base is not None:
                    connection = _connection(cls, base.replace, changes)
                else:
                    keywords.update(changes)
        if connection is None:
            connection = _connection(cls, OpcUaConnection, keywords)
        self.connection = connection
        self.endpoint = endpoint
        self.mode = mode
        self.timeout_s = float(connection.timeout_s)
        self.source_timestamps = bool(source_timestamps)
        self.max_age_s = max_age_s
        self.default_interval_ms = default_interval_ms
        self.first_value_wait_s = (
            min(self.timeout_s, 2.0) if first_value_wait_s is None else float(first_value_wait_s)
        )
        self._options = LinkOptions(
            endpoint=endpoint,
            timeout_s=self.timeout_s,
            security_policy=connection.security_policy,
            security_mode=connection.effective_security_mode,
            application_uri=connection.effective_application_uri,
            session_timeout_s=float(connection.session_timeout_s),
            watchdog_interval_s=float(connection.watchdog_interval_s),
            reconnect_min_delay_s=float(connection.reconnect_min_delay_s),
            reconnect_max_delay_s=float(connection.reconnect_max_delay_s),
            keepalive_s=float(connection.keepalive_s),
            source_timestamps=self.source_timestamps,
            item_retry_min_s=min(0.5, float(item_retry_max_s)),
            item_retry_max_s=float(item_retry_max_s),
            credentials=connection.credentials,
        )
        self._log = logger or _logger
        self._loop = LoopThread(f"opcua-{self.reader_type}")
        self._link: Link | None = None
        self._lock = threading.Lock()
        self._addresses: dict[str, NodeAddress | str] = {}  # address text -> parsed, or parse error
        self._rv_generation = -1
        self._rv_cache: dict[str, ua.ReadValueId | str] = {}
        # subscribe mode: the last announced variables and intervals, their items on the open
        # link, and the items of variables the last announcement dropped (a tick of the schedule
        # that just ended may still read them: it gets their last value). The dicts are replaced,
        # never changed, so the reading thread needs no lock.
        self._intervals: dict[Variable, int] = {}
        self._subscribed: dict[Variable, MonitoredItem] = {}
        self._dropped: dict[Variable, MonitoredItem] = {}

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Start the reader's event loop and connect (waits at most about ``3 * timeout_s``).

        An unreachable server is not an error here: variables read ``BAD`` until it answers. A
        rejection that retrying cannot cure (credentials, certificates, security settings) raises
        :class:`ReaderError`.
        """
        with self._lock:
            if self._link is not None:
                return
            self._rv_generation, self._rv_cache = -1, {}  # a new session: resolve addresses again
            self._loop.start()
            link = Link(self._options, self._log)
            try:
                self._loop.call(link.start(), timeout=self.timeout_s * 3 + 5)
            except ConnectFailed as exc:
                self._abandon(link)
                raise ReaderError(f"{self!r}: {exc}") from None
            except TimeoutError:
                self._log.warning(
                    "%r: first connection attempt still running; continuing in the background", self
                )
            except BaseException:
                self._abandon(link)
                raise
            if not link.connected:
                self._log.warning(
                    "%r: not connected yet (%s); retrying in the background", self, link.last_error
                )
            self._link = link
            if self.mode == "subscribe":
                self._subscribe(link)  # a reopened reader: the last announced variables

    def _abandon(self, link: Link) -> None:
        """A failed open(): stop what it started, leaving the reader closed."""
        try:
            self._loop.call(link.close(), timeout=self.timeout_s + 2)
        except Exception as exc:
            self._log.debug("%r: error while abandoning a failed open: %s", self, describe_error(exc))
        self._loop.stop()

    def close(self) -> None:
        """Disconnect and stop the reader's thread. The reader may be opened again."""
        with self._lock:
            link, self._link = self._link, None
            self._subscribed, self._dropped = {}, {}
            if link is not None:
                try:
                    self._loop.call(link.close(), timeout=self.timeout_s + 5)
                except Exception as exc:  # closing must not fail the collector's close()
                    self._log.warning("%r: error while closing: %s", self, describe_error(exc))
            self._loop.stop()

    def __enter__(self) -> OpcUaDataReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """True while a session with the server is up."""
        link = self._link
        return link is not None and link.connected

    def opcua_stats(self) -> dict[str, Any]:
        """Counters of this reader: connection, Read calls, notifications, reconnects, ...

        Subscribe mode also counts the monitored items failing now (``failed_items``), their
        retries (``item_retries``) and the items whose node went away while monitored
        (``items_lost``). ``reconnects`` counts sessions replaced after a loss.
        """
        link = self._link
        if link is None:
            return {"connected": False, "endpoint": self.endpoint, "mode": self.mode}
        return {
            "connected": link.connected,
            "endpoint": self.endpoint,
            "mode": self.mode,
            "last_error": link.last_error,
            "namespaces": list(link.namespaces),
            "max_nodes_per_read": link.max_nodes_per_read,
            "read_requests": link.read_requests,
            "nodes_read": link.nodes_read,
            "notifications": link.notifications,
            "monitored_items": sum(1 for i in link.items() if i.monitored_id is not None),
            "subscriptions": link.subscription_count,
            "sampling_intervals_ms": sorted(
                {i.sampling_ms for i in link.items() if i.monitored_id is not None}
            ),
            "failed_items": sum(1 for i in link.items() if i.error is not None),
            "item_retries": link.item_retries,
            "items_lost": link.items_lost,
            "reconnects": link.reconnects,
            "connect_failures": link.connect_failures,
        }

    # ------------------------------------------------------------------ validation

    def validate_variable(self, variable: Variable) -> None:
        """Reject a malformed NodeId or an unsupported value type with :class:`ConfigurationError`."""
        if variable.value_type not in VALUE_TYPES:
            raise ConfigurationError(
                f"variable {variable.id}: value_type {variable.value_type!r} is not supported by "
                f"{type(self).__name__} (use one of {', '.join(sorted(VALUE_TYPES))})"
            )
        parsed = self._address(variable.address)
        if isinstance(parsed, str):
            raise ConfigurationError(f"variable {variable.id}: {parsed}")

    def variables_changed(self, intervals: Mapping[Variable, int]) -> None:
        """Subscribe mode: monitor exactly these variables at these intervals (see the module
        docstring); waits at most ``timeout_s`` for the server, never raises. Poll mode: no-op."""
        if self.mode != "subscribe":
            return
        with self._lock:
            self._intervals = dict(intervals)
            link = self._link
            if link is None:
                return  # open() subscribes them
            self._subscribe(link)
        if not link.connected:
            return  # created on (re)connect
        try:
            self._loop.submit(link.sync()).result(self.timeout_s)
        except TimeoutError:  # not cancelled: it goes on in the background
            self._log.warning(
                "%r: monitored items not all updated within %g s; continuing in the background",
                self,
                self.timeout_s,
            )
        except Exception as exc:
            self._log.warning("%r: monitored item update failed: %s", self, describe_error(exc))

    def _subscribe(self, link: Link) -> None:
        """Make the link's monitored items those of the announced variables (caller: ``_lock``)."""
        wanted: dict[ItemKey, NodeAddress] = {}
        keys: dict[Variable, ItemKey] = {}
        for variable, interval_ms in self._intervals.items():
            parsed = self._address(variable.address)
            if isinstance(parsed, str):
                continue  # rejected by validate_variable; read() reports it
            keys[variable] = key = (parsed.text, interval_ms)
            wanted[key] = parsed
        items = link.assign(wanted)
        subscribed = {variable: items[key] for variable, key in keys.items()}
        # in this order: a tick reading a dropped variable finds it in one or the other
        self._dropped = {v: m for v, m in self._subscribed.items() if v not in subscribed}
        self._subscribed = subscribed

    def _address(self, text: str) -> NodeAddress | str:
        parsed = self._addresses.get(text)
        if parsed is None:
            try:
                parsed = parse_address(text)
            except ValueError as exc:
                parsed = str(exc)
            self._addresses[text] = parsed
        return parsed

    # ------------------------------------------------------------------ reads

    def read(self, variables: CollectedVariables) -> None:
        link = self._link
        if link is None:
            _all_bad(variables, "reader is not open")
            return
        if self.mode == "poll":
            self._read_polled(link, variables)
        else:
            self._read_subscribed(link, variables)

    def _read_polled(self, link: Link, variables: CollectedVariables) -> None:
        if not link.connected:
            _all_bad(variables, link.last_error)
            return
        if link.generation != self._rv_generation:  # new session: namespace indexes may have moved
            self._rv_cache = {}
            self._rv_generation = link.generation
        cache = self._rv_cache
        nodes: list[ua.ReadValueId] = []
        positions: dict[str, int] = {}
        pending: list[tuple[CollectedVariable, int]] = []
        for item in variables:
            text = item.variable.address
            pos = positions.get(text)
            if pos is None:
                rv = cache.get(text)
                if rv is None:
                    rv = cache[text] = self._read_value_id(link, text)
                if isinstance(rv, str):
                    item.set_bad(rv)
                    continue
                pos = positions[text] = len(nodes)
                nodes.append(rv)
            pending.append((item, pos))
        if not nodes:
            return
        try:
            results = self._loop.call(link.read(nodes), timeout=self.timeout_s + 1)
        except Exception as exc:
            error = f"read failed: {describe_error(exc)}"
            for item, _ in pending:
                item.set_bad(error)
            return
        if len(results) != len(nodes):
            error = f"read failed: the server returned {len(results)} results for {len(nodes)} nodes"
            for item, _ in pending:
                item.set_bad(error)
            return
        source = self.source_timestamps
        for item, pos in pending:
            dv = results[pos]
            code = dv.StatusCode.value if dv.StatusCode is not None else 0
            variant = dv.Value
            self._fill(item, variant.Value if variant is not None else None, code)
            if source and item.quality is not Quality.BAD:
                ts = dv.SourceTimestamp or dv.ServerTimestamp
                if ts is not None:
                    item.read_at = ts

    def _read_value_id(self, link: Link, text: str) -> ua.ReadValueId | str:
        parsed = self._address(text)
        if isinstance(parsed, str):
            return parsed
        try:
            nodeid = parsed.resolve(link.namespaces)
        except UnknownNamespaceError as exc:
            return str(exc)
        return read_value_id(nodeid)

    @staticmethod
    def _fill(item: CollectedVariable, value: Any, code: int) -> None:
        quality = quality_of(code)
        if quality is Quality.BAD:
            item.set_bad(status_name(code))
            return
        try:
            item.value = convert(value, item.variable.value_type)
        except (TypeError, ValueError) as exc:
            item.set_bad(str(exc))
            return
        item.quality = quality
        item.error = None if quality is Quality.GOOD else status_name(code)

    def _unannounced(self, link: Link, variable: Variable) -> MonitoredItem | str:
        """The fallback for a variable read without being announced (a reader used directly)."""
        parsed = self._address(variable.address)
        if isinstance(parsed, str):
            return parsed
        interval_ms = variable.interval_ms if variable.interval_ms is not None else self.default_interval_ms
        return link.want(parsed, interval_ms)

    def _read_subscribed(self, link: Link, variables: CollectedVariables) -> None:
        pairs: list[tuple[CollectedVariable, MonitoredItem]] = []
        subscribed, dropped = self._subscribed, self._dropped
        for item in variables:
            variable = item.variable
            monitored: MonitoredItem | str | None = subscribed.get(variable) or dropped.get(variable)
            if monitored is None:
                monitored = self._unannounced(link, variable)
            if isinstance(monitored, str):
                item.set_bad(monitored)
            else:
                pairs.append((item, monitored))
        if not link.connected:
            for item, _ in pairs:
                item.set_bad(link.last_error)
            return
        self._wait_first_values(link, [m for _, m in pairs])
        now = time.monotonic()
        source = self.source_timestamps
        for item, monitored in pairs:
            if monitored.error is not None:
                item.set_bad(monitored.error)
                continue
            latest = monitored.latest
            if latest is None:
                item.set_bad("no value received from the subscription yet")
                continue
            value, code, timestamp, received = latest
            self._fill(item, value, code)
            if item.quality is Quality.BAD:
                continue
            if source and timestamp is not None:
                item.read_at = timestamp
            sub = monitored.subscription
            confirmed = max(received, sub.last_publish) if sub is not None else received
            limit = self.max_age_s
            if limit is None:
                limit = 3 * max(sub.keepalive_s, sub.publishing_ms / 1000) if sub is not None else 3.0
            age = now - confirmed
            if age > limit and item.quality is Quality.GOOD:
                item.quality = Quality.UNCERTAIN
                item.error = f"value not confirmed by the server for {age:.1f} s (max_age_s {limit:g})"

    def _wait_first_values(self, link: Link, items: list[MonitoredItem]) -> None:
        """Give monitored items created moments ago a bounded chance to get their initial value."""
        window = self.first_value_wait_s
        if window <= 0:
            return
        start = time.monotonic()
        deadline = start + window

        def waiting() -> list[MonitoredItem]:
            now = time.monotonic()
            return [
                m
                for m in items
                if m.latest is None
                and m.error is None
                and now - max(m.created_at, m.armed_at or 0.0) < window
            ]

        pending = waiting()
        while pending and link.connected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            link.first_value.wait(min(remaining, 0.1))
            link.first_value.clear()
            pending = [m for m in pending if m.latest is None and m.error is None]

    # ------------------------------------------------------------------ writes

    def write(self, variable: Variable, value: Any) -> None:
        """Write ``value`` to the node of ``variable``, as the node's own data type.

        Raises :class:`ConfigurationError` for a bad address or a value that does not fit the
        variable's value type or the node's data type, and :class:`ReaderError` when the server
        cannot be reached or refuses the write (the status name is in the message).
        """
        if variable.reader_type != self.reader_type:
            raise ConfigurationError(
                f"variable {variable.id} has reader_type {variable.reader_type!r}, not {self.reader_type!r}"
            )
        parsed = self._address(variable.address)
        if isinstance(parsed, str):
            raise ConfigurationError(f"variable {variable.id}: {parsed}")
        try:
            checked = convert(value, variable.value_type)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"variable {variable.id}: cannot write {value!r}: {exc}") from None
        link = self._link
        where = f"cannot write {checked!r} to variable {variable.id} at {variable.address!r}"
        if link is None:
            raise ReaderError(f"{where}: reader is not open")
        if not link.connected:
            raise ReaderError(f"{where}: {link.last_error}")
        try:
            nodeid = parsed.resolve(link.namespaces)
        except UnknownNamespaceError as exc:
            raise ReaderError(f"{where}: {exc}") from None
        try:
            self._loop.call(link.write(nodeid, checked, to_variant), timeout=self.timeout_s * 2 + 1)
        except ValueError as exc:
            raise ConfigurationError(f"{where}: {exc}") from exc
        except Exception as exc:
            raise ReaderError(f"{where}: {describe_error(exc)}") from exc

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.endpoint!r}, reader_type={self.reader_type!r}, mode={self.mode!r})"
        )


def _all_bad(variables: CollectedVariables, error: str) -> None:
    for item in variables:
        item.set_bad(error)


def _split_endpoint(endpoint: object, cls: str) -> tuple[str, str | None, str | None]:
    """``opc.tcp://[user[:password]@]host:port[/path]`` -> (URL without user info, user, password)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ConfigurationError(f"{cls}: endpoint must be a non-empty str, got {endpoint!r}")
    try:
        parts = urlsplit(endpoint.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{cls}: invalid endpoint URL: {exc}") from None
    user = password = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        name, has_password, secret = userinfo.partition(":")
        user = unquote(name) or None
        password = unquote(secret) if has_password else None
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    if parts.scheme != "opc.tcp" or not parts.hostname:
        raise ConfigurationError(f"{cls}: endpoint must look like opc.tcp://host:port[/path], got {clean!r}")
    if port is None:
        raise ConfigurationError(f"{cls}: endpoint {clean!r} has no port (the OPC UA default is 4840)")
    return clean, user, password


def _connection(
    cls: str, make: Callable[..., OpcUaConnection], options: Mapping[str, Any]
) -> OpcUaConnection:
    """``make(**options)``, its errors naming the reader class (the keywords were given to it)."""
    try:
        return make(**options)
    except ConfigurationError as exc:
        raise ConfigurationError(str(exc).replace("OpcUaConnection: ", f"{cls}: ", 1)) from None
