"""Store-and-forward: a writer's spool on disk, appended before the writer gets a batch.

Layout under ``spool_dir``: one folder per writer (its name, made safe for a file name, plus a
short hash of the name), holding segment files ``<first seq>.seg`` and beside each an
acknowledgement file ``<first seq>.ack``; ``quarantine/`` holds batches that failed with an error
retrying cannot fix.

A segment is a sequence of records, each a fixed header (magic ``DCS1``, kind, payload length,
CRC-32 of the payload, sequence number, context key, samples) and a pickled payload. Kinds: a
context definition (re-written at the head of every new segment for the contexts still open, so
any segment can be read on its own), context started, a data batch, context stopped. The
``.ack`` file lists, as 8-byte little-endian integers, the sequence numbers whose writer call
returned (or that were quarantined); a segment whose records are all acknowledged is deleted.

Durability: appends are flushed and ``fsync``-ed at least every ``sync_s`` seconds (the spooler
does it), and the acknowledgements with them; after a kill -9 a record may be replayed although
its write had returned (at-least-once; stores that can, such as the SQL writer, make writes
idempotent so a replay never duplicates a sample). A torn record at the end of a segment is
detected by its length and CRC and ignored.

The spool is private to this library and holds pickles: point ``spool_dir`` only at a folder
that no one else writes to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import re
import struct
import threading
import time
import types
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError
from ._model import CollectedVariables, DataCollectionContext, Quality, Variable

__all__ = [
    "Spool",
    "SpoolInfo",
    "SpoolRecord",
    "drop_spool",
    "inspect_spool",
    "retry_quarantine",
    "spool_folder_name",
]

_MAGIC = b"DCS1"
_HEADER = struct.Struct("<4sB3xIIQqId")  # magic, kind, length, crc, seq, key, samples, spooled at
KIND_CONTEXT, KIND_STARTED, KIND_DATA, KIND_STOPPED = 1, 2, 3, 4
#: A marker written at the head of every new segment for each context whose start is spooled and
#: whose stop is not: once the segment holding its KIND_STARTED record is acknowledged and deleted,
#: a replay still knows that the run had not ended (never acknowledged, never replayed as a call).
KIND_OPEN = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_QUALITIES = (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD)
_QINDEX = {q: i for i, q in enumerate(_QUALITIES)}
_GOOD = Quality.GOOD
_SEGMENT_BYTES = 64 * 1024 * 1024


def spool_folder_name(writer_name: str) -> str:
    """A file-name-safe folder for ``writer_name``, stable across runs and distinct per name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", writer_name).strip("._")[:60] or "writer"
    digest = hashlib.sha256(writer_name.encode()).hexdigest()[:10]
    return f"{safe}-{digest}"


def _us(t: datetime | None) -> int:
    assert t is not None
    return (t - _EPOCH) // _US


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _encode_variable(v: Variable) -> tuple[Any, ...]:
    """``(id, address, value_type, reader_type, interval_ms)``, plus a dict of the keyword-only
    fields (name, unit, description...) that differ from their default, when any does."""
    base = (v.id, v.address, v.value_type, v.reader_type, v.interval_ms)
    extras = {
        f.name: getattr(v, f.name)
        for f in dataclasses.fields(v)
        if f.init and f.kw_only and getattr(v, f.name) != f.default
    }
    return (*base, extras) if extras else base


def _decode_variable(v: Sequence[Any]) -> Variable:
    """Inverse of :func:`_encode_variable` (a spool written before the extras has 5-tuples)."""
    return Variable(*v[:5], **(v[5] if len(v) > 5 else {}))


def encode_context(context: DataCollectionContext) -> dict[str, Any]:
    return {
        "id": context.id,
        "variables": [_encode_variable(v) for v in context.variables],
        "min_interval_ms": context.min_interval_ms,
        "default_interval_ms": context.default_interval_ms,
        "duration_s": context.duration_s,
        "metadata": dict(context.metadata),
        "start_date": _us(context.start_date) if context.start_date is not None else None,
        "deduced": dict(context.deduced_metadata),
    }


def decode_context(d: dict[str, Any], deduced: dict[str, Any] | None = None) -> DataCollectionContext:
    """The context of a spooled definition; ``deduced`` is added to its deduced metadata."""
    metadata = dict(d["metadata"])
    context = DataCollectionContext(
        d["id"],
        [_decode_variable(v) for v in d["variables"]],
        min_interval_ms=d["min_interval_ms"],
        default_interval_ms=d["default_interval_ms"],
        duration_s=d["duration_s"],
        metadata=metadata,
    )
    if d["start_date"] is not None:
        context._start_date = _dt(d["start_date"])
    context._deduced = types.MappingProxyType({**d.get("deduced", {}), **(deduced or {})})
    return context


def encode_batch(batch: CollectedVariables) -> tuple[Any, ...]:
    n = len(batch)
    ids = array("q", [v.id for v in batch.variables])
    read_ats = batch.read_ats
    first = read_ats[0] if n else None
    times: int | list[int] = _us(first) if n and read_ats.count(first) == n else [_us(t) for t in read_ats]
    qualities = batch.qualities
    qbytes = None if qualities.count(_GOOD) == n else bytes(_QINDEX[q] for q in qualities)
    errors = batch.errors
    errs = None if errors.count(None) == n else errors
    return (ids.tobytes(), batch.values, times, qbytes, errs)


def decode_batch(payload: tuple[Any, ...], context: DataCollectionContext) -> CollectedVariables:
    raw_ids, values, times, qbytes, errs = payload
    ids = array("q")
    ids.frombytes(raw_ids)
    n = len(ids)
    by_id = {v.id: v for v in context.variables}
    variables = [by_id[i] for i in ids]
    read_ats: list[datetime | None] = [_dt(times)] * n if isinstance(times, int) else [_dt(t) for t in times]
    qualities = [_GOOD] * n if qbytes is None else [_QUALITIES[b] for b in qbytes]
    errors: list[str | None] = [None] * n if errs is None else list(errs)
    return CollectedVariables._columns(variables, list(values), read_ats, qualities, errors)


@dataclass
class SpoolRecord:
    """Where one record lives: enough to read it back and to acknowledge it."""

    seq: int
    kind: int
    key: int
    samples: int
    segment: int  # the segment's first seq (its file name)
    offset: int
    length: int
    at: float = 0.0  # wall-clock seconds when it was spooled (for the age of the oldest)


@dataclass
class _Segment:
    first: int
    path: Path
    ack_path: Path
    size: int = 0
    pending: set[int] = field(default_factory=set)  # ackable seqs not acknowledged yet
    samples: int = 0  # samples of its pending data records


@dataclass
class Replayed:
    """What a spool held at open: contexts by key, pending records in order, open contexts."""

    contexts: dict[int, dict[str, Any]]
    records: list[SpoolRecord]
    open_keys: set[int]


class Spool:
    """The spool of one writer. Thread-safe; appends and syncs come from the writer's spooler."""

    def __init__(self, folder: Path, *, max_bytes: int, sync_s: float) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.sync_s = sync_s
        # segments small enough that dropping the oldest keeps the spool near its bound
        self.segment_bytes = max(64 * 1024, min(_SEGMENT_BYTES, max_bytes // 8))
        self._lock = threading.RLock()
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._file: Any = None
        self._ack_file: Any = None
        self._next_seq = 1
        self._contexts: dict[int, dict[str, Any]] = {}  # open contexts (key -> definition)
        self._started: set[int] = set()  # contexts whose start is spooled and whose stop is not
        self._pending: dict[int, SpoolRecord] = {}  # seq -> record, every unacknowledged one
        self._dirty = False
        self._last_sync = time.monotonic()
        self.bytes = 0
        self.samples = 0
        self.dropped_records: set[int] = set()
        self.quarantined_batches = 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "quarantine").mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"spool folder {str(folder)!r} cannot be created: {exc}") from exc
        self._lock_file = _lock(folder)

    # -- opening: what an earlier run left -------------------------------------------------------
    def replay(self) -> Replayed:
        """Read every segment; return the contexts and the records not acknowledged yet, in order."""
        with self._lock:
            contexts: dict[int, dict[str, Any]] = {}
            records: list[SpoolRecord] = []
            started: set[int] = set()
            stopped: set[int] = set()
            for seg_path in sorted(self.folder.glob("*.seg")):
                try:
                    first = int(seg_path.stem)
                except ValueError:
                    continue
                seg = _Segment(first, seg_path, seg_path.with_suffix(".ack"))
                acked = self._read_acks(seg.ack_path)
                valid_end = 0
                for rec, payload, end in self._scan(seg_path, first):
                    valid_end = end
                    self._next_seq = max(self._next_seq, rec.seq + 1)
                    if rec.kind == KIND_CONTEXT:
                        contexts[rec.key] = pickle.loads(payload)
                        continue
                    if rec.kind == KIND_OPEN:
                        started.add(rec.key)
                        continue
                    if rec.kind == KIND_STARTED:
                        started.add(rec.key)
                    elif rec.kind == KIND_STOPPED:
                        stopped.add(rec.key)
                    if rec.seq in acked:
                        continue
                    seg.pending.add(rec.seq)
                    seg.samples += rec.samples
                    self._pending[rec.seq] = rec
                    records.append(rec)
                size = seg_path.stat().st_size
                if valid_end < size:  # a torn tail (kill -9 mid-append): cut it off
                    with open(seg_path, "r+b") as f:
                        f.truncate(valid_end)
                seg.size = valid_end
                self.bytes += valid_end
                self.samples += seg.samples
                self._segments[first] = seg
            pending_keys = {r.key for r in self._pending.values()}
            self._contexts = {
                k: v for k, v in contexts.items() if k in pending_keys or (k in started and k not in stopped)
            }
            for seg in list(self._segments.values()):
                if not seg.pending:
                    self._delete(seg)
            open_keys = {k for k in started if k not in stopped and k in contexts}
            self._started = set(open_keys)  # still open: carried into the segments of this run
            return Replayed(contexts, records, open_keys)

    @staticmethod
    def _read_acks(path: Path) -> set[int]:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return set()
        raw = raw[: len(raw) - len(raw) % 8]
        a = array("q")
        a.frombytes(raw)
        return set(a)

    @staticmethod
    def _scan(path: Path, first: int) -> Iterator[tuple[SpoolRecord, bytes, int]]:
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + _HEADER.size <= len(data):
            magic, kind, length, crc, seq, key, samples, at = _HEADER.unpack_from(data, pos)
            start = pos + _HEADER.size
            end = start + length
            if magic != _MAGIC or end > len(data):
                return
            payload = data[start:end]
            if zlib.crc32(payload) != crc:
                return
            yield SpoolRecord(seq, kind, key, samples, first, start, length, at), payload, end
            pos = end

    # -- appending ---------------------------------------------------------------------------------
    def append_context(self, context: DataCollectionContext) -> int:
        """Record a context's definition; returns its key (unique in this spool across runs)."""
        with self._lock:
            key = self._next_seq
            self.append(KIND_CONTEXT, key, encode_context(context))
            return key

    def append(self, kind: int, key: int, payload: Any, samples: int = 0) -> SpoolRecord:
        """Append one record (context definitions are written once per segment, never acknowledged)."""
        blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if kind == KIND_CONTEXT:
                self._contexts[key] = payload
            seg = self._segment_for(len(blob))
            rec = self._write(seg, kind, key, blob, samples)
            if kind != KIND_CONTEXT:
                seg.pending.add(rec.seq)
                seg.samples += samples
                self.samples += samples
                self._pending[rec.seq] = rec
            if kind == KIND_STARTED:
                self._started.add(key)
            elif kind == KIND_STOPPED:
                self._started.discard(key)
            self._enforce_max_bytes()
            if kind in (KIND_STARTED, KIND_STOPPED):  # rare and what a replay needs: on disk at once
                self.sync(force=True)
            return rec

    def _write(self, seg: _Segment, kind: int, key: int, blob: bytes, samples: int) -> SpoolRecord:
        seq = self._next_seq
        self._next_seq += 1
        now = time.time()
        header = _HEADER.pack(_MAGIC, kind, len(blob), zlib.crc32(blob), seq, key, samples, now)
        offset = seg.size + _HEADER.size
        self._file.write(header)
        self._file.write(blob)
        seg.size += _HEADER.size + len(blob)
        self.bytes += _HEADER.size + len(blob)
        self._dirty = True
        return SpoolRecord(seq, kind, key, samples, seg.first, offset, len(blob), now)

    def _segment_for(self, size: int) -> _Segment:
        seg = self._active
        if seg is not None and seg.size + size <= self.segment_bytes:
            return seg
        self._close_active()
        if seg is not None and not seg.pending:  # acknowledged while it was active: done with it
            self._delete(seg)
        first = self._next_seq
        path = self.folder / f"{first:016d}.seg"
        seg = _Segment(first, path, path.with_suffix(".ack"))
        self._segments[first] = seg
        self._active = seg
        self._file = open(path, "ab")  # noqa: SIM115 - kept open across appends
        self._ack_file = open(seg.ack_path, "ab")  # noqa: SIM115
        for key, definition in list(self._contexts.items()):  # every segment readable on its own
            self._write(seg, KIND_CONTEXT, key, pickle.dumps(definition, protocol=pickle.HIGHEST_PROTOCOL), 0)
            if key in self._started:
                self._write(seg, KIND_OPEN, key, pickle.dumps(None), 0)
        return seg

    def _close_active(self) -> None:
        for f in (self._file, self._ack_file):
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
                f.close()
        self._file = self._ack_file = None
        self._active = None

    def sync(self, force: bool = False) -> bool:
        """Flush and fsync when ``sync_s`` passed since the last sync (or ``force``); True if synced."""
        with self._lock:
            now = time.monotonic()
            if not self._dirty or (not force and now - self._last_sync < self.sync_s):
                return False
            for f in (self._file, self._ack_file):
                if f is not None:
                    f.flush()
                    os.fsync(f.fileno())
            self._dirty = False
            self._last_sync = now
            return True

    def read(self, rec: SpoolRecord) -> Any:
        """The payload of ``rec`` read back from disk."""
        with self._lock:
            if self._file is not None and rec.segment == self._active_first():
                self._file.flush()
            with open(self._segments[rec.segment].path, "rb") as f:
                f.seek(rec.offset)
                blob = f.read(rec.length)
        return pickle.loads(blob)

    def _active_first(self) -> int | None:
        return self._active.first if self._active is not None else None

    # -- acknowledging ----------------------------------------------------------------------------
    def ack(self, rec: SpoolRecord) -> None:
        """The writer call of ``rec`` returned (or it was quarantined): it leaves the spool."""
        with self._lock:
            if self._pending.pop(rec.seq, None) is None:
                return  # dropped meanwhile (spool full)
            seg = self._segments.get(rec.segment)
            if seg is None:
                return
            seg.pending.discard(rec.seq)
            seg.samples -= rec.samples
            self.samples -= rec.samples
            if rec.kind == KIND_STOPPED:
                self._contexts.pop(rec.key, None)
            if not seg.pending and seg is not self._active:
                self._delete(seg)
            else:
                ack_file = self._ack_file if seg is self._active else None
                if ack_file is not None:
                    ack_file.write(struct.pack("<q", rec.seq))
                else:
                    with open(seg.ack_path, "ab") as f:
                        f.write(struct.pack("<q", rec.seq))
                self._dirty = True

    def quarantine(self, rec: SpoolRecord, reason: str) -> Path:
        """Keep a batch that failed for good in ``quarantine/``, with the reason; then acknowledge it."""
        payload = self.read(rec)
        context = self._contexts.get(rec.key)
        path = self.folder / "quarantine" / f"{rec.seq:016d}.q"
        blob = pickle.dumps(
            {"reason": reason, "kind": rec.kind, "context": context, "payload": payload, "at": time.time()},
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with self._lock:
            self.quarantined_batches += 1
        self.ack(rec)
        return path

    # -- bounds -------------------------------------------------------------------------------------
    def _enforce_max_bytes(self) -> None:
        while self.bytes > self.max_bytes and len(self._segments) > 1:
            oldest = self._segments[min(self._segments)]
            if oldest is self._active:
                return
            for seq in oldest.pending:
                rec = self._pending.pop(seq, None)
                if rec is not None:
                    self.dropped_records.add(seq)
            self.samples -= oldest.samples
            self._delete(oldest)

    def _delete(self, seg: _Segment) -> None:
        self._segments.pop(seg.first, None)
        self.bytes -= seg.size
        for p in (seg.path, seg.ack_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def oldest_age_s(self) -> float:
        with self._lock:
            if not self._pending:
                return 0.0
            oldest = self._pending[min(self._pending)]
        return max(0.0, time.time() - oldest.at)

    def close(self) -> None:
        with self._lock:
            self._close_active()
            for seg in list(self._segments.values()):
                if not seg.pending:
                    self._delete(seg)
            if self._lock_file is not None:
                self._lock_file.close()  # releases the lock
                self._lock_file = None


def _lock(folder: Path) -> Any:
    """Hold an exclusive lock on ``folder`` (one collector per spool), or ConfigurationError."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    f = open(folder / ".lock", "a+")  # noqa: SIM115 - held open while the spool is in use
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        who = f" (pid {holder})" if holder else ""
        raise ConfigurationError(
            f"spool folder {str(folder)!r} is in use by another collector{who}"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


# -- inspection and maintenance (the `data-collector spool` command) -------------------------------


@dataclass(frozen=True)
class SpoolInfo:
    """What one writer's spool holds: pending samples and records, bytes, age, quarantine."""

    folder: Path
    samples: int
    records: int
    bytes: int
    oldest: datetime | None
    quarantined: int
    quarantine_reasons: tuple[str, ...]


def _writer_folders(spool_dir: Path) -> list[Path]:
    return sorted(p for p in spool_dir.iterdir() if p.is_dir() and (p / "quarantine").is_dir())


def inspect_spool(spool_dir: str | os.PathLike[str]) -> list[SpoolInfo]:
    """Read (never change) every writer's spool under ``spool_dir``."""
    root = Path(spool_dir)
    if not root.is_dir():
        raise ConfigurationError(f"spool folder {str(root)!r} does not exist")
    out = []
    for folder in _writer_folders(root):
        samples = records = size = 0
        oldest: float | None = None
        for seg_path in sorted(folder.glob("*.seg")):
            try:
                first = int(seg_path.stem)
            except ValueError:
                continue
            acked = Spool._read_acks(seg_path.with_suffix(".ack"))
            size += seg_path.stat().st_size
            for rec, _, _ in Spool._scan(seg_path, first):
                if rec.kind in (KIND_CONTEXT, KIND_OPEN) or rec.seq in acked:
                    continue
                records += 1
                samples += rec.samples
                oldest = rec.at if oldest is None else min(oldest, rec.at)
        reasons = []
        quarantined = sorted((folder / "quarantine").glob("*.q"))
        for q in quarantined[:20]:
            try:
                reasons.append(str(pickle.loads(q.read_bytes())["reason"]))
            except Exception as exc:  # a damaged file is reported, not fatal
                reasons.append(f"(unreadable: {exc})")
        out.append(
            SpoolInfo(
                folder,
                samples,
                records,
                size,
                datetime.fromtimestamp(oldest, UTC) if oldest is not None else None,
                len(quarantined),
                tuple(reasons),
            )
        )
    return out


def retry_quarantine(spool_dir: str | os.PathLike[str]) -> int:
    """Put every quarantined batch back into its writer's spool (written at the next start)."""
    count = 0
    for folder in _writer_folders(Path(spool_dir)):
        files = sorted((folder / "quarantine").glob("*.q"))
        if not files:
            continue
        spool = Spool(folder, max_bytes=1 << 50, sync_s=1.0)
        spool.replay()
        try:
            for q in files:
                item = pickle.loads(q.read_bytes())
                definition = item.get("context")
                if definition is None or item.get("kind") != KIND_DATA:
                    q.unlink()
                    continue
                key = spool.append_context(decode_context(definition))
                ids = array("q")
                ids.frombytes(item["payload"][0])
                spool.append(KIND_DATA, key, item["payload"], len(ids))
                spool.sync(force=True)
                q.unlink()
                count += 1
        finally:
            spool.close()
    return count


def drop_spool(spool_dir: str | os.PathLike[str]) -> int:
    """Delete everything spooled and quarantined under ``spool_dir``; returns the files removed."""
    count = 0
    for folder in _writer_folders(Path(spool_dir)):
        for p in [*folder.glob("*.seg"), *folder.glob("*.ack"), *(folder / "quarantine").glob("*.q")]:
            p.unlink()
            count += 1
    return count
