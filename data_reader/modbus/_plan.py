"""Request planning: merge the due values of one unit and table into as few requests as possible.

Pure code (no I/O, no clock). Values are sorted by address and merged while the request stays
within the protocol limit and the hole bridged between two values is at most ``max_gap``
registers (or ``16 * max_gap`` bits). A :class:`SplitMemory` remembers what the device refused:
holes that must not be bridged, boundaries a request must not cross, values that must be read
alone, and the largest request each unit and table answers (:class:`SizeLimit`), so a refused
request costs a few failed requests once, not data.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._address import ORDERS, ModbusAddress, Table

__all__ = ["Entry", "Request", "SizeLimit", "SplitMemory", "plan_requests", "split_request"]

# Decoder kinds
STRUCT, REGISTER_BIT, BIT, RAW = range(4)

#: How one item is decoded from a response: (item index, kind, unpack_from, offset,
#: little-endian buffer?, post conversion, extra: bit number or byte length).
Decoder = tuple[
    int, int, Callable[[bytes, int], tuple[Any, ...]] | None, int, bool, Callable[[Any], Any] | None, int
]


@dataclass(slots=True)
class Entry:
    """One value to read: the item's index in the batch, its span and how to convert it."""

    index: int
    addr: ModbusAddress
    convert: Callable[[Any], Any] | None

    @property
    def start(self) -> int:
        return self.addr.address

    @property
    def end(self) -> int:
        return self.addr.end


_STRUCTS: dict[str, struct.Struct] = {}


def _struct(fmt: str) -> struct.Struct:
    found = _STRUCTS.get(fmt)
    if found is None:
        found = _STRUCTS[fmt] = struct.Struct(fmt)
    return found


@dataclass(slots=True)
class Request:
    """One read request of ``count`` registers or bits from ``start``, and what to decode from it."""

    unit: int
    table: Table
    start: int
    end: int
    entries: list[Entry]
    decoders: list[Decoder] = field(default_factory=list)
    needs_little: bool = False
    big: struct.Struct | None = None
    little: struct.Struct | None = None
    limit: int = 0  # the request limit it was planned with
    full: bool = False  # it ended because the next value would have exceeded ``limit``

    @property
    def count(self) -> int:
        return self.end - self.start

    def spans(self) -> list[tuple[int, int]]:
        """The distinct (start, end) spans of the entries, sorted."""
        return sorted({(e.start, e.end) for e in self.entries})

    def compile(self) -> Request:
        """Build the decoders (done once per plan, not per tick)."""
        decoders: list[Decoder] = []
        needs_little = False
        for e in self.entries:
            addr = e.addr
            off = e.start - self.start
            if self.table.is_bit:
                decoders.append((e.index, BIT, None, off, False, e.convert, 0))
            elif addr.bit is not None:
                decoders.append((e.index, REGISTER_BIT, None, off, False, e.convert, addr.bit))
            else:
                endian, little = ORDERS[addr.order]
                needs_little = needs_little or little
                if addr.type.kind == "str":
                    decoders.append((e.index, RAW, None, 2 * off, little, e.convert, 2 * addr.type.registers))
                else:
                    unpack = _struct(endian + addr.type.code).unpack_from
                    decoders.append((e.index, STRUCT, unpack, 2 * off, little, e.convert, 0))
        self.decoders = decoders
        self.needs_little = needs_little
        if not self.table.is_bit:
            self.big = _struct(f">{self.count}H")
            self.little = _struct(f"<{self.count}H")
        return self

    def describe(self) -> str:
        last = self.end - 1
        where = f"{self.start}" if last == self.start else f"{self.start}..{last}"
        return f"{self.table.plural} {where} of unit {self.unit}"


@dataclass(slots=True)
class SizeLimit:
    """What one unit and table showed about the largest read request it answers.

    ``answered``: the largest count it answered; ``refused``: the smallest count it refused
    although smaller requests read every value of that request (None: none yet); ``passed``: the
    largest limit under which a request that the limit ended was answered (planning with any
    limit from its count up to this one gives the same request). While ``refused`` is known and
    more than one above the larger of the two lower bounds, plans probe half-way between them
    (a bisection, one step per answered or refused request); then the limit is ``refused - 1``.
    """

    answered: int = 0
    passed: int = 0
    refused: int | None = None

    @property
    def settled(self) -> bool:
        return self.refused is not None and self.refused - max(self.answered, self.passed) <= 1

    def limit(self, cap: int) -> int:
        """The limit to plan with: ``cap`` while nothing was refused for its size."""
        if self.refused is None:
            return cap
        low = max(self.answered, self.passed)
        if self.refused - low <= 1:
            return min(cap, self.refused - 1)
        return min(cap, (low + self.refused) // 2)


class SplitMemory:
    """What a device refused, per (unit, table): holes not to bridge, boundaries not to cross,
    spans to read alone, and the request size it answers (:class:`SizeLimit`).

    ``version`` changes whenever something is learnt that changes plans, so cached plans can be
    rebuilt (and requests not sent yet re-planned).
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._holes: dict[tuple[int, Table], list[tuple[int, int]]] = {}
        self._cuts: dict[tuple[int, Table], set[int]] = {}
        self._alone: dict[tuple[int, Table], set[tuple[int, int]]] = {}
        self._sizes: dict[tuple[int, Table], SizeLimit] = {}
        self._max = max_entries
        self.version = 0

    def holes(self, unit: int, table: Table) -> list[tuple[int, int]]:
        return self._holes.get((unit, table), [])

    def alone(self, unit: int, table: Table) -> set[tuple[int, int]]:
        return self._alone.get((unit, table), set())

    def cuts(self, unit: int, table: Table) -> set[int]:
        return self._cuts.get((unit, table), set())

    def size(self, unit: int, table: Table) -> SizeLimit | None:
        return self._sizes.get((unit, table))

    def limit(self, unit: int, table: Table, cap: int) -> int:
        """The request limit to plan (unit, table) with: ``cap`` unless it refused smaller requests."""
        size = self._sizes.get((unit, table))
        return cap if size is None else size.limit(cap)

    def sizes(self) -> dict[tuple[int, Table], SizeLimit]:
        """The (unit, table) pairs that refused a request for its size."""
        return {key: size for key, size in list(self._sizes.items()) if size.refused is not None}

    def note_answered(self, unit: int, table: Table, count: int, full_limit: int = 0) -> None:
        """A request of ``count`` was answered; ``full_limit``: its planning limit if that ended it."""
        size = self._sizes.get((unit, table))
        if size is None:
            size = self._sizes[(unit, table)] = SizeLimit()
        if count > size.answered:
            size.answered = count
            if size.refused is not None:
                if count >= size.refused:  # the size did not cause that refusal after all
                    size.refused = None
                    size.passed = 0
                self.version += 1
        if size.refused is not None and size.passed < full_limit < size.refused:
            size.passed = full_limit
            self.version += 1

    def refuse_size(self, unit: int, table: Table, count: int) -> bool:
        """A request of ``count`` was refused although smaller ones read all of it; True if news."""
        size = self._sizes.get((unit, table))
        if size is None:
            size = self._sizes[(unit, table)] = SizeLimit()
        if count <= size.answered or (size.refused is not None and count >= size.refused):
            return False
        size.refused = count
        if size.passed >= count:  # a guess from planning that this refusal disproves
            size.passed = 0
        self.version += 1
        return True

    def add_cut(self, unit: int, table: Table, at: int) -> bool:
        """Requests of (unit, table) must not span address ``at - 1`` and ``at`` together."""
        cuts = self._cuts.setdefault((unit, table), set())
        if at in cuts or len(cuts) >= self._max:
            return False
        cuts.add(at)
        self.version += 1
        return True

    def add_hole(self, unit: int, table: Table, start: int, end: int) -> bool:
        holes = self._holes.setdefault((unit, table), [])
        if (start, end) in holes or len(holes) >= self._max:
            return False
        holes.append((start, end))
        self.version += 1
        return True

    def add_alone(self, unit: int, table: Table, start: int, end: int) -> bool:
        spans = self._alone.setdefault((unit, table), set())
        if (start, end) in spans or len(spans) >= self._max:
            return False
        spans.add((start, end))
        self.version += 1
        return True

    @property
    def hole_count(self) -> int:
        """Holes and boundaries (zero-width holes) remembered."""
        return sum(len(v) for v in self._holes.values()) + sum(len(v) for v in self._cuts.values())

    @property
    def alone_count(self) -> int:
        return sum(len(v) for v in self._alone.values())

    def clear(self) -> None:
        self._holes.clear()
        self._cuts.clear()
        self._alone.clear()
        self._sizes.clear()
        self.version += 1


def _crosses(holes: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(h_start < end and start < h_end for h_start, h_end in holes)


def plan_requests(
    unit: int,
    table: Table,
    entries: Iterable[Entry],
    *,
    limit: int,
    max_gap: int,
    memory: SplitMemory | None = None,
) -> list[Request]:
    """Merge ``entries`` (one unit, one table) into as few requests as the rules allow, sorted."""
    ordered = sorted(entries, key=lambda e: (e.start, e.end))
    holes = memory.holes(unit, table) if memory is not None else []
    alone = memory.alone(unit, table) if memory is not None else set()
    cuts = memory.cuts(unit, table) if memory is not None else set()
    requests: list[Request] = []
    current: Request | None = None
    current_alone = False
    for e in ordered:
        span = (e.start, e.end)
        e_alone = span in alone
        if current is not None:
            if current_alone or e_alone:
                merge = current_alone and e_alone and (current.start, current.end) == span
            else:
                gap = e.start - current.end
                end = max(current.end, e.end)
                merge = (
                    gap <= max_gap
                    and (gap <= 0 or not _crosses(holes, current.end, e.start))
                    and not (cuts and any(current.start < cut < end for cut in cuts))
                )
                if merge and end - current.start > limit:
                    merge = False
                    current.full = True
            if merge:
                current.entries.append(e)
                if e.end > current.end:
                    current.end = e.end
                continue
            requests.append(current)
        current = Request(unit, table, e.start, e.end, [e], limit=limit)
        current_alone = e_alone
    if current is not None:
        requests.append(current)
    return [r.compile() for r in requests]


def split_request(request: Request) -> tuple[Request, Request, tuple[int, int] | None] | None:
    """Split a refused request in two at its widest hole (or between values in the middle).

    Returns (left, right, hole) where hole is the bridged (start, end) between the halves, or None
    when the halves touch; None when the request cannot be split (one span only).
    """
    ordered = sorted(request.entries, key=lambda e: (e.start, e.end))
    boundaries: list[tuple[int, int, int]] = []  # (gap, index of first right entry, running end)
    running_end = ordered[0].end
    for i in range(1, len(ordered)):
        e = ordered[i]
        if e.start >= running_end:
            boundaries.append((e.start - running_end, i, running_end))
        running_end = max(running_end, e.end)
    if not boundaries:
        return None
    middle = len(ordered) / 2
    gap, index, left_end = max(boundaries, key=lambda b: (b[0], -abs(b[1] - middle)))
    left_entries, right_entries = ordered[:index], ordered[index:]
    left = Request(request.unit, request.table, request.start, left_end, left_entries).compile()
    right_end = max(e.end for e in right_entries)
    right = Request(request.unit, request.table, right_entries[0].start, right_end, right_entries).compile()
    hole = (left_end, right_entries[0].start) if gap > 0 else None
    return left, right, hole
