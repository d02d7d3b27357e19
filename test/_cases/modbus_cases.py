"""Modbus reader cases for the contract suite, and helpers shared by the ``modbus_*_test.py`` files.

The case runs a real pymodbus server (:class:`ModbusSimulator`) on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from _cases import ReaderCase
from data_collector import CollectedVariable, CollectedVariables, DataCollectionContext, DataReader, Variable
from data_writer import DataWriter


class CaptureWriter(DataWriter):
    """Keeps every written item, per context, in arrival order."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[int, CollectedVariable]] = []
        self._cond = threading.Condition()

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        with self._cond:
            self.items.extend((context.id, item) for item in variables)
            self._cond.notify_all()

    def of(self, variable_id: int) -> list[CollectedVariable]:
        with self._cond:
            return [item for _cid, item in self.items if item.variable.id == variable_id]

    def wait_for(
        self, predicate: Callable[[list[tuple[int, CollectedVariable]]], bool], timeout_s: float
    ) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self.items):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True


@contextmanager
def _constants_case() -> Iterator[tuple[DataReader, list[Variable], dict[int, Callable[[Any], bool]]]]:
    pytest.importorskip("pymodbus")
    from data_reader.modbus_data_reader import ModbusDataReader
    from data_reader.modbus_simulator import ModbusSimulator

    with ModbusSimulator() as sim:
        reader = ModbusDataReader("127.0.0.1", sim.port, reader_type="modbus", timeout_s=1.0)
        variables = [
            Variable(1, "hr:100:int16", "int", "modbus"),
            Variable(2, "hr:172:uint32:CDAB", "int", "modbus"),
            Variable(3, "hr:244:float32:DCBA", "float", "modbus"),
            Variable(4, "hr:260:float64", "float", "modbus"),
            Variable(5, "hr:300:string8", "str", "modbus"),
            Variable(6, "coil:3", "bool", "modbus"),
            Variable(7, "hr:9.15", "bool", "modbus"),
            Variable(8, "ir:0:float32", "float", "modbus"),
        ]
        expected: dict[int, Callable[[Any], bool]] = {
            1: lambda v: v == -12345,
            2: lambda v: v == 3000000000,
            3: lambda v: v == -1234.5625,
            4: lambda v: v == 2.718281828459045,
            5: lambda v: v == "data-collector",
            6: lambda v: v is True,
            7: lambda v: v is True,
            8: lambda v: isinstance(v, float) and math.isfinite(v) and -100.0 <= v <= 100.0,
        }
        yield reader, variables, expected


READER_CASES = [ReaderCase("modbus", _constants_case)]
