"""The MQTT session of one writer: connect, keep connected, publish, wait for acknowledgements.

One paho-mqtt client per connection: when a connection is lost (or stops acknowledging), its
client is dropped with whatever it still had in flight, and a supervisor thread connects a fresh
one with capped exponential backoff. So nothing is re-sent behind the writer's back: the only
re-sending is the collector's retry of a batch whose ``write()`` failed (at-least-once, with the
message ids that let consumers de-duplicate).

Threads: paho's network thread per connection (``loop_start``; its own reconnecting is off) runs
the callbacks; the supervisor thread reconnects and runs the writer's ``connected`` hook (Sparkplug
births) and ``poked`` hook (a rebirth request); the collector's writer thread publishes. Publishing
holds :attr:`Link.pub_lock`, so births and data never interleave and Sparkplug sequence numbers
follow the order on the wire. No lock of ours is held while calling paho, except ``pub_lock``,
which paho's callbacks never take.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from data_collector import WriterError

__all__ = ["Link", "LinkHooks", "MqttWriteError", "Options", "Will"]

_log = logging.getLogger("data_writer.mqtt")

#: At most this many publishes are waited for at once (below the 65,535 message ids of MQTT).
CHUNK = 10_000
_MIN_BACKOFF_S = 0.25
_DISCONNECT_GRACE_S = 2.0

#: CONNACK refusals that retrying cannot fix (MQTT 3.1.1 return codes 1, 2, 4 and 5, by paho's names).
_PERMANENT_CONNACK = frozenset(
    {
        "Unsupported protocol version",
        "Client identifier not valid",
        "Bad user name or password",
        "Not authorized",
    }
)


class MqttWriteError(WriterError):
    """A failed MQTT operation; :attr:`transient` says whether retrying may succeed."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class Options:
    host: str
    port: int
    client_id: str
    username: str | None
    password: str | None
    tls: bool
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    tls_insecure: bool
    keepalive_s: int
    clean_session: bool
    timeout_s: float
    connect_timeout_s: float
    reconnect_max_s: float
    max_inflight: int

    def __repr__(self) -> str:  # never the password
        return f"Options(host={self.host!r}, port={self.port}, client_id={self.client_id!r})"


class LinkHooks(Protocol):
    """What the writer does at the link's events (called outside the link's condition lock)."""

    def will(self) -> Will | None:
        """The will of the next connection (called once before each CONNECT)."""
        ...

    def connected(self, link: Link, client: mqtt.Client) -> None:
        """A connection was accepted: subscribe and publish births (holding ``link.pub_lock``)."""
        ...

    def poked(self, link: Link, client: mqtt.Client) -> None:
        """:meth:`Link.poke` was called while online (e.g. a rebirth request)."""
        ...

    def message(self, topic: str, payload: bytes) -> None:
        """A message arrived on a subscription (paho's network thread: do not block)."""
        ...


#: A message to publish: topic, payload (or a function making it while ``pub_lock`` is held,
#: e.g. to number it), QoS, retain.
Message = tuple[str, "bytes | Callable[[], bytes]", int, bool]


class Link:
    """The connection of one writer to its broker; see the module docstring."""

    def __init__(self, options: Options, hooks: LinkHooks, label: str) -> None:
        self.options = options
        self._hooks = hooks
        self._label = label
        self.pub_lock = threading.RLock()
        self._cond = threading.Condition(threading.Lock())
        self._client: mqtt.Client | None = None
        self._online = False
        self._lost = False  # the current client's connection was lost
        self._last_error = "not connected yet"
        self._closing = False
        self._poked = False
        self._acked: set[int] = set()
        self._pending: set[int] | None = None
        self._last_ack = 0.0
        self._supervisor: threading.Thread | None = None
        self.connections = 0  # connections accepted so far (statistics, tests)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Connect (raises :class:`MqttWriteError` when the broker cannot be reached), then keep
        the connection up from a supervisor thread."""
        self._connect()
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"dc-mqtt-{self._label}", daemon=True
        )
        self._supervisor.start()

    def stop(self, last_words: Callable[[mqtt.Client], list[int]] | None = None) -> None:
        """Stop reconnecting; if online, publish ``last_words`` (waiting for their acknowledgement
        up to ``timeout_s``), then disconnect cleanly."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(self.options.connect_timeout_s + self.options.timeout_s + 5)
        with self._cond:
            client, online = self._client, self._online
            self._online = False
        if client is None:
            return
        try:
            if online and last_words is not None:
                with self.pub_lock:
                    mids = last_words(client)
                self._wait(mids, client, closing_ok=True)
        except MqttWriteError as exc:
            _log.warning("MQTT %s: the last messages before disconnecting failed: %s", self._label, exc)
        finally:
            self._drop(client, graceful=online)
            with self._cond:
                self._client = None

    def poke(self) -> None:
        """Wake the supervisor, which calls the ``poked`` hook while online."""
        with self._cond:
            self._poked = True
            self._cond.notify_all()

    @property
    def online(self) -> bool:
        with self._cond:
            return self._online

    @property
    def last_error(self) -> str:
        with self._cond:
            return self._last_error

    # -- publishing (the writer's thread) ------------------------------------------------------
    def send(self, messages: Iterable[Message]) -> int:
        """Publish ``messages`` in order and wait until the broker acknowledged every one (QoS 1
        and 2) or paho handed it to the socket (QoS 0). Returns how many were sent. Raises a
        transient :class:`MqttWriteError` when offline, when the connection is lost before every
        acknowledgement came, or after ``timeout_s`` without any acknowledgement; a permanent
        one for a message the client refuses (an invalid topic, a payload too large)."""
        sent = 0
        chunk: list[Message] = []
        for message in messages:
            chunk.append(message)
            if len(chunk) >= CHUNK:
                sent += self._send_chunk(chunk)
                chunk = []
        if chunk:
            sent += self._send_chunk(chunk)
        return sent

    def _send_chunk(self, chunk: list[Message]) -> int:
        with self.pub_lock:
            client = self.client_or_raise()
            mids = [self.publish(client, *m) for m in chunk]
        self._wait(mids, client)
        return len(mids)

    def client_or_raise(self) -> mqtt.Client:
        """The client of the connection now up, else a transient :class:`MqttWriteError`."""
        with self._cond:
            if self._online and self._client is not None:
                return self._client
            reason = self._last_error
        o = self.options
        raise MqttWriteError(f"not connected to the MQTT broker {o.host}:{o.port} ({reason})", transient=True)

    def publish(
        self, client: mqtt.Client, topic: str, payload: bytes | Callable[[], bytes], qos: int, retain: bool
    ) -> int:
        """Hand one message to ``client`` (hold :attr:`pub_lock`); its message id."""
        data = payload() if callable(payload) else payload
        try:
            info = client.publish(topic, data, qos=qos, retain=retain)
        except ValueError as exc:  # invalid topic (wildcards, too long), payload too large
            raise MqttWriteError(
                f"the MQTT client refused a message to {topic[:200]!r}: {exc}", transient=False
            ) from exc
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttWriteError(
                f"publishing to {topic[:200]!r} failed: {mqtt.error_string(info.rc)}", transient=True
            )
        return info.mid

    def _wait(self, mids: list[int], client: mqtt.Client, closing_ok: bool = False) -> None:
        if not mids:
            return
        timeout = self.options.timeout_s
        with self._cond:
            pending = set(mids)
            pending -= self._acked
            self._acked.clear()
            self._pending = pending
            self._last_ack = time.monotonic()
            try:
                while pending:
                    if self._client is not client or self._lost:
                        raise MqttWriteError(
                            f"the connection to the MQTT broker was lost before {len(pending)} of "
                            f"{len(mids)} messages were acknowledged ({self._last_error})",
                            transient=True,
                        )
                    if self._closing and not closing_ok:
                        raise MqttWriteError("the writer is closing", transient=True)
                    left = self._last_ack + timeout - time.monotonic()
                    if left <= 0:
                        self._last_error = f"no acknowledgement for {timeout:g} s"
                        self._lost = True
                        self._online = False
                        self._cond.notify_all()  # the supervisor replaces the connection
                        raise MqttWriteError(
                            f"the MQTT broker acknowledged none of {len(pending)} messages for "
                            f"{timeout:g} s (of {len(mids)} sent); the connection is replaced",
                            transient=True,
                        )
                    self._cond.wait(min(left, 1.0))
            finally:
                self._pending = None

    # -- paho callbacks (paho's network thread) -------------------------------------------------
    def _on_publish(self, client: mqtt.Client, _u: Any, mid: int, _rc: ReasonCode, _p: Any) -> None:
        with self._cond:
            if client is not self._client:
                return
            self._last_ack = time.monotonic()
            pending = self._pending
            if pending is None:
                self._acked.add(mid)
            else:
                pending.discard(mid)
                if not pending:
                    self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        with self._cond:
            if client is not self._client:
                return
            if not self._closing:
                self._last_error = "connection lost" + (
                    "" if rc.getName() == "Unspecified error" else f": {rc}"
                )
            self._lost = True
            self._online = False
            self._cond.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._hooks.message(message.topic, bytes(message.payload))
        except Exception:  # a callback must not kill paho's thread
            _log.exception("MQTT %s: handling a message on %r failed", self._label, message.topic)

    # -- connecting ------------------------------------------------------------------------------
    def _new_client(self) -> mqtt.Client:
        o = self.options
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=o.client_id,
            clean_session=o.clean_session,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        client.suppress_exceptions = True
        client.connect_timeout = o.connect_timeout_s
        client.max_inflight_messages_set(o.max_inflight)
        client.max_queued_messages_set(0)
        if o.username is not None:
            client.username_pw_set(o.username, o.password)
        if o.tls:
            client.tls_set(
                ca_certs=o.ca_file,
                certfile=o.cert_file,
                keyfile=o.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            if o.tls_insecure:
                client.tls_insecure_set(True)
        will = self._hooks.will()
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _connect(self) -> None:
        """One connection attempt; on success the link is online (births published)."""
        o = self.options
        where = f"{o.host}:{o.port}"
        try:
            client = self._new_client()
        except (ValueError, OSError, ssl.SSLError) as exc:  # e.g. an unreadable certificate
            raise MqttWriteError(
                f"cannot set up the MQTT client for {where}: {exc}", transient=False
            ) from exc
        connack = threading.Event()
        result: list[ReasonCode] = []

        def on_connect(_c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
            result.append(rc)
            connack.set()

        client.on_connect = on_connect
        with self._cond:
            self._client = client
            self._lost = False
        try:
            client.connect(o.host, o.port, keepalive=o.keepalive_s)
        except ssl.SSLError as exc:
            self._failed(client, f"TLS handshake with {where} failed: {exc}")
            raise MqttWriteError(
                f"TLS handshake with the MQTT broker {where} failed: {exc}", transient=True
            ) from exc
        except (OSError, TimeoutError) as exc:
            self._failed(client, f"cannot connect to {where}: {exc}")
            raise MqttWriteError(f"cannot connect to the MQTT broker {where}: {exc}", transient=True) from exc
        client.loop_start()
        if not connack.wait(o.connect_timeout_s) or not result:
            self._failed(client, f"no CONNACK from {where} within {o.connect_timeout_s:g} s")
            raise MqttWriteError(
                f"the MQTT broker {where} did not answer CONNECT within {o.connect_timeout_s:g} s",
                transient=True,
            )
        rc = result[0]
        if rc.is_failure:
            self._failed(client, f"refused: {rc}")
            raise MqttWriteError(
                f"the MQTT broker {where} refused the connection of client {o.client_id!r}: {rc}",
                transient=rc.getName() not in _PERMANENT_CONNACK,
            )
        try:
            self._hooks.connected(self, client)
        except MqttWriteError as exc:
            self._failed(client, str(exc))
            raise
        except Exception as exc:
            self._failed(client, f"{type(exc).__name__}: {exc}")
            raise MqttWriteError(
                f"setting up the session with {where} failed: {type(exc).__name__}: {exc}", transient=True
            ) from exc
        with self._cond:
            lost = self._lost or self._client is not client
            reason = self._last_error
            if not lost:
                self._online = True
                self._last_error = ""
                self.connections += 1
                self._cond.notify_all()
        if lost:
            self._failed(client, reason)
            raise MqttWriteError(f"the connection to {where} was lost at once ({reason})", transient=True)

    def _failed(self, client: mqtt.Client, reason: str) -> None:
        with self._cond:
            self._last_error = reason
            self._lost = True
            self._online = False
            if self._client is client:
                self._client = None
        self._drop(client, graceful=False)

    def _drop(self, client: mqtt.Client, *, graceful: bool) -> None:
        """End ``client``'s connection. Gracefully: DISCONNECT (the broker discards the will);
        else the socket is shut without DISCONNECT, so the broker publishes the will."""
        closed = threading.Event()
        client.on_disconnect = lambda *_a: closed.set()
        if graceful:
            with contextlib.suppress(Exception):
                client.disconnect()
            closed.wait(_DISCONNECT_GRACE_S)
        shutdown = getattr(client.socket(), "shutdown", None)
        if shutdown is not None:
            with contextlib.suppress(OSError, ValueError):
                shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            client.loop_stop()
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                sock.close()

    def _supervise(self) -> None:
        delay = _MIN_BACKOFF_S
        failures = 0
        while True:
            with self._cond:
                while not self._closing and self._online and not self._poked:
                    self._cond.wait()
                if self._closing:
                    return
                poked, self._poked = self._poked, False
                online, client = self._online, self._client
            if online and client is not None:
                if poked:
                    try:
                        self._hooks.poked(self, client)
                    except Exception:
                        _log.exception("MQTT %s: handling a request failed", self._label)
                continue
            if client is not None:
                with self._cond:
                    self._client = None
                self._drop(client, graceful=False)
                _log.warning("MQTT %s: %s; reconnecting", self._label, self.last_error)
            try:
                self._connect()
            except MqttWriteError as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    _log.warning(
                        "MQTT %s: reconnecting failed %d time(s), next try in %.2f s: %s",
                        self._label,
                        failures,
                        delay,
                        exc,
                    )
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, delay)
                delay = min(delay * 2, self.options.reconnect_max_s)
                continue
            except Exception:
                _log.exception("MQTT %s: reconnecting failed unexpectedly", self._label)
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, delay)
                delay = min(delay * 2, self.options.reconnect_max_s)
                continue
            if failures:
                _log.warning("MQTT %s: reconnected after %d failed attempt(s)", self._label, failures)
            failures = 0
            delay = _MIN_BACKOFF_S
