"""The archive writer: one file per batch, per sample or per variable, named by a Jinja2 template.

``write()`` works in two phases. First every file of the batch is planned: its path rendered and
checked, its content encoded; a template or value error (permanent) fails the batch before any
file is written. Then each file is committed (:meth:`ArchiveStore.commit`: temporary file,
fsync, exclusive link, journal) and every folder linked into is fsync-ed before ``write()``
returns. Files committed by a ``write()`` that then failed are remembered, so the collector's
retry of that batch skips them; after a crash, a batch replayed from the spool skips the samples
the journal records as committed. README.md states the guarantees.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from data_collector import (
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataWriter,
)

from ._errors import ArchiveWriteError
from ._formats import EXTENSIONS, FORMATS, Dump, Sample, encode
from ._store import ArchiveStore, Keys, RunKey, failed, fsync_dir, is_transient_oserror
from ._template import DEFAULT_TEMPLATES, PathTemplate, fields, split_relative

__all__ = ["PER", "REPLAY_KEY", "ArchiveDataWriter"]

_log = logging.getLogger("data_writer.archive")

#: Deduced-metadata key by which the collector marks a context rebuilt from its spool (a replay).
REPLAY_KEY = "replayed_from_spool"
PER = ("sample", "variable", "batch")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_NUMERIC = frozenset({"float", "int", "bool"})


def _us(t: datetime | None) -> int | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // _US


@dataclass
class _Unit:
    parts: tuple[str, ...]
    dump: Dump
    keys: Keys
    seq: int


class ArchiveDataWriter(DataWriter):
    """Archives samples as files under ``root``, one per sample, per variable or per batch.

    ``root``: the archive's folder (created at :meth:`open`, not before). ``template``: a Jinja2
    template of each file's path relative to ``root`` (defaults: :data:`DEFAULT_TEMPLATES`).
    ``per``: ``"sample"`` (one file per sample), ``"variable"`` (one per variable and batch) or
    ``"batch"`` (one per batch). ``format``: ``"npy"``, ``"json"`` or ``"csv"``. ``name``: the
    writer's name (its spool folder and its state folder under ``root/.archive``; by default
    ``ArchiveDataWriter(<root>)``). See ``data_writer/archive/README.md``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        template: str | None = None,
        *,
        per: Literal["sample", "variable", "batch"] = "sample",
        format: Literal["npy", "json", "csv"] = "npy",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        try:
            text = os.fspath(root)
        except TypeError:
            raise ConfigurationError(f"ArchiveDataWriter: root must be a str or path, got {root!r}") from None
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(f"ArchiveDataWriter: root must be a non-empty path, got {root!r}")
        if per not in PER:
            raise ConfigurationError(f"ArchiveDataWriter: per must be one of {', '.join(PER)}, got {per!r}")
        if format not in FORMATS:
            raise ConfigurationError(
                f"ArchiveDataWriter: format must be one of {', '.join(FORMATS)}, got {format!r}"
            )
        self.root = Path(text)
        self.per: str = per
        self.format: str = format
        self.ext = EXTENSIONS[format]
        self.template = PathTemplate(
            DEFAULT_TEMPLATES[per] if template is None else template, per, f"ArchiveDataWriter({text})"
        )
        self._store: ArchiveStore | None = None
        self._pending: dict[RunKey, Counter[tuple[int, int | None]]] = {}
        self._replayed: dict[RunKey, Counter[tuple[int, int | None]]] = {}
        self._warned_no_value: set[tuple[int, int]] = set()
        self._opened_at: datetime | None = None  # when this writer first opened its root
        #: files committed since this writer was made
        self.files_written = 0
        #: samples in committed files
        self.samples_written = 0
        #: samples skipped because a file of theirs was already committed (a retry or a replay)
        self.samples_skipped = 0
        #: samples without a value that got no file (``per = "sample"`` with ``format = "npy"``)
        self.samples_without_file = 0

    @property
    def name(self) -> str:
        given: str | None = self.__dict__.get("_dc_name")
        return given if given is not None else f"ArchiveDataWriter({self.root})"

    def __repr__(self) -> str:
        return (
            f"ArchiveDataWriter({str(self.root)!r}, {self.template.source!r}, per={self.per!r}, "
            f"format={self.format!r})"
        )

    # -- life cycle ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the root, take this writer's lock in it, read its numbers, settle a crash."""
        with self.lock:
            self._ensure_open()

    def _ensure_open(self) -> ArchiveStore:
        if self._store is not None:
            return self._store
        store = ArchiveStore(self.root, self.name)
        store.open()
        if self._opened_at is None:
            self._opened_at = datetime.now(UTC)
        for line in store.recovered:
            _log.warning("%s: %s", self.name, line)
        self._store = store
        return store

    def close(self) -> None:
        with self.lock:
            store, self._store = self._store, None
            if store is not None:
                store.close()

    def context_started(self, context: DataCollectionContext) -> None:
        """Check the template against ``context`` (see :meth:`check_context`)."""
        with self.lock:
            self._ensure_open()
            self.check_context(context)

    def context_stopped(self, context: DataCollectionContext) -> None:
        with self.lock:
            run = self._run_key(context)
            self._pending.pop(run, None)
            self._replayed.pop(run, None)
            if self._store is not None:
                try:
                    self._store.sync_journal(force=True)
                except OSError as exc:
                    raise failed(f"archive {self.root}: syncing the journal", exc) from exc

    def is_transient(self, exc: BaseException) -> bool:
        """Failed file operations are transient (disk full, read-only or unwritable folder, I/O
        error...), except the errnos of :data:`PERMANENT_ERRNOS`; template, path and value errors
        are permanent."""
        if isinstance(exc, ArchiveWriteError):
            return exc.transient
        if isinstance(exc, ConfigurationError):
            return False
        if isinstance(exc, OSError):
            return is_transient_oserror(exc)
        return isinstance(exc, TimeoutError)

    # -- checking templates -----------------------------------------------------------------------
    def check_context(self, context: DataCollectionContext) -> None:
        """Render the template for ``context`` (each of its variables unless ``per = "batch"``) and
        check the paths; :class:`ConfigurationError` names the unknown field, the syntax or the
        unsafe path. The collector calls it through :meth:`context_started`; call it yourself
        before ``start()`` to refuse a context at once."""
        where = f"{self.name}: context {context.id}"
        missing = sorted(n for n in self.template.metadata_names if n not in context.metadata)
        if missing:
            known = ", ".join(sorted(context.metadata)) or "none"
            raise ConfigurationError(
                f"{where}: template {self.template.source!r} uses {', '.join(missing)}, which is neither a "
                f"field of the archive writer nor a key of the context's metadata (its keys: {known})",
                context_id=context.id,
                field="template",
            )
        at = context.start_date or datetime.now(UTC)
        seq = self._store.next_seq if self._store is not None else 1
        if self.per == "batch":
            text = self.template.render(fields(context, read_at=at, seq=seq, ext=self.ext, per=self.per))
            split_relative(text, where)
        else:
            for v in context.variables:
                values = fields(context, read_at=at, seq=seq, ext=self.ext, per=self.per, variable=v)
                split_relative(self.template.render(values), f"{where}, variable {v.id}")
        if self.format == "npy" and self.per == "batch":
            types = {v.value_type for v in context.variables}
            if "str" in types and types & _NUMERIC:
                raise ConfigurationError(
                    f'{where}: per = "batch" with format = "npy" keeps one value column per file, but the '
                    'context has text (str) and number variables: use per = "variable" or format = "json"',
                    context_id=context.id,
                    field="format",
                )

    # -- writing ------------------------------------------------------------------------------------------
    @staticmethod
    def _run_key(context: DataCollectionContext) -> RunKey:
        return (context.id, _us(context.start_date))

    def _skip(
        self, context: DataCollectionContext, run: RunKey, store: ArchiveStore
    ) -> Counter[tuple[int, int | None]]:
        skip = Counter(self._pending.get(run, ()))
        start = context.start_date
        # a run this writer may have archived before it was opened: rebuilt from the spool after a
        # crash, put back from the spool's quarantine, or a direct caller's: skip what the journal
        # records (a run started since is new: nothing to look up)
        opened = _us(self._opened_at)
        earlier = start is None or opened is None or (_us(start) or 0) <= opened
        if context.deduced_metadata.get(REPLAY_KEY) is True or earlier:
            replayed = self._replayed.get(run)
            if replayed is None:
                replayed = self._replayed[run] = store.committed_keys(run)
            skip |= replayed
        return skip

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        with self.lock:
            if not len(variables):
                return
            store = self._ensure_open()
            run = self._run_key(context)
            keys: Keys = [
                (v.id, _us(t)) for v, t in zip(variables.variables, variables.read_ats, strict=True)
            ]
            skip = self._skip(context, run, store)
            if skip:
                seen: Counter[tuple[int, int | None]] = Counter()
                indexes = []
                for i, key in enumerate(keys):
                    seen[key] += 1
                    if seen[key] > skip[key]:
                        indexes.append(i)
                skipped = len(keys) - len(indexes)
                if skipped:
                    self.samples_skipped += skipped
                    _log.info(
                        "%s: context %d: %d samples of this batch are in files already committed "
                        "(a retry or a replay); not written again",
                        self.name,
                        context.id,
                        skipped,
                    )
            else:
                indexes = list(range(len(keys)))
            units, no_file = self._plan(context, variables, indexes, keys, store)
            self._commit(context, run, units, store)
            self.samples_without_file += no_file

    def _plan(
        self,
        context: DataCollectionContext,
        batch: CollectedVariables,
        indexes: list[int],
        keys: Keys,
        store: ArchiveStore,
    ) -> tuple[list[_Unit], int]:
        """Every file of the batch, rendered, checked and encoded (nothing written yet), and how
        many samples get no file (no value, ``.npy`` per sample)."""
        where = f"{self.name}: context {context.id}"
        vs, values, times, qualities, errors = (
            batch.variables,
            batch.values,
            batch.read_ats,
            batch.qualities,
            batch.errors,
        )
        groups: list[list[int]]
        no_file = 0
        if self.per == "sample":
            groups = []
            for i in indexes:
                if values[i] is None and self.format == "npy":
                    self._no_file(context, i, batch)  # logged once; counted when the batch is done
                    no_file += 1
                    continue
                groups.append([i])
        elif self.per == "variable":
            by_var: dict[int, list[int]] = {}
            for i in indexes:
                by_var.setdefault(vs[i].id, []).append(i)
            groups = list(by_var.values())
        else:
            groups = [indexes] if indexes else []
        units = []
        for group in groups:
            first = group[0]
            variable = None if self.per == "batch" else vs[first]
            at = times[first] or datetime.now(UTC)
            try:
                seq = store.take_seq()
            except OSError as exc:
                raise failed(f"archive {self.root}: reserving sequence numbers", exc) from exc
            text = self.template.render(
                fields(context, read_at=at, seq=seq, ext=self.ext, per=self.per, variable=variable)
            )
            parts = split_relative(text, where if variable is None else f"{where}, variable {variable.id}")
            samples = [Sample(vs[i], values[i], times[i], qualities[i], errors[i]) for i in group]
            dump = encode(self.format, self.per, context.id, samples, f"{where}: {text}")
            units.append(_Unit(parts, dump, [keys[i] for i in group], seq))
        return units, no_file

    def _no_file(self, context: DataCollectionContext, i: int, batch: CollectedVariables) -> None:
        key = (context.id, batch.variables[i].id)
        if key not in self._warned_no_value:
            self._warned_no_value.add(key)
            _log.warning(
                "%s: context %d, variable %d: a sample without a value (%s: %s) has no .npy file "
                '(per = "sample"); such samples are counted in samples_without_file, this is said once',
                self.name,
                context.id,
                batch.variables[i].id,
                batch.qualities[i].value,
                batch.errors[i],
            )

    def _commit(
        self, context: DataCollectionContext, run: RunKey, units: list[_Unit], store: ArchiveStore
    ) -> None:
        folders: dict[tuple[str, ...], int] = {}
        linked: dict[tuple[str, ...], list[Keys]] = {}
        error: BaseException | None = None
        current = ""
        try:
            # every folder first (created, checked to lie inside the root): a folder that is refused
            # or cannot be made fails the batch before any of its files is written
            for unit in units:
                folder = unit.parts[:-1]
                if folder not in folders:
                    current = "/".join(folder)
                    folders[folder] = store.open_dir(folder)
            for unit in units:
                folder = unit.parts[:-1]
                current = "/".join(unit.parts)
                fd = folders[folder]

                def on_linked(final: str, unit: _Unit = unit, folder: tuple[str, ...] = folder) -> None:
                    linked.setdefault(folder, []).append(unit.keys)
                    self.files_written += 1
                    self.samples_written += len(unit.keys)

                store.commit(
                    fd, "/".join(folder), unit.parts[-1], unit.dump, run, unit.keys, unit.seq, on_linked
                )
        except BaseException as exc:
            error = exc
        done: Counter[tuple[int, int | None]] = Counter()
        for folder, keyss in linked.items():
            try:
                fsync_dir(folders[folder])
            except OSError as exc:  # those files are not known durable: not counted done
                if error is None:
                    error, current = exc, "/".join(folder)
                continue
            for k in keyss:
                done.update(k)
        for fd in folders.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        if error is None:
            try:
                store.sync_journal()
            except OSError as exc:
                error = exc
        if error is None:
            self._pending.pop(run, None)
            return
        if done:
            self._pending.setdefault(run, Counter()).update(done)
        if isinstance(error, OSError):
            raise failed(f"archive {self.root}: writing {current or 'a file'}", error) from error
        raise error
