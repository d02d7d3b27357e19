"""OPC UA reader without a server: address parsing, value conversion, status mapping, options."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes  # asyncua.ua re-exports it implicitly

from data_collector import ConfigurationError, Quality, Variable
from data_reader._opcua._address import UnknownNamespaceError, parse_address
from data_reader._opcua._convert import convert, quality_of, status_name, to_variant
from data_reader.opcua_data_reader import OpcUaDataReader

NAMESPACES = ["http://opcfoundation.org/UA/", "urn:server", "urn:plant", "urn:a;b"]
EP = "opc.tcp://127.0.0.1:4840/"


@pytest.mark.parametrize(
    ("text", "namespace", "identifier"),
    [
        ("i=2258", 0, 2258),
        ("ns=2;i=1001", 2, 1001),
        ("ns=2;s=Boiler.Temp", 2, "Boiler.Temp"),
        ("ns=2;s=A;B=C", 2, "A;B=C"),  # a string identifier takes the rest, ';' and '=' included
        ("ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a", 3, uuid.UUID("09087e75-8e5e-499b-954f-f2a9603db28a")),
        ("ns=2;b=" + base64.b64encode(b"\x01\x02opaque").decode(), 2, b"\x01\x02opaque"),
        ("nsu=urn:plant;s=Boiler.Temp", 2, "Boiler.Temp"),
        ("nsu=urn:a%3Bb;i=7", 3, 7),
        ("nsu=http://opcfoundation.org/UA/;i=2258", 0, 2258),
    ],
)
def test_addresses_parse_and_resolve(text: str, namespace: int, identifier: object) -> None:
    nodeid = parse_address(text).resolve(NAMESPACES)
    assert nodeid.NamespaceIndex == namespace
    assert nodeid.Identifier == identifier


def test_namespace_uri_follows_the_server_array() -> None:
    address = parse_address("nsu=urn:plant;s=X")
    assert address.resolve(NAMESPACES).NamespaceIndex == 2
    assert address.resolve([*NAMESPACES[:2], "urn:other", "urn:plant"]).NamespaceIndex == 3
    with pytest.raises(UnknownNamespaceError, match="urn:plant"):
        address.resolve(NAMESPACES[:2])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("Boiler.Temp", "key=value"),
        ("ns=2", "no identifier"),
        ("ns=2;", "no identifier"),
        ("ns=x;i=1", "ns must be"),
        ("ns=70000;i=1", "ns must be"),
        ("ns=2;i=abc", "numeric identifier"),
        ("ns=2;i=-1", "numeric identifier"),
        ("ns=2;i=4294967296", "numeric identifier"),
        ("ns=2;g=not-a-guid", "GUID"),
        ("ns=2;b=@@@", "base64"),
        ("ns=2;s=", "empty string identifier"),
        ("ns=2;q=5", "unknown part"),
        ("ns=1;nsu=urn:x;i=1", "namespace given twice"),
        ("nsu=;i=1", "empty namespace URI"),
    ],
)
def test_bad_addresses_name_the_address(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        parse_address(text)
    assert repr(text) in str(info.value)


def test_validate_variable_rejects_bad_nodeids_and_types() -> None:
    reader = OpcUaDataReader(EP)
    reader.validate_variable(Variable(1, "ns=2;s=Ok", "float", "opcua"))
    reader.validate_variable(Variable(2, "ns=2;s=Raw", "bytes", "opcua"))
    with pytest.raises(ConfigurationError, match=r"variable 3: invalid OPC UA NodeId 'ns=2;i=x'"):
        reader.validate_variable(Variable(3, "ns=2;i=x", "float", "opcua"))
    with pytest.raises(ConfigurationError, match="value_type 'complex'"):
        reader.validate_variable(Variable(4, "ns=2;s=Ok", "complex", "opcua"))
    assert "bytes" in OpcUaDataReader.value_types


def test_status_codes_map_to_quality_with_their_names() -> None:
    assert quality_of(StatusCodes.Good) is Quality.GOOD
    assert quality_of(StatusCodes.GoodClamped) is Quality.GOOD
    assert quality_of(StatusCodes.UncertainLastUsableValue) is Quality.UNCERTAIN
    assert quality_of(StatusCodes.BadNodeIdUnknown) is Quality.BAD
    assert quality_of(0xC0000000) is Quality.BAD  # reserved severity: treated as bad
    assert status_name(StatusCodes.BadNodeIdUnknown) == "BadNodeIdUnknown"
    # info bits (here: overflow) do not hide the name
    assert status_name(StatusCodes.UncertainLastUsableValue | 0x480) == "UncertainLastUsableValue"


@pytest.mark.parametrize(
    ("value", "value_type", "expected"),
    [
        (2.5, "float", 2.5),
        (7, "float", 7.0),
        (True, "float", 1.0),
        (7, "int", 7),
        (7.0, "int", 7),
        (False, "int", 0),
        (True, "bool", True),
        (0, "bool", False),
        (2.0, "bool", True),
        ("x", "str", "x"),
        (ua.LocalizedText("Boiler"), "str", "Boiler"),
        (12, "str", "12"),
        (b"\x00\xff", "bytes", b"\x00\xff"),
        ("é", "bytes", "é".encode()),
    ],
)
def test_values_convert_to_the_value_type(value: object, value_type: str, expected: object) -> None:
    result = convert(value, value_type)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "value_type", "why"),
    [
        (2.5, "int", "not an integer"),
        ("abc", "float", "cannot convert str"),
        (b"\x01", "int", "cannot convert bytes"),
        ([[1.0, 2.0]], "float", "multi-dimensional"),  # a 1-D list is an array (array_values_test)
        ([1.0, "x"], "float", "array element 1: cannot convert str"),
        ([1, 2], "bytes", "cannot convert list"),
        (None, "float", "null value"),
        (float("nan"), "int", "not an integer"),
    ],
)
def test_values_that_do_not_fit_are_refused(value: object, value_type: str, why: str) -> None:
    with pytest.raises((TypeError, ValueError), match=why):
        convert(value, value_type)


def test_writes_take_the_node_data_type() -> None:
    assert to_variant(3, ua.VariantType.Double) == ua.Variant(3.0, ua.VariantType.Double)
    assert to_variant(5.0, ua.VariantType.Int16) == ua.Variant(5, ua.VariantType.Int16)
    assert to_variant(True, ua.VariantType.Boolean) == ua.Variant(True, ua.VariantType.Boolean)
    with pytest.raises(ValueError, match="out of range for UInt16"):
        to_variant(70000, ua.VariantType.UInt16)
    with pytest.raises(ValueError, match="does not fit a Int32 node"):
        to_variant("12", ua.VariantType.Int32)
    with pytest.raises(ValueError, match="does not fit a Boolean node"):
        to_variant(2, ua.VariantType.Boolean)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"mode": "push"}, "mode must be"),
        ({"timeout_s": 0}, "timeout_s must be"),
        ({"timeout_s": float("nan")}, "timeout_s must be"),
        ({"security_policy": "Basic128Rsa15"}, "security_policy must be one of"),
        ({"security_policy": "Basic256Sha256"}, "needs the certificate and private_key"),
        ({"security_mode": "Sign"}, "does not go with"),
        ({"password": "pw"}, "without a username"),
        ({"certificate": b"x", "private_key": b"y"}, "only used with a security_policy"),
        ({"user_certificate": "/nonexistent"}, "go together"),
        ({"reconnect_min_delay_s": 5, "reconnect_max_delay_s": 1}, "below"),
        ({"default_interval_ms": 0}, "default_interval_ms"),
        ({"item_retry_max_s": 0}, "item_retry_max_s must be a finite number > 0, got 0"),
        ({"item_retry_max_s": float("inf")}, "item_retry_max_s must be"),
    ],
)
def test_bad_options_raise_configuration_errors(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        OpcUaDataReader(EP, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [("http://127.0.0.1:4840", "opc.tcp://"), ("opc.tcp://127.0.0.1", "no port"), ("", "non-empty")],
)
def test_bad_endpoints_raise(endpoint: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        OpcUaDataReader(endpoint)


def test_credentials_in_the_url_are_taken_out_of_it() -> None:
    reader = OpcUaDataReader("opc.tcp://operator:s3cr%40t@127.0.0.1:4840/path")
    assert reader.endpoint == "opc.tcp://127.0.0.1:4840/path"
    assert "s3cr" not in repr(reader)
    assert "s3cr" not in repr(reader._options)


def test_missing_or_broken_certificate_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="cannot read certificate"):
        OpcUaDataReader(
            EP, security_policy="Basic256Sha256", certificate=tmp_path / "none.pem", private_key=broken
        )
    with pytest.raises(ConfigurationError, match="is not a PEM or DER certificate"):
        OpcUaDataReader(EP, security_policy="Basic256Sha256", certificate=broken, private_key=broken)


def test_read_before_open_marks_items_bad() -> None:
    from data_collector import CollectedVariables

    reader = OpcUaDataReader(EP)
    batch = CollectedVariables.of([Variable(1, "ns=2;s=X", "float", "opcua")])
    reader.read(batch)
    assert batch[0].quality is Quality.BAD
    assert batch[0].error == "reader is not open"
