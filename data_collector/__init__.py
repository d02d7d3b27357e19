"""data-collector: collect values from industrial equipment at exact, wall-clock-aligned intervals.

Build readers (:class:`DataReader` subclasses: Modbus TCP, OPC UA, your own) and writers
(:class:`DataWriter` subclasses: CSV, SQL, your own), start :class:`DataCollectionContext` objects
on a :class:`DataCollector`, and listen to lifecycle events with a :class:`DataCollectionListener`::

    import logging
    from data_collector import DataCollector, DataCollectionContext, Variable
    from data_reader.random import RandomDataReader
    from data_writer.csv import CsvFileDataWriter

    variables = [Variable(1, "sine", "float", "random", interval_ms=100)]
    with DataCollector(logging.getLogger("dc"), [RandomDataReader()], [CsvFileDataWriter("out.csv")]) as c:
        c.start(DataCollectionContext(1, variables, duration_s=5))
        ...

Every error raised on purpose is a :class:`DataCollectionError` (tree in ``data_collector._errors``).
"""

from ._collector import (
    CollectorStats,
    ContextStats,
    DataCollector,
    ReaderStats,
    Run,
    WriterStats,
)
from ._config import ConfigFileError, ConfigIssue, Configuration, load_config, loads_config
from ._errors import (
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
from ._frames import wide_frame
from ._listener import DataCollectionListener
from ._live import CollectionEvent, Subscription
from ._model import (
    BUILTIN_VALUE_TYPES,
    CollectedVariable,
    CollectedVariables,
    DataCollectionContext,
    Quality,
    Variable,
)
from ._reader import DataReader
from ._registry import (
    PluginInfo,
    available_readers,
    available_writers,
    plugins,
    reader_class,
    register_reader,
    register_writer,
    unregister_reader,
    unregister_writer,
    writer_class,
)
from ._scan import Scan, ScanPoint, ScanProgress, ScanResult, Setpoint, Settle
from ._scan_rows import ScanColumn, ScanRows
from ._writer import DataWriter

__version__ = "0.1.0"

__all__ = [
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
    "__version__",
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
]
