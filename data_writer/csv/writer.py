"""CSV file writer: appends one row per sample to a CSV file, one file per context if asked.

Store: plain CSV files (RFC 4180, UTF-8, ``\\n`` line ends), readable by spreadsheets and pandas.
Text UTF-8 cannot encode (lone surrogates, e.g. from bytes decoded with ``surrogateescape``) is
written as a backslash escape (``\\udc80``), so no value makes a write fail on encoding.
Each file starts with one header row, then only data rows with the columns::

    context_id, variable_id, address, read_at, value, quality, error, value_type

``read_at`` is ISO-8601 UTC with milliseconds (``2026-11-22T08:15:00.100+00:00``; a naive time is
taken as UTC; an aware time UTC cannot hold, near year 1 or 9999, keeps its own offset); ``value`` is
empty for a missing value, ``true``/``false`` for bools, ``repr`` for floats (``nan``, ``inf``
included) and the text itself for strings; ``quality`` is GOOD, UNCERTAIN or BAD. A 1-D NumPy
array value (dtype bool, int, uint or float) is one JSON list in its cell (``[1.0, NaN, -0.0]``,
``[9223372036854775807, -1]``, ``[]``: floats as ``repr``, non-finite ones as ``NaN``,
``Infinity``, ``-Infinity``); :func:`read_samples` gives it back as a NumPy array: float64 when
the list holds a float, bool for true/false, else int64 (uint64 beyond int64), an empty list by
the variable's value_type (``int``/``int[]`` int64, ``bool``/``bool[]`` bool, else float64).
Float arrays come back exactly except the sign and payload of NaN. A multi-dimensional array or
one of another dtype is written as JSON of its nested lists when JSON can hold it (else ``str``).

Runs: beside each CSV file, ``<file>.runs.jsonl`` gets one JSON line when a context starts and one
when it stops (``event``, ``context_id``, ``start``, ``end``, the user's ``metadata`` and the
collector's ``deduced_metadata``: readers, writers, host, versions, how the run ended).

Variables: beside each CSV file, ``<file>.variables.csv`` lists each variable once, with the
columns :data:`VARIABLE_COLUMNS` (``variable_id, name, unit, description, address, value_type,
reader_type``; empty: none), a row per distinct definition (a variable relabelled later gets a
second row; the last one is current). The samples file keeps its header, so files written
before the side file existed are appended to as they are. :func:`read_variables` reads it;
:func:`read_samples` adds each sample's ``name`` and ``unit`` from it.

Options: ``CsvFileDataWriter(path, *, delimiter=",")``. ``path`` may hold ``{context_id}`` to
write one file per context (each file closed when its context stops). Parent directories are
created. Reopening appends: an existing file is never truncated; a file whose header differs
is refused with a :class:`WriterError` rather than mixed. Every batch is flushed.

Errors: a failed file operation (disk full, permission denied, ...) raises :class:`WriterError`
``from`` the :class:`OSError`, which :meth:`CsvFileDataWriter.is_transient` reports as transient
(the collector retries the batch; a failed write leaves no partial rows behind). A file whose
header is not this writer's, a path that is a directory or a name too long for the file system
raise a permanent :class:`WriterError` (retrying cannot fix them: the collector counts the batch
as lost at once).

Example::

    import logging, time
    from data_collector import DataCollector, DataCollectionContext, Variable
    from data_reader.random import RandomDataReader
    from data_writer.csv import CsvFileDataWriter, read_samples

    writer = CsvFileDataWriter("out/context-{context_id}.csv")
    with DataCollector(logging.getLogger("csv"), [RandomDataReader()], [writer]) as c:
        c.start(DataCollectionContext(7, [Variable(1, "sine", "float", "random", 200)]))
        time.sleep(2)
    print(read_samples("out/context-7.csv")[:3])
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataWriter,
    Quality,
    Variable,
    WriterError,
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

COLUMNS: tuple[str, ...] = (
    "context_id",
    "variable_id",
    "address",
    "read_at",
    "value",
    "quality",
    "error",
    "value_type",
)


#: The columns of the ``<file>.variables.csv`` side file.
VARIABLE_COLUMNS: tuple[str, ...] = (
    "variable_id",
    "name",
    "unit",
    "description",
    "address",
    "value_type",
    "reader_type",
)

_Definition = tuple[str, str, str, str, str, str, str]


def variables_path(path: str | os.PathLike[str]) -> Path:
    """The side file listing the variables of the CSV file at ``path``."""
    p = Path(path)
    return p.with_name(p.name + ".variables.csv")


def _definition(v: Variable) -> _Definition:
    return (
        str(v.id),
        v.name or "",
        v.unit or "",
        v.description or "",
        v.address,
        v.value_type,
        v.reader_type,
    )


def read_variables(path: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """The variables listed beside the CSV file at ``path`` (its ``.variables.csv``): variable id
    -> ``name``, ``unit``, ``description`` (``None`` when empty), ``address``, ``value_type``,
    ``reader_type``; the last row of an id wins. ``{}`` when there is no side file."""
    side = variables_path(path)
    out: dict[int, dict[str, Any]] = {}
    try:
        f = open(side, newline="", encoding="utf-8")  # noqa: SIM115
    except FileNotFoundError:
        return out
    with f:
        for row in csv.DictReader(f):
            out[int(row["variable_id"])] = {
                "name": row["name"] or None,
                "unit": row["unit"] or None,
                "description": row["description"] or None,
                "address": row["address"],
                "value_type": row["value_type"],
                "reader_type": row["reader_type"],
            }
    return out


def format_value(value: Any) -> str:
    """The CSV text of a value (see the module docstring)."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return value.hex()
    if type(value).__name__ == "ndarray" and type(value).__module__ == "numpy":
        try:
            return json.dumps(value.tolist())
        except (TypeError, ValueError):
            return str(value)
    return str(value)


_ARRAY_TYPES = frozenset({"float", "int", "bool"})

#: value_types of arrays: an empty array's dtype by its variable's value_type
_EMPTY_ARRAY_DTYPE = {"int": "int64", "int[]": "int64", "bool": "bool", "bool[]": "bool"}


def parse_array(text: str, value_type: str) -> Any:
    """The NumPy array of a JSON list written by :func:`format_value` (see the module docstring)."""
    import numpy as np  # only when an array is read back

    items = json.loads(text)
    if not items:
        return np.array([], dtype=_EMPTY_ARRAY_DTYPE.get(value_type, "float64"))
    types = set(map(type, items))
    if float in types:
        return np.array(items, dtype="float64")
    if types == {bool}:
        return np.array(items, dtype="bool")
    if min(items) >= 0 and max(items) > 2**63 - 1:
        return np.array(items, dtype="uint64")
    return np.array(items, dtype="int64")


def parse_value(text: str, value_type: str) -> Any:
    """Inverse of :func:`format_value` for the built-in value types and arrays (others stay
    text): a value of a numeric, bool or array (``...[]``) value_type whose text starts with ``[``
    is an array."""
    if text == "":
        return None
    if text[0] == "[" and (value_type in _ARRAY_TYPES or value_type.endswith("[]")):
        return parse_array(text, value_type)
    if value_type == "float":
        return float(text)
    if value_type == "int":
        return int(text)
    if value_type == "bool":
        return text == "true"
    return text


def read_samples(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a CSV file written by this writer, typed (ints, aware datetimes, Quality,
    values), each with its variable's ``name`` and ``unit`` from the side file (``None``: none)."""
    rows = []
    labels = read_variables(path)
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            label = labels.get(int(row["variable_id"]), {})
            rows.append(
                {
                    "context_id": int(row["context_id"]),
                    "variable_id": int(row["variable_id"]),
                    "address": row["address"],
                    "read_at": datetime.fromisoformat(row["read_at"]) if row["read_at"] else None,
                    "value": parse_value(row["value"], row["value_type"]),
                    "quality": Quality(row["quality"]),
                    "error": row["error"] or None,
                    "value_type": row["value_type"],
                    "name": label.get("name"),
                    "unit": label.get("unit"),
                }
            )
    return rows


class CsvFileDataWriter(DataWriter):
    """Appends samples to ``path`` (one file per context when it holds ``{context_id}``)."""

    def __init__(self, path: str | os.PathLike[str], *, delimiter: str = ",") -> None:
        super().__init__()
        try:
            text = os.fspath(path)
        except TypeError:
            raise ConfigurationError(f"CsvFileDataWriter: path must be a str or path, got {path!r}") from None
        if not isinstance(text, str) or not text:
            raise ConfigurationError(f"CsvFileDataWriter: path must be a non-empty path, got {path!r}")
        try:
            text.format(context_id=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigurationError(
                f"CsvFileDataWriter: path {text!r} may only hold the field {{context_id}}: {exc}"
            ) from None
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
            raise ConfigurationError(f"CsvFileDataWriter: delimiter must be one character, got {delimiter!r}")
        self.path_template = text
        self.per_context = "{context_id" in text
        self._delimiter = delimiter
        self._header = delimiter.join(COLUMNS)
        self._files: dict[Path, IO[str]] = {}
        #: per CSV file: the variables listed in its side file (objects, and definitions)
        self._listed: dict[Path, tuple[set[Variable], set[_Definition]]] = {}

    @property
    def name(self) -> str:
        return f"CsvFileDataWriter({self.path_template})"

    def __repr__(self) -> str:
        return f"CsvFileDataWriter({self.path_template!r})"

    def path_for(self, context_id: int) -> Path:
        """The file that holds the samples of ``context_id``."""
        return Path(self.path_template.format(context_id=context_id))

    def open(self) -> None:
        with self.lock:
            if not self.per_context:
                self._file(self.path_for(0))

    def close(self) -> None:
        with self.lock:
            errors = []
            for path, f in list(self._files.items()):
                try:
                    f.close()
                except OSError as exc:
                    errors.append(f"{path}: {exc}")
            self._files.clear()
            if errors:
                raise WriterError(f"closing CSV files failed: {'; '.join(errors)}")

    def is_transient(self, exc: BaseException) -> bool:
        """Failed file operations are transient, except a directory or a too long name at the path;
        a foreign file (another header) and everything else are permanent."""
        cause = exc.__cause__ if isinstance(exc, WriterError) else exc
        if isinstance(cause, OSError) and cause.errno in _PERMANENT_ERRNOS:
            return False
        return isinstance(cause, OSError | TimeoutError)

    def metadata_path_for(self, context_id: int) -> Path:
        """The side file of runs and their metadata beside the CSV file of ``context_id``."""
        path = self.path_for(context_id)
        return path.with_name(path.name + ".runs.jsonl")

    def variables_path_for(self, context_id: int) -> Path:
        """The side file listing the variables beside the CSV file of ``context_id``."""
        return variables_path(self.path_for(context_id))

    def context_started(self, context: DataCollectionContext) -> None:
        self._record_run("started", context)
        with self.lock:
            self._list_variables(self.path_for(context.id), context.variables)

    def _list_variables(self, path: Path, variables: Iterable[Variable]) -> None:
        """Append the variables the side file of ``path`` does not list yet (once per definition)."""
        listed = self._listed.get(path)
        if listed is None:
            side = variables_path(path)
            known: set[_Definition] = set()
            try:
                with open(side, newline="", encoding="utf-8") as f:
                    reader = csv.reader(f)
                    next(reader, None)
                    known = {tuple(row) for row in reader if len(row) == len(VARIABLE_COLUMNS)}  # type: ignore[misc]
            except FileNotFoundError:
                pass
            except (OSError, UnicodeDecodeError, csv.Error) as exc:
                raise WriterError(f"reading {side} failed: {exc}") from exc
            listed = self._listed[path] = (set(), known)
        objects, definitions = listed
        new = [v for v in dict.fromkeys(variables) if v not in objects]
        if not new:
            return
        rows = []
        for v in new:
            d = _definition(v)
            if d not in definitions:
                rows.append(d)
        if rows:
            side = variables_path(path)
            buf = io.StringIO()
            w = csv.writer(buf, delimiter=",", lineterminator="\n")
            try:
                side.parent.mkdir(parents=True, exist_ok=True)
                with open(side, "a", newline="", encoding="utf-8", errors="backslashreplace") as f:
                    if f.tell() == 0:
                        w.writerow(VARIABLE_COLUMNS)
                    w.writerows(rows)
                    f.write(buf.getvalue())
                    f.flush()
            except OSError as exc:
                raise WriterError(f"writing {side} failed: {exc}") from exc
            definitions.update(rows)
        objects.update(new)

    def context_stopped(self, context: DataCollectionContext) -> None:
        self._record_run("stopped", context)
        if self.per_context:
            with self.lock:
                f = self._files.pop(self.path_for(context.id), None)
                if f is not None:
                    f.close()

    def _record_run(self, event: str, context: DataCollectionContext) -> None:
        """Append one JSON line (event, context id, times, user and deduced metadata) to the side file."""
        line = json.dumps(
            {
                "event": event,
                "context_id": context.id,
                "start": context.start_date.isoformat() if context.start_date else None,
                "end": context.end_date.isoformat() if context.end_date else None,
                "metadata": dict(context.metadata),
                "deduced_metadata": dict(context.deduced_metadata),
            },
            ensure_ascii=False,
            allow_nan=False,
            default=str,
        )
        path = self.metadata_path_for(context.id)
        with self.lock:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8", errors="backslashreplace", newline="\n") as f:
                    f.write(line + "\n")
            except OSError as exc:
                raise WriterError(
                    f"recording the {event} of context {context.id} in {path} failed: {exc}"
                ) from exc

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=self._delimiter, lineterminator="\n")
        cid = context.id
        rows = []
        for item in variables:
            var = item.variable
            value = item.value
            rows.append(
                (
                    cid,
                    var.id,
                    var.address,
                    "" if item.read_at is None else _iso_utc(item.read_at),
                    format_value(value),
                    item.quality.value,
                    item.error or "",
                    var.value_type,
                )
            )
        w.writerows(rows)
        text = buf.getvalue()
        with self.lock:
            path = self.path_for(cid)
            self._list_variables(
                path,
                variables.variables
                if isinstance(variables, CollectedVariables)
                else [item.variable for item in variables],
            )
            f = self._file(path)
            size = os.fstat(f.fileno()).st_size  # everything before was flushed
            try:
                f.write(text)
                f.flush()
            except OSError as exc:
                # Undo the partial write, so that the collector's retry writes the batch once.
                self._files.pop(path, None)
                with contextlib.suppress(OSError):
                    f.close()
                with contextlib.suppress(OSError):
                    os.truncate(path, size)
                raise WriterError(f"writing {path} failed: {exc}") from exc

    def _file(self, path: Path) -> IO[str]:
        f = self._files.get(path)
        if f is not None:
            return f
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            f = open(path, "a+", newline="", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
            f.seek(0)
            first = f.readline(len(self._header) + 2).rstrip("\r\n")  # longer: not our header
            end = f.seek(0, os.SEEK_END)
            if not end:
                f.write(self._header + "\n")
                f.flush()
            elif first != self._header:
                f.close()
                raise WriterError(
                    f"{path} exists with another header ({first[:120]!r}, "
                    f"expected {self._header!r}): not a file of this writer; refusing to append to it"
                )
            elif not _ends_with_newline(path):
                f.write("\n")  # a row torn by a crash stays alone on its line
                f.flush()
        except OSError as exc:
            raise WriterError(f"cannot open CSV file {path}: {exc}") from exc
        self._files[path] = f
        return f


#: errnos of file operations that retrying cannot fix
_PERMANENT_ERRNOS = frozenset({errno.EISDIR, errno.ENAMETOOLONG})


def _iso_utc(t: datetime) -> str:
    """``t`` as ISO-8601 with milliseconds and offset, in UTC (a naive ``t`` is taken as UTC)."""
    offset = t.utcoffset()
    if offset is None:
        t = t.replace(tzinfo=UTC)
    elif offset:
        with contextlib.suppress(OverflowError):  # e.g. 9999-12-31T23:00-05:00 keeps its offset
            t = t.astimezone(UTC)
    return t.isoformat(timespec="milliseconds")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as raw:
        raw.seek(-1, os.SEEK_END)
        return raw.read(1) == b"\n"
