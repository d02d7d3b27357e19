"""Metadata: what the user states (JSON-compatible, converted where obvious) and what the collector
deduces, kept apart; bad values refused at construction naming where they are."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from _util import LOG, CountingReader, RecordingWriter, wait_for

from data_collector import ConfigurationError, DataCollectionContext, DataCollector, Variable


class Phase(enum.Enum):
    HEAT = "heat"


@dataclass
class Sample:
    name: str
    mass_g: float
    made: date


def test_user_metadata_is_converted_to_json_compatible_data() -> None:
    ctx = DataCollectionContext(
        1,
        [],
        metadata={
            "sample": Sample("S-7", 1.5, date(2026, 1, 2)),
            "phase": Phase.HEAT,
            "file": Path("/data/run.h5"),
            "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "tags": {"b", "a"},
            "pair": (1, 2),
        },
    )
    assert dict(ctx.metadata) == {
        "sample": {"name": "S-7", "mass_g": 1.5, "made": "2026-01-02"},
        "phase": "heat",
        "file": "/data/run.h5",
        "at": "2026-01-02T03:04:05+00:00",
        "tags": ["a", "b"],
        "pair": [1, 2],
    }
    assert (
        dict(DataCollectionContext(2, [], metadata=Sample("x", 2.0, date(2026, 1, 1))).metadata)["name"]
        == "x"
    )


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ({"x": float("nan")}, "metadata['x']: nan cannot be stored as JSON"),
        ({"x": {"y": object()}}, "metadata['x']['y']: object value"),
        ({1: "a"}, "key 1 is not a str"),
        ({"big": 2**70}, "does not fit a signed 64-bit integer"),
    ],
)
def test_metadata_that_cannot_be_stored_is_refused_naming_where(metadata: Any, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        DataCollectionContext(1, [], metadata=metadata)


def test_deduced_metadata_is_kept_apart_and_completed_at_stop() -> None:
    writer = RecordingWriter()
    ctx = DataCollectionContext(
        1, [Variable(1, "counter", "int", "random", 50)], min_interval_ms=10, metadata={"start": "user's own"}
    )
    assert dict(ctx.deduced_metadata) == {}
    with DataCollector(LOG, [CountingReader()], [writer]) as c:
        c.start(ctx)
        d = dict(ctx.deduced_metadata)
        assert d["collector"]["library"] == "data-collector" and d["collector"]["host"]
        assert d["readers"]["random"]["class"].endswith("CountingReader")
        assert d["writers"] == [{"name": "rec", "class": "_util.RecordingWriter"}]
        assert d["start"] == ctx.start_date.isoformat()  # type: ignore[union-attr]
        wait_for(lambda: len(writer.rows) >= 2)
        c.stop(1)
    assert ctx.metadata["start"] == "user's own"  # the user's key is never overwritten
    d = dict(ctx.deduced_metadata)
    assert d["ended"] == "stopped" and d["end"] == ctx.end_date.isoformat()  # type: ignore[union-attr]
