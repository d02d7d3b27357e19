"""Sparkplug B payloads: the protobuf schema, data types, and encoding of this writer's messages.

The schema is the one of the Eclipse Sparkplug 3.0 specification (``org.eclipse.tahu.protobuf.Payload``,
proto2), declared here field by field and built at import time with the ``protobuf`` package, so
it needs neither ``protoc`` nor generated code, and works with every protobuf release from 4.25
on. It holds the messages this writer uses and consumers need to read them: ``Payload``,
``Payload.Metric``, ``Payload.MetaData``, ``Payload.PropertyValue``, ``Payload.PropertySet`` and
``Payload.PropertySetList``. The data-set and template messages (metric fields 17 and 18) are not
declared: a decoder built from this schema keeps them as unknown fields. Field numbers, types and
names are those of the specification, so payloads decode with any Sparkplug B implementation
(Eclipse Tahu's ``sparkplug_b_pb2``, Ignition, HiveMQ, ...) and theirs with :func:`decode`.

Why not a package: the registry's Sparkplug packages (``mqtt-spb-wrapper``, ``pysparkplug``,
``tahu``) pin paho-mqtt 1.x and/or protobuf 3.x, which conflict with paho-mqtt 2.x and current
protobuf; Eclipse Tahu publishes no Python package.

Use::

    from data_writer.mqtt.sparkplug import DataType, decode
    payload = decode(message.payload)           # a protobuf Payload message
    for m in payload.metrics:
        print(m.alias, m.timestamp, value_of(m, datatype_from_birth[m.alias]))
"""

from __future__ import annotations

import enum
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "DATA_VALUE_FIELD",
    "NAMESPACE",
    "PACKAGE",
    "QUALITY_CODES",
    "DataType",
    "Payload",
    "decode",
    "value_of",
]

#: The topic namespace of Sparkplug B: ``spBv1.0/<group>/<type>/<edge node>[/<device>]``.
NAMESPACE = "spBv1.0"

#: The protobuf package of the schema (as in the specification).
PACKAGE = "org.eclipse.tahu.protobuf"


class DataType(enum.IntEnum):
    """Sparkplug B metric and property data types (specification, section "Data Types")."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21


#: Which ``oneof value`` field of a Metric carries a value of each data type.
DATA_VALUE_FIELD: dict[DataType, str] = {
    DataType.Int8: "int_value",
    DataType.Int16: "int_value",
    DataType.Int32: "int_value",
    DataType.UInt8: "int_value",
    DataType.UInt16: "int_value",
    DataType.UInt32: "int_value",
    DataType.Int64: "long_value",
    DataType.UInt64: "long_value",
    DataType.DateTime: "long_value",
    DataType.Float: "float_value",
    DataType.Double: "double_value",
    DataType.Boolean: "boolean_value",
    DataType.String: "string_value",
    DataType.Text: "string_value",
    DataType.UUID: "string_value",
    DataType.Bytes: "bytes_value",
    DataType.File: "bytes_value",
}

#: The ``Quality`` metric property this writer sets on samples that are not GOOD (OPC DA status
#: codes, as Ignition's MQTT Engine reads them; a metric without the property is good).
QUALITY_CODES: dict[str, int] = {"GOOD": 192, "UNCERTAIN": 64, "BAD": 0}

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL = _F.LABEL_OPTIONAL
_REPEATED = _F.LABEL_REPEATED
_SCALARS = {
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}

# (name, number, type, label, oneof index or None); a type not in _SCALARS is a nested message.
_Field = tuple[str, int, str, int, int | None]

_PROPERTY_VALUE: list[_Field] = [
    ("type", 1, "uint32", _OPTIONAL, None),
    ("is_null", 2, "bool", _OPTIONAL, None),
    ("int_value", 3, "uint32", _OPTIONAL, 0),
    ("long_value", 4, "uint64", _OPTIONAL, 0),
    ("float_value", 5, "float", _OPTIONAL, 0),
    ("double_value", 6, "double", _OPTIONAL, 0),
    ("boolean_value", 7, "bool", _OPTIONAL, 0),
    ("string_value", 8, "string", _OPTIONAL, 0),
    ("propertyset_value", 9, "PropertySet", _OPTIONAL, 0),
    ("propertysets_value", 10, "PropertySetList", _OPTIONAL, 0),
]
_PROPERTY_SET: list[_Field] = [
    ("keys", 1, "string", _REPEATED, None),
    ("values", 2, "PropertyValue", _REPEATED, None),
]
_PROPERTY_SET_LIST: list[_Field] = [("propertyset", 1, "PropertySet", _REPEATED, None)]
_META_DATA: list[_Field] = [
    ("is_multi_part", 1, "bool", _OPTIONAL, None),
    ("content_type", 2, "string", _OPTIONAL, None),
    ("size", 3, "uint64", _OPTIONAL, None),
    ("seq", 4, "uint64", _OPTIONAL, None),
    ("file_name", 5, "string", _OPTIONAL, None),
    ("file_type", 6, "string", _OPTIONAL, None),
    ("md5", 7, "string", _OPTIONAL, None),
    ("description", 8, "string", _OPTIONAL, None),
]
_METRIC: list[_Field] = [
    ("name", 1, "string", _OPTIONAL, None),
    ("alias", 2, "uint64", _OPTIONAL, None),
    ("timestamp", 3, "uint64", _OPTIONAL, None),
    ("datatype", 4, "uint32", _OPTIONAL, None),
    ("is_historical", 5, "bool", _OPTIONAL, None),
    ("is_transient", 6, "bool", _OPTIONAL, None),
    ("is_null", 7, "bool", _OPTIONAL, None),
    ("metadata", 8, "MetaData", _OPTIONAL, None),
    ("properties", 9, "PropertySet", _OPTIONAL, None),
    ("int_value", 10, "uint32", _OPTIONAL, 0),
    ("long_value", 11, "uint64", _OPTIONAL, 0),
    ("float_value", 12, "float", _OPTIONAL, 0),
    ("double_value", 13, "double", _OPTIONAL, 0),
    ("boolean_value", 14, "bool", _OPTIONAL, 0),
    ("string_value", 15, "string", _OPTIONAL, 0),
    ("bytes_value", 16, "bytes", _OPTIONAL, 0),
]
_PAYLOAD: list[_Field] = [
    ("timestamp", 1, "uint64", _OPTIONAL, None),
    ("metrics", 2, "Metric", _REPEATED, None),
    ("seq", 3, "uint64", _OPTIONAL, None),
    ("uuid", 4, "string", _OPTIONAL, None),
    ("body", 5, "bytes", _OPTIONAL, None),
]


def _message(
    name: str, fields: list[_Field], *, oneof: str | None = None, extensions_from: int | None = None
) -> descriptor_pb2.DescriptorProto:
    msg = descriptor_pb2.DescriptorProto(name=name)
    if oneof is not None:
        msg.oneof_decl.add(name=oneof)
    for field_name, number, kind, label, oneof_index in fields:
        f = msg.field.add(name=field_name, number=number, label=label)
        if kind in _SCALARS:
            f.type = _SCALARS[kind]
        else:
            f.type = _F.TYPE_MESSAGE
            f.type_name = f".{PACKAGE}.Payload.{kind}"
        if oneof_index is not None:
            f.oneof_index = oneof_index
    if extensions_from is not None:
        msg.extension_range.add(start=extensions_from, end=536_870_912)  # "to max"
    return msg


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="data_writer/mqtt/sparkplug_b.proto", package=PACKAGE, syntax="proto2"
    )
    payload = _message("Payload", _PAYLOAD, extensions_from=6)
    payload.nested_type.extend(
        [
            _message("PropertyValue", _PROPERTY_VALUE, oneof="value"),
            _message("PropertySet", _PROPERTY_SET, extensions_from=3),
            _message("PropertySetList", _PROPERTY_SET_LIST, extensions_from=2),
            _message("MetaData", _META_DATA, extensions_from=9),
            _message("Metric", _METRIC, oneof="value"),
        ]
    )
    file.message_type.append(payload)
    pool = descriptor_pool.DescriptorPool()  # our own pool: no clash with another copy of the schema
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Payload"))


#: The protobuf message class of a Sparkplug B payload (``Payload()``, ``Payload.Metric`` ...).
Payload: Any = _build()


def decode(data: bytes) -> Any:
    """The :data:`Payload` message encoded in ``data`` (raises ``google.protobuf.message.DecodeError``)."""
    payload = Payload()
    payload.ParseFromString(data)
    return payload


def value_of(metric: Any, datatype: int | None = None) -> Any:
    """The Python value of a decoded metric: ``None`` when ``is_null`` or unset; signed integer types
    converted back from their unsigned two's-complement encoding; floats, bools, text and bytes as is.

    ``datatype``: the metric's type from its birth certificate, for data messages, whose metrics
    carry only an alias (defaults to the metric's own ``datatype`` field)."""
    if metric.is_null:
        return None
    which = metric.WhichOneof("value")
    if which is None:
        return None
    value = getattr(metric, which)
    dt = metric.datatype if datatype is None else datatype
    if dt in (DataType.Int8, DataType.Int16, DataType.Int32) and value >= 1 << 31:
        value -= 1 << 32  # sent as the uint32 of its two's complement
    elif dt == DataType.Int64 and value >= 1 << 63:
        value -= 1 << 64
    return value
