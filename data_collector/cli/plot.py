"""``data-collector plot SOURCE -o plot.png``: chosen variables of a stored context drawn over time.

The source is what ``export`` reads (a SQL store or an HDF5 file, see :mod:`.export`); one
context, optionally one run (``--run``) and a time range (``--from``/``--to``). Every numeric
variable (float, int, bool) is drawn, or those named by ``--variables`` (ids or names); one axis
per unit, stacked, sharing the time axis (UTC); a variable's BAD stretches are shaded in its
colour, from its first BAD sample to its next sample that is not BAD, and its line is broken
there and where no sample came for :data:`GAP_STEPS` of its intervals (a pause, a stop between
runs). Text variables are left out (named on stderr).

Drawn with matplotlib's object API (:class:`matplotlib.figure.Figure` on an Agg canvas): no
pyplot, no backend chosen for the process, nothing global changed. Needs matplotlib (extra
``plot``).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from .._errors import ConfigurationError
from .._model import Quality
from ._common import EXIT_OK
from .export import load_samples

#: Picture formats ``plot`` writes (what matplotlib's Agg, SVG and PDF backends make).
PICTURE_SUFFIXES = (".png", ".svg", ".pdf")

_NUMERIC = (bool, int, float)


@dataclass
class Series:
    """What is drawn of one variable: its label, unit, points and BAD stretches."""

    variable_id: int
    label: str
    unit: str | None
    steps: bool  # ints and bools: drawn as steps
    times: list[datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)  # NaN at BAD samples: the line breaks
    bad: list[tuple[datetime, datetime]] = field(default_factory=list)
    samples: int = 0
    bad_samples: int = 0


def _matplotlib() -> tuple[Any, Any, Any]:
    try:
        figure = importlib.import_module("matplotlib.figure")
        agg = importlib.import_module("matplotlib.backends.backend_agg")
        dates = importlib.import_module("matplotlib.dates")
    except ImportError:
        raise ConfigurationError('plot needs matplotlib: pip install "data-collector[plot]"') from None
    return figure, agg, dates


def _number(value: Any) -> float | None:
    if isinstance(value, _NUMERIC):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def build_series(
    samples: Sequence[Any], wanted: Sequence[str] | None = None
) -> tuple[list[Series], list[str]]:
    """The series of ``samples`` (rows of one context in time order: ``variable_id``, ``read_at``,
    ``value``, ``quality``, ``value_type``, ``name``, ``unit``), in variable id order, and the
    labels of the variables left out (their values are not numbers). ``wanted``: only the
    variables with these ids or names (:class:`ConfigurationError` for one there is not)."""
    by_id: dict[int, list[Any]] = {}
    for s in samples:
        if s.read_at is not None:
            by_id.setdefault(s.variable_id, []).append(s)
    labels: dict[int, str] = {}
    for vid, rows in by_id.items():
        name = getattr(rows[-1], "name", None)
        labels[vid] = name if name else f"variable {vid}"
    chosen = sorted(by_id)
    if wanted:
        chosen = []
        for item in wanted:
            key = item.strip()
            matches = [vid for vid in sorted(by_id) if labels[vid] == key or str(vid) == key]
            if not matches:
                known = ", ".join(f"{vid} ({labels[vid]})" for vid in sorted(by_id)[:20])
                raise ConfigurationError(
                    f"--variables: no variable {key!r} in the samples (there are: {known})"
                )
            chosen += [vid for vid in matches if vid not in chosen]
    series: list[Series] = []
    skipped: list[str] = []
    for vid in chosen:
        rows = sorted(by_id[vid], key=lambda r: r.read_at)
        good = [r for r in rows if r.quality is not Quality.BAD and r.value is not None]
        if good and not all(_number(r.value) is not None for r in good):
            skipped.append(labels[vid])
            continue
        if not good and getattr(rows[-1], "value_type", "float") not in ("float", "int", "bool"):
            skipped.append(labels[vid])
            continue
        steps = bool(good) and all(isinstance(r.value, bool | int) for r in good)
        one = Series(vid, labels[vid], getattr(rows[-1], "unit", None), steps)
        bad_since: datetime | None = None
        one.samples = len(rows)
        for r in rows:
            is_bad = r.quality is Quality.BAD or r.value is None
            one.times.append(r.read_at)
            number = None if is_bad else _number(r.value)
            one.values.append(math.nan if number is None else number)
            if is_bad:
                one.bad_samples += 1
                if bad_since is None:
                    bad_since = r.read_at
            elif bad_since is not None:
                one.bad.append((bad_since, r.read_at))
                bad_since = None
        step = _typical_step(one.times)
        if bad_since is not None:  # BAD to the end: as long as one more interval
            one.bad.append((bad_since, max(one.times[-1], bad_since) + step))
        _break_gaps(one, step * GAP_STEPS)
        series.append(one)
    return series, skipped


#: A variable's line is broken where no sample came for this many of its typical intervals (a
#: pause, a stop between two runs): the line does not pretend to know what happened there.
GAP_STEPS = 5


def _break_gaps(one: Series, gap: timedelta) -> None:
    """Insert a NaN point into ``one`` wherever two samples are more than ``gap`` apart."""
    times, values = [], []
    for i, (t, v) in enumerate(zip(one.times, one.values, strict=True)):
        if i and t - one.times[i - 1] > gap:
            times.append(one.times[i - 1] + (t - one.times[i - 1]) / 2)
            values.append(math.nan)
        times.append(t)
        values.append(v)
    one.times, one.values = times, values


def _typical_step(times: list[datetime]) -> timedelta:
    """The median spacing of ``times`` (1 s when there are fewer than two)."""
    gaps = sorted(b - a for a, b in itertools.pairwise(times) if b > a)
    return gaps[len(gaps) // 2] if gaps else timedelta(seconds=1)


def draw(
    series: Sequence[Series],
    path: Path,
    *,
    title: str,
    width: float = 10.0,
    height: float | None = None,
    dpi: float = 100.0,
) -> int:
    """Draw ``series`` into the picture file ``path`` (PNG, SVG or PDF by its suffix): one axis per
    unit, BAD stretches shaded. The number of axes."""
    figure_mod, agg, mdates = _matplotlib()
    groups: dict[str | None, list[Series]] = {}
    for one in series:
        groups.setdefault(one.unit, []).append(one)
    n = max(1, len(groups))
    fig = figure_mod.Figure(
        figsize=(width, height or min(3.0 + 2.4 * n, 40.0)), dpi=dpi, layout="constrained"
    )
    agg.FigureCanvasAgg(fig)  # the figure draws on its own Agg canvas: no pyplot, no global backend
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    colours = [f"C{i % 10}" for i in range(len(series))]
    colour_of = {one.variable_id: colours[i] for i, one in enumerate(series)}
    if not series:
        axes[0].text(0.5, 0.5, "nothing to draw", ha="center", va="center", transform=axes[0].transAxes)
    for ax, (unit, members) in zip(axes, groups.items(), strict=False):
        for one in members:
            colour = colour_of[one.variable_id]
            label = one.label + (f" ({one.bad_samples} BAD)" if one.bad_samples else "")
            drawstyle = "steps-post" if one.steps else "default"
            ax.plot(one.times, one.values, color=colour, label=label, drawstyle=drawstyle, linewidth=1.4)
            if one.samples - one.bad_samples == 1:  # a single good point: show it
                ax.plot(one.times, one.values, color=colour, marker="o", linestyle="none")
            for start, end in one.bad:
                ax.axvspan(start, end, color=colour, alpha=0.18, hatch="//", linewidth=0)
        ax.set_ylabel(unit if unit else "(no unit)")
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if any(one.bad for one in members):
            patch = importlib.import_module("matplotlib.patches").Patch(
                facecolor="grey", alpha=0.3, hatch="//", label="BAD (shaded)"
            )
            handles.append(patch)
            labels.append("BAD (shaded)")
        ax.legend(handles, labels, loc="upper left", fontsize="small", framealpha=0.8)
    locator = mdates.AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes[-1].set_xlabel("read time (UTC)")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=dpi)
    return n


def _cmd_plot(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    path = Path(args.output)
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise ConfigurationError(
            f"-o {args.output}: unsupported picture type {path.suffix or '(no suffix)'!r}: "
            f"give a {', '.join(PICTURE_SUFFIXES[:-1])} or {PICTURE_SUFFIXES[-1]} file"
        )
    _matplotlib()  # before reading: a missing matplotlib fails at once
    wanted = [v for v in args.variables.split(",") if v.strip()] if args.variables else None
    query = copy.copy(args)
    query.context = [args.context] if args.context is not None else None
    query.variables = None  # chosen by id or name after reading
    query.one_context = "plot"
    query.list = False
    found = load_samples(query, out)
    assert found is not None
    samples, ids, label = found
    series, skipped = build_series(samples, wanted)
    if skipped and not args.quiet:
        err.write(f"left out (not numbers): {', '.join(skipped)}\n")
    runs = f" run {', '.join(map(str, args.run))}" if args.run else ""
    title = args.title or (f"context {ids[0]}{runs} - {label}" if ids else label)
    axes = draw(series, path, title=title, width=args.width, height=args.height, dpi=args.dpi)
    if not args.quiet:
        bad = sum(one.bad_samples for one in series)
        err.write(
            f"plotted {len(series)} variables ({sum(one.samples for one in series)} samples, {bad} BAD) "
            f"on {axes} axes to {path}\n"
        )
    return EXIT_OK
