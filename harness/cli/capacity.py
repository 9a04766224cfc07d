"""``python -m harness capacity``: run a capacity search and show its table."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.cli.session import session
from harness.infra.config import Settings
from harness.trials import capacity
from harness.trials.experiment import Experiment
from harness.trials.meta import Meta
from harness.trials.params import Trial

CAPACITY_CSV = "capacity.csv"


def main(
    exp: Experiment,
    search: capacity.Search,
    settings: Settings,
    out: Path,
    meta: Meta,
    console: Console,
    *,
    quiet: bool = False,
    repeat: int = 1,
) -> str:
    """Run the search and show its table; returns how the run ended (see
    :func:`harness.cli.progress.conclude`)."""
    from harness.cli import progress
    from harness.trials import results

    axes = [a for a in exp.axes if a != "rate"]
    writer = results.RunWriter(out, meta)
    live = None if quiet else progress.LiveProgress(console, [*axes, "rate"])
    points: list[capacity.Point] = []
    with session(settings, writer, console, live) as current:

        def run_trial(trial: Trial) -> results.TrialResult:
            return current.run(trial, total=0)

        searches = capacity.CapacitySearch(exp, run_trial, search=search, repeat=repeat)
        for point in searches.points():
            points.append(point)
            _write(out / CAPACITY_CSV, points, axes)
    console.print(table(points, axes))
    for line in spreads(points, axes):
        console.print(line)
    console.print(f"results: {out}/{CAPACITY_CSV}, {out}/trials.csv, {out}/meta.json")
    return progress.conclude(console, out, current.finished, interrupted=current.interrupted)


def _write(path: Path, points: list[capacity.Point], axes: list[str]) -> None:
    rows = [p.row(axes) for p in points]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def table(points: list[capacity.Point], axes: list[str]) -> Table:
    """A row per configuration: its capacity, and p50/p99 at each share of it."""
    t = Table(title="Capacity (highest sustained open-loop rate)")
    for name in [*axes, "burst events/s", "capacity events/s"]:
        t.add_column(name, justify="right")
    fractions = sorted({p.fraction for p in points if not math.isnan(p.fraction)})
    for f in fractions:
        t.add_column(f"p50 / p99 ms at {f:.0%}", justify="right")
    for config in sorted({p.config for p in points}):
        mine = [p for p in points if p.config == config]
        params = mine[0].result.trial.params
        cells = [_cell([p.result.steady for p in mine if p.fraction == f]) for f in fractions]
        cap = mine[0].capacity_eps
        t.add_row(
            *(str(getattr(params, a)) for a in axes),
            f"{mine[0].probe_eps:,.0f}",
            "none sustained" if math.isnan(cap) else f"{cap:,.0f}",
            *cells,
        )
    return t


def _cell(windows: list[Any]) -> str:
    """p50 / p99 of one share of the capacity: the value, or the range of the repetitions."""
    if not windows:
        return "–"

    def span(values: list[float]) -> str:
        lo, hi = min(values), max(values)
        return f"{lo:,.1f}" if lo == hi else f"{lo:,.1f}–{hi:,.1f}"

    return (
        f"{span([w.steady_p50_ms for w in windows])} / {span([w.steady_p99_ms for w in windows])}"
    )


def spreads(points: list[capacity.Point], axes: list[str]) -> list[str]:
    """For each share run more than once: how far its repetitions are apart, in one line."""
    lines = []
    keys = sorted({(p.config, p.fraction) for p in points if p.repeat > 0})
    for config, fraction in keys:
        runs = [p for p in points if p.config == config and p.fraction == fraction]
        p99 = [p.result.steady.steady_p99_ms for p in runs]
        eps = [p.result.steady.steady_eps for p in runs]
        params = runs[0].result.trial.params
        name = ", ".join(f"{a}={getattr(params, a)}" for a in axes) or "the configuration"
        lines.append(
            f"{name} at {fraction:.0%} of capacity ({params.rate:,.0f}/s), {len(runs)} runs back "
            f"to back: p99 {min(p99):,.1f}–{max(p99):,.1f} ms "
            f"(the larger {_spread(p99):.0%} above the smaller), committed "
            f"{min(eps):,.0f}–{max(eps):,.0f} events/s ({_spread(eps):.1%} apart)"
        )
    return lines


def _spread(values: list[float]) -> float:
    return max(values) / min(values) - 1 if min(values) > 0 else math.nan
