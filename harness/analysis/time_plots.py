"""The commit rate and the p99 latency of a run over time, second by second.

A run whose configurations ran once gets a line per trial. A run that repeated them gets
a line per configuration, the mean of its repeats second by second, in a band of their
95% interval (Student's t over the repeats): a reader sees at once whether two
configurations' curves are apart or inside each other's noise. The bands need the
per-second rows of results format 2, whose seconds line up across trials (they count
from the trial's clock origin); older runs keep a line per trial.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from harness.analysis import stats
from harness.analysis.plots import (
    CYCLE,
    LINESTYLES,
    colours_for,
    figure,
    label,
    log_ms_axis,
    named,
    number,
)
from harness.analysis.plots import record as _record
from harness.trials.results import Run


@dataclasses.dataclass(frozen=True)
class _TraceStyle:
    """How the chart tells trials apart: a panel per counter strategy (or else per
    isolation level), colour by the next swept axis, line style by the one after.
    The offered rate comes last: a trial's rate shows in the height of its line."""

    panel: str | None
    colour_axis: str
    colours: dict[Any, str]
    dash_axis: str | None
    dashes: dict[Any, Any]
    #: the experiment's cases, when it has several: then each has its colour (``case``)
    cases: tuple[dict[str, Any], ...] = ()

    @classmethod
    def of(cls, run: Run, t: Any) -> _TraceStyle:
        axes = _trace_axes(run, t)
        cases = tuple(dict(c) for c in run.meta.experiment.get("cases", []))
        if len(cases) > 1:  # a colour per case; the sweep's axes go on as before
            in_cases = {k for case in cases for k in case}
            axes = [a for a in axes if a not in in_cases]
        panel = next((a for a in ("counter", "isolation") if a in axes), None)
        rest = sorted((a for a in axes if a != panel), key=lambda a: a == "rate")[:2]
        if len(cases) > 1:
            rest = ["case", *rest][:2]
        elif len(rest) == 2 and rest[1] != "rate" and t[rest[1]].nunique() > len(LINESTYLES):
            rest.reverse()  # the axis with few enough values for line styles gets them
        colour_axis = rest[0] if rest else "trial"
        dash_axis = rest[1] if len(rest) > 1 and t[rest[1]].nunique() <= len(LINESTYLES) else None
        dashes = {}
        if dash_axis:
            dashes = dict(zip(stats.ordered(dash_axis, t[dash_axis]), LINESTYLES, strict=False))
        if len(cases) > 1:
            colours = colours_for("case", [case_label(case) for case in cases])
        else:
            colours = colours_for(colour_axis, stats.ordered(colour_axis, t[colour_axis]))
        return cls(panel, colour_axis, colours, dash_axis, dashes, cases if len(cases) > 1 else ())

    def line(self, trial: Any) -> dict[str, Any]:
        """Colour and dash of a trial's line, or of a configuration's (a row holding the
        values of the swept axes)."""
        dash = self.dashes[trial[self.dash_axis]] if self.dash_axis else "-"
        if self.cases:
            colour = self.colours.get(_case_of(self.cases, trial), CYCLE[0])
        else:
            colour = (
                self.colours[trial[self.colour_axis]] if self.colour_axis in trial else CYCLE[0]
            )
        return {"color": colour, "linestyle": dash}

    def handles(self, *, per_trial: bool) -> list[Line2D]:
        if self.colour_axis == "trial" and not per_trial:
            handles = []  # one configuration: its line needs no legend entry
        else:
            handles = [
                Line2D([], [], color=c, label=_legend_value(self.colour_axis, v))
                for v, c in self.colours.items()
            ]
        if self.dash_axis:
            handles += [
                Line2D([], [], color="0.3", linestyle=d, label=_legend_value(self.dash_axis, v))
                for v, d in self.dashes.items()
            ]
        return handles


def _trace_axes(run: Run, t: Any) -> list[str]:
    """The swept axes, but ``events`` when it follows an open-loop trial's rate."""
    axes = stats.swept(run, t)
    return [a for a in axes if a != "events"] if stats.is_open_loop(t).any() else axes


def case_label(case: dict[str, Any]) -> str:
    """A case as a legend names it: its settings, ``key = value``."""
    return ", ".join(f"{k} = {v}" for k, v in case.items())


def _case_of(cases: tuple[dict[str, Any], ...], row: Any) -> str:
    """The label of the first case whose every setting ``row`` holds."""

    def same(a: Any, b: Any) -> bool:
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return str(a) == str(b)

    for case in cases:
        if all(k in row and same(row[k], v) for k, v in case.items()):
            return case_label(case)
    return ""


def _legend_value(axis: str, value: Any) -> str:
    if axis == "case":  # its settings, on lines short enough to leave the chart its width
        return textwrap.fill(str(value), 32, subsequent_indent="  ")
    if axis == "rate":
        return f"{value:,.0f} events/s offered" if value else "burst"
    if axis == "trial":
        return f"trial {value}"
    return f"{label(axis)} = {value}"


def _windows(timeseries: Any) -> list[tuple[float, float]]:
    """The distinct measured windows of the trials, as ``(start_s, end_s)`` on the time
    axis (a second ``s`` spans ``[s, s + 1)``, its row's ``elapsed_s`` is ``s + 1``)."""
    if timeseries.empty or "phase" not in timeseries:
        return []
    window = timeseries[timeseries["phase"] == "window"]
    spans = window.groupby("trial")["elapsed_s"].agg(["min", "max"])
    return sorted({(float(lo) - 1, float(hi)) for lo, hi in spans.itertuples(index=False)})


def fault_spans(t: Any) -> list[tuple[float, float]]:
    """Each injected fault's span on the time axis, from the trials' ``fault_windows``
    (an instant fault, a kill, gets a sliver wide enough to see)."""
    spans = []
    for text in t["fault_windows"].dropna().astype(str) if "fault_windows" in t else []:
        for part in filter(None, text.split(";")):
            start, _, end = part.partition("-")
            try:
                lo, hi = float(start), float(end)
            except ValueError:
                continue
            if lo == lo and hi == hi:  # not NaN: the fault ended
                spans.append((lo, max(hi, lo + FAULT_SLIVER_S)))
    return sorted(spans)


#: the narrowest a fault is drawn, seconds
FAULT_SLIVER_S = 0.1
FAULT_COLOUR = "tab:red"


def _has_latency(run: Run) -> bool:
    ts = run.timeseries
    return "latency_p99_ms" in ts and bool(ts["latency_p99_ms"].notna().any())


# -- repeats, second by second --------------------------------------------------------------


def per_second(run: Run, t: Any = None) -> Any:
    """A row per trial and second of a format-2 run: the trial's swept axes, ``second``,
    the events committed in that second (``rate_eps``) and its ``latency_p99_ms``.
    ``t`` is the run's :func:`stats.frame`, when the caller has it."""
    import pandas as pd

    t = stats.frame(run) if t is None else t
    ts = run.timeseries
    if ts.empty or "second" not in ts:
        return pd.DataFrame()
    axes = _trace_axes(run, t)
    rows = ts.sort_values(["trial", "second"]).copy()
    rows["rate_eps"] = rows.groupby("trial")["committed"].diff().fillna(rows["committed"])
    if "latency_p99_ms" not in rows:
        rows["latency_p99_ms"] = float("nan")
    return rows[["trial", "second", "rate_eps", "latency_p99_ms"]].merge(
        t[["trial", *axes]], on="trial"
    )


def bands(run: Run, t: Any = None) -> Any:
    """Per configuration and second: the mean commit rate and p99 of the repeats, with
    :func:`stats.summarize`'s interval columns; empty when no configuration repeated or
    the run has no per-second rows (a line per trial is drawn then)."""
    import pandas as pd

    t = stats.frame(run) if t is None else t
    rows = per_second(run, t)
    if rows.empty:
        return pd.DataFrame()
    axes = _trace_axes(run, t)
    summary = stats.summarize(rows, [*axes, "second"], ["rate_eps", "latency_p99_ms"])
    return summary if summary["rate_eps_n"].max() >= 2 else pd.DataFrame()


def _band(ax: Axes, s: Any, metric: str, style: dict[str, Any], *, floor: float = 0.0) -> None:
    """The configuration's mean line, each second in the middle of its second, in the band
    of its interval (none where a second has one repeat)."""
    x = s["second"] + 0.5
    mean = s[f"{metric}_mean"]
    low = s[f"{metric}_low"].fillna(mean).clip(lower=floor)
    high = s[f"{metric}_high"].fillna(mean)
    ax.plot(x, mean, lw=1.5, marker=".", ms=4, **style)
    ax.fill_between(x, low, high, color=style["color"], alpha=0.18, lw=0)


# -- the chart ------------------------------------------------------------------------------


def throughput_over_time(run: Run) -> Figure:
    t, ts = stats.frame(run), run.timeseries
    style = _TraceStyle.of(run, t)
    panels = stats.ordered(style.panel, t[style.panel]) if style.panel else [None]
    latency, windows, faults = _has_latency(run), _windows(ts), fault_spans(t)
    banded = bands(run, t)
    per_trial = banded.empty
    steps: Any = stats.rates(run) if per_trial else None
    caption = _caption(banded, latency=latency, windows=bool(windows), faults=bool(faults))
    fig, grid = figure(
        len(panels), "Commit rate over time" + (", per trial" if per_trial else ""), caption,
        rows=2 if latency else 1, height=7.8 if latency else 4.8, sharex=True, sharey="row",
    )  # fmt: skip
    rows = [grid[0], grid[1]] if latency else [grid]
    for column, value in enumerate(panels):
        if per_trial:
            chosen = t[t[style.panel] == value] if style.panel else t
            _trials(rows, column, chosen, steps, ts, style, latency=latency)
        else:
            chosen = banded[banded[style.panel] == value] if style.panel else banded
            axes = _trace_axes(run, t)
            _configurations(rows, column, chosen, axes, style, latency=latency)
        rows[0][column].set_title(
            f"{label(style.panel)}: {value}" if style.panel else "", fontsize=10
        )
        for ax in (row[column] for row in rows):
            _shade(ax, windows, faults, trials=len(t))
        rows[-1][column].set_xlabel("time since publishing began (s)")
    # shared axes: set the limits once, from every panel's data; a band of two or three
    # repeats can be far wider than any mean (in the drain), so it may leave the chart
    top = steps["rate_eps"].max() * 1.05 if per_trial else banded["rate_eps_mean"].max() * 1.3
    rows[0][0].set_xlim(left=0)
    if top > 0:
        rows[0][0].set_ylim(0, top)
    rows[0][0].set_ylabel("commit rate (events/s)")
    rows[0][0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    if latency:
        log_ms_axis(rows[1][0])
        rows[1][0].set_ylabel("p99 latency of each second (ms)")
    handles: list[Any] = style.handles(per_trial=per_trial)
    if windows:
        handles.append(Patch(color="0.5", alpha=0.25, label="measured window"))
    if faults:
        handles.append(Patch(color=FAULT_COLOUR, alpha=0.3, label="fault"))
    if handles and len(handles) <= 24:
        fig.legend(handles=handles, loc="outside right center")
    return fig


def _caption(banded: Any, *, latency: bool, windows: bool, faults: bool) -> str:
    """What the chart shows: a line per trial, or per configuration in its band."""
    if banded.empty:
        caption = (
            "One line per trial: events committed per second between samples taken about once "
            "a second, from the first publish to the last commit."
        )
    else:
        caption = (
            f"One line per configuration: the mean of its {int(banded['rate_eps_n'].max())} "
            "repeats, second by second; band: the 95% confidence interval of that mean "
            "(Student t)."
        )
    if latency:
        caption += (
            " Below: the p99 latency of the events due in each second, from their intended "
            "send time to their commit."
        )
    if windows:
        caption += " Shaded: the measured window of the open-loop trials."
    if faults:
        caption += (
            " Red: each fault from its injection to its end (a paused consumer's, until it "
            "went on), the faults of every trial drawn."
        )
    return caption


def _shade(
    ax: Axes,
    windows: list[tuple[float, float]],
    faults: list[tuple[float, float]],
    *,
    trials: int,
) -> None:
    """The measured windows in grey, the faults in red, behind the lines; the grid."""
    for start, end in windows:
        ax.axvspan(
            start, end, color="0.5", alpha=0.12 / len(windows), lw=0, zorder=0,
            label="_measured window",
        )  # fmt: skip
    for start, end in faults:
        ax.axvspan(
            start, end, color=FAULT_COLOUR, alpha=max(0.08, 0.3 / trials), lw=0, zorder=0,
            label="_fault",
        )  # fmt: skip
    ax.grid(alpha=0.3)


def _trials(
    rows: list[Any], column: int, chosen: Any, steps: Any, ts: Any, style: _TraceStyle, *,
    latency: bool,
) -> None:  # fmt: skip
    """A line per trial: its commit rate between samples, its p99 of each second."""
    for _, trial in chosen.iterrows():
        s = steps[steps["trial"] == trial["trial"]]
        if not s.empty:
            edges = [s["start_s"].iloc[0], *s["end_s"]]
            rows[0][column].stairs(
                s["rate_eps"], edges, baseline=None, lw=1.5, alpha=0.8, **style.line(trial)
            )
        if latency:
            p = ts[ts["trial"] == trial["trial"]]
            # each second's latency sits in the middle of its second
            rows[1][column].plot(
                p["elapsed_s"] - 0.5, p["latency_p99_ms"], lw=1.2, marker=".", ms=4,
                alpha=0.8, **style.line(trial),
            )  # fmt: skip


def _configurations(
    rows: list[Any], column: int, chosen: Any, axes: list[str], style: _TraceStyle, *,
    latency: bool,
) -> None:  # fmt: skip
    """A line per configuration (its values of ``axes``), in the band of its repeats."""
    groups = chosen.groupby(axes, sort=True) if axes else [((), chosen)]
    floor = float(chosen["latency_p99_ms_mean"].min()) / 2 if latency else 0.0
    for _, s in groups:
        look = style.line(s.iloc[0])
        _band(rows[0][column], s, "rate_eps", look)
        if latency:
            has = s[s["latency_p99_ms_mean"].notna()]
            _band(rows[1][column], has, "latency_p99_ms", look, floor=floor)


def describe_throughput_over_time(run: Run) -> str:
    t, steps = stats.frame(run), stats.rates(run)
    longest = _record(t, t["elapsed_s"].idxmax())
    config = ", ".join(named(a, longest[a]) for a in _trace_axes(run, t))
    sentence = (
        f"Commit rates between samples range from {steps['rate_eps'].min():,.0f} to "
        f"{steps['rate_eps'].max():,.0f} events/s; trials last "
        f"{t['elapsed_s'].min():.1f}–{t['elapsed_s'].max():.1f} s"
        + (f", the longest being trial {longest['trial']} ({config})" if config else "")
    )
    if not _has_latency(run):
        return sentence + "."
    ts = run.timeseries
    windows = ts[ts["phase"] == "window"] if "phase" in ts else ts.iloc[0:0]
    where = " in the measured windows" if len(windows) else ""
    p99 = (windows if len(windows) else ts)["latency_p99_ms"].dropna()
    return (
        f"{sentence}; the p99 latency of a second ranges from {number(p99.min())} to "
        f"{number(p99.max())} ms{where}."
    )


def applies_time(run: Run) -> bool:
    return not run.trials.empty and not run.timeseries.empty
