"""OPC UA reader cases for the contract suite, and helpers shared by the ``opcua_*_test.py`` files.

Every contract runs a real asyncua server (the testing kit's ``opcua_simulator`` fixture) on
127.0.0.1 on a free port.
"""

from __future__ import annotations

import math
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from data_collector import DataReader, Variable
from data_collector.testing import ReaderContract, free_port

if TYPE_CHECKING:
    from data_reader.opcua.simulator import OpcUaSimulator

ROOT = Path(__file__).resolve().parent.parent.parent
SIM_URI = "urn:data-collector:simulator"
AUX_URI = "urn:data-collector:simulator:aux"

#: Constant nodes of the simulator: name -> (value type, expected value).
CONSTANTS: dict[str, tuple[str, Any]] = {
    "Static.Double": ("float", 3.25),
    "Static.Float": ("float", 1.5),
    "Static.Int16": ("int", -1234),
    "Static.Int32": ("int", -42),
    "Static.UInt32": ("int", 4_000_000_000),
    "Static.Int64": ("int", 2**40),
    "Static.Bool": ("bool", True),
    "Static.String": ("str", "hello"),
    "Static.Bytes": ("bytes", b"\x00\x01\xfe\xff"),
    "Static.Text": ("str", "Boiler 1"),
}


class _OpcUaContract(ReaderContract):
    """The OPC UA reader against the simulator: every identifier form, a namespace by URI, live
    nodes; a node that does not exist and one whose device failed; a server nobody runs."""

    mode = "poll"

    @pytest.fixture(autouse=True)
    def _server(self, opcua_simulator: OpcUaSimulator) -> None:
        self.sim = opcua_simulator

    def _reader(self, endpoint: str) -> DataReader:
        from data_reader.opcua import OpcUaDataReader

        return OpcUaDataReader(endpoint, mode=self.mode, timeout_s=3.0)  # type: ignore[arg-type]

    def make_reader(self) -> DataReader:
        return self._reader(self.sim.endpoint)

    def make_variables(self) -> list[Variable]:
        sim = self.sim
        return [
            Variable(1, sim.address("Static.Double"), "float", "opcua"),
            Variable(2, sim.address("Static.Int32"), "int", "opcua"),
            Variable(3, sim.address("Static.Bool"), "bool", "opcua"),
            Variable(4, sim.address("Static.String"), "str", "opcua"),
            Variable(5, sim.address("Static.UInt32", by_uri=True), "int", "opcua"),
            Variable(6, sim.address("Sim.Sine"), "float", "opcua"),
            Variable(7, sim.address("Sim.Counter", by_uri=True), "int", "opcua"),
            Variable(8, sim.numeric_address(), "float", "opcua"),
        ]

    def expected_values(self) -> dict[int, Callable[[Any], bool]]:
        return {
            1: lambda v: v == 3.25,
            2: lambda v: v == -42,
            3: lambda v: v is True,
            4: lambda v: v == "hello",
            5: lambda v: v == 4_000_000_000,
            6: lambda v: math.isfinite(v) and -1.0 <= v <= 1.0,
            7: lambda v: v >= 1,
            8: lambda v: v == 10.01,
        }

    def invalid_variables(self) -> list[Variable]:
        return [
            Variable(90, "not a node id", "float", "opcua"),
            Variable(91, "ns=2;x=Sim.Sine", "float", "opcua"),
        ]

    def unreadable_variables(self) -> list[Variable]:
        return [
            Variable(95, self.sim.address("No.Such.Node"), "float", "opcua"),
            Variable(96, self.sim.address("Status.Bad"), "float", "opcua"),
        ]

    def make_unreachable_reader(self) -> DataReader:
        return self._reader(f"opc.tcp://127.0.0.1:{free_port()}/")


class OpcUaPollContract(_OpcUaContract):
    mode = "poll"


class OpcUaSubscribeContract(_OpcUaContract):
    mode = "subscribe"


READER_CONTRACTS = [OpcUaPollContract, OpcUaSubscribeContract]


# -- helpers for the opcua tests ------------------------------------------------------------------


@dataclass(frozen=True)
class CertPair:
    certificate: Path
    private_key: Path


def make_certificate(directory: Path, name: str, uri: str, *, server: bool = False) -> CertPair:
    """A self-signed OPC UA application certificate (PEM) and its key, made for the test."""
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = cert_gen.generate_private_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    names = [
        x509.UniformResourceIdentifier(uri),
        x509.DNSName(socket.gethostname()),
        x509.DNSName("localhost"),
    ]
    cert = cert_gen.generate_self_signed_app_certificate(key, name, {}, names, [usage], days=2)
    pair = CertPair(directory / f"{name}-cert.pem", directory / f"{name}-key.pem")
    pair.certificate.write_bytes(cert.public_bytes(Encoding.PEM))
    pair.private_key.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return pair


class SimulatorProcess:
    """``python -m data_reader.opcua_simulator`` in a child process (so it can really be killed)."""

    def __init__(
        self, port: int = 0, *, reverse_namespaces: bool = False, extra: list[str] | None = None
    ) -> None:
        cmd = [sys.executable, "-m", "data_reader.opcua_simulator", "--port", str(port)]
        if reverse_namespaces:
            cmd.append("--reverse-namespaces")
        cmd += extra or []
        self.process = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        line = self._first_line(60.0)
        match = re.search(r"opc\.tcp://127\.0\.0\.1:(\d+)/", line)
        if match is None:
            self.kill()
            raise AssertionError(f"simulator did not start: {line!r}")
        self.port = int(match.group(1))
        self.banner = line
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/"

    def _first_line(self, timeout_s: float) -> str:
        import selectors

        assert self.process.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                self.kill()
                raise AssertionError(f"simulator printed nothing within {timeout_s} s")
        return self.process.stdout.readline()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        if self.process.stdout is not None:
            self.process.stdout.close()


# -- the monitored items as the server sees them (in-process simulators only) ---------------------


def record_sampling_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every in-process asyncua server note, on each monitored item it creates, the sampling
    interval the client requested (asyncua's server keeps only the subscription's publishing one).

    Patched on the class, so a server started later (a restart) records too; undone by pytest.
    """
    from asyncua.server.subscription_service import SubscriptionService

    original = SubscriptionService.create_monitored_items

    async def create_monitored_items(self: SubscriptionService, params: Any) -> Any:
        results = await original(self, params)
        sub = self.subscriptions.get(params.SubscriptionId)
        if sub is not None:
            created = sub.monitored_item_srv._monitored_items
            for request, result in zip(params.ItemsToCreate, results, strict=True):
                data = created.get(result.MonitoredItemId)
                if data is not None:
                    # an attribute of our own on asyncua's item, read back by server_items()
                    vars(data)["sampling_ms"] = round(request.RequestedParameters.SamplingInterval)
        return results

    monkeypatch.setattr(SubscriptionService, "create_monitored_items", create_monitored_items)


def server_items(sim: OpcUaSimulator) -> list[tuple[str, int | None]]:
    """The monitored items on ``sim``'s server now, sorted: (node identifier, sampling ms).

    The sampling interval is ``None`` unless :func:`record_sampling_intervals` was active.
    """

    async def collect() -> list[tuple[str, int | None]]:
        server = sim._server
        if server is None:
            return []
        items: list[tuple[str, int | None]] = []
        for sub in server.iserver.subscription_service.subscriptions.values():
            for data in sub.monitored_item_srv._monitored_items.values():
                watched = data.read_value_id
                assert watched is not None, data  # set on every item the server creates
                items.append((str(watched.NodeId.Identifier), vars(data).get("sampling_ms")))
        return sorted(items)

    return sim._call(collect())


def server_subscriptions(sim: OpcUaSimulator) -> int:
    """How many subscriptions ``sim``'s server holds now."""

    async def count() -> int:
        server = sim._server
        return 0 if server is None else len(server.iserver.subscription_service.subscriptions)

    return sim._call(count())
