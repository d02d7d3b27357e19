"""Imports in any order in a fresh interpreter, and the pinned public surface."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import data_collector


@pytest.mark.parametrize(
    "first",
    [
        "data_reader",
        "data_writer",
        "data_collector",
        "data_reader.random",
        "data_reader.modbus",
        "data_reader.opcua",
        "data_writer.csv",
        "data_writer.noop",
        "data_reader.random_data_reader",
        "data_writer.csv_file_data_writer",
        "data_writer.noop_data_writer",
    ],
)
def test_import_order(first: str) -> None:
    code = (
        f"import {first}\n"
        "import data_writer, data_reader, data_collector\n"
        "assert data_collector.DataReader is data_reader.DataReader\n"
        "assert data_collector.DataWriter is data_writer.DataWriter\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_all_is_pinned() -> None:
    assert sorted(data_collector.__all__) == sorted(
        [
            "BUILTIN_VALUE_TYPES",
            "CollectedVariable",
            "CollectedVariables",
            "CollectionEvent",
            "CollectorClosedError",
            "CollectorStats",
            "ConfigFileError",
            "ConfigIssue",
            "Configuration",
            "ConfigurationError",
            "ConflictingVariableError",
            "ContextAlreadyStartedError",
            "ContextStateError",
            "ContextStats",
            "DataCollectionContext",
            "DataCollectionError",
            "DataCollectionListener",
            "DataCollector",
            "DataReader",
            "DataWriter",
            "PluginInfo",
            "Quality",
            "ReaderError",
            "ReaderStats",
            "Run",
            "Scan",
            "ScanColumn",
            "ScanPoint",
            "ScanProgress",
            "ScanResult",
            "ScanRows",
            "Setpoint",
            "Settle",
            "Subscription",
            "UnknownContextError",
            "Variable",
            "WriteNotSupportedError",
            "WriterError",
            "WriterStats",
            "available_readers",
            "available_writers",
            "load_config",
            "loads_config",
            "plugins",
            "reader_class",
            "register_reader",
            "register_writer",
            "unregister_reader",
            "unregister_writer",
            "wide_frame",
            "writer_class",
            "__version__",
        ]
    )
    for name in data_collector.__all__:
        assert hasattr(data_collector, name), name


def test_the_testing_kits_all_is_pinned() -> None:
    import data_collector.testing as testing

    assert sorted(testing.__all__) == sorted(
        [
            "READER_RULES",
            "WRITER_RULES",
            "CollectorFactory",
            "FaultProxy",
            "MemoryWriter",
            "ProxyStats",
            "ReaderContract",
            "Sample",
            "StoredRun",
            "StoredSample",
            "WriterContract",
            "accounting_problems",
            "assert_nothing_lost",
            "free_port",
            "wait_for",
        ]
    )
    # importing the library imports neither the kit nor pytest
    code = "import sys, data_collector\nassert not {'data_collector.testing', 'pytest'} & set(sys.modules)\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_error_tree() -> None:
    from data_collector import (
        CollectorClosedError,
        ConfigurationError,
        ConflictingVariableError,
        ContextAlreadyStartedError,
        ContextStateError,
        DataCollectionError,
        ReaderError,
        UnknownContextError,
        WriteNotSupportedError,
        WriterError,
    )

    for exc in (ConfigurationError, ContextStateError, CollectorClosedError, ReaderError, WriterError):
        assert issubclass(exc, DataCollectionError)
    assert issubclass(ConflictingVariableError, ConfigurationError)
    assert issubclass(UnknownContextError, ContextStateError) and issubclass(UnknownContextError, LookupError)
    assert issubclass(ContextAlreadyStartedError, ContextStateError)
    assert issubclass(WriteNotSupportedError, ReaderError)
    assert issubclass(data_collector.ConfigFileError, ConfigurationError)


def test_the_error_tree_docstring_names_every_public_error() -> None:
    import data_collector._errors as errors

    public_errors = [
        name
        for name in data_collector.__all__
        if isinstance(getattr(data_collector, name), type)
        and issubclass(getattr(data_collector, name), BaseException)
    ]
    assert "ConfigFileError" in public_errors
    tree = errors.__doc__ or ""
    assert [
        name for name in public_errors if not re.search(rf"^ {{4}}(?:[│ ]*[├└]── )?{name}\b", tree, re.M)
    ] == []


def test_write_is_refused_by_readers_without_it() -> None:
    from data_collector import Variable, WriteNotSupportedError
    from data_reader.random_data_reader import RandomDataReader

    reader = RandomDataReader()
    assert not reader.supports_write
    with pytest.raises(WriteNotSupportedError, match="'sine'"):
        reader.write(Variable(1, "sine", "float", "random"), 1.0)


def test_library_has_no_process_wide_side_effects() -> None:
    """No signal/atexit, no __del__, no print, no logging handlers in library code (commands aside)."""
    import ast
    import pathlib

    root = pathlib.Path(data_collector.__file__).parent.parent
    offenders = []
    for pkg in ("data_collector", "data_reader", "data_writer"):
        for path in (root / pkg).rglob("*.py"):
            if path.name in ("simulator.py", "__main__.py", "_cli.py") or "cli" in path.parent.parts[-1:]:
                continue  # commands may print and handle signals
            for node in ast.walk(ast.parse(path.read_text())):
                bad = (
                    (isinstance(node, ast.Import) and any(a.name in ("signal", "atexit") for a in node.names))
                    or (isinstance(node, ast.ImportFrom) and node.module in ("signal", "atexit"))
                    or (isinstance(node, ast.FunctionDef) and node.name == "__del__")
                    or (
                        isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Name)
                        and node.func.id == "print"
                    )
                    or (
                        isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("addHandler", "basicConfig", "setswitchinterval")
                    )
                )
                if bad:
                    offenders.append(f"{path}:{getattr(node, 'lineno', '?')}")
    assert offenders == []
