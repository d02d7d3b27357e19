"""``data-collector run`` with its spool, and ``data-collector spool``: real processes, real stores.

kill -9 of a run followed by a restart on the same spool, a store down at start, the spool
command listing, retrying the quarantine and dropping, the default spool folder, ``--no-spool``
and ``--spool-dir``, the spool lock, and the spool keys of the configuration file.
"""

from __future__ import annotations

import collections
import logging
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _util import free_port, wait_for
from cli_run_test import cli, csv_rows, spawn, summary_counts, wait_until

from data_collector import CollectedVariables, DataCollectionContext, DataCollector, DataWriter, Variable
from data_reader.random_data_reader import RandomDataReader

LOG = logging.getLogger("test.cli_spool")

SQLITE_CONFIG = """
[[readers]]
type = "random"

[[writers]]
type = "sql"
url = "sqlite:///{store}"

[[contexts]]
id = 5
duration_s = 3600
default_interval_ms = 100
variables = [
    {{ id = 1, address = "counter", value_type = "int" }},
    {{ id = 2, address = "sine", value_type = "float", interval_ms = 200 }},
    {{ id = 3, address = "ramp", value_type = "float", interval_ms = 500 }},
]
"""
INTERVALS = {1: 100, 2: 200, 3: 500}


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[str, str]:
    """The output of a process that is ending; killed (and the test failed) if it does not."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the command did not end within {timeout} s:\n{out}\n{err}")


def spooled_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*/*.seg")) if folder.exists() else 0


def ms(t: object) -> int:
    from datetime import datetime

    assert isinstance(t, datetime)
    return round(t.timestamp() * 1000)


# -- (a) kill -9 and restart -----------------------------------------------------------------------
def test_kill_9_then_restart_writes_every_boundary_into_sqlite_once(tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    from data_writer.sql_data_writer import read_contexts, read_samples

    store = tmp_path / "store.sqlite"
    url = f"sqlite:///{store}"
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "plant.toml").write_text(SQLITE_CONFIG.format(store=store.as_posix()), encoding="utf-8")

    def span_s() -> float:
        try:
            rows = read_samples(url, 5)
        except Exception:  # no tables yet
            return 0.0
        if {r.variable_id for r in rows} != set(INTERVALS):
            return 0.0
        return (max(r.read_at for r in rows) - min(r.read_at for r in rows)).total_seconds()

    first = spawn(["run", "conf/plant.toml"], tmp_path)
    try:
        wait_until(lambda: span_s() >= 4.0, 60, "4 s of samples of every variable in SQLite", first)
        killed_at = time.time()
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == -signal.SIGKILL
    listing = cli(["spool", "conf/plant.toml"], tmp_path)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    left = re.search(r"^SqlDataWriter\s+(\d+)\s+(\d+)\s", listing.stdout, re.M)
    assert left and int(left.group(2)) >= 1, listing.stdout  # records the store had not confirmed

    restarted_at = time.time()
    second = cli(["run", "conf/plant.toml", "--duration", "2"], tmp_path, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    replayed = re.search(
        r"^writer SqlDataWriter: (\d+) samples spooled by an earlier run are written first$",
        second.stdout,
        re.M,
    )
    assert replayed, second.stdout
    n_replayed = int(replayed.group(1))
    assert n_replayed >= int(left.group(1))
    assert re.search(
        rf"^writer SqlDataWriter: \d+ samples written, 0 lost, 0 dropped, 0 unwritten; spool: {n_replayed} "
        r"replayed, 0 batches quarantined, 0 samples left \(0 B\)$",
        second.stdout,
        re.M,
    ), second.stdout
    # the monitor of the live view does not count the earlier run's samples as this run's
    ((count, bad),) = summary_counts(second.stdout).values()
    assert bad == 0 and 10 <= count <= 60, second.stdout

    runs = read_contexts(url, 5)
    assert len(runs) == 2 and all(r.end is not None for r in runs), runs  # the killed run is closed
    killed, restarted = runs  # the deduced metadata says how each one ended
    assert killed.ended is not None and killed.ended.startswith("abnormal:"), killed.deduced_metadata
    assert killed.deduced_metadata["replayed_from_spool"] is True and restarted.ended == "closed"
    start_ms = ms(runs[0].start)
    rows = [r for r in read_samples(url, 5) if r.read_at.timestamp() < restarted_at]
    assert rows
    # every due boundary of each variable, from the first run's start up to shortly before the
    # kill (the spool is synced every second), is in the store
    last_ms = round(killed_at * 1000) - 2000
    for vid, interval in INTERVALS.items():
        covered = {ms(r.read_at) // interval * interval for r in rows if r.variable_id == vid}
        # (from 50 ms after the start: the reader starts at the first boundary after it picked up
        # the new plan, some ms after start_date; a boundary in between is neither read nor BAD)
        due = set(range(((start_ms + 50) // interval + 1) * interval, last_ms + 1, interval))
        assert len(due) >= 1500 // interval  # (4 s of samples, less 2 s)
        assert not due - covered, (vid, sorted(due - covered)[:10], len(due - covered))
    # ... exactly once (a replay must not duplicate what the store had already confirmed)
    duplicates = {
        k: n for k, n in collections.Counter((r.variable_id, r.read_at) for r in rows).items() if n > 1
    }
    assert not duplicates, (
        f"{len(duplicates)} samples stored twice after the replay, e.g. {list(duplicates)[:3]}"
    )


# -- a store down at start ---------------------------------------------------------------------------
CSV_CONFIG = """
[collector]
write_retry_s = 0.5

[[readers]]
type = "random"

[[writers]]
type = "csv"
path = "blocker/samples.csv"

[[contexts]]
id = 7
duration_s = 3600
default_interval_ms = 100
variables = [{ id = 1, address = "counter", value_type = "int" }]
"""


def test_writer_that_cannot_open_at_start_spools_until_it_can(tmp_path: Path) -> None:
    """A CSV folder that is a file at start (a transient error for the CSV writer): run starts anyway."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the CSV writer wants a folder", encoding="utf-8")
    (tmp_path / "down.toml").write_text(CSV_CONFIG, encoding="utf-8")
    proc = spawn(["run", "down.toml"], tmp_path)
    try:
        spool = tmp_path / "down.spool"
        wait_until(lambda: spooled_bytes(spool) > 2000, 30, "samples in the spool", proc)
        assert proc.poll() is None
        blocker.unlink()
        blocker.mkdir()
        wait_until(
            lambda: len(csv_rows(blocker / "samples.csv")) >= 20, 30, "rows once the folder is there", proc
        )
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    assert "failed to open (WriterError: cannot open CSV file blocker/samples.csv" in err, err
    assert "opened after" in err, err
    rows = csv_rows(blocker / "samples.csv")
    counter = [int(r["value"]) for r in rows]
    assert counter == list(range(1, len(counter) + 1))  # nothing read while it was down is missing
    assert summary_counts(out) == {7: (len(rows), 0)}
    assert f"writer CsvFileDataWriter(blocker/samples.csv): {len(rows)} samples written, 0 lost" in out


PG_CONFIG = """
[collector]
write_retry_s = 0.5
drain_timeout_s = 1

[[readers]]
type = "random"

[[writers]]
type = "sql"
url = "{url}"
table_prefix = "{prefix}"
connect_timeout_s = 2

[[contexts]]
id = 9
duration_s = 3600
default_interval_ms = 100
variables = [{{ id = 1, address = "counter", value_type = "int" }}]
"""


def test_postgresql_down_at_start_then_up_on_the_next_run(tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    import sqlalchemy as sa
    from _cases.sql_cases import POSTGRES_URL, drop_tables, require_database, unique_prefix

    from data_writer.sql_data_writer import SqlDataWriter, read_samples

    require_database(POSTGRES_URL)
    closed = free_port()
    parsed = sa.make_url(POSTGRES_URL)
    url_of = {
        "down": parsed.set(host="127.0.0.1", port=closed).render_as_string(hide_password=False),
        "up": parsed.render_as_string(hide_password=False),
    }
    probe = SqlDataWriter(url_of["down"], connect_timeout_s=2)
    try:
        probe.open()
    except Exception as exc:
        assert probe.is_transient(exc), f"a refused connection must be transient: {exc!r}"
    else:
        pytest.fail(f"a server answered on the closed port {closed}")
    prefix = unique_prefix()
    config = PG_CONFIG.format(url="${DB_URL}", prefix=prefix)
    (tmp_path / "pg.toml").write_text(config, encoding="utf-8")
    try:
        proc = spawn(["run", "pg.toml"], tmp_path, DB_URL=url_of["down"])
        try:
            wait_until(lambda: spooled_bytes(tmp_path / "pg.spool") > 2000, 30, "samples in the spool", proc)
            proc.send_signal(signal.SIGINT)
            out, err = finish(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 1, out + err
        ((read, _bad),) = summary_counts(out).values()
        assert out.splitlines()[-1] == (
            f"exit status 1: samples {read} unwritten "
            "(kept in the spool pg.spool: the next run writes them first)"
        ), out
        assert f"0 dropped, {read} unwritten (kept in the spool)" in out
        restarted_at = time.time()
        second = cli(
            ["run", "pg.toml", "--duration", "1.5"], tmp_path, timeout=120, env={"DB_URL": url_of["up"]}
        )
        assert second.returncode == 0, second.stdout + second.stderr
        assert (
            f"writer SqlDataWriter: {read} samples spooled by an earlier run are written first"
            in second.stdout
        )
        rows = [
            r
            for r in read_samples(url_of["up"], 9, table_prefix=prefix)
            if r.read_at.timestamp() < restarted_at
        ]
        assert sorted(r.value for r in rows) == list(range(1, read + 1))
    finally:
        drop_tables(url_of["up"], prefix)


# -- (b) the spool command ---------------------------------------------------------------------------
class Historian(DataWriter):
    """A writer that refuses its second batch with a ValueError (permanent), once; keeps the rest."""

    def __init__(self, name: str = "historian", refuse: bool = True) -> None:
        super().__init__(name=name)
        self.calls = 0
        self.refuse = refuse
        self.refused: list[tuple[int, object]] = []
        self.rows: list[tuple[int, object]] = []

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        self.calls += 1
        items = [(ms(item.read_at), item.value) for item in variables]
        if self.refuse and self.calls == 2:
            self.refused += items
            raise ValueError("value refused by the historian")
        if not context.deduced_metadata.get("replayed_from_spool"):
            return
        self.rows += items


class Down(DataWriter):
    """A store that is down: every write fails with a transient error."""

    def __init__(self) -> None:
        super().__init__(name="historian")

    def write(self, context: DataCollectionContext, variables: CollectedVariables) -> None:
        raise ConnectionRefusedError("the historian is down")


def collect(writer: DataWriter, spool: Path, seconds: float = 0.8) -> DataCollector:
    collector = DataCollector(
        LOG, [RandomDataReader()], [writer], spool_dir=spool, drain_timeout_s=1.0, write_retry_s=0.2
    )
    context = DataCollectionContext(
        1, [Variable(1, "counter", "int", "random", interval_ms=100)], duration_s=seconds
    )
    with collector:
        collector.start(context)
        wait_for(lambda: not collector.contexts(), 20, "the context to end")
    return collector


def test_spool_command_lists_retries_and_drops(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    historian = Historian()
    stats = collect(historian, spool).stats().writers["historian"]
    quarantined = len(list(spool.glob("historian-*/quarantine/*.q")))
    assert quarantined >= 1 and stats.quarantined_batches == quarantined and historian.refused

    listing = cli(["spool", "spool"], tmp_path)
    assert listing.returncode == 1, listing.stdout + listing.stderr  # 1: batches are quarantined
    lines = listing.stdout.splitlines()
    assert lines[0] == "spool spool:"
    assert re.match(r"writer\s+samples\s+records\s+bytes\s+oldest\s+quarantined$", lines[1]), lines
    assert re.match(rf"historian-[0-9a-f]{{10}}\s+0\s+0\s+0 B\s+{quarantined}$", lines[2]), lines
    assert lines[3:] == [
        "quarantined batches (their reasons):",
        f"  {lines[2].split()[0]}: {quarantined} x ValueError: value refused by the historian",
        f"0 samples not written yet, {quarantined} batches quarantined",
    ]
    # a configuration file stands for its spool, and names its writers
    (tmp_path / "plant.toml").write_text(
        '[collector]\nspool_dir = "spool"\n[[readers]]\ntype = "random"\n[[writers]]\ntype = "noop"\n'
        'name = "historian"\n[[contexts]]\nid = 1\n'
        'variables = [{ id = 1, address = "counter", value_type = "int" }]\n',
        encoding="utf-8",
    )
    by_config = cli(["spool", "plant.toml"], tmp_path)
    assert by_config.returncode == 1
    assert re.search(rf"^historian\s+0\s+0\s+0 B\s+{quarantined}$", by_config.stdout, re.M), by_config.stdout

    retried = cli(["spool", "spool", "--retry-quarantine"], tmp_path)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert retried.stdout.startswith(
        f"{quarantined} quarantined batches put back into the spool spool: the next run writes them first\n"
    )
    n = len(historian.refused)
    assert re.search(
        rf"^historian-\w+\s+{n}\s+{quarantined}\s+[\d.]+ (B|KiB)\s+\S+ \(.* ago\)\s+0$", retried.stdout, re.M
    ), retried.stdout
    # the next collector on this spool writes them first: the very samples that were refused
    again = Historian(refuse=False)
    collect(again, spool, seconds=0.3)
    assert again.rows == historian.refused
    assert cli(["spool", "spool"], tmp_path).stdout.endswith(
        "0 samples not written yet, 0 batches quarantined\n"
    )

    # data left unwritten (the store down at close) stays; --drop says what it would delete, --yes does
    stats = collect(Down(), spool).stats().writers["historian"]
    assert stats.unwritten_samples > 0 and stats.spooled_samples == stats.unwritten_samples
    unwritten = stats.unwritten_samples
    listing = cli(["spool", "spool"], tmp_path)
    assert (
        listing.returncode == 0
        and f"{unwritten} samples not written yet, 0 batches quarantined" in listing.stdout
    )
    dry = cli(["spool", "spool", "--drop"], tmp_path)
    assert dry.returncode == 2, dry.stdout + dry.stderr
    assert re.search(
        rf"--drop would delete \d+ files: {unwritten} samples not written yet and 0 quarantined", dry.stdout
    )
    assert dry.stdout.endswith("nothing deleted: add --yes to delete them\n")
    assert spooled_bytes(spool) > 0
    dropped = cli(["spool", "spool", "--drop", "--yes"], tmp_path)
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert re.match(
        rf"deleted \d+ files from the spool spool: {unwritten} samples not written yet", dropped.stdout
    )
    assert spooled_bytes(spool) == 0
    again = Historian(refuse=False)
    collect(again, spool, seconds=0.3)
    assert again.rows == []  # nothing replayed
    # a folder that is not there
    missing = cli(["spool", "nowhere"], tmp_path)
    assert (missing.returncode, missing.stderr) == (2, "error: spool folder 'nowhere' does not exist\n")
    both = cli(["spool", "spool", "--drop", "--retry-quarantine"], tmp_path)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


# -- (c) where run spools ---------------------------------------------------------------------------
SHORT_CONFIG = """
{collector}
[[readers]]
type = "random"

[[writers]]
type = "csv"
path = "out/samples.csv"

[[contexts]]
id = 7
duration_s = 1.2
default_interval_ms = 100
variables = [{{ id = 1, address = "counter", value_type = "int" }}]
"""


def test_default_spool_folder_no_spool_spool_dir_and_the_files_spool_dir(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "short.toml").write_text(SHORT_CONFIG.format(collector=""), encoding="utf-8")
    result = cli(["run", "conf/short.toml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == (
        "collecting 1 contexts, 1 variables from conf/short.toml; spooling to conf/short.spool; "
        "Ctrl-C stops and writes every value read"
    )
    folders = sorted(p.name for p in (conf / "short.spool").iterdir())
    assert folders[-1] == "data-collector.lock"
    assert folders[0].startswith("CsvFileDataWriter_out_samples.csv-"), folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf", "out"]

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "short.toml").write_text(SHORT_CONFIG.format(collector=""), encoding="utf-8")
    result = cli(["run", "short.toml", "--no-spool"], plain)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "from short.toml; no spool (--no-spool); Ctrl-C" in result.stdout
    assert "; spool:" not in result.stdout and "spool " not in result.stdout.split("\n", 1)[1]
    assert sorted(p.name for p in plain.iterdir()) == ["out", "short.toml"]  # no spool folder

    result = cli(["run", "short.toml", "--spool-dir", "elsewhere/sp"], plain)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "; spooling to elsewhere/sp;" in result.stdout and (plain / "elsewhere" / "sp").is_dir()
    assert not (plain / "short.spool").exists()

    # the file's spool_dir, relative to the file's folder; --spool-dir still wins
    (conf / "own.toml").write_text(
        SHORT_CONFIG.format(collector='[collector]\nspool_dir = "sp"'), encoding="utf-8"
    )
    result = cli(["run", "conf/own.toml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"; spooling to {Path('conf/sp')};" in result.stdout and (conf / "sp").is_dir()
    validate = cli(["validate", "conf/own.toml"], tmp_path)
    assert validate.stdout.splitlines()[-1] == f"  spool: {Path('conf/sp')}"
    assert cli(["validate", "conf/own.toml", "--no-spool"], tmp_path).stdout.endswith(
        "  spool: none (--no-spool)\n"
    )
    usage = cli(["run", "conf/own.toml", "--no-spool", "--spool-dir", "x"], tmp_path)
    assert usage.returncode == 2 and "not allowed with argument" in usage.stderr


def test_one_run_per_spool(tmp_path: Path) -> None:
    (tmp_path / "long.toml").write_text(
        SHORT_CONFIG.format(collector="").replace("duration_s = 1.2", "duration_s = 3600"), encoding="utf-8"
    )
    proc = spawn(["run", "long.toml"], tmp_path)
    try:
        wait_until(lambda: len(csv_rows(tmp_path / "out" / "samples.csv")) >= 3, 30, "rows", proc)
        second = cli(["run", "long.toml", "--duration", "1"], tmp_path)
        assert second.returncode == 3, second.stdout + second.stderr
        assert second.stderr == (
            f"error: the spool long.spool is in use by another data-collector (pid {proc.pid}): "
            "give this run a spool of its own (--spool-dir DIR) or none (--no-spool)\n"
        )
        listing = cli(["spool", "long.toml"], tmp_path)
        assert listing.stdout.startswith(
            f"spool long.spool (in use by a running data-collector, pid {proc.pid}):"
        )
        drop = cli(["spool", "long.toml", "--drop", "--yes"], tmp_path)
        assert drop.returncode == 3 and "in use by a running data-collector" in drop.stderr
        assert cli(["run", "long.toml", "--duration", "0.5", "--no-spool"], tmp_path).returncode == 0
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    # once it ended, the spool is free again
    assert cli(["run", "long.toml", "--duration", "0.5"], tmp_path).returncode == 0


# -- (d) configuration errors through the command -----------------------------------------------------
def test_spool_configuration_errors_through_the_command(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        SHORT_CONFIG.format(collector="[collector]\nspool_max_bytes = 5\nspool_sync_s = -1"), encoding="utf-8"
    )
    result = cli(["run", "c.toml"], tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "c.toml: collector.spool_sync_s: -1: spool_sync_s must be a number > 0 "
        "(seconds, finite, at most 604800), got -1\n"
    )
    assert not (tmp_path / "c.spool").exists()
    (tmp_path / "c.toml").write_text(
        SHORT_CONFIG.format(collector="[collector]\nspool_max_bytes = 5"), encoding="utf-8"
    )
    result = cli(["validate", "c.toml"], tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr
        == "c.toml: collector.spool_max_bytes: 5: spool_max_bytes must be an int from 1 MiB to 1 PiB, got 5\n"
    )
    # two writers of one name: fine without a spool, refused with run's default spool (key path named)
    two = SHORT_CONFIG.format(collector="") + '\n[[writers]]\ntype = "noop"\n[[writers]]\ntype = "noop"\n'
    (tmp_path / "two.toml").write_text(two, encoding="utf-8")
    expected = (
        'two.toml: writers[2]: writer name "NoopDataWriter" is also the name of writers[1]: '
        "with a spool each writer needs a name of its own (its spool folder): "
        'give one a name = "..."\n(or run with --no-spool)\n'
    )
    for command in ("run", "validate"):
        result = cli([command, "two.toml"], tmp_path)
        assert (result.returncode, result.stderr) == (2, expected), (command, result.stdout + result.stderr)
        result = cli([command, "two.toml", "--no-spool"], tmp_path)
        assert result.returncode == 0, (command, result.stdout + result.stderr)
