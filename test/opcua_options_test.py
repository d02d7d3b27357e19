"""The OPC UA reader's connection and security options as one frozen object (OpcUaConnection).

Keyword arguments remain accepted and build the same object; the object is checked when created
(naming the bad option); giving it and one of its options as a keyword as well is refused. The
secured session using such an object is in opcua_security_test.py.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from data_collector import ConfigurationError
from data_reader.opcua import OpcUaConnection, OpcUaDataReader

EP = "opc.tcp://127.0.0.1:4840/"


def test_the_object_is_frozen_and_its_defaults_are_the_readers() -> None:
    connection = OpcUaConnection()
    with pytest.raises(dataclasses.FrozenInstanceError):
        connection.timeout_s = 1.0  # type: ignore[misc]
    reader_params = inspect.signature(OpcUaDataReader).parameters
    names = OpcUaConnection.option_names()
    assert len(names) == 18
    for name in names:  # every option is also a keyword of the reader, with the same default
        field = next(f for f in dataclasses.fields(OpcUaConnection) if f.name == name)
        assert reader_params[name].default == field.default, name
    assert reader_params["connection"].default is None


def test_keywords_and_the_object_give_the_same_session_options() -> None:
    by_keywords = OpcUaDataReader(EP, timeout_s=2.0, username="op", password="pw", keepalive_s=0.5)
    shared = OpcUaConnection(timeout_s=2.0, username="op", password="pw", keepalive_s=0.5)
    by_object = OpcUaDataReader(EP, connection=shared)
    assert by_object._options == by_keywords._options
    assert by_object.connection is shared and by_keywords.connection == shared
    assert by_object.timeout_s == 2.0 and by_object.first_value_wait_s == 2.0


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"timeout_s": 0}, "OpcUaConnection: timeout_s must be a finite number > 0, got 0"),
        ({"security_policy": "Basic128Rsa15"}, "OpcUaConnection: security_policy must be one of"),
        ({"security_mode": "Sign"}, "OpcUaConnection: security_policy 'None' does not go with"),
        ({"password": "pw"}, "OpcUaConnection: a password was given without a username"),
        ({"reconnect_min_delay_s": 5, "reconnect_max_delay_s": 1}, "is below"),
    ],
)
def test_the_object_checks_its_options_when_created(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        OpcUaConnection(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=why.replace("OpcUaConnection", "OpcUaDataReader")):
        OpcUaDataReader(EP, **kwargs)  # type: ignore[arg-type]


def test_a_missing_certificate_fails_when_the_object_is_created(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="OpcUaConnection: cannot read certificate"):
        OpcUaConnection(security_policy="Basic256Sha256", certificate=tmp_path / "no.pem", private_key=b"x")


def test_the_object_and_its_keywords_together_are_refused() -> None:
    shared = OpcUaConnection(timeout_s=2.0)
    with pytest.raises(ConfigurationError, match=r"not both \(also given as keywords: timeout_s, username\)"):
        OpcUaDataReader(EP, connection=shared, timeout_s=3.0, username="op")
    with pytest.raises(ConfigurationError, match="connection must be an OpcUaConnection, got dict"):
        OpcUaDataReader(EP, connection={"timeout_s": 2.0})  # type: ignore[arg-type]
    assert (
        OpcUaDataReader(EP, connection=shared, mode="subscribe").mode == "subscribe"
    )  # not a connection option


def test_user_info_in_the_url_completes_the_object() -> None:
    shared = OpcUaConnection(timeout_s=2.0)
    reader = OpcUaDataReader("opc.tcp://operator:s3cr%40t@127.0.0.1:4840/", connection=shared)
    assert reader.endpoint == "opc.tcp://127.0.0.1:4840/"
    assert (reader.connection.username, reader.connection.password) == ("operator", "s3cr@t")
    assert shared.username is None  # the shared object is not changed
    assert "s3cr" not in repr(reader) + repr(reader.connection) + repr(reader._options)
    named = OpcUaConnection(username="other", password="pw")
    assert OpcUaDataReader("opc.tcp://operator:x@127.0.0.1:4840/", connection=named).connection is named


def test_replace_checks_like_a_new_object() -> None:
    with pytest.raises(ConfigurationError, match="timeout_s must be"):
        OpcUaConnection().replace(timeout_s=-1)
    assert OpcUaConnection().replace(timeout_s=1.5).timeout_s == 1.5
