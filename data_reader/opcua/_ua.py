"""asyncua's ``ua`` module, seen by the type checker as ``Any``, and the read request piece built
in several places (:func:`read_value_id`).

asyncua annotates every OPC UA integer with its own ``int`` subclass (``Int16``, ``UInt32``, ...)
and re-exports its names implicitly, which a strict mypy run rejects at every call. The protocol
objects (NodeId, DataValue, Variant, ...) are therefore typed ``Any`` in this package; the values
they carry are checked where they are converted (:mod:`._convert`).
"""

from typing import Any

from asyncua import ua as _ua

__all__ = ["read_value_id", "ua"]

ua: Any = _ua


def read_value_id(nodeid: Any, attribute: Any = ua.AttributeIds.Value) -> Any:
    """The ``ReadValueId`` of ``nodeid``'s ``attribute`` (its Value unless told), for a Read."""
    rv = ua.ReadValueId()
    rv.NodeId = nodeid
    rv.AttributeId = attribute
    return rv
