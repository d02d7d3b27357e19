"""The OPC UA session of one reader: connect, watch, reconnect, read, write; subscribe mode inherited.

Everything here runs on the reader's own event loop (see :mod:`._loop`), except the few methods
marked *thread-safe*, which the reader's synchronous side calls from the collector's thread.

A lost session is replaced by a brand-new asyncua ``Client`` (asyncua 2.x can reconnect by itself,
but it restores the old NodeIds, which is wrong when a restarted server registered its namespaces
in another order): namespace URIs are resolved again, the server limits read again and every
monitored item the reader wants created again, so values come back without any user action.
Failed connection attempts are retried by the supervisor, the delay doubling from
``reconnect_min_delay_s`` to ``reconnect_max_delay_s``; a permanent failure (credentials,
certificates, security settings) ends the first attempt with its reason instead.

Where the rest lives: how a connection is made and what its failures mean in
:mod:`._connection`; the monitored items, their subscriptions and their retries (subscribe mode)
in :mod:`._subscriptions`, whose :class:`~._subscriptions.SubscribeMode` is a base class of
:class:`Link`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from asyncua.client.client import Client

from ._connection import (
    SESSION_LOST,
    ConnectFailed,
    Credentials,
    LinkOptions,
    connect_error,
    describe_error,
    disconnect,
    new_client,
    read_limits,
    set_security,
    status_of,
)
from ._subscriptions import ItemKey, MonitoredItem, SubscribeMode
from ._ua import read_value_id, ua

__all__ = ["Credentials", "ItemKey", "Link", "LinkOptions", "MonitoredItem", "describe_error"]


class Link(SubscribeMode):
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
        # -- statistics (those of subscribe mode: see SubscribeMode._init_items) --
        self.read_requests = 0
        self.nodes_read = 0
        self.reconnects = 0
        self.connect_failures = 0
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
        self._sync_lock = asyncio.Lock()  # one sync (or connect) at a time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._init_items()

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

    # ------------------------------------------------------------------ connect

    async def _connect(self) -> None:
        opts = self.options
        client = new_client(opts)

        async def lost(exc: Exception) -> None:
            if client is self._client:
                if isinstance(exc, TimeoutError):
                    why = f"no answer to the keep-alive within {opts.watchdog_interval_s:g} s"
                else:
                    why = describe_error(exc)
                self.connection_lost(why)

        client.connection_lost_callback = lost
        try:
            async with asyncio.timeout(opts.timeout_s * 3 + 2):
                await set_security(client, opts)
                await client.connect()
                self._client = client
                namespaces = await client.get_namespace_array()
                limits = await read_limits(client)
        except BaseException as exc:
            self._client = None
            await disconnect(client, opts.timeout_s)
            if not isinstance(exc, Exception):
                raise
            raise connect_error(opts, exc) from exc
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

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await disconnect(client, min(self.options.timeout_s, 2.0))

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
        if status_of(exc) in SESSION_LOST or isinstance(exc, ConnectionError | OSError):
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
        params.NodesToRead = [read_value_id(nodeid, ua.AttributeIds.DataType), read_value_id(nodeid)]
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
