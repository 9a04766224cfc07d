"""Charts of a ``bench`` run, drawn from its ``bench.json`` into ``<run>/plots/``.

- ``bench_throughput.png``: each part's events/s, every round and the median, on a log
  axis (the seed's design is about a hundred times slower than the rest), with the
  ratios and the targets under it;
- ``bench_cpu.png``: where the CPU went, in µs per event by part of the system: the
  batched parts ((a), (c)) in one panel, the one-event-per-transaction parts ((b), (d)),
  some fifty times costlier, in the other.

They take the parsed ``bench.json`` (a dict), so a notebook can draw a reference run.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from harness.analysis import plots
from harness.analysis.registry import Chart, draw_all
from harness.bench import cpu as cpu_mod
from harness.bench import pipeline as bench

PARTS = {
    "a": "(a) store ceiling",
    "b": "(b) the seed's design",
    "c": "(c) the pipeline",
    "d": "(d) pipeline, batch 1",
    "e": "(e) entry 1, batch 100",
    "f": "(f) (e), redeliveries counted",
}
#: the parts drawn side by side in each panel of the CPU chart
CPU_PANELS = (("a", "c"), ("b", "d"), ("e", "f"))
#: roles in the order they are stacked (idle last, above the busy ones)
STACK = (*cpu_mod.ROLES, "idle", "steal")
#: one colour per role, the same in both panels
ROLE_COLOURS = {
    "postgres": "#1f77b4",
    "redis": "#d62728",
    "consumers": "#2ca02c",
    "publishers": "#ff7f0e",
    "store workers": "#9467bd",
    "service": "#8c564b",
    "ray": "#e377c2",
    "driver": "#17becf",
    "other": "#7f7f7f",
    "idle": "#dddddd",
    "steal": "#bcbd22",
}


def _rates(measured: list[bench.Measurement]) -> dict[str, list[float]]:
    """Each part's events/s, one per round, in the order of :data:`PARTS`."""
    out: dict[str, list[float]] = {}
    for m in measured:
        out.setdefault(m.key, []).append(m.events_per_s)
    return {key: out[key] for key in PARTS if key in out}


def _targets_text(measured: list[bench.Measurement]) -> str:
    """``c/a 0.86 ≥ 0.8: met; …``, judged on the medians as ``bench`` judges them."""
    return "; ".join(f"{t.claim}: {t.verdict}" for t in bench.targets(measured))


def throughput(data: dict[str, Any]) -> Figure:
    measured = bench.measurements_of(data)
    rates = _rates(measured)
    rounds = max((len(v) for v in rates.values()), default=0)
    caption = (
        f"Bars: the median of {rounds} rounds; dots: each round. " if rounds > 1 else ""
    ) + f"Targets, on the medians: {_targets_text(measured)}."
    fig, (ax,) = plots.figure(1, "bench: events per second", caption, width=6.0)
    for i, values in enumerate(rates.values()):
        median = statistics.median(values)
        ax.bar(i, median, width=0.6, color=plots.CYCLE[i], alpha=0.75)
        ax.scatter([i] * len(values), values, color="black", s=14, zorder=3)
        ax.annotate(
            f"{median:,.0f}",
            (i, max(values)),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
        )
    ax.set_yscale("log")
    if rates:  # bars start at a whole decade below the slowest round; room for labels above
        slowest = min(min(v) for v in rates.values())
        fastest = max(max(v) for v in rates.values())
        ax.set_ylim(10 ** math.floor(math.log10(slowest)), fastest * 1.8)
    ax.set_xticks(range(len(rates)), [PARTS[k] for k in rates], rotation=12)
    ax.set_ylabel("events/s (log scale)")
    return fig


def cpu(data: dict[str, Any]) -> Figure:
    per_part: dict[str, dict[str, float]] = data.get("cpu_us_per_event") or {}
    panels = [[k for k in keys if k in per_part] for keys in CPU_PANELS]
    panels = [keys for keys in panels if keys]
    caption = (
        "CPU µs per event, medians of the rounds, by part of the system, over exactly each "
        "part's timed span (harness/cpu.py); idle is the CPU time no process used."
    )
    fig, axes = plots.figure(
        max(len(panels), 1), "bench: where the CPU went", caption, width=4.2, sharey=False
    )
    drawn: dict[str, Any] = {}
    for ax, keys in zip(axes, panels, strict=False):
        bottoms = [0.0] * len(keys)
        for role in STACK:
            heights = [per_part[k].get(role, 0.0) for k in keys]
            if any(heights):
                drawn[role] = ax.bar(
                    range(len(keys)), heights, bottom=bottoms, color=ROLE_COLOURS[role], width=0.6
                )
                bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        ax.set_xticks(range(len(keys)), [PARTS[k] for k in keys], rotation=12)
        ax.set_ylabel("CPU µs per event")
    roles = [r for r in reversed(STACK) if r in drawn]  # top of the stack first
    fig.legend([drawn[r] for r in roles], roles, loc="outside right upper", fontsize=8)
    return fig


#: the bench's charts, drawn from its ``bench.json``
CHARTS: tuple[Chart[dict[str, Any]], ...] = (
    Chart(
        "bench_throughput.png",
        "Events/s of each part",
        lambda data: bool(data.get("measurements")),
        draw=throughput,
    ),
    Chart(
        "bench_cpu.png",
        "CPU µs per event",
        lambda data: bool(data.get("cpu_us_per_event")),
        draw=cpu,
    ),
)


def write(run_dir: Path) -> list[Path]:
    """Draw the charts the run's ``bench.json`` has the data for into ``run_dir/plots``."""
    data = json.loads((run_dir / "bench.json").read_text())
    return draw_all(CHARTS, data, run_dir / "plots")
