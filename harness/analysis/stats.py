"""The numbers behind the charts and the report: a run's trials as tables.

:func:`frame` adds to the trials what analysis needs (a verdict per trial, retries per
1,000 events, defaults for columns older runs lack); :func:`swept`, :func:`held` and
:func:`sweep_summary` find the axes a run varies and slice it; :func:`summarize` gives
mean, standard deviation, n and a 95% confidence interval per group; :func:`rates` turns
the time series into commit rates.

The interval is Student's t: ``mean ± t(0.975, n−1) · s / √n``, the quantile from
``scipy.stats``. A group with a single trial has no spread to measure: its standard
deviation and interval are NaN, not an error.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from scipy import stats as scipy_stats

from harness.model import steady
from harness.trials import params, results, roles
from harness.trials.results import Run

#: Values in their natural order (the rest sort after them).
KNOWN_ORDER = {
    "isolation": ("read_committed", "repeatable_read", "serializable"),
    "counter": ("atomic", "rmw", "sharded"),
    "broker": ("stream", "list"),
    "fault": ("none",),
    "ingress": ("redis", "http"),
}
#: The axes that choose a design whose correctness the matrix shows, beside isolation.
DESIGN_AXES = ("counter", "broker", "fault", "ingress")
#: A trial's verdict, worst first: a group of trials takes the worst of its verdicts.
VERDICTS = ("violation", "anomaly", "did not finish", "holds")
DEFAULTS = {f.name: f.default for f in dataclasses.fields(params.TrialParams)}

#: Suffixes of the columns :func:`summarize` writes for each metric.
SUFFIXES = ("mean", "std", "n", "ci", "low", "high")


def t_critical(df: float) -> float:
    """The two-sided 95% critical value of Student's t with ``df`` degrees of freedom
    (fractional ones too, as Welch–Satterthwaite gives)."""
    if df < 1:
        return math.nan
    return float(scipy_stats.t.ppf(0.975, df))


def interval(values: Sequence[float]) -> tuple[float, float, int, float]:
    """``(mean, std, n, half_width)`` of the finite values; NaN where undefined."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return math.nan, math.nan, 0, math.nan
    mean = math.fsum(finite) / n
    if n == 1:
        return mean, math.nan, 1, math.nan
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (n - 1))
    return mean, std, n, t_critical(n - 1) * std / math.sqrt(n)


def summarize(trials: Any, by: Sequence[str], metrics: Sequence[str]) -> Any:
    """One row per group of ``by``, with ``<metric>_mean``, ``_std``, ``_n``, ``_ci`` (the
    interval's half-width), ``_low`` and ``_high`` for each metric.

    ``trials`` is a pandas DataFrame (``harness.trials.results.load(path).trials``); NaN values
    are left out of a group's statistics. With ``by=[]`` the whole frame is one group.
    Groups come out in sorted order of ``by``.
    """
    import pandas as pd

    by, metrics = list(by), list(metrics)
    missing = [c for c in [*by, *metrics] if c not in trials.columns]
    if missing:
        raise KeyError(f"no column {', '.join(map(repr, missing))} in the trials")
    groups = trials.groupby(by, sort=True, dropna=False) if by else [((), trials)]
    rows = []
    for key, group in groups:
        keys = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, keys, strict=True))
        for metric in metrics:
            values = pd.to_numeric(group[metric], errors="coerce").tolist()
            mean, std, n, half = interval(values)
            row |= {
                f"{metric}_mean": mean,
                f"{metric}_std": std,
                f"{metric}_n": n,
                f"{metric}_ci": half,
                f"{metric}_low": mean - half,
                f"{metric}_high": mean + half,
            }
        rows.append(row)
    columns = [*by, *(f"{m}_{s}" for m in metrics for s in SUFFIXES)]
    return pd.DataFrame(rows, columns=columns)


# -- a run's trials -----------------------------------------------------------------------


def frame(run: Run) -> Any:
    """The trials plus what analysis needs.

    Adds ``counter`` (``atomic`` in runs that predate it), ``lost_updates`` (0 likewise),
    ``violations``, ``error`` and ``anomalies`` as text, ``retries_per_1k``, and ``verdict``:
    ``did not finish`` (an error), ``violation`` (an invariant broke), ``anomaly`` (the
    counter strategy's expected anomaly, such as lost updates) or ``holds``.
    """
    import pandas as pd

    t = run.trials.copy()
    if t.empty:
        return t
    if "counter" not in t:
        t["counter"] = "atomic"
    lost_updates = t["lost_updates"] if "lost_updates" in t else pd.Series(0, index=t.index)
    t["lost_updates"] = pd.to_numeric(lost_updates, errors="coerce").fillna(0)
    for column in ("violations", "error", "anomalies"):
        t[column] = t[column].map(_text) if column in t else ""
    flag = t["anomaly"].map(_text) if "anomaly" in t else pd.Series("", index=t.index)
    described = ~flag.str.lower().isin(("", "false", "true"))  # older runs: a text column
    t["anomalies"] = t["anomalies"].where(~described | (t["anomalies"] != ""), flag)
    anomalous = (flag.str.lower() == "true") | (t["anomalies"] != "") | (t["lost_updates"] > 0)
    ok = flags(t["invariant_ok"])
    t["verdict"] = [
        results.verdict(error=e, invariant_ok=bool(o), anomalous=bool(a))
        for e, o, a in zip(t["error"], ok, anomalous, strict=True)
    ]
    t["holds"] = t["verdict"] == "holds"
    published = pd.to_numeric(t["events_published"], errors="coerce")
    t["retries_per_1k"] = 1000 * t["retries"] / published.where(published > 0)
    return t


def _text(value: Any) -> str:
    import pandas as pd

    return "" if pd.isna(value) else str(value)


def flags(values: Any) -> Any:
    """A yes/no column as booleans, whether the CSV gave bools, ``"True"``/``"False"``
    text or blanks (a blank is no)."""
    return values.map(_text).str.lower() == "true"


def measured(run: Run) -> Any:
    """The trials that ran to their end (no ``error``): the ones whose numbers mean something."""
    t = frame(run)
    return t if t.empty else t[t["error"] == ""]


def swept(run: Run, trials: Any | None = None) -> list[str]:
    """The parameters that take more than one value, in the experiment's sweep order."""
    t = frame(run) if trials is None else trials
    exp = run.meta.experiment
    cases = [k for case in exp.get("cases", []) for k in case]
    order = [*cases, *exp.get("sweep", {}), *params.FIELDS]
    return [c for c in dict.fromkeys(order) if c in t and t[c].nunique() > 1]


def ordered(axis: str, values: Iterable[Any]) -> list[Any]:
    known = KNOWN_ORDER.get(axis, ())
    return sorted(set(values), key=lambda v: (known.index(v) if v in known else len(known), v))


def held(run: Run, trials: Any, keep: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """``trials`` with every swept axis not in ``keep`` held at one value, and those values."""
    base = run.meta.experiment.get("params", {})
    fixed: dict[str, Any] = {}
    for axis in swept(run, trials):
        if axis in keep:
            continue
        values = set(trials[axis])
        choices = [v for v in (base.get(axis), DEFAULTS.get(axis)) if v in values]
        fixed[axis] = choices[0] if choices else sorted(trials[axis].mode())[0]
        trials = trials[trials[axis] == fixed[axis]]
    return trials, fixed


def line_axis(run: Run, trials: Any, x: str) -> str:
    """What the lines stand for: isolation levels, or else the next axis the run sweeps."""
    others = [a for a in swept(run, trials) if a not in (x, "counter", "isolation")]
    return "isolation" if trials["isolation"].nunique() > 1 or not others else others[0]


def sweep_summary(run: Run, x: str, metrics: Sequence[str]) -> tuple[Any, dict[str, Any], str]:
    """Mean and interval of ``metrics`` per (counter, line, ``x``) over the finished trials,
    the values the other swept axes are held at, and the axis the lines stand for."""
    trials = measured(run)
    line = line_axis(run, trials, x)
    trials, fixed = held(run, trials, (x, line, "counter"))
    return summarize(trials, ["counter", line, x], metrics), fixed, line


def design_axes(trials: Any) -> list[str]:
    """The design axes the trials vary (``counter`` alone when they vary none)."""
    return [a for a in DESIGN_AXES if a in trials and trials[a].nunique() > 1] or ["counter"]


def correctness_cells(run: Run) -> Any:
    """One row per design (the values of :func:`design_axes`, joined in ``design``) and
    isolation level, in that order: trials, how many held, what was lost, the worst verdict."""
    t = frame(run)
    axes = design_axes(t)
    t["rank"] = t["verdict"].map(VERDICTS.index)
    cells = (
        t.groupby(["isolation", *axes])
        .agg(
            trials=("holds", "size"),
            held=("holds", "sum"),
            rank=("rank", "min"),
            lost=("lost", "sum"),
            double_applied=("double_applied", "sum"),
            lost_updates=("lost_updates", "sum"),
        )
        .reset_index()
    )
    cells["verdict"] = cells["rank"].map(lambda r: VERDICTS[r])
    cells["design"] = cells[axes].astype(str).agg(" · ".join, axis=1)
    order = {a: ordered(a, cells[a]) for a in [*axes, "isolation"]}
    cells = cells.sort_values([*axes, "isolation"], key=lambda c: c.map(order[c.name].index))
    return cells.drop(columns="rank").reset_index(drop=True)


def rates(run: Run) -> Any:
    """Commit rate between consecutive samples: rows ``trial, start_s, end_s, rate_eps``.

    Each trial starts at 0 events at 0 s and, when it finished, ends with everything it
    received at ``elapsed_s``, so the first and last steps cover the ramp-up and the drain.
    """
    import pandas as pd

    t, ts = frame(run), run.timeseries
    rows = []
    for _, trial in t.iterrows():
        samples = ts[ts["trial"] == trial["trial"]].sort_values("elapsed_s") if len(ts) else ts
        times = [0.0, *samples.get("elapsed_s", [])]
        counts = [0.0, *samples.get("committed", [])]
        if trial["error"] == "" and trial["elapsed_s"] > times[-1]:
            spacing = (
                statistics.median(b - a for a, b in itertools.pairwise(times))
                if len(times) > 1
                else 0
            )
            if trial["elapsed_s"] - times[-1] < 0.3 * spacing:
                del times[-1], counts[-1]  # a sliver of a step would be a spike of noise
            times.append(trial["elapsed_s"])
            counts.append(max(trial["received"], counts[-1]))
        for i in range(1, len(times)):
            if times[i] > times[i - 1]:
                rate = (counts[i] - counts[i - 1]) / (times[i] - times[i - 1])
                rows.append((trial["trial"], times[i - 1], times[i], rate))
    return pd.DataFrame(rows, columns=["trial", "start_s", "end_s", "rate_eps"])


# -- open-loop trials ---------------------------------------------------------------------

#: The measured window's figures of an open-loop trial (NaN for a burst).
STEADY_METRICS = (
    "offered_eps",
    "achieved_publish_eps",
    "steady_eps",
    "steady_p50_ms",
    "steady_p95_ms",
    "steady_p99_ms",
    "steady_p999_ms",
    "backlog_growth_eps",
)


def is_open_loop(trials: Any) -> Any:
    """A boolean Series: which trials offered their load at a rate (``rate`` > 0); none in
    runs that predate open-loop load."""
    import pandas as pd

    if "rate" not in trials:
        return pd.Series(False, index=trials.index, dtype=bool)
    return pd.to_numeric(trials["rate"], errors="coerce").fillna(0) > 0


def open_loop(run: Run) -> Any:
    """The finished open-loop trials, ``sustained`` as a bool and the window's figures as
    numbers (``not_sustained`` as text)."""
    import pandas as pd

    t = measured(run)
    if t.empty:
        return t
    t = t[is_open_loop(t)].copy()
    if t.empty:
        return t
    for column in STEADY_METRICS:
        t[column] = pd.to_numeric(t[column], errors="coerce") if column in t else math.nan
    for column in ("sustained", "rate_held"):
        values = t[column] if column in t else pd.Series("", index=t.index)
        t[column] = flags(values)
    t["not_sustained"] = t["not_sustained"].map(_text) if "not_sustained" in t else ""
    return t


#: The whole-trial figures an open-loop trial's window replaces in :func:`headline`.
HEADLINE = {
    "throughput_eps": "steady_eps",
    "latency_p50_ms": "steady_p50_ms",
    "latency_p95_ms": "steady_p95_ms",
    "latency_p99_ms": "steady_p99_ms",
    "latency_max_ms": "steady_max_ms",
}


def headline(run: Run) -> Run:
    """The run as the sweep charts and the summary table read it.

    An open-loop trial's whole-trial throughput is the rate it was offered, and its
    whole-trial latency mixes in the warm-up and the drain: its throughput and latency
    columns become its window's (:data:`HEADLINE`), and ``events``, which it sets from its
    rate × duration, is dropped as an axis. A capacity search's rates are the search's,
    not a sweep: there only its probes (bursts) are kept.
    """
    import pandas as pd

    t = run.trials
    if t.empty or not is_open_loop(t).any():
        return run
    open_ = is_open_loop(t)
    if run.is_capacity:
        t = t[t["role"] == roles.PROBE.name]
    else:
        t = t.copy()
        for whole, window in HEADLINE.items():
            if whole in t and window in t:
                window_values = pd.to_numeric(t[window], errors="coerce")
                t[whole] = window_values.where(open_, pd.to_numeric(t[whole], errors="coerce"))
        t = t.drop(columns="events", errors="ignore")
    ts = run.timeseries
    if len(ts) and "trial" in ts:
        ts = ts[ts["trial"].isin(t["trial"])]
    return dataclasses.replace(run, trials=t, timeseries=ts)


def load_axes(run: Run, trials: Any) -> list[str]:
    """The swept axes that tell open-loop configurations apart: every swept axis but
    ``rate``, and but ``events``, which an open-loop trial sets from its rate × duration."""
    return [a for a in swept(run, trials) if a not in ("rate", "events")]


def steady_summary(run: Run) -> tuple[Any, list[str]]:
    """The open-loop trials' window figures per configuration and rate, and the axes of a
    configuration (:func:`load_axes`).

    One row per (configuration, ``rate``) in sorted order, with :func:`summarize`'s columns
    for each of :data:`STEADY_METRICS` and ``window_s``, and ``trials`` (how many),
    ``sustained`` (how many of them were), ``not_sustained`` (the distinct reasons of those
    that were not, joined by ``; ``) and ``first_trial``.
    """
    import pandas as pd

    t = open_loop(run)
    if t.empty:
        return pd.DataFrame(), []
    axes = load_axes(run, t)
    if "window_s" not in t:
        t["window_s"] = math.nan
    summary = summarize(t, [*axes, "rate"], [*STEADY_METRICS, "window_s"])
    groups = t.groupby([*axes, "rate"], sort=True, dropna=False)
    summary["trials"] = groups.size().to_numpy()
    summary["sustained"] = groups["sustained"].sum().to_numpy().astype(int)
    summary["not_sustained"] = [
        _reasons(g.loc[~g["sustained"], "not_sustained"]) for _, g in groups
    ]
    summary["first_trial"] = groups["trial"].min().to_numpy()
    return summary, axes


def _reasons(texts: Any) -> str:
    """Why trials were not sustained: one trial's reasons as they are, with their figures;
    several trials' as the kinds of reason and how many trials gave each (the figures are
    in the table's columns)."""
    texts = [t for t in texts if t]
    if len(texts) <= 1:
        return texts[0] if texts else ""
    kinds: dict[str, int] = {}
    for text in texts:
        for reason in dict.fromkeys(steady.reason_kind(r) for r in text.split("; ")):
            kinds[reason] = kinds.get(reason, 0) + 1
    return ", ".join(f"{kind} ({n})" for kind, n in kinds.items())


def configurations(summary: Any, axes: Sequence[str]) -> list[tuple[Any, ...]]:
    """The distinct values of ``axes`` in ``summary``, each axis in its natural order."""
    if not axes:
        return [()]
    order = {a: ordered(a, summary[a]) for a in axes}
    keys = {tuple(row) for row in summary[list(axes)].itertuples(index=False)}
    return sorted(
        keys, key=lambda k: tuple(order[a].index(v) for a, v in zip(axes, k, strict=True))
    )


def of_configuration(summary: Any, axes: Sequence[str], key: Sequence[Any]) -> Any:
    """The rows of ``summary`` whose ``axes`` take the values ``key``, sorted by ``rate``
    when it has one."""
    rows = summary
    for axis, value in zip(axes, key, strict=True):
        rows = rows[rows[axis] == value]
    return rows.sort_values("rate") if "rate" in rows else rows


def capacity_axes(capacity: Any) -> list[str]:
    """The configuration's axes in ``capacity.csv``: the columns between ``config`` and
    ``fraction``."""
    columns = list(capacity.columns)
    if "config" not in columns or "fraction" not in columns:
        return []
    return columns[columns.index("config") + 1 : columns.index("fraction")]


#: The window's figures ``capacity.csv`` gives per trial.
CAPACITY_METRICS = (
    "steady_eps",
    "steady_p50_ms",
    "steady_p95_ms",
    "steady_p99_ms",
    "steady_p999_ms",
)


def capacity_summary(run: Run) -> tuple[Any, list[str]]:
    """A capacity search's ``capacity.csv``, one row per configuration and share of its
    capacity (repetitions of a share summarised), and the configuration's axes.

    Columns: ``config``, the axes, ``fraction`` (NaN when no rate was sustained),
    ``capacity_eps``, ``probe_eps``, ``rate``, :func:`summarize`'s columns for each of
    :data:`CAPACITY_METRICS`, ``trials`` and ``sustained`` (how many of them were).
    """
    import pandas as pd

    cap = run.capacity.copy() if run.capacity is not None else pd.DataFrame()
    if cap.empty or "capacity_eps" not in cap:
        return pd.DataFrame(), []
    axes = capacity_axes(cap)
    numbers = ("fraction", "capacity_eps", "probe_eps", "rate", *CAPACITY_METRICS)
    for column in numbers:
        cap[column] = pd.to_numeric(cap[column], errors="coerce") if column in cap else math.nan
    cap["sustained"] = flags(cap["sustained"])
    keys = ["config", *axes, "fraction", "capacity_eps", "probe_eps", "rate"]
    summary = summarize(cap, keys, [m for m in CAPACITY_METRICS if m in cap])
    groups = cap.groupby(keys, sort=True, dropna=False)
    summary["trials"] = groups.size().to_numpy()
    summary["sustained"] = groups["sustained"].sum().to_numpy().astype(int)
    return summary, axes
