"""``data-collector export --wide`` and ``data-collector plot``, driven as a user would
(subprocesses), on SQL stores (SQLite, PostgreSQL, MariaDB: real servers, a table prefix per test)
and HDF5 files; and what ``export`` refuses: an unknown context or run, an output file type it
cannot write (exit status 2, nothing written).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _cases.sql_cases import sql_store
from cli_demo_export_test import cli
from sql_labels_test import T0, VALUES, fill, variables, write_ticks

from data_collector import DataCollectionContext, Quality, Variable


def source_args(url: str, prefix: str) -> list[str]:
    """What a user types: the SQLite file, or the URL of a server, and the table prefix."""
    parsed = sa.make_url(url)
    source = str(parsed.database) if parsed.get_backend_name() == "sqlite" else url
    return [source, "--table-prefix", prefix]


@pytest.fixture(params=["sqlite", "postgresql", "mariadb", "hdf5"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """A SQL store or an HDF5 file with context 3 (two runs of three ticks) and context 4 (one
    tick); what a user types to name it."""
    if request.param == "hdf5":
        yield hdf5_source(tmp_path)
        return
    with sql_store(request.param, tmp_path) as (url, prefix):
        fill(url, prefix, runs=2)
        from data_writer.sql import SqlDataWriter

        writer = SqlDataWriter(url, table_prefix=prefix)
        other = DataCollectionContext(4, variables())
        other._start_date = T0
        with writer.lock:
            writer.context_started(other)
            write_ticks(writer, other, T0, VALUES[:1])
            writer.close()
        yield source_args(url, prefix)


def hdf5_source(tmp_path: Path) -> list[str]:
    pytest.importorskip("tables")
    from data_writer.hdf5 import Hdf5DataWriter

    path = tmp_path / "runs.h5"
    writer = Hdf5DataWriter(path, flush_s=0)
    context = DataCollectionContext(3, variables())
    with writer.lock:
        for n in range(2):
            context._start_date = T0 + timedelta(seconds=10 * n)
            context._end_date = None
            writer.context_started(context)
            write_ticks(writer, context, T0 + timedelta(seconds=10 * n), VALUES)
            context._end_date = T0 + timedelta(seconds=10 * n + 2)
            writer.context_stopped(context)
        other = DataCollectionContext(4, variables())
        other._start_date = T0
        writer.context_started(other)
        write_ticks(writer, other, T0, VALUES[:1])
        writer.close()
    return [str(path)]


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def check_wide_csv(rows: list[dict[str, str]], times: list[datetime]) -> None:
    assert list(rows[0]) == ["read_at", "Ram force", "Strokes", "Motor", "Recipe", "15"]
    assert [datetime.fromisoformat(r["read_at"]) for r in rows] == times
    assert [r["Ram force"] for r in rows[:3]] == ["1.25", "", "2.5"]  # BAD: empty
    assert [r["Strokes"] for r in rows[:3]] == ["7", "8", ""]
    assert [r["Motor"] for r in rows[:3]] == ["true", "false", "true"]
    assert [r["Recipe"] for r in rows[:3]] == ["R-1", "R-1", "R-2"]
    assert [r["15"] for r in rows[:3]] == ["", "inf", "-1.5"]  # NaN is empty too


def test_export_wide_csv_and_parquet(source: list[str], tmp_path: Path) -> None:
    all_times = [T0 + timedelta(seconds=10 * n + s) for n in range(2) for s in range(3)]
    result = cli(["export", *source, "--context", "3", "--wide"], tmp_path)
    assert result.returncode == 0, result.stderr
    check_wide_csv(read_csv(result.stdout), all_times)
    assert "exported 6 read times x 5 variables (30 samples) of context 3" in result.stderr

    second = cli(["export", *source, "--context", "3", "--wide", "--run", "2", "-o", "run2.csv"], tmp_path)
    assert second.returncode == 0, second.stderr
    with open(tmp_path / "run2.csv", newline="", encoding="utf-8") as f:
        check_wide_csv(list(csv.DictReader(f)), all_times[3:])
    window = cli(
        [
            "export",
            *source,
            "--context",
            "3",
            "--wide",
            "--from",
            all_times[1].isoformat(),
            "--to",
            all_times[4].isoformat(),
        ],
        tmp_path,
    )
    assert window.returncode == 0, window.stderr
    assert [datetime.fromisoformat(r["read_at"]) for r in read_csv(window.stdout)] == all_times[1:4]

    pq = pytest.importorskip("pyarrow.parquet")
    parquet = cli(["export", *source, "--context", "3", "--wide", "-o", "wide.parquet"], tmp_path)
    assert parquet.returncode == 0, parquet.stderr
    table = pq.read_table(tmp_path / "wide.parquet")
    assert table.column_names == ["read_at", "Ram force", "Strokes", "Motor", "Recipe", "15"]
    types = {f.name: str(f.type) for f in table.schema}
    assert types["read_at"].startswith("timestamp") and "UTC" in types["read_at"]
    assert (types["Ram force"], types["Strokes"], types["Motor"], types["15"]) == (
        "double",
        "int64",
        "bool",
        "double",
    )
    data = table.to_pydict()
    assert data["Ram force"][:3] == [1.25, None, 2.5] or (
        data["Ram force"][0] == 1.25 and math.isnan(data["Ram force"][1]) and data["Ram force"][2] == 2.5
    )
    assert data["Strokes"][:3] == [7, 8, None] and data["Recipe"][:3] == ["R-1", "R-1", "R-2"]


def test_export_refuses_what_it_cannot_do(source: list[str], tmp_path: Path) -> None:
    for args, message in (
        (["--context", "99"], "no context 99 in"),
        (["--context", "3", "--run", "3"], "no run 3 (context 3: runs 1..2)"),
        (["--context", "3", "--run", "0"], "no run 0 (context 3: runs 1..2)"),
        (["--wide"], "--wide shows one context: choose it with --context ID (there are 3, 4)"),
        (["--context", "3", "-o", "out.xlsx"], "-o out.xlsx: unsupported output file type '.xlsx'"),
        (["--context", "3", "-o", "out"], "unsupported output file type '(no suffix)'"),
    ):
        result = cli(["export", *source, *args], tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.xlsx").exists() and not (tmp_path / "out").exists()
    # --format says what to write whatever the name; a context with several runs: all of them
    named = cli(["export", *source, "--context", "3", "--format", "csv", "-o", "out.txt"], tmp_path)
    assert named.returncode == 0, named.stderr
    assert len(read_csv((tmp_path / "out.txt").read_text(encoding="utf-8"))) == 30
    runs = cli(["export", *source, "--list"], tmp_path)
    assert runs.returncode == 0, runs.stderr
    assert [line.split()[:2] for line in runs.stdout.splitlines()[1:]] == [["3", "1"], ["3", "2"], ["4", "1"]]


# -- plot ----------------------------------------------------------------------------------------------------
def _pixels(path: Path) -> Any:
    image = pytest.importorskip("matplotlib.image")
    return image.imread(str(path))


def test_plot_draws_a_picture_of_the_chosen_variables(source: list[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    np = pytest.importorskip("numpy")
    result = cli(
        ["plot", *source, "--context", "3", "-o", "out/plot.png", "--width", "8", "--height", "6"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "left out (not numbers): Recipe" in result.stderr
    assert "plotted 4 variables (24 samples, 4 BAD) on 2 axes" in result.stderr  # kN, and no unit
    pixels = _pixels(tmp_path / "out" / "plot.png")
    assert pixels.shape[:2] == (600, 800)  # 6 x 8 inches at 100 dpi
    rgb = pixels[:, :, :3]
    assert float(rgb.std()) > 0.05  # not a blank page
    colours = {tuple(c) for c in (rgb[::4, ::4].reshape(-1, 3) * 255).astype(int).tolist()}
    assert len(colours) > 50
    assert bool(np.any(rgb.min(axis=2) < 0.5))  # dark lines and text

    chosen = cli(
        ["plot", *source, "--context", "3", "--run", "2", "--variables", "Strokes,15", "-o", "two.svg"],
        tmp_path,
    )
    assert chosen.returncode == 0, chosen.stderr
    assert "plotted 2 variables (6 samples, 1 BAD) on 1 axes" in chosen.stderr
    assert (tmp_path / "two.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    for args, message in (
        (["--context", "3", "-o", "plot.xlsx"], "unsupported picture type '.xlsx'"),
        (["--context", "3", "--variables", "Nope", "-o", "x.png"], "--variables: no variable 'Nope'"),
        (["--context", "99", "-o", "x.png"], "no context 99 in"),
        (["-o", "x.png"], "plot shows one context: choose it with --context ID"),
    ):
        bad = cli(["plot", *source, *args], tmp_path)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "plot.xlsx").exists()


def test_bad_stretches_are_spans_from_the_first_bad_sample_to_the_next_good_one() -> None:
    from data_collector.cli.plot import build_series
    from data_writer.sql import SampleRow

    v = Variable(1, "a", "float", "r", name="Flow", unit="l/s")
    quality = [Quality.GOOD, Quality.BAD, Quality.BAD, Quality.GOOD, Quality.GOOD, Quality.BAD]
    rows = [
        SampleRow(
            1,
            1,
            "a",
            "float",
            "r",
            T0 + timedelta(seconds=i),
            None if q is Quality.BAD else float(i),
            q,
            None,
            "Flow",
            "l/s",
        )
        for i, q in enumerate(quality)
    ]
    rows.append(
        SampleRow(1, 1, "a", "float", "r", T0 + timedelta(seconds=60), 7.0, Quality.GOOD, None, "Flow", "l/s")
    )
    (series,), skipped = build_series(rows)
    assert skipped == [] and (series.label, series.unit, series.bad_samples) == ("Flow", "l/s", 3)
    assert series.bad == [
        (T0 + timedelta(seconds=1), T0 + timedelta(seconds=3)),
        (T0 + timedelta(seconds=5), T0 + timedelta(seconds=60)),
    ]
    # BAD values and the long gap before the last sample break the line (NaN points)
    assert [math.isnan(x) for x in series.values] == [False, True, True, False, False, True, True, False]
    assert v.unit == series.unit


def test_plot_without_matplotlib_says_what_to_install(tmp_path: Path) -> None:
    source = hdf5_source(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "matplotlib").mkdir()
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(root)])
    result = subprocess.run(
        [sys.executable, "-m", "data_collector", "plot", *source, "--context", "3", "-o", "p.png"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and 'pip install "data-collector[plot]"' in result.stderr, result.stderr
