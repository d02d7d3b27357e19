"""OPC UA values and status codes to the collector's values and qualities, and back for writes."""

from __future__ import annotations

import importlib
import math
from datetime import datetime
from typing import Any

from asyncua.ua import status_codes

from data_collector import Quality

from ._ua import ua

__all__ = [
    "VALUE_TYPES",
    "convert",
    "quality_of",
    "status_name",
    "status_text",
    "to_variant",
]

#: Value types served by the OPC UA reader (the built-in four and raw bytes).
VALUE_TYPES = frozenset({"float", "int", "bool", "str", "bytes"})

_SEVERITY_MASK = 0xC0000000
_CODE_MASK = 0xFFFF0000  # the low 16 bits are info bits (overflow, limits, ...)

_INT_RANGES: dict[ua.VariantType, tuple[int, int]] = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
_FLOAT_TYPES = (ua.VariantType.Float, ua.VariantType.Double)


def quality_of(code: int) -> Quality:
    """The quality class of an OPC UA status code (Good / Uncertain / Bad by its severity bits)."""
    severity = code & _SEVERITY_MASK
    if severity == 0:
        return Quality.GOOD
    if severity == 0x40000000:
        return Quality.UNCERTAIN
    return Quality.BAD


def status_name(code: int) -> str:
    """The symbolic name of a status code, e.g. ``BadNodeIdUnknown`` (info bits ignored)."""
    name, _ = status_codes.get_name_and_doc(code & _CODE_MASK)
    return name if name else f"0x{code:08X}"


def status_text(code: int) -> str:
    """``Name (description)`` of a status code, e.g. ``BadUserAccessDenied (User does not have ...)``."""
    name, doc = status_codes.get_name_and_doc(code & _CODE_MASK)
    doc = doc.rstrip(".")
    return f"{name} ({doc})" if doc and name else status_name(code)


#: The NumPy dtype of an array node's value by the variable's value_type (its element type).
_ARRAY_DTYPES = {"float": "float64", "int": "int64", "bool": "bool"}


def _array(values: list[Any], value_type: str) -> Any:
    """A 1-D array node's value (a list) as a NumPy array of ``value_type`` elements, each
    converted as a scalar would be (``TypeError``/``ValueError`` naming the element that does
    not fit; a nested list, a multi-dimensional node, is refused)."""
    try:
        np: Any = importlib.import_module("numpy")
    except ImportError:
        raise TypeError("an array value needs NumPy (pip install numpy)") from None
    out = []
    for i, item in enumerate(values):
        if type(item) is list:
            raise TypeError("a multi-dimensional array cannot be converted (1-D arrays only)")
        try:
            out.append(convert(item, value_type))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"array element {i}: {exc}") from None
    try:
        return np.array(out, dtype=_ARRAY_DTYPES[value_type])
    except OverflowError:
        raise ValueError(f"an element of the array is beyond int64 ({_short(values)})") from None


def convert(value: Any, value_type: str) -> Any:
    """``value`` as read from OPC UA, converted to ``value_type``.

    Raises ``TypeError`` or ``ValueError`` with a readable message when it does not fit.
    """
    if value is None:
        raise ValueError("the server returned a null value")
    if type(value) is list and value_type in _ARRAY_DTYPES:  # a 1-D array node: a NumPy array
        return _array(value, value_type)
    if value_type == "float":
        if isinstance(value, float):
            return value
        if isinstance(value, int):  # bool included: a PLC flag read as 0.0 / 1.0
            return float(value)
    elif value_type == "int":
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            if math.isfinite(value) and value.is_integer():
                return int(value)
            raise ValueError(f"value {value!r} is not an integer")
    elif value_type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return value != 0
    elif value_type == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, ua.LocalizedText):
            return value.Text or ""
        if isinstance(value, ua.QualifiedName):
            return value.Name or ""
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, bytes | bytearray):
            return bytes(value).hex()
        return str(value)
    elif value_type == "bytes":
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if isinstance(value, str):
            return value.encode("utf-8")
    else:
        raise ValueError(f"unsupported value_type {value_type!r}")
    raise TypeError(f"cannot convert {type(value).__name__} value {_short(value)} to {value_type}")


def to_variant(value: Any, variant_type: ua.VariantType) -> ua.Variant:
    """``value`` as a Variant of the node's own data type; ``ValueError`` when it does not fit."""
    if variant_type == ua.VariantType.Boolean:
        if isinstance(value, bool) or (isinstance(value, int | float) and value in (0, 1)):
            return ua.Variant(bool(value), variant_type)
    elif variant_type in _INT_RANGES:
        low, high = _INT_RANGES[variant_type]
        number: int | None = None
        if isinstance(value, int) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer()
        ):
            number = int(value)
        if number is not None:
            if not low <= number <= high:
                raise ValueError(f"{value!r} is out of range for {variant_type.name} ({low}..{high})")
            return ua.Variant(number, variant_type)
    elif variant_type in _FLOAT_TYPES:
        if isinstance(value, int | float):
            return ua.Variant(float(value), variant_type)
    elif variant_type == ua.VariantType.String:
        if isinstance(value, str):
            return ua.Variant(value, variant_type)
    elif variant_type == ua.VariantType.ByteString:
        if isinstance(value, bytes | bytearray):
            return ua.Variant(bytes(value), variant_type)
    elif variant_type == ua.VariantType.LocalizedText:
        if isinstance(value, str):
            return ua.Variant(ua.LocalizedText(value), variant_type)
    else:
        raise ValueError(f"writing to a node of data type {variant_type.name} is not supported")
    raise ValueError(f"{_short(value)} ({type(value).__name__}) does not fit a {variant_type.name} node")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
