"""OPC UA addresses: NodeId strings, with a namespace index or a namespace URI.

Accepted forms (OPC UA Part 6, 5.3.1.10, the usual text form of a NodeId)::

    i=2258                       numeric identifier in namespace 0
    ns=2;i=1001                  numeric identifier (0 .. 4294967295)
    ns=2;s=Boiler.Temp           string identifier (everything after "s=", ";" and "=" included)
    ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a    GUID identifier
    ns=2;b=M/RbKBsRVkePCePcx24oRA==                opaque (ByteString) identifier, base64
    nsu=urn:plant;s=Boiler.Temp  namespace given by its URI ("%3B" stands for ";" in the URI)

A namespace URI is resolved to the server's current index at connect time and again after every
reconnect, since a restarted server may register its namespaces in another order.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from ._ua import ua

__all__ = ["NodeAddress", "UnknownNamespaceError", "parse_address"]

_MAX_NS = 0xFFFF
_MAX_NUMERIC = 0xFFFFFFFF
_KINDS = ("i", "s", "g", "b")
_DIGITS = re.compile(r"[0-9]{1,12}")


class UnknownNamespaceError(LookupError):
    """The namespace URI of an address is not in the server's namespace array."""


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A parsed address: namespace (index or URI) and identifier."""

    text: str
    namespace_index: int
    namespace_uri: str | None
    kind: str  # "i", "s", "g" or "b"
    identifier: int | str | uuid.UUID | bytes

    def resolve(self, namespaces: Sequence[str]) -> ua.NodeId:
        """The NodeId of this address given the server's namespace array.

        Raises :class:`UnknownNamespaceError` when the namespace URI is not on the server.
        """
        index = self.namespace_index
        if self.namespace_uri is not None:
            try:
                index = list(namespaces).index(self.namespace_uri)
            except ValueError:
                raise UnknownNamespaceError(
                    f"namespace URI {self.namespace_uri!r} of {self.text!r} is not registered on the server"
                ) from None
        return ua.NodeId(self.identifier, index)


def _bad(text: str, why: str) -> ValueError:
    return ValueError(f"invalid OPC UA NodeId {text!r}: {why}")


def parse_address(text: str) -> NodeAddress:
    """Parse a NodeId string (see the module docstring); raises ``ValueError`` naming the address."""
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "empty address")
    rest = text.strip()
    ns_index: int | None = None
    ns_uri: str | None = None
    while True:
        key, sep, tail = rest.partition("=")
        key = key.strip()
        if not sep:
            raise _bad(text, f"expected key=value, got {rest!r}")
        if key in _KINDS:
            return _identifier(text, ns_index or 0, ns_uri, key, tail)
        value, _, rest = tail.partition(";")
        if key == "ns":
            if ns_index is not None or ns_uri is not None:
                raise _bad(text, "namespace given twice")
            if not _DIGITS.fullmatch(value.strip()) or int(value) > _MAX_NS:
                raise _bad(text, f"ns must be an integer 0..{_MAX_NS}, got {value!r}")
            ns_index = int(value)
        elif key == "nsu":
            if ns_index is not None or ns_uri is not None:
                raise _bad(text, "namespace given twice")
            ns_uri = unquote(value.strip())
            if not ns_uri:
                raise _bad(text, "empty namespace URI")
        else:
            raise _bad(text, f"unknown part {key!r} (expected ns=, nsu=, i=, s=, g= or b=)")
        if not rest.strip():
            raise _bad(text, "no identifier (i=, s=, g= or b=)")


def _identifier(text: str, ns_index: int, ns_uri: str | None, kind: str, raw: str) -> NodeAddress:
    identifier: int | str | uuid.UUID | bytes
    if kind == "s":
        if not raw:
            raise _bad(text, "empty string identifier")
        identifier = raw
    elif kind == "i":
        value = raw.strip()
        if not _DIGITS.fullmatch(value) or int(value) > _MAX_NUMERIC:
            raise _bad(text, f"numeric identifier must be an integer 0..{_MAX_NUMERIC}, got {raw!r}")
        identifier = int(value)
    elif kind == "g":
        try:
            identifier = uuid.UUID(raw.strip())
        except ValueError:
            raise _bad(text, f"GUID identifier is not a GUID: {raw!r}") from None
    else:
        value = raw.strip()
        try:
            if value.startswith("0x"):
                identifier = bytes.fromhex(value[2:])
            else:
                identifier = base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            raise _bad(text, f"opaque identifier must be base64 (or 0x-hex), got {raw!r}") from None
        if not identifier:
            raise _bad(text, "empty opaque identifier")
    return NodeAddress(text, ns_index, ns_uri, kind, identifier)
