"""Modbus address grammar, conversions and codecs (pure: no server)."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_collector import CollectedVariables, ConfigurationError, Variable
from data_reader._modbus._address import (
    AddressError,
    Table,
    compile_reader,
    encode_value,
    parse_address,
)
from data_reader._modbus._plan import Entry, plan_requests
from data_reader.modbus_data_reader import ModbusDataReader

# Where the value's big-endian bytes A B C D (E F G H) sit on the wire (register 0 high byte first).
WIRE = {
    2: {"ABCD": "AB", "DCBA": "BA", "BADC": "BA", "CDAB": "AB"},
    4: {"ABCD": "ABCD", "DCBA": "DCBA", "BADC": "BADC", "CDAB": "CDAB"},
    8: {"ABCD": "ABCDEFGH", "DCBA": "HGFEDCBA", "BADC": "BADCFEHG", "CDAB": "GHEFCDAB"},
}
CODES = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float16": "e",
    "float32": "f",
    "float64": "d",
}


def wire_registers(type_name: str, value: int | float, order: str) -> list[int]:
    """Registers of ``value`` in ``order``, from the byte-letter patterns (independent of the reader)."""
    big = struct.pack(">" + CODES[type_name], value)
    wire = bytes(big[ord(letter) - ord("A")] for letter in WIRE[len(big)][order])
    return [wire[i] << 8 | wire[i + 1] for i in range(0, len(wire), 2)]


def decode(address: str, value_type: str, registers: list[int]) -> object:
    """Decode ``registers`` (starting at the address's register) through the reader's plan and decoders."""
    addr = parse_address(address)
    request = plan_requests(
        1, addr.table, [Entry(0, addr, compile_reader(addr, value_type))], limit=125, max_gap=0
    )[0]
    batch = CollectedVariables.of([Variable(1, address, value_type, "modbus")])

    class Response:
        pass

    response = Response()
    if addr.table.is_bit:
        response.bits = [bool(r) for r in registers]  # type: ignore[attr-defined]
    else:
        response.registers = registers  # type: ignore[attr-defined]
    ModbusDataReader._decode(request, response, batch)  # type: ignore[arg-type]
    return batch[0].value


def test_literal_byte_orders_pin_the_semantics() -> None:
    # 0x11223344 as documented by Telegraf's byte_order: ABCD big-endian, DCBA little-endian,
    # BADC bytes swapped in each register, CDAB registers swapped.
    assert encode_value(parse_address("hr:0:uint32:ABCD"), 0x11223344) == [0x1122, 0x3344]
    assert encode_value(parse_address("hr:0:uint32:DCBA"), 0x11223344) == [0x4433, 0x2211]
    assert encode_value(parse_address("hr:0:uint32:BADC"), 0x11223344) == [0x2211, 0x4433]
    assert encode_value(parse_address("hr:0:uint32:CDAB"), 0x11223344) == [0x3344, 0x1122]
    assert encode_value(parse_address("hr:0:uint64:GHEFCDAB"), 0x1122334455667788) == [
        0x7788,
        0x5566,
        0x3344,
        0x1122,
    ]
    assert encode_value(parse_address("hr:0:uint16:BA"), 0x1122) == [0x2211]
    assert decode("hr:0:uint32:CDAB", "int", [0x3344, 0x1122]) == 0x11223344
    assert decode("hr:0:uint64:BADC", "int", [0x2211, 0x4433, 0x6655, 0x8877]) == 0x1122334455667788
    assert decode("hr:0:float32", "float", [0x4049, 0x0FDB]) == pytest.approx(math.pi, rel=1e-7)


VALUES = {
    "int16": -12345,
    "uint16": 0xA1B2,
    "int32": -0x12345678,
    "uint32": 0xA1B2C3D4,
    "int64": -0x1122334455667788,
    "uint64": 0xF1E2D3C4B5A69788,
    "float16": -2.5,
    "float32": -1234.5625,
    "float64": -1.2345678901234567e-89,
}


@pytest.mark.parametrize("order", ["ABCD", "DCBA", "BADC", "CDAB"])
@pytest.mark.parametrize("type_name", list(VALUES))
def test_every_type_and_order_decodes_and_encodes(type_name: str, order: str) -> None:
    value = VALUES[type_name]
    regs = wire_registers(type_name, value, order)
    address = f"hr:7:{type_name}:{order}"
    value_type = "float" if type_name.startswith("float") else "int"
    assert decode(address, value_type, regs) == value
    assert encode_value(parse_address(address), value) == regs


@settings(max_examples=200, deadline=None)
@given(
    type_name=st.sampled_from(["int16", "uint16", "int32", "uint32", "int64", "uint64"]),
    order=st.sampled_from(["ABCD", "DCBA", "BADC", "CDAB"]),
    data=st.data(),
)
def test_integer_round_trip_property(type_name: str, order: str, data: st.DataObject) -> None:
    addr = parse_address(f"hr:0:{type_name}:{order}")
    value = data.draw(st.integers(min_value=addr.type.minimum, max_value=addr.type.maximum))
    regs = encode_value(addr, value)
    assert regs == wire_registers(type_name, value, order)
    assert decode(addr.text, "int", regs) == value


@settings(max_examples=200, deadline=None)
@given(
    order=st.sampled_from(["ABCD", "DCBA", "BADC", "CDAB"]),
    value=st.floats(allow_nan=False, allow_infinity=False),
)
def test_float64_round_trip_property(order: str, value: float) -> None:
    regs = encode_value(parse_address(f"hr:0:float64:{order}"), value)
    assert regs == wire_registers("float64", value, order)
    assert decode(f"hr:0:float64:{order}", "float", regs) == value


def test_strings_bits_scale_and_offset() -> None:
    text = [0x6461, 0x7461, 0x2D63, 0x0000, 0x4142]  # "data-c", NUL, then garbage after the NUL
    assert decode("hr:0:string5", "str", text) == "data-c"
    assert decode("hr:0:string5", "bytes", text) == b"data-c\0\0AB"
    swapped = [0x6164, 0x6174, 0x632D, 0x0000, 0x0000]
    assert decode("hr:0:string5:BADC", "str", swapped) == "data-c"
    assert encode_value(parse_address("hr:0:string3:BADC"), "data") == [0x6164, 0x6174, 0]
    assert decode("hr:0.15", "bool", [0x8000]) is True
    assert decode("hr:0.14", "bool", [0x8000]) is False
    assert decode("hr:0.0", "int", [0x0001]) == 1
    assert decode("coil:0", "bool", [1]) is True
    assert decode("di:0", "float", [0]) == 0.0
    assert decode("ir:0:int16;scale=0.1;offset=-40", "float", [0xFFF6]) == pytest.approx(-41.0)
    assert decode("ir:0:int16;scale=0.01", "float", [(-47) & 0xFFFF]) == -0.47  # not -0.47000000000000003
    assert decode("ir:0:int16;scale=10", "int", [0xFFF6]) == -100
    assert decode("ir:0:uint16;offset=5", "int", [7]) == 12
    assert decode("ir:0:uint16", "bool", [7]) is True
    assert decode("ir:0:uint16", "str", [7]) == "7"
    assert decode("ir:0:float32", "str", [0x3FC0, 0]) == "1.5"
    # writes undo offset and scale, rounding integers
    assert encode_value(parse_address("hr:0:int16;scale=0.1;offset=-40"), -41.0) == [0xFFF6]
    assert encode_value(parse_address("hr:0:uint16;scale=0.5"), 10.2) == [20]
    assert encode_value(parse_address("hr:0.3"), 1) is True
    assert encode_value(parse_address("coil:0"), False) is False


def test_parse_accepts_the_documented_forms() -> None:
    a = parse_address(" HR : 0x10 : Float32 : cdab ; unit=3 ; scale=2 ; offset=-1.5 ")
    assert (a.table, a.address, a.type.name, a.order, a.unit, a.scale, a.offset) == (
        Table.HOLDING_REGISTER,
        16,
        "float32",
        "CDAB",
        3,
        2,
        -1.5,
    )
    assert parse_address("hr:5").type.name == "uint16"
    assert parse_address("holding:5").table is Table.HOLDING_REGISTER
    assert parse_address("input:5").table is Table.INPUT_REGISTER
    assert parse_address("c:5").table is Table.COIL
    assert parse_address("discrete:5").table is Table.DISCRETE_INPUT
    assert parse_address("coil:65535").end == 65536
    assert parse_address("ir:3.7").bit == 7
    assert parse_address("hr:0:string125").width == 125
    assert parse_address("hr:0:int64:HGFEDCBA").order == "DCBA"
    assert parse_address("hr:0:string2;encoding=latin-1").encoding == "iso8859-1"


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("hr", "expected"),
        ("xx:1", "unknown table 'xx'"),
        ("hr:-1", "not a number"),
        ("hr:65536", "out of range 0..65535"),
        ("hr:1:int33", "unknown type 'int33'"),
        ("hr:1:float32:ABDC", "unknown byte order 'ABDC'"),
        ("hr:65535:float32", "runs past the last register"),
        ("hr:1.16", "bit 16 is out of range 0..15"),
        ("coil:1.2", "applies to registers"),
        ("coil:1:int16", "is read as bool"),
        ("hr:1.2:int16", "is read as bool"),
        ("hr:1:bool", "give its bit"),
        ("hr:1:string0", "out of range 1..125"),
        ("hr:1:string126", "out of range 1..125"),
        ("hr:1:string4:CDAB", "strings take byte order ABCD or BADC"),
        ("hr:1;unit=256", "unit 256 is out of range 0..255"),
        ("hr:1;scale=0", "scale must not be 0"),
        ("hr:1;scale=abc", "scale 'abc' is not a number"),
        ("hr:1;scale=nan", "not a finite number"),
        ("hr:1;foo=1", "unknown option 'foo'"),
        ("hr:1;unit=1;unit=2", "given twice"),
        ("hr:1;unit", "is not <name>=<value>"),
        ("coil:1;scale=2", "scale and offset apply to numbers"),
        ("hr:1:string2;encoding=klingon", "unknown encoding"),
        ("hr:1;encoding=utf-8", "encoding applies to strings"),
        ("hr:1:1:2:3", "expected"),
    ],
)
def test_parse_rejects_with_the_reason(address: str, message: str) -> None:
    with pytest.raises(AddressError, match=None) as info:
        parse_address(address)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("address", "value_type"),
    [
        ("hr:0:float32", "int"),
        ("hr:0:float32", "bool"),
        ("hr:0:int16;scale=0.1", "int"),
        ("hr:0:string2", "int"),
        ("hr:0:string2", "float"),
        ("hr:0:uint16", "bytes"),
        ("coil:0", "bytes"),
    ],
)
def test_impossible_conversions_are_configuration_errors(address: str, value_type: str) -> None:
    reader = ModbusDataReader("127.0.0.1", 1502)
    with pytest.raises(ConfigurationError) as info:
        reader.validate_variable(Variable(42, address, value_type, "modbus"))
    text = str(info.value)
    assert "variable 42" in text and repr(address) in text and "cannot be converted" in text


def test_validate_names_variable_and_address() -> None:
    reader = ModbusDataReader("127.0.0.1", 1502)
    with pytest.raises(ConfigurationError) as info:
        reader.validate_variable(Variable(7, "hr:70000", "int", "modbus"))
    assert "variable 7 address 'hr:70000'" in str(info.value) and "65535" in str(info.value)
    with pytest.raises(ConfigurationError, match="unknown value_type 'complex'"):
        reader.validate_variable(Variable(8, "hr:1", "complex", "modbus"))
    small = ModbusDataReader("127.0.0.1", 1502, max_registers=10)
    with pytest.raises(ConfigurationError, match="more than max_registers=10"):
        small.validate_variable(Variable(9, "hr:0:string20", "str", "modbus"))


@pytest.mark.parametrize(
    ("address", "value", "message"),
    [
        ("hr:0:int16", 40000, "out of the range -32768..32767"),
        ("hr:0:uint16", -1, "out of the range 0..65535"),
        ("hr:0:uint16;scale=0.1", 6553.6, "out of the range 0..65535"),
        ("hr:0:float32", "x", "takes a finite number"),
        ("hr:0:float32", math.inf, "takes a finite number"),
        ("hr:0:float32", 1e40, "does not fit"),
        ("hr:0:string2", "hello", "more than the 4 bytes"),
        ("hr:0:string2", 5, "takes a str"),
        ("coil:0", 2, "takes a bool"),
    ],
)
def test_encode_rejects_values_that_do_not_fit(address: str, value: object, message: str) -> None:
    with pytest.raises(AddressError) as info:
        encode_value(parse_address(address), value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": ""}, "host"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"unit_id": 256}, "unit_id"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": math.nan}, "timeout_s"),
        ({"max_gap": -1}, "max_gap"),
        ({"max_registers": 126}, "max_registers"),
        ({"max_bits": 2001}, "max_bits"),
        ({"reconnect_delay_s": 2.0, "reconnect_delay_max_s": 1.0}, "reconnect_delay_max_s"),
        ({"port": 99999}, r"port must be an int 1\.\.65535, got 99999"),
        ({"port": True}, "port"),
        ({"timeout_s": 1e300}, r"timeout_s must be a number 0\.001\.\.86400, got 1e\+300"),
        ({"unit_retry_s": 0}, "unit_retry_s"),
        ({"unit_retry_s": math.inf}, "unit_retry_s"),
        (
            {"unit_retry_s": 5.0, "unit_retry_max_s": 2.0},
            r"unit_retry_max_s must be a number 5\.\.86400, got 2\.0",
        ),
        ({"unit_retry_max_s": 1e9}, "unit_retry_max_s"),
        ({"reconnect_delay_max_s": 1e9}, "reconnect_delay_max_s"),
        ({"reader_type": " "}, "reader_type"),
        ({"min_interval_ms": 0}, "min_interval_ms"),
    ],
)
def test_constructor_rejects_bad_options(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"host": "127.0.0.1", **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        ModbusDataReader(**args)  # type: ignore[arg-type]


def test_reader_type_and_min_interval_per_instance() -> None:
    reader = ModbusDataReader("127.0.0.1", reader_type="plc7", min_interval_ms=50)
    assert reader.reader_type == "plc7" and reader.min_interval_ms == 50
    assert ModbusDataReader.reader_type == "modbus"
    assert ModbusDataReader("127.0.0.1").reader_type == "modbus"
    assert reader.supports_write
    assert "bytes" in reader.value_types
