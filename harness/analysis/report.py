"""``report.md`` beside a run's results: what ran, where, whether it held, the numbers, the charts.

The report is written from the stored results alone (``trials.csv``, ``timeseries.csv``,
``meta.json``, and ``capacity.csv`` of a capacity search), so it can be regenerated at any
time; it redraws the charts first. A run with open-loop trials also gets their measured
windows (*Steady state*), a capacity search its capacities (*Capacity*), and an experiment
with a ``[reference]`` the figures someone else published beside ours.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.analysis import beside, charts, compare, correctness, load_plots, plots, stats
from harness.analysis import text as md
from harness.analysis.registry import Chart
from harness.model import steady
from harness.trials.results import Run, load

#: (column, heading, decimals) of the summary table
METRICS = (
    ("throughput_eps", "throughput (events/s)", 0),
    ("latency_p50_ms", "p50 latency (ms)", 0),
    ("latency_p99_ms", "p99 latency (ms)", 0),
    ("retries_per_1k", "retries per 1,000 events", 1),
)
PACKAGES = (("ray", "Ray"), ("psycopg", "psycopg"), ("redis", "redis-py"), ("pandas", "pandas"))


def write_report(run_path: str | Path) -> Path:
    """Redraw the run's charts and write ``<run>/report.md``; returns its path."""
    drawn = {p.name for p in charts.plot_run(run_path)}
    run = load(run_path)
    shown = [c for c in charts.CHARTS if c.filename in drawn]
    sections = [
        _title(run),
        _what_ran(run),
        _environment(run),
        _correctness(run),
        _results(run),
        _capacity(run),
        _steady_state(run),
        beside.section(run),
        compare.section(run),
        _charts(run, shown),
    ]
    target = run.path / "report.md"
    target.write_text("\n\n".join(s.strip() for s in sections if s) + "\n", encoding="utf-8")
    return target


def _title(run: Run) -> str:
    exp = run.meta.experiment
    name = exp.get("name", run.path.parent.name)
    text = f"# {name}: run {run.path.name}\n"
    description = exp.get("description", "").strip()
    if description:
        text += f"\n{description.rstrip('.')}.\n"
    return text + (
        "\nWritten by `python -m harness report` from the results in this folder "
        "(`trials.csv`, `timeseries.csv`, `meta.json`); the same command writes it again.\n"
    )


def _what_ran(run: Run) -> str:
    exp, meta = run.meta.experiment, run.meta
    trials = stats.frame(run)
    planned = len(meta.resolved_trials) or len(trials)
    swept = stats.swept(run, trials) if not trials.empty else []
    open_loop = not trials.empty and bool(stats.is_open_loop(trials).any())
    rows: list[tuple[str, str]] = []
    argv = meta.argv
    if argv:
        rows.append(("command", f"`python -m harness {shlex.join(argv[1:])}`"))
    status = meta.status or "unknown (no end recorded)"
    rows.append(("status", f"{status}: {len(trials)} of {planned} trials recorded"))
    rows.append(("started, finished", f"{meta.started or '?'}, {meta.finished or '?'}"))
    repeat, seed = exp.get("repeat", 1), exp.get("seed", 0)
    rows.append(("repeats", f"{repeat} per configuration; repetition r uses seed {seed} + r"))
    cases = exp.get("cases", [])
    for i, case in enumerate(cases, 1):
        setting = ", ".join(f"{k} = {md.values([v])}" for k, v in case.items())
        rows.append((f"case {i}" if len(cases) > 1 else "case", setting))
    in_cases = {k for case in cases for k in case}
    for axis in swept:
        if axis in in_cases:
            continue  # each case's settings are above, not a product of their values
        if open_loop and axis == "events":
            rows.append(("events", "rate × duration_s in an open-loop trial"))
        elif axis == "rate" and run.is_capacity:
            rows.append(("rate", _searched_rates(trials)))
        else:
            rows.append((f"swept: {axis}", md.values(stats.ordered(axis, trials[axis]))))
    params = _fixed_params(run, trials, swept)
    if params:
        rows.append(("fixed", ", ".join(f"{k} = {md.values([v])}" for k, v in params.items())))
    return "## What ran\n\n" + md.table(rows, ("", ""))


def _searched_rates(trials: Any) -> str:
    rates = trials.loc[stats.is_open_loop(trials), "rate"]
    return (
        f"chosen by the capacity search: {rates.nunique()} rates from {rates.min():,.0f} to "
        f"{rates.max():,.0f} events/s, after a burst (rate 0) per configuration"
    )


def _fixed_params(run: Run, trials: Any, swept: Sequence[str]) -> dict[str, Any]:
    resolved = run.meta.resolved_trials or [{}]
    first = resolved[0].get("params", {})
    if not trials.empty:
        first = {k: trials[k].iloc[0] for k in first or stats.DEFAULTS if k in trials}
    return {k: md.plain(v) for k, v in first.items() if k not in swept}


def _environment(run: Run) -> str:
    env, servers = run.meta.environment, run.meta.servers
    packages = env.get("packages", {})
    ray = run.meta.ray
    rows = [
        ("git commit", f"`{env.get('git_commit') or 'unknown'}`"),
        ("Python", env.get("python", "?")),
        *((name, _package(packages, key)) for key, name in PACKAGES),
        ("PostgreSQL", servers.get("postgresql", "?")),
        ("Redis", servers.get("redis", "?")),
        ("CPUs", env.get("cpu_count", "?")),
        ("host", f"{env.get('host', '?')} ({env.get('platform', '?')})"),
    ]
    if ray:
        cluster = f"{ray.get('ray_address')}, {ray.get('ray_nodes')} node(s)"
        rows.append(("Ray cluster", f"{cluster}, {ray.get('ray_cpus')} CPUs"))
    return "## Environment\n\n" + md.table(rows, ("", ""))


def _package(packages: dict[str, str | None], name: str) -> str:
    if name not in packages:
        return "not recorded"
    return packages[name] or "not installed"


def _correctness(run: Run) -> str:
    trials = stats.frame(run)
    if trials.empty:
        return "## Correctness\n\nNo trial was recorded."
    text = (
        "## Correctness\n\nAfter every trial the harness checks, against the workload's ground "
        "truth and the database, that every published event was received, that each distinct "
        "event is stored exactly once, and that the counters agree with the table. "
        + correctness.describe_correctness(run)
    )
    text += _faults_hit(trials)
    odd = trials[~trials["holds"]]
    if odd.empty:
        return text
    swept = stats.swept(run, trials)
    rows = [
        (
            row["trial"],
            ", ".join(f"{a} = {row[a]}" for a in swept) or "–",
            row["verdict"],
            f"{row['lost']:,}",
            f"{row['double_applied']:,}",
            f"{row['lost_updates']:,.0f}",
            row["error"] or row["violations"] or row["anomalies"],
        )
        for row in odd.to_dict("records")
    ]
    header = (
        "trial", "configuration", "verdict", "events lost", "stored twice",
        "counter updates lost", "what the check found",
    )  # fmt: skip
    note = (
        "An *anomaly* is a loss the trial's design is expected to show: updates lost to a race "
        "by a counter strategy unsafe at that isolation level, or the events the list broker "
        "loses when a consumer dies. A *violation* is a bug."
    )
    return f"{text}\n\n{note}\n\n{md.table(rows, header)}"


def _faults_hit(trials: Any) -> str:
    """What the faults hit; the trials whose faults hit nothing, named: they tested nothing."""
    if "faults_missed" not in trials or "fault" not in trials:
        return ""
    faulted = trials[trials["fault"] != "none"]
    if faulted.empty:
        return ""
    missed = faulted[faulted["faults_missed"] > 0]
    if missed.empty:
        return (
            f"\n\nEvery fault of the {len(faulted)} trials with faults hit work in flight "
            "(`in_flight_at_fault` says how much, by the fault's measure)."
        )
    named = ", ".join(f"{r['trial']} ({r['fault']})" for r in missed.to_dict("records"))
    return (
        f"\n\n**{len(missed)} of the {len(faulted)} trials with faults tested nothing with some "
        f"of them**: a fault found no work in flight when it landed (`faults_missed`) in trials "
        f"{named}. Their invariants held, but that proves nothing about those faults: rerun "
        "with more load (`rate`)."
    )


def summary_table(run: Run) -> str:
    """The finished trials grouped by the swept axes, as a markdown table of mean ± 95% CI.

    Open-loop trials show their measured window's throughput and latency, and a capacity
    search its bursts alone (:func:`stats.headline`).
    """
    run = stats.headline(run)
    trials = stats.measured(run)
    if trials.empty:
        return "No trial finished, so there is nothing to summarise."
    by = stats.swept(run, trials)
    summary = stats.summarize(trials, by, [m for m, _, _ in METRICS])
    rows = []
    for r in summary.to_dict("records"):
        cells = [md.cell(r[f"{m}_mean"], r[f"{m}_ci"], r[f"{m}_n"], d) for m, _, d in METRICS]
        rows.append([*(md.values([r[a]]) for a in by), r["throughput_eps_n"], *cells])
    header = [*(plots.label(a) for a in by), "trials", *(h for _, h, _ in METRICS)]
    return md.table(rows, header)


def _results(run: Run) -> str:
    trials = stats.measured(stats.headline(run))
    repeats = run.meta.experiment.get("repeat", 1)
    note = (
        "Each row is the mean over its trials; ± is the half-width of the 95% confidence "
        "interval (Student t), shown when a configuration ran more than once."
        if repeats > 1
        else "Each configuration ran once, so there is no interval; rerun with "
        "`--set repeat=N` to get one."
    )
    errored = len(stats.frame(stats.headline(run))) - len(trials)
    if errored:
        note += f" {errored} trial(s) that did not finish are left out."
    text = (
        "## Results\n\nThroughput counts every published event (re-sends included) from the "
        "first publish to the last commit; latency runs from an event's publication to the "
        "commit that stored it; retries are whole-transaction retries after a serialization "
        f"failure, a deadlock or a broken connection.{_open_loop_note(run)} {note}\n\n"
    )
    return text + summary_table(run)


def _open_loop_note(run: Run) -> str:
    if run.trials.empty or not stats.is_open_loop(run.trials).any():
        return ""
    if run.is_capacity:
        return (
            " This table holds the capacity search's bursts; its open-loop trials are under "
            "Capacity and Steady state."
        )
    return (
        " For an open-loop trial (rate > 0), throughput is the events/s committed in its "
        "measured window and latency that window's, from each event's intended send time "
        "(see Steady state)."
    )


def _charts(run: Run, shown: Sequence[Chart[Run]]) -> str:
    if not shown:
        return ""
    parts = ["## Charts"]
    for chart in shown:
        parts.append(
            f"### {chart.title}\n\n![{chart.title}](plots/{chart.filename})\n\n"
            f"{chart.describe(run)}"
        )
    return "\n\n".join(parts)


# -- open-loop load ---------------------------------------------------------------------


def _one(trials: Any, column: str) -> Any:
    """The value every trial has in ``column``, or None when they differ or lack it."""
    if column not in trials or trials[column].nunique() != 1:
        return None
    return md.plain(trials[column].iloc[0])


def _steady_state(run: Run) -> str:
    summary, axes = stats.steady_summary(run)
    if summary.empty:
        return ""
    trials = stats.open_loop(run)
    duration, warmup, window = (_one(trials, c) for c in ("duration_s", "warmup_s", "window_s"))
    slo = _one(trials, "slo_p99_ms")
    here = (
        f" (here {md.value(duration)} s, the first {md.value(warmup)} s of it warm-up)"
        if duration is not None and warmup is not None
        else ""
    )
    text = (
        "## Steady state\n\nAn open-loop trial offers its load on a schedule: the publishers "
        f"together send `rate` events/s for `duration_s` seconds{here}, whether or not the "
        "consumers keep up. The first `warmup_s` seconds are thrown away; the figures below "
        "come from the measured window that follows"
        + (f" ({md.value(window)} s)" if window is not None else "")
        + ", the whole seconds until the load stops, after which the backlog drains (the "
        "invariants are checked over the whole trial). Latency runs from the time each event "
        "was due to be sent, its intended send time, to the commit that stored it, so a "
        "stalled pipeline cannot hide its stall by delaying the sends behind it (coordinated "
        "omission). A window is *sustained* when the publishers sent at least "
        f"{steady.RATE_HELD_SHARE:.0%} of the rate, the backlog grew by less than "
        f"{steady.BACKLOG_GROWTH_SHARE:.0%} of it per second, and p99 stayed within the "
        "objective"
        + (f" (`slo_p99_ms` = {md.value(slo)} ms)" if slo is not None else " (`slo_p99_ms`)")
        + "."
    )
    repeated = bool((summary["trials"] > 1).any())
    if repeated:
        text += " With repeats, a row is the mean ± the 95% confidence interval."
    return f"{text}\n\n{_steady_table(summary, axes, repeated=repeated)}"


#: (column, heading, decimals) of the steady-state table, after the offered rate
STEADY_COLUMNS = (
    ("achieved_publish_eps", "published (events/s)", 0),
    ("steady_eps", "committed (events/s)", 0),
    ("steady_p50_ms", "p50 (ms)", 1),
    ("steady_p95_ms", "p95 (ms)", 1),
    ("steady_p99_ms", "p99 (ms)", 1),
    ("steady_p999_ms", "p99.9 (ms)", 1),
    ("backlog_growth_eps", "backlog growth (events/s)", 0),
)


def _steady_table(summary: Any, axes: Sequence[str], *, repeated: bool) -> str:
    rows = []
    for key in stats.configurations(summary, axes):
        for r in stats.of_configuration(summary, axes, key).to_dict("records"):
            cells = [
                md.cell(r[f"{m}_mean"], r[f"{m}_ci"], r[f"{m}_n"], d) for m, _, d in STEADY_COLUMNS
            ]
            count = [r["trials"]] if repeated else [r["first_trial"]]
            rows.append([*map(md.value, key), f"{r['rate']:,.0f}", *count, *cells, _sustained(r)])
    header = [
        *(plots.label(a) for a in axes),
        "offered (events/s)",
        "trials" if repeated else "trial",
        *(h for _, h, _ in STEADY_COLUMNS),
        "sustained",
    ]
    return md.table(rows, header)


def _sustained(row: dict[str, Any]) -> str:
    n, held, why = row["trials"], row["sustained"], row["not_sustained"]
    if held == n:
        return "yes" if n == 1 else f"all {n}"
    verdict = "no" if n == 1 else ("none" if held == 0 else f"{held} of {n}")
    return f"{verdict}: {why}" if why else verdict


def _at_fraction(at: Any) -> str:
    """``p50 / p99`` of a configuration's trials at one share of its capacity; ``*`` when
    not all of them sustained it."""
    if at.empty:
        return "–"
    r = plots.record(at, at.index[0])
    p99 = md.cell(r["steady_p99_ms_mean"], r["steady_p99_ms_ci"], r["steady_p99_ms_n"], 1)
    mark = "" if r["sustained"] == r["trials"] else " *"
    return f"{r['steady_p50_ms_mean']:,.1f} / {p99}{mark}"


def _capacity(run: Run) -> str:
    summary, axes = stats.capacity_summary(run)
    if summary.empty:
        return ""
    search = run.meta.search
    tolerance = search.get("tolerance")
    until = (
        f"until the highest sustained and the lowest failed rate were within {tolerance:.0%} "
        "of each other"
        if tolerance is not None
        else "until they were close"
    )
    most = f" (at most {search['max_trials']} trials)" if "max_trials" in search else ""
    repeated = bool((summary["trials"] > 1).any())
    text = (
        "## Capacity\n\nFor each configuration the search first ran a burst, the experiment's "
        "events as fast as the publishers could send them (*burst*), then open-loop trials at "
        "one rate each: from the burst's throughput down while none was sustained and up while "
        f"none failed, then halving the gap {until}{most}. The *capacity* is the highest "
        "sustained rate; the trials at 25%, 50% and 75% of it show the latency below "
        "saturation. p50 / p99 are the measured window's, in ms"
        + (
            "; ± is the 95% confidence interval of p99 over the runs at that share"
            if repeated
            else ""
        )
        + ". "
        + load_plots.describe_capacity(run)
    )
    fractions = sorted(summary["fraction"].dropna().unique())
    rows, flagged = [], False
    for config in sorted(summary["config"].unique()):
        mine = summary[summary["config"] == config]
        first = plots.record(mine, mine.index[0])
        cells = [_at_fraction(mine[mine["fraction"] == f]) for f in fractions]
        flagged |= any(c.endswith(" *") for c in cells)
        capacity = first["capacity_eps"]
        rows.append(
            [
                *(md.value(md.plain(first[a])) for a in axes),
                f"{first['probe_eps']:,.0f}",
                "none sustained" if math.isnan(capacity) else f"{capacity:,.0f}",
                *cells,
            ]
        )
    header = [
        *(plots.label(a) for a in axes),
        "burst (events/s)",
        "capacity (events/s)",
        *(f"p50 / p99 at {f:.0%}" for f in fractions),
    ]
    table = md.table(rows, header)
    if flagged:
        table += (
            "\n\n\\* not sustained"
            + (" (not every run at that share)" if repeated else "")
            + ": its row under Steady state says why."
        )
    return f"{text}\n\n{table}"
