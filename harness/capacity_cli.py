"""``python -m harness capacity``: run a capacity search and show its table."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness import capacity
from harness.config import Settings
from harness.experiment import Experiment, Trial

EXIT_OK, EXIT_FAILED_TRIAL, EXIT_INTERRUPTED = 0, 1, 130
CAPACITY_CSV = "capacity.csv"


def main(
    exp: Experiment,
    search: capacity.Search,
    settings: Settings,
    out: Path,
    meta: dict[str, Any],
    console: Console,
    *,
    quiet: bool = False,
) -> int:
    # Imported here: Ray is slow to import.
    from harness import cluster, progress, report, results
    from harness.runner import Runner

    axes = [a for a in exp.sweep if a != "rate"]
    writer = results.RunWriter(out, meta)
    with console.status("starting Ray…"):
        ray_facts = cluster.init(settings)
    live = None if quiet else progress.LiveProgress(console, [*axes, "rate"])
    runner = Runner(settings, progress=live)
    finished: list[results.TrialResult] = []

    def run_trial(trial: Trial) -> results.TrialResult:
        result, series = runner.run(trial, position=len(finished) + 1, total=0)
        writer.add(result, series)
        finished.append(result)
        return result

    points: list[capacity.Point] = []
    status = "complete"
    try:
        for point in capacity.CapacitySearch(exp, run_trial, search=search).points():
            points.append(point)
            _write(out / CAPACITY_CSV, points, axes)
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        runner.close()
        cluster.shutdown()
        writer.finish(status=status, ray=ray_facts, trials_run=len(finished))
    console.print(table(points, axes))
    console.print(f"results: {out}/{CAPACITY_CSV}, {out}/trials.csv, {out}/meta.json")
    if finished:
        try:
            console.print(f"report: {report.write_report(out)}, charts in {out}/plots/")
        except Exception as exc:  # the results are safe on disk; say what went wrong
            console.print(f"[yellow]charts and report not written[/yellow]: {exc!r}")
    if status == "interrupted":
        console.print("[yellow]interrupted[/yellow]: the trials finished so far are written")
        return EXIT_INTERRUPTED
    failed = [r for r in finished if not r.invariant_ok]
    if failed:
        console.print(
            f"[bold red]{len(failed)} of {len(finished)} trials broke an invariant[/bold red]"
        )
        return EXIT_FAILED_TRIAL
    console.print(f"[green]all {len(finished)} trials hold every invariant[/green]")
    return EXIT_OK


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
        by_fraction = {p.fraction: p.result.steady for p in mine}
        cells = [
            f"{by_fraction[f].steady_p50_ms:,.1f} / {by_fraction[f].steady_p99_ms:,.1f}"
            if f in by_fraction
            else "–"
            for f in fractions
        ]
        cap = mine[0].capacity_eps
        t.add_row(
            *(str(getattr(params, a)) for a in axes),
            f"{mine[0].probe_eps:,.0f}",
            "none sustained" if math.isnan(cap) else f"{cap:,.0f}",
            *cells,
        )
    return t
