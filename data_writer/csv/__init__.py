"""CSV plugin: the ``csv`` writer (no extra needed) and ``read_samples`` to read its files back.

Code in :mod:`data_writer.csv.writer`; file format and options in this folder's ``README.md``;
``sample.toml`` is a configuration that validates. Registered as writer type ``csv`` through the
entry point in the project's ``pyproject.toml``.
"""

from .writer import (
    COLUMNS,
    VARIABLE_COLUMNS,
    CsvFileDataWriter,
    format_value,
    parse_value,
    read_samples,
    read_variables,
    variables_path,
)

__all__ = [
    "COLUMNS",
    "VARIABLE_COLUMNS",
    "CsvFileDataWriter",
    "format_value",
    "parse_value",
    "read_samples",
    "read_variables",
    "variables_path",
]
