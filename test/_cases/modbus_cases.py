"""Modbus reader cases for the contract suite, and helpers shared by the ``modbus_*_test.py`` files.

The contract runs a real pymodbus server (the testing kit's ``modbus_simulator`` fixture) on
127.0.0.1 on a free port.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from data_collector import CollectedVariable, CollectedVariables, DataCollectionContext, DataReader, Variable
from data_collector.testing import ReaderContract
from data_writer import DataWriter

if TYPE_CHECKING:
    from data_reader.modbus.simulator import ModbusSimulator


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


class ModbusContract(ReaderContract):
    """The Modbus reader against the simulator: constants of every type and byte order, coils,
    register bits, live input registers; a missing register range; a frozen device."""

    @pytest.fixture(autouse=True)
    def _device(self, modbus_simulator: ModbusSimulator) -> None:
        self.sim = modbus_simulator

    def make_reader(self) -> DataReader:
        from data_reader.modbus import ModbusDataReader

        return ModbusDataReader("127.0.0.1", self.sim.port, reader_type="modbus", timeout_s=1.0)

    def make_variables(self) -> list[Variable]:
        return [
            Variable(1, "hr:100:int16", "int", "modbus"),
            Variable(2, "hr:172:uint32:CDAB", "int", "modbus"),
            Variable(3, "hr:244:float32:DCBA", "float", "modbus"),
            Variable(4, "hr:260:float64", "float", "modbus"),
            Variable(5, "hr:300:string8", "str", "modbus"),
            Variable(6, "coil:3", "bool", "modbus"),
            Variable(7, "hr:9.15", "bool", "modbus"),
            Variable(8, "ir:0:float32", "float", "modbus"),
        ]

    def expected_values(self) -> dict[int, Callable[[Any], bool]]:
        return {
            1: lambda v: v == -12345,
            2: lambda v: v == 3000000000,
            3: lambda v: v == -1234.5625,
            4: lambda v: v == 2.718281828459045,
            5: lambda v: v == "data-collector",
            6: lambda v: v is True,
            7: lambda v: v is True,
            8: lambda v: isinstance(v, float) and math.isfinite(v) and -100.0 <= v <= 100.0,
        }

    def invalid_variables(self) -> list[Variable]:
        return [
            Variable(90, "hr:70000", "int", "modbus"),
            Variable(91, "hr:100:float32", "bool", "modbus"),
            Variable(92, "register:5", "int", "modbus"),
        ]

    def unreadable_variables(self) -> list[Variable]:
        return [Variable(95, "hr:600", "int", "modbus")]  # registers 500-999 do not exist

    def make_unreachable_reader(self) -> DataReader:
        self.sim.freeze()  # a hung device: connected, answering nothing
        return self.make_reader()


READER_CONTRACTS = [ModbusContract]
