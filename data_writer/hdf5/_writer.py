"""The HDF5 writer: runs as groups, samples buffered per table and appended at each flush.

Between two flushes the file is not touched at all: every batch is converted to rows at once
(so a value that cannot be stored is refused at the call that delivered it) and kept in memory;
a flush (``flush()``, which the collector calls every ``flush_s`` seconds as the writer's
``flush_interval_s`` says, and ``context_stopped``, ``close()``, a full buffer, or every write
with ``flush_s = 0``) appends the rows to their tables and flushes the HDF5 file, after which
everything is on disk in a consistent state. The collector confirms batches to its spool only
after a ``flush()`` returned, so a crash between flushes loses nothing that was spooled. See the
package documentation (``data_writer/hdf5/README.md``) for the layout and the guarantees.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import tables

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataWriter,
    ScanRows,
    Variable,
    WriterError,
)

from ._codec import Rows, encode_batch, variable_ids
from ._hdf5lib import flush_checked
from ._layout import (
    FORMAT,
    FORMAT_VERSION,
    NAT,
    SAMPLE_BASES,
    WIDTHS,
    context_group_name,
    run_group_name,
    run_number_of,
    split_table_name,
    time_us,
    us_to_datetime,
    variables_dtype,
    width_class,
)
from ._scan import scan_key, store_scan_rows

__all__ = ["REPLAY_KEY", "Hdf5DataWriter", "Hdf5WriteError"]

_log = logging.getLogger("data_writer.hdf5")

#: Deduced-metadata key by which the collector marks a context rebuilt from its spool (a replay).
REPLAY_KEY = "replayed_from_spool"

#: errnos of failed file operations that retrying may fix (disk full, quota, lock held, I/O...)
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EAGAIN,
        errno.EWOULDBLOCK,
        errno.EINTR,
        errno.EIO,
        errno.ENOMEM,
        errno.EBUSY,
        errno.ENFILE,
        errno.EMFILE,
        errno.ETIMEDOUT,
        errno.EACCES,
        errno.EPERM,
        errno.ESTALE,
    }
)
#: errnos that retrying cannot fix: the path itself is wrong
_PERMANENT_ERRNOS = frozenset({errno.EISDIR, errno.ENAMETOOLONG, errno.ENOTDIR})
_ERRNO_RE = re.compile(r"errno = (\d+)")
_ERRMSG_RE = re.compile(r"error message = '([^']*)'")
#: metadata JSON longer than this goes to an array node instead of an attribute (HDF5's limit: 64 KiB)
_MAX_ATTR_BYTES = 60_000
_FLAT_KEY = re.compile(r"^[A-Za-z0-9_]+$")
_COMPLIBS = ("zlib", "blosc", "blosc2", "lzo", "bzip2")


class Hdf5WriteError(WriterError):
    """A failed HDF5 operation; :attr:`transient` says whether retrying may fix it."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _errno_of(exc: BaseException) -> int | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    m = _ERRNO_RE.search(str(exc))
    return int(m.group(1)) if m else None


def _describe(exc: BaseException) -> str:
    """A one-line account of ``exc`` (HDF5 back traces reduced to their system error and last line)."""
    text = str(exc)
    if isinstance(exc, tables.HDF5ExtError):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else type(exc).__name__
        m = _ERRMSG_RE.search(text)
        code = _errno_of(exc)
        system = f" ({m.group(1)}, errno {code})" if m and code is not None else ""
        inner = next((line for line in lines if "unable to" in line), "")
        return f"{inner + ': ' if inner else ''}{last}{system}"[:500]
    return f"{type(exc).__name__}: {text}"[:500]


def _failure(what: str, exc: BaseException) -> Hdf5WriteError:
    """``exc`` raised while doing ``what``, as a writer error that knows whether it is transient."""
    if isinstance(exc, Hdf5WriteError):
        return exc
    code = _errno_of(exc)
    if isinstance(exc, OSError):
        transient = code not in _PERMANENT_ERRNOS
    elif isinstance(exc, tables.HDF5ExtError):
        transient = code is not None and code in _TRANSIENT_ERRNOS
    elif isinstance(exc, ValueError) and "already opened" in str(exc):
        transient = True  # open in this process by a reader or another writer: may be closed soon
    elif isinstance(exc, MemoryError | TimeoutError):
        transient = True
    else:
        transient = False
    return Hdf5WriteError(f"{what} failed: {_describe(exc)}", transient=transient)


def _version() -> str:
    try:
        return version("data-collector")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _sections(context: DataCollectionContext) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """User and deduced metadata of ``context``, and whether the collector replays it from its
    spool (after a crash: ``replayed_from_spool`` in the deduced metadata)."""
    deduced = dict(context.deduced_metadata)
    return dict(context.metadata), deduced, deduced.get(REPLAY_KEY) is True


class _Dedupe:
    """The samples of a replayed run already stored: the keys of its tables' last rows.

    After a crash the collector replays the batches whose writing it had not yet confirmed; some of
    them may have reached the file. Those are the first samples of the replay (the file was
    written in the order of the spool), so samples are skipped while their ``(time, variable)``
    is among the stored last rows, and never again after the first one that is not.
    """

    __slots__ = ("keys",)

    def __init__(self, keys: Counter[tuple[int, int]]) -> None:
        self.keys = keys

    def stored_prefix(self, batch: CollectedVariables) -> tuple[int, bool]:
        """How many leading samples of ``batch`` are stored, and whether later ones may be."""
        keys = self.keys
        for i, (v, t) in enumerate(zip(batch.variables, batch.read_ats, strict=True)):
            key = (time_us(t), v.id)
            left = keys.get(key, 0)
            if not left:
                return i, False
            keys[key] = left - 1
        return len(batch), True


@dataclass(eq=False)
class _Run:
    file: _File
    key: tuple[int, int | None]
    context_id: int
    number: int
    start_us: int
    group: Any
    replayed: bool
    on_disk: bool
    context: DataCollectionContext
    created: bool = False  # its group was created by this writer
    tables: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, list[Rows]] = field(default_factory=dict)
    pending_samples: int = 0
    var_ids: set[int] = field(default_factory=set)
    var_table: Any = None
    dedupe: _Dedupe | None = None
    dedupe_checked: bool = False
    #: variables outside the context's plan seen in batches (kept to record them again)
    extra_vars: dict[int, Variable] = field(default_factory=dict)
    #: rows per table before a failed flush: what the file may hold beyond it is not ours
    repair: dict[str, int] = field(default_factory=dict)
    #: the variables of the last batch and their ids (batches of one tick repeat them)
    last_vars: list[Variable] | None = None
    last_ids: Any = None


@dataclass(eq=False)
class _File:
    path: Path
    h5: Any  # None after a failure, until reopened
    runs: dict[tuple[int, int | None], _Run] = field(default_factory=dict)
    unflushed: bool = False  # changed since the last confirmed flush


def _number(name: str, value: object, *, low: float, high: float, integer: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if (
        isinstance(value, bool)
        or not ok
        or (isinstance(value, float) and not math.isfinite(value))
        or not low <= value <= high  # type: ignore[operator]
    ):
        kind = "an int" if integer else "a number"
        raise ConfigurationError(f"Hdf5DataWriter: {name} must be {kind} in {low:g}..{high:g}, got {value!r}")
    return value


class Hdf5DataWriter(DataWriter):
    """Writes samples to HDF5 files through PyTables; see the package documentation.

    ``path`` may hold ``{context_id}`` and ``{start:%Y%m%d-%H%M%S}`` (the run's start, UTC) to
    write one file per context or per run. Options: ``flush_s`` (2.0: the collector calls
    :meth:`flush` this often; 0 flushes at every write),
    ``complib`` ("zlib"), ``complevel`` (1), ``shuffle`` (True), ``chunk_rows`` (8192),
    ``max_buffer_rows`` (2,000,000), ``replay_tail_rows`` (1,000,000), ``name``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_s: float = 2.0,
        complib: str = "zlib",
        complevel: int = 1,
        shuffle: bool = True,
        chunk_rows: int = 8192,
        max_buffer_rows: int = 2_000_000,
        replay_tail_rows: int = 1_000_000,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        try:
            text = os.fspath(path)
        except TypeError:
            raise ConfigurationError(f"Hdf5DataWriter: path must be a str or path, got {path!r}") from None
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(f"Hdf5DataWriter: path must be a non-empty path, got {path!r}")
        try:
            sample = text.format(context_id=0, start=datetime(2000, 1, 2, 3, 4, 5, tzinfo=UTC))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigurationError(
                f"Hdf5DataWriter: path {text!r} may only hold the fields {{context_id}} and "
                f"{{start:<strftime format>}}: {exc!r}"
            ) from None
        if not sample.strip():
            raise ConfigurationError(f"Hdf5DataWriter: path {text!r} gives an empty file name")
        self.path_template = text
        #: whether files are closed when their last run stops (one file per context or per run)
        self.per_run_files = sample != text
        self._flush_s = float(_number("flush_s", flush_s, low=0, high=86400))
        if not isinstance(complib, str) or complib.split(":", 1)[0] not in _COMPLIBS:
            raise ConfigurationError(
                f"Hdf5DataWriter: complib must be one of {', '.join(_COMPLIBS)} "
                f"(blosc and blosc2 with an optional ':codec'), got {complib!r}"
            )
        if tables.which_lib_version(complib) is None:
            raise ConfigurationError(f"Hdf5DataWriter: complib {complib!r} is not available in this PyTables")
        _number("complevel", complevel, low=0, high=9, integer=True)
        if not isinstance(shuffle, bool):
            raise ConfigurationError(f"Hdf5DataWriter: shuffle must be true or false, got {shuffle!r}")
        self._chunk_rows = _number("chunk_rows", chunk_rows, low=16, high=10_000_000, integer=True)
        self._max_buffer_rows = _number("max_buffer_rows", max_buffer_rows, low=1, high=10**9, integer=True)
        self._tail_rows = _number("replay_tail_rows", replay_tail_rows, low=0, high=10**9, integer=True)
        try:
            self._filters = tables.Filters(
                complevel=complevel, complib=complib, shuffle=shuffle and complevel > 0
            )
        except ValueError as exc:
            raise ConfigurationError(f"Hdf5DataWriter: complib {complib!r}: {exc}") from None
        self._name_given = name
        self._files: dict[Path, _File] = {}
        self._runs: dict[tuple[int, int | None], _Run] = {}
        self._pending = 0
        # Three locks, always taken in this order: ``lock`` (the collector's, around every call),
        # ``_io`` (every HDF5 operation and the file and run registries), ``_buf`` (the buffered
        # rows and their counters).
        self._io = threading.RLock()
        self._buf = threading.Lock()
        self._flush_error: Hdf5WriteError | None = None
        #: samples given up after a flush failed with an error retrying cannot fix (see flush())
        self.samples_discarded = 0
        #: samples taken by :meth:`write` (buffered or on disk) since this writer was created
        self.samples_written = 0
        #: samples on disk after a flush, since this writer was created
        self.samples_flushed = 0
        #: values refused (stored as BAD without value, with the reason as error)
        self.values_refused = 0
        #: samples of replayed batches that were already in the file and were skipped
        self.replayed_skipped = 0
        #: flushes that wrote something, their total, last and longest duration (s)
        self.flushes = 0
        self.flush_seconds = 0.0
        self.last_flush_seconds = 0.0
        self.max_flush_seconds = 0.0
        #: time spent converting batches in :meth:`write` (s)
        self.write_seconds = 0.0

    # -- identity ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name_given if self._name_given is not None else f"Hdf5DataWriter({self.path_template})"

    def __repr__(self) -> str:
        return f"Hdf5DataWriter({self.path_template!r})"

    @property
    def flush_s(self) -> float:
        return self._flush_s

    @property
    def flush_interval_s(self) -> float:  # type: ignore[override]
        """``flush_s``: the collector calls :meth:`flush` at least this often and confirms
        batches to its spool only after a flush stored them."""
        return self._flush_s

    @property
    def pending_samples(self) -> int:
        """Samples taken by :meth:`write` and not yet flushed to disk."""
        return self._pending

    def path_for(self, context_id: int, start: datetime | None = None) -> Path:
        """The file of a run of ``context_id`` that started at ``start`` (aware UTC; default now)."""
        when = start if start is not None else datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return Path(self.path_template.format(context_id=context_id, start=when.astimezone(UTC)))

    # -- lifecycle --------------------------------------------------------------------------------
    def open(self) -> None:
        """Open (or create) the file now when there is one for everything, so that a foreign or
        damaged file is reported at once; per-run files are opened when their run starts."""
        with self.lock, self._io:
            if not self.per_run_files:
                self._file(Path(self.path_template))

    def close(self) -> None:
        """Flush everything buffered and close every file."""
        with self.lock, self._io:
            self._close_files()

    def _close_files(self) -> None:
        errors: list[Hdf5WriteError] = []
        for f in list(self._files.values()):
            try:
                self._flush_io(f)
            except Hdf5WriteError as exc:
                errors.append(exc)
                lost = sum(r.pending_samples for r in f.runs.values())
                _log.error("%s: %d samples could not be written to %s: %s", self.name, lost, f.path, exc)
            try:
                if f.h5 is not None:
                    f.h5.close()
            except Exception as exc:
                errors.append(_failure(f"closing {f.path}", exc))
        self._files.clear()
        self._runs.clear()
        with self._buf:
            self._pending = 0
        self._flush_error = None
        if errors:
            raise errors[0]

    def is_transient(self, exc: BaseException) -> bool:
        """Disk full, quota, a file locked or open elsewhere, I/O errors: transient. A foreign,
        damaged or newer-format file, a directory at the path, a refused value: permanent."""
        if isinstance(exc, Hdf5WriteError):
            return exc.transient
        return super().is_transient(exc)

    # -- hooks ----------------------------------------------------------------------------------
    def context_started(self, context: DataCollectionContext) -> None:
        """Create the run's group (metadata, variables) and flush, so the run is on disk at once."""
        with self.lock:
            run = self._run_for(context)
            with self._io:
                self._flush_io(run.file)

    def context_stopped(self, context: DataCollectionContext) -> None:
        """Record the end and the completed metadata, flush everything of the file, and close a
        per-context or per-run file when no other run of it is open."""
        with self.lock:
            run = self._run_for(context)
            with self._io:
                if run.file.h5 is None:
                    self._reattach(run.file)
                self._record_end(run, context)
                self._flush_io(run.file)
                f = run.file
                f.runs.pop(run.key, None)
                self._runs.pop(run.key, None)
                if self.per_run_files and not f.runs:
                    self._files.pop(f.path, None)
                    try:
                        f.h5.close()
                    except Exception as exc:
                        raise _failure(f"closing {f.path}", exc) from exc

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        """Convert the batch to rows and buffer them; they reach the file at the next flush.

        Raises only when the batch is not taken (nothing of it is kept): the buffer is full and a
        flush fails, or the file cannot be opened. A flush that fails after a batch was taken is
        retried by the writer itself (and reported by the next :meth:`context_stopped`,
        :meth:`flush` or :meth:`close`).
        """
        if not isinstance(variables, CollectedVariables):
            variables = CollectedVariables(variables)
        if len(variables) == 0:
            return
        with self.lock:
            if self._pending >= self._max_buffer_rows:
                self._flush_all(raise_errors=True)
            started = time.perf_counter()
            run = self._run_for(context)
            if not run.dedupe_checked:
                if run.replayed and run.on_disk and self._tail_rows:
                    with self._io:
                        if run.file.h5 is None:
                            self._reattach(run.file)
                        run.dedupe = self._stored_tail(run)
                run.dedupe_checked = True
            if run.dedupe is not None:
                skip, more = run.dedupe.stored_prefix(variables)
                if not more:
                    run.dedupe = None
                if skip:
                    self.replayed_skipped += skip
                    variables = variables[skip:]
                    if len(variables) == 0:
                        return
            refused: list[tuple[Variable, str]] = []
            listed = variables.variables
            if run.last_vars is not None and run.last_vars == listed:  # C loop, identity first
                ids = run.last_ids
            else:  # other variables than the last batch's: record those the run does not know
                ids = variable_ids(listed)
                self._register_variables(run, variables, ids)
                run.last_vars, run.last_ids = list(listed), ids
            parts, samples = encode_batch(variables, refused, ids)
            with self._buf:
                for table, rows in parts.items():
                    run.pending.setdefault(table, []).append(rows)
                run.pending_samples += samples
                self._pending += samples
            self.samples_written += samples
            self.write_seconds += time.perf_counter() - started
            if refused:
                self._log_refused(context, refused)
            if self._flush_s == 0:
                self._flush_all(raise_errors=False)  # a failure keeps the rows for flush()

    def flush(self) -> None:
        """Write everything buffered to disk now; raises :class:`Hdf5WriteError` on failure.

        After a transient failure (disk full, I/O error...) the rows stay buffered and the next
        flush writes them exactly once (cutting back what a failed HDF5 write left behind). After
        a permanent one (the file was replaced by one that is not ours, a table of another row
        type) the rows of that file are given up (counted in :attr:`samples_discarded`), as the
        collector then counts those batches as lost.
        """
        with self.lock:
            self._flush_all(raise_errors=True, discard_on_permanent=True)

    def write_scan_rows(self, rows: ScanRows) -> None:
        """Append the merged rows of a scan point to ``/scans/<name>`` of the scan's file (the file
        of ``rows.context_id`` and ``rows.started``), replacing that point's rows, and flush.

        ``pandas.read_hdf(path, "/scans/<name>")`` reads the table (see the package README).
        """
        with self.lock, self._io:
            f = self._file(self.path_for(rows.context_id, rows.started))
            if f.h5 is None:
                self._reattach(f)
            try:
                store_scan_rows(f.h5, rows, self._filters, self._chunk_rows, self.name)
            except ValueError as exc:
                raise Hdf5WriteError(f"{self.name}: {f.path}: {exc}", transient=False) from exc
            except Exception as exc:
                error = _failure(f"{self.name}: writing {scan_key(rows.scan)} to {f.path}", exc)
                self._detach(f)
                raise error from exc
            f.unflushed = True
            self._flush_io(f)
            if self.per_run_files and not f.runs:
                self._files.pop(f.path, None)
                try:
                    f.h5.close()
                except Exception as exc:
                    raise _failure(f"closing {f.path}", exc) from exc

    # -- runs -------------------------------------------------------------------------------------
    def _run_for(self, context: DataCollectionContext) -> _Run:
        """The run of ``context``: known, found in its file (same context id and start), or new."""
        start_date = context.start_date
        key = (context.id, time_us(start_date) if start_date is not None else None)
        run = self._runs.get(key)
        if run is not None:
            return run
        start = start_date if start_date is not None else datetime.now(UTC)
        _, _, replayed = _sections(context)
        with self._io:
            f = self._file(self.path_for(context.id, start))
            if f.h5 is None:
                self._reattach(f)
            run = _Run(f, key, context.id, 0, time_us(start), None, replayed, on_disk=False, context=context)
            self._attach(run, search=start_date is not None)
            self._runs[key] = run
            f.runs[key] = run
        return run

    def _attach(self, run: _Run, *, search: bool) -> None:
        """Bind ``run`` to its group in the open file: the one with its start, else a new one."""
        f = run.file
        h5 = f.h5
        context = run.context
        cname = context_group_name(run.context_id)
        try:
            cgroup = h5.root._f_get_child(cname) if cname in h5.root else None
            found = None
            numbers = [0]
            if cgroup is not None:
                for child in cgroup._v_groups.values():
                    n = run_number_of(child._v_name)
                    if n is None:
                        continue
                    numbers.append(n)
                    if (
                        search
                        and "start_us" in child._v_attrs
                        and int(child._v_attrs["start_us"]) == run.start_us
                    ):
                        found = (n, child)
            run.tables.clear()
            run.var_ids.clear()
            if found is not None:
                run.number, run.group = found
                run.on_disk = run.on_disk or not run.created
                for name, node in run.group._v_children.items():
                    if split_table_name(name) is not None:
                        run.tables[name] = node
                if "variables" in run.group:
                    run.var_table = run.group._f_get_child("variables")
                    run.var_ids.update(int(x) for x in run.var_table.col("variable_id"))
                else:
                    self._create_variables(run, [])
                missing = [
                    v for v in (*context.variables, *run.extra_vars.values()) if v.id not in run.var_ids
                ]
                if missing:
                    self._append_variables(run, missing)
            else:
                if cgroup is None:
                    cgroup = h5.create_group(h5.root, cname, title=f"runs of context {run.context_id}")
                    cgroup._v_attrs["context_id"] = np.int64(run.context_id)
                run.number = max(numbers) + 1
                run.group = h5.create_group(
                    cgroup, run_group_name(run.number), title=f"context {run.context_id} run {run.number}"
                )
                run.created = True
                user, deduced, replayed = _sections(context)
                start = us_to_datetime(run.start_us)
                assert start is not None
                a = run.group._v_attrs
                a["context_id"] = np.int64(run.context_id)
                a["run"] = np.int64(run.number)
                a["start"] = start.isoformat()
                a["start_us"] = np.int64(run.start_us)
                a["end"] = ""
                a["end_us"] = np.int64(NAT)
                a["ended"] = ""
                a["replayed"] = replayed
                if "start" not in deduced:
                    deduced = {**deduced, "start": start.isoformat()}
                self._set_metadata(run.group, "user_metadata", user)
                self._set_metadata(run.group, "deduced_metadata", deduced)
                self._create_variables(run, [*context.variables, *run.extra_vars.values()])
            f.unflushed = True
        except Exception as exc:
            raise _failure(
                f"{self.name}: preparing the run of context {run.context_id} in {f.path}", exc
            ) from exc

    def _record_end(self, run: _Run, context: DataCollectionContext) -> None:
        _, deduced, replayed = _sections(context)
        group = run.group
        try:
            stored = _read_metadata(group, "deduced_metadata")
            merged = {**stored, **deduced}
            end = context.end_date if context.end_date is not None else datetime.now(UTC)
            merged.setdefault("end", end.astimezone(UTC).isoformat())
            ended = merged.get("ended")
            a = group._v_attrs
            a["end"] = end.astimezone(UTC).isoformat()
            a["end_us"] = np.int64(time_us(end))
            a["ended"] = "" if ended is None else str(ended)
            if replayed:
                a["replayed"] = True
            self._set_metadata(group, "deduced_metadata", merged)
            run.file.unflushed = True
        except Exception as exc:
            raise _failure(f"{self.name}: recording the end of context {context.id}", exc) from exc

    def _set_metadata(self, group: Any, name: str, value: dict[str, Any]) -> None:
        """JSON text in attribute ``name`` (or, when longer than HDF5 attributes allow, in an
        array node of that name), plus one flat attribute per simple top-level value."""
        text = _json(value)
        data = text.encode("utf-8")
        if len(data) <= _MAX_ATTR_BYTES:
            group._v_attrs[name] = text
            if name in group:
                group._f_get_child(name)._f_remove()
        else:
            if name in group._v_attrs:
                del group._v_attrs[name]
            if name in group:
                group._f_get_child(name)._f_remove()
            group._v_file.create_array(group, name, np.array([data]), title=f"{name} (JSON)")
        prefix = "user__" if name == "user_metadata" else "deduced__"
        for key, v in value.items():
            if not _FLAT_KEY.match(key):
                continue
            simple = isinstance(v, bool | float) or (isinstance(v, int) and -(2**63) <= v < 2**63)
            if simple or (isinstance(v, str) and len(v.encode("utf-8")) <= 4096):
                group._v_attrs[prefix + key] = v

    # -- variables ---------------------------------------------------------------------------------
    def _create_variables(self, run: _Run, variables: tuple[Variable, ...] | list[Variable]) -> None:
        widths = {
            k: WIDTHS[0] for k in ("address", "value_type", "reader_type", "name", "unit", "description")
        }
        rows = [self._variable_row(v) for v in variables]
        for row in rows:
            for k, text in _texts(row).items():
                w = width_class(len(text)) or WIDTHS[-1]
                widths[k] = max(widths[k], w)
        dtype = variables_dtype(widths)
        h5 = run.file.h5
        run.var_table = h5.create_table(
            run.group,
            "variables",
            description=dtype,
            title="variables of this run",
            filters=self._filters,
            expectedrows=max(len(rows), 1000),
        )
        if rows:
            run.var_table.append(np.array(rows, dtype=dtype))
        run.var_ids.update(v.id for v in variables)

    @staticmethod
    def _variable_row(v: Variable) -> _VariableRow:
        def text(x: Any) -> bytes:
            return b"" if x is None else str(x).encode("utf-8", "backslashreplace")

        return (
            v.id,
            text(v.address),
            text(v.value_type),
            text(v.reader_type),
            v.interval_ms if v.interval_ms is not None else 0,
            text(v.name),
            text(v.unit),
            text(v.description),
        )

    def _register_variables(self, run: _Run, batch: CollectedVariables, ids: Any) -> None:
        """Record the variables of ``batch`` that the run's ``variables`` table lacks."""
        with self._io:
            known = run.var_ids
            if known.issuperset(ids.tolist()):
                return
            new: dict[int, Variable] = {}
            for v in batch.variables:
                if v.id not in known and v.id not in new:
                    new[v.id] = v
            if run.file.h5 is not None:
                try:
                    self._append_variables(run, list(new.values()))
                except Hdf5WriteError:
                    self._detach(run.file)
                    raise
            run.extra_vars.update(new)
            known.update(new)

    def _append_variables(self, run: _Run, variables: list[Variable]) -> None:
        table = run.var_table
        width = len(table.dtype.names)  # a run begun by format version 1 has no description column
        rows = []
        for v in variables:
            row = self._variable_row(v)
            cut = [
                col
                for col, text in _texts(row).items()
                if col in table.coldtypes and len(text) > table.coldtypes[col].itemsize
            ]
            if cut:
                _log.warning(
                    "%s: variable %d has a %s longer than the run's variables table holds; stored cut",
                    self.name,
                    v.id,
                    " and ".join(cut),
                )
            rows.append(row[:width])
        try:
            table.append(np.array(rows, dtype=table.dtype))
        except Exception as exc:
            raise _failure(f"{self.name}: recording variables of context {run.context_id}", exc) from exc
        run.var_ids.update(v.id for v in variables)
        run.file.unflushed = True

    # -- replay -----------------------------------------------------------------------------------
    def _stored_tail(self, run: _Run) -> _Dedupe | None:
        keys: Counter[tuple[int, int]] = Counter()
        try:
            for name, table in run.tables.items():
                split = split_table_name(name)
                if split is None or split[0] not in SAMPLE_BASES:
                    continue
                n = table.nrows
                first = max(0, n - self._tail_rows)
                if n > first:
                    times = table.read(first, n, field="time_us").tolist()
                    ids = table.read(first, n, field="variable_id").tolist()
                    keys.update(zip(times, ids, strict=True))
        except Exception as exc:
            raise _failure(f"{self.name}: reading the last rows of a replayed run", exc) from exc
        return _Dedupe(keys) if keys else None

    # -- files and flushing ---------------------------------------------------------------------
    def _file(self, path: Path) -> _File:
        f = self._files.get(path)
        if f is not None:
            return f
        f = _File(path, self._open_h5(path))
        self._files[path] = f
        return f

    def _open_h5(self, path: Path) -> Any:
        what = f"{self.name}: opening {path}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = "a"
            if path.exists():
                if path.is_dir():
                    raise Hdf5WriteError(f"{what} failed: it is a directory", transient=False)
                if path.stat().st_size == 0:
                    mode = "w"  # an empty file holds nothing to keep
                elif not tables.is_hdf5_file(str(path)):
                    raise Hdf5WriteError(
                        f"{what} failed: not an HDF5 file; refusing to write to it", transient=False
                    )
            h5 = tables.open_file(str(path), mode=mode, title="data-collector samples")
        except Exception as exc:
            raise _failure(what, exc) from exc
        try:
            self._check_format(h5, path)
        except BaseException:
            with contextlib.suppress(Exception):
                h5.close()
            raise
        return h5

    def _check_format(self, h5: Any, path: Path) -> None:
        try:
            attrs = h5.root._v_attrs
            fmt = str(attrs["dc_format"]) if "dc_format" in attrs else None
            if fmt is None:
                if h5.root._v_children:
                    raise Hdf5WriteError(
                        f"{self.name}: {path} is an HDF5 file of something else (it has nodes and no "
                        f"dc_format attribute); refusing to write to it",
                        transient=False,
                    )
                attrs["dc_format"] = FORMAT
                attrs["dc_format_version"] = np.int64(FORMAT_VERSION)
                attrs["dc_time_unit"] = "time_us: microseconds since 1970-01-01T00:00:00Z"
                attrs["dc_writer"] = f"data-collector {_version()}"
                if flush_checked(h5) is False:
                    raise Hdf5WriteError(
                        f"{self.name}: creating {path} failed ({_space_note(path)})", transient=True
                    )
            elif fmt != FORMAT:
                raise Hdf5WriteError(
                    f"{self.name}: {path} has dc_format {fmt!r}, not {FORMAT!r}; refusing to write to it",
                    transient=False,
                )
            else:
                found = int(attrs["dc_format_version"]) if "dc_format_version" in attrs else 0
                if found > FORMAT_VERSION:
                    raise Hdf5WriteError(
                        f"{self.name}: {path} has format version {found}, newer than this writer's "
                        f"{FORMAT_VERSION}; refusing to write to it",
                        transient=False,
                    )
                if found < FORMAT_VERSION:  # runs added now have the newer layout: say so
                    attrs["dc_format_version"] = np.int64(FORMAT_VERSION)
                    _log.info(
                        "%s: %s: format version %d -> %d (older runs are kept as they are)",
                        self.name,
                        path,
                        found,
                        FORMAT_VERSION,
                    )
        except Exception as exc:
            raise _failure(f"{self.name}: checking {path}", exc) from exc

    def _table(self, run: _Run, name: str, dtype: np.dtype[Any]) -> Any:
        table = run.tables.get(name)
        if table is None:
            table = run.file.h5.create_table(
                run.group,
                name,
                description=dtype,
                title=f"{name} samples of context {run.context_id} run {run.number}",
                filters=self._filters,
                chunkshape=(self._chunk_rows,),
            )
            run.tables[name] = table
        elif table.dtype != dtype:
            raise Hdf5WriteError(
                f"{self.name}: table {table._v_pathname} in {run.file.path} has the row type "
                f"{table.dtype}, not {dtype}; refusing to append to it",
                transient=False,
            )
        return table

    def _flush_io(self, f: _File) -> None:
        """Append the buffered rows of ``f`` to their tables and flush the file (holding ``_io``).

        When HDF5 fails (an append, or the flush: disk full despite the check, quota, I/O error),
        what it holds in memory can no longer be trusted, and PyTables does not roll anything
        back: the file is closed, the rows stay in the buffer, and the next attempt reopens the
        file, cuts each table back to its rows before the failed flush (what lies beyond them was
        never written correctly) and appends the rows again.
        """
        if f.h5 is None:
            self._reattach(f)
        with self._buf:  # what is buffered now; batches buffered meanwhile wait for the next flush
            work = [
                (run, name, list(chunks))
                for run in f.runs.values()
                for name, chunks in run.pending.items()
                if chunks
            ]
        if not work and not f.unflushed:
            return
        self._check_space(f, work)  # touches nothing when it refuses
        started = time.perf_counter()
        try:
            for run, name, arrays in work:
                table = self._table(run, name, arrays[0].dtype)
                run.repair.setdefault(name, int(table.nrows))  # until the flush is confirmed
                f.unflushed = True
                for rows in arrays:  # one array per batch: the GIL is free between them
                    table.append(rows)
            if f.unflushed:
                if flush_checked(f.h5) is False:
                    raise Hdf5WriteError(
                        f"{self.name}: writing to {f.path} failed: HDF5 could not write everything "
                        f"({_space_note(f.path)}); the samples stay buffered and are written again",
                        transient=True,
                    )
                f.unflushed = False
        except Exception as exc:
            error = _failure(f"{self.name}: writing to {f.path}", exc)
            self._detach(f)
            raise error from exc
        for run in f.runs.values():
            run.repair.clear()
        samples = 0
        with self._buf:
            for run, name, arrays in work:
                chunks = run.pending[name]
                del chunks[: len(arrays)]  # only flushes (one at a time) take from the front
                if not name.startswith("errors"):
                    n = sum(len(rows) for rows in arrays)
                    run.pending_samples -= n
                    samples += n
            self._pending -= samples
            self.samples_flushed += samples
        if work:
            elapsed = time.perf_counter() - started
            self.flushes += 1
            self.flush_seconds += elapsed
            self.last_flush_seconds = elapsed
            self.max_flush_seconds = max(self.max_flush_seconds, elapsed)

    def _detach(self, f: _File) -> None:
        """Forget the open file after a failed HDF5 operation (the rows stay buffered)."""
        h5, f.h5 = f.h5, None
        if h5 is not None:
            with contextlib.suppress(Exception):
                h5.close()
        for run in f.runs.values():
            run.group = None
            run.var_table = None
            run.tables.clear()

    def _reattach(self, f: _File) -> None:
        """Reopen a file closed after a failure; bind its runs again and cut the failed rows."""
        h5 = self._open_h5(f.path)
        f.h5 = h5
        try:
            for run in f.runs.values():
                self._attach(run, search=True)
                for name, before in run.repair.items():
                    table = run.tables.get(name)
                    if table is None:
                        continue
                    if table.nrows > before:
                        table.truncate(before)  # rows of the failed flush, not data of ours
                    elif table.nrows < before:
                        _log.error(
                            "%s: table %s in %s has %d rows, %d before the failed flush: rows were lost",
                            self.name,
                            table._v_pathname,
                            f.path,
                            table.nrows,
                            before,
                        )
        except Exception as exc:
            error = _failure(f"{self.name}: reopening {f.path} after a failure", exc)
            self._detach(f)
            raise error from exc
        f.unflushed = True

    def _check_space(self, f: _File, work: list[tuple[_Run, str, list[Rows]]]) -> None:
        """Refuse (transient) a flush that the free disk space cannot hold: PyTables does not
        report every failed write, and a write that fails half way leaves wrong rows behind."""
        need = 0
        for _, _, arrays in work:
            need += sum(rows.nbytes for rows in arrays) + self._chunk_rows * arrays[0].dtype.itemsize
        if not need:
            return
        need += 256 << 10  # metadata, B-tree nodes
        free = _free_bytes(f.path)
        if free is not None and free < need:
            raise Hdf5WriteError(
                f"{self.name}: not flushing to {f.path}: {free:,} bytes free on its file system, up to "
                f"{need:,} needed (no space left on device); the samples stay buffered",
                transient=True,
            )

    def _flush_all(self, *, raise_errors: bool, discard_on_permanent: bool = False) -> None:
        first: Hdf5WriteError | None = None
        with self._io:
            for f in list(self._files.values()):
                try:
                    self._flush_io(f)
                except Hdf5WriteError as exc:
                    first = first or exc
                    if discard_on_permanent and not exc.transient:
                        self._discard(f, exc)
        if first is not None:
            if raise_errors:
                self._flush_error = None
                raise first
            if self._flush_error is None or _gist(self._flush_error) != _gist(first):
                _log.error(
                    "%s: flush failed; the rows stay buffered for the next flush (logged again when "
                    "the reason changes): %s",
                    self.name,
                    first,
                )
            self._flush_error = first
        elif self._flush_error is not None:
            _log.warning("%s: flushing works again", self.name)
            self._flush_error = None

    def _discard(self, f: _File, exc: Hdf5WriteError) -> None:
        """Give up the buffered rows of ``f`` after a permanent failure (holding ``_io``)."""
        samples = 0
        with self._buf:
            for run in f.runs.values():
                samples += run.pending_samples
                run.pending.clear()
                run.pending_samples = 0
            self._pending -= samples
        self.samples_discarded += samples
        _log.error("%s: %d buffered samples for %s are given up: %s", self.name, samples, f.path, exc)

    def _log_refused(self, context: DataCollectionContext, refused: list[tuple[Variable, str]]) -> None:
        self.values_refused += len(refused)
        variable, reason = refused[0]
        _log.error(
            "%s: %d values of context %d refused and stored as BAD without value, e.g. variable %d (%s): %s",
            self.name,
            len(refused),
            context.id,
            variable.id,
            variable.address,
            reason,
        )


_VariableRow = tuple[int, bytes, bytes, bytes, int, bytes, bytes, bytes]


def _texts(row: _VariableRow) -> dict[str, bytes]:
    """The text columns of a ``variables`` row by name."""
    return {
        "address": row[1],
        "value_type": row[2],
        "reader_type": row[3],
        "name": row[5],
        "unit": row[6],
        "description": row[7],
    }


def _gist(exc: BaseException) -> str:
    """``exc``'s message without its numbers (byte counts change from one failure to the next)."""
    return re.sub(r"[0-9,]+", "#", str(exc))


def _free_bytes(path: Path) -> int | None:
    """Bytes free for this process on the file system of ``path`` (None if unknown)."""
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return None


def _space_note(path: Path) -> str:
    free = _free_bytes(path)
    if free is None:
        return "an I/O error, a quota or no space left"
    if free < 1 << 20:
        return f"no space left on device: {free:,} bytes free"
    return f"an I/O error, a quota or no space left; {free:,} bytes free"


def _read_metadata(group: Any, name: str) -> dict[str, Any]:
    """The JSON metadata ``name`` of a run group (attribute or array node), ``{}`` when absent."""
    if name in group._v_attrs:
        raw = group._v_attrs[name]
    elif name in group:
        raw = group._f_get_child(name)[0]
    else:
        return {}
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}
