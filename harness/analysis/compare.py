"""Comparisons with verdicts: is one configuration's figure larger than the noise?

The seed report says SERIALIZABLE is "3–5× slower"; a harness should say by how much it
measured, with an interval, and whether the difference is beyond what repeated runs of
the same configuration spread over. :func:`compare` takes the repeated measurements of
two configurations and gives

- the **ratio** of their means (other / baseline) with a 95% interval, on the log scale
  by the delta method: ``log r ± t(df) · √(s_a²/(n_a·m_a²) + s_b²/(n_b·m_b²))``, with
  Welch–Satterthwaite's degrees of freedom;
- **Welch's t-test** (``scipy.stats.ttest_ind``, unequal variances) for the difference
  of the means.

A difference is *beyond the noise* when the test rejects equal means at 5% and the
interval of the ratio leaves out 1. With one run on either side there is no spread to
measure and no verdict: the report says so, and how to get one (``repeat``).

:func:`comparisons` finds, in a run, the comparisons the seed makes — isolation levels,
batch sizes, counter strategies, brokers, consumers — on the axes the run sweeps, each
value against the axis's first (for a size or a count, :data:`STEPWISE`, against the next
smaller one: where does a bigger batch, or one more consumer, stop paying?), with every
other swept axis held at each of its values in turn.

Under an open-loop load a figure means something only in one regime. A configuration that
sustains the rate it is offered commits exactly that rate, so two that both sustain it
are compared on latency, not throughput; one that does not sustain it commits what it can
(its throughput at saturation) while its backlog, and so its latency, grows with the
length of the trial, so a pair with either side saturated is compared on throughput, not
latency. A burst run (no rate) compares both.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

from scipy import stats as scipy_stats

from harness.analysis import stats
from harness.trials.results import Run

#: The axes whose values the seed compares, in the order the report takes them.
AXES = ("isolation", "batch_size", "counter", "broker", "consumers", "publishers")
#: axes whose values are compared each with the one before, not with the first: sizes and
#: counts, where the question is what one more step buys
STEPWISE = frozenset({"batch_size", "consumers", "publishers"})
#: the figures compared: column → what the report calls it
METRICS = {"throughput_eps": "events/s", "latency_p99_ms": "p99 latency"}
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``other`` against ``baseline`` on one figure: means, ratio with its interval, test."""

    metric: str
    baseline: str
    other: str
    #: the values the other swept axes are held at, as ``name = value`` text
    where: str
    baseline_mean: float
    other_mean: float
    n_baseline: int
    n_other: int
    ratio: float
    ratio_low: float
    ratio_high: float
    p_value: float

    @property
    def verdict(self) -> bool | None:
        """Whether the difference is beyond the noise; ``None`` without the runs to tell."""
        if math.isnan(self.p_value) or math.isnan(self.ratio_low):
            return None
        return self.p_value < ALPHA and not self.ratio_low <= 1 <= self.ratio_high


def compare(baseline: Sequence[float], other: Sequence[float]) -> dict[str, float]:
    """Means, ratio (other / baseline) with its 95% interval, and Welch's p-value of two
    samples; NaN where they cannot be had (fewer than two values, a mean of 0)."""
    a = [float(v) for v in baseline if v is not None and math.isfinite(float(v))]
    b = [float(v) for v in other if v is not None and math.isfinite(float(v))]
    ma = math.fsum(a) / len(a) if a else math.nan
    mb = math.fsum(b) / len(b) if b else math.nan
    out = {"baseline_mean": ma, "other_mean": mb, "n_baseline": len(a), "n_other": len(b)}
    ratio = mb / ma if ma and not math.isnan(ma) else math.nan
    nan = {"ratio": ratio, "ratio_low": math.nan, "ratio_high": math.nan, "p_value": math.nan}
    if len(a) < 2 or len(b) < 2 or not ma > 0 or not mb > 0:
        return out | nan
    va, vb = statistics.variance(a, ma), statistics.variance(b, mb)
    # the variance of each log mean, by the delta method
    la, lb = va / (len(a) * ma**2), vb / (len(b) * mb**2)
    spread = math.sqrt(la + lb)
    if spread == 0:  # identical runs: the difference is exact, or there is none
        p = 1.0 if ma == mb else 0.0
        return out | {"ratio": ratio, "ratio_low": ratio, "ratio_high": ratio, "p_value": p}
    df = (la + lb) ** 2 / (la**2 / (len(a) - 1) + lb**2 / (len(b) - 1))
    t = stats.t_critical(df)
    log_ratio = math.log(ratio)
    p = float(scipy_stats.ttest_ind(b, a, equal_var=False).pvalue)
    return out | {
        "ratio": ratio,
        "ratio_low": math.exp(log_ratio - t * spread),
        "ratio_high": math.exp(log_ratio + t * spread),
        "p_value": p,
    }


def comparisons(run: Run) -> list[Comparison]:
    """Every comparison the run's sweep allows (see the module's docstring), for the
    trials that ran to their end, read as the summary table reads them."""
    if run.is_capacity:
        return []  # a search's rates are not a sweep; its report has its own spreads
    trials = stats.measured(stats.headline(run))
    if trials.empty:
        return []
    swept = stats.swept(run, trials)
    out = []
    for axis in [a for a in AXES if a in swept]:
        values = stats.ordered(axis, trials[axis])
        others = [a for a in swept if a != axis]
        groups = trials.groupby(others, sort=True) if others else [((), trials)]
        for held, group in groups:
            held = held if isinstance(held, tuple) else (held,)
            where = ", ".join(f"{a} = {v}" for a, v in zip(others, held, strict=True))
            for i, value in enumerate(values[1:]):
                first = values[i] if axis in STEPWISE else values[0]
                base = group[group[axis] == first]
                other = group[group[axis] == value]
                if base.empty or other.empty:
                    continue
                for metric in METRICS:
                    if metric not in trials or not _telling(metric, base, other):
                        continue
                    figures = compare(base[metric].tolist(), other[metric].tolist())
                    out.append(
                        Comparison(
                            metric=metric,
                            baseline=f"{axis} = {first}",
                            other=f"{axis} = {value}",
                            where=where,
                            **figures,  # type: ignore[arg-type]
                        )
                    )
    return out


def _telling(metric: str, base: Any, other: Any) -> bool:
    """Whether ``metric`` tells the two sides apart: see the module's docstring."""
    import pandas as pd

    both = pd.concat([base, other])
    if not stats.is_open_loop(both).any() or "sustained" not in both:
        return True
    sustained = bool(stats.flags(both["sustained"]).all())
    return not sustained if metric == "throughput_eps" else sustained


def _times(ratio: float) -> str:
    if math.isnan(ratio):
        return "–"
    if ratio < 0.1:
        return f"{ratio:.2g}×"
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:,.0f}×"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def verdicts(found: Sequence[Comparison]) -> list[str]:
    """A sentence per pair of values compared on one figure, over the configurations the
    other axes were held at: where the difference is beyond the noise, and by how much."""
    pairs: dict[tuple[str, str, str], list[Comparison]] = {}
    for c in found:
        if c.verdict is not None:
            pairs.setdefault((c.other, c.baseline, c.metric), []).append(c)
    out = []
    for (other, baseline, metric), judged in pairs.items():
        beyond = [c for c in judged if c.verdict]
        head = f"- **{other}** against {baseline}, {METRICS[metric]}:"
        if not beyond:
            if len(judged) == 1:
                where = f" at {judged[0].where}" if judged[0].where else ""
            else:
                where = f" in all {len(judged)} configurations"
            out.append(f"{head} within the noise{where} ({_span(judged)}).")
            continue
        if len(beyond) == len(judged) == 1 and not beyond[0].where:
            places = _span(beyond)
        elif len(beyond) <= 4:
            places = "at " + "; ".join(f"{c.where} ({_times(c.ratio)})" for c in beyond)
        else:
            places = f"in {len(beyond)} of {len(judged)} configurations ({_span(beyond)})"
        others = [c for c in judged if not c.verdict]
        if len(others) == 1 and others[0].where:
            rest = f"; within it at {others[0].where} ({_span(others)})"
        else:
            rest = f"; within it in the other {len(others)} ({_span(others)})" if others else ""
        out.append(f"{head} beyond the noise, {places}{rest}.")
    return out


def _span(cs: Sequence[Comparison]) -> str:
    low, high = min(c.ratio for c in cs), max(c.ratio for c in cs)
    return _times(low) if low == high else f"{_times(low)}–{_times(high)}"


#: rows of the report's table at most; the rest are counted
REPORT_ROWS = 40


def section(run: Run) -> str:
    """The report's Comparisons section: a row per comparison, with its verdict."""
    found = comparisons(run)
    if not found:
        return ""
    judged = [c for c in found if c.verdict is not None]
    lines = [
        "## Comparisons",
        "",
        "Each row sets a configuration against the first value of the same axis (a batch "
        "size or a count of actors against the next smaller one), the other "
        "swept axes held equal: the ratio of the means (other / baseline) with its 95% "
        "interval, and Welch's t-test of the difference. *Beyond the noise*: p < 0.05 and "
        "the interval leaves out 1. Under an open-loop load, configurations that both sustain "
        "the offered rate are compared on latency (their throughput is that rate); where "
        "either is saturated, on throughput (its latency is a growing backlog).",
        "",
    ]
    if not judged:
        lines += [
            "Every configuration here ran once, so no difference can be judged against the "
            "noise: rerun with `--set repeat=3` for intervals and verdicts.",
            "",
        ]
    lines += [*verdicts(found), ""] if judged else []
    lines += [
        "| compared | baseline | held at | figure | ratio | 95% interval | p | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in found[:REPORT_ROWS]:
        verdict = {None: "–", True: "beyond the noise", False: "within the noise"}[c.verdict]
        interval = (
            "–" if math.isnan(c.ratio_low) else f"{_times(c.ratio_low)}–{_times(c.ratio_high)}"
        )
        p = "–" if math.isnan(c.p_value) else _p(c.p_value)
        lines.append(
            f"| {c.other} | {c.baseline} | {c.where or '–'} | {METRICS[c.metric]} | "
            f"{_times(c.ratio)} | {interval} | {p} | {verdict} |"
        )
    if len(found) > REPORT_ROWS:
        lines += [
            "",
            f"… and {len(found) - REPORT_ROWS} more: `harness.analysis.compare.comparisons(run)`.",
        ]
    return "\n".join(lines)
