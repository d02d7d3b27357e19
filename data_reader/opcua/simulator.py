"""OPC UA simulator: an asyncua server on 127.0.0.1 with live variables of every value type.

For tests, examples and demos of :mod:`data_reader.opcua`. From Python it runs in a
background thread with its own event loop::

    from data_reader.opcua.simulator import OpcUaSimulator, NAMESPACE

    with OpcUaSimulator() as sim:          # free port on 127.0.0.1
        print(sim.endpoint)                # opc.tcp://127.0.0.1:40123/
        print(sim.address("Sim.Sine"))     # ns=2;s=Sim.Sine
        sim.set_value("Static.Double", 4.5)

From a shell (stops on Ctrl-C; prints one line with the endpoint, then runs)::

    python -m data_reader.opcua.simulator --port 4840 [--bulk 1000] [--reverse-namespaces]

Nodes (string NodeIds in namespace ``urn:data-collector:simulator``, see :data:`NODES`):

- live, updated every ``update_interval_s`` (0.1 s): ``Sim.Sine`` (Double), ``Sim.Ramp`` (Float),
  ``Sim.Counter`` (Int32), ``Sim.Counter64`` (Int64), ``Sim.UInt16``, ``Sim.Toggle`` (Boolean),
  ``Sim.Text`` (String), ``Sim.Bytes`` (ByteString), ``Sim.Time`` (DateTime);
- constants, writable: ``Static.Double`` 3.25, ``Static.Float`` 1.5, ``Static.Int16`` -1234,
  ``Static.Int32`` -42, ``Static.UInt32`` 4000000000, ``Static.Int64`` 2**40, ``Static.Bool``
  True, ``Static.String`` "hello", ``Static.Bytes`` b"\\x00\\x01\\xfe\\xff", ``Static.Text``
  (LocalizedText "Boiler 1");
- setpoints for writes: ``Setpoint.Double``, ``.Float``, ``.Int16``, ``.UInt32``, ``.Bool``,
  ``.String``, ``.Bytes``;
- qualities: ``Status.Uncertain`` (7.5, UncertainLastUsableValue), ``Status.Bad``
  (BadSensorFailure);
- other identifier forms: ``i=1001`` (Double 10.01), ``g=`` :data:`GUID_NODE` (Int32 7),
  ``b=`` :data:`OPAQUE_NODE` (String "opaque");
- ``Bulk.0000`` .. (``bulk`` Double nodes, all updated every ``bulk_interval_s``), for benchmarks;
- ``Aux.Counter`` (Int32, live) in a second namespace ``urn:data-collector:simulator:aux``,
  registered before the main one with ``reverse_namespaces=True`` so every index moves.

Writes: :attr:`~OpcUaSimulator.writes` lists every value a client wrote (node, value, the status
answered), in arrival order, so a test sees what was written and in which order; ``Aux.Counter``
is not writable (a write gets ``BadNotWritable`` or ``BadUserAccessDenied``).

Nodes appearing and vanishing (thread-safe helpers): :meth:`~OpcUaSimulator.add_variable` adds
a variable node (string NodeId in the simulator's namespace) at run time;
:meth:`~OpcUaSimulator.delete_node` deletes one and tells the subscriptions monitoring it, as
servers do: ``notify="status_change"`` (default) sends each of them a StatusChangeNotification
``BadNodeIdUnknown`` (what python-opcua sends and asyncua 2.1 means to send: its own
``delete_nodes`` drops that notification, asyncua issue #1771), ``notify="data_change"`` first
a data change of the node with status ``BadNodeIdUnknown`` (as servers that sample monitored
nodes by reading them do). :meth:`~OpcUaSimulator.send_status_change` sends a
StatusChangeNotification with any status (``BadTimeout``...) to every subscription.

Faults (thread-safe; for tests, also through the ``opcua_simulator`` fixture of
:mod:`data_collector.testing`): :meth:`~OpcUaSimulator.freeze` makes the server stop reading
from its clients (requests, publish requests included, go unanswered; connections stay open; a
client connecting meanwhile is frozen too), as a hung server, until :meth:`~OpcUaSimulator.thaw`;
:meth:`~OpcUaSimulator.refuse` gives nodes a Bad status (``BadOutOfService`` by default) that
reads and subscriptions see, as a device behind the server that is gone, their live updates
held; :meth:`~OpcUaSimulator.clear_faults` ends both. :meth:`~OpcUaSimulator.delete_node` drops a
node for good; ``stop()`` and ``start()`` again restart the server on the same port.

Security: with ``certificate`` + ``private_key`` the server also offers Basic256Sha256 Sign and
SignAndEncrypt; ``users`` ({name: password}) enables username authentication, ``user_certificates``
X.509 user authentication, and ``allow_anonymous=False`` turns anonymous sessions away.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import math
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from asyncua.common.callback import CallbackType
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from data_collector import ConfigurationError

from .._simulator_cli import ArgumentError as _ArgumentError
from .._simulator_cli import ArgumentParser as _Parser
from .._simulator_cli import port as _port
from ._ua import ua

__all__ = [
    "AUX_NAMESPACE",
    "GUID_NODE",
    "NAMESPACE",
    "NODES",
    "OPAQUE_NODE",
    "OpcUaSimulator",
    "SimulatorWrite",
    "main",
]

_logger = logging.getLogger(__name__)
_T = TypeVar("_T")

NAMESPACE = "urn:data-collector:simulator"
AUX_NAMESPACE = "urn:data-collector:simulator:aux"
GUID_NODE = uuid.UUID("09087e75-8e5e-499b-954f-f2a9603db28a")
OPAQUE_NODE = b"opaque-node"

_VT = ua.VariantType

#: name -> (variant type, initial value, status code or None); every node is in NAMESPACE.
NODES: dict[str, tuple[ua.VariantType, Any, int | None]] = {
    "Sim.Sine": (_VT.Double, 0.0, None),
    "Sim.Ramp": (_VT.Float, 0.0, None),
    "Sim.Counter": (_VT.Int32, 0, None),
    "Sim.Counter64": (_VT.Int64, 0, None),
    "Sim.UInt16": (_VT.UInt16, 0, None),
    "Sim.Toggle": (_VT.Boolean, False, None),
    "Sim.Text": (_VT.String, "tick 0", None),
    "Sim.Bytes": (_VT.ByteString, b"\x00\x00\x00\x00", None),
    "Sim.Time": (_VT.DateTime, datetime(2000, 1, 1, tzinfo=UTC), None),
    "Static.Double": (_VT.Double, 3.25, None),
    "Static.Float": (_VT.Float, 1.5, None),
    "Static.Int16": (_VT.Int16, -1234, None),
    "Static.Int32": (_VT.Int32, -42, None),
    "Static.UInt32": (_VT.UInt32, 4_000_000_000, None),
    "Static.Int64": (_VT.Int64, 2**40, None),
    "Static.Bool": (_VT.Boolean, True, None),
    "Static.String": (_VT.String, "hello", None),
    "Static.Bytes": (_VT.ByteString, b"\x00\x01\xfe\xff", None),
    "Static.Text": (_VT.LocalizedText, ua.LocalizedText("Boiler 1"), None),
    "Setpoint.Double": (_VT.Double, 0.0, None),
    "Setpoint.Float": (_VT.Float, 0.0, None),
    "Setpoint.Int16": (_VT.Int16, 0, None),
    "Setpoint.UInt32": (_VT.UInt32, 0, None),
    "Setpoint.Bool": (_VT.Boolean, False, None),
    "Setpoint.String": (_VT.String, "", None),
    "Setpoint.Bytes": (_VT.ByteString, b"", None),
    "Status.Uncertain": (_VT.Double, 7.5, ua.StatusCodes.UncertainLastUsableValue),
    "Status.Bad": (_VT.Double, 0.0, ua.StatusCodes.BadSensorFailure),
}
#: Nodes with other identifier forms: identifier -> (variant type, value).
_OTHER_IDS: dict[int | uuid.UUID | bytes, tuple[ua.VariantType, Any]] = {
    1001: (_VT.Double, 10.01),
    GUID_NODE: (_VT.Int32, 7),
    OPAQUE_NODE: (_VT.String, "opaque"),
}


@dataclass(frozen=True, slots=True)
class SimulatorWrite:
    """One node value a client wrote (Write service), in arrival order: the node (``name`` for a
    string NodeId of the simulator's namespaces, else the NodeId text), the value and the status
    the server answered (``Good``, ``BadNotWritable``, ...)."""

    name: str
    value: Any
    status: str


class _Users:
    """asyncua user manager: passwords, trusted user certificates, optional anonymous access."""

    def __init__(
        self, users: Mapping[str, str], certificates: Sequence[bytes], allow_anonymous: bool
    ) -> None:
        self._users = dict(users)
        self._certificates = set(certificates)
        self._allow_anonymous = allow_anonymous

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None:
            expected = self._users.get(username)
            if expected is not None and hmac.compare_digest(expected.encode(), (password or "").encode()):
                return User(role=UserRole.User, name=username)
            return None
        if certificate is not None:
            der = (
                certificate
                if isinstance(certificate, bytes)
                else certificate.public_bytes(serialization.Encoding.DER)
            )
            if der in self._certificates:
                return User(role=UserRole.User, name="certificate")
        return User(role=UserRole.User) if self._allow_anonymous else None


class OpcUaSimulator:
    """An asyncua server with simulated plant values (see the module docstring)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        bulk: int = 0,
        update_interval_s: float = 0.1,
        bulk_interval_s: float = 1.0,
        reverse_namespaces: bool = False,
        max_nodes_per_read: int | None = None,
        certificate: str | Path | None = None,
        private_key: str | Path | None = None,
        users: Mapping[str, str] | None = None,
        user_certificates: Sequence[str | Path] = (),
        allow_anonymous: bool = True,
    ) -> None:
        if (certificate is None) != (private_key is None):
            raise ValueError("certificate and private_key go together")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(
                f"OpcUaSimulator: port must be an int 0..65535 (0: a free one), got {port!r}"
            )
        self.host = host
        self.port = port
        self.bulk = bulk
        self.update_interval_s = update_interval_s
        self.bulk_interval_s = bulk_interval_s
        self.reverse_namespaces = reverse_namespaces
        self.max_nodes_per_read = max_nodes_per_read
        self.certificate = certificate
        self.private_key = private_key
        self.users = dict(users or {})
        self.user_certificates = tuple(user_certificates)
        self.allow_anonymous = allow_anonymous
        #: Read service calls received from clients.
        self.read_requests = 0
        #: Values written by the simulation (live and bulk nodes).
        self.updates = 0
        self.namespace_index = 0
        self.aux_namespace_index = 0
        self._server: Server | None = None
        self._nodeids: dict[str, ua.NodeId] = {}
        self._folder: ua.NodeId | None = None
        self._added: dict[str, ua.VariantType] = {}  # nodes added by add_variable: their types
        self._bulk_ids: list[ua.NodeId] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._tick = 0
        self._frozen = False
        self._paused: list[Any] = []  # transports paused by freeze()
        self._refused: dict[str, Any] = {}  # node name -> its value before refuse()
        self._writes: list[SimulatorWrite] = []
        self._writes_lock = threading.Lock()

    # ------------------------------------------------------------------ addresses

    @property
    def endpoint(self) -> str:
        """``opc.tcp://host:port/`` (the real port once started)."""
        return f"opc.tcp://{self.host}:{self.port}/"

    def address(self, name: str, *, by_uri: bool = False) -> str:
        """The NodeId string of node ``name`` (``Bulk.0007``, ``Sim.Sine``, ``Aux.Counter``, ...)."""
        aux = name.startswith("Aux.")
        if by_uri:
            return f"nsu={AUX_NAMESPACE if aux else NAMESPACE};s={name}"
        return f"ns={self.aux_namespace_index if aux else self.namespace_index};s={name}"

    def numeric_address(self) -> str:
        return f"ns={self.namespace_index};i=1001"

    def guid_address(self) -> str:
        return f"ns={self.namespace_index};g={GUID_NODE}"

    def opaque_address(self) -> str:
        return f"ns={self.namespace_index};b={base64.b64encode(OPAQUE_NODE).decode()}"

    def bulk_addresses(self, count: int | None = None, *, by_uri: bool = False) -> list[str]:
        return [
            self.address(f"Bulk.{i:04d}", by_uri=by_uri) for i in range(self.bulk if count is None else count)
        ]

    # ------------------------------------------------------------------ lifecycle (thread)

    def start(self) -> str:
        """Start the server in a background thread; returns the endpoint once it listens."""
        if self._thread is not None:
            return self.endpoint
        started = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve(started.set))
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                started.set()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="opcua-simulator", daemon=True)
        self._thread.start()
        if not started.wait(60):
            raise RuntimeError("OPC UA simulator did not start within 60 s")
        if failure:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"OPC UA simulator failed to start: {failure[0]!r}") from failure[0]
        return self.endpoint

    def stop(self) -> None:
        """Stop the server and join its thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        self._thread = None
        if thread is None or loop is None:
            return
        if stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)

    def __enter__(self) -> OpcUaSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers (thread-safe)

    def set_value(self, name: str, value: Any, status: int | None = None) -> None:
        """Set node ``name`` to ``value`` (its own data type) and optionally a status code."""
        self._call(self._set(name, value, status))

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        """Stop reading from every client connection (and from those that connect meanwhile):
        nothing is answered, connections stay open, clients time out, until :meth:`thaw`."""
        self._frozen = True
        self._call(self._pause_transports())

    def thaw(self) -> None:
        """Read from the clients again; what they sent meanwhile is processed now."""
        self._frozen = False
        self._call(self._resume_transports())

    async def _pause_transports(self) -> None:
        server = self._server
        if server is None or not self._frozen:
            return
        for transport in list(server.iserver.asyncio_transports):
            if transport not in self._paused and not transport.is_closing():
                transport.pause_reading()
                self._paused.append(transport)

    async def _resume_transports(self) -> None:
        paused, self._paused = self._paused, []
        for transport in paused:
            if not transport.is_closing():
                transport.resume_reading()

    def refuse(self, *names: str, status: str = "BadOutOfService") -> None:
        """Give nodes ``names`` the Bad status ``status`` (a ``StatusCodes`` name), keeping their
        value: reads answer it and subscriptions get it as a data change; live nodes stop
        updating. Until :meth:`clear_faults`."""
        code = getattr(ua.StatusCodes, status, None)
        if not isinstance(code, int) or not status.startswith("Bad"):
            raise ConfigurationError(
                f"OpcUaSimulator.refuse: status must be a Bad StatusCodes name, got {status!r}"
            )
        for name in names:
            self._nodeid(name)  # KeyError for an unknown node, before anything changes
        for name in names:
            value = self._refused.get(name, self.get_value(name))  # (a Bad status reads as no value)
            self._refused[name] = value
            self._call(self._set(name, value, code))

    def clear_faults(self) -> None:
        """Thaw and give every refused node its Good status back."""
        if self._frozen:
            self.thaw()
        refused, self._refused = self._refused, {}
        for name, value in refused.items():
            if name in self._nodeids:
                self._call(self._set(name, value, None))

    def set_max_nodes_per_read(self, limit: int) -> None:
        """Change the server's MaxNodesPerRead (clients read it when they connect)."""
        self.max_nodes_per_read = limit
        self._call(self._set_limit(limit))

    async def _set_limit(self, limit: int) -> None:
        assert self._server is not None
        node = self._server.get_node(
            ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
        )
        await node.write_value(ua.Variant(limit, _VT.UInt32))

    def add_variable(self, name: str, value: Any, variant_type: ua.VariantType | None = None) -> str:
        """Add a writable variable node ``name`` (in the simulator's namespace) while running.

        ``variant_type`` defaults from the value (Double, Int64, Boolean, String). Returns its
        address (``ns=<index>;s=<name>``). A node deleted with :meth:`delete_node` may be added again.
        """
        if variant_type is None:
            variant_type = (
                _VT.Boolean
                if isinstance(value, bool)
                else _VT.Int64
                if isinstance(value, int)
                else _VT.String
                if isinstance(value, str)
                else _VT.Double
            )
        self._call(self._add_variable(name, value, variant_type))
        return self.address(name)

    async def _add_variable(self, name: str, value: Any, variant_type: ua.VariantType) -> None:
        server = self._server
        assert server is not None and self._folder is not None
        if name in self._nodeids:
            raise ValueError(f"simulator node {name!r} exists already")
        ns = self.namespace_index
        folder = server.get_node(self._folder)
        node = await folder.add_variable(ua.NodeId(name, ns), ua.QualifiedName(name, ns), value, variant_type)
        await node.set_writable()
        self._nodeids[name] = node.nodeid
        self._added[name] = variant_type

    def delete_node(self, name: str, *, notify: str = "status_change") -> None:
        """Delete node ``name``, telling the subscriptions that monitor it (see the module docstring)."""
        if notify not in ("status_change", "data_change"):
            raise ValueError(f"notify must be 'status_change' or 'data_change', got {notify!r}")
        self._call(self._delete_node(name, notify))

    async def _delete_node(self, name: str, notify: str) -> None:
        server = self._server
        assert server is not None
        nodeid = self._nodeid(name)
        gone = ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
        if notify == "data_change":
            await server.write_attribute_value(nodeid, ua.DataValue(StatusCode=gone))
        aspace = server.iserver.aspace
        attribute = aspace[nodeid].attributes[ua.AttributeIds.Value]
        for handle, callback in list(attribute.datachange_callbacks.items()):
            if notify == "status_change":
                result = callback(handle, None, gone)
                if asyncio.iscoroutine(result):
                    await result
            aspace.delete_datachange_callback(handle)  # (asyncua would call it without awaiting)
        del self._nodeids[name]
        await server.delete_nodes([server.get_node(nodeid)])

    def send_status_change(self, status: str) -> None:
        """Send a StatusChangeNotification with ``status`` (a StatusCodes name) to every subscription."""
        code = getattr(ua.StatusCodes, status)
        self._call(self._send_status_change(ua.StatusCode(code)))

    async def _send_status_change(self, code: ua.StatusCode) -> None:
        assert self._server is not None
        for isub in list(self._server.iserver.subscription_service.subscriptions.values()):
            await isub.enqueue_statuschange(code)

    @property
    def writes(self) -> list[SimulatorWrite]:
        """A copy of every value clients wrote since start (or :meth:`clear_writes`), in order."""
        with self._writes_lock:
            return list(self._writes)

    def clear_writes(self) -> None:
        with self._writes_lock:
            self._writes.clear()

    def _record_writes(self, event: Any, _dispatcher: Any) -> None:
        if not getattr(event, "is_external", False):
            return
        nodes = getattr(event.request_params, "NodesToWrite", None) or []
        results = event.response_params or []
        records = []
        for i, wv in enumerate(nodes):
            if wv.AttributeId != ua.AttributeIds.Value:
                continue
            nodeid = wv.NodeId
            name = (
                nodeid.Identifier
                if isinstance(nodeid.Identifier, str)
                and nodeid.NamespaceIndex in (self.namespace_index, self.aux_namespace_index)
                else nodeid.to_string()
            )
            variant = wv.Value.Value if wv.Value is not None else None
            status = results[i].name if i < len(results) else "?"
            records.append(SimulatorWrite(name, variant.Value if variant is not None else None, status))
        with self._writes_lock:
            self._writes.extend(records)

    def get_value(self, name: str) -> Any:
        """The current value of node ``name``."""
        server = self._server
        assert server is not None
        dv = server.read_attribute_value(self._nodeid(name))
        return dv.Value.Value if dv.Value is not None else None

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("OPC UA simulator is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    def _nodeid(self, name: str) -> ua.NodeId:
        nodeid = self._nodeids.get(name)
        if nodeid is None:
            raise KeyError(f"no simulator node {name!r}")
        return nodeid

    async def _set(self, name: str, value: Any, status: int | None) -> None:
        assert self._server is not None
        nodeid = self._nodeid(name)
        vtype = (
            NODES[name][0]
            if name in NODES
            else self._added[name]
            if name in self._added
            else _VT.Double
            if name.startswith("Bulk.")
            else _VT.Int32
        )
        await self._write(nodeid, value, vtype, status)

    async def _write(
        self, nodeid: ua.NodeId, value: Any, vtype: ua.VariantType, status: int | None = None
    ) -> None:
        assert self._server is not None
        now = datetime.now(UTC)
        dv = ua.DataValue(
            ua.Variant(value, vtype),
            StatusCode=ua.StatusCode(status if status is not None else ua.StatusCodes.Good),
            SourceTimestamp=now,
            ServerTimestamp=now,
        )
        await self._server.write_attribute_value(nodeid, dv)

    # ------------------------------------------------------------------ the server

    async def serve(self, ready: Callable[[], None] | None = None, duration_s: float | None = None) -> None:
        """Build and run the server until :meth:`stop`, cancellation or ``duration_s``.

        ``ready`` is called once the server listens.
        """
        self._stop = asyncio.Event()
        server = await self._build()
        await server.start()
        try:
            bserver = server.bserver
            if bserver is not None and self.port == 0:
                self.port = int(bserver.port)
            self._server = server
            if ready is not None:
                ready()
            updater = asyncio.create_task(self._simulate())
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), duration_s)
            finally:
                updater.cancel()
                await asyncio.gather(updater, return_exceptions=True)
        finally:
            self._server = None
            self._paused = []
            await server.stop()

    async def _build(self) -> Server:
        users = _Users(self.users, [_cert_der(p) for p in self.user_certificates], self.allow_anonymous)
        self._nodeids = {}  # (a restarted simulator starts from its initial nodes)
        server = Server(user_manager=users)  # type: ignore[arg-type]
        self._server = server
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}/")
        server.set_server_name("data-collector OPC UA simulator")
        policies = [ua.SecurityPolicyType.NoSecurity]
        if self.certificate is not None and self.private_key is not None:
            await server.load_certificate(*_content(self.certificate))
            key, key_format = _content(self.private_key)
            await server.load_private_key(key, None, key_format)
            policies += [
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        server.set_security_policy(policies)
        tokens: list[type] = []
        if self.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if self.users:
            tokens.append(ua.UserNameIdentityToken)
        if self.user_certificates:
            tokens.append(ua.X509IdentityToken)
        server.set_identity_tokens(tokens)
        if self.reverse_namespaces:
            self.aux_namespace_index = await server.register_namespace(AUX_NAMESPACE)
            self.namespace_index = await server.register_namespace(NAMESPACE)
        else:
            self.namespace_index = await server.register_namespace(NAMESPACE)
            self.aux_namespace_index = await server.register_namespace(AUX_NAMESPACE)
        if self.max_nodes_per_read is not None:
            await self._set_limit(self.max_nodes_per_read)
        ns = self.namespace_index
        folder = await server.nodes.objects.add_object(
            ua.NodeId("Sim", ns), ua.QualifiedName("Simulator", ns)
        )
        self._folder = folder.nodeid
        for name, (vtype, value, status) in NODES.items():
            node = await folder.add_variable(ua.NodeId(name, ns), ua.QualifiedName(name, ns), value, vtype)
            await node.set_writable()
            self._nodeids[name] = node.nodeid
            if status is not None:
                await self._write(node.nodeid, value, vtype, status)
        for ident, (vtype, value) in _OTHER_IDS.items():
            node = await folder.add_variable(
                ua.NodeId(ident, ns), ua.QualifiedName(f"Id.{ident!s}", ns), value, vtype
            )
            await node.set_writable()
        aux = await server.nodes.objects.add_object(
            ua.NodeId("Aux", self.aux_namespace_index), ua.QualifiedName("Aux", self.aux_namespace_index)
        )
        node = await aux.add_variable(
            ua.NodeId("Aux.Counter", self.aux_namespace_index),
            ua.QualifiedName("Aux.Counter", self.aux_namespace_index),
            0,
            _VT.Int32,
        )
        self._nodeids["Aux.Counter"] = node.nodeid
        self._bulk_ids = []
        for i in range(self.bulk):
            name = f"Bulk.{i:04d}"
            node = await folder.add_variable(
                ua.NodeId(name, ns), ua.QualifiedName(name, ns), float(i), _VT.Double
            )
            self._nodeids[name] = node.nodeid
            self._bulk_ids.append(node.nodeid)

        def count_reads(event: Any, _dispatcher: Any) -> None:
            if getattr(event, "is_external", False):
                self.read_requests += 1

        server.subscribe_server_callback(CallbackType.PreRead, count_reads)
        server.subscribe_server_callback(CallbackType.PostWrite, self._record_writes)
        return server

    async def _simulate(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_update = next_bulk = start
        while True:
            now = loop.time()
            if self._frozen:
                await self._pause_transports()  # clients that connected since freeze()
            if now >= next_update:
                await self._update_live(time.time())
                next_update += self.update_interval_s
                if next_update < now:
                    next_update = now + self.update_interval_s
            if self._bulk_ids and now >= next_bulk:
                await self._update_bulk()
                next_bulk += self.bulk_interval_s
                if next_bulk < now:
                    next_bulk = now + self.bulk_interval_s
            wake = min(next_update, next_bulk) if self._bulk_ids else next_update
            if self._frozen:
                wake = min(wake, loop.time() + 0.01)
            await asyncio.sleep(max(0.0, wake - loop.time()))

    async def _update_live(self, wall: float) -> None:
        self._tick += 1
        n = self._tick
        values: dict[str, Any] = {
            "Sim.Sine": math.sin(2 * math.pi * wall / 10.0),
            "Sim.Ramp": float((n % 1000) / 10.0),
            "Sim.Counter": n % 2**31,
            "Sim.Counter64": n,
            "Sim.UInt16": n % 2**16,
            "Sim.Toggle": bool(n % 2),
            "Sim.Text": f"tick {n}",
            "Sim.Bytes": (n % 2**32).to_bytes(4, "big"),
            "Sim.Time": datetime.now(UTC),
        }
        for name, value in values.items():
            nodeid = self._nodeids.get(name)
            if nodeid is not None and name not in self._refused:  # (None: deleted by delete_node)
                await self._write(nodeid, value, NODES[name][0])
        aux = self._nodeids.get("Aux.Counter")
        if aux is not None:
            await self._write(aux, n % 2**31, _VT.Int32)
        self.updates += len(values) + 1

    async def _update_bulk(self) -> None:
        assert self._server is not None
        self._tick += 1
        now = datetime.now(UTC)
        base = float(self._tick)
        iserver = self._server.iserver
        for i, nodeid in enumerate(self._bulk_ids):
            dv = ua.DataValue(
                ua.Variant(base + i / 10000, _VT.Double), SourceTimestamp=now, ServerTimestamp=now
            )
            await iserver.write_attribute_value(nodeid, dv)
        self.updates += len(self._bulk_ids)


def _content(path: str | Path) -> tuple[bytes, str]:
    """A PEM or DER file's bytes and format, told by content (asyncua tells by file extension)."""
    data = Path(path).read_bytes()
    return data, "pem" if data.lstrip().startswith(b"-----BEGIN") else "der"


def _cert_der(path: str | Path) -> bytes:
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    return x509.load_der_x509_certificate(data).public_bytes(serialization.Encoding.DER)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m data_reader.opcua.simulator``: run the simulator until interrupted.

    A bad argument prints one ``error:`` line on stderr and returns 2.
    """
    parser = _Parser(prog="opcua-simulator", description="OPC UA simulator for data-collector")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=4840, help="TCP port, 0 for a free one (default 4840)")
    parser.add_argument("--bulk", type=int, default=0, help="number of Bulk.NNNN Double nodes (default 0)")
    parser.add_argument("--update-interval", type=float, default=0.1, help="live node period, s (0.1)")
    parser.add_argument("--bulk-interval", type=float, default=1.0, help="bulk node period, s (1.0)")
    parser.add_argument("--reverse-namespaces", action="store_true", help="register the aux namespace first")
    parser.add_argument("--max-nodes-per-read", type=int, default=None, help="server MaxNodesPerRead limit")
    parser.add_argument("--certificate", help="server certificate (enables Basic256Sha256)")
    parser.add_argument("--private-key", help="server private key")
    parser.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD", help="allowed user")
    parser.add_argument("--no-anonymous", action="store_true", help="refuse anonymous sessions")
    parser.add_argument("--duration", type=float, default=None, help="stop by itself after this many s")
    parser.add_argument("--log-level", default="WARNING", help="logging level (WARNING)")
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    users = dict(entry.split(":", 1) for entry in args.user if ":" in entry)
    sim = OpcUaSimulator(
        args.host,
        args.port,
        bulk=args.bulk,
        update_interval_s=args.update_interval,
        bulk_interval_s=args.bulk_interval,
        reverse_namespaces=args.reverse_namespaces,
        max_nodes_per_read=args.max_nodes_per_read,
        certificate=args.certificate,
        private_key=args.private_key,
        users=users,
        allow_anonymous=not args.no_anonymous,
    )

    def ready() -> None:
        sys.stdout.write(
            f"OPC UA simulator listening on {sim.endpoint} (namespace {NAMESPACE} = "
            f"ns={sim.namespace_index}, {AUX_NAMESPACE} = ns={sim.aux_namespace_index})\n"
        )
        sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(sim.serve(ready, args.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
