"""The archive writer (data_writer/archive): templates, path safety, no overwrite, retries, round trips.

Everything runs against the real file system under ``tmp_path``. Making a folder unwritable:
the tests run as root, and root ignores permission bits (CAP_DAC_OVERRIDE), so ``chmod`` cannot
make a folder unwritable for it. Two honest ways are used instead, each skipped where the machine
does not allow it: the immutable attribute (``chattr +i``, refused with EPERM even for root, needs
CAP_LINUX_IMMUTABLE), and a small tmpfs mounted under ``tmp_path`` that is remounted read-only
(EROFS) or is full (ENOSPC), needing CAP_SYS_ADMIN. A crash at an exact instruction (between the
temporary file and its link, or just after the link) is made with a real ``kill -9`` of a child
process, at the point a patched method of the child reaches.
"""

from __future__ import annotations

import errno
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from _util import LOG, RecordingWriter, wait_for

from data_collector import (
    CollectedVariable,
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    DataReader,
    Quality,
    Variable,
    loads_config,
)
from data_writer.archive import (
    REPLAY_KEY,
    ArchiveDataWriter,
    ArchiveWriteError,
    UnsafePathError,
    load_npy,
    read_samples,
    slug,
)
from data_writer.archive import _store as store_module

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


# -- helpers ------------------------------------------------------------------------------------------
class WaveReader(DataReader):
    """``wave``: a 1,000-point waveform per read (its first point counts the reads); ``n``: the
    read count; ``none``: no value; ``text``: a str.

    The waveform is a list of floats unless ``ndarray``: the collector's reader task cannot deliver
    NumPy arrays yet (it tests ``None in values``, which is ambiguous for an array; array values in
    the engine are another item of issue 15), see ``test_ndarray_values_through_the_collector``.
    """

    def __init__(self, reader_type: str = "w", points: int = 1000, ndarray: bool = False) -> None:
        super().__init__(reader_type=reader_type, min_interval_ms=10)
        self.n = 0
        self.points = points
        self.ndarray = ndarray

    def read(self, variables: CollectedVariables) -> None:
        self.n += 1
        for item in variables:
            kind = item.variable.address
            if kind == "wave":
                wave = np.linspace(0.0, 1.0, self.points) + self.n
                item.value = wave if self.ndarray else wave.tolist()
            elif kind == "n":
                item.value = self.n
            elif kind == "text":
                item.value = f"t{self.n}"
            elif kind == "none":
                item.set_bad("no answer")


def started(ctx: DataCollectionContext, at: datetime = T0, **deduced: Any) -> DataCollectionContext:
    """``ctx`` as a started context (start date and deduced metadata set, as the collector does)."""
    ctx._start_date = at
    ctx._deduced = MappingProxyType({"start": at.isoformat(), **deduced})
    return ctx


def replayed(ctx: DataCollectionContext) -> DataCollectionContext:
    """``ctx`` as the collector rebuilds it from its spool after a crash."""
    again = DataCollectionContext(ctx.id, ctx.variables, metadata=ctx.metadata)
    again._start_date = ctx.start_date
    again._deduced = MappingProxyType({**ctx.deduced_metadata, REPLAY_KEY: True})
    return again


def batch(variables: list[Variable], k: int, values: list[Any] | None = None) -> CollectedVariables:
    at = T0 + timedelta(seconds=k)
    vals = values if values is not None else [k * 10 + i for i in range(len(variables))]
    return CollectedVariables([CollectedVariable(v, x, at) for v, x in zip(variables, vals, strict=True)])


def data_files(root: Path) -> list[Path]:
    """Every archive file under ``root`` (not the writer's state folder, not temporary files)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and ".archive" not in p.relative_to(root).parts
        and not p.name.startswith(".dc-archive-")
    )


def _chattr(path: Path, flag: str) -> bool:
    if shutil.which("chattr") is None:
        return False
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True, timeout=30)
    return done.returncode == 0


def immutable(path: Path) -> None:
    """Make the folder ``path`` unwritable even for root (chattr +i), or skip the test."""
    if not _chattr(path, "+i"):
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE and ext4/xfs/btrfs)")
    try:
        (path / "probe").touch()
    except PermissionError:
        return
    _chattr(path, "-i")
    pytest.skip("chattr +i did not make the folder unwritable here")


@pytest.fixture
def unlock() -> Iterator[list[Path]]:
    """Folders made immutable by a test: always made writable again (else tmp_path cannot be removed)."""
    folders: list[Path] = []
    yield folders
    for f in folders:
        _chattr(f, "-i")


def _mount(args: list[str]) -> bool:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    return done.returncode == 0


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs under tmp_path (skipped where mounting is not allowed); unmounted after."""
    point = tmp_path / "tmpfs"
    point.mkdir()
    if (
        os.geteuid() != 0
        or shutil.which("mount") is None
        or not _mount(["-t", "tmpfs", "-o", "size=256k", "dc-test", str(point)])
    ):
        pytest.skip("mounting a tmpfs is not allowed here (needs root with CAP_SYS_ADMIN)")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


# -- options and templates -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"root": ""}, "root must be a non-empty path"),
        ({"root": 3}, "root must be a str or path"),
        ({"root": "a", "per": "file"}, "per must be one of sample, variable, batch"),
        ({"root": "a", "format": "xml"}, "format must be one of npy, json, csv"),
        ({"root": "a", "template": ""}, "template must be a non-empty str"),
        ({"root": "a", "template": "{{ seq }"}, "syntax error"),
        ({"root": "a", "template": "{% for x in y %}{{ x }}"}, "syntax error"),
        ({"root": "a", "template": "{{ variable.id }}.npy", "per": "batch"}, "uses 'variable'"),
        ({"root": "a", "name": " "}, "name must be a non-empty str"),
    ],
)
def test_bad_options_are_configuration_errors_at_construction(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        ArchiveDataWriter(**kwargs)


def test_construction_creates_nothing(tmp_path: Path) -> None:
    ArchiveDataWriter(tmp_path / "not-yet", "{{ seq }}.npy")
    assert not (tmp_path / "not-yet").exists()


def test_templates_see_metadata_variable_read_time_and_sequence(tmp_path: Path) -> None:
    template = (
        "{{ operator }}/{{ metadata['lot no'] }}/{{ deduced.collector.host | slug }}/"
        "{{ context.start.strftime('%Y') }}-c{{ context_id }}/{{ variable.address | slug }}-"
        "{{ variable.value_type }}-{{ variable.interval_ms }}/{{ read_at.strftime('%Y%m%dT%H%M%S') }}-"
        "{{ '%04d' % seq }}.{{ ext }}"
    )
    writer = ArchiveDataWriter(tmp_path, template)
    v = Variable(3, "ns=2;s=Plant/Temp", "float", "r", 250)
    ctx = started(
        DataCollectionContext(9, [v], metadata={"operator": "CG", "lot no": "L 7"}),
        collector={"host": "bench/1"},
    )
    writer.context_started(ctx)
    writer.write(ctx, batch([v], 2))
    writer.write(ctx, batch([v], 3))
    writer.close()
    rel = [p.relative_to(tmp_path).as_posix() for p in data_files(tmp_path)]
    assert rel == [
        "CG/L 7/bench_1/2026-c9/ns_2_s_Plant_Temp-float-250/20260501T080002-0001.npy",
        "CG/L 7/bench_1/2026-c9/ns_2_s_Plant_Temp-float-250/20260501T080003-0002.npy",
    ]
    assert load_npy(tmp_path / rel[1]) == 30.0


def test_the_default_templates(tmp_path: Path) -> None:
    v = [Variable(1, "n", "int", "r"), Variable(2, "m", "int", "r")]
    ctx = started(DataCollectionContext(4, v))
    for per, fmt in (("sample", "json"), ("variable", "npy"), ("batch", "csv")):
        w = ArchiveDataWriter(tmp_path / per, per=per, format=fmt)  # type: ignore[arg-type]
        w.write(ctx, batch(v, 1))
        w.close()
    assert [p.relative_to(tmp_path).as_posix() for p in data_files(tmp_path)] == [
        "batch/context-4/batch-00000001.csv",
        "sample/context-4/variable-1/20260501T080001_000000.json",
        "sample/context-4/variable-2/20260501T080001_000000.json",
        "variable/context-4/variable-1/00000001.npy",
        "variable/context-4/variable-2/00000002.npy",
    ]


def test_slug() -> None:
    assert slug("ns=2;s=Plant/Temp") == "ns_2_s_Plant_Temp"
    assert slug("..") == "_" and slug("../../etc") == "etc" and slug("") == "_"
    assert slug("a b.c-d_e") == "a_b.c-d_e"


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{{ operator }}/{{ seq }}.npy", "uses operator, which is neither a field"),
        ("{{ metadata.operator }}/{{ seq }}.npy", "has no attribute 'operator'"),
        ("{{ variable.unit }}/{{ seq }}.npy", "has no attribute 'unit'"),
        ("{{ seq / 0 }}.npy", "ZeroDivisionError"),
        ("{{ read_at.__class__.__mro__ }}.npy", "has no attribute '__class__'|unsafe"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "has no attribute '__class__'|unsafe"),
        ("{{ lipsum.__globals__ }}", "lipsum|__globals__"),
    ],
)
def test_template_errors_are_configuration_errors_when_the_context_starts(
    tmp_path: Path, template: str, needle: str
) -> None:
    writer = ArchiveDataWriter(tmp_path, template)
    ctx = started(DataCollectionContext(1, [Variable(1, "n", "int", "r")], metadata={"lot": "A"}))
    with pytest.raises(ConfigurationError, match=needle):
        writer.check_context(ctx)
    with pytest.raises(ConfigurationError, match=needle):
        writer.context_started(ctx)
    assert not writer.is_transient(ConfigurationError("x"))
    writer.close()
    assert data_files(tmp_path) == []


def test_a_template_error_through_the_collector_keeps_the_batches_in_the_spool_quarantine(
    tmp_path: Path,
) -> None:
    root, spool = tmp_path / "archive", tmp_path / "spool"
    writer = ArchiveDataWriter(root, "{{ operator }}/{{ seq }}.npy")
    with DataCollector(LOG, [WaveReader()], [writer], spool_dir=spool) as c:
        c.start(
            DataCollectionContext(1, [Variable(1, "n", "int", "w", 20)], min_interval_ms=10, duration_s=0.3)
        )
        wait_for(lambda: c.stats().writers[writer.name].quarantined_batches >= 2, 10, "quarantined batches")
    assert data_files(root) == []
    assert len(list(spool.rglob("quarantine/*.q"))) >= 2  # kept: `data-collector spool --retry-quarantine`


def test_a_bad_template_in_a_configuration_file_is_reported_with_its_key(tmp_path: Path) -> None:
    text = """
[[readers]]
type = "random"
[[writers]]
type = "archive"
root = "a"
template = "{{ seq }"
[[contexts]]
id = 1
reader_type = "random"
variables = [{ id = 1, address = "sine", value_type = "float" }]
"""
    with pytest.raises(ConfigurationError) as info:
        loads_config(text)
    assert "writers[0].template" in str(info.value) and "syntax error" in str(info.value)
    assert not (tmp_path / "a").exists()


def test_npy_per_batch_refuses_text_beside_numbers_at_context_start(tmp_path: Path) -> None:
    writer = ArchiveDataWriter(tmp_path, per="batch", format="npy")
    ctx = started(DataCollectionContext(1, [Variable(1, "n", "float", "r"), Variable(2, "t", "str", "r")]))
    with pytest.raises(ConfigurationError, match='use per = "variable" or format = "json"'):
        writer.check_context(ctx)


# -- paths that would leave the root -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "metadata", "needle"),
    [
        ("../outside/{{ seq }}.npy", {}, "holds '..'"),
        ("a/../../outside/{{ seq }}.npy", {}, "holds '..'"),
        ("a\\..\\..\\outside\\{{ seq }}.npy", {}, "holds '..'"),
        ("{{ sample }}/{{ seq }}.npy", {"sample": "../../etc"}, "holds '..'"),
        ("{{ sample }}/{{ seq }}.npy", {"sample": ".."}, "holds '..'"),
        ("/tmp/outside/{{ seq }}.npy", {}, "is absolute"),
        ("{{ sample }}/{{ seq }}.npy", {"sample": "/etc"}, "is absolute"),
        ("\\\\server\\share\\{{ seq }}.npy", {}, "is absolute"),
        ("C:/outside/{{ seq }}.npy", {}, "is absolute"),
        (".archive/x/{{ seq }}.npy", {}, "state folder"),
        ("{{ sample }}/{{ seq }}.npy", {"sample": "a\nb"}, "control character"),
        ("{{ sample }}", {"sample": ""}, "empty path"),
        ("{{ sample }}", {"sample": "./"}, "names no file"),
        ("{{ sample }}/{{ seq }}.npy", {"sample": "x" * 256}, "longer than 255 bytes"),
    ],
)
def test_paths_that_leave_the_root_are_refused_at_start_and_at_write(
    tmp_path: Path, template: str, metadata: dict[str, Any], needle: str
) -> None:
    root = tmp_path / "root"
    writer = ArchiveDataWriter(root, template)
    v = Variable(1, "n", "int", "r")
    ctx = started(DataCollectionContext(1, [v], metadata=metadata))
    with pytest.raises(UnsafePathError, match=needle):
        writer.context_started(ctx)
    with pytest.raises(UnsafePathError, match=needle) as info:
        writer.write(ctx, batch([v], 1))
    assert not writer.is_transient(info.value)
    writer.close()
    assert data_files(tmp_path) == []


def test_the_slug_filter_makes_an_unsafe_field_safe(tmp_path: Path) -> None:
    writer = ArchiveDataWriter(tmp_path / "root", "{{ sample | slug }}/{{ seq }}.json", format="json")
    v = Variable(1, "n", "int", "r")
    ctx = started(DataCollectionContext(1, [v], metadata={"sample": "../../etc"}))
    writer.context_started(ctx)
    writer.write(ctx, batch([v], 1))
    writer.close()
    assert [p.relative_to(tmp_path).as_posix() for p in data_files(tmp_path)] == ["root/etc/1.json"]


def test_a_symbolic_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "out").symlink_to(outside)  # a folder of the root that is a link to elsewhere
    (root / "a" / "deep").symlink_to("../../outside")  # relative, one level down
    (root / "real").mkdir()
    (root / "in").symlink_to("real")  # a link that stays inside is fine
    v = Variable(1, "n", "int", "r")
    ctx = started(DataCollectionContext(1, [v]))
    for template in ("out/{{ seq }}.json", "a/deep/{{ seq }}.json", "out/sub/{{ seq }}.json"):
        writer = ArchiveDataWriter(root, template, format="json")
        with pytest.raises(UnsafePathError, match="outside the archive root") as info:
            writer.write(ctx, batch([v], 1))
        assert not writer.is_transient(info.value)
        writer.close()
    assert list(outside.iterdir()) == []
    writer = ArchiveDataWriter(root, "in/{{ seq }}.json", format="json")
    writer.write(ctx, batch([v], 1))
    writer.close()
    assert len(list((root / "real").iterdir())) == 1


def test_a_refused_folder_fails_the_whole_batch_before_any_file(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "b").symlink_to(outside)
    va, vb = Variable(1, "a", "int", "r"), Variable(2, "b", "int", "r")
    writer = ArchiveDataWriter(root, "{{ variable.address }}/{{ seq }}.json", per="variable", format="json")
    with pytest.raises(UnsafePathError):
        writer.write(started(DataCollectionContext(1, [va, vb])), batch([va, vb], 1))
    writer.close()
    assert data_files(root) == [] and list(outside.iterdir()) == []


def test_a_symbolic_link_at_the_file_name_is_never_followed(tmp_path: Path) -> None:
    root, target = tmp_path / "root", tmp_path / "precious.txt"
    root.mkdir()
    target.write_text("precious")
    (root / "x.json").symlink_to(target)
    v = Variable(1, "n", "int", "r")
    writer = ArchiveDataWriter(root, "x.json", per="batch", format="json")
    writer.write(started(DataCollectionContext(1, [v])), batch([v], 1))
    writer.close()
    assert target.read_text() == "precious"
    assert (root / "x-1.json").is_file() and not (root / "x-1.json").is_symlink()


def test_an_unsafe_path_through_the_collector_is_quarantined_not_retried(tmp_path: Path) -> None:
    root, spool, outside = tmp_path / "root", tmp_path / "spool", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "out").symlink_to(outside)
    writer = ArchiveDataWriter(root, "out/{{ seq }}.npy")
    with DataCollector(LOG, [WaveReader()], [writer], spool_dir=spool) as c:
        c.start(
            DataCollectionContext(1, [Variable(1, "n", "int", "w", 20)], min_interval_ms=10, duration_s=0.2)
        )
        wait_for(lambda: c.stats().writers[writer.name].quarantined_batches >= 1, 10, "a quarantined batch")
        stats = c.stats().writers[writer.name]
        assert stats.retried_ok == 0
    assert list(outside.iterdir()) == []


# -- never overwrite -----------------------------------------------------------------------------------
def test_an_existing_file_is_never_overwritten_a_suffix_is_added(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "fixed.json").write_text("precious")
    (tmp_path / "runs" / ".hidden").write_text("mine")
    v = Variable(1, "n", "int", "r")
    ctx = started(DataCollectionContext(1, [v]))
    writer = ArchiveDataWriter(tmp_path, "runs/fixed.json", per="batch", format="json")
    for k in range(3):
        writer.write(ctx, batch([v], k))
    writer.close()
    hidden = ArchiveDataWriter(tmp_path, "runs/.hidden", per="batch", format="json", name="h")
    hidden.write(ctx, batch([v], 9))
    hidden.close()
    assert (tmp_path / "runs" / "fixed.json").read_text() == "precious"
    assert (tmp_path / "runs" / ".hidden").read_text() == "mine"
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == [".hidden", ".hidden-1", "fixed-1.json", "fixed-2.json", "fixed-3.json", "fixed.json"]
    assert [read_samples(tmp_path / "runs" / f"fixed-{k + 1}.json")[0].value for k in range(3)] == [0, 10, 20]


def test_when_every_suffix_is_taken_the_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_SUFFIX", 2)
    v = Variable(1, "n", "int", "r")
    ctx = started(DataCollectionContext(1, [v]))
    writer = ArchiveDataWriter(tmp_path, "same.csv", per="batch", format="csv")
    for k in range(3):
        writer.write(ctx, batch([v], k))
    with pytest.raises(ArchiveWriteError, match=r"suffixes -1 \.\. -2 all exist") as info:
        writer.write(ctx, batch([v], 3))
    assert not writer.is_transient(info.value)
    writer.close()
    assert len(data_files(tmp_path)) == 3
    assert not list(tmp_path.glob(".dc-archive-*"))  # no temporary file left


# -- sequence numbers -------------------------------------------------------------------------------------
def test_sequence_numbers_go_on_after_a_restart_never_reused(tmp_path: Path) -> None:
    v = Variable(1, "n", "int", "r")
    ctx = started(DataCollectionContext(1, [v]))
    first = ArchiveDataWriter(tmp_path, "{{ seq }}.json", per="batch", format="json")
    for k in range(3):
        first.write(ctx, batch([v], k))
    first.close()
    second = ArchiveDataWriter(tmp_path, "{{ seq }}.json", per="batch", format="json")
    second.write(ctx, batch([v], 5))
    second.close()
    seqs = sorted(int(p.stem) for p in data_files(tmp_path))
    assert seqs[:3] == [1, 2, 3] and seqs[3] > 3  # after the reserved block (gaps, no reuse)
    other = ArchiveDataWriter(tmp_path, "other-{{ seq }}.json", per="batch", format="json", name="other")
    other.write(ctx, batch([v], 6))
    other.close()
    assert (tmp_path / "other-1.json").is_file()  # numbers are per writer name


def test_two_writers_with_one_name_on_one_root_are_refused(tmp_path: Path) -> None:
    a = ArchiveDataWriter(tmp_path, "a-{{ seq }}.npy")
    b = ArchiveDataWriter(tmp_path, "b-{{ seq }}.npy")
    a.open()
    with pytest.raises(ArchiveWriteError, match="in use by another writer"):
        b.open()
    a.close()
    b.open()
    b.close()


# -- retries and replays are idempotent ---------------------------------------------------------------
def test_a_retry_after_a_partly_committed_batch_writes_each_file_once(
    tmp_path: Path, unlock: list[Path]
) -> None:
    va, vb = Variable(1, "a", "int", "r"), Variable(2, "b", "int", "r")
    (tmp_path / "b").mkdir()
    immutable(tmp_path / "b")
    unlock.append(tmp_path / "b")
    writer = ArchiveDataWriter(tmp_path, "{{ variable.address }}/{{ seq }}.json", format="json")
    ctx = started(DataCollectionContext(1, [va, vb]))
    first = batch([va, vb], 1)
    with pytest.raises(ArchiveWriteError, match="EPERM, transient") as info:
        writer.write(ctx, first)
    assert writer.is_transient(info.value)
    assert [p.parent.name for p in data_files(tmp_path)] == ["a"]  # a's file was committed
    _chattr(tmp_path / "b", "-i")
    merged = CollectedVariables([*first, *batch([va, vb], 2)])  # the retry may hold more batches
    writer.write(ctx, merged)
    writer.close()
    assert writer.samples_skipped == 1
    got = Counter((s.variable_id, s.read_at) for p in data_files(tmp_path) for s in read_samples(p))
    assert len(got) == 4 and set(got.values()) == {1}
    assert not list(tmp_path.rglob(".dc-archive-*"))


def test_a_replay_of_batches_already_written_writes_nothing_twice(tmp_path: Path) -> None:
    v = [Variable(1, "a", "int", "r"), Variable(2, "b", "str", "r")]
    ctx = started(DataCollectionContext(4, v, metadata={"lot": "A"}))
    for per in ("sample", "variable", "batch"):
        root = tmp_path / per
        first = ArchiveDataWriter(root, per=per, format="json")
        for k in range(5):
            first.write(ctx, batch(v, k, [k, f"s{k}"]))
        first.close()  # as after a crash: batches 3 and 4 were written but not confirmed to the spool
        again = replayed(ctx)
        second = ArchiveDataWriter(root, per=per, format="json")
        second.context_started(again)
        merged = CollectedVariables([*batch(v, 3, [3, "s3"]), *batch(v, 4, [4, "s4"])])
        second.write(again, merged[:3])  # replays come as the original batches or merged
        second.write(again, merged[3:])
        second.write(again, batch(v, 5, [5, "s5"]))
        second.context_stopped(again)
        second.close()
        assert second.samples_skipped == 4, per
        stored = sorted(
            (s.read_at, s.variable_id, s.value) for p in data_files(root) for s in read_samples(p)
        )
        assert stored == [
            (T0 + timedelta(seconds=k), i + 1, x) for k in range(6) for i, x in enumerate((k, f"s{k}"))
        ]
        # a replay of what never reached the archive is written in full
        third = ArchiveDataWriter(root, per=per, format="json")
        third.write(replayed(ctx), batch(v, 7, [7, "s7"]))
        third.close()
        assert third.samples_skipped == 0


def test_a_journal_that_fails_after_the_link_is_caught_up_and_nothing_is_written_twice(
    tmp_path: Path, mocker: Any
) -> None:
    """The commit line of a linked file cannot be journaled (disk full for the journal only: an
    edge no real disk produces on demand, so pay_owed is made to fail once)."""
    real = store_module.ArchiveStore.pay_owed
    failed_once: list[bool] = []

    def flaky(self: store_module.ArchiveStore) -> None:
        if self._owed and not failed_once:
            failed_once.append(True)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self)

    mocker.patch.object(store_module.ArchiveStore, "pay_owed", flaky)
    v = [Variable(1, "a", "int", "r"), Variable(2, "b", "int", "r")]
    ctx = started(DataCollectionContext(1, v))
    writer = ArchiveDataWriter(tmp_path, "{{ variable.address }}/{{ seq }}.json", format="json")
    with pytest.raises(ArchiveWriteError, match="ENOSPC, transient"):
        writer.write(ctx, batch(v, 1))
    assert len(data_files(tmp_path)) == 1  # linked, its journal line owed
    writer.write(ctx, batch(v, 1))  # the collector's retry
    writer.close()
    assert writer.samples_skipped == 1 and len(data_files(tmp_path)) == 2
    again = ArchiveDataWriter(tmp_path, "{{ variable.address }}/{{ seq }}.json", format="json")
    again.write(replayed(ctx), batch(v, 1))  # and a replay after a restart finds both in the journal
    again.close()
    assert again.samples_skipped == 2 and len(data_files(tmp_path)) == 2
    assert not list(tmp_path.rglob(".dc-archive-*"))


def test_a_replay_finds_what_the_previous_journal_file_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "JOURNAL_ROTATE_BYTES", 2000)
    v = Variable(1, "a", "int", "r")
    ctx = started(DataCollectionContext(1, [v]))
    writer = ArchiveDataWriter(tmp_path, "{{ seq }}.json", format="json")
    for k in range(40):
        writer.write(ctx, batch([v], k))
    writer.close()
    state = next((tmp_path / ".archive").iterdir())
    assert (state / "journal.1.jsonl").is_file() and (state / "journal.jsonl").stat().st_size < 2000
    again = ArchiveDataWriter(tmp_path, "{{ seq }}.json", format="json")
    for k in range(30, 42):  # 30..39 were written, 40 and 41 were not
        again.write(replayed(ctx), batch([v], k))
    again.close()
    assert again.samples_skipped == 10 and len(data_files(tmp_path)) == 42


def test_a_run_older_than_the_writer_skips_what_the_journal_holds_even_unmarked(tmp_path: Path) -> None:
    """A batch put back from the spool's quarantine (``data-collector spool --retry-quarantine``)
    comes without the replay mark; its run started before the writer opened, which is enough."""
    v = Variable(1, "a", "int", "r")
    ctx = started(DataCollectionContext(1, [v]))
    first = ArchiveDataWriter(tmp_path, "{{ seq }}.json", format="json")
    first.write(ctx, batch([v], 1))
    first.close()
    again = ArchiveDataWriter(tmp_path, "{{ seq }}.json", format="json")
    again.write(ctx, CollectedVariables([*batch([v], 1), *batch([v], 2)]))
    again.close()
    assert again.samples_skipped == 1 and len(data_files(tmp_path)) == 2


CRASH_CHILD = r"""
import os, signal, sys
from datetime import datetime, timezone
from types import MappingProxyType
from data_collector import CollectedVariable, CollectedVariables, DataCollectionContext, Variable
from data_writer.archive import ArchiveDataWriter
from data_writer.archive._store import ArchiveStore

mode = sys.argv[1]
original = ArchiveStore._link_exclusive

def link(self, dir_fd, tmp, name):
    if mode == "before-link":
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(self, dir_fd, tmp, name)
    if mode == "after-link":
        os.kill(os.getpid(), signal.SIGKILL)
    return result

ArchiveStore._link_exclusive = link
real_fsync = os.fsync

def fsync(fd):
    if mode == "while-writing" and ".dc-archive-" in os.readlink(f"/proc/self/fd/{fd}"):
        os.kill(os.getpid(), signal.SIGKILL)  # the temporary file is there, not yet synced
    real_fsync(fd)

os.fsync = fsync
v = Variable(1, "a", "int", "r")
ctx = DataCollectionContext(4, [v])
ctx._start_date = datetime(2026, 5, 1, tzinfo=timezone.utc)
ctx._deduced = MappingProxyType({})
w = ArchiveDataWriter(sys.argv[2], "{{ seq }}.json", per="batch", format="json")
w.write(ctx, CollectedVariables([CollectedVariable(v, 1, ctx.start_date)]))
print("not killed", flush=True)
"""


@pytest.mark.parametrize("mode", ["while-writing", "before-link", "after-link"])
def test_kill_9_while_committing_then_replay_writes_the_file_exactly_once(tmp_path: Path, mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, mode, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    assert len(list(tmp_path.glob(".dc-archive-*.tmp"))) == 1  # the crash left its temporary file
    assert len(data_files(tmp_path)) == (1 if mode == "after-link" else 0)
    v = Variable(1, "a", "int", "r")
    ctx = DataCollectionContext(4, [v])
    ctx._start_date = datetime(2026, 5, 1, tzinfo=UTC)
    writer = ArchiveDataWriter(tmp_path, "{{ seq }}.json", per="batch", format="json")
    writer.open()  # settles the crash: the temporary file goes, the journal says what happened
    assert not list(tmp_path.glob(".dc-archive-*"))
    writer.write(
        replayed(started(ctx, ctx._start_date)),
        CollectedVariables([CollectedVariable(v, 1, ctx._start_date)]),
    )
    writer.close()
    assert writer.samples_skipped == (1 if mode == "after-link" else 0)
    files = data_files(tmp_path)
    assert len(files) == 1 and [s.value for s in read_samples(files[0])] == [1]
    if mode == "after-link":
        assert files[0].name == "1.json"  # the file the crash interrupted, kept
    else:
        assert int(files[0].stem) > 1  # the number of the interrupted file is not used again


SPOOL_CHILD = r"""
import logging, time
from data_collector import DataCollectionContext, DataCollector, Variable
from data_reader.random import RandomDataReader
from data_writer.archive import ArchiveDataWriter
logging.basicConfig(level=logging.WARNING)
writer = ArchiveDataWriter({root!r}, per="variable", format="json")
c = DataCollector(logging.getLogger("child"), [RandomDataReader(min_interval_ms=10)], [writer],
                  spool_dir={spool!r}, spool_sync_s=0.3)
variables = [Variable(i, "counter", "int", "random", 20) for i in range(1, 6)]
c.start(DataCollectionContext(1, variables, min_interval_ms=10, metadata={{"lot": "K"}}))
last = -1
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    if writer.files_written != last:
        last = writer.files_written
        print(last, flush=True)
    time.sleep(0.001)
"""


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line.strip())
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def test_kill_9_with_a_spool_then_restart_archives_every_sample_once(tmp_path: Path) -> None:
    root, spool = tmp_path / "archive", tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SPOOL_CHILD.format(root=str(root), spool=str(spool))],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = _lines(proc)
        while True:  # bounded by the timeout of each get and the child's own 60 s
            line = lines.get(timeout=30)
            assert line is not None, "the child ended early"
            if int(line) >= 300:
                break
        os.kill(proc.pid, signal.SIGKILL)  # while writing: the spool confirms only every 0.3 s
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    seqs_before = {int(p.stem) for p in data_files(root)}
    writer = ArchiveDataWriter(root, per="variable", format="json")
    with DataCollector(LOG, [WaveReader()], [writer], spool_dir=spool) as c:
        c.open()
        wait_for(lambda: c.stats().writers[writer.name].replayed_samples > 0, 10, "a replay")
        wait_for(lambda: c.stats().writers[writer.name].queue_depth == 0, 30, "the replay to be written")
        c.start(DataCollectionContext(2, [Variable(9, "n", "int", "w", 20)], min_interval_ms=10))
        wait_for(lambda: writer.samples_written >= 5, 10, "new files")
    assert writer.samples_skipped > 0  # written before the kill, not confirmed: not written twice
    stored = [s for p in data_files(root / "context-1") for s in read_samples(p)]
    keys = Counter((s.variable_id, s.read_at) for s in stored)
    assert max(keys.values()) == 1, "a sample archived twice"
    for vid in range(1, 6):
        good = sorted(s.value for s in stored if s.variable_id == vid and s.quality is Quality.GOOD)
        assert good == list(range(1, len(good) + 1)), vid  # no gap: nothing confirmed was lost
    new = {int(p.stem) for p in data_files(root / "context-2")}
    assert new and min(new) > max(seqs_before)  # no number used twice after the crash
    assert not list(root.rglob(".dc-archive-*"))


# -- transient errors: the collector retries until the folder is writable again -----------------------------
def _run_until_blocked_then_unblock(
    tmp_path: Path, root: Path, template: str, block: Any, unblock: Any
) -> tuple[ArchiveDataWriter, RecordingWriter]:
    writer = ArchiveDataWriter(root, template, per="sample", format="npy")
    rec = RecordingWriter()
    with DataCollector(
        LOG, [WaveReader(points=100)], [writer, rec], write_retry_s=0.2, spool_dir=tmp_path / "spool"
    ) as c:
        c.start(DataCollectionContext(1, [Variable(1, "wave", "float", "w", 50)], min_interval_ms=10))
        wait_for(lambda: len(rec.rows) >= 3, 10, "first samples")
        block()
        wait_for(lambda: c.stats().writers[writer.name].write_errors >= 3, 20, "failing writes being retried")
        stats = c.stats().writers[writer.name]
        assert stats.lost_samples == 0 and stats.quarantined_batches == 0
        unblock()
        wait_for(lambda: c.stats().writers[writer.name].retried_ok >= 1, 20, "a retry that worked")
        c.stop(1)
        stats = c.stats().writers[writer.name]
    assert stats.lost_samples == 0 and stats.dropped_samples == 0
    return writer, rec


def _check_every_wave_once(root: Path, rec: RecordingWriter) -> None:
    files = data_files(root)
    assert len(files) == len(rec.rows)
    got = sorted(float(load_npy(p)[0]) for p in files)
    assert got == sorted(float(r.value[0]) for r in rec.rows)  # each wave once, none lost
    assert {load_npy(p).shape for p in files} == {(100,)}


def test_retries_on_an_immutable_folder_until_it_is_writable(tmp_path: Path, unlock: list[Path]) -> None:
    root = tmp_path / "archive"
    (root / "data").mkdir(parents=True)

    def block() -> None:
        unlock.append(root / "data")
        immutable(root / "data")

    _writer, rec = _run_until_blocked_then_unblock(
        tmp_path,
        root,
        "data/{{ '%06d' % seq }}.npy",
        block,
        lambda: _chattr(root / "data", "-i"),
    )
    _check_every_wave_once(root, rec)


def test_retries_on_a_read_only_file_system_until_it_is_writable_again(
    tmp_path: Path, small_tmpfs: Path
) -> None:
    def remount(mode: str) -> None:
        assert _mount(["-o", f"remount,{mode}", str(small_tmpfs)]), f"remount {mode}"

    # the archive's files on the tmpfs, the writer's journal beside (a file open for writing
    # would keep the tmpfs from being remounted read-only)
    _writer, rec = _run_until_blocked_then_unblock(
        tmp_path, tmp_path, "tmpfs/{{ '%06d' % seq }}.npy", lambda: remount("ro"), lambda: remount("rw")
    )
    _check_every_wave_once(small_tmpfs, rec)


def test_a_full_disk_is_transient_and_leaves_no_partial_file(tmp_path: Path, small_tmpfs: Path) -> None:
    v = Variable(1, "wave", "float", "r")
    ctx = started(DataCollectionContext(1, [v]))
    writer = ArchiveDataWriter(small_tmpfs, "{{ seq }}.npy")
    big = CollectedVariables([CollectedVariable(v, np.zeros(100_000), T0)])  # 800 kB > 256 KiB
    with pytest.raises(ArchiveWriteError, match="ENOSPC, transient") as info:
        writer.write(ctx, big)
    assert writer.is_transient(info.value)
    assert data_files(small_tmpfs) == [] and not list(small_tmpfs.glob(".dc-archive-*"))
    assert _mount(["-o", "remount,size=4m", str(small_tmpfs)])
    writer.write(ctx, big)
    writer.close()
    assert [load_npy(p).shape for p in data_files(small_tmpfs)] == [(100_000,)]


def test_errno_classification() -> None:
    writer = ArchiveDataWriter("x")
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.ENOENT):
        assert writer.is_transient(OSError(code, os.strerror(code))), code
    for code in (errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EINVAL, errno.ELOOP):
        assert not writer.is_transient(OSError(code, os.strerror(code))), code
    assert not writer.is_transient(ValueError("x"))


def test_a_path_through_a_file_is_a_permanent_error(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file, not a folder")
    v = Variable(1, "n", "int", "r")
    writer = ArchiveDataWriter(tmp_path, "data/{{ seq }}.json", format="json")
    with pytest.raises(ArchiveWriteError, match=r"ENOTDIR|EEXIST") as info:
        writer.write(started(DataCollectionContext(1, [v])), batch([v], 1))
    assert not writer.is_transient(info.value)
    writer.close()


# -- durability ------------------------------------------------------------------------------------------
def test_file_and_folder_are_fsynced_before_write_returns(tmp_path: Path, mocker: Any) -> None:
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((st.st_dev, st.st_ino))
        real_fsync(fd)

    mocker.patch("os.fsync", side_effect=spy)
    v = Variable(1, "n", "int", "r")
    writer = ArchiveDataWriter(tmp_path, "a/b/{{ seq }}.json", format="json")
    writer.write(started(DataCollectionContext(1, [v])), batch([v], 1))
    (path,) = data_files(tmp_path)
    for p in (path, path.parent, path.parent.parent, tmp_path):  # the file, its folder, new folders' parents
        st = os.stat(p)
        assert (st.st_dev, st.st_ino) in synced, p
    writer.close()


# -- round trips -------------------------------------------------------------------------------------------
def test_npy_per_sample_round_trip_of_arrays_through_the_collector(tmp_path: Path) -> None:
    writer = ArchiveDataWriter(tmp_path / "a", "{{ variable.address }}/{{ '%06d' % seq }}.npy")
    rec = RecordingWriter()
    variables = [
        Variable(1, "wave", "float", "w", 20),
        Variable(2, "n", "int", "w", 20),
        Variable(3, "none", "int", "w", 20),
    ]
    with DataCollector(LOG, [WaveReader()], [writer, rec]) as c:
        c.start(DataCollectionContext(1, variables, min_interval_ms=10))
        wait_for(lambda: len(rec.of(1, 1)) >= 10, 10, "waves")
        c.stop(1)
    waves = sorted(data_files(tmp_path / "a" / "wave"))
    assert len(waves) == len(rec.of(1, 1))
    stored = {float(load_npy(p)[0]): load_npy(p) for p in waves}
    for r in rec.of(1, 1):
        got = stored[float(r.value[0])]
        assert got.dtype == np.float64 and got.shape == (1000,) and got.tolist() == r.value
    counts = [load_npy(p) for p in data_files(tmp_path / "a" / "n")]
    assert all(a.shape == () and a.dtype == np.int64 for a in counts)
    assert sorted(int(a) for a in counts) == sorted(r.value for r in rec.of(1, 2))
    assert not (tmp_path / "a" / "none").exists()  # no value: no file, counted
    assert writer.samples_without_file == len(rec.of(1, 3)) > 0


def test_npy_per_sample_round_trip_of_ndarrays(tmp_path: Path) -> None:
    v = Variable(1, "wave", "float", "r")
    ctx = started(DataCollectionContext(1, [v]))
    arrays = [np.arange(1000, dtype=np.float64) * k for k in range(3)] + [
        np.arange(6, dtype=np.int16).reshape(2, 3)
    ]
    writer = ArchiveDataWriter(tmp_path, "{{ '%03d' % seq }}.npy")
    writer.write(
        ctx,
        CollectedVariables(
            [CollectedVariable(v, a, T0 + timedelta(seconds=k)) for k, a in enumerate(arrays)]
        ),
    )
    writer.close()
    back = [load_npy(p) for p in data_files(tmp_path)]
    assert len(back) == 4
    for got, want in zip(back, arrays, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    assert [np.load(p) for p in data_files(tmp_path)][3].tolist() == [
        [0, 1, 2],
        [3, 4, 5],
    ]  # plain numpy.load


def test_ndarray_values_through_the_collector(tmp_path: Path) -> None:
    writer = ArchiveDataWriter(tmp_path, "{{ '%06d' % seq }}.npy")
    rec = RecordingWriter()
    with DataCollector(LOG, [WaveReader(ndarray=True)], [writer, rec]) as c:
        c.start(DataCollectionContext(1, [Variable(1, "wave", "float", "w", 20)], min_interval_ms=10))
        wait_for(lambda: len(rec.rows) >= 3, 3, "waves")
    assert len(data_files(tmp_path)) >= 3


def test_npy_per_variable_and_per_batch_are_structured_arrays(tmp_path: Path) -> None:
    wave = Variable(1, "wave", "float", "r")
    n = Variable(2, "n", "int", "r")
    ctx = started(DataCollectionContext(1, [wave, n]))
    rows = CollectedVariables(
        [
            CollectedVariable(wave, np.arange(4.0), T0),
            CollectedVariable(n, 7, T0),
            CollectedVariable(wave, np.arange(4.0) * 2, T0 + timedelta(seconds=1)),
            CollectedVariable(n, None, T0 + timedelta(seconds=1), Quality.BAD, "timeout"),
        ]
    )
    per_var = ArchiveDataWriter(tmp_path / "v", per="variable")
    per_var.write(ctx, rows)
    per_var.close()
    w_file, n_file = data_files(tmp_path / "v")
    w = load_npy(w_file)
    assert w.dtype.names == ("read_at", "variable_id", "value", "has_value", "quality", "error")
    assert w["value"].shape == (2, 4) and np.array_equal(w["value"][1], np.arange(4.0) * 2)
    assert list(w["read_at"]) == [
        (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000 + k * 10**9
        for k in (0, 1)
    ]
    back = read_samples(n_file)
    assert [(s.variable_id, s.read_at, s.value, s.quality, s.error) for s in back] == [
        (2, T0, 7, Quality.GOOD, None),
        (2, T0 + timedelta(seconds=1), None, Quality.BAD, "timeout"),
    ]
    assert type(back[0].value) is int
    per_batch = ArchiveDataWriter(tmp_path / "b", per="batch")
    scalars = CollectedVariables(
        [CollectedVariable(n, 3, T0), CollectedVariable(Variable(3, "x", "float", "r"), 0.5, T0)]
    )
    per_batch.write(ctx, scalars)
    with pytest.raises(ArchiveWriteError, match="different shapes") as info:
        per_batch.write(ctx, rows)  # arrays and scalars in one batch file
    assert not per_batch.is_transient(info.value)
    per_batch.close()
    (b_file,) = data_files(tmp_path / "b")
    table = load_npy(b_file)
    assert table["value"].dtype == np.float64 and list(table["value"]) == [3.0, 0.5]


def test_npy_refuses_what_would_need_pickle(tmp_path: Path) -> None:
    v = Variable(1, "x", "str", "r")
    writer = ArchiveDataWriter(tmp_path, "{{ seq }}.npy")
    with pytest.raises(ArchiveWriteError, match="pickle") as info:
        writer.write(
            started(DataCollectionContext(1, [v])), CollectedVariables([CollectedVariable(v, {"a": 1}, T0)])
        )
    assert not writer.is_transient(info.value)
    writer.close()
    assert data_files(tmp_path) == []


def test_json_and_csv_round_trips(tmp_path: Path) -> None:
    v = [
        Variable(1, "f", "float", "r"),
        Variable(2, "i", "int", "r"),
        Variable(3, "b", "bool", "r"),
        Variable(4, "s", "str", "r"),
        Variable(5, "nan", "float", "r"),
        Variable(6, "inf", "float", "r"),
        Variable(7, "none", "int", "r"),
        Variable(8, "big", "int", "r"),
    ]
    values = [0.1 + 0.2, -(2**62), True, 'Grüße, "q"\nline', math.nan, -math.inf, None, 2**63 - 1]
    ctx = started(DataCollectionContext(3, v))
    items = [
        CollectedVariable(var, x, T0 + timedelta(microseconds=7)) for var, x in zip(v, values, strict=True)
    ]
    items[6].set_bad("timeout")
    items[0].quality, items[0].error = Quality.UNCERTAIN, "stale"
    for fmt in ("json", "csv"):
        writer = ArchiveDataWriter(tmp_path / fmt, per="batch", format=fmt)
        writer.write(ctx, CollectedVariables(items))
        writer.close()
        (path,) = data_files(tmp_path / fmt)
        back = read_samples(path)
        assert [s.variable_id for s in back] == list(range(1, 9))
        assert all(s.context_id == 3 and s.read_at == T0 + timedelta(microseconds=7) for s in back)
        got = [s.value for s in back]
        assert got[:4] == values[:4] and [type(x) for x in got[:4]] == [float, int, bool, str]
        assert math.isnan(got[4]) and got[5] == -math.inf and got[6] is None and got[7] == 2**63 - 1
        assert [s.quality for s in back][:1] == [Quality.UNCERTAIN] and back[0].error == "stale"
        assert back[6].quality is Quality.BAD and back[6].error == "timeout"
    doc = json.loads((data_files(tmp_path / "json")[0]).read_text(encoding="utf-8"))
    assert doc["context_id"] == 3 and doc["samples"][3]["value"] == values[3]


def test_json_keeps_text_utf8_cannot_encode_exactly(tmp_path: Path) -> None:
    v = Variable(1, "s", "str", "r")
    writer = ArchiveDataWriter(tmp_path, "{{ seq }}.json", format="json")
    writer.write(
        started(DataCollectionContext(1, [v])), CollectedVariables([CollectedVariable(v, "a\udc80b", T0)])
    )
    writer.close()
    assert [read_samples(p)[0].value for p in data_files(tmp_path)] == ["a\udc80b"]


def test_json_holds_numpy_values_as_lists_and_numbers(tmp_path: Path) -> None:
    v = Variable(1, "wave", "float", "r")
    writer = ArchiveDataWriter(tmp_path, "{{ seq }}.json", format="json")
    ctx = started(DataCollectionContext(1, [v]))
    writer.write(ctx, CollectedVariables([CollectedVariable(v, np.arange(3.0), T0)]))
    writer.write(ctx, CollectedVariables([CollectedVariable(v, np.float32(1.5), T0 + timedelta(seconds=1))]))
    writer.close()
    assert [read_samples(p)[0].value for p in data_files(tmp_path)] == [[0.0, 1.0, 2.0], 1.5]


# -- through the engine with a spool ------------------------------------------------------------------------
def test_a_collector_run_with_a_spool_archives_every_sample_once(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    writer = ArchiveDataWriter(
        root, "{{ lot }}/{{ variable.address }}/{{ '%06d' % seq }}.json", per="variable", format="json"
    )
    rec = RecordingWriter()
    variables = [Variable(1, "n", "int", "w", 20), Variable(2, "text", "str", "w", 40)]
    with DataCollector(LOG, [WaveReader()], [writer, rec], spool_dir=tmp_path / "spool") as c:
        c.start(DataCollectionContext(5, variables, min_interval_ms=10, metadata={"lot": "L-1"}))
        wait_for(lambda: len(rec.of(5)) >= 40, 10, "samples")
        c.stop(5)
        stats = c.stats().writers[writer.name]
    assert stats.samples_written == len(rec.of(5)) and stats.lost_samples == 0
    stored = [(s.variable_id, s.read_at, s.value) for p in data_files(root) for s in read_samples(p)]
    assert sorted(stored) == sorted((r.variable_id, r.read_at, r.value) for r in rec.of(5))
    assert {p.parent.relative_to(root).as_posix() for p in data_files(root)} == {"L-1/n", "L-1/text"}


def test_a_replay_from_the_spool_after_an_unwritable_run_archives_everything(
    tmp_path: Path, unlock: list[Path]
) -> None:
    """Data that could not be written when the collector closed waits in the spool and is archived
    by the next run, each sample once."""
    root, spool = tmp_path / "archive", tmp_path / "spool"
    (root / "d").mkdir(parents=True)
    immutable(root / "d")
    unlock.append(root / "d")
    rec = RecordingWriter()
    writer = ArchiveDataWriter(root, "d/{{ '%06d' % seq }}.json", per="batch", format="json")
    c = DataCollector(
        LOG, [WaveReader()], [writer, rec], spool_dir=spool, write_retry_s=0.2, drain_timeout_s=1
    )
    c.start(DataCollectionContext(1, [Variable(1, "n", "int", "w", 20)], min_interval_ms=10))
    wait_for(lambda: len(rec.rows) >= 10, 10, "samples")
    c.close()  # gives up on the writer (still failing): its batches stay in the spool
    assert c.stats().writers[writer.name].unwritten_samples > 0
    writer.close()  # the collector never calls an abandoned writer again; its lock goes with close()
    assert data_files(root) == []
    _chattr(root / "d", "-i")
    again = ArchiveDataWriter(root, "d/{{ '%06d' % seq }}.json", per="batch", format="json")
    with DataCollector(LOG, [WaveReader()], [again], spool_dir=spool) as c2:
        c2.open()
        wait_for(lambda: c2.stats().writers[again.name].queue_depth == 0, 20, "the replay")
    stored = Counter((s.read_at, s.value) for p in data_files(root) for s in read_samples(p))
    assert set(stored.values()) == {1}
    assert sorted(stored) == sorted((r.read_at, r.value) for r in rec.rows)
