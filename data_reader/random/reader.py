"""Random reader: live-looking signals with no device, for demos, tests and benchmarks.

``RandomDataReader`` serves reader_type ``"random"`` (overridable per instance). It needs no
connection and never fails (the ``bad`` signal stands for a device that does). Every value is of
the variable's ``value_type`` (float, int, bool, str; for ``wave`` an array of that element
type). Signals are functions of the wall-clock read time, so two variables with the same address
read at the same tick give the same value.

Address syntax (``<signal>[:<parameter>]``):

=================  ==========================================================================
``sine[:P]``       sine wave of period ``P`` seconds (default 10): float in [-1, 1];
                   int → round(100·sin); bool → sin ≥ 0; str → the float as text
``ramp[:P]``       saw-tooth from 0 to 1 over ``P`` seconds (default 10); int → 0..99 percent
``counter``        1, 2, 3, ... one step per read of that variable; float → 1.0, 2.0, ...;
                   bool → alternates; str → "1", "2", ...
``wave:N[:P]``     a waveform: a 1-D NumPy array of ``N`` points (0 .. 1,000,000; default period
                   ``P`` 10 s), point ``i`` = sin(2π·(t/P + i/N)): one period sampled, moving
                   with time; float → float64 array; int → int64 array of round(100·sin);
                   bool → bool array of sin ≥ 0 (no str). Needs NumPy
``random``         uniform random: float in [0, 1); int in [0, 100); bool; str (8 hex chars)
``constant:<v>``   always ``v`` converted to the value type (bool accepts true/false/1/0/yes/no/on/off)
``bad[:reason]``   always BAD, no value, error ``reason`` (default "simulated failure"): to try
                   alarms, BAD handling and exit statuses without a broken device
=================  ==========================================================================

Options: ``RandomDataReader(reader_type="random", min_interval_ms=None, seed=None)``.

Example::

    import logging, time
    from data_collector import DataCollector, DataCollectionContext, Variable
    from data_reader.random import RandomDataReader
    from data_writer.noop import NoopDataWriter

    ctx = DataCollectionContext(1, [Variable(1, "sine:5", "float", "random", interval_ms=100),
                                    Variable(2, "counter", "int", "random")])
    with DataCollector(logging.getLogger("demo"), [RandomDataReader()], [NoopDataWriter()]) as c:
        c.start(ctx)
        time.sleep(2)
"""

from __future__ import annotations

import importlib
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from data_collector import CollectedVariables, ConfigurationError, DataReader, Quality, Variable

__all__ = ["RandomDataReader"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}

Signal = Callable[[float], Any]


def parse_constant(text: str, value_type: str) -> Any:
    """``text`` converted to ``value_type``; ValueError when it does not convert."""
    if value_type == "float":
        return float(text)
    if value_type == "int":
        try:
            return int(text, 0)  # 42, 0x2a, 0b101010, 0o52
        except ValueError:
            return int(text)  # 08 and other leading zeros
    if value_type == "bool":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"not a bool: {text!r}")
    if value_type == "str":
        return text
    raise ValueError(f"unsupported value_type {value_type!r}")


class RandomDataReader(DataReader):
    """Generates sine, ramp, counter, random and constant values (see the module docstring)."""

    reader_type = "random"

    def __init__(
        self, *, reader_type: str | None = None, min_interval_ms: int | None = None, seed: int | None = None
    ) -> None:
        super().__init__(reader_type=reader_type, min_interval_ms=min_interval_ms)
        self._random = random.Random(seed)
        # one signal per definition (not per interval: contexts sharing a variable share its
        # counter), looked up per tick through the Variable objects (their hash is cached)
        self._by_definition: dict[tuple[int, str, str], Signal] = {}
        self._signals: dict[Variable, Signal] = {}
        # the error text of each ``bad`` definition and variable (empty: the fast path is untouched)
        self._bad_definitions: dict[tuple[int, str, str], str] = {}
        self._bad: dict[Variable, str] = {}
        self._lock = threading.Lock()

    def read(self, variables: CollectedVariables) -> None:
        now = time.time()
        signals = self._signals
        values = variables.values  # column fast path: qualities are GOOD already
        for i, var in enumerate(variables.variables):
            fn = signals.get(var)
            if fn is None:
                fn = self._signal(var)
            values[i] = fn(now)
        if self._bad:
            bad = self._bad
            qualities, errors = variables.qualities, variables.errors
            for i, var in enumerate(variables.variables):
                error = bad.get(var)
                if error is not None:
                    values[i] = None
                    qualities[i] = Quality.BAD
                    errors[i] = error

    def validate_variable(self, variable: Variable) -> None:
        self._signal(variable)  # checks the address, and spares the first tick making the signal

    def _signal(self, variable: Variable) -> Signal:
        key = (variable.id, variable.address, variable.value_type)
        with self._lock:
            fn = self._by_definition.get(key)
            if fn is None:
                fn = self._by_definition[key] = self._make(variable)
            error = self._bad_definitions.get(key)
            if error is not None:
                self._bad[variable] = error
            self._signals[variable] = fn
            return fn

    def _make(self, variable: Variable) -> Signal:
        vt = variable.value_type
        where = f"variable {variable.id} address {variable.address!r}"
        if vt not in ("float", "int", "bool", "str"):
            raise ConfigurationError(f"{where}: RandomDataReader has no value_type {vt!r}")
        kind, _, param = variable.address.partition(":")
        kind = kind.strip().lower()
        if kind in ("sine", "ramp"):
            try:
                period = float(param) if param else 10.0
            except ValueError:
                raise ConfigurationError(f"{where}: period {param!r} is not a number") from None
            if not (math.isfinite(period) and period > 0):
                raise ConfigurationError(f"{where}: period must be > 0 seconds, got {param!r}")
            if kind == "sine":

                def base(t: float) -> float:
                    return math.sin(2 * math.pi * (t % period) / period)

                conv: dict[str, Signal] = {
                    "float": base,
                    "int": lambda t: round(100 * base(t)),
                    "bool": lambda t: base(t) >= 0,
                    "str": lambda t: repr(base(t)),
                }
            else:

                def base(t: float) -> float:
                    return (t % period) / period

                conv = {
                    "float": base,
                    "int": lambda t: int(100 * base(t)),
                    "bool": lambda t: base(t) >= 0.5,
                    "str": lambda t: repr(base(t)),
                }
            return conv[vt]
        if kind == "wave":
            return self._wave(variable, param, where)
        if param and kind not in ("constant", "bad"):
            raise ConfigurationError(f"{where}: signal {kind!r} takes no parameter")
        if kind == "counter":
            count = [0]

            def step() -> int:
                count[0] += 1
                return count[0]

            return {
                "float": lambda t: float(step()),
                "int": lambda t: step(),
                "bool": lambda t: step() % 2 == 1,
                "str": lambda t: str(step()),
            }[vt]
        if kind == "random":
            rnd = self._random
            return {
                "float": lambda t: rnd.random(),
                "int": lambda t: rnd.randrange(100),
                "bool": lambda t: rnd.random() < 0.5,
                "str": lambda t: f"{rnd.getrandbits(32):08x}",
            }[vt]
        if kind == "bad":
            self._bad_definitions[(variable.id, variable.address, vt)] = param.strip() or "simulated failure"
            return lambda t: None
        if kind == "constant":
            if not param:
                raise ConfigurationError(f"{where}: constant needs a value, e.g. 'constant:42'")
            try:
                value = parse_constant(param, vt)
            except ValueError:
                raise ConfigurationError(f"{where}: {param!r} is not a {vt}") from None
            return lambda t: value
        raise ConfigurationError(
            f"{where}: unknown signal {kind!r}; use sine[:P], ramp[:P], wave:N[:P], counter, random, "
            "constant:<v> or bad[:reason]"
        )

    @staticmethod
    def _wave(variable: Variable, param: str, where: str) -> Signal:
        vt = variable.value_type
        if vt == "str":
            raise ConfigurationError(f"{where}: a wave is an array of float, int or bool, not str")
        count_text, _, period_text = param.partition(":")
        try:
            n = int(count_text)
        except ValueError:
            raise ConfigurationError(f"{where}: wave needs a point count, e.g. 'wave:1000'") from None
        if not 0 <= n <= 1_000_000:
            raise ConfigurationError(f"{where}: point count must be 0 .. 1000000, got {count_text!r}")
        try:
            period = float(period_text) if period_text else 10.0
        except ValueError:
            raise ConfigurationError(f"{where}: period {period_text!r} is not a number") from None
        if not (math.isfinite(period) and period > 0):
            raise ConfigurationError(f"{where}: period must be > 0 seconds, got {period_text!r}")
        try:
            np = importlib.import_module("numpy")
        except ImportError:
            raise ConfigurationError(f"{where}: a wave needs NumPy (pip install numpy)") from None
        phases = np.arange(n, dtype=np.float64) * (2 * math.pi / n) if n else np.zeros(0)

        def base(t: float) -> Any:
            return np.sin(phases + 2 * math.pi * (t % period) / period)

        if vt == "float":
            return base
        if vt == "int":
            return lambda t: np.rint(100 * base(t)).astype(np.int64)
        return lambda t: base(t) >= 0
