"""``report.md`` beside a run's results: what ran, where, whether it held, the numbers, the charts.

The report is written from the stored results alone (``trials.csv``, ``timeseries.csv``,
``meta.json``), so it can be regenerated at any time; it redraws the charts first.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import plots, stats
from harness.results import Run, load

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
    drawn = {p.name for p in plots.plot_run(run_path)}
    run = load(run_path)
    charts = [c for c in plots.CHARTS if c.filename in drawn]
    sections = [
        _title(run),
        _what_ran(run),
        _environment(run),
        _correctness(run),
        _results(run),
        _charts(run, charts),
    ]
    target = run.path / "report.md"
    target.write_text("\n\n".join(s.strip() for s in sections if s) + "\n", encoding="utf-8")
    return target


def _title(run: Run) -> str:
    exp = run.meta.get("experiment", {})
    name = exp.get("name", run.path.parent.name)
    text = f"# {name}: run {run.path.name}\n"
    description = exp.get("description", "").strip()
    if description:
        text += f"\n{description.rstrip('.')}.\n"
    return text + (
        "\nWritten by `python -m harness report` from the results in this folder "
        "(`trials.csv`, `timeseries.csv`, `meta.json`); the same command writes it again.\n"
    )


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(map(cell, header)) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def _values(values: Sequence[Any]) -> str:
    plain = [_plain(v) for v in values]
    return ", ".join(
        f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in plain
    )


def _what_ran(run: Run) -> str:
    exp, meta = run.meta.get("experiment", {}), run.meta
    trials = stats.frame(run)
    planned = len(meta.get("resolved_trials", [])) or len(trials)
    swept = stats.swept(run, trials) if not trials.empty else []
    rows: list[tuple[str, str]] = []
    argv = meta.get("argv") or []
    if argv:
        rows.append(("command", f"`python -m harness {shlex.join(argv[1:])}`"))
    status = meta.get("status", "unknown (no end recorded)")
    rows.append(("status", f"{status}: {len(trials)} of {planned} trials recorded"))
    rows.append(("started, finished", f"{meta.get('started', '?')}, {meta.get('finished', '?')}"))
    repeat, seed = exp.get("repeat", 1), exp.get("seed", 0)
    rows.append(("repeats", f"{repeat} per configuration; repetition r uses seed {seed} + r"))
    for axis in swept:
        rows.append((f"swept: {axis}", _values(stats.ordered(axis, trials[axis]))))
    params = _fixed_params(run, trials, swept)
    if params:
        rows.append(("fixed", ", ".join(f"{k} = {_values([v])}" for k, v in params.items())))
    return "## What ran\n\n" + _table(rows, ("", ""))


def _fixed_params(run: Run, trials: Any, swept: Sequence[str]) -> dict[str, Any]:
    resolved = run.meta.get("resolved_trials") or [{}]
    first = resolved[0].get("params", {})
    if not trials.empty:
        first = {k: trials[k].iloc[0] for k in first or stats.DEFAULTS if k in trials}
    return {k: _plain(v) for k, v in first.items() if k not in swept}


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones, so they format like the values in the experiment file."""
    return value.item() if hasattr(value, "item") else value


def _environment(run: Run) -> str:
    env, servers = run.meta.get("environment", {}), run.meta.get("servers", {})
    packages = env.get("packages", {})
    ray = run.meta.get("ray", {})
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
    return "## Environment\n\n" + _table(rows, ("", ""))


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
        + plots.describe_correctness(run)
    )
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
    return f"{text}\n\n{note}\n\n{_table(rows, header)}"


def _cell(mean: float, half: float, n: int, decimals: int) -> str:
    if math.isnan(mean):
        return "–"
    text = f"{mean:,.{decimals}f}"
    return text if n < 2 or math.isnan(half) else f"{text} ± {half:,.{decimals}f}"


def summary_table(run: Run) -> str:
    """The finished trials grouped by the swept axes, as a markdown table of mean ± 95% CI."""
    trials = stats.measured(run)
    if trials.empty:
        return "No trial finished, so there is nothing to summarise."
    by = stats.swept(run, trials)
    summary = stats.summarize(trials, by, [m for m, _, _ in METRICS])
    rows = []
    for r in summary.to_dict("records"):
        cells = [_cell(r[f"{m}_mean"], r[f"{m}_ci"], r[f"{m}_n"], d) for m, _, d in METRICS]
        rows.append([*(_values([r[a]]) for a in by), r["throughput_eps_n"], *cells])
    header = [*(plots.label(a) for a in by), "trials", *(h for _, h, _ in METRICS)]
    return _table(rows, header)


def _results(run: Run) -> str:
    trials = stats.measured(run)
    repeats = run.meta.get("experiment", {}).get("repeat", 1)
    note = (
        "Each row is the mean over its trials; ± is the half-width of the 95% confidence "
        "interval (Student t), shown when a configuration ran more than once."
        if repeats > 1
        else "Each configuration ran once, so there is no interval; rerun with "
        "`--set repeat=N` to get one."
    )
    errored = len(stats.frame(run)) - len(trials)
    if errored:
        note += f" {errored} trial(s) that did not finish are left out."
    text = (
        "## Results\n\nThroughput counts every published event (re-sends included) from the "
        "first publish to the last commit; latency runs from an event's publication to the "
        "commit that stored it; retries are whole-transaction retries after a serialization "
        f"failure, a deadlock or a broken connection. {note}\n\n"
    )
    return text + summary_table(run)


def _charts(run: Run, charts: Sequence[plots.Chart]) -> str:
    if not charts:
        return ""
    parts = ["## Charts"]
    for chart in charts:
        parts.append(
            f"### {chart.title}\n\n![{chart.title}](plots/{chart.filename})\n\n"
            f"{chart.describe(run)}"
        )
    return "\n\n".join(parts)
