"""RandomDataReader: signals, value types and address errors."""

from __future__ import annotations

import pytest

from data_collector import CollectedVariables, ConfigurationError, Quality, Variable
from data_reader.random_data_reader import RandomDataReader


def _read(reader: RandomDataReader, *variables: Variable) -> list[object]:
    batch = CollectedVariables.of(variables)
    reader.read(batch)
    assert all(i.quality is Quality.GOOD for i in batch)
    return [i.value for i in batch]


def test_counter_steps_per_variable() -> None:
    r = RandomDataReader()
    a, b = Variable(1, "counter", "int", "random"), Variable(2, "counter", "str", "random")
    assert [_read(r, a, b) for _ in range(3)] == [[1, "1"], [2, "2"], [3, "3"]]


@pytest.mark.parametrize("vt,pytype", [("float", float), ("int", int), ("bool", bool), ("str", str)])
@pytest.mark.parametrize("address", ["sine", "sine:0.5", "ramp", "ramp:3", "counter", "random"])
def test_types(address: str, vt: str, pytype: type) -> None:
    (value,) = _read(RandomDataReader(seed=1), Variable(1, address, vt, "random"))
    assert type(value) is pytype


def test_constants() -> None:
    r = RandomDataReader()
    assert _read(
        r,
        Variable(1, "constant:0x10", "int", "random"),
        Variable(2, "constant:off", "bool", "random"),
        Variable(3, "constant:1e3", "float", "random"),
        Variable(4, "constant:a:b", "str", "random"),
    ) == [16, False, 1000.0, "a:b"]


@pytest.mark.parametrize(
    ("address", "vt", "needle"),
    [
        ("constant:abc", "int", "'abc' is not a int"),
        ("constant:maybe", "bool", "'maybe'"),
        ("constant", "float", "needs a value"),
        ("sine:-1", "float", "'-1'"),
        ("sine:fast", "float", "'fast'"),
        ("counter:3", "int", "takes no parameter"),
        ("square", "float", "'square'"),
        ("sine", "bytes", "'bytes'"),
    ],
)
def test_bad_addresses(address: str, vt: str, needle: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RandomDataReader().validate_variable(Variable(9, address, vt, "random"))
    assert needle in str(info.value) and "variable 9" in str(info.value)
