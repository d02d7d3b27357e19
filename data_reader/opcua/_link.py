"""The OPC UA session of one reader: connect, watch, reconnect, read, subscribe, write.

Everything here runs on the reader's own event loop (see :mod:`._loop`), except the few methods
marked *thread-safe*, which the reader's synchronous side calls from the collector's thread.

A lost session is replaced by a brand-new asyncua ``Client`` (asyncua 2.x can reconnect by itself,
but it restores the old NodeIds, which is wrong when a restarted server registered its namespaces
in another order): namespace URIs are resolved again, the server limits read again and every
monitored item the reader wants created again, so values come back without any user action.

Subscribe mode: the reader says which items it wants (:meth:`Link.assign`, the whole set, or
:meth:`Link.want`, one more); :meth:`Link.sync` then creates the new ones on the server and deletes
the others, and the supervisor runs it after every (re)connect and whenever asked (:meth:`Link.wake`).

An item the server refuses (``BadNodeIdUnknown``: the node does not exist yet...) keeps the
status name as its error and is created again on its own backoff (``item_retry_min_s`` doubling
up to ``item_retry_max_s``), and at once after an :meth:`Link.assign`. An item whose node goes
away while monitored (a data change with status ``BadNodeIdUnknown``, or a StatusChangeNotification
with a status about a node rather than the subscription, which does not say which item: the
subscription's nodes are then read to find out) is deleted from the server, BAD with the status
name, and retried the same way; the session stays up. Other status changes (``BadTimeout``,
``GoodSubscriptionTransferred``...) mean the subscription is gone: the session is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncua.client.client import Client
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ._address import NodeAddress, UnknownNamespaceError
from ._convert import status_name, status_text
from ._ua import ua

__all__ = ["Credentials", "ItemKey", "Link", "LinkOptions", "MonitoredItem", "describe_error"]

_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES: dict[str, ua.MessageSecurityMode] = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
SECURITY_POLICIES = ("None", *_POLICIES)
_MAX_PUBLISHING_MS = 250
SECURITY_MODES = ("None", *_MODES)

#: Statuses about a node, not a subscription: in a StatusChangeNotification they mean one of the
#: subscription's items failed (found by reading their nodes), not that the session is gone.
_ITEM_STATUSES = frozenset(
    {
        "BadNodeIdUnknown",
        "BadNodeIdInvalid",
        "BadAttributeIdInvalid",
        "BadNotReadable",
        "BadUserAccessDenied",
    }
)
#: Statuses of a monitored item's value meaning its node is gone: the item is created again later.
_NODE_GONE = frozenset({"BadNodeIdUnknown", "BadNodeIdInvalid"})

#: A monitored item is one node (address text) at one sampling interval (ms).
ItemKey = tuple[str, int]

#: Rejections that retrying cannot cure: wrong credentials, certificates or security settings.
_PERMANENT = frozenset(
    {
        "BadUserAccessDenied",
        "BadIdentityTokenInvalid",
        "BadIdentityTokenRejected",
        "BadSecurityPolicyRejected",
        "BadSecurityModeRejected",
        "BadSecurityChecksFailed",
        "BadCertificateInvalid",
        "BadCertificateUntrusted",
        "BadCertificateUriInvalid",
        "BadCertificateHostNameInvalid",
        "BadCertificateTimeInvalid",
        "BadCertificateRevoked",
        "BadCertificateUseNotAllowed",
        "BadApplicationSignatureInvalid",
        "BadUserSignatureInvalid",
    }
)
#: Service results meaning the session or channel is gone (a reconnect is due).
_SESSION_LOST = frozenset(
    {
        "BadSessionIdInvalid",
        "BadSessionClosed",
        "BadSessionNotActivated",
        "BadSecureChannelIdInvalid",
        "BadSecureChannelClosed",
        "BadConnectionClosed",
        "BadServerHalted",
        "BadShutdown",
        "BadNotConnected",
        "BadCommunicationError",
        "BadTcpSecureChannelUnknown",
    }
)


@dataclass(frozen=True)
class Credentials:
    """Loaded security material (never shown in a repr: the password and keys stay out of logs)."""

    certificate: bytes | None = field(default=None, repr=False)  # DER
    private_key: bytes | None = field(default=None, repr=False)  # DER, unencrypted
    server_certificate: bytes | None = field(default=None, repr=False)  # DER
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    user_certificate: x509.Certificate | None = field(default=None, repr=False)
    user_private_key: PrivateKeyTypes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LinkOptions:
    endpoint: str  # without user info
    timeout_s: float
    security_policy: str
    security_mode: str
    application_uri: str
    session_timeout_s: float
    watchdog_interval_s: float
    reconnect_min_delay_s: float
    reconnect_max_delay_s: float
    keepalive_s: float
    source_timestamps: bool
    credentials: Credentials = field(repr=False)
    item_retry_min_s: float = 0.5
    item_retry_max_s: float = 5.0


class _RedactCredentials(logging.Filter):
    """Keeps user identity tokens (passwords) out of asyncua's DEBUG dumps of requests.

    asyncua logs every request it sends at DEBUG (``Sending: %s``); an ActivateSession request
    carries the user's password (in clear text inside an encrypted channel). This filter, set on
    asyncua's own protocol loggers, replaces that argument; it adds no handler and drops nothing.
    """

    _SECRET_TYPES = frozenset(
        {"ActivateSessionRequest", "ActivateSessionParameters", "UserNameIdentityToken"}
    )

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(type(a).__name__ in self._SECRET_TYPES for a in args):
            record.args = tuple(
                f"{type(a).__name__}(<credentials redacted>)" if type(a).__name__ in self._SECRET_TYPES else a
                for a in args
            )
        return True


_REDACT = _RedactCredentials()
_REDACTED_LOGGERS = (
    "asyncua.client.ua_client.UASocketProtocol",
    "asyncua.client.ua_client.UaClient",
    "asyncua.client.ua_session.UaSession",
    "asyncua.client.client",
)


def _install_redaction() -> None:
    for name in _REDACTED_LOGGERS:
        target = logging.getLogger(name)
        if _REDACT not in target.filters:
            target.addFilter(_REDACT)


class ConnectFailed(Exception):
    """A connection attempt failed; ``permanent`` when retrying will not help."""

    def __init__(self, text: str, permanent: bool) -> None:
        super().__init__(text)
        self.permanent = permanent


def describe_error(exc: BaseException) -> str:
    """A short, readable text for a driver exception (never contains credentials)."""
    if isinstance(exc, ua.UaStatusCodeError):
        return status_text(int(exc.code))
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return f"timeout ({exc})" if str(exc) else "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused ({exc})"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, ConnectFailed) else text


def _status_of(exc: BaseException) -> str | None:
    if isinstance(exc, ua.UaStatusCodeError):
        return status_name(int(exc.code))
    return None


class MonitoredItem:
    """One node watched in subscribe mode at one sampling interval.

    The loop thread sets :attr:`latest` to ``(value, status code, source time, monotonic receive
    time)`` in one assignment; the collector's thread only reads it.
    """

    __slots__ = (
        "address",
        "armed_at",
        "client_handle",
        "created_at",
        "error",
        "latest",
        "monitored_id",
        "nodeid",
        "retry_at",
        "retry_delay",
        "sampling_ms",
        "subscription",
    )

    def __init__(self, address: NodeAddress, sampling_ms: int) -> None:
        self.address = address
        self.sampling_ms = sampling_ms
        self.created_at = time.monotonic()
        self.latest: tuple[Any, int, Any, float] | None = None
        self.error: str | None = None
        self.armed_at: float | None = None  # when the server accepted the item (monotonic)
        self.client_handle = 0
        self.monitored_id: int | None = None
        self.nodeid: ua.NodeId | None = None
        self.subscription: _Subscription | None = None
        self.retry_at = 0.0  # with an error: when to try to create it again (monotonic)
        self.retry_delay = 0.0  # the current retry delay (0: not failed)


class _Subscription:
    """One OPC UA subscription: the items of one sampling interval."""

    __slots__ = (
        "by_handle",
        "keepalive_s",
        "last_publish",
        "publishing_ms",
        "sampling_ms",
        "subscription_id",
    )

    def __init__(self, sampling_ms: int) -> None:
        self.sampling_ms = sampling_ms
        self.subscription_id: int | None = None
        self.publishing_ms = float(sampling_ms)
        self.keepalive_s = 1.0
        self.last_publish = time.monotonic()
        self.by_handle: dict[int, MonitoredItem] = {}


class Link:
    """The session of one :class:`OpcUaDataReader` (see the module docstring)."""

    def __init__(self, options: LinkOptions, logger: logging.Logger) -> None:
        self.options = options
        self._log = logger
        # -- state read by the collector's thread (single assignments only) --
        self.connected = False
        self.last_error = "not connected yet"
        self.generation = 0  # +1 at every successful connect
        self.namespaces: tuple[str, ...] = ()
        self.max_nodes_per_read = 0
        # -- statistics --
        self.read_requests = 0
        self.nodes_read = 0
        self.notifications = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.item_retries = 0  # monitored items created again after they failed
        self.items_lost = 0  # monitored items whose node went away while monitored
        # -- loop-side state --
        self._client: Client | None = None
        self._max_items_per_call = 0
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Future[None] | None = None
        self._variant_types: dict[ua.NodeId, ua.VariantType] = {}
        # -- subscribe mode registry, shared with the collector's thread under _items_lock --
        self._items_lock = threading.Lock()
        self._items: dict[ItemKey, MonitoredItem] = {}  # the wanted items
        self._unwanted: list[MonitoredItem] = []  # to delete from the server at the next sync
        self._subscriptions: dict[int, _Subscription] = {}
        self._sync_lock = asyncio.Lock()  # one sync (or connect) at a time
        self._next_handle = 1
        self._suspects: set[_Subscription] = set()  # a status change about a node: check its items
        self._gone: list[tuple[MonitoredItem, str]] = []  # items whose value said their node is gone
        self._last_create_error = ""
        self.first_value = threading.Event()  # set when an item receives its first value
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the supervisor; returns after the first connection attempt (raises if permanent)."""
        self._loop = asyncio.get_running_loop()
        self._lost = asyncio.Event()
        self._wake = asyncio.Event()
        self._first_attempt = self._loop.create_future()
        self._supervisor = asyncio.create_task(self._supervise(), name="opcua-supervisor")
        await asyncio.shield(self._first_attempt)

    async def close(self) -> None:
        self._closing = True
        if self._lost is not None:
            self._lost_reason = "reader closed"
            self._lost.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        await self._drop_client()
        self.connected = False
        self.last_error = "reader closed"

    def wake(self) -> None:
        """*Thread-safe*: ask the supervisor to sync monitored items now."""
        loop = self._loop
        if loop is not None and self._wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    def _wake_now(self) -> None:
        """Loop side: run a sync now."""
        if self._wake is not None:
            self._wake.set()

    def connection_lost(self, reason: str) -> None:
        """Loop side: declare the session lost (the supervisor reconnects)."""
        if self._lost is not None and not self._lost.is_set() and self.connected:
            self._lost_reason = reason
            self._lost.set()

    # ------------------------------------------------------------------ supervisor

    async def _supervise(self) -> None:
        assert self._lost is not None and self._wake is not None
        delay = self.options.reconnect_min_delay_s
        first = True
        last_failure = ""
        while not self._closing:
            try:
                async with self._sync_lock:  # a sync still running on the old session ends first
                    await self._connect()
            except ConnectFailed as exc:
                self.connected = False
                self.last_error = f"{exc}; retrying"
                self.connect_failures += 1
                if first:
                    first = False
                    self._resolve_first(exc)
                    if exc.permanent:
                        return
                level = logging.WARNING if str(exc) != last_failure else logging.DEBUG
                last_failure = str(exc)
                self._log.log(level, "OPC UA %s: %s; retrying in %.1f s", self.options.endpoint, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max_delay_s)
                continue
            if first:
                first = False
                self._resolve_first(None)
            else:
                self.reconnects += 1
                self._log.warning("OPC UA %s: reconnected", self.options.endpoint)
            delay = self.options.reconnect_min_delay_s
            last_failure = ""
            try:
                await self._run_connected()
            except Exception as exc:  # a bug must not end the reconnect loop: start over
                self._log.exception("OPC UA %s: unexpected error; reconnecting", self.options.endpoint)
                self._lost_reason = f"unexpected error {describe_error(exc)}"
            if self._closing:
                return
            self.connected = False
            self.last_error = f"connection lost: {self._lost_reason}; reconnecting"
            self._log.warning("OPC UA %s: %s", self.options.endpoint, self.last_error)
            await self._drop_client()
            await asyncio.sleep(self.options.reconnect_min_delay_s)

    def _resolve_first(self, exc: ConnectFailed | None) -> None:
        fut = self._first_attempt
        if fut is not None and not fut.done():
            if exc is not None and exc.permanent:
                fut.set_exception(exc)
            else:
                fut.set_result(None)

    async def _run_connected(self) -> None:
        """While connected: keep monitored items in sync and watch subscriptions' health."""
        assert self._lost is not None and self._wake is not None
        while not self._lost.is_set():
            await self.sync()
            if self._lost.is_set():
                break
            silent = self._silent_subscription()
            if silent is not None:
                self.connection_lost(silent)
                break
            self._wake.clear()
            waiters = [asyncio.ensure_future(self._lost.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=self._idle_wait(), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        self._lost.clear()

    def _idle_wait(self) -> float:
        """How long the supervisor may sleep: 1 s, or until the next retry of a failed item."""
        wait = 1.0
        now = time.monotonic()
        for item in self.items():
            if item.error is not None and item.monitored_id is None:
                wait = min(wait, item.retry_at - now)
        return max(wait, 0.01)

    def _silent_subscription(self) -> str | None:
        now = time.monotonic()
        for sub in self._subscriptions.values():
            if sub.subscription_id is None:
                continue
            limit = 3 * max(sub.keepalive_s, sub.publishing_ms / 1000) + 2 * self.options.timeout_s
            if now - sub.last_publish > limit:
                return f"subscription {sub.subscription_id} silent for {now - sub.last_publish:.1f} s"
        return None

    # ------------------------------------------------------------------ connect

    async def _connect(self) -> None:
        opts = self.options
        creds = opts.credentials
        client = Client(opts.endpoint, timeout=opts.timeout_s, watchdog_intervall=opts.watchdog_interval_s)
        client.name = client.description = "data-collector"
        client.application_uri = opts.application_uri
        client.session_timeout = int(opts.session_timeout_s * 1000)
        if creds.username is not None:
            client.set_user(creds.username)
        if creds.password is not None:
            client.set_password(creds.password)
        if creds.user_certificate is not None:
            client.user_certificate = creds.user_certificate
            client.user_private_key = creds.user_private_key

        async def lost(exc: Exception) -> None:
            if client is self._client:
                if isinstance(exc, TimeoutError):
                    why = f"no answer to the keep-alive within {opts.watchdog_interval_s:g} s"
                else:
                    why = describe_error(exc)
                self.connection_lost(why)

        client.connection_lost_callback = lost
        if creds.password is not None or creds.user_certificate is not None:
            _install_redaction()
        try:
            async with asyncio.timeout(opts.timeout_s * 3 + 2):
                if opts.security_policy != "None":
                    assert creds.certificate is not None and creds.private_key is not None
                    server_cert = (
                        uacrypto.CertProperties(creds.server_certificate, "der")
                        if creds.server_certificate is not None
                        else None
                    )
                    await client.set_security(
                        _POLICIES[opts.security_policy],
                        uacrypto.CertProperties(creds.certificate, "der"),
                        uacrypto.CertProperties(creds.private_key, "der"),
                        None,
                        server_cert,
                        _MODES[opts.security_mode],
                    )
                await client.connect()
                self._client = client
                namespaces = await client.get_namespace_array()
                limits = await self._read_limits(client)
        except BaseException as exc:
            self._client = None
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(opts.timeout_s):
                    await client.disconnect()
            if not isinstance(exc, Exception):
                raise
            raise self._connect_error(exc) from exc
        self.namespaces = tuple(str(ns) for ns in namespaces)
        self.max_nodes_per_read, self._max_items_per_call = limits
        self._variant_types = {}
        self._reset_items()
        self.generation += 1
        self.last_error = ""
        self.connected = True
        self._log.info(
            "OPC UA %s: connected (security %s/%s, %d namespaces, MaxNodesPerRead %s)",
            opts.endpoint,
            opts.security_policy,
            opts.security_mode,
            len(self.namespaces),
            self.max_nodes_per_read or "unlimited",
        )

    def _connect_error(self, exc: Exception) -> ConnectFailed:
        where = f"cannot connect to {self.options.endpoint}"
        status = _status_of(exc)
        text = describe_error(exc)
        if status in ("BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"):
            creds = self.options.credentials
            if creds.username is not None:
                who = f"user {creds.username!r} (check username and password)"
            elif creds.user_certificate is not None:
                who = f"the user certificate {creds.user_certificate.subject.rfc4514_string()!r}"
            else:
                who = "anonymous access (give username/password or a user certificate)"
            text = f"{text}: the server rejected {who}"
        elif isinstance(exc, TimeoutError) and self.options.credentials.server_certificate is not None:
            text += " (is server_certificate really this server's certificate?)"
        permanent = status in _PERMANENT
        if isinstance(exc, ua.UaError) and not isinstance(exc, ua.UaStatusCodeError):
            # asyncua's own checks: no endpoint with the requested policy/mode, certificate mismatch
            permanent = "endpoint" in str(exc).lower() or "certificate" in str(exc).lower()
        return ConnectFailed(_scrub(f"{where}: {text}", self.options.credentials.password), permanent)

    async def _read_limits(self, client: Client) -> tuple[int, int]:
        ids = (
            ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
            ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
        )
        params = ua.ReadParameters()
        for ident in ids:
            rv = ua.ReadValueId()
            rv.NodeId = ua.NodeId(ident)
            rv.AttributeId = ua.AttributeIds.Value
            params.NodesToRead.append(rv)
        results = await client.uaclient.read(params)
        limits = []
        for dv in results:
            value = dv.Value.Value if dv.Value is not None else None
            good = dv.StatusCode is None or dv.StatusCode.is_good()
            limits.append(int(value) if good and isinstance(value, int) and value > 0 else 0)
        return limits[0], limits[1]

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(min(self.options.timeout_s, 2.0)):
                await client.disconnect()

    # ------------------------------------------------------------------ poll mode

    async def read(self, nodes: Sequence[ua.ReadValueId]) -> list[ua.DataValue]:
        """One Read service call per ``MaxNodesPerRead`` chunk (sent together); raises on failure."""
        client = self._client
        if client is None or not self.connected:
            raise ConnectionError(self.last_error or "not connected")
        timestamps = (
            ua.TimestampsToReturn.Source if self.options.source_timestamps else ua.TimestampsToReturn.Neither
        )
        size = self.max_nodes_per_read or len(nodes) or 1
        chunks = [nodes[i : i + size] for i in range(0, len(nodes), size)]
        calls = []
        for chunk in chunks:
            params = ua.ReadParameters()
            params.TimestampsToReturn = timestamps
            params.NodesToRead = list(chunk)
            calls.append(client.uaclient.read(params))
        self.read_requests += len(calls)
        self.nodes_read += len(nodes)
        try:
            if len(calls) == 1:
                return await calls[0]
            parts = await asyncio.gather(*calls)
        except Exception as exc:
            self._check_lost(exc)
            raise
        return [dv for part in parts for dv in part]

    def _check_lost(self, exc: BaseException) -> None:
        if _status_of(exc) in _SESSION_LOST or isinstance(exc, ConnectionError | OSError):
            self.connection_lost(describe_error(exc))

    # ------------------------------------------------------------------ writes

    async def write(
        self, nodeid: ua.NodeId, value: Any, to_variant: Callable[[Any, ua.VariantType], Any]
    ) -> None:
        """Write ``value`` to ``nodeid`` as a Variant of the node's data type; raises on failure."""
        client = self._client
        if client is None or not self.connected:
            raise ConnectionError(self.last_error or "not connected")
        try:
            variant_type = self._variant_types.get(nodeid)
            if variant_type is None:
                variant_type = await self._variant_type(client, nodeid)
                self._variant_types[nodeid] = variant_type
            variant = to_variant(value, variant_type)
            wv = ua.WriteValue()
            wv.NodeId = nodeid
            wv.AttributeId = ua.AttributeIds.Value
            wv.Value = ua.DataValue(variant, StatusCode=None)
            params = ua.WriteParameters()
            params.NodesToWrite = [wv]
            results = await client.uaclient.write(params)
        except Exception as exc:
            self._check_lost(exc)
            raise
        results[0].check()

    async def _variant_type(self, client: Client, nodeid: ua.NodeId) -> ua.VariantType:
        params = ua.ReadParameters()
        for attr in (ua.AttributeIds.DataType, ua.AttributeIds.Value):
            rv = ua.ReadValueId()
            rv.NodeId = nodeid
            rv.AttributeId = attr
            params.NodesToRead.append(rv)
        data_type, value = await client.uaclient.read(params)
        if data_type.StatusCode is not None:
            data_type.StatusCode.check()
        dt = data_type.Value.Value if data_type.Value is not None else None
        if isinstance(dt, ua.NodeId) and dt.NamespaceIndex == 0 and isinstance(dt.Identifier, int):
            with contextlib.suppress(ValueError):
                vt = ua.VariantType(dt.Identifier)
                if vt not in (ua.VariantType.Null, ua.VariantType.Variant, ua.VariantType.ExtensionObject):
                    return vt
        if value.Value is not None and value.Value.VariantType != ua.VariantType.Null:
            return value.Value.VariantType
        raise ua.UaError(f"cannot tell the data type of node {nodeid.to_string()}")

    # ------------------------------------------------------------------ subscribe mode

    def want(self, address: NodeAddress, sampling_ms: int) -> MonitoredItem:
        """*Thread-safe*: the monitored item of ``address`` at ``sampling_ms``, added if new.

        An added item is created on the server by the next sync (asked for here) and stays
        until an :meth:`assign` leaves it out or the link closes.
        """
        key = (address.text, sampling_ms)
        item = self._items.get(key)
        if item is not None:
            return item
        with self._items_lock:
            item = self._items.get(key)
            if item is None:
                item = self._items[key] = MonitoredItem(address, sampling_ms)
        self.wake()
        return item

    def assign(self, wanted: Mapping[ItemKey, NodeAddress]) -> dict[ItemKey, MonitoredItem]:
        """*Thread-safe*: make ``wanted`` the whole set of monitored items; returns them by key.

        Items already there are kept as they are; the new ones are created and the others
        deleted from the server by the next :meth:`sync` (the caller runs it, or the supervisor
        does within a second; after a reconnect it creates exactly this set again). Items that
        failed are tried again by that sync, whatever their backoff.
        """
        with self._items_lock:
            current = self._items
            self._items = {
                key: current.get(key) or MonitoredItem(address, key[1]) for key, address in wanted.items()
            }
            self._unwanted += [item for key, item in current.items() if key not in self._items]
            items = dict(self._items)
        for item in items.values():
            if item.error is not None:
                item.retry_at = 0.0  # failed items are tried again at once
        self.wake()
        return items

    def items(self) -> list[MonitoredItem]:
        with self._items_lock:
            return list(self._items.values())

    @property
    def subscription_count(self) -> int:
        return sum(1 for s in self._subscriptions.values() if s.subscription_id is not None)

    def _reset_items(self) -> None:
        """After a (re)connect: nothing exists on the new session yet."""
        self._subscriptions = {}
        self._suspects = set()
        self._gone = []
        with self._items_lock:
            self._unwanted = []
        for item in self.items():
            item.monitored_id = None
            item.subscription = None
            item.armed_at = None
            item.latest = None
            item.error = None
            item.nodeid = None
            item.retry_at = item.retry_delay = 0.0

    async def sync(self) -> None:
        """Create the wanted items missing on the server, then delete the unwanted ones.

        Returns at once when not connected (the supervisor syncs after connecting). A failure
        that means the session is gone declares it lost (the reconnect then re-creates every
        item); another failure is logged and the items concerned are retried at the next sync.
        """
        if self._client is None or not self.connected:
            return
        async with self._sync_lock:
            try:
                await self._sync_items()
            except Exception as exc:  # a failed service call: is the session still there?
                if _status_of(exc) in _SESSION_LOST or isinstance(exc, ConnectionError | OSError):
                    self.connection_lost(describe_error(exc))
                else:
                    self._log.warning(
                        "OPC UA %s: monitored item update failed: %s", self.options.endpoint, exc
                    )

    async def _sync_items(self) -> None:
        client = self._client
        if client is None or not self.connected:
            return
        if self._suspects or self._gone:
            await self._drop_gone_items(client)
        now = time.monotonic()
        fresh = [
            item
            for item in self.items()
            if item.monitored_id is None and (item.error is None or item.retry_at <= now)
        ]
        if fresh:  # first: an item moving to another interval is never missing
            self.item_retries += sum(1 for item in fresh if item.error is not None)
            await self._create_items(client, fresh)
        with self._items_lock:
            unwanted, self._unwanted = self._unwanted, []
        try:
            await self._delete_items(client, unwanted)
        except BaseException:
            with self._items_lock:  # retried at the next sync (a reconnect clears them)
                self._unwanted = unwanted + self._unwanted
            raise

    async def _delete_items(self, client: Client, items: list[MonitoredItem]) -> None:
        """Delete ``items`` from their subscriptions, and every subscription left empty."""
        by_sub: dict[int, tuple[_Subscription, list[int]]] = {}
        for item in items:
            sub = item.subscription
            if sub is not None and item.monitored_id is not None:
                by_sub.setdefault(id(sub), (sub, []))[1].append(item.monitored_id)
        for sub, ids in by_sub.values():
            if sub.subscription_id is None or self._subscriptions.get(sub.sampling_ms) is not sub:
                continue  # gone with its session
            if len(ids) < len(sub.by_handle):
                params = ua.DeleteMonitoredItemsParameters()
                params.SubscriptionId = sub.subscription_id
                params.MonitoredItemIds = ids
                await client.uaclient.delete_monitored_items(params)
            for item in items:
                if item.subscription is sub:
                    sub.by_handle.pop(item.client_handle, None)
                    item.monitored_id = item.subscription = None
        empty = [s for s in self._subscriptions.values() if not s.by_handle]
        empty_ids = [s.subscription_id for s in empty if s.subscription_id is not None]
        if empty_ids:
            await client.uaclient.delete_subscriptions(empty_ids)
        for sub in empty:
            del self._subscriptions[sub.sampling_ms]
        if items or empty:
            self._log.debug(
                "OPC UA %s: removed %d monitored items, %d subscriptions",
                self.options.endpoint,
                len(items),
                len(empty),
            )

    def _failed(self, item: MonitoredItem, error: str, now: float) -> bool:
        """``item`` could not be monitored: BAD with ``error``, created again after its backoff.

        Returns True when this is news (its first failure, or another error): worth a log line.
        """
        first = item.retry_delay == 0.0
        opts = self.options
        item.retry_delay = (
            opts.item_retry_min_s if first else min(item.retry_delay * 2, opts.item_retry_max_s)
        )
        item.retry_at = now + item.retry_delay
        news = first or item.error != error
        item.error = error
        return news

    def _report_failed(self, failed: list[tuple[MonitoredItem, str]], what: str) -> None:
        """One warning for the items that newly failed (a few named)."""
        if not failed:
            return
        shown = ", ".join(f"{item.address.text} ({error})" for item, error in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        opts = self.options
        self._log.warning(
            "OPC UA %s: %s %d node(s): %s%s; their variables are BAD, tried again every %g..%g s",
            opts.endpoint,
            what,
            len(failed),
            shown,
            more,
            opts.item_retry_min_s,
            opts.item_retry_max_s,
        )

    async def _drop_gone_items(self, client: Client) -> None:
        """Delete the items whose node went away, and schedule them to be created again.

        A status change about a node does not say which item: the nodes of the subscriptions
        that received one are read, and the items that read a status about a node are gone.
        """
        suspects, self._suspects = self._suspects, set()
        gone, self._gone = self._gone, []
        for sub in suspects:
            if self._subscriptions.get(sub.sampling_ms) is not sub:
                continue  # deleted meanwhile
            items = [item for item in sub.by_handle.values() if item.nodeid is not None]
            size = self.max_nodes_per_read or len(items) or 1
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                params = ua.ReadParameters()
                for item in chunk:
                    rv = ua.ReadValueId()
                    rv.NodeId = item.nodeid
                    rv.AttributeId = ua.AttributeIds.Value
                    params.NodesToRead.append(rv)
                results = await client.uaclient.read(params)
                self.read_requests += 1
                for item, dv in zip(chunk, results, strict=True):
                    code = dv.StatusCode.value if dv.StatusCode is not None else 0
                    name = status_name(code)
                    if name in _ITEM_STATUSES:
                        gone.append((item, name))
        # (an item may be listed twice, or be unwanted or re-created meanwhile: drop it once)
        dropped = {id(item): (item, name) for item, name in gone if item.subscription is not None}
        if not dropped:
            if suspects:
                self._log.info(
                    "OPC UA %s: a status change about a node, but every monitored node reads fine",
                    self.options.endpoint,
                )
            return
        await self._delete_items(client, [item for item, _name in dropped.values()])
        now = time.monotonic()
        for item, name in dropped.values():
            self.items_lost += 1
            item.latest = None
            item.armed_at = None
            item.retry_delay = 0.0
            self._failed(item, name, now)
        self._report_failed(list(dropped.values()), "the server reports gone")

    async def _create_items(self, client: Client, items: list[MonitoredItem]) -> None:
        groups: dict[int, list[MonitoredItem]] = {}
        now = time.monotonic()
        unresolved: list[tuple[MonitoredItem, str]] = []
        for item in items:
            try:
                item.nodeid = item.address.resolve(self.namespaces)
            except UnknownNamespaceError as exc:
                if self._failed(item, str(exc), now):
                    unresolved.append((item, str(exc)))
                continue
            groups.setdefault(item.sampling_ms, []).append(item)
        self._report_failed(unresolved, "cannot monitor")
        for sampling_ms, group in groups.items():
            size = self._max_items_per_call or 1000
            start = 0
            try:
                sub = await self._subscription(client, sampling_ms)
                for start in range(0, len(group), size):
                    await self._create_chunk(client, sub, group[start : start + size])
            except ua.UaStatusCodeError as exc:
                if _status_of(exc) in _SESSION_LOST:
                    raise
                # the server refuses (too many subscriptions or items, ...): these variables are
                # BAD with the reason, and tried again on their backoff
                error = f"cannot monitor: {describe_error(exc)}"
                now = time.monotonic()
                for item in group[start:]:
                    if item.monitored_id is None:
                        self._failed(item, error, now)
                level = logging.WARNING if error != self._last_create_error else logging.DEBUG
                self._last_create_error = error
                self._log.log(level, "OPC UA %s: %s", self.options.endpoint, error)

    async def _create_chunk(self, client: Client, sub: _Subscription, items: list[MonitoredItem]) -> None:
        assert sub.subscription_id is not None
        requests = []
        for item in items:
            handle = self._next_handle
            self._next_handle += 1
            item.client_handle = handle
            item.subscription = sub
            sub.by_handle[handle] = item  # before the call: notifications may beat the answer
            rv = ua.ReadValueId()
            rv.NodeId = item.nodeid
            rv.AttributeId = ua.AttributeIds.Value
            mp = ua.MonitoringParameters()
            mp.ClientHandle = handle
            mp.SamplingInterval = float(item.sampling_ms)
            mp.QueueSize = 1  # one value per tick is delivered: the latest
            mp.DiscardOldest = True
            req = ua.MonitoredItemCreateRequest()
            req.ItemToMonitor = rv
            req.MonitoringMode = ua.MonitoringMode.Reporting
            req.RequestedParameters = mp
            requests.append(req)
        params = ua.CreateMonitoredItemsParameters()
        params.SubscriptionId = sub.subscription_id
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        params.ItemsToCreate = requests
        try:
            results = await client.uaclient.create_monitored_items(params)
        except Exception:
            for item in items:
                sub.by_handle.pop(item.client_handle, None)
                item.subscription = None
            raise
        now = time.monotonic()
        failed = 0
        news: list[tuple[MonitoredItem, str]] = []
        for item, result in zip(items, results, strict=True):
            if result.StatusCode.is_good():
                if item.error is not None:
                    self._log.info(
                        "OPC UA %s: %s monitored again (it failed with %s)",
                        self.options.endpoint,
                        item.address.text,
                        item.error,
                    )
                item.monitored_id = result.MonitoredItemId
                item.armed_at = now
                item.error = None
                item.retry_delay = 0.0
            else:
                failed += 1
                sub.by_handle.pop(item.client_handle, None)
                item.subscription = None
                error = status_name(result.StatusCode.value)
                if self._failed(item, error, now):
                    news.append((item, error))
        self._report_failed(news, "cannot monitor")
        self._log.debug(
            "OPC UA %s: %d monitored items created at %d ms (%d rejected)",
            self.options.endpoint,
            len(items) - failed,
            sub.sampling_ms,
            failed,
        )
        await self._prime([item for item in items if item.monitored_id is not None])

    async def _prime(self, items: list[MonitoredItem]) -> None:
        """Read the current values of new items once, so the next tick need not wait for the
        subscription's first publish; a notification that came first is kept (it is newer)."""
        client = self._client
        if client is None or not items:
            return
        size = self.max_nodes_per_read or len(items)
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            for item in chunk:
                rv = ua.ReadValueId()
                rv.NodeId = item.nodeid
                rv.AttributeId = ua.AttributeIds.Value
                params.NodesToRead.append(rv)
            results = await client.uaclient.read(params)
            self.read_requests += 1
            now = time.monotonic()
            primed = False
            for item, dv in zip(chunk, results, strict=True):
                if item.latest is None:
                    code = dv.StatusCode.value if dv.StatusCode is not None else 0
                    value = dv.Value.Value if dv.Value is not None else None
                    item.latest = (value, code, dv.SourceTimestamp or dv.ServerTimestamp, now)
                    primed = True
            if primed:
                self.first_value.set()

    async def _subscription(self, client: Client, sampling_ms: int) -> _Subscription:
        sub = self._subscriptions.get(sampling_ms)
        if sub is not None and sub.subscription_id is not None:
            return sub
        sub = _Subscription(sampling_ms)
        # publishing at most every 250 ms: a new item's first value (and every change) reaches us
        # within 250 ms even for slow sampling intervals; idle cycles send nothing
        publishing_ms = min(sampling_ms, _MAX_PUBLISHING_MS)
        keepalive_count = max(1, math.ceil(self.options.keepalive_s * 1000 / publishing_ms))
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = float(publishing_ms)
        params.RequestedMaxKeepAliveCount = keepalive_count
        params.RequestedLifetimeCount = max(keepalive_count * 10, 30)
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        params.Priority = 0
        result = await client.uaclient.create_subscription(params, functools.partial(self._on_publish, sub))
        sub.subscription_id = result.SubscriptionId
        sub.publishing_ms = float(result.RevisedPublishingInterval) or float(publishing_ms)
        sub.keepalive_s = max(1, int(result.RevisedMaxKeepAliveCount)) * sub.publishing_ms / 1000
        sub.last_publish = time.monotonic()
        self._subscriptions[sampling_ms] = sub
        return sub

    def _on_publish(self, sub: _Subscription, result: ua.PublishResult) -> None:
        """Called by asyncua's publish loop for each answer (data or keep-alive) of ``sub``."""
        now = time.monotonic()
        sub.last_publish = now
        data = result.NotificationMessage.NotificationData
        if not data:
            return
        by_handle = sub.by_handle
        first = False
        count = 0
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                for mi in notification.MonitoredItems:
                    item = by_handle.get(mi.ClientHandle)
                    if item is None:
                        continue
                    dv = mi.Value
                    variant = dv.Value
                    code = dv.StatusCode.value if dv.StatusCode is not None else 0
                    if code & 0x80000000 and status_name(code) in _NODE_GONE:
                        self._gone.append((item, status_name(code)))  # created again later
                        self._wake_now()
                    if item.latest is None:
                        first = True
                    item.latest = (
                        variant.Value if variant is not None else None,
                        code,
                        dv.SourceTimestamp or dv.ServerTimestamp,
                        now,
                    )
                    count += 1
            elif isinstance(notification, ua.StatusChangeNotification):
                status = notification.Status
                name = status_name(status.value) if status is not None else "status change"
                if name in _ITEM_STATUSES:  # about one of its nodes: find which, keep the session
                    self._suspects.add(sub)
                    self._wake_now()
                else:
                    self.connection_lost(f"subscription {sub.subscription_id}: {name}")
        self.notifications += count
        if first:
            self.first_value.set()


def _scrub(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 1:
        text = text.replace(secret, "***")
    return text
