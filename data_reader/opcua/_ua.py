"""asyncua's ``ua`` module, seen by the type checker as ``Any``.

asyncua annotates every OPC UA integer with its own ``int`` subclass (``Int16``, ``UInt32``, ...)
and re-exports its names implicitly, which a strict mypy run rejects at every call. The protocol
objects (NodeId, DataValue, Variant, ...) are therefore typed ``Any`` in this package; the values
they carry are checked where they are converted (:mod:`._convert`).
"""

from typing import Any

from asyncua import ua as _ua

__all__ = ["ua"]

ua: Any = _ua
