"""The MQTT writer over TLS: a Mosquitto started by the test on a free port with its own CA.

The test makes a CA, a server certificate for 127.0.0.1 and a client certificate (cryptography),
starts ``mosquitto`` requiring client certificates, and checks that the writer publishes with
``ca_file`` + ``cert_file`` + ``key_file`` (read back by a TLS subscriber), and that a wrong CA or
a missing client certificate fail ``open()`` with an ``MqttWriteError`` instead of publishing in
clear. Skipped when the ``mosquitto`` program or ``cryptography`` is missing (unless
``DC_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _util import wait_for

from data_collector import CollectedVariables, DataCollectionContext, Variable


def _skip(reason: str) -> None:
    if os.environ.get("DC_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (DC_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def key() -> Any:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert: x509.Certificate, private: Any) -> None:
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{stem}.key").write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def issue(cn: str, ca: tuple[x509.Certificate, Any] | None, usage: Any = None, ip: bool = False) -> Any:
        private = key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn) if ca is None else ca[0].subject)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if ip:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(private if ca is None else ca[1], hashes.SHA256())
        return cert, private

    ca = issue("dc-test-ca", None)
    write("ca", *ca)
    write("server", *issue("127.0.0.1", ca, ExtendedKeyUsageOID.SERVER_AUTH, ip=True))
    write("client", *issue("dc-test-client", ca, ExtendedKeyUsageOID.CLIENT_AUTH))
    write("other-ca", *issue("another-ca", None))
    return {p.stem + p.suffix.replace(".", "_"): p for p in folder.iterdir()}


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, dict[str, Path]]]:
    pytest.importorskip("paho.mqtt")
    if pytest.importorskip("cryptography") is None:  # pragma: no cover
        return
    program = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if program is None:
        _skip("the mosquitto program is not installed (apt-get install mosquitto)")
    assert program is not None
    files = _pki(tmp_path)
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"cafile {files['ca_pem']}\n"
        f"certfile {files['server_pem']}\n"
        f"keyfile {files['server_key']}\n"
        "require_certificate true\n"
        "persistence false\n"
        # as root, mosquitto drops to the user 'mosquitto', who cannot read tmp_path
        f"user {getpass.getuser()}\n"
    )
    log = (tmp_path / "mosquitto.log").open("w")
    proc = subprocess.Popen([program, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:

        def running() -> bool:
            text = (tmp_path / "mosquitto.log").read_text()
            if proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {text}")
            return " running" in text

        wait_for(running, 15, "mosquitto to run")
        yield port, files
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _subscriber(port: int, files: dict[str, Path], topic: str) -> tuple[Any, list[bytes]]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[bytes] = []
    ready = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.tls_set(
        ca_certs=str(files["ca_pem"]), certfile=str(files["client_pem"]), keyfile=str(files["client_key"])
    )
    sub.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    sub.on_subscribe = lambda *_a: ready.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe(topic, 1)
    assert ready.wait(10)
    return sub, got


def test_tls_with_a_client_certificate(tls_broker: tuple[int, dict[str, Path]]) -> None:
    import json

    from data_writer.mqtt import MqttDataWriter

    port, files = tls_broker
    sub, got = _subscriber(port, files, "tls/#")
    try:
        writer = MqttDataWriter(
            "127.0.0.1",
            port,
            topic="tls/{variable_id}",
            context_topic="",
            ca_file=str(files["ca_pem"]),
            cert_file=str(files["client_pem"]),
            key_file=str(files["client_key"]),
        )
        assert "tls=True" in repr(writer)
        ctx = DataCollectionContext(1, [Variable(1, "c", "int", "r")])
        batch = CollectedVariables.of(list(ctx.variables), dt.datetime.now(dt.UTC))
        batch[0].value = 42
        writer.open()
        try:
            with writer.lock:
                writer.write(ctx, batch)
        finally:
            writer.close()
        wait_for(lambda: len(got) == 1, 10, "the sample over TLS")
        assert json.loads(got[0])["value"] == 42
    finally:
        sub.loop_stop()


@pytest.mark.parametrize("case", ["wrong CA", "no client certificate", "plain TCP"])
def test_tls_failures_are_errors_not_clear_text(tls_broker: tuple[int, dict[str, Path]], case: str) -> None:
    from data_writer.mqtt import MqttDataWriter, MqttWriteError

    port, files = tls_broker
    options: dict[str, Any] = {
        "wrong CA": {
            "ca_file": str(files["other-ca_pem"]),
            "cert_file": str(files["client_pem"]),
            "key_file": str(files["client_key"]),
        },
        "no client certificate": {"ca_file": str(files["ca_pem"])},
        "plain TCP": {},
    }[case]
    writer = MqttDataWriter("127.0.0.1", port, context_topic="", connect_timeout_s=3.0, **options)
    with pytest.raises(MqttWriteError) as info:
        writer.open()
    assert f"127.0.0.1:{port}" in str(info.value)
    if case == "wrong CA":
        assert isinstance(info.value.__cause__, ssl.SSLError)
