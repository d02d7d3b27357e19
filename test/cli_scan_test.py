"""``data-collector scan``: a real process against the bundled simulators (started by the test on
free ports): kill -9 mid-way then ``--resume`` gives what an uninterrupted run gives, Ctrl-C
stops cleanly (exit 130) and resumes, a refused write fails its point (exit 1), progress lines
when not on a terminal, a journal with points and no ``--resume`` refused (exit 2).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from _util import wait_for
from cli_run_test import cli, spawn
from scan_test import (
    RETRIES,
    SAMPLES,
    Sims,
    completed_points,
    device_writes,
    fresh,
    only_retried,
    sims,
    write_config,
)

from data_writer.hdf5 import list_runs

__all__ = ["fresh", "sims"]  # the fixtures, used by name


def journal(folder: Path) -> list[dict[str, Any]]:
    path = folder / "sweep.journal.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines()[1:]:
        with contextlib.suppress(ValueError):  # a line being written
            out.append(json.loads(line))
    return out


def completed(folder: Path) -> int:
    return sum(1 for e in journal(folder) if e["status"] == "completed")


def frame(folder: Path) -> pd.DataFrame:
    data = pd.read_hdf(folder / "scan.h5", "/scans/sweep")
    assert isinstance(data, pd.DataFrame)
    return data.drop(columns=["time_us"]).reset_index(drop=True)


def sql_frame(folder: Path) -> pd.DataFrame:
    engine = sa.create_engine(f"sqlite:///{folder / 'scan.sqlite'}")
    try:
        with engine.connect() as conn:
            data = pd.read_sql("SELECT * FROM dc_scan_sweep ORDER BY point, time_us", conn)
    finally:
        engine.dispose()
    return data.drop(columns=["time_us"]).reset_index(drop=True)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_kill_9_mid_way_then_resume_equals_an_uninterrupted_run(fresh: Sims, tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    config = write_config(whole, fresh)
    run = cli(["scan", str(config), "--name", "sweep"], whole, timeout=180)
    assert run.returncode == 0, run.stderr + run.stdout
    # progress: one plain line per point when not on a terminal
    lines = [x for x in run.stdout.splitlines() if x.startswith("[")]
    assert len(lines) == 12 and lines[0].startswith(
        "[ 1/12] point 0 (temp=10 flow=0.0): completed (done 1/12"
    )
    assert "ETA" in lines[0] and lines[-1].startswith("[12/12] point 11 (temp=30 flow=1.5): completed")
    assert "scan 'sweep': 12 of 12 points complete (12 in this run, 0 before), 0 failed" in run.stdout
    assert 'pandas.read_hdf("' in run.stdout and "SQL table dc_scan_sweep" in run.stdout

    fresh.clear()
    config = write_config(killed, fresh)
    proc = spawn(["scan", str(config), "--name", "sweep"], killed)
    try:
        wait_for(lambda: completed(killed) >= 5 or proc.poll() is not None, timeout=120, what="5 points")
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
        code, _out, _err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == -signal.SIGKILL
    done = completed(killed)
    assert 5 <= done < 12
    before = len(journal(killed))
    fresh.clear()
    again = cli(["scan", str(config), "--name", "sweep", "--resume"], killed, timeout=180)
    assert again.returncode == 0, again.stderr + again.stdout
    assert f"resuming: {done} of 12 points are complete in the journal (skipped)" in again.stdout
    assert f"12 of 12 points complete ({12 - done} in this run, {done} before)" in again.stdout
    # the resumed process wrote the whole configuration of the points left, in order
    entries = journal(killed)
    assert {e["point"] for e in entries[before:]} == set(range(done, 12))
    modbus, opcua = device_writes(entries[before:])
    assert modbus[:2] == [(400, (20 if done < 8 else 30,)), (402, (7,))] and len(modbus) >= 2 * (12 - done)
    assert fresh.modbus_writes() == modbus
    assert fresh.opcua_writes() == [("Setpoint.Double", f, "Good") for f in opcua]

    # the result equals the uninterrupted run: same points, each once, same values
    pd.testing.assert_frame_equal(frame(killed), frame(whole))
    assert frame(killed).groupby("point").size().tolist() == [SAMPLES] * 12
    pd.testing.assert_frame_equal(sql_frame(killed), sql_frame(whole))
    assert completed_points(entries) == list(range(12)) and only_retried(entries)
    runs = list_runs(killed / "scan.h5", 100)
    outcome = [r.deduced_metadata.get("scan_result", {}).get("status") for r in runs]
    done_runs = [
        r.deduced_metadata["scan"]["point"] for r, s in zip(runs, outcome, strict=True) if s == "completed"
    ]
    assert sorted(done_runs) == list(range(12))  # each point's completed run once
    # the point killed mid-capture was written from the spool by the resumed process, ended abnormally
    others = [r for r, s in zip(runs, outcome, strict=True) if s != "completed"]
    assert len(others) <= 1
    assert all(str(r.deduced_metadata.get("ended", "")).startswith("abnormal") for r in others)


def test_ctrl_c_stops_the_point_writes_its_data_and_resume_continues(fresh: Sims, tmp_path: Path) -> None:
    config = write_config(tmp_path, fresh)
    proc = spawn(["scan", str(config), "--name", "sweep"], tmp_path)
    try:
        wait_for(lambda: completed(tmp_path) >= 2 or proc.poll() is not None, timeout=120, what="2 points")
        proc.send_signal(signal.SIGINT)
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, err + out
    assert f"interrupted: continue with data-collector scan {config} --name sweep --resume" in out
    entries = journal(tmp_path)
    assert entries[-1]["status"] == "interrupted" or entries[-1]["status"] == "completed"
    runs = list_runs(tmp_path / "scan.h5", 100)
    assert all(r.end is not None for r in runs)  # every run was closed and written (no abnormal end)
    again = cli(["scan", str(config), "--resume"], tmp_path, timeout=180)
    assert again.returncode == 0, again.stderr + again.stdout
    assert frame(tmp_path).groupby("point").size().tolist() == [SAMPLES] * 12


def test_a_refused_write_makes_the_command_exit_1_naming_the_point(fresh: Sims, tmp_path: Path) -> None:
    fresh.modbus.write_limits[400] = (0, 25)
    config = write_config(tmp_path, fresh, temps=[10, 30])
    run = cli(["scan", str(config)], tmp_path, timeout=180)
    assert run.returncode == 1, run.stderr + run.stdout
    failed = [x for x in run.stdout.splitlines() if "FAILED" in x]
    assert len(failed) == 4
    assert failed[0].startswith("[4/8] point 4 (temp=30 flow=0.0): FAILED: writing temp = 30 to variable 10")
    assert "exception 3 (illegal data value)" in failed[0]
    retried = [x for x in run.stdout.splitlines() if "attempt failed, trying again: writing temp = 30" in x]
    assert len(retried) == 4 * RETRIES
    assert "4 of 8 points complete" in run.stdout and "first failure: point 4" in run.stdout
    assert "(--resume redoes the failed points)" in run.stdout
    # a journal that holds points needs --resume
    again = cli(["scan", str(config)], tmp_path, timeout=60)
    assert again.returncode == 2 and "resume it (--resume)" in again.stderr
    fresh.modbus.write_limits.clear()
    last = cli(["scan", str(config), "--resume"], tmp_path, timeout=180)
    assert last.returncode == 0, last.stderr + last.stdout
    assert "8 of 8 points complete (4 in this run, 4 before)" in last.stdout


def test_dry_run_of_a_resumable_scan_shows_what_is_left(fresh: Sims, tmp_path: Path) -> None:
    fresh.modbus.write_limits[400] = (0, 25)
    config = write_config(tmp_path, fresh, temps=[10, 30])
    assert cli(["scan", str(config)], tmp_path, timeout=180).returncode == 1
    fresh.clear()
    dry = cli(["scan", str(config), "--dry-run"], tmp_path, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "4 of 8 points complete; --resume skips them" in dry.stdout
    rows = [x.split() for x in dry.stdout.splitlines() if x.strip()[:1].isdigit()]
    assert [r[1] for r in rows] == ["complete"] * 4 + ["failed"] * 4
    assert "dry run: 4 points to do, 12 writes" in dry.stdout
    assert fresh.modbus.requests == [] and fresh.opcua.writes == []  # the dry run connected nowhere
