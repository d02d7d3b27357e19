"""Variable names, units and descriptions: validated by ``Variable``, set by a configuration file,
kept by the spool, stored once per variable by the CSV, HDF5, Redis and MQTT writers (the SQL
writer: ``sql_labels_test.py``).

Real files and servers: Redis and Mosquitto are the local ones (skipped when unreachable unless
``DC_REQUIRE_SERVICES=1``), each test under its own key or topic prefix.
"""

from __future__ import annotations

import csv
import json
import pickle
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from data_collector import (
    CollectedVariables,
    ConfigFileError,
    ConfigurationError,
    DataCollectionContext,
    Quality,
    Variable,
    loads_config,
)
from data_collector._model import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH, MAX_UNIT_LENGTH
from data_collector._spool import decode_context, encode_context

T0 = datetime(2026, 5, 4, 6, 0, 0, 250_000, tzinfo=UTC)


def labelled() -> list[Variable]:
    return [
        Variable(
            1, "sine", "float", "r", 100, name="Ram force", unit="kN", description="load cell\nunder the ram"
        ),
        Variable(2, "counter", "int", "r", name="Strokes"),
        Variable(3, "bad", "float", "r"),
    ]


def batch(variables: list[Variable], t: datetime, values: list[Any]) -> CollectedVariables:
    b = CollectedVariables.of(variables, t)
    for item, value in zip(b, values, strict=True):
        if value is None:
            item.set_bad("device timeout")
        else:
            item.value = value
    return b


# -- the model -------------------------------------------------------------------------------------------
def test_labels_are_keyword_only_optional_and_part_of_equality() -> None:
    v = Variable(
        7, "hr:0", "float", "plc", 500, name="Pressure", unit="bar", description="line 1\n\tafter valve"
    )
    assert (v.name, v.unit, v.description) == ("Pressure", "bar", "line 1\n\tafter valve")
    plain = Variable(7, "hr:0", "float", "plc", 500)
    assert (plain.name, plain.unit, plain.description) == (None, None, None)
    assert v != plain and v.same_definition(plain)  # labels are not the device definition
    assert v == Variable(
        7, "hr:0", "float", "plc", 500, name="Pressure", unit="bar", description=v.description
    )
    assert pickle.loads(pickle.dumps(v)) == v and hash(pickle.loads(pickle.dumps(v))) == hash(v)
    with pytest.raises(TypeError):
        Variable(7, "hr:0", "float", "plc", 500, "Pressure")  # type: ignore[call-arg, arg-type]  # keyword-only


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"name": 5}, "name must be a str or None, got 5"),
        ({"unit": b"bar"}, "unit must be a str or None, got b'bar'"),
        ({"name": ""}, "name must not be empty or blank (use None), got ''"),
        ({"unit": "   "}, "unit must not be empty or blank"),
        ({"name": " Pressure"}, "name must not start or end with whitespace, got ' Pressure'"),
        ({"name": "two\nlines"}, "name must not hold the control character '\\n'"),
        ({"unit": "m\x00"}, "unit must not hold the control character '\\x00'"),
        ({"description": "bell\x07"}, "description must not hold the control character '\\x07'"),
        ({"name": "x" * (MAX_NAME_LENGTH + 1)}, f"name must be at most {MAX_NAME_LENGTH} characters"),
        ({"unit": "u" * (MAX_UNIT_LENGTH + 1)}, f"unit must be at most {MAX_UNIT_LENGTH} characters"),
        (
            {"description": "d" * (MAX_DESCRIPTION_LENGTH + 1)},
            f"description must be at most {MAX_DESCRIPTION_LENGTH} characters",
        ),
        ({"name": "bad \udc80"}, "name must be valid Unicode (it holds a lone surrogate)"),
    ],
)
def test_bad_labels_raise_naming_the_value(labels: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        Variable(3, "a", "float", "r", **labels)
    assert str(err.value).startswith("Variable 3: ") and message in str(err.value), str(err.value)


def test_the_longest_labels_are_accepted() -> None:
    v = Variable(
        1,
        "a",
        "float",
        "r",
        name="n" * MAX_NAME_LENGTH,
        unit="µ" * MAX_UNIT_LENGTH,
        description="d" * MAX_DESCRIPTION_LENGTH,
    )
    assert len(v.name or "") == MAX_NAME_LENGTH


def test_the_spool_keeps_labels_and_reads_older_definitions() -> None:
    ctx = DataCollectionContext(4, labelled())
    back = decode_context(encode_context(ctx))
    assert back.variables == ctx.variables
    old = encode_context(ctx)
    old["variables"] = [tuple(v)[:5] for v in old["variables"]]  # what a spool of before the labels holds
    assert [v.name for v in decode_context(old).variables] == [None, None, None]


# -- the configuration file ---------------------------------------------------------------------------------
CONFIG = """
[[readers]]
type = "random"

[[contexts]]
id = 1
reader_type = "random"
[[contexts.variables]]
id = 1
address = "sine"
value_type = "float"
name = "Ram force"
unit = "kN"
description = \"\"\"load cell
under the ram\"\"\"
[[contexts.variables]]
id = 2
address = "counter"
value_type = "int"
"""


def test_a_configuration_file_sets_name_unit_and_description() -> None:
    config = loads_config(CONFIG)
    v1, v2 = config.contexts[0].variables
    assert (v1.name, v1.unit, v1.description) == ("Ram force", "kN", "load cell\nunder the ram")
    assert (v2.name, v2.unit, v2.description) == (None, None, None)
    assert config.variable_names == {1: "Ram force"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("unit = 5", "contexts[0].variables[1].unit: 5: must be a string, got integer"),
        ('name = ""', 'contexts[0].variables[1].name: "": Variable 2: name must not be empty'),
        (
            'description = "a\\u0007"',
            'contexts[0].variables[1].description: "a\\u0007": Variable 2: description must not hold',
        ),
    ],
)
def test_bad_labels_in_a_file_name_their_key_path(line: str, expected: str) -> None:
    with pytest.raises(ConfigFileError) as err:
        loads_config(CONFIG + line + "\n", source="plant.toml")
    assert f"plant.toml: {expected}" in str(err.value), str(err.value)


# -- CSV ----------------------------------------------------------------------------------------------------
def test_csv_lists_each_variable_once_in_a_side_file(tmp_path: Path) -> None:
    from data_writer.csv import VARIABLE_COLUMNS, CsvFileDataWriter, read_samples, read_variables

    path = tmp_path / "ctx-{context_id}.csv"
    vs = labelled()
    ctx = DataCollectionContext(5, vs)
    writer = CsvFileDataWriter(path)
    with writer.lock:
        writer.open()
        writer.context_started(ctx)
        for i in range(3):
            writer.write(ctx, batch(vs, T0 + timedelta(seconds=i), [1.5, i, None]))
        writer.context_stopped(ctx)
        writer.close()
    side = tmp_path / "ctx-5.csv.variables.csv"
    with open(side, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == VARIABLE_COLUMNS
    assert rows[1:] == [
        ["1", "Ram force", "kN", "load cell\nunder the ram", "sine", "float", "r"],
        ["2", "Strokes", "", "", "counter", "int", "r"],
        ["3", "", "", "", "bad", "float", "r"],
    ]
    with open(tmp_path / "ctx-5.csv", encoding="utf-8") as f:  # the samples file keeps its header
        assert f.readline().strip() == "context_id,variable_id,address,read_at,value,quality,error,value_type"
    stored = read_samples(tmp_path / "ctx-5.csv")
    assert [(r["name"], r["unit"]) for r in stored[:3]] == [
        ("Ram force", "kN"),
        ("Strokes", None),
        (None, None),
    ]

    # a new writer on the same files: known variables are not listed again; a relabelled one is
    renamed = [Variable(1, "sine", "float", "r", 100, name="Ram force (filtered)", unit="kN"), *vs[1:]]
    again = CsvFileDataWriter(path)
    ctx2 = DataCollectionContext(5, renamed)
    with again.lock:
        again.context_started(ctx2)
        again.write(ctx2, batch(renamed, T0 + timedelta(seconds=9), [2.5, 9, 1.0]))
        again.close()
    with open(side, newline="", encoding="utf-8") as f:
        assert len(list(csv.reader(f))) == 1 + 3 + 1
    assert read_variables(tmp_path / "ctx-5.csv")[1]["name"] == "Ram force (filtered)"  # the last row wins


# -- HDF5 ---------------------------------------------------------------------------------------------------
def test_hdf5_stores_labels_in_the_variables_table_and_reads_format_1_runs(tmp_path: Path) -> None:
    tables = pytest.importorskip("tables")
    from data_writer.hdf5 import FORMAT_VERSION, Hdf5DataWriter, read_frame, read_samples

    path = tmp_path / "runs.h5"
    vs = labelled()
    ctx = DataCollectionContext(5, vs)
    writer = Hdf5DataWriter(path, flush_s=0)
    with writer.lock:
        writer.open()
        writer.context_started(ctx)
        writer.write(ctx, batch(vs, T0, [1.5, 2, None]))
        writer.context_stopped(ctx)
        writer.close()
    with tables.open_file(str(path)) as h5:
        assert int(h5.root._v_attrs["dc_format_version"]) == FORMAT_VERSION == 3
        rows = h5.root.context_5.run_1.variables.read()
        assert rows.dtype.names[-3:] == ("name", "unit", "description")
        assert [(r["name"], r["unit"], r["description"]) for r in rows] == [
            (b"Ram force", b"kN", b"load cell\nunder the ram"),
            (b"Strokes", b"", b""),
            (b"", b"", b""),
        ]
    assert [(s.name, s.unit) for s in read_samples(path)] == [
        ("Ram force", "kN"),
        ("Strokes", None),
        (None, None),
    ]
    assert list(read_frame(path)["name"]) == ["Ram force", "Strokes", None]

    # a file of format version 1: its variables table has no description; it is read as it is, and
    # a writer appending a run marks the file with the current version and keeps the old run
    with tables.open_file(str(path), "a") as h5:
        group = h5.root.context_5.run_1
        old = group.variables.read()
        group.variables._f_remove()
        names = ["variable_id", "address", "value_type", "reader_type", "interval_ms", "name", "unit"]
        legacy = np.array([tuple(r)[:7] for r in old.tolist()], dtype=[(n, old.dtype[n]) for n in names])
        h5.create_table(group, "variables", obj=legacy)
        h5.root._v_attrs["dc_format_version"] = 1
    assert [s.name for s in read_samples(path)] == ["Ram force", "Strokes", None]
    writer = Hdf5DataWriter(path, flush_s=0)
    with writer.lock:
        writer.context_started(ctx)
        writer.write(ctx, batch(vs, T0 + timedelta(seconds=5), [3.5, 4, None]))
        writer.close()
    with tables.open_file(str(path)) as h5:
        assert int(h5.root._v_attrs["dc_format_version"]) == FORMAT_VERSION
        assert "description" not in h5.root.context_5.run_1.variables.dtype.names
        assert "description" in h5.root.context_5.run_2.variables.dtype.names
    assert [s.name for s in read_samples(path, 5, 2)] == ["Ram force", "Strokes", None]


# -- Redis --------------------------------------------------------------------------------------------------
def test_redis_latest_values_and_runs_carry_the_labels() -> None:
    pytest.importorskip("redis")
    from _cases.redis_cases import REDIS_URL, delete_prefix, require_redis, unique_prefix

    from data_writer.redis import RedisDataWriter, read_latest, read_runs

    require_redis()
    prefix = unique_prefix()
    try:
        writer = RedisDataWriter(REDIS_URL, prefix=prefix)
        vs = labelled()
        ctx = DataCollectionContext(5, vs)
        ctx._start_date = T0  # as the collector sets it
        writer.open()
        try:
            with writer.lock:
                writer.context_started(ctx)
                writer.write(ctx, batch(vs, T0, [1.5, 2, None]))
        finally:
            writer.close()
        latest = read_latest(REDIS_URL, 5, prefix=prefix)
        assert [(s.name, s.unit) for s in latest.values()] == [
            ("Ram force", "kN"),
            ("Strokes", None),
            (None, None),
        ]
        assert latest[1].value == 1.5 and latest[3].quality is Quality.BAD
        (run,) = read_runs(REDIS_URL, 5, prefix=prefix)
        assert run["variables"][0] == {
            "id": 1,
            "address": "sine",
            "value_type": "float",
            "reader_type": "r",
            "interval_ms": 100,
            "name": "Ram force",
            "unit": "kN",
            "description": "load cell\nunder the ram",
        }
    finally:
        delete_prefix(REDIS_URL, prefix)


# -- MQTT ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("message", ["sample", "batch"])
def test_mqtt_json_payloads_carry_name_and_unit(message: Literal["sample", "batch"]) -> None:
    pytest.importorskip("paho.mqtt")
    from _cases.mqtt_cases import Subscriber, json_samples, require_broker, unique_prefix

    from data_writer.mqtt import MqttDataWriter

    host, port = require_broker()
    prefix = unique_prefix()
    sub = Subscriber([f"{prefix}/#"])
    try:
        topic = f"{prefix}/{{context_id}}" + ("/{variable_id}" if message == "sample" else "")
        writer = MqttDataWriter(host, port, topic=topic, message=message, context_topic=f"{prefix}/ctx")
        vs = labelled()
        ctx = DataCollectionContext(5, vs)
        writer.open()
        try:
            with writer.lock:
                writer.context_started(ctx)
                writer.write(ctx, batch(vs, T0, [1.5, 2, None]))
        finally:
            writer.close()
        received = sub.flush()
        docs = {d["variable_id"]: d for d in json_samples(received)}
        assert (docs[1]["name"], docs[1]["unit"]) == ("Ram force", "kN")
        assert docs[2]["name"] == "Strokes" and "unit" not in docs[2]
        assert "name" not in docs[3] and "unit" not in docs[3]  # a variable without labels: as before
        event = next(json.loads(m.payload) for m in received if m.topic == f"{prefix}/ctx")
        assert event["variables"][0]["description"] == "load cell\nunder the ram"
        assert event["variables"][2]["name"] is None
    finally:
        sub.close()


def test_the_example_configuration_file_has_units() -> None:
    root = Path(__file__).resolve().parent.parent
    text = (root / "examples" / "plant.toml").read_text(encoding="utf-8")
    config = loads_config(
        textwrap.dedent(text), source="plant.toml", base_dir=root / "examples"
    )  # validates as it is
    units = {v.id: v.unit for c in config.contexts for v in c.variables}
    assert units[1] == "kN" and units[2] == "mm"
