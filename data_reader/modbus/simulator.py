"""Modbus TCP simulator: a pymodbus server on 127.0.0.1 whose registers hold live signals and constants.

For trying the Modbus reader without a device, in tests, examples and demos. Requires the
``modbus`` extra. From a shell (``--port 0`` picks a free port; the bound address is printed)::

    python -m data_reader.modbus.simulator --port 5020 [--host 127.0.0.1] [--units 1,2]
        [--period 10] [--bulk 2000] [--latency-ms 0] [--max-read-registers N]
        [--max-read-bits N] [--duration SECONDS]

From Python (the server runs in a daemon thread of its own with its own event loop)::

    from data_reader.modbus.simulator import ModbusSimulator

    with ModbusSimulator() as sim:            # port=0: a free ephemeral port
        print(sim.port)                       # the bound port
        ...                                   # read 127.0.0.1:sim.port, unit 1
        sim.request_count(function_code=3)    # read-holding-register requests received so far

Register map of every simulated unit (0-based protocol addresses; input registers hold the same
map as holding registers; signals are computed from the wall clock when a request reads them,
``period_s`` defaults to 10 s):

=========  ======================  ===================================================
address    type (order ABCD)       content
=========  ======================  ===================================================
0-1        float32                 sine, amplitude 100: ``100 * sin(2 pi t / period)``
2-3        float32                 ramp 0 -> 100 over each period (sawtooth)
4-5        uint32                  counter: whole seconds since the simulator started
6          int16                   sine * 100 (-10000 .. 10000)
7          uint16                  ramp * 10 (0 .. 1000)
8          uint16                  counter modulo 65536
9          uint16                  status bits: bit 0 square wave (high the first half of
                                   each period), bit 1 its inverse, bit 15 always set
10-99      uint16                  zeros
100-279    constants               one constant per type and byte order (below)
300-307    string8 ABCD            ``"data-collector"`` (14 bytes, NUL padded)
310-317    string8 BADC            the same text, bytes swapped in each register
320-399    uint16                  zeros
400-499    uint16                  scratch: zeros, writable (setpoints, write tests)
=========  ======================  ===================================================

Constants: type ``t`` at ``100 + 20 * t``, byte order ``o`` at ``+ 4 * o`` with orders
ABCD, DCBA, BADC, CDAB (o = 0 .. 3); unused registers of a slot are 0:

=====  ========  ===========================  =======================
t      type      value                        addresses (ABCD..CDAB)
=====  ========  ===========================  =======================
0      int16     -12345                       100, 104, 108, 112
1      uint16    54321                        120, 124, 128, 132
2      int32     -123456789                   140, 144, 148, 152
3      uint32    3000000000                   160, 164, 168, 172
4      int64     -1234567890123456789         180, 184, 188, 192
5      uint64    12345678901234567890         200, 204, 208, 212
6      float16   -2.5                         220, 224, 228, 232
7      float32   -1234.5625                   240, 244, 248, 252
8      float64   2.718281828459045            260, 264, 268, 272
=====  ========  ===========================  =======================

Registers 500 .. 999 do not exist (requests touching them get an illegal-address exception),
except the ``bulk`` registers at 1000 .. 1000 + bulk - 1 (default none) holding
``(address * 7) & 0xFFFF``. Extra or overriding register contents can be given per table
(``holding=`` / ``inputs=`` mappings of address to value); addresses not defined anywhere do not
exist.

Coils 0-15: ``True`` where ``address % 3 == 0``; coils 16-99: ``False``, writable.
Discrete inputs 0: square wave (as register 9 bit 0), 1: its inverse, 2-15: ``address % 2 == 0``.

Units: ``unit_ids`` (default ``(1,)``) answer; a request to any other unit gets exception 11
(gateway target failed to respond), and units listed in ``silent_unit_ids`` never answer (the
request times out), as a dead device behind a gateway would; :meth:`ModbusSimulator.set_silent`
changes that set while the server runs (a unit in both sets comes back when it leaves the silent
one). Every request received is recorded (:attr:`ModbusSimulator.requests`) so tests can count
what a client sent. ``latency_s`` delays every answer to a valid request, like a real device's
turnaround time. ``max_connections`` (default: no limit) closes a connection beyond that many at
once as soon as it is accepted, as small devices that serve one client at a time do.
``write_limits`` ({register: (low, high)}) makes a unit refuse, with exception 3 (illegal data
value), a write (functions 6, 16) that would put a raw value outside that range into that holding
register, as devices refuse a setpoint out of their range; the refused request is recorded too.
``max_read_registers`` / ``max_read_bits`` (default: the protocol's 125 / 2000) make it refuse
reads of more registers (functions 3, 4) or bits (functions 1, 2) than that with exception
``oversize_exception`` (3, illegal data value, as the specification says; or 2, illegal data
address, as some devices answer), like small PLCs and gateways with short buffers; refused
requests are recorded too.

Values and faults while it runs (thread-safe; for tests, also through the ``modbus_simulator``
fixture of :mod:`data_collector.testing`): :meth:`~ModbusSimulator.set_value` writes a value in
the reader's address syntax (``sim.set_value("hr:400:float32:CDAB", 21.5)``, coils and register
bits included), :meth:`~ModbusSimulator.set_registers` raw registers;
:meth:`~ModbusSimulator.freeze` makes the whole device stop answering (requests are received and
recorded, connections stay open, clients time out, as a hung PLC) until
:meth:`~ModbusSimulator.thaw`; :meth:`~ModbusSimulator.refuse` answers requests touching a range
of a table with an exception (2, illegal data address, by default); :meth:`~ModbusSimulator.drop_unit`
makes one unit go silent (or answer exception 11, as a gateway whose device is gone) until
:meth:`~ModbusSimulator.restore_unit`; :meth:`~ModbusSimulator.clear_faults` ends them all.

Bad arguments (a port outside 0..65535, ``period_s`` <= 0...) raise
:class:`~data_collector.ConfigurationError`; on the command line they print one ``error:`` line
and exit with status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import struct
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from data_collector import ConfigurationError

from .._simulator_cli import ArgumentError as _ArgumentError
from .._simulator_cli import ArgumentParser as _Parser
from .._simulator_cli import port as _port
from ._address import AddressError, Table, encode_value, parse_address

__all__ = ["CONSTANTS", "ORDERS", "ModbusSimulator", "SimulatorRequest", "main"]

#: The byte orders of the constants, in their slot order.
ORDERS: tuple[str, ...] = ("ABCD", "DCBA", "BADC", "CDAB")
#: (type, struct code, value, first address) of the constants.
CONSTANTS: tuple[tuple[str, str, int | float, int], ...] = (
    ("int16", "h", -12345, 100),
    ("uint16", "H", 54321, 120),
    ("int32", "i", -123456789, 140),
    ("uint32", "I", 3000000000, 160),
    ("int64", "q", -1234567890123456789, 180),
    ("uint64", "Q", 12345678901234567890, 200),
    ("float16", "e", -2.5, 220),
    ("float32", "f", -1234.5625, 240),
    ("float64", "d", 2.718281828459045, 260),
)
TEXT = "data-collector"
SCRATCH = range(400, 500)
BULK_START = 1000

_FC_TABLE = {1: "c", 5: "c", 15: "c", 2: "d", 3: "h", 6: "h", 16: "h", 22: "h", 23: "h", 4: "i"}
_TABLE_LETTER = {
    Table.COIL: "c",
    Table.DISCRETE_INPUT: "d",
    Table.HOLDING_REGISTER: "h",
    Table.INPUT_REGISTER: "i",
}


@dataclass(frozen=True, slots=True)
class _Refused:
    table: str
    start: int
    end: int
    unit: int | None
    code: int


def _order_registers(big: bytes, order: str) -> list[int]:
    """Registers holding the big-endian bytes ``big`` in byte ``order`` (letters name the bytes)."""
    size = len(big)
    pattern = {"ABCD": "ABCDEFGH", "DCBA": "HGFEDCBA", "BADC": "BADCFEHG", "CDAB": "GHEFCDAB"}[order]
    if size == 2:
        pattern = {"ABCD": "AB", "DCBA": "BA", "BADC": "BA", "CDAB": "AB"}[order]
    elif size == 4:
        pattern = order
    wire = bytes(big[ord(letter) - ord("A")] for letter in pattern)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, size, 2)]


def standard_registers() -> dict[int, int]:
    """The static part of the register map (signals at 0-9 start at 0)."""
    regs = {a: 0 for a in range(0, 500)}
    for _name, code, value, base in CONSTANTS:
        big = struct.pack(">" + code, value)
        for o, order in enumerate(ORDERS):
            for i, reg in enumerate(_order_registers(big, order)):
                regs[base + 4 * o + i] = reg
    text = TEXT.encode().ljust(16, b"\0")
    for i in range(8):
        regs[300 + i] = int.from_bytes(text[2 * i : 2 * i + 2], "big")
        regs[310 + i] = int.from_bytes(text[2 * i : 2 * i + 2], "little")
    return regs


@dataclass(frozen=True, slots=True)
class SimulatorRequest:
    """One request received: unit, function code, first address and count (0 when not applicable);
    for a write, ``values``: the registers (functions 6, 16), the bits (5, 15) or the AND and OR
    masks (22) it carried."""

    unit: int
    function_code: int
    address: int
    count: int
    values: tuple[int, ...] = ()


def _runs(values: Mapping[int, int]) -> list[tuple[int, list[int]]]:
    """Contiguous runs (start, values) of a sparse address -> value map."""
    runs: list[tuple[int, list[int]]] = []
    for address in sorted(values):
        if runs and runs[-1][0] + len(runs[-1][1]) == address:
            runs[-1][1].append(values[address])
        else:
            runs.append((address, [values[address]]))
    return runs


class ModbusSimulator:
    """A pymodbus TCP server in a background thread; see the module docstring for its register map.

    ``start()`` returns once the server listens (``port`` then holds the bound port, useful with
    ``port=0``); ``stop()`` closes it and every client connection. ``start()`` again after
    ``stop()`` listens on the same port with the initial register contents, so clients reconnect
    as to a restarted device.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        unit_ids: Iterable[int] = (1,),
        silent_unit_ids: Iterable[int] = (),
        period_s: float = 10.0,
        bulk: int = 0,
        holding: Mapping[int, int] | None = None,
        inputs: Mapping[int, int] | None = None,
        standard_map: bool = True,
        latency_s: float = 0.0,
        max_connections: int | None = None,
        max_read_registers: int | None = None,
        max_read_bits: int | None = None,
        oversize_exception: int = 3,
        write_limits: Mapping[int, tuple[int, int]] | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(
                f"ModbusSimulator: port must be an int 0..65535 (0: a free one), got {port!r}"
            )
        self.host = host
        self._port = port
        self.unit_ids = tuple(unit_ids)
        self.silent_unit_ids = frozenset(silent_unit_ids)
        if not self.unit_ids:
            raise ConfigurationError("ModbusSimulator: unit_ids must name at least one unit")
        for unit in (*self.unit_ids, *self.silent_unit_ids):
            if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit <= 255:
                raise ConfigurationError(f"ModbusSimulator: unit ids must be ints 0..255, got {unit!r}")
        if not period_s > 0 or not math.isfinite(period_s):
            raise ConfigurationError(f"ModbusSimulator: period_s must be > 0, got {period_s!r}")
        if not 0 <= bulk <= 65536 - BULK_START:
            raise ConfigurationError(f"ModbusSimulator: bulk must be 0..{65536 - BULK_START}, got {bulk!r}")
        if not latency_s >= 0 or not math.isfinite(latency_s):
            raise ConfigurationError(f"ModbusSimulator: latency_s must be >= 0, got {latency_s!r}")
        if max_connections is not None and (
            isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1
        ):
            raise ConfigurationError(
                f"ModbusSimulator: max_connections must be an int >= 1 or None, got {max_connections!r}"
            )
        for name, value, top in (
            ("max_read_registers", max_read_registers, 125),
            ("max_read_bits", max_read_bits, 2000),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top
            ):
                raise ConfigurationError(
                    f"ModbusSimulator: {name} must be an int 1..{top} or None, got {value!r}"
                )
        if oversize_exception not in (2, 3) or isinstance(oversize_exception, bool):
            raise ConfigurationError(
                f"ModbusSimulator: oversize_exception must be 2 or 3, got {oversize_exception!r}"
            )
        self.period_s = float(period_s)
        self.latency_s = float(latency_s)
        self.max_connections = max_connections
        self.max_read_registers = max_read_registers
        self.max_read_bits = max_read_bits
        self.oversize_exception = oversize_exception
        self.write_limits: dict[int, tuple[int, int]] = {}
        for address, limits in (write_limits or {}).items():
            if (
                isinstance(address, bool)
                or not isinstance(address, int)
                or not 0 <= address <= 0xFFFF
                or not isinstance(limits, tuple)
                or len(limits) != 2
                or not 0 <= limits[0] <= limits[1] <= 0xFFFF
            ):
                raise ConfigurationError(
                    f"ModbusSimulator: write_limits maps a register to (low, high) raw values, got "
                    f"{address!r}: {limits!r}"
                )
            self.write_limits[address] = limits
        self._holding = self._table(standard_map, bulk, holding)
        self._inputs = self._table(standard_map, bulk, inputs)
        self._started_at = time.time()
        self._requests: list[SimulatorRequest] = []
        self._requests_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._devices: dict[int, SimDevice] = {}
        self._standard = standard_map
        self._frozen = False
        self._refused: tuple[_Refused, ...] = ()
        self._gone_units: frozenset[int] = frozenset()

    @staticmethod
    def _table(standard: bool, bulk: int, extra: Mapping[int, int] | None) -> dict[int, int]:
        regs = standard_registers() if standard else {}
        for a in range(BULK_START, BULK_START + bulk):
            regs[a] = (a * 7) & 0xFFFF
        for address, value in (extra or {}).items():
            if not 0 <= address <= 0xFFFF or not 0 <= value <= 0xFFFF:
                raise ConfigurationError(f"ModbusSimulator: register {address} = {value} out of range")
            regs[address] = value
        if not regs:
            regs[0] = 0
        return regs

    # -- properties ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after ``start()``), else the requested one."""
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def requests(self) -> list[SimulatorRequest]:
        """A copy of every request received since start (or the last ``clear_requests``)."""
        with self._requests_lock:
            return list(self._requests)

    def request_count(self, *, function_code: int | None = None, unit: int | None = None) -> int:
        """How many requests were received, optionally of one function code and/or unit."""
        with self._requests_lock:
            return sum(
                1
                for r in self._requests
                if (function_code is None or r.function_code == function_code)
                and (unit is None or r.unit == unit)
            )

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    def set_silent(self, unit_ids: Iterable[int]) -> None:
        """Make exactly ``unit_ids`` silent from the next request on (``()``: every unit answers)."""
        self.silent_unit_ids = frozenset(unit_ids)

    # -- faults ----------------------------------------------------------------------------

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        """Stop answering anything (requests are still received and recorded; connections stay
        open): clients time out, as with a hung device, until :meth:`thaw`."""
        self._frozen = True

    def thaw(self) -> None:
        """Answer again (requests sent while frozen stay unanswered)."""
        self._frozen = False

    def refuse(
        self, address: int, count: int = 1, *, table: str = "h", unit: int | None = None, exception: int = 2
    ) -> None:
        """Answer every request that touches ``count`` registers (or bits) from ``address`` of
        ``table`` (``"h"`` holding, ``"i"`` input registers, ``"c"`` coils, ``"d"`` discrete inputs)
        of ``unit`` (``None``: every unit) with Modbus exception ``exception`` (2: illegal data
        address, as a device without those registers; 4: device failure; 6: busy).
        Refusals add up; :meth:`clear_faults` ends them."""
        if table not in ("h", "i", "c", "d"):
            raise ConfigurationError(f"ModbusSimulator.refuse: table must be h, i, c or d, got {table!r}")
        for name, value, low, high in (("address", address, 0, 65535), ("count", count, 1, 65536)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigurationError(
                    f"ModbusSimulator.refuse: {name} must be an int {low}..{high}, got {value!r}"
                )
        if unit is not None and (isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit <= 255):
            raise ConfigurationError(
                f"ModbusSimulator.refuse: unit must be an int 0..255 or None, got {unit!r}"
            )
        try:
            ExcCodes(exception)
        except ValueError:
            raise ConfigurationError(
                f"ModbusSimulator.refuse: {exception!r} is not a Modbus exception code"
            ) from None
        self._refused = (*self._refused, _Refused(table, address, address + count, unit, exception))

    def drop_unit(self, unit: int, *, silent: bool = True) -> None:
        """Make ``unit`` stop answering: no answer at all (clients time out, as a dead device
        behind a gateway), or with ``silent=False`` gateway exception 11 (target failed to
        respond), until :meth:`restore_unit`. Other units answer as before."""
        if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit <= 255:
            raise ConfigurationError(f"ModbusSimulator.drop_unit: unit must be an int 0..255, got {unit!r}")
        if silent:
            self.silent_unit_ids = self.silent_unit_ids | {unit}
        else:
            self._gone_units = self._gone_units | {unit}

    def restore_unit(self, unit: int) -> None:
        """``unit`` answers again (after :meth:`drop_unit` or ``silent_unit_ids``)."""
        self.silent_unit_ids = self.silent_unit_ids - {unit}
        self._gone_units = self._gone_units - {unit}

    def clear_faults(self) -> None:
        """Thaw, end every refusal and restore every unit."""
        self._frozen = False
        self._refused = ()
        self._gone_units = frozenset()
        self.silent_unit_ids = frozenset()

    def _refusal(self, record: SimulatorRequest) -> int | None:
        table = _FC_TABLE.get(record.function_code)
        if table is None:
            return None
        end = record.address + max(record.count, 1)
        for r in self._refused:
            if (
                r.table == table
                and (r.unit is None or r.unit == record.unit)
                and record.address < r.end
                and end > r.start
            ):
                return r.code
        return None

    # -- values ----------------------------------------------------------------------------

    def set_value(self, address: str, value: Any, *, unit: int | None = None) -> None:
        """Set the value at ``address`` (the Modbus reader's address syntax, e.g.
        ``"hr:400:float32:CDAB"``, ``"coil:20"``, ``"hr:401.3"``; scale and offset are undone) of a
        running unit (``unit``, else the address's ``unit=``, else the first unit).

        Raises :class:`~data_collector.ConfigurationError` for an address or a value that does not
        fit, and for registers the simulator does not have."""
        try:
            addr = parse_address(address)
            encoded = encode_value(addr, value)
        except AddressError as exc:
            raise ConfigurationError(f"ModbusSimulator.set_value({address!r}, {value!r}): {exc}") from None
        target = unit if unit is not None else addr.unit if addr.unit is not None else self.unit_ids[0]
        table = _TABLE_LETTER[addr.table]
        try:
            if addr.table.is_bit or addr.bit is not None:
                assert isinstance(encoded, bool)
                if addr.table.is_bit:
                    self._set_bit(table, addr.address, encoded, target)
                else:
                    assert addr.bit is not None
                    (reg,) = self.get_registers(addr.address, 1, unit=target, table=table)
                    mask = 1 << addr.bit
                    self.set_registers(
                        addr.address, [reg | mask if encoded else reg & ~mask], unit=target, table=table
                    )
            else:
                assert not isinstance(encoded, bool)
                self.set_registers(addr.address, encoded, unit=target, table=table)
        except (IndexError, KeyError, ValueError) as exc:
            raise ConfigurationError(
                f"ModbusSimulator.set_value({address!r}): unit {target} has no such location ({exc})"
            ) from None

    def _set_bit(self, table: str, address: int, value: bool, unit: int) -> None:
        start, registers = self._block(unit, table)
        offset = address // 16 - start
        if not 0 <= offset < len(registers):
            raise IndexError(f"bit {address} out of the table")
        mask = 1 << (address % 16)
        registers[offset] = registers[offset] | mask if value else registers[offset] & ~mask

    # -- signals ---------------------------------------------------------------------------

    def signals(self, now: float | None = None) -> dict[int, int]:
        """Register values of the live signals (addresses 0-9) at wall-clock time ``now``."""
        t = time.time() if now is None else now
        phase = (t % self.period_s) / self.period_s
        sine = 100.0 * math.sin(2 * math.pi * phase)
        ramp = 100.0 * phase
        counter = int(t - self._started_at)
        regs: list[int] = []
        regs += struct.unpack(">2H", struct.pack(">f", sine))
        regs += struct.unpack(">2H", struct.pack(">f", ramp))
        regs += struct.unpack(">2H", struct.pack(">I", counter & 0xFFFFFFFF))
        regs.append(round(sine * 100) & 0xFFFF)
        regs.append(round(ramp * 10) & 0xFFFF)
        regs.append(counter & 0xFFFF)
        square = phase < 0.5
        regs.append((1 if square else 2) | 0x8000)
        return dict(enumerate(regs))

    async def _action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Delay the answer by ``latency_s``; refresh the live signals of the block a request reads."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if not self._standard or set_values is not None:
            return None
        table = _FC_TABLE.get(function_code)
        now = time.time()
        if table in ("h", "i") and address < 10:
            for a, value in self.signals(now).items():
                offset = a - start_address
                if 0 <= offset < len(registers):
                    registers[offset] = value
        elif table == "d" and address < 16:
            square = ((now % self.period_s) / self.period_s) < 0.5
            offset = 0 - start_address  # bits are packed 16 per register; di 0 and 1 live in register 0
            if 0 <= offset < len(registers):
                registers[offset] = (registers[offset] & ~3) | (1 if square else 2)
        return None

    def _device(self, unit: int) -> SimDevice:
        def registers(values: Mapping[int, int]) -> list[SimData]:
            return [SimData(start, values=run, datatype=DataType.REGISTERS) for start, run in _runs(values)]

        coils = [bool(a % 3 == 0) if a < 16 else False for a in range(100)]
        discrete = [False, True] + [a % 2 == 0 for a in range(2, 16)]
        if not self._standard:
            coils, discrete = [False] * 16, [False] * 16
        return SimDevice(
            unit,
            simdata=(
                [SimData(0, values=coils, datatype=DataType.BITS)],
                [SimData(0, values=discrete, datatype=DataType.BITS)],
                registers(self._holding),
                registers(self._inputs),
            ),
            action=functools.partial(self._action, unit),
        )

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if sending:
            return pdu
        unit = pdu.dev_id
        fc = pdu.function_code
        values: tuple[int, ...] = ()
        if fc in (6, 16):
            values = tuple(int(r) for r in getattr(pdu, "registers", ()))
        elif fc in (5, 15):
            values = tuple(int(bool(b)) for b in getattr(pdu, "bits", ()))
        elif fc == 22:
            values = (int(getattr(pdu, "and_mask", 0)), int(getattr(pdu, "or_mask", 0)))
        record = SimulatorRequest(unit, fc, getattr(pdu, "address", 0), getattr(pdu, "count", 0), values)
        with self._requests_lock:
            self._requests.append(record)
        if self._frozen or unit in self.silent_unit_ids:
            return None  # no answer: the client times out
        if unit not in self._devices or unit in self._gone_units:
            return _Refusal(pdu, ExcCodes.GATEWAY_NO_RESPONSE)
        if self._refused:
            code = self._refusal(record)
            if code is not None:
                return _Refusal(pdu, ExcCodes(code))
        if fc in (6, 16) and self.write_limits:
            for offset, value in enumerate(values):
                limits = self.write_limits.get(record.address + offset)
                if limits is not None and not limits[0] <= value <= limits[1]:
                    return _Refusal(pdu, ExcCodes.ILLEGAL_VALUE)  # a setpoint out of the device's range
        limit = self.max_read_bits if fc in (1, 2) else self.max_read_registers if fc in (3, 4) else None
        if limit is not None and record.count > limit:
            return _Refusal(pdu, ExcCodes(self.oversize_exception))
        return pdu

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> ModbusSimulator:
        """Listen (in a background thread) and return once clients can connect."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        if not self._devices:
            self._devices = {u: self._device(u) for u in self.unit_ids}
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        async def serve() -> None:
            try:
                server = _TcpServer(
                    self.max_connections,
                    list(self._devices.values()),
                    address=(self.host, self._port),
                    trace_pdu=self._trace_pdu,
                )
                await server.serve_forever(background=True)
                transport: Any = server.transport
                self._port = transport.sockets[0].getsockname()[1]
                self._server = server
            except BaseException as exc:  # reported to start()
                failure.append(exc)
            finally:
                ready.set()

        def run() -> None:
            asyncio.set_event_loop(loop)
            task = loop.create_task(serve())
            try:
                loop.run_forever()
            finally:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done() and t is not task]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        thread = threading.Thread(target=run, name=f"modbus-simulator-{self.host}:{self._port}", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        if not ready.wait(timeout_s) or failure:
            self._halt(timeout_s)
            if failure:
                raise RuntimeError(
                    f"modbus simulator failed to listen on {self.host}:{self._port}: {failure[0]}"
                )
            raise RuntimeError(f"modbus simulator did not start within {timeout_s} s")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close the listener and every connection (a later ``start()`` begins from the initial contents)."""
        self._halt(timeout_s)

    def _halt(self, timeout_s: float) -> None:
        loop, thread, server = self._loop, self._thread, self._server
        self._server = None
        if loop is not None and thread is not None and thread.is_alive():
            if server is not None:
                future = asyncio.run_coroutine_threadsafe(server.shutdown(), loop)  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):  # stopping anyway
                    future.result(timeout_s)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
        self._loop = self._thread = None

    def __enter__(self) -> ModbusSimulator:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- direct access ---------------------------------------------------------------------

    def _block(self, unit: int, table: str) -> tuple[int, list[int]]:
        server = self._server
        if server is None:
            raise RuntimeError("simulator not running")
        runtime: Any = server.context.devices[unit]  # type: ignore[union-attr]
        start, _count, registers, _flags = runtime.block[table]
        return start, registers

    def set_registers(self, address: int, values: Sequence[int], *, unit: int = 1, table: str = "h") -> None:
        """Overwrite existing holding (``table="h"``) or input (``"i"``) registers of a running unit."""
        start, registers = self._block(unit, table)
        for i, value in enumerate(values):
            offset = address + i - start
            if not 0 <= offset < len(registers) - 1 or not 0 <= value <= 0xFFFF:
                raise ValueError(f"register {address + i} = {value} cannot be set")
            registers[offset] = value

    def get_registers(self, address: int, count: int, *, unit: int = 1, table: str = "h") -> list[int]:
        """Current content of holding (``"h"``) or input (``"i"``) registers of a running unit."""
        start, registers = self._block(unit, table)
        return [registers[address + i - start] for i in range(count)]

    def get_bits(self, address: int, count: int, *, unit: int = 1, table: str = "c") -> list[bool]:
        """Current coils (``"c"``) or discrete inputs (``"d"``) of a running unit."""
        start, registers = self._block(unit, table)
        out = []
        for a in range(address, address + count):
            out.append(bool((registers[a // 16 - start] >> (a % 16)) & 1))
        return out

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"ModbusSimulator({self.host}:{self._port}, units={list(self.unit_ids)}, {state})"


class _Handler(ServerRequestHandler):
    """A client connection that the server closes at once when it has too many."""

    def __init__(self, owner: _TcpServer, *args: Any) -> None:
        super().__init__(owner, *args)  # type: ignore[no-untyped-call]
        self._limit = owner.max_connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        listener: Any = self.listener
        if (
            self._limit is not None
            and listener is not None
            and len(listener.active_connections) > self._limit
        ):
            transport.close()


class _TcpServer(ModbusTcpServer):
    def __init__(self, max_connections: int | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class _Refusal(ModbusPDU):
    """A request answered with an exception: to a unit it does not have (11), too large (3 or 2)."""

    def __init__(self, request: ModbusPDU, code: ExcCodes) -> None:
        super().__init__(dev_id=request.dev_id, transaction_id=request.transaction_id)
        self.function_code = request.function_code
        self.code = code

    async def datastore_update(self, context: Any, device_id: int) -> ModbusPDU:
        response = ExceptionResponse(self.function_code, self.code)
        response.dev_id = device_id
        return response


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run a simulator until interrupted (Ctrl-C) or for ``--duration`` seconds.

    Returns the exit status: 0, 2 for a bad argument (one ``error:`` line on stderr), 3 when the
    server cannot listen (e.g. the port is taken).
    """
    parser = _Parser(prog="python -m data_reader.modbus.simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=5020, help="TCP port, 0 for a free one (default 5020)")
    parser.add_argument("--units", default="1", help="comma-separated unit ids (default 1)")
    parser.add_argument("--period", type=float, default=10.0, help="signal period in seconds (default 10)")
    parser.add_argument("--bulk", type=int, default=0, help="bulk registers from 1000 (default 0)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay of every answer (default 0)")
    parser.add_argument(
        "--max-read-registers",
        type=int,
        default=None,
        help="refuse reading more registers at once (exception 3)",
    )
    parser.add_argument(
        "--max-read-bits",
        type=int,
        default=None,
        help="refuse reading more coils/inputs at once (exception 3)",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    try:
        args = parser.parse_args(argv)
        try:
            units = [int(u) for u in args.units.split(",") if u.strip()]
        except ValueError:
            raise _ArgumentError(f"--units must be comma-separated integers, got {args.units!r}") from None
        sim = ModbusSimulator(
            args.host,
            args.port,
            unit_ids=units,
            period_s=args.period,
            bulk=args.bulk,
            latency_s=args.latency_ms / 1000,
            max_read_registers=args.max_read_registers,
            max_read_bits=args.max_read_bits,
        )
    except (_ArgumentError, ConfigurationError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    try:
        sim.start()
    except RuntimeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 3
    sys.stdout.write(f"modbus simulator listening on {sim.host}:{sim.port} units {units}\n")
    sys.stdout.flush()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
