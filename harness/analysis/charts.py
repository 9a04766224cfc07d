"""The charts a run can have, in report order, and drawing them into ``<run>/plots/``.

Sweep and correctness charts are drawn by :mod:`harness.analysis.plots`, those of open-loop load
by :mod:`harness.analysis.load_plots` (with the first one's helpers); this module lists both, so
neither needs the other's registry.
"""

from __future__ import annotations

from pathlib import Path

from harness.analysis import correctness, load_plots, plots, time_plots
from harness.analysis.registry import Chart, draw_all
from harness.trials.results import Run, load

CHARTS: tuple[Chart[Run], ...] = (
    Chart(
        "capacity.png",
        "Capacity",
        load_plots.applies_capacity,
        draw=load_plots.capacity,
        describe=load_plots.describe_capacity,
    ),
    Chart(
        "latency_vs_throughput.png",
        "Latency vs throughput",
        load_plots.applies_latency_vs_throughput,
        draw=load_plots.latency_vs_throughput,
        describe=load_plots.describe_latency_vs_throughput,
    ),
    Chart(
        "throughput_vs_consumers.png",
        "Throughput vs consumers",
        plots.applies_consumers,
        draw=plots.throughput_vs_consumers,
        describe=plots.describe_throughput_vs_consumers,
    ),
    Chart(
        "throughput_vs_batch.png",
        "Throughput vs batch size",
        plots.applies_batch,
        draw=plots.throughput_vs_batch,
        describe=plots.describe_throughput_vs_batch,
    ),
    Chart(
        "latency_vs_batch.png",
        "Latency vs batch size",
        plots.applies_batch,
        draw=plots.latency_vs_batch,
        describe=plots.describe_latency_vs_batch,
    ),
    Chart(
        "retries_vs_consumers.png",
        "Retries vs consumers",
        plots.applies_consumers,
        draw=plots.retries_vs_consumers,
        describe=plots.describe_retries_vs_consumers,
    ),
    Chart(
        "correctness.png",
        "Correctness: what held and what was lost",
        correctness.applies_correctness,
        draw=correctness.correctness,
        describe=correctness.describe_correctness,
    ),
    Chart(
        "throughput_over_time.png",
        "Commit rate over time",
        time_plots.applies_time,
        draw=time_plots.throughput_over_time,
        describe=time_plots.describe_throughput_over_time,
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
    return draw_all(CHARTS, run, run.path / "plots")
