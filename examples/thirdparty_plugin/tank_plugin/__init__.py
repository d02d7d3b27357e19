"""An example data-collector plugin: a tank controller reader and two writers.

- :class:`TankReader` (``reader_type = "tank"``) reads a tank controller over Modbus TCP:
  ``level:<register>`` (float32 in two holding registers), ``count:<register>`` (uint16) and
  ``alarm:<coil>`` (a coil);
- :class:`JsonLinesWriter` appends one JSON object per sample to a file;
- :class:`HistorianWriter` sends batches to a plant historian over TCP (a line protocol whose
  store keys samples by identity, so retries never duplicate: ``exactly_once = True``);
  :class:`HistorianServer` is a small in-memory historian for tests and demos.

Its tests (``tests/``) run data-collector's contract suites on all three.
"""

from .historian import HistorianServer, HistorianWriter
from .jsonl import JsonLinesWriter, read_jsonl
from .reader import TankReader

__all__ = ["HistorianServer", "HistorianWriter", "JsonLinesWriter", "TankReader", "read_jsonl"]
