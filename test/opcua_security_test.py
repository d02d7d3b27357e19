"""OPC UA security: Basic256Sha256 Sign / SignAndEncrypt with certificates made by the test,
username/password and X.509 user authentication, and passwords kept out of logs and errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cases.opcua_cases import CertPair, make_certificate
from _util import LOG, RecordingWriter

from data_collector import (
    CollectedVariables,
    DataCollectionContext,
    DataCollector,
    Quality,
    ReaderError,
    Variable,
)
from data_reader.opcua_data_reader import OpcUaDataReader
from data_reader.opcua_simulator import OpcUaSimulator

PASSWORD = "Tr0ub4dor&3-secret"
WRONG = "hunter2-not-it"


class Setup:
    def __init__(self, sim: OpcUaSimulator, client: CertPair, user: CertPair, stranger: CertPair) -> None:
        self.sim, self.client, self.user, self.stranger = sim, client, user, stranger

    def reader(self, **kw: object) -> OpcUaDataReader:
        options: dict[str, object] = {
            "security_policy": "Basic256Sha256",
            "certificate": self.client.certificate,
            "private_key": self.client.private_key,
            "timeout_s": 3.0,
        }
        options.update(kw)
        return OpcUaDataReader(self.sim.endpoint, **options)  # type: ignore[arg-type]

    def variables(self) -> list[Variable]:
        return [
            Variable(1, self.sim.address("Static.Double"), "float", "opcua", interval_ms=100),
            Variable(2, self.sim.address("Sim.Counter"), "int", "opcua", interval_ms=100),
        ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp: Path = tmp_path_factory.mktemp("opcua-pki")
    server = make_certificate(tmp, "server", "urn:freeopcua:python:server", server=True)
    client = make_certificate(tmp, "client", "urn:data-collector:test-client")
    user = make_certificate(tmp, "user", "urn:data-collector:test-user")
    stranger = make_certificate(tmp, "stranger", "urn:data-collector:stranger")
    sim = OpcUaSimulator(
        certificate=server.certificate,
        private_key=server.private_key,
        users={"operator": PASSWORD},
        user_certificates=[user.certificate],
        allow_anonymous=False,
    )
    with sim:
        yield Setup(sim, client, user, stranger)


def _read(reader: OpcUaDataReader, variables: list[Variable]) -> CollectedVariables:
    batch = CollectedVariables.of(variables)
    reader.read(batch)
    return batch


@pytest.mark.parametrize(("security_mode", "mode"), [("SignAndEncrypt", "poll"), ("Sign", "subscribe")])
def test_certificates_and_username(setup: Setup, security_mode: str, mode: str) -> None:
    reader = setup.reader(security_mode=security_mode, mode=mode, username="operator", password=PASSWORD)
    with reader:
        assert reader.connected
        static, counter = _read(reader, setup.variables())
    assert (static.value, static.quality) == (3.25, Quality.GOOD)
    assert counter.quality is Quality.GOOD and counter.value >= 1


def test_user_certificate_authentication(setup: Setup) -> None:
    reader = setup.reader(user_certificate=setup.user.certificate, user_private_key=setup.user.private_key)
    with reader:
        static, _ = _read(reader, setup.variables())
    assert (static.value, static.quality) == (3.25, Quality.GOOD)
    stranger = setup.reader(
        user_certificate=setup.stranger.certificate, user_private_key=setup.stranger.private_key
    )
    with pytest.raises(ReaderError, match=r"BadUserAccessDenied.*user certificate 'CN=stranger'"):
        stranger.open()


def test_wrong_password_is_a_clear_error_and_never_logged(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, asyncua's request dumps included
    writers = [RecordingWriter()]
    for security in ({"security_mode": "SignAndEncrypt"}, {"security_policy": "None", "certificate": None}):
        options: dict[str, object] = {"username": "operator", "password": WRONG, **security}
        if security.get("security_policy") == "None":
            options["private_key"] = None
        reader = setup.reader(**options)
        with DataCollector(LOG, [reader], writers) as collector:
            with pytest.raises(ReaderError) as info:
                collector.start(DataCollectionContext(1, setup.variables()))
            assert collector.contexts() == {}
        message = str(info.value)
        assert "BadUserAccessDenied" in message and "user 'operator'" in message
        assert "check username and password" in message
        assert WRONG not in message and WRONG not in repr(reader)
    # the right password, with the same capture on: the value is read, still nothing leaks
    with setup.reader(username="operator", password=PASSWORD) as reader:
        assert _read(reader, setup.variables())[0].value == 3.25
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.exc_info[1] if r.exc_info else ''}" for r in caplog.records
    )
    assert "ActivateSessionRequest" in logged  # the requests were dumped at DEBUG...
    assert WRONG not in logged and PASSWORD not in logged  # ...with the credentials redacted
    assert not writers[0].rows


def test_anonymous_access_is_refused_clearly(setup: Setup) -> None:
    with pytest.raises(ReaderError, match="rejected anonymous access"):
        setup.reader().open()


def test_a_wrong_pinned_server_certificate_keeps_items_bad(setup: Setup) -> None:
    reader = setup.reader(
        server_certificate=setup.stranger.certificate, username="operator", password=PASSWORD, timeout_s=1.0
    )
    with reader:
        assert not reader.connected
        static, _ = _read(reader, setup.variables())
    assert static.quality is Quality.BAD
    assert "server_certificate" in (static.error or "")


def test_one_frozen_connection_object_serves_several_readers(setup: Setup) -> None:
    from data_reader.opcua import OpcUaConnection

    secure = OpcUaConnection(
        security_policy="Basic256Sha256",
        certificate=setup.client.certificate,
        private_key=setup.client.private_key,
        username="operator",
        password=PASSWORD,
        timeout_s=3.0,
    )
    assert secure.effective_security_mode == "SignAndEncrypt"
    assert PASSWORD not in repr(secure)
    for mode in ("poll", "subscribe"):
        reader = OpcUaDataReader(setup.sim.endpoint, mode=mode, connection=secure)
        assert reader.connection is secure
        with reader:
            assert reader.connected
            static, _counter = _read(reader, setup.variables())
        assert (static.value, static.quality) == (3.25, Quality.GOOD)
    wrong = OpcUaDataReader(setup.sim.endpoint, connection=secure.replace(password=WRONG))
    try:
        with pytest.raises(ReaderError, match="BadUserAccessDenied"):
            wrong.open()
    finally:
        wrong.close()
