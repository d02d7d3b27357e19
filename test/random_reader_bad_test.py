"""RandomDataReader's ``bad[:reason]`` signal: a variable that always reads BAD, for trying BAD handling."""

from __future__ import annotations

import pytest
from _util import LOG, RecordingWriter, wait_for

from data_collector import CollectedVariables, DataCollectionContext, DataCollector, Quality, Variable
from data_reader.random_data_reader import RandomDataReader


@pytest.mark.parametrize("vt", ["float", "int", "bool", "str"])
def test_bad_is_bad_with_its_reason_beside_good_variables(vt: str) -> None:
    r = RandomDataReader()
    variables = [
        Variable(1, "counter", "int", "random"),
        Variable(2, "bad", vt, "random"),
        Variable(3, "bad: PLC 3 does not answer ", vt, "random"),
        Variable(4, "constant:5", "int", "random"),
    ]
    for v in variables:
        r.validate_variable(v)  # accepted like any address
    for step in (1, 2):
        batch = CollectedVariables.of(variables)
        r.read(batch)
        assert [(i.value, i.quality, i.error) for i in batch] == [
            (step, Quality.GOOD, None),
            (None, Quality.BAD, "simulated failure"),
            (None, Quality.BAD, "PLC 3 does not answer"),
            (5, Quality.GOOD, None),
        ]


def test_bad_samples_reach_the_writers() -> None:
    writer = RecordingWriter()
    ctx = DataCollectionContext(1, [Variable(1, "bad:offline", "float", "random", 100)])
    with DataCollector(LOG, [RandomDataReader()], [writer]) as c:
        c.start(ctx)
        wait_for(lambda: len(writer.of(1)) >= 3, what="three samples")
        stats = c.stats().readers["random"]
    rows = writer.of(1)
    assert all(r.quality is Quality.BAD and r.value is None and r.error == "offline" for r in rows), rows
    assert stats.bad_samples >= 3
