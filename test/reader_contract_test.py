"""Every shipped reader passes the public reader contract (data_collector.testing.ReaderContract).

The contracts come from ``test/_cases/*_cases.py`` (``READER_CONTRACTS``); each becomes a test
class here, exactly as a user's ``class TestMyReader(ReaderContract)`` would.
"""

from __future__ import annotations

from _cases import all_reader_contracts

from data_collector.testing import READER_RULES, ReaderContract

CONTRACTS = all_reader_contracts()

for _contract in CONTRACTS:
    globals()[f"Test{_contract.__name__}"] = type(f"Test{_contract.__name__}", (_contract,), {})


def test_every_shipped_reader_has_a_contract() -> None:
    names = {c.__name__ for c in CONTRACTS}
    assert {"RandomContract", "ModbusContract", "OpcUaPollContract", "OpcUaSubscribeContract"} <= names
    assert all(issubclass(c, ReaderContract) for c in CONTRACTS)
    assert len(READER_RULES) >= 7
