"""Charts of a run, drawn from its stored results into ``<run>/plots/*.png``.

Each chart is a function ``draw(run) -> Figure`` with a companion ``describe(run) -> str``
that says in one sentence, from the data, what the chart shows;
:data:`harness.analysis.charts.CHARTS` registers them with the test that decides whether a run
can draw the chart at all (a run with one batch size has no latency-vs-batch chart).
Figures are built on the Agg canvas without pyplot, so nothing here touches a display or
global state, and a notebook can show the same figures inline.

Axes a chart does not show are held at one value (the experiment's base value, else the
parameter's default, else the most common one), and the caption under the chart says which.
The sweep charts read an open-loop trial's measured window (:func:`stats.headline`); the
charts of open-loop load itself (latency vs throughput, capacity) are drawn by
:mod:`harness.analysis.load_plots`. :mod:`harness.analysis.charts` lists them all.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from harness.analysis import stats
from harness.trials.results import Run

ISOLATION_COLOURS = {
    "read_committed": "#1f77b4",
    "repeatable_read": "#ff7f0e",
    "serializable": "#d62728",
}
CYCLE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
LINESTYLES: tuple[Any, ...] = ("-", "--", ":", "-.")
LABELS = {
    "batch_size": "batch size",
    "isolation": "isolation level",
    "counter": "counter strategy",
    "entry_size": "events per stream entry",
    "rate": "offered rate (events/s)",
}
DPI = 120


# -- words -----------------------------------------------------------------------------------


def label(axis: str) -> str:
    return LABELS.get(axis, axis.replace("_", " "))


def named(axis: str, value: Any) -> str:
    """A value as a sentence names it: ``serializable``, ``4 consumers``, ``batch size 100``,
    ``the rmw counter``, ``5,000 events/s offered``."""
    if axis == "isolation":
        return str(value)
    if axis == "counter":
        return f"the {value} counter"
    if axis == "rate":
        return f"{value:,.0f} events/s offered" if value else "a burst"
    if axis in ("consumers", "publishers", "topics"):
        return f"{value} {axis.removesuffix('s') if value == 1 else axis}"
    return f"{label(axis)} {value}"


def record(frame: Any, index: Any) -> dict[str, Any]:
    """One row as a dict of Python values (``frame.loc[i]`` would turn ints into floats)."""
    return dict(frame.loc[[index]].to_dict("records")[0])


def _held_text(fixed: dict[str, Any]) -> str:
    return f" ({', '.join(named(k, v) for k, v in fixed.items())})" if fixed else ""


def trials_text(n: int) -> str:
    return "One trial" if n == 1 else f"All {n} trials"


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:,.2g}"


# -- shared drawing ---------------------------------------------------------------------------


def figure(
    panels: int,
    title: str,
    caption: str,
    *,
    width: float = 4.6,
    height: float = 4.8,
    rows: int = 1,
    **share: Any,
) -> tuple[Figure, Any]:
    """A row of panels sharing the y axis, a title on top and a caption underneath; with
    ``rows`` > 1, that many rows (the axes then come as rows × panels)."""
    inches = 2.4 + width * panels
    fig = Figure(figsize=(inches, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, panels, squeeze=False, **{"sharey": True, **share})
    fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.supxlabel(textwrap.fill(caption, int(inches * 13)), fontsize=9, color="0.3")
    return fig, axes[0] if rows == 1 else axes


def _caption(summary: Any, metric: str, fixed: dict[str, Any]) -> str:
    n = int(summary[f"{metric}_n"].max()) if len(summary) else 0
    text = (
        f"Points: mean of {n} repeats; bars: 95% confidence interval (Student t)."
        if n > 1
        else "One trial per point."
    )
    if fixed:
        text += (
            f" Other settings held at {', '.join(f'{label(k)} = {v}' for k, v in fixed.items())}."
        )
    return text


def colours_for(axis: str, values: Sequence[Any]) -> dict[Any, str]:
    if axis == "isolation":
        return {v: ISOLATION_COLOURS.get(v, CYCLE[i % len(CYCLE)]) for i, v in enumerate(values)}
    return {v: CYCLE[i % len(CYCLE)] for i, v in enumerate(values)}


def _x_axis(ax: Axes, values: Sequence[float], name: str) -> bool:
    """Ticks at the values swept; a log scale (returns True) when they span a factor ≥ 8."""
    values = sorted(set(values))
    log = values[0] > 0 and values[-1] / values[0] >= 8
    if log:
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(name)
    return log


def _scope(run: Run) -> str:
    """What a sweep chart shows of a run that is not all bursts (``run`` as
    :func:`stats.headline` gives it)."""
    if run.is_capacity:
        return (
            " Bursts only: the capacity search's probes (its open-loop trials are in the "
            "capacity and latency-vs-throughput charts)."
        )
    if not run.trials.empty and stats.is_open_loop(run.trials).any():
        return (
            " Open-loop trials (offered a rate) count the events/s committed in their "
            "measured window, and its latency from each event's intended send time."
        )
    return ""


@dataclasses.dataclass(frozen=True)
class _Series:
    metric: str
    name: str = ""
    linestyle: Any = "-"
    marker: str = "o"


def _sweep_chart(
    run: Run, x: str, xlabel: str, series: Sequence[_Series], title: str, ylabel: str
) -> Figure:
    """``series`` against ``x``: a line per isolation level, a panel per counter strategy;
    a log y axis when there is more than one series (latency percentiles)."""
    run = stats.headline(run)
    summary, fixed, line = stats.sweep_summary(run, x, [s.metric for s in series])
    counters, lines = (
        stats.ordered("counter", summary["counter"]),
        stats.ordered(line, summary[line]),
    )
    colours = colours_for(line, lines)
    caption = _caption(summary, series[-1].metric, fixed) + _scope(run)
    fig, axes = figure(len(counters), title, caption)
    # With error bars, lines step aside a little so that their bars do not hide each other.
    spread = 0.04 if (summary[[f"{s.metric}_n" for s in series]] > 1).any().any() else 0.0
    for ax, counter in zip(axes, counters, strict=True):
        logx = _x_axis(ax, summary[x].tolist(), xlabel)
        for i, value in enumerate(lines):
            s = summary[(summary["counter"] == counter) & (summary[line] == value)]
            shift = spread * (i - (len(lines) - 1) / 2)
            xs = (
                s[x] * (1 + shift) if logx else s[x] + shift * (summary[x].max() - summary[x].min())
            )
            for spec in series:
                _errorbar(ax, xs, s, spec, colours[value], log=len(series) > 1)
        ax.set_title(f"{label('counter')}: {counter}", fontsize=10)
        if len(series) > 1:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.grid(alpha=0.3)
    if len(series) == 1:
        # The panels share y: set it once, from every panel's data, or a panel drawn
        # later than the first can run off the top.
        top = max(ax.dataLim.y1 for ax in axes)
        axes[0].set_ylim(0, top * 1.06 if top > 0 else 1)
    axes[0].set_ylabel(ylabel)
    handles = [Line2D([], [], color=colours[v], marker="o", label=str(v)) for v in lines]
    handles += [
        Line2D([], [], color="0.3", linestyle=s.linestyle, marker=s.marker, label=s.name)
        for s in series
        if s.name
    ]
    fig.legend(handles=handles, title=label(line), loc="outside right center")
    return fig


def _errorbar(ax: Axes, xs: Any, s: Any, spec: _Series, colour: str, *, log: bool) -> None:
    """Means joined by a line, with the 95% interval as bars when there are repeats."""
    mean, half = s[f"{spec.metric}_mean"], s[f"{spec.metric}_ci"].fillna(0)
    below = half.clip(upper=mean * 0.6) if log else half  # a log axis cannot reach 0
    yerr = [below, half] if (s[f"{spec.metric}_n"] > 1).any() else None
    ax.errorbar(
        xs, mean, yerr=yerr, color=colour, linestyle=spec.linestyle, marker=spec.marker,
        capsize=3, elinewidth=1, ecolor=to_rgba(colour, 0.45),
    )  # fmt: skip


def applies_consumers(run: Run) -> bool:
    """Whether consumers vary with the run's other axes held: not where they change only
    with another setting (a case of its own, as a paused consumer's in ``failover``)."""
    t = stats.measured(stats.headline(run))
    if t.empty:
        return False
    held, _ = stats.held(run, t, keep=("consumers",))
    return bool(held["consumers"].nunique() > 1)


# -- throughput vs consumers ------------------------------------------------------------------


def throughput_vs_consumers(run: Run) -> Figure:
    return _sweep_chart(
        run,
        "consumers",
        "consumers (Ray actors)",
        [_Series("throughput_eps")],
        "Throughput vs consumers",
        "throughput (events/s)",
    )


def describe_throughput_vs_consumers(run: Run) -> str:
    summary, fixed, line = stats.sweep_summary(stats.headline(run), "consumers", ["throughput_eps"])
    mean = "throughput_eps_mean"
    peak = record(summary, summary[mean].idxmax())
    if summary["counter"].nunique() > 1:
        fixed = {"counter": peak["counter"], **fixed}
    sentence = (
        f"Throughput peaks at {peak[mean]:,.0f} events/s with "
        f"{named('consumers', peak['consumers'])} at {named(line, peak[line])}{_held_text(fixed)}"
    )
    best = summary.groupby(line)[mean].max() / peak[mean]
    others = [
        f"{named(line, value)} reaches {best[value]:.0%}"
        for value in stats.ordered(line, summary[line])
        if value != peak[line]
    ]
    if others:
        return f"{sentence}; at their best, {' and '.join(others)} of that."
    low = record(summary, summary["consumers"].idxmin())
    fewest = named("consumers", low["consumers"])
    return f"{sentence}, against {low[mean]:,.0f} events/s with {fewest}."


# -- retries vs consumers ---------------------------------------------------------------------


def retries_vs_consumers(run: Run) -> Figure:
    fig = _sweep_chart(
        run,
        "consumers",
        "consumers (Ray actors)",
        [_Series("retries_per_1k")],
        "Transaction retries vs consumers",
        "retries per 1,000 events",
    )
    fig.axes[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.3g}"))
    return fig


def describe_retries_vs_consumers(run: Run) -> str:
    summary, fixed, line = stats.sweep_summary(stats.headline(run), "consumers", ["retries_per_1k"])
    mean = "retries_per_1k_mean"
    if not (summary[mean] > 0).any():
        return (
            "No transaction retried at any number of consumers: every batch committed first time."
        )
    top = record(summary, summary[mean].idxmax())
    same = (summary[line] == top[line]) & (summary["counter"] == top["counter"])
    series = summary[same].sort_values("consumers")[mean]
    trend = "rise with consumers, up to" if series.iloc[-1] > series.iloc[0] else "peak at"
    sentence = (
        f"Retries (serialization failures, deadlocks, broken connections) {trend} "
        f"{number(top[mean])} per 1,000 events with {named('consumers', top['consumers'])} at "
        f"{named(line, top[line])}{_held_text(fixed)}"
    )
    calm = [
        named(line, v)
        for v in stats.ordered(line, summary[line])
        if summary[summary[line] == v][mean].max() == 0
    ]
    return f"{sentence}; {' and '.join(calm)} never retried." if calm else f"{sentence}."


# -- latency vs batch size --------------------------------------------------------------------

LATENCIES = (
    _Series("latency_p50_ms", "p50 (median)", "-", "o"),
    _Series("latency_p99_ms", "p99", "--", "s"),
)


def latency_vs_batch(run: Run) -> Figure:
    return _sweep_chart(
        run,
        "batch_size",
        "batch size (events per transaction)",
        LATENCIES,
        "Latency vs batch size (log–log)",
        "latency, publish to commit (ms)",
    )


def describe_latency_vs_batch(run: Run) -> str:
    summary, fixed, line = stats.sweep_summary(
        stats.headline(run), "batch_size", [s.metric for s in LATENCIES]
    )
    first = stats.ordered(line, summary[line])[0]
    s = summary[(summary[line] == first) & (summary["counter"] == summary["counter"].iloc[0])]
    s = s.sort_values("batch_size")
    lo, hi = record(s, s.index[0]), record(s, s.index[-1])
    p50, p99 = "latency_p50_ms_mean", "latency_p99_ms_mean"
    best = record(summary, summary[p99].idxmin())
    return (
        f"At {named(line, first)}{_held_text(fixed)}, going from batches of "
        f"{lo['batch_size']:,} to {hi['batch_size']:,} events moves p50 latency from "
        f"{number(lo[p50])} to {number(hi[p50])} ms and p99 from {number(lo[p99])} to "
        f"{number(hi[p99])} ms; the lowest p99, {number(best[p99])} ms, is at "
        f"{named(line, best[line])} with batches of {best['batch_size']:,}."
    )


def throughput_vs_batch(run: Run) -> Figure:
    fig = _sweep_chart(
        run,
        "batch_size",
        "batch size (events per transaction)",
        [_Series("throughput_eps")],
        "Throughput vs batch size",
        "throughput (events/s)",
    )
    return fig


def describe_throughput_vs_batch(run: Run) -> str:
    summary, fixed, line = stats.sweep_summary(
        stats.headline(run), "batch_size", ["throughput_eps"]
    )
    mean = "throughput_eps_mean"
    peak = record(summary, summary[mean].idxmax())
    same = (summary[line] == peak[line]) & (summary["counter"] == peak["counter"])
    smallest = record(summary[same], summary[same]["batch_size"].idxmin())
    return (
        f"Throughput peaks at {peak[mean]:,.0f} events/s with batches of "
        f"{peak['batch_size']:,} at {named(line, peak[line])}{_held_text(fixed)}, "
        f"{peak[mean] / smallest[mean]:,.1f}× the {smallest[mean]:,.0f} events/s of batches of "
        f"{smallest['batch_size']:,}."
    )


def applies_batch(run: Run) -> bool:
    t = stats.measured(stats.headline(run))
    return not t.empty and t["batch_size"].nunique() > 1


def log_ms_axis(ax: Axes) -> None:
    """A log latency axis with ticks at 1, 2, 5 × 10ⁿ ms."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.2g}"))
