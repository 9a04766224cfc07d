"""Charts of open-loop load: latency vs throughput, and the capacity a search found.

An open-loop trial offers events at a rate on a schedule; its figures come from its
measured window (warm-up left out), with latency from each event's intended send time to
its commit (:mod:`harness.model.steady`). Each chart here is a ``draw(run) -> Figure`` with a
``describe(run) -> str`` and an ``applies(run) -> bool``, registered in
:data:`harness.analysis.charts.CHARTS`; they draw with that module's helpers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import to_hex, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from harness.analysis import plots, stats
from harness.trials.results import Run

#: (metric, name, line style, marker) of the latency curves: p99 solid, p50 dashed
LATENCIES: tuple[tuple[str, str, Any, str], ...] = (
    ("steady_p99_ms", "p99", "-", "o"),
    ("steady_p50_ms", "p50 (median)", "--", "s"),
)
LATENCY_LABEL = "latency, intended send to commit (ms)"


# -- shared ------------------------------------------------------------------------------------


def configuration(axes: Sequence[str], key: Sequence[Any]) -> str:
    """``read_committed, batch size 100``; empty when the run has one configuration."""
    return ", ".join(plots.named(a, v) for a, v in zip(axes, key, strict=True))


def _colours(axes: Sequence[str], keys: Sequence[tuple[Any, ...]]) -> dict[Any, str]:
    """A colour per configuration: the axis's own colours when there is one axis."""
    if len(axes) == 1:
        by_value = plots.colours_for(axes[0], [k[0] for k in keys])
        return {k: by_value[k[0]] for k in keys}
    if len(keys) <= len(plots.CYCLE):
        return {k: plots.CYCLE[i] for i, k in enumerate(keys)}
    cmap = colormaps["tab20"]
    return {k: to_hex(cmap(i % 20)) for i, k in enumerate(keys)}


def _points(ax: Axes, xs: Any, ys: Any, sustained: Any, colour: str, marker: str) -> None:
    """Markers at ``(xs, ys)``: filled where the window was sustained, hollow where not."""
    for fill, keep in ((colour, True), ("none", False)):
        chosen = [(x, y) for x, y, ok in zip(xs, ys, sustained, strict=True) if ok == keep]
        if chosen:
            ax.plot(
                *zip(*chosen, strict=True), linestyle="none", marker=marker, ms=6,
                color=colour, markerfacecolor=fill, markeredgewidth=1.3,
                label="_sustained" if keep else "_not sustained",
            )  # fmt: skip


def _objective(ax: Axes, trials: Any) -> list[Line2D]:
    """The p99 objective as a dotted line when the trials share one; its legend entry."""
    if "slo_p99_ms" not in trials or trials["slo_p99_ms"].nunique() != 1:
        return []
    slo = float(trials["slo_p99_ms"].iloc[0])
    ax.axhline(slo, color="0.35", linestyle=":", lw=1.2, zorder=1, label="_objective")
    text = f"p99 objective ({plots.number(slo)} ms)"
    return [Line2D([], [], color="0.35", linestyle=":", label=text)]


def _legend(
    fig: Figure, axes: Sequence[str], named: dict[str, str], hollow: bool, extra: Sequence[Any]
) -> None:
    """Configurations by colour, p99 / p50 by line style, sustained or not by fill."""
    handles: list[Any] = [Line2D([], [], color=c, lw=2.5, label=n) for n, c in named.items()]
    handles += [
        Line2D([], [], color="0.3", linestyle=style, marker=marker, label=name)
        for _, name, style, marker in LATENCIES
    ]
    if hollow:
        handles += [
            Line2D([], [], color="0.3", linestyle="none", marker="o", label="sustained"),
            Line2D(
                [], [], color="0.3", linestyle="none", marker="o", markerfacecolor="none",
                label="not sustained",
            ),
        ]  # fmt: skip
    legend = fig.legend(handles=[*handles, *extra], loc="outside right center")
    if axes and named:
        legend.set_title(" × ".join(plots.label(a) for a in axes))


def reference(run: Run) -> dict[str, Any]:
    """The experiment's ``[reference]``: figures someone else published (empty if none)."""
    return dict(run.meta.experiment.get("reference") or {})


# -- latency vs throughput ---------------------------------------------------------------------


def latency_vs_throughput(run: Run) -> Figure:
    summary, axes = stats.steady_summary(run)
    keys = stats.configurations(summary, axes)
    colours = _colours(axes, keys)
    n = int(summary["steady_p99_ms_n"].max())
    caption = (
        "Each point is the measured window of an open-loop trial (warm-up left out): across, "
        "the events/s committed in it; up, the latency from each event's intended send time "
        "to its commit, so a stall cannot hide by delaying the sends behind it (coordinated "
        "omission). Solid: p99; dashed: p50; points joined in order of offered rate; hollow: "
        "not sustained (the publishers fell behind, the backlog grew or p99 missed its "
        "objective)."
        + (f" Points: mean of {n} repeats; bars: 95% confidence interval." if n > 1 else "")
    )
    fig, (ax,) = plots.figure(1, "Latency vs throughput", caption, width=6.4, height=5.4)
    for key in keys:
        s = stats.of_configuration(summary, axes, key)
        colour, name = colours[key], configuration(axes, key)
        x = s["steady_eps_mean"]
        for metric, short, style, marker in LATENCIES:
            y = s[f"{metric}_mean"]
            if (s[f"{metric}_n"] > 1).any():
                half, x_half = s[f"{metric}_ci"].fillna(0), s["steady_eps_ci"].fillna(0)
                ax.errorbar(
                    x, y, yerr=[half.clip(upper=y * 0.6), half], xerr=x_half, fmt="none",
                    ecolor=to_rgba(colour, 0.45), elinewidth=1, capsize=2,
                )  # fmt: skip
            ax.plot(x, y, color=colour, linestyle=style, lw=1.6, label=f"{short} · {name}")
            _points(ax, x, y, s["sustained"] == s["trials"], colour, marker)
    extra = _objective(ax, stats.open_loop(run)) + _reference_point(ax, reference(run))
    if _log_x_if_wide(ax):
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.set_xlim(0, ax.dataLim.x1 * 1.06)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    plots.log_ms_axis(ax)
    ax.set_xlabel("events/s committed in the measured window")
    ax.set_ylabel(LATENCY_LABEL)
    ax.grid(alpha=0.3)
    named = {configuration(axes, k): colours[k] for k in keys} if axes else {}
    hollow = bool((summary["sustained"] < summary["trials"]).any())
    _legend(fig, axes, named, hollow, extra)
    return fig


def _reference_point(ax: Axes, ref: dict[str, Any]) -> list[Line2D]:
    """Someone else's figures (an experiment's ``[reference]``) as black stars: their
    throughput across, their p50 and p99 up, joined."""
    metrics = (("p50", "steady_p50_ms"), ("p99", "steady_p99_ms"))
    given = [(p, ref[m]) for p, m in metrics if m in ref]
    if "steady_eps" not in ref or not given:
        return []
    ys = [y for _, y in given]
    ax.plot([ref["steady_eps"]] * len(ys), ys, color="black", marker="*", ms=11, lw=1, label="_ref")
    text = f"{ref['label']} ({' and '.join(p for p, _ in given)})"
    return [Line2D([], [], color="black", marker="*", ms=11, label=text)]


def _log_x_if_wide(ax: Axes) -> bool:
    """A log x axis when the data span a factor of 8 or more (returns whether it is)."""
    lo, hi = ax.dataLim.x0, ax.dataLim.x1
    if lo > 0 and hi / lo >= 8:
        ax.set_xscale("log")
        return True
    return False


def describe_latency_vs_throughput(run: Run) -> str:
    summary, axes = stats.steady_summary(run)
    eps, p99 = "steady_eps_mean", "steady_p99_ms_mean"
    held = summary[summary["sustained"] == summary["trials"]]
    if held.empty:
        best = plots.record(summary, summary[eps].idxmax())
        lead = f"No offered rate was sustained; the most is {best[eps]:,.0f} events/s"
    else:
        best = plots.record(held, held[eps].idxmax())
        lead = f"The highest sustained throughput is {best[eps]:,.0f} events/s"
    where = configuration(axes, [best[a] for a in axes])
    lead += (
        f" committed{f', by {where}' if where else ''}, at an offered {best['rate']:,.0f} "
        f"events/s, with p99 {plots.number(best[p99])} ms there"
    )
    spans: list[str] = []
    alone: list[str] = []
    for key in stats.configurations(summary, axes):
        s = stats.of_configuration(summary, axes, key)
        lo, hi = plots.record(s, s.index[0]), plots.record(s, s.index[-1])
        with_ = f" with {configuration(axes, key)}" if axes else ""
        if len(s) == 1:
            alone.append(f"{plots.number(lo[p99])} ms at {lo['rate']:,.0f}{with_}")
            continue
        unit = "" if spans else " events/s offered"
        spans.append(
            f"from {plots.number(lo[p99])} ms at {lo['rate']:,.0f}{unit} to "
            f"{plots.number(hi[p99])} ms at {hi['rate']:,.0f}{with_}"
        )
    sentence = lead
    if spans:
        sentence += f"; p99 goes {_listed(spans)}"
    if alone:
        sentence += f"; at the one rate tried, p99 is {_listed(alone)}"
    return sentence + "."


def _listed(parts: Sequence[str]) -> str:
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def applies_latency_vs_throughput(run: Run) -> bool:
    """Open-loop trials at two rates or more in some configuration."""
    summary, axes = stats.steady_summary(run)
    keys = stats.configurations(summary, axes) if not summary.empty else []
    return any(stats.of_configuration(summary, axes, k)["rate"].nunique() > 1 for k in keys)


# -- capacity ----------------------------------------------------------------------------------


def capacity(run: Run) -> Figure:
    summary, axes = stats.capacity_summary(run)
    configs = _capacity_configs(summary, axes)
    keys = [key for _, key, _ in configs]
    names = [configuration(axes, k) or "the configuration" for k in keys]
    colours = _colours(axes, keys)
    n = int(summary["steady_p99_ms_n"].max())
    caption = (
        "Left: the capacity of each configuration, the highest open-loop rate whose measured "
        "window was sustained (publishers held the rate, the backlog stayed bounded, p99 "
        "within the objective), found by a search of rates from the burst's throughput; the "
        "black tick is that burst's throughput (as fast as the publishers could send, with "
        "latency unbounded). Right: the window's latency, intended send time to commit, at "
        "25–100% of the capacity; solid: p99, dashed: p50; hollow: not sustained."
        + (f" Points: mean of {n} runs; bars: 95% confidence interval." if n > 1 else "")
    )
    width = max(4.2, 1.3 * len(configs) + 1.5)
    fig, (bars, lines) = plots.figure(2, "Capacity", caption, width=width, height=5.2, sharey=False)
    for i, (rows, key, name) in enumerate(
        zip((r for r, _, _ in configs), keys, names, strict=True)
    ):
        colour = colours[key]
        first = plots.record(rows, rows.index[0])
        _bar(bars, i, first["capacity_eps"], first["probe_eps"], colour)
        shares = rows[rows["fraction"].notna()].sort_values("fraction")
        if shares.empty:
            continue
        x = 100 * shares["fraction"]
        for metric, short, style, marker in LATENCIES:
            y = shares[f"{metric}_mean"]
            if (shares[f"{metric}_n"] > 1).any():
                half = shares[f"{metric}_ci"].fillna(0)
                lines.errorbar(
                    x, y, yerr=[half.clip(upper=y * 0.6), half], fmt="none",
                    ecolor=to_rgba(colour, 0.45), elinewidth=1, capsize=2,
                )  # fmt: skip
            lines.plot(x, y, color=colour, linestyle=style, lw=1.6, label=f"{short} · {name}")
            _points(lines, x, y, shares["sustained"] == shares["trials"], colour, marker)
    bars.set_xticks(range(len(configs)), [n.replace(", ", "\n") for n in names])
    bars.set_xlim(-0.6, len(configs) - 0.4)
    top = max(summary["capacity_eps"].max(), summary["probe_eps"].max())
    bars.set_ylim(0, top * 1.1 if top > 0 else 1)
    bars.set_xlabel(" × ".join(plots.label(a) for a in axes) or "configuration")
    bars.set_ylabel("events/s")
    bars.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    bars.set_title("capacity (highest sustained rate)", fontsize=10)
    bars.grid(axis="y", alpha=0.3)
    fractions = sorted(summary["fraction"].dropna().unique())
    lines.set_xticks([100 * f for f in fractions], [f"{f:.0%}" for f in fractions])
    lines.set_xlim(100 * min(fractions, default=0.25) - 8, 100 * max(fractions, default=1) + 8)
    lines.set_xlabel("offered rate, share of the capacity")
    lines.set_ylabel(LATENCY_LABEL)
    lines.set_title("latency below capacity", fontsize=10)
    extra = _objective(lines, stats.open_loop(run))
    plots.log_ms_axis(lines)
    lines.grid(alpha=0.3)
    burst = Line2D([], [], color="black", lw=2.2, label="burst throughput")
    named = {n: colours[k] for n, k in zip(names, keys, strict=True)} if axes else {}
    shares = summary[summary["fraction"].notna()]
    hollow = bool((shares["sustained"] < shares["trials"]).any())
    _legend(fig, axes, named, hollow, [burst, *extra])
    return fig


def _capacity_configs(summary: Any, axes: Sequence[str]) -> list[tuple[Any, tuple[Any, ...], int]]:
    """``(rows, values of the axes, config number)`` per configuration, in search order."""
    out = []
    for config in sorted(summary["config"].unique()):
        rows = summary[summary["config"] == config]
        first = plots.record(rows, rows.index[0])
        out.append((rows, tuple(first[a] for a in axes), int(config)))
    return out


def _bar(ax: Axes, i: int, capacity_eps: float, probe_eps: float, colour: str) -> None:
    """A configuration's capacity as a bar with its value inside, its burst as a tick."""
    if math.isnan(capacity_eps):
        ax.text(i, 0, "none\nsustained", ha="center", va="bottom", fontsize=9, color="0.3")
    else:
        ax.bar(i, capacity_eps, width=0.6, color=to_rgba(colour, 0.85))
        ax.text(
            i, capacity_eps * 0.98, f"{capacity_eps:,.0f}", ha="center", va="top",
            fontsize=9, color="white", fontweight="bold",
        )  # fmt: skip
    if not math.isnan(probe_eps):
        ax.plot([i - 0.36, i + 0.36], [probe_eps, probe_eps], color="black", lw=2.2)


def describe_capacity(run: Run) -> str:
    summary, axes = stats.capacity_summary(run)
    parts = []
    for rows, key, _ in _capacity_configs(summary, axes):
        first = plots.record(rows, rows.index[0])
        name = configuration(axes, key)
        with_ = f" with {name}" if name else ""
        if math.isnan(first["capacity_eps"]):
            parts.append(f"none sustained{with_}")
            continue
        half = rows[rows["fraction"] == 0.5]
        at_half = (
            f", p99 {plots.number(half['steady_p99_ms_mean'].iloc[0])} ms at half of it"
            if len(half)
            else ""
        )
        parts.append(f"{first['capacity_eps']:,.0f} events/s{with_}{at_half}")
    return "Capacity, the highest open-loop rate sustained: " + "; ".join(parts) + "."


def applies_capacity(run: Run) -> bool:
    """A capacity search's run: it has a ``capacity.csv``."""
    return not stats.capacity_summary(run)[0].empty
