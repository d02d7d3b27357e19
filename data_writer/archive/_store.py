"""The archive's file system side: folders inside the root, exclusive durable files, journal, numbers.

Layout under the root::

    <root>/<rendered paths>                  the archive's files (never overwritten)
    <root>/.archive/<writer folder>/lock     held (flock) while a writer has the root open
    <root>/.archive/<writer folder>/seq      the next free sequence number (reserved in blocks)
    <root>/.archive/<writer folder>/journal.jsonl, journal.1.jsonl    what was committed

Committing one file (:meth:`ArchiveStore.commit`): a journal line records the intent (sequence
number, context run, the samples' keys, the temporary name); the content goes to a hidden
temporary file ``.dc-archive-<random>.tmp`` in the target folder, which is flushed and
``fsync``-ed; ``link()`` gives the file its final name, which fails rather than replace an existing file (then
``name-1.ext``, ``name-2.ext``, ... are tried); a journal line records the final name; the
temporary name is removed. The writer ``fsync``-s every folder it linked into before its
``write()`` returns. On a file system without hard links, the final name is reserved with
``O_CREAT | O_EXCL`` and the temporary file renamed onto it.

Recovery: the journal is appended one line per step (no buffering), so after a process crash
(``kill -9``) it shows exactly whether the last file was linked: an intent without its commit
line is resolved at the next :meth:`ArchiveStore.open` by the temporary file (still there with a
second link: committed, its final name found by inode; there with one link: not committed,
removed; gone: not committed), so no temporary file outlives a crash unnoticed. The journal is
``fsync``-ed at most once a second (and at close), so after a power failure its last lines may be
missing: files of that last second may then be written again under a suffixed name, never lost
and never overwritten.

Folders: every folder of a rendered path is opened component by component from the root's file
descriptor, created when missing, and checked (``/proc/self/fd``, else ``realpath``) to lie
inside the root's real path after symbolic links are followed; a folder outside is refused with
:class:`UnsafePathError`. Files are created and linked relative to the checked folder's
descriptor (``dir_fd``), never through a path that could be swapped meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from ._errors import ArchiveWriteError
from ._template import STATE_DIR, UnsafePathError

__all__ = [
    "JOURNAL_ROTATE_BYTES",
    "JOURNAL_SYNC_S",
    "MAX_SUFFIX",
    "PERMANENT_ERRNOS",
    "SEQ_BLOCK",
    "TMP_PREFIX",
    "ArchiveStore",
    "ArchiveWriteError",
    "Keys",
    "RunKey",
    "state_folder_name",
]

#: Sequence numbers are reserved (written to the ``seq`` file and fsync-ed) this many at a time;
#: after a restart numbering goes on after the last reserved block (gaps, never a number twice).
SEQ_BLOCK = 1000
#: The journal is fsync-ed at most this often (and at context stop and close).
JOURNAL_SYNC_S = 1.0
#: The journal starts a new file beyond this size; the previous one is kept (one generation).
JOURNAL_ROTATE_BYTES = 16 * 1024 * 1024
#: ``name-1.ext`` .. ``name-<MAX_SUFFIX>.ext`` are tried when ``name.ext`` exists; then the file
#: is refused (permanent error).
MAX_SUFFIX = 10_000
#: Temporary files: ``.dc-archive-<16 hex>.tmp`` in the target folder.
TMP_PREFIX = ".dc-archive-"
#: errnos that retrying cannot fix (the path itself is wrong); every other OSError is transient.
PERMANENT_ERRNOS = frozenset(
    {errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EINVAL, errno.ELOOP, errno.EFBIG, errno.EXDEV}
)
#: errnos of link() meaning "this file system has no hard links"
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_PROC_FD = Path("/proc/self/fd")

#: (context id, start of the run in µs since 1970 or None): one run of a context
RunKey = tuple[int, int | None]
#: the samples of a file: (variable id, read_at µs or None), in order
Keys = list[tuple[int, int | None]]


def is_transient_oserror(exc: OSError) -> bool:
    return exc.errno not in PERMANENT_ERRNOS


def failed(what: str, exc: OSError) -> ArchiveWriteError:
    """An :class:`ArchiveWriteError` for ``exc`` (raise it ``from exc``)."""
    transient = is_transient_oserror(exc)
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    kind = "transient, retried" if transient else "permanent"
    return ArchiveWriteError(f"{what}: {exc.strerror or exc} ({code}, {kind})", transient=transient)


def state_folder_name(writer_name: str) -> str:
    """A file-name-safe folder for ``writer_name``, stable across runs and distinct per name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", writer_name).strip("._")[:60] or "writer"
    return f"{safe}-{hashlib.sha256(writer_name.encode()).hexdigest()[:10]}"


def split_ext(name: str) -> tuple[str, str]:
    """``("data", ".npy")`` for ``data.npy``; a leading dot is no extension (``.hidden``)."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


def fsync_dir(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # some file systems cannot sync a folder
            raise


def encode_keys(keys: Keys) -> list[list[Any]]:
    """Keys as ``[[read_at_us, [variable ids...]], ...]`` (consecutive equal times grouped)."""
    out: list[list[Any]] = []
    for vid, t in keys:
        if out and out[-1][0] == t:
            out[-1][1].append(vid)
        else:
            out.append([t, [vid]])
    return out


def decode_keys(groups: Sequence[Sequence[Any]]) -> Iterator[tuple[int, int | None]]:
    for t, ids in groups:
        for vid in ids:
            yield (vid, t)


class ArchiveStore:
    """One writer's view of an archive root (see the module docstring)."""

    def __init__(self, root: Path, writer_name: str) -> None:
        self.root = root
        self.writer_name = writer_name
        self.root_real = ""
        self._root_fd = -1
        self.state = Path()
        self._lock_fd = -1
        self._journal_fd = -1
        self._journal_dirty = False  # written since the last fsync
        self._journal_torn = False  # a line may be incomplete: start the next on a fresh line
        self._last_journal_sync = 0.0
        self._owed: list[tuple[bytes, int, str]] = []  # commit lines not journaled yet (line, dir fd, tmp)
        self.next_seq = 1
        self._reserved_end = 1
        self._suffix_hint: OrderedDict[tuple[int, int, str], int] = OrderedDict()
        self.recovered: list[str] = []  # what open() found and settled (for the log)

    @property
    def is_open(self) -> bool:
        return self._root_fd >= 0

    # -- open / close ---------------------------------------------------------------------------
    def open(self) -> None:
        """Create the root and the state folder, take the lock, read the numbers, settle a crash."""
        where = f"archive root {self.root}"
        if self.root.exists() and not self.root.is_dir():
            raise ArchiveWriteError(f"the {where} exists and is not a folder", transient=False)
        try:
            os.makedirs(self.root, exist_ok=True)
            self.root_real = os.path.realpath(self.root)
            self._root_fd = os.open(self.root_real, _DIR_FLAGS)
        except OSError as exc:
            raise failed(f"cannot open the {where}", exc) from exc
        try:
            self.state = Path(self.root_real, STATE_DIR, state_folder_name(self.writer_name))
            state_fd = self.open_dir((STATE_DIR, state_folder_name(self.writer_name)))
            os.close(state_fd)
            self._lock_fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ArchiveWriteError(
                    f"{where}: the writer name {self.writer_name!r} is in use by another writer or "
                    f"process ({self.state / 'lock'} is locked): give each archive writer of a root "
                    "its own name",
                    transient=True,
                ) from None
            self._read_seq()
            self._journal_fd = os.open(
                self.state / "journal.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666
            )
            self._journal_torn = not _ends_with_newline(self.state / "journal.jsonl")
            self._recover()
        except BaseException as exc:
            self.close(sync=False)
            if isinstance(exc, OSError):
                raise failed(f"cannot open the state of the {where}", exc) from exc
            raise

    def close(self, sync: bool = True) -> None:
        errors = []
        if sync and self._journal_fd >= 0:
            try:
                self.sync_journal(force=True)
            except OSError as exc:
                errors.append(exc)
        for attr in ("_journal_fd", "_lock_fd", "_root_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                setattr(self, attr, -1)
                with contextlib.suppress(OSError):
                    os.close(fd)
        for _line, dfd, _tmp in self._owed:
            with contextlib.suppress(OSError):
                os.close(dfd)
        self._owed.clear()
        if errors:
            raise failed(f"closing the journal of {self.root}", errors[0]) from errors[0]

    # -- folders ----------------------------------------------------------------------------------
    def open_dir(self, parts: Sequence[str]) -> int:
        """A descriptor of the folder ``root/parts...``, created as needed, checked to lie inside the root."""
        fd = os.open(".", _DIR_FLAGS, dir_fd=self._root_fd)
        try:
            for i, part in enumerate(parts):
                created = False
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                    created = True
                except FileExistsError:
                    pass
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                if created:
                    try:
                        fsync_dir(fd)  # the new folder's entry is durable
                    except BaseException:
                        os.close(nfd)
                        raise
                os.close(fd)
                fd = nfd
                self._check_inside(fd, parts[: i + 1])
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return fd

    def _check_inside(self, fd: int, parts: Sequence[str]) -> None:
        try:
            real = os.readlink(_PROC_FD / str(fd))
        except OSError:
            real = os.path.realpath(os.path.join(self.root_real, *parts))
        root = self.root_real.rstrip("/")
        if real != self.root_real and not real.startswith(root + "/"):
            shown = "/".join(parts)
            raise UnsafePathError(
                f"archive {self.root}: the folder {shown!r} resolves to {real!r}, outside the archive "
                f"root {self.root_real!r} (through a symbolic link?): refused",
                field="template",
            )

    # -- sequence numbers ---------------------------------------------------------------------------
    def _read_seq(self) -> None:
        path = self.state / "seq"
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            text = ""
        value = int(text) if text.isdigit() else 1
        last = self._last_journal_seq()
        self.next_seq = self._reserved_end = max(value, last + 1, 1)

    def take_seq(self) -> int:
        """The next sequence number (a block is reserved durably when the last one is used up)."""
        if self.next_seq >= self._reserved_end:
            end = self.next_seq + SEQ_BLOCK
            tmp = self.state / "seq.tmp"
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{end}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state / "seq")
            dfd = os.open(self.state, _DIR_FLAGS)
            try:
                fsync_dir(dfd)
            finally:
                os.close(dfd)
            self._reserved_end = end
        seq = self.next_seq
        self.next_seq += 1
        return seq

    # -- journal ----------------------------------------------------------------------------------------
    def _append(self, line: dict[str, Any]) -> None:
        data = json.dumps(line, separators=(",", ":")).encode() + b"\n"
        if self._journal_torn:
            data = b"\n" + data
        self._journal_torn = True
        view = memoryview(data)
        while view:
            n = os.write(self._journal_fd, view)
            view = view[n:]
        self._journal_torn = False
        self._journal_dirty = True

    def sync_journal(self, force: bool = False) -> None:
        """fsync the journal when a second passed since the last (or ``force``)."""
        if self._journal_fd < 0 or not self._journal_dirty:
            return
        now = time.monotonic()
        if force or now - self._last_journal_sync >= JOURNAL_SYNC_S:
            os.fsync(self._journal_fd)
            self._journal_dirty = False
            self._last_journal_sync = now

    def _rotate_if_due(self) -> None:
        if os.fstat(self._journal_fd).st_size < JOURNAL_ROTATE_BYTES:
            return
        os.fsync(self._journal_fd)
        os.replace(self.state / "journal.jsonl", self.state / "journal.1.jsonl")
        os.close(self._journal_fd)
        self._journal_fd = os.open(
            self.state / "journal.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666
        )
        self._journal_torn = False

    def _journal_lines(self) -> Iterator[dict[str, Any]]:
        """Every readable line of the previous and the current journal, in order."""
        for name in ("journal.1.jsonl", "journal.jsonl"):
            try:
                f = open(self.state / name, "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue
            with f:
                for raw in f:
                    with contextlib.suppress(ValueError):
                        line = json.loads(raw)
                        if isinstance(line, dict):
                            yield line

    def _tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` readable lines of the current journal."""
        path = self.state / "journal.jsonl"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return []
        chunk = 64 * 1024
        with open(path, "rb") as f:
            start = size
            data = b""
            while start > 0 and data.count(b"\n") <= n:
                start = max(0, start - chunk)
                f.seek(start)
                data = f.read(size - start)
                chunk *= 2
        out = []
        for raw in data.splitlines()[-(n + 1) :]:
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict):
                    out.append(line)
        return out[-n:]

    def _last_journal_seq(self) -> int:
        seqs = [line.get("i", line.get("d", 0)) for line in self._tail(2)]
        return max((s for s in seqs if isinstance(s, int)), default=0)

    def _recover(self) -> None:
        """Settle an intent the last run left without its commit line (a crash while committing)."""
        tail = self._tail(2)
        if not tail or "i" not in tail[-1]:
            return
        intent = tail[-1]
        tmp_rel, want_rel = str(intent["t"]), str(intent["w"])
        tmp = Path(self.root_real, tmp_rel)
        final: str | None = None
        try:
            st = os.lstat(tmp)
        except FileNotFoundError:
            self.recovered.append(
                f"file {intent['i']} ({want_rel}) was being committed when the last run ended and its "
                "temporary file is gone: taken as not written (a replay writes it again)"
            )
        else:
            if st.st_nlink >= 2:
                final = self._find_link(want_rel, st.st_dev, st.st_ino)
                self.recovered.append(
                    f"file {intent['i']} was committed as {final or '(name not found)'} when the last "
                    "run ended: kept, journaled"
                )
            else:
                self.recovered.append(
                    f"file {intent['i']} ({want_rel}) had not been committed when the last run ended: "
                    "its temporary file is removed"
                )
            os.unlink(tmp)
        self._append({"d": intent["i"], "p": final if final is not None else None, "recovered": True})
        self.sync_journal(force=True)

    def _find_link(self, want_rel: str, dev: int, ino: int) -> str | None:
        folder, _, name = want_rel.rpartition("/")
        stem, ext = split_ext(name)
        for n in range(MAX_SUFFIX + 1):
            candidate = name if n == 0 else f"{stem}-{n}{ext}"
            try:
                st = os.lstat(Path(self.root_real, folder, candidate))
            except FileNotFoundError:
                if n > 0:
                    return None
                continue
            if (st.st_dev, st.st_ino) == (dev, ino):
                return f"{folder}/{candidate}" if folder else candidate
        return None

    def committed_keys(self, run: RunKey) -> Counter[tuple[int, int | None]]:
        """The keys of every file of ``run`` the journals record as committed (for a replay)."""
        done: Counter[tuple[int, int | None]] = Counter()
        intent: dict[str, Any] | None = None
        for line in self._journal_lines():
            if "i" in line:
                intent = line if (line.get("c"), line.get("s")) == run else None
            elif "d" in line and intent is not None and line["d"] == intent["i"]:
                if line.get("p") is not None:
                    done.update(decode_keys(intent["k"]))
                intent = None
        return done

    # -- committing -----------------------------------------------------------------------------------
    def pay_owed(self) -> None:
        """Journal the commit lines a failed journal write left owing (before anything else)."""
        while self._owed:
            line, dfd, tmp = self._owed[0]
            if self._journal_torn:
                line = b"\n" + line
            self._journal_torn = True
            view = memoryview(line)
            while view:
                view = view[os.write(self._journal_fd, view) :]
            self._journal_torn = False
            self._journal_dirty = True
            self._owed.pop(0)
            if tmp:  # (none when the file was renamed into place)
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
            with contextlib.suppress(OSError):
                os.close(dfd)

    def commit(
        self,
        dir_fd: int,
        dir_rel: str,
        name: str,
        dump: Callable[[IO[bytes]], None],
        run: RunKey,
        keys: Keys,
        seq: int,
        on_linked: Callable[[str], None],
    ) -> str:
        """Write one file durably under ``name`` (or a free suffixed name) in the folder ``dir_fd``.

        ``on_linked(final_rel)`` is called as soon as the file has its name (before the journal
        line that says so), so the caller can count it done even if journaling then fails.
        """
        self.pay_owed()
        self._rotate_if_due()
        tmp = f"{TMP_PREFIX}{secrets.token_hex(8)}.tmp"
        prefix = f"{dir_rel}/" if dir_rel else ""
        # the intent first: a crash from here on leaves a line that names the temporary file
        self._append(
            {
                "i": seq,
                "c": run[0],
                "s": run[1],
                "t": prefix + tmp,
                "w": prefix + name,
                "k": encode_keys(keys),
            }
        )
        created = False
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666, dir_fd=dir_fd
            )
            created = True
            with os.fdopen(fd, "wb") as f:
                dump(f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
            with contextlib.suppress(OSError):
                self._append({"d": seq, "p": None})
            raise
        try:
            final, renamed = self._link_exclusive(dir_fd, tmp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            with contextlib.suppress(OSError):
                self._append({"d": seq, "p": None})
            raise
        final_rel = prefix + final
        on_linked(final_rel)
        line = json.dumps({"d": seq, "p": final_rel}, separators=(",", ":")).encode() + b"\n"
        self._owed.append((line, os.dup(dir_fd), "" if renamed else tmp))
        self.pay_owed()
        return final_rel

    def _link_exclusive(self, dir_fd: int, tmp: str, name: str) -> tuple[str, bool]:
        """Give ``tmp`` the name ``name`` or the first free ``stem-N.ext``; (final name, renamed)."""
        st = os.fstat(dir_fd)
        hint_key = (st.st_dev, st.st_ino, name)
        stem, ext = split_ext(name)
        start = self._suffix_hint.get(hint_key, 0)
        for n in range(start, MAX_SUFFIX + 1):
            candidate = name if n == 0 else f"{stem}-{n}{ext}"
            try:
                os.link(tmp, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                renamed = False
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                # no hard links here: reserve the name exclusively, then rename onto our placeholder
                try:
                    os.close(
                        os.open(
                            candidate,
                            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                            0o666,
                            dir_fd=dir_fd,
                        )
                    )
                except FileExistsError:
                    continue
                try:
                    os.rename(tmp, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(candidate, dir_fd=dir_fd)  # our empty placeholder
                    raise
                renamed = True
            if n:
                self._suffix_hint[hint_key] = n + 1
                if len(self._suffix_hint) > 4096:
                    self._suffix_hint.popitem(last=False)
            return candidate, renamed
        raise ArchiveWriteError(
            f"archive {self.root}: {name!r} and {name!r} with the suffixes -1 .. -{MAX_SUFFIX} all exist "
            "in its folder: refused (give the template a field that varies, e.g. {{ seq }})",
            transient=False,
        )


def _ends_with_newline(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True
