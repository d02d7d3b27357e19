"""A bad variable shared by two contexts is reported for its real cause only (issue 14).

Before, a typo in the address of a variable that a second context defines too made the loader
report "variable N is defined differently in ..." first, a secondary line that only repeats the
typo, then the real cause. Now the reader's own verdict is the one line; a real difference
between two valid definitions is still reported.
"""

from __future__ import annotations

import pytest

from data_collector import ConfigFileError, loads_config

HEAD = """
[[readers]]
type = "random"

[[writers]]
type = "noop"
"""


def _context(cid: int, address: str, interval: int) -> str:
    return f"""
[[contexts]]
id = {cid}
variables = [{{ id = 1, address = "{address}", value_type = "float", interval_ms = {interval} }}]
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as info:
        loads_config(text, source="plant.toml")
    return str(info.value).splitlines()


@pytest.mark.parametrize("bad_first", [False, True], ids=["typo-in-second", "typo-in-first"])
def test_a_typo_in_one_definition_is_reported_once_for_its_cause(bad_first: bool) -> None:
    good, bad = _context(1, "sine", 1000), _context(2, "sien", 500)
    text = HEAD + (bad + good if bad_first else good + bad)
    lines = _problems(text)
    index = 0 if bad_first else 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f'plant.toml: contexts[{index}].variables[0].address: "sien": ')
    assert "defined differently" not in lines[0]


def test_the_same_typo_in_both_contexts_is_reported_for_each() -> None:
    lines = _problems(HEAD + _context(1, "sien", 1000) + _context(2, "sien", 500))
    assert [line.split(": ")[1] for line in lines] == [
        "contexts[0].variables[0].address",
        "contexts[1].variables[0].address",
    ]
    assert not any("defined differently" in line for line in lines)


def test_two_valid_but_different_definitions_are_still_a_conflict() -> None:
    lines = _problems(HEAD + _context(1, "sine", 1000) + _context(2, "ramp", 500))
    assert len(lines) == 1, lines
    assert lines[0].startswith('plant.toml: contexts[1].variables[0].address: "ramp": variable 1 is defined')
    assert 'contexts[0].variables[0] (address = "sine")' in lines[0]
