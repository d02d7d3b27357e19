"""Subscribe mode of an OPC UA session: monitored items, their subscriptions and their retries.

:class:`SubscribeMode` is the half of :class:`._link.Link` that keeps the monitored items; Link
inherits it, so both halves share one session (the client, its namespaces and limits, the
connection-lost signal), declared at the top of the class. It runs on the reader's event loop,
except the methods marked *thread-safe*.

The reader says which items it wants (:meth:`SubscribeMode.assign`, the whole set, or
:meth:`SubscribeMode.want`, one more); :meth:`SubscribeMode.sync` then creates the new ones on the
server and deletes the others, and the supervisor runs it after every (re)connect and whenever
asked (:meth:`._link.Link.wake`). One subscription per sampling interval holds its items; a value
arrives in :meth:`SubscribeMode._on_publish`, which keeps the latest one per item.

An item the server refuses (``BadNodeIdUnknown``: the node does not exist yet...) keeps the
status name as its error and is created again on its own backoff (``item_retry_min_s`` doubling
up to ``item_retry_max_s``), and at once after an :meth:`SubscribeMode.assign`. An item whose node
goes away while monitored (a data change with status ``BadNodeIdUnknown``, or a
StatusChangeNotification with a status about a node rather than the subscription, which does not
say which item: the subscription's nodes are then read to find out) is deleted from the server,
BAD with the status name, and retried the same way; the session stays up. Other status changes
(``BadTimeout``, ``GoodSubscriptionTransferred``...) mean the subscription is gone: the session is
replaced.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from asyncua.client.client import Client

from ._address import NodeAddress, UnknownNamespaceError
from ._connection import SESSION_LOST, LinkOptions, describe_error, status_of
from ._convert import status_name
from ._ua import read_value_id, ua

__all__ = ["ItemKey", "MonitoredItem", "SubscribeMode"]

_MAX_PUBLISHING_MS = 250

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


class SubscribeMode:
    """The monitored items of one session (see the module docstring); a base class of Link."""

    # -- the session's state, set by Link --
    options: LinkOptions
    connected: bool
    namespaces: tuple[str, ...]
    max_nodes_per_read: int
    read_requests: int
    _log: logging.Logger
    _client: Client | None
    _max_items_per_call: int
    _sync_lock: asyncio.Lock  # one sync (or connect) at a time

    def _init_items(self) -> None:
        # -- statistics --
        self.notifications = 0
        self.item_retries = 0  # monitored items created again after they failed
        self.items_lost = 0  # monitored items whose node went away while monitored
        # -- the registry, shared with the collector's thread under _items_lock --
        self._items_lock = threading.Lock()
        self._items: dict[ItemKey, MonitoredItem] = {}  # the wanted items
        self._unwanted: list[MonitoredItem] = []  # to delete from the server at the next sync
        self._subscriptions: dict[int, _Subscription] = {}
        self._next_handle = 1
        self._suspects: set[_Subscription] = set()  # a status change about a node: check its items
        self._gone: list[tuple[MonitoredItem, str]] = []  # items whose value said their node is gone
        self._last_create_error = ""
        self.first_value = threading.Event()  # set when an item receives its first value

    # -- the session's signals, provided by Link --

    def wake(self) -> None:
        """*Thread-safe*: ask the supervisor to sync monitored items now."""
        raise NotImplementedError

    def _wake_now(self) -> None:
        """Loop side: run a sync now."""
        raise NotImplementedError

    def connection_lost(self, reason: str) -> None:
        """Loop side: declare the session lost (the supervisor reconnects)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the wanted items

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

    # ------------------------------------------------------------------ the items on the server

    def _idle_wait(self) -> float:
        """How long the supervisor may sleep: 1 s, or until the next retry of a failed item."""
        wait = 1.0
        now = time.monotonic()
        for item in self.items():
            if item.error is not None and item.monitored_id is None:
                wait = min(wait, item.retry_at - now)
        return max(wait, 0.01)

    def _silent_subscription(self) -> str | None:
        """Why the session looks dead: a subscription that has published nothing for too long."""
        now = time.monotonic()
        for sub in self._subscriptions.values():
            if sub.subscription_id is None:
                continue
            limit = 3 * max(sub.keepalive_s, sub.publishing_ms / 1000) + 2 * self.options.timeout_s
            if now - sub.last_publish > limit:
                return f"subscription {sub.subscription_id} silent for {now - sub.last_publish:.1f} s"
        return None

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
                if status_of(exc) in SESSION_LOST or isinstance(exc, ConnectionError | OSError):
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
            async for chunk, results in self._read_values(client, items):
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
                if status_of(exc) in SESSION_LOST:
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
            mp = ua.MonitoringParameters()
            mp.ClientHandle = handle
            mp.SamplingInterval = float(item.sampling_ms)
            mp.QueueSize = 1  # one value per tick is delivered: the latest
            mp.DiscardOldest = True
            req = ua.MonitoredItemCreateRequest()
            req.ItemToMonitor = read_value_id(item.nodeid)
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
        async for chunk, results in self._read_values(client, items, ua.TimestampsToReturn.Both):
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

    async def _read_values(
        self, client: Client, items: list[MonitoredItem], timestamps: Any = None
    ) -> AsyncIterator[tuple[list[MonitoredItem], list[ua.DataValue]]]:
        """Read the current values of ``items``, one Read call per ``MaxNodesPerRead`` chunk in
        turn; yields each chunk with its results (``timestamps``: asyncua's default unless told)."""
        size = self.max_nodes_per_read or len(items) or 1
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            params = ua.ReadParameters()
            if timestamps is not None:
                params.TimestampsToReturn = timestamps
            params.NodesToRead = [read_value_id(item.nodeid) for item in chunk]
            results = await client.uaclient.read(params)
            self.read_requests += 1
            yield chunk, results

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

    # ------------------------------------------------------------------ notifications

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
