"""Modbus TCP reader: coils, discrete inputs, input and holding registers of PLCs, meters and gateways.

``ModbusDataReader`` reads one Modbus TCP connection (a device, or a gateway with several unit ids
behind it) with pymodbus's synchronous client, in the collector's reader thread. Requires the
``modbus`` extra (``pip install data-collector[modbus]``). One instance per connection: several
devices are several readers, each with its own ``reader_type`` and thread, so a slow or dead device
never delays another.

Configuration (constructor)::

    ModbusDataReader(
        host,                        # device or gateway address
        port=502,
        reader_type="modbus",        # the name Variable.reader_type refers to
        unit_id=1,                   # default unit (slave) id; an address may name another
        timeout_s=1.0,               # connect and response timeout
        min_interval_ms=None,        # minimum interval of this reader's variables
        max_gap=32,                  # registers of a hole bridged to merge requests (bits: 16x)
        max_registers=125,           # registers per read request (a device's lower limit is learnt)
        max_bits=2000,               # coils / discrete inputs per read request (likewise)
        reconnect_delay_s=0.1,       # first delay before reconnecting after a failed connect
        reconnect_delay_max_s=1.0,   # cap of the doubling reconnect delay
        unit_retry_s=1.0,            # first delay before retrying a unit that did not answer
        unit_retry_max_s=8.0,        # cap of the doubling unit retry delay
        logger=None,                 # defaults to logging.getLogger("data_reader.modbus")
    )

Addresses (``Variable.address``), case-insensitive::

    <table>:<register>[.<bit>][:<type>[:<order>]][;unit=N][;scale=X][;offset=Y][;encoding=E]

    table     coil | di | ir | hr   (also co/c, discrete/d, input/i, holding/h)
    register  0-based protocol address, 0..65535 (decimal or 0x hex); "40001" in a manual is hr:0
    .bit      bit 0 (LSB) .. 15 of an input/holding register, read as bool
    type      bool (coils, discrete inputs, bits), int16, uint16 (default), int32, uint32, int64,
              uint64, float16, float32, float64, string<N> (N registers, text cut at the first NUL)
    order     ABCD (default, big-endian), DCBA (little-endian), BADC (bytes swapped in each
              register), CDAB (registers swapped); AB/BA and ABCDEFGH/HGFEDCBA/BADCFEHG/GHEFCDAB
              are accepted aliases; strings take ABCD or BADC
    unit      unit id 0..255 for this variable (default: the reader's unit_id)
    scale     value = raw * scale + offset (integers stay integers if both are integers)

    hr:0                         uint16 holding register 0
    ir:10:int16;scale=0.1        input register 10, signed, tenths -> float
    hr:100:float32:CDAB          float in registers 100-101, low word first
    hr:200:uint64;unit=3         64-bit counter of unit 3 behind a gateway
    hr:40.3                      bit 3 of holding register 40
    coil:7 / di:12               single bits
    hr:300:string8               16-byte text in registers 300-307

Values become the variable's ``value_type``: ``bool``, ``int``, ``float``, ``str``, or ``bytes``
(raw string registers). Numbers convert to float and str, integers and bits to bool (non-zero);
floats do not become int or bool and strings do not become numbers: such a variable, like a bad
address, is rejected by ``DataCollector.start()`` with a :class:`ConfigurationError` naming the
variable id and address.

Requests: per tick the due variables of one unit and table are sorted and merged into as few
read requests as the protocol allows (125 registers, 2000 bits; less with ``max_registers`` /
``max_bits``), bridging holes of up to ``max_gap`` registers. A request refused with exception 2
(illegal data address) or 3 (illegal data value) is split and its halves retried in the same
tick, so no value is lost, and the reader learns why, per unit and table, so that later ticks
do not repeat the refusal:

- halves without a hole between them, both answered: the unit refuses requests that large (when
  it never answered one that large; else it refuses to read across the point between the halves,
  and requests no longer span it). Its request limit is then found by bisection between the
  largest count answered and the smallest refused, the requests not sent yet being planned again
  at each step: usually within the first tick, at most a few. From then on a tick sends
  ``ceil(span / limit)`` requests for a contiguous span, none refused. The limit is logged once
  (INFO) and shown in ``stats.request_limits``, e.g. ``{(1, "hr"): 60}``;
- halves with a bridged hole between them: when the unit never answered a request that large,
  one read of the hole itself tells a size limit (answered) from missing registers (refused);
  missing registers are not bridged any more;
- a single value refused: it is read alone from then on, BAD with the exception text.

So a hole costs at most two refused requests once, a device's request limit a few refused
requests once. A failed request marks only its own variables BAD. :meth:`forget_splits`
forgets what was learnt (after the device's configuration or firmware changed).

Faults: a refused or dropped connection marks the tick's variables BAD with the error text;
reconnection waits ``reconnect_delay_s`` doubling up to ``reconnect_delay_max_s`` between failed
connects, counted from the start of the tick that failed (a tick that starts within 5% of the
delay, at least 5 ms, before its end counts as after it), so with intervals of at least that cap
the first tick after the device listens again reads GOOD.

A unit that does not answer a request within ``timeout_s`` is *silent*: its variables are BAD
for that tick, and after it the ticks no longer wait for it: its variables are BAD at once, with
the reason (``unit 3 not answering (timeout 1 s); next retry in 2.0 s``), while a thread of the
reader retries it with one small read (one register or bit it was read from) on a second
connection to the same host and port: ``unit_retry_s`` after it fell silent, then after each
unanswered retry twice as long, up to ``unit_retry_max_s``. When a retry is answered, the unit
is polled with the others again from the next tick. So a silent unit behind a gateway costs the
live units one timeout once, when it falls silent, and nothing after; units that answered their
last poll are polled first. Two units falling silent in the same tick mean the link is dead: the
connection is closed, the rest of that tick is BAD, and the next tick reconnects (a tick
therefore waits for at most two timeouts). A gateway answering exception 10 or 11 for a retry
leaves its unit silent. When a connect succeeds after failed ones (the device restarted), every
silent unit is retried at once. When the device refuses the second connection (twice in a row
while the first stays up: devices that serve one client at a time), the ticks retry silent
units themselves, at most one per tick, after every live unit was read, on the same cadence;
only those ticks wait for the timeout. A silent unit no tick asked for in 60 s is forgotten.
The retry thread runs only while a unit is silent (one per reader, named
``modbus-retry-<host>:<port>``); ``close()`` ends it, waking a retry waiting for its answer.

Logging: the reader logs state changes once each on ``logger``: the connection (lost, failing,
back) and each unit (silent, answering again, retried in the ticks). pymodbus itself logs every
unanswered request, retries included, at ERROR level on the ``pymodbus`` logger; raise that
logger's level if a silent unit's timeouts should not reach your log.

Statistics: :attr:`ModbusDataReader.stats` (:class:`ModbusReaderStats`) counts requests of the
ticks, exception responses, timeouts, connects and their failures, disconnects, splits, learnt
holes and isolated values, retries of silent units (``probes``), the units silent now and the
request limits learnt (``request_limits``).

Writes: :meth:`ModbusDataReader.write` writes coils (function 5), holding registers (6 or 16)
and register bits (mask write, function 22), encoded as they are read (scale and offset undone).
It may be called from any thread; the client is shared under a lock.

Example (run ``python -m data_reader.modbus.simulator --port 5020`` first)::

    import logging
    from data_collector import DataCollector, DataCollectionContext, Variable
    from data_reader.modbus import ModbusDataReader
    from data_writer.csv import CsvFileDataWriter

    reader = ModbusDataReader("127.0.0.1", 5020, timeout_s=0.5)
    variables = [
        Variable(1, "hr:0:float32", "float", "modbus", interval_ms=500),      # sine
        Variable(2, "hr:240:float32", "float", "modbus"),                     # constant -1234.5625
        Variable(3, "hr:9.0", "bool", "modbus"),                              # square wave
    ]
    with DataCollector(logging.getLogger("dc"), [reader], [CsvFileDataWriter("modbus.csv")]) as c:
        c.start(DataCollectionContext(1, variables, duration_s=5))
        ...
"""

from __future__ import annotations

import logging
import math
import operator
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from data_collector import (
    BUILTIN_VALUE_TYPES,
    CollectedVariables,
    ConfigurationError,
    DataReader,
    Quality,
    ReaderError,
    Variable,
)

from ._address import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    SYNTAX,
    AddressError,
    ModbusAddress,
    Table,
    compile_reader,
    encode_value,
    parse_address,
)
from ._client import TcpClient
from ._plan import (
    RAW,
    REGISTER_BIT,
    STRUCT,
    Entry,
    Request,
    SplitMemory,
    plan_requests,
    split_request,
)

__all__ = ["ModbusDataReader", "ModbusReaderStats"]

_GOOD = Quality.GOOD
_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
_SPLIT_CODES = frozenset({2, 3})
_GATEWAY_CODES = frozenset({10, 11})  # the gateway answers for a unit that did not
_MAX_PLANS = 32  # cached plans (one per distinct set of due variables)
_TABLE_ORDER = {Table.COIL: 0, Table.DISCRETE_INPUT: 1, Table.INPUT_REGISTER: 2, Table.HOLDING_REGISTER: 3}
_TABLE_NAMES = {
    Table.COIL: "coil",
    Table.DISCRETE_INPUT: "di",
    Table.INPUT_REGISTER: "ir",
    Table.HOLDING_REGISTER: "hr",
}

# outcomes of one request
_DATA, _REFUSED, _TIMEOUT, _LOST = range(4)

# A tick this close to the end of the reconnect delay counts as after it: the delay is measured
# from the start of the tick that failed, and ticks start a little early or late.
_SLACK_FRACTION = 0.05
_SLACK_MIN_S = 0.005
# A silent unit that no tick asked for during this long is forgotten (no more retries).
_FORGET_SILENT_S = 60.0
# Second connections that must fail in a row, the main one staying up, before the ticks retry.
_REFUSALS = 2
# Largest timeout or delay accepted (one day): larger ones overflow socket and wait timeouts.
_MAX_DELAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class ModbusReaderStats:
    """Counters of one :class:`ModbusDataReader` since it was built."""

    requests: int
    exception_responses: int
    timeouts: int
    connects: int
    connect_failures: int
    disconnects: int
    splits: int
    remembered_holes: int
    isolated_spans: int
    probes: int = 0  # requests that retried a silent unit (on the second connection or in a tick)
    silent_units: int = 0  # units not answering now, retried on their own cadence
    # request limits learnt from refusals, {(unit, "hr" | "ir" | "coil" | "di"): registers or bits}
    request_limits: Mapping[tuple[int, str], int] = field(default_factory=dict)


@dataclass(slots=True)
class _Silent:
    """A unit that did not answer: retried by one small read of (table, address) on its own cadence."""

    table: Table
    address: int
    delay: float  # the current retry delay (doubles up to unit_retry_max_s)
    next_probe: float  # time.monotonic() of the next retry
    wanted: float  # time.monotonic() of the last tick that had variables of this unit


@dataclass(slots=True)
class _Plan:
    variables: list[Variable]
    version: int
    invalid: list[tuple[int, str]]
    units: dict[int, list[Request]]
    planned: list[int]  # indexes of the items that have a request


def _slack(delay: float) -> float:
    """How early a tick may be and still count as at the end of ``delay``."""
    return max(_SLACK_MIN_S, _SLACK_FRACTION * delay)


def _check_number(
    name: str, value: object, *, minimum: float, maximum: float = math.inf, integer: bool = False
) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int if integer else int | float)
    if not ok or not math.isfinite(float(value)) or not minimum <= float(value) <= maximum:  # type: ignore[arg-type]
        kind = "an int" if integer else "a number"
        limit = f"{minimum:g}..{maximum:g}" if math.isfinite(maximum) else f">= {minimum:g}"
        raise ConfigurationError(f"ModbusDataReader: {name} must be {kind} {limit}, got {value!r}")


class ModbusDataReader(DataReader):
    """Reads coils, discrete inputs and registers of one Modbus TCP connection (see the module doc)."""

    reader_type = "modbus"
    value_types = frozenset({"bytes"})

    def __init__(
        self,
        host: str,
        port: int = 502,
        *,
        reader_type: str = "modbus",
        unit_id: int = 1,
        timeout_s: float = 1.0,
        min_interval_ms: int | None = None,
        max_gap: int = 32,
        max_registers: int = MAX_READ_REGISTERS,
        max_bits: int = MAX_READ_BITS,
        reconnect_delay_s: float = 0.1,
        reconnect_delay_max_s: float = 1.0,
        unit_retry_s: float = 1.0,
        unit_retry_max_s: float = 8.0,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(reader_type=reader_type, min_interval_ms=min_interval_ms)
        if not isinstance(host, str) or not host.strip():
            raise ConfigurationError(f"ModbusDataReader: host must be a non-empty str, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigurationError(f"ModbusDataReader: port must be an int 1..65535, got {port!r}")
        _check_number("unit_id", unit_id, minimum=0, integer=True)
        if unit_id > 255:
            raise ConfigurationError(f"ModbusDataReader: unit_id must be 0..255, got {unit_id!r}")
        _check_number("timeout_s", timeout_s, minimum=0.001, maximum=_MAX_DELAY_S)
        _check_number("max_gap", max_gap, minimum=0, integer=True)
        _check_number("max_registers", max_registers, minimum=1, integer=True)
        if max_registers > MAX_READ_REGISTERS:
            raise ConfigurationError(f"ModbusDataReader: max_registers must be 1..125, got {max_registers!r}")
        _check_number("max_bits", max_bits, minimum=1, integer=True)
        if max_bits > MAX_READ_BITS:
            raise ConfigurationError(f"ModbusDataReader: max_bits must be 1..2000, got {max_bits!r}")
        _check_number("reconnect_delay_s", reconnect_delay_s, minimum=0, maximum=_MAX_DELAY_S)
        _check_number(
            "reconnect_delay_max_s", reconnect_delay_max_s, minimum=reconnect_delay_s, maximum=_MAX_DELAY_S
        )
        _check_number("unit_retry_s", unit_retry_s, minimum=0.01, maximum=_MAX_DELAY_S)
        _check_number("unit_retry_max_s", unit_retry_max_s, minimum=unit_retry_s, maximum=_MAX_DELAY_S)
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.timeout_s = float(timeout_s)
        self.max_gap = max_gap
        self.max_registers = max_registers
        self.max_bits = max_bits
        self.reconnect_delay_s = float(reconnect_delay_s)
        self.reconnect_delay_max_s = float(reconnect_delay_max_s)
        self.unit_retry_s = float(unit_retry_s)
        self.unit_retry_max_s = float(unit_retry_max_s)
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._client: TcpClient | None = None
        self._addresses: dict[str, ModbusAddress] = {}
        self._readers: dict[tuple[str, str], tuple[ModbusAddress, Callable[[Any], Any] | None]] = {}
        self._memory = SplitMemory()
        self._plans: dict[tuple[int, int, int], _Plan] = {}
        self._answered: set[int] = set()  # units whose last poll was answered: polled first
        # Silent units, the retry thread and its state, under _silent_cond (never held across I/O).
        self._silent_cond = threading.Condition(threading.Lock())
        self._silent: dict[int, _Silent] = {}
        self._prober: threading.Thread | None = None
        self._probe_client: TcpClient | None = None
        self._generation = 0  # bumped by close(): a retry thread of an older generation ends
        self._inline_probes = False  # the device refused a second connection: retry in the ticks
        self._refusals = 0  # second connections failed in a row while the main one stayed up
        self._refusal_connects = 0  # self._connects at the first of them
        self._probes = 0  # retries sent by the retry thread (written by that thread only)
        self._inline_retries = 0  # retries made in the read thread (written by that thread only)
        self._backoff = 0.0
        self._next_connect = 0.0
        self._connect_error = ""
        self._ever_connected = False
        self._ticks = 0
        self._requests = 0
        self._exception_responses = 0
        self._timeouts = 0
        self._connects = 0
        self._connect_failures = 0
        self._disconnects = 0
        self._splits = 0
        self._failure = ""  # the error text of the last request that timed out or lost the link
        self._logged_limits: dict[tuple[int, Table], int] = {}

    # -- configuration ---------------------------------------------------------------------

    def _address(self, variable: Variable) -> ModbusAddress:
        addr = self._addresses.get(variable.address)
        if addr is None:
            try:
                addr = parse_address(variable.address)
            except AddressError as exc:
                raise ConfigurationError(
                    f"variable {variable.id} address {variable.address!r}: {exc} (syntax: {SYNTAX})"
                ) from None
            self._addresses[variable.address] = addr
        return addr

    def _reader_of(self, variable: Variable) -> tuple[ModbusAddress, Callable[[Any], Any] | None]:
        key = (variable.address, variable.value_type)
        found = self._readers.get(key)
        if found is None:
            addr = self._address(variable)
            if variable.value_type not in BUILTIN_VALUE_TYPES | self.value_types:
                known = sorted(BUILTIN_VALUE_TYPES | self.value_types)
                raise ConfigurationError(
                    f"variable {variable.id} address {variable.address!r}: unknown value_type "
                    f"{variable.value_type!r}; known: {known}"
                )
            try:
                convert = compile_reader(addr, variable.value_type)
            except AddressError as exc:
                raise ConfigurationError(
                    f"variable {variable.id} address {variable.address!r}: {exc}"
                ) from None
            limit = self.max_bits if addr.table.is_bit else self.max_registers
            if addr.width > limit:
                raise ConfigurationError(
                    f"variable {variable.id} address {variable.address!r}: {addr.type.name} needs "
                    f"{addr.width} registers, more than max_registers={limit} of this reader"
                )
            found = self._readers[key] = (addr, convert)
        return found

    def validate_variable(self, variable: Variable) -> None:
        """Parse the address and check that its value converts to the variable's value_type."""
        self._reader_of(variable)

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Create the client; the connection is made by the first read (never raises for a dead device)."""
        with self._lock:
            if self._client is None:
                self._client = TcpClient(self.host, self.port, self.timeout_s)

    def close(self) -> None:
        """Close the connection and end the retry thread of silent units. A later read reconnects.

        Returns within about ``timeout_s`` (a retry waiting for its answer is woken at once).
        """
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None
            self._answered.clear()
        with self._silent_cond:
            self._generation += 1
            self._silent.clear()
            self._inline_probes = False
            thread, self._prober = self._prober, None
            probe_client = self._probe_client
            self._silent_cond.notify_all()
        if probe_client is not None:
            probe_client.abort()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout_s + 1.0)
            if thread.is_alive():  # pragma: no cover - a connect that outlives its timeout
                self._log.debug("modbus %s:%s: retry thread still ending", self.host, self.port)

    @property
    def connected(self) -> bool:
        client = self._client
        return client is not None and client.connected

    @property
    def stats(self) -> ModbusReaderStats:
        return ModbusReaderStats(
            requests=self._requests,
            exception_responses=self._exception_responses,
            timeouts=self._timeouts,
            connects=self._connects,
            connect_failures=self._connect_failures,
            disconnects=self._disconnects,
            splits=self._splits,
            remembered_holes=self._memory.hole_count,
            isolated_spans=self._memory.alone_count,
            probes=self._probes + self._inline_retries,
            silent_units=len(self._silent),
            request_limits=self._request_limits(),
        )

    def forget_splits(self) -> None:
        """Forget the holes, boundaries, values and request sizes the device refused (e.g. after
        its configuration or firmware changed)."""
        with self._lock:
            self._memory.clear()
            self._logged_limits.clear()

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}, unit_id={self.unit_id}"
        return f"ModbusDataReader(reader_type={self.reader_type!r}, {where})"

    # -- connection ------------------------------------------------------------------------

    def _ensure_connected(self, now: float | None = None, *, force: bool = False) -> bool:
        """Connect unless connected or waiting out the reconnect delay; ``now``: the tick's start."""
        client = self._client
        if client is None:
            client = self._client = TcpClient(self.host, self.port, self.timeout_s)
        if client.connected:
            return True
        if now is None:
            now = time.monotonic()
        if not force and now + _slack(self._backoff) < self._next_connect:
            return False
        if client.connect():
            self._connects += 1
            if self._backoff or self._connect_error:
                self._log.info("modbus %s:%s (%s): connected again", self.host, self.port, self.reader_type)
                self._retry_silent_units_now()  # the device may have restarted: retry its silent units
            elif not self._ever_connected:
                self._log.debug("modbus %s:%s (%s): connected", self.host, self.port, self.reader_type)
            self._ever_connected = True
            self._backoff = 0.0
            self._connect_error = ""
            return True
        self._connect_failures += 1
        first = not self._connect_error
        self._connect_error = f"cannot connect to {self.host}:{self.port}: {client.last_error}"
        if self._backoff == 0.0:
            self._backoff = self.reconnect_delay_s
        else:
            self._backoff = min(self._backoff * 2, self.reconnect_delay_max_s)
        # from the start of this tick (not the end of the failed connect), so the tick one delay
        # later tries again
        self._next_connect = now + self._backoff
        log = self._log.warning if first else self._log.debug
        log("modbus %s (%s); next attempt in %.2f s", self._connect_error, self.reader_type, self._backoff)
        return False

    def _disconnect(self, reason: str) -> None:
        """Close a connection that failed in use (pymodbus may have closed the socket already)."""
        if self._client is not None:
            self._client.close()
        self._disconnects += 1
        self._log.warning(
            "modbus %s:%s (%s): connection closed: %s", self.host, self.port, self.reader_type, reason
        )
        self._next_connect = 0.0  # a connection that worked is retried at the next tick

    # -- reading ---------------------------------------------------------------------------

    def _get_plan(self, batch: CollectedVariables) -> _Plan:
        """The plan of this set of due variables: cached (ticks repeat a few due sets), else built."""
        current = batch.variables
        n = len(current)
        key = (n, id(current[0]), id(current[-1])) if n else (0, 0, 0)
        plan = self._plans.get(key)
        if (
            plan is not None
            and plan.version == self._memory.version
            and len(plan.variables) == n
            and all(map(operator.is_, plan.variables, current))
        ):
            return plan
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        variables = list(current)
        invalid: list[tuple[int, str]] = []
        groups: dict[tuple[int, Table], list[Entry]] = {}
        for index, variable in enumerate(variables):
            try:
                addr, convert = self._reader_of(variable)
            except ConfigurationError as exc:
                invalid.append((index, str(exc)))
                continue
            unit = addr.unit if addr.unit is not None else self.unit_id
            groups.setdefault((unit, addr.table), []).append(Entry(index, addr, convert))
        units: dict[int, list[Request]] = {}
        planned: list[int] = []
        for (unit, table), entries in sorted(
            groups.items(), key=lambda kv: (kv[0][0], _TABLE_ORDER[kv[0][1]])
        ):
            units.setdefault(unit, []).extend(self._plan_group(unit, table, entries))
            planned.extend(e.index for e in entries)
        plan = self._plans[key] = _Plan(variables, self._memory.version, invalid, units, planned)
        return plan

    def read(self, variables: CollectedVariables) -> None:
        """Read every item: GOOD with its value, or BAD with the error text. Never raises."""
        items = variables  # the batch's items, addressed by index
        now = time.monotonic()
        with self._lock:
            self._ticks += 1
            plan = self._get_plan(items)
            for index, message in plan.invalid:
                items[index].set_bad(message)
            if not plan.units:
                return
            if not self._ensure_connected(now):
                if self._connect_error:
                    wait = max(0.0, self._next_connect - now)
                    message = f"{self._connect_error} (next attempt in {wait:.2f} s)"
                else:  # pragma: no cover - defensive
                    message = f"not connected to {self.host}:{self.port}"
                for index in plan.planned:
                    items[index].set_bad(message)
                return
            self._execute(plan, items, now)
            if self._memory.version != plan.version:
                self._report_limits()

    def _execute(self, plan: _Plan, items: CollectedVariables, now: float) -> None:
        units = plan.units
        with self._silent_cond:
            silent: dict[int, tuple[float, float]] = {}
            for unit, entry in self._silent.items():
                if unit in units:
                    entry.wanted = now
                    silent[unit] = (entry.next_probe, entry.delay)
            inline = self._inline_probes
            if silent and self._prober is None and not inline:
                self._start_retry_thread()  # (it ends when idle; a failed one is replaced)
        # units that answered their last poll first, then the others (new, or back from silence)
        order = sorted((u for u in units if u not in silent), key=lambda u: u not in self._answered)
        timeouts = 0
        lost = False
        for position, unit in enumerate(order):
            requests = units[unit]
            outcome, failed, rest = self._run_all(requests, items)
            if failed is None:
                self._answered.add(unit)
                continue
            later = [r for u in order[position + 1 :] for r in units[u]]
            if outcome == _LOST:
                self._fail(rest + later, items, self._failure or "connection lost")
                lost = True
                break
            self._answered.discard(unit)
            self._fail(rest, items, f"unit {unit} did not answer within {self.timeout_s:g} s")
            self._go_silent(unit, failed)
            timeouts += 1
            if timeouts == 2:
                self._disconnect(f"two units did not answer within {self.timeout_s:g} s in one tick")
                self._fail(later, items, f"connection to {self.host}:{self.port} closed: no answer")
                lost = True
                break
        if not silent:
            return
        retry: int | None = None
        if inline and not lost and not timeouts:
            # the device accepts one connection only: retry the most overdue silent unit here,
            # after every live unit was read, at most one per tick
            due = [u for u, (at, delay) in silent.items() if now + _slack(delay) >= at]
            if due:
                retry = min(due, key=lambda u: silent[u][0])
        for unit, (at, _delay) in silent.items():
            requests = units[unit]
            if unit == retry:
                self._retry_inline(unit, requests, items)
            else:
                self._fail(requests, items, self._silent_message(unit, at - now))

    def _run_all(
        self, requests: Sequence[Request], items: CollectedVariables
    ) -> tuple[int, Request | None, list[Request]]:
        """Run ``requests`` in order until one times out or loses the link.

        Returns (outcome, the request that timed out or lost the link, the requests not run):
        _DATA when every value was read, _REFUSED when some were refused, else _TIMEOUT or
        _LOST. When something is learnt on the way (a hole, a size limit...), the requests not
        sent yet are planned again with it, so a tick stops repeating what was just refused.
        """
        memory = self._memory
        pending = list(requests)
        version = memory.version
        result = _DATA
        i = 0
        while i < len(pending):
            if memory.version != version:
                pending[i:] = self._replan(pending[i:])
                version = memory.version
            request = pending[i]
            i += 1
            outcome = self._run(request, items)
            if outcome in (_TIMEOUT, _LOST):
                return outcome, request, pending[i:]
            if outcome == _REFUSED:
                result = _REFUSED
        return result, None, []

    def _replan(self, requests: list[Request]) -> list[Request]:
        """Plan the values of ``requests`` again with what the memory knows now (same order of tables)."""
        groups: dict[tuple[int, Table], list[Entry]] = {}
        for request in requests:
            groups.setdefault((request.unit, request.table), []).extend(request.entries)
        planned: list[Request] = []
        for (unit, table), entries in groups.items():
            planned += self._plan_group(unit, table, entries)
        return planned

    def _plan_group(self, unit: int, table: Table, entries: list[Entry]) -> list[Request]:
        cap = self.max_bits if table.is_bit else self.max_registers
        gap = self.max_gap * 16 if table.is_bit else self.max_gap
        limit = self._memory.limit(unit, table, cap)
        return plan_requests(unit, table, entries, limit=limit, max_gap=gap, memory=self._memory)

    def _silent_message(self, unit: int, wait: float) -> str:
        when = f"next retry in {wait:.1f} s" if wait > 0 else "retrying now"
        return f"unit {unit} not answering (timeout {self.timeout_s:g} s); {when}"

    @staticmethod
    def _fail(requests: Sequence[Request], items: CollectedVariables, message: str) -> None:
        for request in requests:
            for e in request.entries:
                items[e.index].set_bad(message)

    # -- silent units ------------------------------------------------------------------------

    def _go_silent(self, unit: int, request: Request) -> None:
        """``unit`` did not answer ``request``: stop polling it in the ticks; retry it on its own cadence."""
        delay = self.unit_retry_s
        with self._silent_cond:
            now = time.monotonic()
            self._silent[unit] = _Silent(request.table, request.start, delay, now + delay, now)
            inline = self._inline_probes
            self._start_retry_thread()
        self._log.warning(
            "modbus %s:%s (%s): unit %s did not answer within %g s; its variables are BAD without "
            "waiting until it answers a retry (every %g..%g s%s)",
            self.host,
            self.port,
            self.reader_type,
            unit,
            self.timeout_s,
            self.unit_retry_s,
            self.unit_retry_max_s,
            ", in the read thread after the live units" if inline else ", on a second connection",
        )

    def _start_retry_thread(self) -> None:
        """Under _silent_cond: make sure the retry thread runs when it has work; wake it."""
        if self._silent and not self._inline_probes and self._prober is None:
            thread = threading.Thread(
                target=self._retry_loop,
                args=(self._generation,),
                name=f"modbus-retry-{self.host}:{self.port}",
                daemon=True,
            )
            self._prober = thread
            thread.start()
        self._silent_cond.notify_all()

    def _answers_again(self, unit: int, how: str) -> None:
        self._log.info(
            "modbus %s:%s (%s): unit %s answers again (%s); polled with the others",
            self.host,
            self.port,
            self.reader_type,
            unit,
            how,
        )

    def _back_off(self, entry: _Silent) -> None:
        """Under _silent_cond: the retry was not answered; the next one waits twice as long (capped)."""
        entry.delay = min(entry.delay * 2, self.unit_retry_max_s)
        entry.next_probe = time.monotonic() + entry.delay

    def _retry_silent_units_now(self) -> None:
        """Retry every silent unit at once, on a second connection again (after a device restart)."""
        with self._silent_cond:
            self._inline_probes = False
            self._refusals = 0
            now = time.monotonic()
            for entry in self._silent.values():
                entry.delay = self.unit_retry_s
                entry.next_probe = now
            self._start_retry_thread()

    def _retry_inline(self, unit: int, requests: list[Request], items: CollectedVariables) -> None:
        """Retry a silent unit in the tick (only when the device refuses a second connection)."""
        self._inline_retries += 1
        outcome, failed, rest = self._run_all(requests, items)
        if failed is None:
            with self._silent_cond:
                self._silent.pop(unit, None)
            self._answered.add(unit)
            self._answers_again(unit, "retried in the read thread")
            return
        if outcome == _LOST:
            self._fail(rest, items, self._failure or "connection lost")
            return
        wait = 0.0
        with self._silent_cond:
            entry = self._silent.get(unit)
            if entry is not None:
                self._back_off(entry)
                wait = entry.delay
        self._fail(rest, items, self._silent_message(unit, wait))
        self._log.debug("modbus %s:%s: unit %s still silent", self.host, self.port, unit)

    def _retry_loop(self, generation: int) -> None:
        """The retry thread: one small read per silent unit when due, on a connection of its own.

        Ends when no unit is silent any more, when the device refuses a second connection (the
        ticks then retry), or when close() bumps the generation.
        """
        try:
            self._retry_units(generation)
        except Exception:  # pragma: no cover - a bug: say so; the next silent unit starts a new thread
            self._log.exception("modbus %s:%s: the retry thread failed", self.host, self.port)
        finally:
            with self._silent_cond:
                if self._prober is threading.current_thread():
                    self._prober = None

    def _retry_units(self, generation: int) -> None:
        cond = self._silent_cond
        me = threading.current_thread()
        while True:
            with cond:
                while True:
                    now = time.monotonic()
                    for gone in [u for u, e in self._silent.items() if now - e.wanted > _FORGET_SILENT_S]:
                        del self._silent[gone]  # no longer read: polled afresh if it is read again
                    if generation != self._generation or not self._silent or self._inline_probes:
                        if self._prober is me:
                            self._prober = None
                        return
                    unit, entry = min(self._silent.items(), key=lambda kv: kv[1].next_probe)
                    wait = entry.next_probe - time.monotonic()
                    if wait <= 0:
                        break
                    cond.wait(wait)
                client = self._probe_client = TcpClient(self.host, self.port, self.timeout_s)
                connects, main_up = self._connects, self.connected
            try:
                outcome, detail = self._probe(client, generation, unit, entry.table, entry.address)
            finally:
                client.close()
            switched = False
            with cond:
                self._probe_client = None
                if generation != self._generation:
                    if self._prober is me:
                        self._prober = None
                    return
                if self._silent.get(unit) is not entry:
                    continue  # forgotten meanwhile
                if outcome == _LOST and main_up and self.connected and connects == self._connects:
                    # a second connection failed while the main one stayed up
                    if self._refusals == 0:
                        self._refusal_connects = connects
                    self._refusals += 1
                    if self._refusals >= _REFUSALS and self._refusal_connects == connects:
                        # the device accepts one connection only: the ticks retry silent units
                        self._inline_probes = switched = True
                else:
                    self._refusals = 0
                if outcome == _DATA:
                    del self._silent[unit]
                else:
                    self._back_off(entry)
            if outcome == _DATA:
                self._answers_again(unit, "retried on a second connection")
            elif switched:
                self._log.warning(
                    "modbus %s:%s (%s): a second connection failed (%s); silent units are retried in "
                    "the read thread after the live units",
                    self.host,
                    self.port,
                    self.reader_type,
                    detail,
                )
            else:
                self._log.debug("modbus %s:%s: unit %s still silent (%s)", self.host, self.port, unit, detail)

    def _probe(
        self, client: TcpClient, generation: int, unit: int, table: Table, address: int
    ) -> tuple[int, str]:
        """One read of one register or bit of ``unit``: _DATA (answered), _TIMEOUT or _LOST."""
        if not client.connect():
            return _LOST, client.last_error
        if generation != self._generation:
            return _LOST, "reader closed"
        self._probes += 1
        try:
            response = self._call(client, table, address, 1, unit)
        except ModbusIOException as exc:
            return (_TIMEOUT if "No response" in str(exc) else _LOST), str(exc)
        except Exception as exc:  # ConnectionException, OSError, or a garbled answer
            return _LOST, f"{type(exc).__name__}: {exc}"
        if response.isError() and response.exception_code in _GATEWAY_CODES:
            return _TIMEOUT, f"exception {response.exception_code} ({_EXCEPTIONS[response.exception_code]})"
        return _DATA, ""

    # -- requests ----------------------------------------------------------------------------

    @staticmethod
    def _call(client: TcpClient, table: Table, start: int, count: int, unit: int) -> ModbusPDU:
        if table is Table.HOLDING_REGISTER:
            return client.read_holding_registers(start, count=count, device_id=unit)
        if table is Table.INPUT_REGISTER:
            return client.read_input_registers(start, count=count, device_id=unit)
        if table is Table.COIL:
            return client.read_coils(start, count=count, device_id=unit)
        return client.read_discrete_inputs(start, count=count, device_id=unit)

    def _run(self, request: Request, items: CollectedVariables) -> int:
        """Execute one request (splitting it when refused); return its outcome.

        A request at least as large as one the unit refused for its size is not sent: its values
        are planned again within the unit's limit and those requests run instead.
        """
        size = self._memory.size(request.unit, request.table)
        if (
            size is not None
            and size.refused is not None
            and request.count >= size.refused
            and len(request.entries) > 1
        ):
            parts = self._plan_group(request.unit, request.table, request.entries)
            if len(parts) > 1:
                outcome, _failed, rest = self._run_all(parts, items)
                self._fail(rest, items, self._failure)
                return outcome
        client = self._client
        assert client is not None
        self._requests += 1
        try:
            response = self._call(client, request.table, request.start, request.count, request.unit)
        except ModbusIOException as exc:
            text = str(exc)
            if "No response" in text:
                self._timeouts += 1
                self._failure = (
                    f"no answer from unit {request.unit} within {self.timeout_s:g} s "
                    f"reading {request.describe()}"
                )
                self._fail([request], items, self._failure)
                return _TIMEOUT
            self._disconnect(text)
            self._failure = f"reading {request.describe()}: {text}"
            self._fail([request], items, self._failure)
            return _LOST
        except (ConnectionException, ModbusException, OSError) as exc:
            self._failure = f"connection to {self.host}:{self.port} lost reading {request.describe()}: {exc}"
            self._disconnect(str(exc))
            self._fail([request], items, self._failure)
            return _LOST
        except Exception as exc:  # unexpected: resynchronise the connection
            self._failure = f"reading {request.describe()} failed: {type(exc).__name__}: {exc}"
            self._disconnect(self._failure)
            self._fail([request], items, self._failure)
            return _LOST
        if response.isError():
            return self._refused(request, items, response.exception_code)
        try:
            self._decode(request, response, items)
        except Exception as exc:  # a malformed or short response: this request only
            self._fail(
                [request], items, f"reading {request.describe()}: bad response: {type(exc).__name__}: {exc}"
            )
            return _REFUSED
        self._memory.note_answered(
            request.unit, request.table, request.count, request.limit if request.full else 0
        )
        return _DATA

    def _refused(self, request: Request, items: CollectedVariables, code: int) -> int:
        self._exception_responses += 1
        if not request.entries:  # a test read of a hole (see _learn)
            return _REFUSED
        if code in _SPLIT_CODES:
            halves = split_request(request)
            if halves is not None:
                self._splits += 1
                left, right, hole = halves
                refusals = self._exception_responses
                first = self._run(left, items)
                if first in (_TIMEOUT, _LOST):
                    self._fail([right], items, self._failure)
                    return first
                second = self._run(right, items)
                if second in (_TIMEOUT, _LOST):
                    return second
                if first == _DATA and second == _DATA:
                    direct = refusals == self._exception_responses  # each half answered at once
                    return self._learn(request, left.end, hole, direct, items)
                return _REFUSED
            self._memory.add_alone(request.unit, request.table, request.start, request.end)
        name = _EXCEPTIONS.get(code, "unknown exception")
        self._fail(
            [request],
            items,
            f"unit {request.unit} refused reading {request.describe()}: exception {code} ({name})",
        )
        return _REFUSED

    def _learn(
        self,
        request: Request,
        middle: int,
        hole: tuple[int, int] | None,
        direct: bool,
        items: CollectedVariables,
    ) -> int:
        """``request`` was refused, but its two parts (split at ``middle``) read all its values.

        Why? Parts that touch cover every address of the request, so either the unit refuses
        requests that large (when no request that large was ever answered) or it refuses to read
        across ``middle`` (a boundary, remembered when each part was answered at once). Parts
        with a ``hole`` between them: the hole's addresses do not exist, or (when no request
        that large was ever answered) the request was too large: one read of the hole tells.
        Returns the outcome (_DATA, or what the test read of a hole met: _TIMEOUT, _LOST).
        """
        unit, table, count = request.unit, request.table, request.count
        size = self._memory.size(unit, table)
        larger = size is None or count > size.answered
        if hole is None:
            if larger:
                self._memory.refuse_size(unit, table, count)
            elif direct and self._memory.add_cut(unit, table, middle):
                self._log.info(
                    "modbus %s:%s (%s): unit %s refused reading %s across %s..%s; not any more",
                    self.host,
                    self.port,
                    self.reader_type,
                    unit,
                    table.plural,
                    middle - 1,
                    middle,
                )
            return _DATA
        if larger:
            outcome = self._run(Request(unit, table, hole[0], hole[1], []).compile(), items)
            if outcome == _DATA:
                self._memory.refuse_size(unit, table, count)
                return _DATA
            if outcome != _REFUSED:
                return outcome
        if self._memory.add_hole(unit, table, *hole):
            self._log.info(
                "modbus %s:%s (%s): unit %s refused %s %s..%s; not bridging them any more",
                self.host,
                self.port,
                self.reader_type,
                unit,
                table.plural,
                hole[0],
                hole[1] - 1,
            )
        return _DATA

    def _report_limits(self) -> None:
        """Log each request limit learnt, once (again only if it changes)."""
        for (unit, table), size in self._memory.sizes().items():
            if not size.settled:
                continue
            cap = self.max_bits if table.is_bit else self.max_registers
            limit = size.limit(cap)
            if self._logged_limits.get((unit, table)) == limit:
                continue
            self._logged_limits[(unit, table)] = limit
            self._log.info(
                "modbus %s:%s (%s): unit %s refuses reading %s %s at once (smaller requests are "
                "answered); reading at most %s per request from now on",
                self.host,
                self.port,
                self.reader_type,
                unit,
                size.refused,
                table.plural,
                limit,
            )

    def _request_limits(self) -> dict[tuple[int, str], int]:
        """The request limits learnt from refusals: ``{(unit, table): limit}``, table as in addresses."""
        out: dict[tuple[int, str], int] = {}
        for (unit, table), size in self._memory.sizes().items():
            cap = self.max_bits if table.is_bit else self.max_registers
            out[(unit, _TABLE_NAMES[table])] = size.limit(cap)
        return out

    @staticmethod
    def _decode(request: Request, response: ModbusPDU, items: CollectedVariables) -> None:
        # the batch's columns are assigned by index (the fast path the model offers readers)
        values, qualities, errors = items.values, items.qualities, items.errors
        count = request.count
        if request.table.is_bit:
            bits = response.bits
            if len(bits) < count:
                raise ValueError(f"{len(bits)} bits for {count} requested")
            for index, _kind, _unpack, off, _little, post, _extra in request.decoders:
                value: Any = bool(bits[off])
                values[index] = value if post is None else post(value)
                qualities[index] = _GOOD
                errors[index] = None
            return
        regs = response.registers
        if len(regs) != count:
            raise ValueError(f"{len(regs)} registers for {count} requested")
        assert request.big is not None and request.little is not None
        big = request.big.pack(*regs)
        little = request.little.pack(*regs) if request.needs_little else big
        for index, kind, unpack, off, use_little, post, extra in request.decoders:
            if kind == STRUCT:
                value = unpack(little if use_little else big, off)[0]  # type: ignore[misc]
            elif kind == REGISTER_BIT:
                value = bool((regs[off] >> extra) & 1)
            elif kind == RAW:
                value = (little if use_little else big)[off : off + extra]
            else:  # pragma: no cover - BIT is handled above
                raise AssertionError(kind)
            values[index] = value if post is None else post(value)
            qualities[index] = _GOOD
            errors[index] = None

    # -- writing ---------------------------------------------------------------------------

    def write(self, variable: Variable, value: Any) -> None:
        """Write ``value`` (engineering units) to the coil, holding register(s) or bit of ``variable``.

        Raises :class:`ConfigurationError` for a read-only table or a value that does not fit, and
        :class:`ReaderError` when the device cannot be reached or refuses the write.
        """
        addr = self._address(variable)
        where = f"variable {variable.id} address {variable.address!r}"
        if not addr.table.writable:
            raise ConfigurationError(
                f"{where}: {addr.table.plural} are read-only; only coils and holding registers can be written"
            )
        try:
            encoded = encode_value(addr, value)
        except AddressError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        unit = addr.unit if addr.unit is not None else self.unit_id
        with self._lock:
            if not self._ensure_connected(force=True):
                raise ReaderError(f"{where}: cannot write {value!r}: {self._connect_error}")
            client = self._client
            assert client is not None
            try:
                if addr.table is Table.COIL:
                    response = client.write_coil(addr.address, bool(encoded), device_id=unit)
                elif addr.bit is not None:
                    mask = 1 << addr.bit
                    response = client.mask_write_register(
                        address=addr.address,
                        and_mask=0xFFFF ^ mask,
                        or_mask=mask if encoded else 0,
                        device_id=unit,
                    )
                else:
                    assert isinstance(encoded, list)
                    if len(encoded) == 1:
                        response = client.write_register(addr.address, encoded[0], device_id=unit)
                    else:
                        response = client.write_registers(addr.address, encoded, device_id=unit)
            except ModbusIOException as exc:
                if "No response" not in str(exc):
                    self._disconnect(str(exc))
                raise ReaderError(f"{where}: writing {value!r} failed: {exc}") from exc
            except (ModbusException, OSError) as exc:
                self._disconnect(str(exc))
                raise ReaderError(f"{where}: writing {value!r} failed: {exc}") from exc
        if response.isError():
            code = response.exception_code
            raise ReaderError(
                f"{where}: unit {unit} refused writing {value!r}: exception {code} "
                f"({_EXCEPTIONS.get(code, 'unknown exception')})"
            )
