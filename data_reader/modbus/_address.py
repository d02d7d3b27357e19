"""Modbus addresses: grammar, data types, byte orders, scaling and value conversions.

Grammar (case-insensitive, blanks around parts ignored)::

    <table>:<register>[.<bit>][:<type>[:<order>]][;<option>=<value>]...

- ``<table>``: ``coil`` (``co``, ``c``), ``di`` (``discrete``, ``d``), ``ir`` (``input``, ``i``),
  ``hr`` (``holding``, ``h``);
- ``<register>``: the 0-based protocol address, decimal or ``0x`` hexadecimal, 0 .. 65535;
- ``.<bit>``: bit 0 (least significant) .. 15 of an input or holding register, read as bool;
- ``<type>``: ``bool`` (coils, discrete inputs, register bits; their only type), ``int16``,
  ``uint16`` (the default for registers), ``int32``, ``uint32``, ``int64``, ``uint64``,
  ``float16``, ``float32``, ``float64``, ``string<N>`` (N registers, 2 bytes each, 1 .. 125);
- ``<order>``: where the value's big-endian bytes A B C D (E F G H) sit in the registers:
  ``ABCD`` (default, big-endian), ``DCBA`` (little-endian), ``BADC`` (bytes swapped in each
  register), ``CDAB`` (registers swapped); also spelt ``AB``/``BA`` for 16-bit values and
  ``ABCDEFGH``/``HGFEDCBA``/``BADCFEHG``/``GHEFCDAB`` for 64-bit ones. Strings accept ``ABCD``
  and ``BADC`` only;
- options: ``unit=<0..255>`` (the Modbus unit id, else the reader's), ``scale=<number>`` and
  ``offset=<number>`` (value = raw * scale + offset; integer results stay integers when both are
  written as integers), ``encoding=<codec>`` for strings (default ``utf-8``, text cut at the
  first NUL).
"""

from __future__ import annotations

import codecs
import enum
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AddressError",
    "ModbusAddress",
    "ModbusType",
    "Table",
    "compile_reader",
    "encode_value",
    "parse_address",
    "source_kind",
]

#: Largest number of registers one read request may carry (protocol limit).
MAX_READ_REGISTERS = 125
#: Largest number of bits one read request may carry (protocol limit).
MAX_READ_BITS = 2000


class AddressError(ValueError):
    """An address or a value that does not fit the address; the message says why."""


class Table(enum.Enum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete input"
    INPUT_REGISTER = "input register"
    HOLDING_REGISTER = "holding register"

    @property
    def is_bit(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def writable(self) -> bool:
        return self in (Table.COIL, Table.HOLDING_REGISTER)

    @property
    def plural(self) -> str:
        return self.value + "s"


_TABLES: dict[str, Table] = {}
for _names, _table in (
    (("coil", "coils", "co", "c"), Table.COIL),
    (("di", "discrete", "discrete_input", "discrete_inputs", "d"), Table.DISCRETE_INPUT),
    (("ir", "input", "input_register", "input_registers", "i"), Table.INPUT_REGISTER),
    (("hr", "holding", "holding_register", "holding_registers", "h"), Table.HOLDING_REGISTER),
):
    for _name in _names:
        _TABLES[_name] = _table


@dataclass(frozen=True, slots=True)
class ModbusType:
    """A data type: its name, its width in registers, its struct code and its kind of value."""

    name: str
    registers: int  # 0 for bool
    code: str  # struct format character; "" for bool and strings
    kind: str  # "bool", "int", "float" or "str"
    minimum: int = 0
    maximum: int = 0


def _int_type(name: str, registers: int, code: str, signed: bool) -> ModbusType:
    bits = 16 * registers
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return ModbusType(name, registers, code, "int", lo, hi)


BOOL = ModbusType("bool", 0, "", "bool")
_TYPES: dict[str, ModbusType] = {
    t.name: t
    for t in (
        BOOL,
        _int_type("int16", 1, "h", True),
        _int_type("uint16", 1, "H", False),
        _int_type("int32", 2, "i", True),
        _int_type("uint32", 2, "I", False),
        _int_type("int64", 4, "q", True),
        _int_type("uint64", 4, "Q", False),
        ModbusType("float16", 1, "e", "float"),
        ModbusType("float32", 2, "f", "float"),
        ModbusType("float64", 4, "d", "float"),
    )
}
_STRING = re.compile(r"(?:string|str)([0-9]{1,3})")

#: Byte orders: name -> (struct endianness, decode from the little-endian packed registers).
#: The registers are packed into bytes two ways, each register big-endian (``B``) or
#: little-endian (``L``); every order is then one struct read: ABCD = ">" on B, DCBA = "<" on B,
#: BADC = ">" on L, CDAB = "<" on L (and the same for 16- and 64-bit values).
ORDERS: dict[str, tuple[str, bool]] = {
    "ABCD": (">", False),
    "DCBA": ("<", False),
    "BADC": (">", True),
    "CDAB": ("<", True),
}
_ORDER_ALIASES = {
    "AB": "ABCD",
    "BA": "BADC",
    "ABCDEFGH": "ABCD",
    "HGFEDCBA": "DCBA",
    "BADCFEHG": "BADC",
    "GHEFCDAB": "CDAB",
}
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_INT_LITERAL = re.compile(r"[+-]?[0-9]+")
_OPTIONS = ("unit", "scale", "offset", "encoding")

SYNTAX = (
    "<table>:<register>[.<bit>][:<type>[:<order>]][;unit=N][;scale=X][;offset=Y], e.g. 'hr:100:float32:CDAB'"
)


@dataclass(frozen=True, slots=True)
class ModbusAddress:
    """A parsed address (see the module docstring for the grammar)."""

    text: str
    table: Table
    address: int
    bit: int | None
    type: ModbusType
    order: str
    unit: int | None
    scale: int | float | None
    offset: int | float | None
    encoding: str

    @property
    def width(self) -> int:
        """How many registers (register tables) or bits (bit tables) the value spans."""
        if self.table.is_bit or self.bit is not None:
            return 1
        return self.type.registers

    @property
    def end(self) -> int:
        """One past the last register or bit."""
        return self.address + self.width

    def describe(self) -> str:
        where = f"{self.table.value} {self.address}" + (f" bit {self.bit}" if self.bit is not None else "")
        unit = f" of unit {self.unit}" if self.unit is not None else ""
        return f"{self.type.name} at {where}{unit}"


def _number(text: str, what: str, lo: int, hi: int) -> int:
    if not _NUMBER.fullmatch(text):
        raise AddressError(f"{what} {text!r} is not a number (decimal or 0x hexadecimal)")
    value = int(text, 16) if text[:2] in ("0x", "0X") else int(text)
    if not lo <= value <= hi:
        raise AddressError(f"{what} {value} is out of range {lo}..{hi}")
    return value


def _real(text: str, what: str) -> int | float:
    if _INT_LITERAL.fullmatch(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise AddressError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise AddressError(f"{what} {text!r} is not a finite number")
    return value


def parse_address(text: str) -> ModbusAddress:
    """Parse ``text`` (see the module docstring); raise :class:`AddressError` saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise AddressError(f"address must be a non-empty str, got {text!r}")
    main, *option_parts = text.split(";")
    options: dict[str, str] = {}
    for part in option_parts:
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key or not value:
            raise AddressError(f"option {part.strip()!r} is not <name>=<value>")
        if key not in _OPTIONS:
            raise AddressError(f"unknown option {key!r}; known: {', '.join(_OPTIONS)}")
        if key in options:
            raise AddressError(f"option {key!r} given twice")
        options[key] = value
    parts = [p.strip() for p in main.split(":")]
    if not 2 <= len(parts) <= 4:
        raise AddressError(f"expected {SYNTAX}")
    table = _TABLES.get(parts[0].lower())
    if table is None:
        raise AddressError(f"unknown table {parts[0]!r}; use coil, di, ir or hr")
    register_text, dot, bit_text = parts[1].partition(".")
    address = _number(register_text.strip(), "register address", 0, 0xFFFF)
    bit: int | None = None
    if dot:
        if table.is_bit:
            raise AddressError(f"a bit number ('.{bit_text}') applies to registers, not to {table.plural}")
        bit = _number(bit_text.strip(), "bit", 0, 15)
    type_name = (
        parts[2].lower() if len(parts) > 2 else ("bool" if table.is_bit or bit is not None else "uint16")
    )
    mtype = _TYPES.get(type_name)
    if mtype is None:
        match = _STRING.fullmatch(type_name)
        if match is None:
            known = ", ".join([*_TYPES, "string<N>"])
            raise AddressError(f"unknown type {parts[2]!r}; known: {known}")
        count = int(match.group(1))
        if not 1 <= count <= MAX_READ_REGISTERS:
            raise AddressError(f"string length {count} registers is out of range 1..{MAX_READ_REGISTERS}")
        mtype = ModbusType(f"string{count}", count, "", "str")
    if table.is_bit or bit is not None:
        if mtype is not BOOL:
            what = f"bit {bit} of a register" if bit is not None else f"a {table.value}"
            raise AddressError(f"{what} is read as bool, not {mtype.name}")
    elif mtype is BOOL:
        raise AddressError(
            f"a {table.value} holds a 16-bit word: give its bit as '{address}.<bit>' to read a bool"
        )
    order = "ABCD"
    if len(parts) > 3:
        if mtype is BOOL:
            raise AddressError("a byte order does not apply to bool values")
        wanted = parts[3].upper()
        order = _ORDER_ALIASES.get(wanted, wanted)
        if order not in ORDERS:
            raise AddressError(f"unknown byte order {parts[3]!r}; use ABCD, DCBA, BADC or CDAB")
        if mtype.kind == "str" and order not in ("ABCD", "BADC"):
            raise AddressError(f"strings take byte order ABCD or BADC, not {parts[3]!r}")
    end = address + (1 if mtype is BOOL else mtype.registers)
    if end - 1 > 0xFFFF:
        raise AddressError(f"{mtype.name} at {address} runs past the last register 65535")
    unit = _number(options["unit"], "unit", 0, 255) if "unit" in options else None
    scale = _real(options["scale"], "scale") if "scale" in options else None
    offset = _real(options["offset"], "offset") if "offset" in options else None
    if (scale is not None or offset is not None) and mtype.kind not in ("int", "float"):
        raise AddressError(f"scale and offset apply to numbers, not to {mtype.name}")
    if scale == 0:
        raise AddressError("scale must not be 0")
    encoding = "utf-8"
    if "encoding" in options:
        if mtype.kind != "str":
            raise AddressError(f"encoding applies to strings, not to {mtype.name}")
        try:
            encoding = codecs.lookup(options["encoding"]).name
        except LookupError:
            raise AddressError(f"unknown encoding {options['encoding']!r}") from None
    return ModbusAddress(text, table, address, bit, mtype, order, unit, scale, offset, encoding)


def source_kind(addr: ModbusAddress) -> str:
    """The kind of the engineering value: "bool", "int", "float" or "str" (after scale/offset)."""
    kind = addr.type.kind
    if kind == "int" and (isinstance(addr.scale, float) or isinstance(addr.offset, float)):
        return "float"
    return kind


#: (source kind, value_type) -> conversion (None: the value is already of the right type).
_CONVERSIONS: dict[tuple[str, str], Callable[[Any], Any] | None] = {
    ("bool", "bool"): None,
    ("bool", "int"): int,
    ("bool", "float"): float,
    ("bool", "str"): str,
    ("int", "int"): None,
    ("int", "float"): float,
    ("int", "bool"): bool,
    ("int", "str"): str,
    ("float", "float"): None,
    ("float", "str"): str,
    ("str", "str"): None,
    ("str", "bytes"): None,
}


def _string_decoder(encoding: str) -> Callable[[bytes], str]:
    def decode(raw: bytes) -> str:
        return raw.split(b"\0", 1)[0].decode(encoding, "replace")

    return decode


def compile_reader(addr: ModbusAddress, value_type: str) -> Callable[[Any], Any] | None:
    """The function turning the decoded raw value into the variable's value (None: identity).

    Raises :class:`AddressError` when the value cannot become ``value_type``.
    """
    kind = source_kind(addr)
    key = (kind, value_type)
    if key not in _CONVERSIONS:
        hint = ""
        if kind == "float" and value_type in ("int", "bool"):
            hint = " (use value_type 'float', or integer scale/offset on an integer type)"
        raise AddressError(
            f"a {addr.type.name} value ({kind}) cannot be converted to value_type {value_type!r}{hint}"
        )
    convert = _CONVERSIONS[key]
    steps: list[Callable[[Any], Any]] = []
    if kind == "str" and value_type == "str":
        steps.append(_string_decoder(addr.encoding))
    scale, offset = addr.scale, addr.offset
    if scale is not None or offset is not None:
        s = 1 if scale is None else scale
        o = 0 if offset is None else offset
        inverse = 1 / s
        if isinstance(s, float) and abs(inverse - round(inverse)) < 1e-9:
            # scale 0.1, 0.01, ...: dividing by 10, 100, ... rounds correctly (-47 * 0.01 would not)
            divisor = round(inverse)
            steps.append(lambda v: v / divisor + o)
        else:
            steps.append(lambda v: v * s + o)
    if convert is not None:
        steps.append(convert)
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps
        return lambda v: second(first(v))

    def chain(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chain


def _pack_registers(data: bytes, little: bool) -> list[int]:
    count = len(data) // 2
    return list(struct.unpack(f"{'<' if little else '>'}{count}H", data))


def encode_value(addr: ModbusAddress, value: Any) -> bool | list[int]:
    """Encode the engineering ``value`` for writing at ``addr``: a bool (coil, register bit) or registers.

    Inverse of reading: offset and scale are undone, integers rounded to the nearest integer and
    checked against the type's range. Raises :class:`AddressError` for a value that does not fit.
    """
    mtype = addr.type
    if mtype is BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise AddressError(f"{addr.describe()} takes a bool (or 0/1), not {value!r}")
    endian, little = ORDERS[addr.order]
    if mtype.kind == "str":
        if isinstance(value, str):
            data = value.encode(addr.encoding)
        elif isinstance(value, bytes | bytearray):
            data = bytes(value)
        else:
            raise AddressError(f"{addr.describe()} takes a str, not {value!r}")
        size = 2 * mtype.registers
        if len(data) > size:
            raise AddressError(
                f"{value!r} is {len(data)} bytes, more than the {size} bytes of {addr.describe()}"
            )
        return _pack_registers(data.ljust(size, b"\0"), little)
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
        raise AddressError(f"{addr.describe()} takes a finite number, not {value!r}")
    raw: int | float = value
    if addr.offset is not None:
        raw = raw - addr.offset
    if addr.scale is not None:
        raw = raw / addr.scale
    if mtype.kind == "int":
        rounded = round(raw)
        if not mtype.minimum <= rounded <= mtype.maximum:
            raise AddressError(
                f"{value!r} is raw {raw!r}, out of the range {mtype.minimum}..{mtype.maximum} "
                f"of {addr.describe()}"
            )
        raw = rounded
    try:
        data = struct.pack(endian + mtype.code, raw)
    except (struct.error, OverflowError) as exc:
        raise AddressError(f"{value!r} does not fit {addr.describe()}: {exc}") from None
    return _pack_registers(data, little)
