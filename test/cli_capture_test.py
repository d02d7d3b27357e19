"""``data-collector capture CONFIG -- COMMAND``: collection exactly while a real child process runs.

The child is a small Python script the test writes; it records when its process was created
(from ``/proc``: the kernel's start time, 10 ms resolution), when its own code began and when it
ended, so the stored read times can be compared with the child's life.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_run_test import cli, command, csv_rows, environment

from data_collector import ConfigurationError
from data_collector.cli.capture import describe_command, exit_status, parse_metadata

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the child reads its start time from /proc")

INTERVAL_S = 0.02

CONFIG = """
[[readers]]
type = "random"

[[writers]]
{writer}

[[contexts]]
id = 7
min_interval_ms = 10
metadata = {{ bench = "B2" }}
[[contexts.variables]]
id = 1
address = "counter"
value_type = "int"
interval_ms = 20

[[contexts]]
id = 8
min_interval_ms = 10
[[contexts.variables]]
id = 2
address = "sine"
value_type = "float"
interval_ms = 50
"""

CSV_WRITER = 'type = "csv"\npath = "out/context-{context_id}.csv"'
HDF5_WRITER = 'type = "hdf5"\npath = "out/runs.h5"\nflush_s = 0.5'

#: The child: writes its times to argv[1] (JSON), works ~1.2 s (or until SIGINT/SIGTERM, then
#: cleans up for 0.3 s, counting the signals it gets), prints to its stdout and exits with the
#: status argv[2].
CHILD = r"""
import json, os, signal, sys, time

def created():
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time since boot
    since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))

began = time.time()
times = {"created": created(), "began": began}
out = sys.argv[1]
with open(out + ".tmp", "w") as f:
    json.dump(times, f)
os.replace(out + ".tmp", out)
print("child output", flush=True)
stop = []  # every SIGINT and SIGTERM received, in order
signal.signal(signal.SIGTERM, lambda *a: stop.append("SIGTERM"))
signal.signal(signal.SIGINT, lambda *a: stop.append("SIGINT"))
deadline = time.monotonic() + 1.2
while time.monotonic() < deadline and not stop:
    time.sleep(0.01)
if stop:
    cleanup = time.monotonic() + 0.3  # clean-up after the interruption: still collected
    while time.monotonic() < cleanup:
        time.sleep(0.01)
times["stopped_by"] = stop
times["ended"] = time.time()
with open(out + ".tmp", "w") as f:
    json.dump(times, f)
os.replace(out + ".tmp", out)
os._exit(int(sys.argv[2]))  # at once: no interpreter shutdown between "ended" and the exit
"""


def setup(tmp_path: Path, writer: str) -> tuple[Path, Path]:
    config = tmp_path / "bench.toml"
    config.write_text(CONFIG.format(writer=writer), encoding="utf-8")
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    return config, script


def check_within(read_ats: list[datetime], times: dict[str, Any], interval_s: float) -> None:
    """Values only while the child lived, and throughout its life."""
    stamps = sorted(t.timestamp() for t in read_ats)
    assert stamps, "nothing collected"
    # not before the child's process existed (its start time has the kernel's 10 ms resolution)
    assert stamps[0] >= times["created"] - 0.011, (stamps[0], times)
    # not after it ended: its last statement, then the interpreter's exit, then our stop
    assert stamps[-1] <= times["ended"] + 0.25, (stamps[-1], times)
    # and collected from its start to its end
    assert stamps[0] <= times["began"] + 0.25, (stamps[0], times)
    assert stamps[-1] >= times["ended"] - 0.1 - interval_s, (stamps[-1], times)
    # one sample per wall-clock boundary: a read is stamped when it ran (a little after its
    # boundary), a boundary whose read came too late has a BAD sample stamped at the boundary
    # itself, so the boundary each stamp falls in is distinct and consecutive (exact integer µs)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    step_us = round(interval_s * 1e6)
    slots = sorted((t - epoch) // timedelta(microseconds=1) // step_us for t in read_ats)
    assert slots == list(range(slots[0], slots[0] + len(slots))), "a gap or a double in the samples"


@pytest.mark.parametrize("status", [0, 3])
def test_capture_collects_only_while_the_command_runs_and_passes_its_status_through(
    tmp_path: Path, status: int
) -> None:
    config, script = setup(tmp_path, CSV_WRITER)
    times_file = tmp_path / "times.json"
    args = ["capture", str(config), "--metadata", "operator=ana", "--metadata", "setpoint:=21.5"]
    argv = [sys.executable, "-u", str(script.name), str(times_file), str(status)]
    done = cli([*args, "--", *argv], cwd=tmp_path)
    assert done.returncode == status, done.stderr
    assert done.stdout == "child output\n"  # the command's stdout is its own; ours goes to stderr
    assert f"exit status {status} (the command's)" in done.stderr
    times = json.loads(times_file.read_text())

    for cid, interval in ((7, 0.02), (8, 0.05)):
        rows = csv_rows(tmp_path / "out" / f"context-{cid}.csv")
        check_within([datetime.fromisoformat(r["read_at"]) for r in rows], times, interval)
        runs = [json.loads(line) for line in (tmp_path / "out" / f"context-{cid}.csv.runs.jsonl").open()]
        assert [r["event"] for r in runs] == ["started", "stopped"]
        stopped = runs[-1]
        expected_user = {"operator": "ana", "setpoint": 21.5}
        if cid == 7:
            expected_user["bench"] = "B2"
        assert stopped["metadata"] == expected_user
        d = stopped["deduced_metadata"]
        assert d["exit_status"] == status
        assert d["ended"] == ("completed" if status == 0 else "failed")
        assert "signal" not in d and "interrupted_by" not in d
        assert d["command"]["argv"] == argv and d["command"]["cwd"] == str(tmp_path)
        assert isinstance(d["command"]["pid"], int)
        assert d["script"] == {
            "path": str(script),
            "sha256": hashlib.sha256(script.read_bytes()).hexdigest(),
            "args": [str(times_file), str(status)],
        }
        assert d["start"] <= d["end"]


def test_an_interrupted_command_is_waited_for_and_hdf5_keeps_the_metadata(tmp_path: Path) -> None:
    pytest.importorskip("tables")
    from data_writer.hdf5 import list_runs, read_samples

    config, script = setup(tmp_path, HDF5_WRITER)
    times_file = tmp_path / "times.json"
    argv = [sys.executable, str(script), str(times_file), "5"]
    proc = subprocess.Popen(
        [*command(), "capture", str(config), "--context", "7", "--", *argv],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # no controlling terminal: a SIGINT to us reaches the child only if forwarded
    )
    try:
        deadline = time.monotonic() + 60
        while not times_file.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.02)
        time.sleep(0.3)  # the child works a while before it is interrupted
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 5, err  # the child's own status after its clean-up
    times = json.loads(times_file.read_text())
    assert times["stopped_by"] == ["SIGINT"]  # forwarded once
    assert times["ended"] - times["began"] < 1.1  # interrupted before its 1.2 s of work

    (run,) = list_runs(tmp_path / "out" / "runs.h5")  # context 8 was not chosen
    assert run.context_id == 7 and run.metadata == {"bench": "B2"}
    d = run.deduced_metadata
    assert run.ended == "interrupted" and d["interrupted_by"] == "SIGINT" and d["exit_status"] == 5
    assert d["script"]["path"] == str(script) and d["script"]["args"] == [str(times_file), "5"]
    samples = read_samples(tmp_path / "out" / "runs.h5", 7)
    check_within([s.read_at for s in samples if s.read_at is not None], times, INTERVAL_S)


def test_ctrl_c_at_a_terminal_reaches_the_command_once(tmp_path: Path) -> None:
    """The terminal sends SIGINT to its foreground process group (data-collector and the command):
    data-collector must not send the command a second one."""
    config, script = setup(tmp_path, CSV_WRITER)
    times_file = tmp_path / "times.json"
    argv = [*command(), "capture", str(config), "--no-spool", "--context", "7", "--"]
    argv += [sys.executable, str(script), str(times_file), "4"]
    pid, master = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        os.chdir(tmp_path)
        os.execvpe(argv[0], argv, environment())
    output = bytearray()
    try:
        deadline = time.monotonic() + 60
        sent = False
        while True:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side closed
                    break
                if not chunk:
                    break
                output += chunk
            if not sent and times_file.exists():
                time.sleep(0.3)
                os.write(master, b"\x03")  # Ctrl-C
                sent = True
            assert time.monotonic() < deadline, output.decode(errors="replace")
        _, wait_status = os.waitpid(pid, 0)
    finally:
        os.close(master)
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 4, output.decode(errors="replace")
    times = json.loads(times_file.read_text())
    assert times["stopped_by"] == ["SIGINT"], output.decode(errors="replace")  # once, not twice
    stopped = json.loads((tmp_path / "out" / "context-7.csv.runs.jsonl").read_text().splitlines()[-1])
    assert stopped["deduced_metadata"]["ended"] == "interrupted"
    rows = csv_rows(tmp_path / "out" / "context-7.csv")
    check_within([datetime.fromisoformat(r["read_at"]) for r in rows], times, INTERVAL_S)


def test_a_command_killed_by_a_signal_gives_128_plus_n(tmp_path: Path) -> None:
    config, _ = setup(tmp_path, CSV_WRITER)
    code = "import os, signal, time; time.sleep(0.2); os.kill(os.getpid(), signal.SIGKILL)"
    done = cli(["capture", str(config), "--no-spool", "--", sys.executable, "-c", code], cwd=tmp_path)
    assert done.returncode == 128 + 9, done.stderr
    assert "the command was killed by SIGKILL" in done.stderr
    stopped = json.loads((tmp_path / "out" / "context-7.csv.runs.jsonl").read_text().splitlines()[-1])
    d = stopped["deduced_metadata"]
    assert d["exit_status"] == 137 and d["signal"] == "SIGKILL" and d["ended"] == "failed"
    assert "script" not in d  # python -c: no script
    assert not (tmp_path / "bench.spool").exists()


def test_nothing_runs_when_the_command_or_the_configuration_is_wrong(tmp_path: Path) -> None:
    config, _ = setup(tmp_path, CSV_WRITER)
    done = cli(["capture", str(config), "--", "no-such-command-dc"], cwd=tmp_path)
    assert done.returncode == 127 and "cannot run 'no-such-command-dc'" in done.stderr
    assert csv_rows(tmp_path / "out" / "context-7.csv") == []
    marker = tmp_path / "ran"
    touch = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    for args, needle in (
        (["--context", "9"], "no context with id 9"),
        (["--metadata", "bench=other"], "'bench' is already in the metadata of context 7"),
        (["--metadata", "x:={"], "not JSON"),
        (["--metadata", "novalue"], "write KEY=VALUE"),
    ):
        done = cli(["capture", str(config), *args, "--", *touch], cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert needle in done.stderr, (args, done.stderr)
    done = cli(["capture", str(config)], cwd=tmp_path)
    assert done.returncode == 2 and "needs a command" in done.stderr
    assert not marker.exists()  # the command never ran


def test_collection_problems_are_reported_and_strict_makes_them_fail(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[readers]]\ntype = "random"\n[[writers]]\ntype = "noop"\n[[contexts]]\nid = 1\n'
        'min_interval_ms = 10\nvariables = [{ id = 1, address = "bad:unplugged", value_type = "float", '
        "interval_ms = 50 }]\n",
        encoding="utf-8",
    )
    code = "import time; time.sleep(0.5)"
    done = cli(["capture", str(config), "--no-spool", "--", sys.executable, "-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # the command's status wins
    assert "collection: samples" in done.stderr and "BAD; exit status 0 (the command's)" in done.stderr
    done = cli(
        ["capture", str(config), "--no-spool", "--strict", "--", sys.executable, "-c", code], cwd=tmp_path
    )
    assert done.returncode == 1 and "exit status 1 (--strict)" in done.stderr


def test_describe_command_finds_the_script(tmp_path: Path) -> None:
    script = tmp_path / "sweep.py"
    script.write_text("print('x')\n")
    shell = tmp_path / "measure.sh"
    shell.write_text("#!/bin/sh\necho hi\n")
    shell.chmod(0o755)
    digest = hashlib.sha256(script.read_bytes()).hexdigest()

    d = describe_command(["python3", "-u", "-X", "dev", "-W", "ignore", "sweep.py", "--steps", "2"], tmp_path)
    assert d["script"] == {"path": str(script), "sha256": digest, "args": ["--steps", "2"]}
    assert d["command"]["argv"][0] == "python3" and d["command"]["cwd"] == str(tmp_path)
    d = describe_command([sys.executable, "-OO", "-Wignore", str(script)], tmp_path)
    assert d["script"]["path"] == str(script) and d["script"]["args"] == []
    assert describe_command(["python", "-m", "pkg.run", "a"], tmp_path)["script"] == {
        "module": "pkg.run",
        "args": ["a"],
    }
    assert "script" not in describe_command(["python", "-c", "print(1)", "sweep.py"], tmp_path)
    assert "script" not in describe_command(["python"], tmp_path)
    d = describe_command([str(shell), "sweep.py"], tmp_path)  # a file run directly (#!)
    assert d["script"]["path"] == str(shell) and d["script"]["args"] == ["sweep.py"]
    d = describe_command(["sh", "-e", "measure.sh", "x"], tmp_path)  # an interpreter and its file
    assert d["script"]["path"] == str(shell) and d["script"]["args"] == ["x"]
    assert "script" not in describe_command(["true", "--flag", "missing.txt"], tmp_path)
    long = describe_command(["echo", "x" * 5000], tmp_path)["command"]["argv"][1]
    assert len(long) == 1000 and long.endswith("...")


def test_exit_status_and_metadata_parsing() -> None:
    assert [exit_status(rc) for rc in (0, 3, 255, -2, -15)] == [0, 3, 255, 130, 143]
    assert parse_metadata(["a=b=c", "n:=3", "f:=[1, true]", "empty="]) == {
        "a": "b=c",
        "n": 3,
        "f": [1, True],
        "empty": "",
    }
    assert parse_metadata(None) == {}
    with pytest.raises(ConfigurationError, match="'=x'"):
        parse_metadata(["=x"])


def test_an_error_of_ours_while_the_command_runs_stops_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data-collector failing while the command runs (here: an unexpected error starting the
    contexts) stops the command and waits for it instead of leaving it running unwatched."""
    from data_collector.cli import capture as capture_module
    from data_collector.cli import main

    config, _script = setup(tmp_path, CSV_WRITER)
    pid_file = tmp_path / "pid"
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(
        "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(60)\n",
        encoding="utf-8",
    )

    def broken_start(*args: Any, **kwargs: Any) -> None:
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:  # the command is running
            time.sleep(0.01)
        raise RuntimeError("an internal error of data-collector")

    monkeypatch.setattr(capture_module, "_start", broken_start)
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="an internal error"):
        main(["capture", str(config), "--no-spool", "--", sys.executable, str(sleeper), str(pid_file)])
    assert time.monotonic() - started < 30  # not the command's 60 s
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # waited for: gone, not a zombie or still running
        os.kill(pid, 0)
