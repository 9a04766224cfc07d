"""The service bench's chart, drawn from its ``service-bench.json`` into ``<run>/plots/``.

``service_bench.png``, two panels: the seed scenario's requests/s of s0 (the bare
endpoint) and s1 (``harness serve``), beside the seed report's figure; and each
target's p99 against the offered rate of the open-loop ladder, on a log axis, with the
objective as a dotted line (filled markers: the rate was held; hollow: it was not).
It takes the parsed file (a dict), so a notebook can draw a reference run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from harness.analysis import plots
from harness.analysis.registry import Chart, draw_all
from harness.bench import service as sb

COLOURS = {"s0": plots.CYCLE[0], "s1": plots.CYCLE[1]}
FILENAME = "service_bench.png"


def _name(target: str) -> str:
    return f"{target} {sb.TARGETS[target]}"


def _caption(figures: sb.Figures, cfg: sb.ServiceBenchConfig) -> str:
    def rate(key: str) -> str:
        value = figures.highest[key]
        if value is None:
            return f"{key} none"
        return f"{key} {value:,}/s" + (" (top of the ladder)" if figures.at_top[key] else "")

    seed = "—" if figures.seed_ratio is None else f"{figures.seed_ratio:.2f}"
    rates = "—" if figures.rate_ratio is None else f"{figures.rate_ratio:.2f}"
    return (
        f"Left: harness/bench/load/seed.js at scale {cfg.scale:g} (up to 100 VUs, closed loop), "
        f"s1/s0 = {seed}; the dotted line is the seed report's ~{sb.SEED_REPORT_RPS:,} "
        f"requests/s. Right: harness/bench/load/open_loop.js, {cfg.step_s:g} s a rate; held = p99 "
        f"≤ {cfg.slo_p99_ms:g} ms with < {100 * cfg.max_lost:g}% dropped and failed. Highest "
        f"rate held: {rate('s0')}, {rate('s1')}; s1/s0 = {rates}. k6 ran on the same machine."
    )


def chart(data: dict[str, Any]) -> Figure:
    cfg = sb.config_of(data)
    measured = sb.measurements_of(data)
    figures = sb.Figures.of(measured, cfg)
    fig, (bars, curve) = plots.figure(
        2, "service bench: bare endpoint vs harness serve", _caption(figures, cfg),
        width=4.8, sharey=False,
    )  # fmt: skip
    keys = [k for k in sb.TARGETS if figures.seed_rps[k] is not None]
    for i, key in enumerate(keys):
        value = figures.seed_rps[key] or 0.0
        bars.bar(i, value, width=0.6, color=COLOURS[key], alpha=0.8)
        bars.annotate(
            f"{value:,.0f}", (i, value), textcoords="offset points", xytext=(0, 5), ha="center"
        )
    bars.axhline(sb.SEED_REPORT_RPS, color="0.35", linestyle=":", lw=1.2)
    bars.legend(
        handles=[
            Line2D(
                [],
                [],
                color="0.35",
                linestyle=":",
                label=f"the seed report, ~{sb.SEED_REPORT_RPS:,}/s",
            )
        ],
        fontsize=8,
        loc="upper right",
    )
    bars.set_xticks(range(len(keys)), [_name(k) for k in keys])
    bars.set_xlim(-0.7, max(len(keys), 1) - 0.3)
    top = max([sb.SEED_REPORT_RPS, *(figures.seed_rps[k] or 0.0 for k in keys)])
    bars.set_ylim(0, top * 1.15)
    bars.set_ylabel("requests/s (seed.js)")
    bars.set_title("closed loop: the seed's stages", fontsize=10)
    bars.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))

    handles: list[Any] = []
    for key in sb.TARGETS:
        steps = sb.ladder(measured, key)
        if not steps:
            continue
        xs = [m.rate for m in steps]
        ys = [max(m.summary.p99_ms, 0.01) for m in steps]
        curve.plot(xs, ys, color=COLOURS[key], lw=1.5)
        for x, y, m in zip(xs, ys, steps, strict=True):
            curve.plot(
                [x], [y], marker="o", ms=7, color=COLOURS[key], markeredgewidth=1.3,
                markerfacecolor=COLOURS[key] if sb.held(m, cfg) else "none",
            )  # fmt: skip
        handles.append(Line2D([], [], color=COLOURS[key], marker="o", label=_name(key)))
    curve.axhline(cfg.slo_p99_ms, color="0.35", linestyle=":", lw=1.2)
    handles.append(
        Line2D([], [], color="0.35", linestyle=":", label=f"objective {cfg.slo_p99_ms:g} ms")
    )
    handles.append(
        Line2D([], [], color="0.3", marker="o", markerfacecolor="none", linestyle="none",
               label="not held")
    )  # fmt: skip
    rates = sorted({m.rate for m in measured if m.scenario == sb.OPEN_LOOP and m.rate})
    if rates:
        if rates[-1] / rates[0] >= 8:
            curve.set_xscale("log")
        curve.xaxis.set_major_locator(FixedLocator(rates))
        curve.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        curve.xaxis.set_minor_locator(NullLocator())
    plots.log_ms_axis(curve)
    curve.set_xlabel("offered rate (requests/s)")
    curve.set_ylabel("p99 of k6's request durations (ms)")
    curve.set_title("open loop: p99 against the offered rate", fontsize=10)
    curve.grid(alpha=0.3)
    curve.legend(handles=handles, fontsize=8, loc="upper left")
    return fig


#: the service bench's chart, drawn from its ``service-bench.json``
CHARTS: tuple[Chart[dict[str, Any]], ...] = (
    Chart(FILENAME, "The seed's load and the open-loop ladder", draw=chart),
)


def write(run_dir: Path) -> list[Path]:
    """Draw the chart of the run's ``service-bench.json`` into ``run_dir/plots``."""
    data = json.loads((run_dir / "service-bench.json").read_text())
    return draw_all(CHARTS, data, run_dir / "plots")
