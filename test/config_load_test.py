"""TOML configuration: building readers/writers/contexts, every error with its key path, end to end."""

from __future__ import annotations

import csv
import logging
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _util import RecordingWriter, wait_for

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    ConflictingVariableError,
    DataCollectionContext,
    DataReader,
    Quality,
    Variable,
)
from data_collector._config import ConfigFileError, load_config, loads_config
from data_collector._registry import register_reader, unregister_reader
from data_reader.random_data_reader import RandomDataReader
from data_writer.csv_file_data_writer import CsvFileDataWriter

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plant.toml"
LOG = logging.getLogger("test.config")

BASE = """
[[readers]]
type = "random"

[[writers]]
type = "noop"

[[contexts]]
id = 1
variables = [
    { id = 1, address = "sine", value_type = "float", reader_type = "random", interval_ms = 200 },
    { id = 2, address = "counter", value_type = "int", reader_type = "random" },
]
"""


def problems(text: str, **environ: str) -> list[str]:
    with pytest.raises(ConfigFileError) as info:
        loads_config(text, source="plant.toml", environ=environ)
    assert str(info.value).splitlines() == [f"plant.toml: {issue}" for issue in info.value.issues]
    return str(info.value).splitlines()


def one_problem(text: str, **environ: str) -> str:
    lines = problems(text, **environ)
    assert len(lines) == 1, lines
    return lines[0]


# -- the example and the model it builds ------------------------------------------------------------
def test_example_config_builds_every_object() -> None:
    pytest.importorskip("pymodbus")
    pytest.importorskip("asyncua")
    pytest.importorskip("sqlalchemy")
    from data_reader.modbus_data_reader import ModbusDataReader
    from data_reader.opcua_data_reader import OpcUaDataReader
    from data_writer.sql_data_writer import SqlDataWriter

    config = load_config(EXAMPLE, environ={"MODBUS_PORT": "15020", "OPCUA_PORT": "14840"})
    readers = {r.reader_type: r for r in config.readers}
    assert sorted(readers) == ["gateway", "press", "random"]
    press, gateway = readers["press"], readers["gateway"]
    assert isinstance(press, ModbusDataReader) and (press.host, press.port, press.unit_id) == (
        "127.0.0.1",
        15020,
        1,
    )
    assert isinstance(gateway, OpcUaDataReader) and gateway.endpoint == "opc.tcp://127.0.0.1:14840/"
    assert isinstance(readers["random"], RandomDataReader)
    csv_writer, sql_writer = config.writers
    assert isinstance(csv_writer, CsvFileDataWriter)
    assert csv_writer.path_template == "plant-data/context-{context_id}.csv"
    assert isinstance(sql_writer, SqlDataWriter) and sql_writer.table_prefix == "dc_"
    assert config.writer_types == ("csv", "sql")
    assert dict(config.collector_options) == {"drain_timeout_s": 30, "write_retry_s": 10}
    one, two = config.contexts
    assert (one.id, one.duration_s, one.default_interval_ms, one.min_interval_ms) == (1, 28800.0, 1000, 100)
    assert dict(one.metadata) == {
        "site": "Plant 3",
        "line": "Press line 2",
        "product": "bracket B-7",
        "operator": "night shift",
    }
    assert dict(two.metadata) == {"site": "Plant 3", "line": "Press line 2", "purpose": "energy monitoring"}
    v1 = one.variables[0]
    assert (v1.id, v1.address, v1.value_type, v1.reader_type, v1.interval_ms) == (
        1,
        "hr:0:float32",
        "float",
        "press",
        250,
    )
    assert [v.reader_type for v in one.variables] == ["press"] * 6  # the context's default
    shared = two.variables[0]
    assert shared.same_definition(v1) and shared.interval_ms == 500
    assert [v.reader_type for v in two.variables] == [
        "press",
        "gateway",
        "gateway",
        "gateway",
        "gateway",
        "random",
    ]
    assert config.variable_names[13] == "Tariff"
    assert [v.id for v in config.variables] == [1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 21]
    assert config.path_of(2, 13, "address") == "contexts[1].variables[3].address"
    assert config.path_of(1) == "contexts[0]"
    # defaults apply when the environment does not say otherwise
    default = load_config(EXAMPLE, environ={})
    assert {r.reader_type: getattr(r, "port", None) for r in default.readers}["press"] == 5020


# -- errors: file, key path, bad value -------------------------------------------------------------
def test_the_issue_example_message_format() -> None:
    pytest.importorskip("pymodbus")
    text = BASE.replace(
        'type = "random"',
        'type = "random"\n\n[[readers]]\ntype = "modbus"\nreader_type = "plc"\nhost = "127.0.0.1"',
        1,
    ).replace(
        '{ id = 2, address = "counter", value_type = "int", reader_type = "random" },',
        '{ id = 2, address = "counter", value_type = "int", reader_type = "random" },\n'
        '    { id = 3, address = "ramp", value_type = "float", reader_type = "random" },\n'
        '    { id = 7, address = "holding:7:flaot32", value_type = "float", reader_type = "plc" },',
    )
    line = one_problem(text)
    assert line.startswith('plant.toml: contexts[0].variables[3].address: "holding:7:flaot32": '), line
    assert "flaot32" in line.split(": ", 3)[3]


CASES = [
    # (what, text change (old, new), expected key path, expected value shown, fragment of the reason)
    (
        "unknown top-level key",
        ("[[readers]]", "colector = 1\n[[readers]]"),
        "colector",
        "1",
        'did you mean "collector"',
    ),
    (
        "reader without type",
        ('type = "random"', 'reader_type = "x"'),
        "readers[0]",
        None,
        'missing key "type"',
    ),
    (
        "unknown plugin",
        ('type = "random"', 'type = "randum"'),
        "readers[0].type",
        '"randum"',
        "unknown reader type",
    ),
    (
        "unknown writer plugin",
        ('type = "noop"', 'type = "nope"'),
        "writers[0].type",
        '"nope"',
        "known: archive, csv, hdf5, mqtt, noop, redis, sql",
    ),
    (
        "unknown option",
        ('type = "random"', 'type = "random"\nsed = 3'),
        "readers[0].sed",
        "3",
        'did you mean "seed"',
    ),
    (
        "option of the wrong type",
        ('type = "random"', 'type = "random"\nseed = "3"'),
        "readers[0].seed",
        '"3"',
        "must be an integer, got string",
    ),
    (
        "missing required option",
        ('type = "noop"', 'type = "csv"'),
        "writers[0]",
        None,
        'missing key "path"',
    ),
    (
        "option the constructor rejects",
        ('type = "random"', 'type = "random"\nmin_interval_ms = -5'),
        "readers[0].min_interval_ms",
        "-5",
        "min_interval_ms must be an int > 0",
    ),
    (
        "collector option",
        ("[[writers]]", "[collector]\ndrain_timeout_s = -1\n[[writers]]"),
        "collector.drain_timeout_s",
        "-1",
        "drain_timeout_s must be a number >= 0",
    ),
    (
        "spool_sync_s not positive",
        ("[[writers]]", "[collector]\nspool_sync_s = 0\n[[writers]]"),
        "collector.spool_sync_s",
        "0",
        "spool_sync_s must be a number > 0",
    ),
    (
        "spool_max_bytes below 1 MiB",
        ("[[writers]]", '[collector]\nspool_max_bytes = "1 KiB"\n[[writers]]'),
        "collector.spool_max_bytes",
        '"1 KiB"',
        "spool_max_bytes must be an int from 1 MiB to 1 PiB, got 1024",
    ),
    (
        "spool_max_bytes not a size",
        ("[[writers]]", '[collector]\nspool_max_bytes = "a lot"\n[[writers]]'),
        "collector.spool_max_bytes",
        '"a lot"',
        'must be an integer (bytes) or a string such as "512 MiB"',
    ),
    (
        "max_write_samples zero",
        ("[[writers]]", "[collector]\nmax_write_samples = 0\n[[writers]]"),
        "collector.max_write_samples",
        "0",
        "max_write_samples must be an int from 1 to 10**12",
    ),
    (
        "spool_dir not a path",
        ("[[writers]]", "[collector]\nspool_dir = 5\n[[writers]]"),
        "collector.spool_dir",
        "5",
        "must be a folder path (a non-empty string), got integer",
    ),
    (
        "spool_dir empty",
        ("[[writers]]", '[collector]\nspool_dir = " "\n[[writers]]'),
        "collector.spool_dir",
        '" "',
        "must be a folder path (a non-empty string), got an empty string",
    ),
    (
        "unknown collector key",
        ("[[writers]]", '[collector]\nspool_dri = "s"\n[[writers]]'),
        "collector.spool_dri",
        '"s"',
        'did you mean "spool_dir"?',
    ),
    (
        "two writers with one name and a spool",
        ("[[writers]]", '[collector]\nspool_dir = "s"\n[[writers]]\ntype = "noop"\n[[writers]]'),
        "writers[1]",
        None,
        'writer name "NoopDataWriter" is also the name of writers[0]: with a spool each writer needs a name',
    ),
    ("context id missing", ("id = 1\nvariables", "variables"), "contexts[0]", None, 'missing key "id"'),
    (
        "context id not an int",
        ("id = 1\nvariables", 'id = "1"\nvariables'),
        "contexts[0].id",
        '"1"',
        "must be an integer",
    ),
    (
        "unknown context key",
        ("id = 1\nvariables", "id = 1\nduraton_s = 5\nvariables"),
        "contexts[0].duraton_s",
        "5",
        'did you mean "duration_s"',
    ),
    (
        "duration not positive",
        ("id = 1\nvariables", "id = 1\nduration_s = 0\nvariables"),
        "contexts[0].duration_s",
        "0",
        "must be a number of seconds > 0",
    ),
    (
        "metadata not a table",
        ("id = 1\nvariables", 'id = 1\nmetadata = "x"\nvariables'),
        "contexts[0].metadata",
        '"x"',
        "must be a table",
    ),
    (
        "start_at without offset",
        ("id = 1\nvariables", "id = 1\nstart_at = 2030-01-01T06:00:00\nvariables"),
        "contexts[0].start_at",
        "2030-01-01T06:00:00",
        "needs a UTC offset",
    ),
    (
        "variable address missing",
        ('address = "counter", ', ""),
        "contexts[0].variables[1]",
        None,
        'missing key "address"',
    ),
    (
        "bad address for its reader",
        ('address = "counter"', 'address = "cuonter"'),
        "contexts[0].variables[1].address",
        '"cuonter"',
        "unknown signal 'cuonter'",
    ),
    (
        "unknown value type",
        ('value_type = "int"', 'value_type = "integer"'),
        "contexts[0].variables[1].value_type",
        '"integer"',
        "unknown value_type 'integer'",
    ),
    (
        "unknown reader type",
        ('value_type = "int", reader_type = "random"', 'value_type = "int", reader_type = "plc"'),
        "contexts[0].variables[1].reader_type",
        '"plc"',
        'no reader has this reader_type (configured: "random")',
    ),
    (
        "interval below the minimum",
        ("interval_ms = 200", "interval_ms = 20"),
        "contexts[0].variables[0].interval_ms",
        "20",
        "interval 20 ms is below the minimum 100 ms",
    ),
    (
        "default interval below the minimum",
        ("id = 1\nvariables", "id = 1\ndefault_interval_ms = 50\nvariables"),
        "contexts[0].default_interval_ms",
        "50",
        "variable 2 at contexts[0].variables[1] has no interval_ms of its own",
    ),
    (
        "interval not an integer",
        ("interval_ms = 200", "interval_ms = 0.5"),
        "contexts[0].variables[0].interval_ms",
        "0.5",
        "must be an integer, got float",
    ),
    (
        "duplicate variable id",
        ("{ id = 2,", "{ id = 1,"),
        "contexts[0].variables[1].id",
        "1",
        "duplicate variable id in this context (also contexts[0].variables[0])",
    ),
    (
        "context id beyond 64 bits",
        ("id = 1\nvariables", "id = 9223372036854775808\nvariables"),
        "contexts[0].id",
        "9223372036854775808",
        "must fit a signed 64-bit integer",
    ),
    (
        "variable id beyond 64 bits",
        ("{ id = 2,", "{ id = -9223372036854775809,"),
        "contexts[0].variables[1].id",
        "-9223372036854775809",
        "must fit a signed 64-bit integer",
    ),
    (
        "interval beyond 366 days",
        ("interval_ms = 200", "interval_ms = 10000000000000"),
        "contexts[0].variables[0].interval_ms",
        "10000000000000",
        "must be at most 31622400000 (366 days in ms)",
    ),
    (
        "default interval beyond 366 days",
        ("id = 1\nvariables", "id = 1\ndefault_interval_ms = 31622400001\nvariables"),
        "contexts[0].default_interval_ms",
        "31622400001",
        "must be at most 31622400000",
    ),
    (
        "duration of 10**400 s",
        ("id = 1\nvariables", f"id = 1\nduration_s = {10**400}\nvariables"),
        "contexts[0].duration_s",
        "1" + "0" * 116 + "...",  # shown cut to 120 characters
        "must be at most 3.15576e+09 s (100 years)",
    ),
    (
        "duration nan",
        ("id = 1\nvariables", "id = 1\nduration_s = nan\nvariables"),
        "contexts[0].duration_s",
        "nan",
        "must be a number of seconds > 0",
    ),
    (
        "no variables",
        ("variables = [", "variables = [\n]\nold = ["),
        "contexts[0].variables",
        "[]",
        "at least one variable",
    ),
]


@pytest.mark.parametrize(("what", "change", "path", "value", "reason"), CASES, ids=[c[0] for c in CASES])
def test_each_kind_of_error_names_the_key_path(
    what: str, change: tuple[str, str], path: str, value: str | None, reason: str
) -> None:
    old, new = change
    assert old in BASE, what
    lines = problems(BASE.replace(old, new, 1))
    expected = f"plant.toml: {path}: " + (f"{value}: " if value is not None else "")
    matching = [line for line in lines if line.startswith(expected)]
    assert matching, (expected, lines)
    assert reason in matching[0], (reason, matching[0])


def test_conflicting_variable_across_contexts_and_duplicate_context_ids() -> None:
    text = (
        BASE
        + """
[[contexts]]
id = 2
variables = [{ id = 1, address = "ramp", value_type = "float", reader_type = "random" }]

[[contexts]]
id = 2
variables = [{ id = 9, address = "ramp", value_type = "float", reader_type = "random" }]
"""
    )
    lines = problems(text)
    assert lines == [
        "plant.toml: contexts[2].id: 2: context id is already used by contexts[1]",
        'plant.toml: contexts[1].variables[0].address: "ramp": variable 1 is defined differently in '
        'contexts[0].variables[0] (address = "sine"); one id must mean one device value in every context',
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = """
[[readers]]
type = "random"
seed = "x"

[[readers]]
type = "nosuch"
reader_type = "plc"

[[contexts]]
id = 1
variables = [
    { id = 1, address = "sine", value_type = "float", reader_type = "random", interval_ms = 0 },
    { id = 2, address = "hr:1", value_type = "int", reader_type = "plc" },
    { id = 3, address = "sine", value_type = "float", reader_type = "elsewhere" },
]
"""
    lines = problems(text)
    assert lines == [
        'plant.toml: readers[0].seed: "x": option seed of RandomDataReader must be an integer, got string',
        "plant.toml: readers[1].type: \"nosuch\": unknown reader type 'nosuch'; known: modbus, opcua, random",
        "plant.toml: contexts[0].variables[0].interval_ms: 0: must be > 0",
        'plant.toml: contexts[0].variables[2].reader_type: "elsewhere": no reader has this reader_type '
        '(configured: "plc", "random")',
    ]  # variable 2 names the broken reader: no second, misleading error about it


def test_an_integer_beyond_the_digit_limit_is_a_toml_error() -> None:
    line = one_problem(BASE.replace("{ id = 2,", "{ id = " + "9" * 5000 + ","))
    assert line.startswith("plant.toml: invalid TOML: ") and "4300 digits" in line, line


def test_toml_syntax_error_environment_and_file_errors(tmp_path: Path) -> None:
    line = one_problem("[[readers]]\ntype = random\n")
    assert line.startswith("plant.toml: invalid TOML: ") and "line 2" in line
    text = BASE + '\n# port = ${IN_A_COMMENT}\n[[writers]]\ntype = "csv"\npath = "${OUT}/x.csv"\n'
    number = text.splitlines().index('path = "${OUT}/x.csv"') + 1
    assert one_problem(text) == (
        f'plant.toml: line {number}: "${{OUT}}": environment variable OUT is not set '
        "(write ${OUT:-default} to give a default)"
    )
    with pytest.raises(ConfigFileError) as info:
        load_config(tmp_path / "absent.toml")
    assert str(info.value).startswith(f"{tmp_path / 'absent.toml'}: cannot read the file")
    (tmp_path / "latin1.toml").write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        load_config(tmp_path / "latin1.toml")
    with pytest.raises(ConfigFileError, match="contexts: missing"):
        loads_config("[[readers]]\ntype = 'random'\n")


def test_environment_substitution() -> None:
    text = """
[[readers]]
type = "random"
seed = ${SEED:-7}                 # ${NOT_SET} in a comment is left alone
reader_type = "${PREFIX}-random"

[[writers]]
type = "csv"
path = "${DIR:-out}/x.csv"

[metadata]
note = "$${literal}"

[[contexts]]
id = ${CTX}
variables = [{ id = 1, address = "sine", value_type = "float" }]
"""
    config = loads_config(text, environ={"PREFIX": "line2", "CTX": "42", "DIR": ""})
    (reader,) = config.readers
    assert reader.reader_type == "line2-random"
    writer = config.writers[0]
    assert isinstance(writer, CsvFileDataWriter) and writer.path_template == "out/x.csv"
    assert config.contexts[0].id == 42
    assert dict(config.contexts[0].metadata) == {"note": "${literal}"}
    # the only reader is the default reader of variables that name none
    assert config.contexts[0].variables[0].reader_type == "line2-random"
    config = loads_config(text, environ={"PREFIX": "p", "CTX": "1", "SEED": "99", "DIR": "d"})
    assert config.writers[0].path_template == "d/x.csv"  # type: ignore[attr-defined]
    seeded = config.readers[0]._random.random()  # type: ignore[attr-defined]
    assert seeded == random.Random(99).random()


def test_start_at_metadata_and_context_defaults() -> None:
    text = """
[metadata]
site = "Plant 3"
shift = 1

[[readers]]
type = "random"
reader_type = "sim"

[[readers]]
type = "random"
reader_type = "other"

[[contexts]]
id = 5
start_at = 2030-01-02T06:00:00+02:00
reader_type = "sim"
value_type = "int"
duration_s = 1.5
metadata = { shift = 2, when = 2030-01-02T06:00:00Z, tags = ["a", "b"], nested = { k = true } }

[[contexts.variables]]
id = 1
address = "counter"

[[contexts.variables]]
id = 2
address = "sine"
value_type = "float"
reader_type = "other"

[[contexts]]
id = 6
start_at = "2030-01-02T04:00:00+00:00"
variables = [{ id = 3, address = "random", value_type = "bool", reader_type = "sim" }]
"""
    config = loads_config(text)
    five, six = config.contexts
    assert config.start_at[5] == datetime(2030, 1, 2, 4, 0, tzinfo=UTC)
    assert config.start_at[6] == datetime(2030, 1, 2, 4, 0, tzinfo=UTC)
    assert five.duration_s == 1.5
    assert dict(five.metadata) == {
        "site": "Plant 3",
        "shift": 2,
        "when": "2030-01-02T06:00:00+00:00",  # a TOML datetime is stored as ISO-8601 text (JSON-compatible)
        "tags": ["a", "b"],
        "nested": {"k": True},
    }
    assert dict(six.metadata) == {"site": "Plant 3", "shift": 1}
    assert [(v.value_type, v.reader_type) for v in five.variables] == [("int", "sim"), ("float", "other")]
    # two readers and no default: a variable must say which reader reads it
    line = one_problem(text.replace('reader_type = "sim"\nvalue_type', "value_type"))
    assert line == (
        'plant.toml: contexts[0].variables[0]: missing key "reader_type" '
        "(the reader that reads it: other, sim)"
    )


class _GainReader(DataReader):
    """A third-party style reader whose constructor knows nothing of reader_type."""

    reader_type = "gain"

    def __init__(self, gain: float = 1.0, *, labels: list[str] | None = None) -> None:
        super().__init__()
        if gain <= 0:
            raise ConfigurationError(f"gain must be > 0, got {gain!r}")
        self.gain = gain
        self.labels = labels or []

    def read(self, variables: CollectedVariables) -> None:
        for item in variables:
            item.value = self.gain * float(item.variable.address)


def test_registered_reader_options_and_per_instance_reader_type() -> None:
    register_reader("test-gain", _GainReader)
    try:
        text = """
[[readers]]
type = "test-gain"
gain = 2
labels = ["a"]
reader_type = "gain2"
min_interval_ms = 20

[[contexts]]
id = 1
variables = [{ id = 1, address = "1.5", value_type = "float", interval_ms = 20, reader_type = "gain2" }]
"""
        config = loads_config(text)
        (reader,) = config.readers
        assert isinstance(reader, _GainReader)
        assert (reader.gain, reader.labels, reader.reader_type, reader.min_interval_ms) == (
            2,
            ["a"],
            "gain2",
            20,
        )
        assert _GainReader.reader_type == "gain"  # set on the instance only
        assert one_problem(text.replace("gain = 2", "gain = -1")) == (
            "plant.toml: readers[0].gain: -1: gain must be > 0, got -1"
        )
        assert one_problem(text.replace('labels = ["a"]', 'labels = "a"')) == (
            'plant.toml: readers[0].labels: "a": option labels of _GainReader must be an array, got string'
        )
        assert problems(text.replace('reader_type = "gain2"\n', 'reader_type = ""\n', 1))[0] == (
            'plant.toml: readers[0].reader_type: "": must be a non-empty string, got an empty string'
        )
    finally:
        unregister_reader("test-gain")


def test_two_readers_with_one_reader_type() -> None:
    text = BASE.replace('type = "random"', 'type = "random"\n\n[[readers]]\ntype = "random"', 1)
    assert one_problem(text) == (
        'plant.toml: readers[1].reader_type: "random": reader_type is already used by readers[0]: give each '
        "reader its own reader_type"
    )


# -- end to end through DataCollector ---------------------------------------------------------------
def test_config_collects_through_data_collector_with_delayed_start(tmp_path: Path) -> None:
    start = datetime.now(UTC) + timedelta(seconds=1.0)
    text = f"""
[collector]
drain_timeout_s = 20

[[readers]]
type = "random"

[[writers]]
type = "csv"
path = "{(tmp_path / "ctx-{context_id}.csv").as_posix()}"

[[contexts]]
id = 3
start_at = {start.isoformat()}
duration_s = 1.2
metadata = {{ batch = "B-1" }}
variables = [
    {{ id = 1, address = "constant:7", value_type = "int", interval_ms = 100 }},
    {{ id = 2, address = "counter", value_type = "int", interval_ms = 200 }},
]
"""
    config = loads_config(text)
    recorder = RecordingWriter()
    with config.collector(LOG, extra_writers=[recorder]) as collector:
        config.start(collector)
        assert collector.state(3) == "scheduled"
        wait_for(lambda: recorder.events[-1:] == [("stopped", 3)], timeout=20, what="context 3 to end")
    rows = recorder.of(3)
    assert rows and min(r.read_at for r in rows) >= start
    assert {r.value for r in rows if r.variable_id == 1} == {7}
    counts = [r.value for r in rows if r.variable_id == 2]
    assert counts == list(range(1, len(counts) + 1)) and len(counts) >= 3
    assert all(r.quality is Quality.GOOD for r in rows)
    with open(tmp_path / "ctx-3.csv", newline="") as f:
        stored = list(csv.DictReader(f))
    assert len(stored) == len(rows)
    assert {(int(r["variable_id"]), r["value"]) for r in stored if r["variable_id"] == "1"} == {(1, "7")}


def test_config_against_a_modbus_simulator() -> None:
    pytest.importorskip("pymodbus")
    from data_reader.modbus_simulator import ModbusSimulator

    text = """
[[readers]]
type = "modbus"
host = "127.0.0.1"
port = ${PORT}
timeout_s = 1.0

[[contexts]]
id = 1
default_interval_ms = 200
variables = [
    { id = 1, address = "hr:240:float32", value_type = "float" },
    { id = 2, address = "hr:300:string8", value_type = "str" },
    { id = 3, address = "hr:100:int16", value_type = "int" },
    { id = 4, address = "coil:3", value_type = "bool" },
]
"""
    with ModbusSimulator() as sim:
        config = loads_config(text, environ={"PORT": str(sim.port)})
        recorder = RecordingWriter()
        with config.collector(LOG, extra_writers=[recorder]) as collector:
            config.start(collector)
            wait_for(lambda: {r.variable_id for r in recorder.of(1)} == {1, 2, 3, 4}, 15, "every variable")
            collector.stop(1)
    values = {r.variable_id: r.value for r in recorder.of(1)}
    assert values == {1: -1234.5625, 2: "data-collector", 3: -12345, 4: True}
    assert all(r.quality is Quality.GOOD for r in recorder.of(1))


def test_runtime_configuration_error_maps_back_to_the_key_path() -> None:
    config = loads_config(BASE, source="plant.toml")
    with config.collector(LOG) as collector:
        # a context started by other code defines variable 1 differently: start() refuses ours
        collector.start(DataCollectionContext(9, [Variable(1, "ramp", "float", "random")]))
        with pytest.raises(ConflictingVariableError) as info:
            config.start(collector)
    message = config.describe_error(info.value)
    assert message.startswith("plant.toml: contexts[0].variables[0].id: context 1: variable 1 is "), message
    error = ConfigurationError("bad address", context_id=1, variable_id=2, field="address")
    assert config.describe_error(error) == "plant.toml: contexts[0].variables[1].address: bad address"
    assert config.describe_error(ConfigurationError("other")) == "plant.toml: other"


SPOOL_CONFIG = """
[collector]
spool_dir = "{spool_dir}"
spool_sync_s = 0.25
spool_max_bytes = "{max_bytes}"
max_write_samples = 500
write_retry_s = 2

[[readers]]
type = "random"

[[writers]]
type = "noop"
name = "first"

[[writers]]
type = "noop"
name = "second"

[[contexts]]
id = 1
duration_s = 0.5
variables = [{{ id = 1, address = "counter", value_type = "int", interval_ms = 100 }}]
"""


def test_spool_keys_and_spool_dir_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "plant.toml").write_text(SPOOL_CONFIG.format(spool_dir="spool/here", max_bytes="1.5 GiB"))
    monkeypatch.chdir(tmp_path)  # the spool is beside the file, not in the current directory
    config = load_config("conf/plant.toml")
    assert config.spool_dir == Path("conf/spool/here")
    assert dict(config.collector_options) == {
        "spool_dir": str(Path("conf/spool/here")),
        "spool_sync_s": 0.25,
        "spool_max_bytes": 3 << 29,
        "max_write_samples": 500,
        "write_retry_s": 2,
    }
    assert not (conf / "spool").exists()  # loading (validating) creates no folder
    recorder = RecordingWriter("recorder")
    with config.collector(LOG, extra_writers=[recorder]) as collector:
        config.start(collector)
        wait_for(lambda: recorder.events[-1:] == [("stopped", 1)], timeout=20, what="context 1 to end")
    folders = sorted(p.name for p in (conf / "spool" / "here").iterdir())
    assert [name.rsplit("-", 1)[0] for name in folders] == ["first", "recorder", "second"], folders
    # overridden: another folder, or none; an absolute spool_dir is taken as is
    with config.collector(LOG, spool_dir=tmp_path / "other") as collector:
        config.start(collector)
    assert len(list((tmp_path / "other").iterdir())) == 2
    with config.collector(LOG, spool_dir=None) as collector:
        config.start(collector)
    absolute = tmp_path / "abs"
    config = loads_config(SPOOL_CONFIG.format(spool_dir=absolute.as_posix(), max_bytes="2 MiB"))
    assert config.spool_dir == absolute and config.collector_options["spool_max_bytes"] == 2 << 20
    # strings: loads_config is relative to base_dir, else to the current directory
    assert loads_config(SPOOL_CONFIG.format(spool_dir="s", max_bytes="1 GB")).spool_dir == Path("s")
    config = loads_config(SPOOL_CONFIG.format(spool_dir="s", max_bytes="1GiB"), base_dir=conf)
    assert config.spool_dir == conf / "s" and config.collector_options["spool_max_bytes"] == 1 << 30


def test_spool_dir_that_is_a_file_and_name_clashes_once_spooling(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(ConfigFileError) as info:
        loads_config(
            SPOOL_CONFIG.format(spool_dir="taken", max_bytes="1 GiB"), source="p.toml", base_dir=tmp_path
        )
    assert (
        str(info.value)
        == f'p.toml: collector.spool_dir: "taken": is not a folder: {str(tmp_path / "taken")!r} is a file'
    )
    # without spool_dir in the file, two writers named alike load; a spool given later refuses them
    text = SPOOL_CONFIG.format(spool_dir="s", max_bytes="1 GiB").replace('spool_dir = "s"\n', "")
    config = loads_config(text.replace('name = "second"', 'name = "first"'), source="p.toml")
    assert config.spool_issues()[0].path == "writers[1]"
    with pytest.raises(ConfigFileError) as info:
        config.collector(LOG, spool_dir=tmp_path / "spool")
    assert str(info.value).startswith(
        'p.toml: writers[1]: writer name "first" is also the name of writers[0]'
    )
    assert not (tmp_path / "spool").exists()
    config.collector(LOG).close()  # no spool: names may repeat
