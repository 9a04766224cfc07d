"""The charts a run can have, in report order, and drawing them into ``<run>/plots/``.

Sweep and correctness charts are drawn by :mod:`harness.plots`, those of open-loop load
by :mod:`harness.load_plots` (with the first one's helpers); this module lists both, so
neither needs the other's registry.
"""

from __future__ import annotations

from pathlib import Path

from harness import load_plots, plots, time_plots
from harness.plots import Chart
from harness.results import Run, load

CHARTS: tuple[Chart, ...] = (
    Chart(
        "capacity.png",
        "Capacity",
        load_plots.applies_capacity,
        load_plots.capacity,
        load_plots.describe_capacity,
    ),
    Chart(
        "latency_vs_throughput.png",
        "Latency vs throughput",
        load_plots.applies_latency_vs_throughput,
        load_plots.latency_vs_throughput,
        load_plots.describe_latency_vs_throughput,
    ),
    Chart(
        "throughput_vs_consumers.png",
        "Throughput vs consumers",
        plots.applies_consumers,
        plots.throughput_vs_consumers,
        plots.describe_throughput_vs_consumers,
    ),
    Chart(
        "throughput_vs_batch.png",
        "Throughput vs batch size",
        plots.applies_batch,
        plots.throughput_vs_batch,
        plots.describe_throughput_vs_batch,
    ),
    Chart(
        "latency_vs_batch.png",
        "Latency vs batch size",
        plots.applies_batch,
        plots.latency_vs_batch,
        plots.describe_latency_vs_batch,
    ),
    Chart(
        "retries_vs_consumers.png",
        "Retries vs consumers",
        plots.applies_consumers,
        plots.retries_vs_consumers,
        plots.describe_retries_vs_consumers,
    ),
    Chart(
        "correctness.png",
        "Correctness: what held and what was lost",
        plots.applies_correctness,
        plots.correctness,
        plots.describe_correctness,
    ),
    Chart(
        "throughput_over_time.png",
        "Commit rate over time",
        time_plots.applies_time,
        time_plots.throughput_over_time,
        time_plots.describe_throughput_over_time,
    ),
)


def charts_for(run: Run) -> list[Chart]:
    """The charts this run has the data for, in report order."""
    return [chart for chart in CHARTS if chart.applies(run)]


def plot_run(run_path: str | Path) -> list[Path]:
    """Draw every chart the run can show into ``<run>/plots/`` and return the files written.

    Charts from an earlier drawing that no longer apply are removed, so the folder always
    matches the run.
    """
    run = load(run_path)
    directory = run.path / "plots"
    directory.mkdir(exist_ok=True)
    written = []
    for chart in CHARTS:
        target = directory / chart.filename
        if chart.applies(run):
            chart.draw(run).savefig(target)
            written.append(target)
        else:
            target.unlink(missing_ok=True)
    return written
