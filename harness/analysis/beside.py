"""A report's *Beside …* section: an experiment's ``[reference]`` figures, someone else's,
next to ours, and the ratios between them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from harness.analysis import load_plots, stats
from harness.analysis import text as md
from harness.trials import experiment
from harness.trials.results import Run

# -- beside someone else's figures ------------------------------------------------------

#: what our burst trials offer for each reference figure (they have no window)
BURST_EQUIVALENT = {
    "steady_eps": "throughput_eps",
    "steady_p50_ms": "latency_p50_ms",
    "steady_p95_ms": "latency_p95_ms",
    "steady_p99_ms": "latency_p99_ms",
}


#: configurations of ours side by side at most; more get a row each
BESIDE_COLUMNS = 3
#: a column of ours: its heading, and (mean, half-width of the interval, n) per figure
_Ours = tuple[str, dict[str, tuple[float, float, int]]]


def section(run: Run) -> str:
    """*Beside …*: our figures next to those the experiment's ``[reference]`` gives."""
    ref = load_plots.reference(run)
    metrics = [m for m in experiment.REFERENCE_METRICS if m in ref]
    if not metrics or stats.measured(run).empty:
        return ""
    ours, what = _ours(run, metrics)
    theirs = f"{ref['label']} (theirs)"
    if len(ours) <= BESIDE_COLUMNS:  # a column each
        rows = [
            [
                experiment.REFERENCE_METRICS[m],
                md.value(md.plain(ref[m])),
                *(md.cell(*figures[m], _decimals(m)) for _, figures in ours),
            ]
            for m in metrics
        ]
        header = ["", theirs, *(title for title, _ in ours)]
    else:  # a row each, theirs first
        rows = [[theirs, *(md.value(md.plain(ref[m])) for m in metrics)]]
        rows += [
            [title, *(md.cell(*figures[m], _decimals(m)) for m in metrics)]
            for title, figures in ours
        ]
        header = ["", *(experiment.REFERENCE_METRICS[m] for m in metrics)]
    source = f" Theirs: {ref['source'].rstrip('.')}." if ref.get("source") else ""
    text = (
        f"## Beside {ref['label']}\n\n{what}{source} Both latencies end at the commit; ours "
        "starts at each event's intended send time, theirs where their source says."
    )
    ratio = _ratios(ref, ours)
    return f"{text}\n\n{md.table(rows, header)}" + (f"\n\n{ratio}" if ratio else "")


def _figures(row: dict[str, Any], metrics: Sequence[str], names: dict[str, str]) -> Any:
    """``(mean, ci, n)`` of each metric from a :func:`stats.summarize` row, the metric's
    column in it named by ``names`` (NaN when it has none)."""
    out = {}
    for m in metrics:
        column = names.get(m, m)
        if f"{column}_mean" in row:
            out[m] = (row[f"{column}_mean"], row[f"{column}_ci"], int(row[f"{column}_n"]))
        else:
            out[m] = (math.nan, math.nan, 0)
    return out


def _ours(run: Run, metrics: Sequence[str]) -> tuple[list[_Ours], str]:
    """Our figures for ``metrics``, a column per configuration, and what they are: a
    capacity search's at capacity, else the open-loop windows, else the bursts."""
    summary, axes = stats.capacity_summary(run)
    if not summary.empty:
        columns = []
        for r in summary[summary["fraction"] == 1.0].to_dict("records"):
            name = load_plots.configuration(axes, [r[a] for a in axes])
            figures = _figures(r, metrics, {})
            figures["offered_eps"] = (r["rate"], math.nan, 1)
            columns.append((f"ours: {name + ', ' if name else ''}at capacity", figures))
        return columns, "Ours: each configuration at its capacity (its trials at 100%)."
    summary, axes = stats.steady_summary(run)
    if not summary.empty:
        columns = []
        for key in stats.configurations(summary, axes):
            for r in stats.of_configuration(summary, axes, key).to_dict("records"):
                name = load_plots.configuration(axes, key)
                rate = f"{r['rate']:,.0f} events/s offered"
                title = f"ours: {name + ', ' if name else ''}{rate}" if len(summary) > 1 else "ours"
                columns.append((title, _figures(r, metrics, {})))
        return columns, (
            "Ours: this run's measured windows, the mean over each configuration's trials "
            "(± the 95% confidence interval when it ran more than once)."
        )
    trials = stats.measured(run)
    by = stats.swept(run, trials)
    summary = stats.summarize(trials, by, list(BURST_EQUIVALENT.values()))
    columns = []
    for r in summary.to_dict("records"):
        name = load_plots.configuration(by, [r[a] for a in by])
        title = f"ours: {name} (burst)" if name else "ours (burst)"
        columns.append((title, _figures(r, metrics, BURST_EQUIVALENT)))
    return columns, (
        "Ours: bursts (every event sent as fast as the publishers could), over the whole "
        "trial, the mean over each configuration's trials."
    )


def _decimals(metric: str) -> int:
    return 0 if metric.endswith("_eps") else 1


def _ratios(ref: dict[str, Any], ours: Sequence[_Ours]) -> str:
    """``Ours commits 27× their events/s, with 0.031× their p99.`` (ranges when several)."""
    parts = []
    for metric, words in (
        ("steady_eps", "Ours commits {} their events/s"),
        ("steady_p99_ms", "with {} their p99"),
    ):
        ratios = [
            figures[metric][0] / ref[metric]
            for _, figures in ours
            if metric in figures and ref.get(metric) and math.isfinite(figures[metric][0])
        ]
        if ratios:
            lo, hi = _times(min(ratios)), _times(max(ratios))
            parts.append(words.format(lo if lo == hi else f"{lo} to {hi}"))
    if not parts:
        return ""
    if not parts[0].startswith("Ours"):
        parts[0] = "Ours has " + parts[0].removeprefix("with ")
    return ", ".join(parts) + "."


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.2g}×"
