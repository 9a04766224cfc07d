"""A/B: two runs of one kind side by side, every figure's ratio with its interval.

``python -m harness compare OLD NEW`` (:mod:`harness.cli.compare`) reads two experiment
runs, two pipeline bench runs (``bench.json``, its folder or the file) or two service
benches, and matches their configurations: an experiment's by every trial parameter
(``trials.csv``'s parameter columns; not the ids, ``repeat`` or ``seed``), a bench's by
part (a)…(f) and ratio of a round, a service bench's by target, scenario and rate. For
each figure of each configuration both ran it gives the means, NEW/OLD with its 95%
interval and Welch's test (:func:`harness.analysis.compare.compare`, as the reports'
Comparisons), and a verdict: *faster* / *slower* (*lower* / *higher* for a latency) at
p < 0.05 with the interval leaving out 1, else *no difference beyond the noise*; none
where a side ran once. The figures: an open-loop trial's window (``steady_eps``,
``steady_p99_ms``) and a burst's whole trial (``throughput_eps``, ``latency_p99_ms``),
as :func:`harness.analysis.stats.headline` reads them; a bench part's events/s per round;
a service-bench step's requests/s and p99.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.analysis import compare, stats
from harness.analysis import text as md
from harness.trials import params, results

#: a configuration: its ``(axis, value)`` pairs
Key = tuple[tuple[str, Any], ...]
BENCH_FILE, SERVICE_BENCH_FILE, STAGES_FILE = "bench.json", "service-bench.json", "stages.json"


class NotComparable(ValueError):
    """Two paths that cannot be compared: not runs, runs of other kinds, nothing in common."""


@dataclasses.dataclass(frozen=True)
class Figure:
    """A figure compared, and the words for a NEW beyond the noise above or below OLD."""

    column: str
    label: str
    up: str
    down: str
    decimals: int


STEADY_EPS = Figure("steady_eps", "steady events/s", "faster", "slower", 0)
STEADY_P99 = Figure("steady_p99_ms", "steady p99 ms", "higher", "lower", 1)
BURST_EPS = Figure("throughput_eps", "events/s", "faster", "slower", 0)
BURST_P99 = Figure("latency_p99_ms", "p99 ms", "higher", "lower", 1)
BENCH_EPS = Figure("events_per_s", "events/s", "faster", "slower", 0)
BENCH_RATIO = Figure("ratio", "ratio", "higher", "lower", 2)
REQUESTS = Figure("requests_per_s", "requests/s", "faster", "slower", 0)
REQUEST_P99 = Figure("p99_ms", "p99 ms", "higher", "lower", 1)


@dataclasses.dataclass
class Side:
    """One run as compared: its configurations' figures, in the order it ran them."""

    path: Path
    kind: str
    #: what the run is, in one line (experiment, start, commit, machine)
    about: str
    #: the values of each figure of each configuration (its runs, repeats or rounds)
    samples: dict[Key, dict[Figure, list[float]]] = dataclasses.field(default_factory=dict)
    #: a configuration's name when it has its own (a bench's parts)
    names: dict[Key, str] = dataclasses.field(default_factory=dict)
    #: what to know of a configuration's figures (trials not finished, not sustained)
    notes: dict[Key, list[str]] = dataclasses.field(default_factory=dict)
    #: the open-loop configurations whose finished trials all sustained their rate
    sustained: set[Key] = dataclasses.field(default_factory=set)
    #: what the run was asked to do, for the warnings: experiment name, bench config…
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def add(self, key: Key, figure: Figure, values: Iterable[Any]) -> None:
        numbers = [_number(v) for v in values]
        self.samples.setdefault(key, {}).setdefault(figure, []).extend(numbers)

    def note(self, key: Key, text: str) -> None:
        self.notes.setdefault(key, []).append(text)


@dataclasses.dataclass(frozen=True)
class Row:
    """One figure of one configuration, OLD against NEW."""

    configuration: str
    figure: Figure
    #: OLD as the baseline, NEW as the other: means, ratio and its interval, p
    comparison: compare.Comparison
    old_half: float
    new_half: float
    note: str = ""
    #: what the figure says instead of a test: both sides committed the rate they were
    #: offered, so their throughput is that rate, not a speed
    said: str = ""

    @property
    def verdict(self) -> str:
        c = self.comparison
        if self.said:
            return self.said
        if not c.n_baseline or not c.n_other:
            return f"no figure in {'OLD' if not c.n_baseline else 'NEW'}"
        if c.n_baseline < 2 and c.n_other < 2:
            return "one run each: no interval"
        if c.n_baseline < 2 or c.n_other < 2:
            return f"one run in {'OLD' if c.n_baseline < 2 else 'NEW'}: no interval"
        beyond = c.verdict
        if beyond is None:
            return "no interval"
        if not beyond:
            return "no difference beyond the noise"
        return self.figure.up if c.ratio > 1 else self.figure.down

    @property
    def judged(self) -> bool:
        """Whether the test had the runs to judge the difference (two a side at least)."""
        c = self.comparison
        enough = c.n_baseline >= 2 and c.n_other >= 2
        return enough and c.verdict is not None and not self.said


@dataclasses.dataclass(frozen=True)
class AB:
    """Two runs compared: a row per figure of each configuration both have."""

    old: Side
    new: Side
    rows: list[Row]
    only_old: list[str]
    only_new: list[str]
    warnings: list[str]


# -- reading a run ------------------------------------------------------------------------


def read(path: str | Path) -> Side:
    """An experiment, bench or service-bench run; :class:`NotComparable` for the rest."""
    path = Path(path)
    if path.is_dir() and (path / "meta.json").exists():
        return experiment_side(path)
    file = path
    if path.is_dir():
        found = [path / n for n in (BENCH_FILE, SERVICE_BENCH_FILE, STAGES_FILE)]
        file = next((f for f in found if f.exists()), path / BENCH_FILE)
    if not file.is_file():
        what = "no such file or folder" if not path.exists() else "no meta.json nor bench.json"
        raise NotComparable(f"{path} is not a run folder ({what})")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NotComparable(f"{file} is not a run's JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("measurements"), list):
        if isinstance(data, dict) and "steps" in data:
            raise NotComparable(
                f"{file} is a `bench --stages` run (the best of its passes, no spread): "
                "compare is for experiment, bench and service-bench runs"
            )
        raise NotComparable(f"{file} is not a bench or service-bench run (no measurements)")
    if data.get("kind") == "service-bench" or any(
        isinstance(m, dict) and "scenario" in m for m in data["measurements"]
    ):
        return service_bench_side(file, data)
    return bench_side(file, data)


def experiment_side(path: Path) -> Side:
    """An experiment's run: a configuration per distinct set of trial parameters."""
    try:
        run = results.load(path)
    except ValueError as exc:  # a meta.json or trials.csv this version cannot read
        raise NotComparable(f"{path}: {exc}") from None
    if run.is_capacity:
        raise NotComparable(
            f"{path} is a capacity search, whose rates are its own: compare two sweeps "
            "(`harness run`) or set their capacity.csv side by side"
        )
    trials = stats.frame(run)
    if trials.empty:
        raise NotComparable(f"{path} has no trials")
    missing = [c for c in params.FIELDS if c not in trials]
    for column in missing:
        trials[column] = stats.DEFAULTS[column]
    env = run.meta.environment
    name = run.meta.experiment.get("name", "?")
    side = Side(
        path,
        "experiment",
        _about(f"experiment {name}", run.meta.started, env, quick=run.meta.quick),
        facts={"experiment": name, "quick": run.meta.quick, **_machine(env)},
    )
    if missing:
        side.warnings.append(
            f"has no column {', '.join(missing)} (an older run): taken at the default of each"
        )
    for values, group in trials.groupby(list(params.FIELDS), sort=False, dropna=False):
        key = tuple(zip(params.FIELDS, map(_plain, values), strict=True))
        _experiment_figures(side, key, group)
    return side


def _experiment_figures(side: Side, key: Key, group: Any) -> None:
    finished = group[group["error"] == ""]
    open_loop = bool(stats.is_open_loop(group).any())
    for figure in (STEADY_EPS, STEADY_P99) if open_loop else (BURST_EPS, BURST_P99):
        side.add(key, figure, finished.get(figure.column, []))
    if len(finished) < len(group):
        side.note(key, f"{len(group) - len(finished)}/{len(group)} did not finish")
    if open_loop and len(finished) and "sustained" in finished:
        held = int(stats.flags(finished["sustained"]).sum())
        if held < len(finished):
            side.note(key, f"{held}/{len(finished)} sustained")
        elif len(finished) == len(group):
            side.sustained.add(key)


def bench_side(file: Path, data: dict[str, Any]) -> Side:
    """A pipeline bench's run: events/s per part over its rounds, its ratios per round."""
    env = data.get("environment", {})
    about = _about("bench", data.get("started", ""), env)
    side = Side(file, "bench", about, facts={"config": data.get("config"), **_machine(env)})
    for m in data["measurements"]:
        key: Key = (("part", m.get("key", "?")),)
        side.names.setdefault(key, f"({m.get('key', '?')}) {m.get('name', '')}".strip())
        if not m.get("verified", True):
            side.note(key, f"round {m.get('round', 0) + 1} not verified, left out")
            side.add(key, BENCH_EPS, [])
            continue
        rate = m.get("events_per_s")
        if rate is None and m.get("seconds"):
            rate = m["events"] / m["seconds"]
        side.add(key, BENCH_EPS, [rate])
    rounds = data.get("round_ratios") or ([data["ratios"]] if data.get("ratios") else [])
    for ratios in rounds:
        for name, value in ratios.items():
            if not math.isfinite(_number(value)):
                continue  # a part it divides by was not measured
            key = (("ratio", name),)
            side.names.setdefault(key, name)
            side.add(key, BENCH_RATIO, [value])
    return side


def service_bench_side(file: Path, data: dict[str, Any]) -> Side:
    """A service bench's run: requests/s and p99 of each target's seed run and each rate."""
    env = data.get("environment", {})
    about = _about("service-bench", data.get("started", ""), env)
    facts = {"config": data.get("config"), **_machine(env)}
    side = Side(file, "service-bench", about, facts=facts)
    for m in data["measurements"]:
        if m.get("scenario") == "warm-up":
            continue
        rate = m.get("rate") or 0
        key: Key = (("target", m["target"]), ("scenario", m["scenario"]), ("rate", rate))
        scenario = f"open loop {rate:,}/s" if rate else f"{m['scenario']}.js"
        side.names.setdefault(key, f"{m['target']} {scenario}")
        summary = m.get("summary", {})
        verified = m.get("verified", True)
        for figure in (REQUESTS, REQUEST_P99):
            side.add(key, figure, [summary.get(figure.column)] if verified else [])
        if not verified:
            side.note(key, "not verified, left out")
    return side


def _about(what: str, started: str, env: dict[str, Any], *, quick: bool = False) -> str:
    """``experiment seed, started …, git 0123456, on vm (2 cores)``."""
    machine = _machine(env)
    parts = [
        what + (" (--quick)" if quick else ""),
        f"started {started}" if started else "",
        f"git {str(env['git_commit'])[:7]}" if env.get("git_commit") else "",
        f"on {machine['host']} ({machine.get('cpu_count', '?')} cores)" if machine else "",
    ]
    return ", ".join(p for p in parts if p)


def _machine(env: Any) -> dict[str, Any]:
    """The host and its cores, from a run's environment record."""
    env = env if isinstance(env, dict) else {}
    return {k: env[k] for k in ("host", "cpu_count") if env.get(k) is not None}


def _plain(value: Any) -> Any:
    """A parameter's value as the same value reads in any run: numpy scalars as Python
    ones, whole floats as ints (``5000.0`` and ``5000`` are one rate), blanks as ``""``."""
    value = md.plain(value)
    if not isinstance(value, float):
        return value
    return "" if math.isnan(value) else int(value) if value.is_integer() else value


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# -- comparing two runs -------------------------------------------------------------------


def compare_runs(old: str | Path, new: str | Path) -> AB:
    """OLD against NEW (:class:`AB`); :class:`NotComparable` when they cannot be compared."""
    a, b = read(old), read(new)
    if a.kind != b.kind:
        raise NotComparable(
            f"OLD ({a.path}) is a run of kind {a.kind} and NEW ({b.path}) of kind "
            f"{b.kind}: compare two runs of one kind"
        )
    common = [k for k in a.samples if k in b.samples]
    if not common:
        raise NotComparable(f"OLD and NEW have no configuration in common{_apart(a, b)}")
    label = _labeller(a, b)
    rows = [row for key in common for row in _rows(key, label(key), a, b)]
    return AB(
        old=a,
        new=b,
        rows=rows,
        only_old=[label(k) for k in a.samples if k not in b.samples],
        only_new=[label(k) for k in b.samples if k not in a.samples],
        warnings=[
            *(f"OLD {w}" for w in a.warnings),
            *(f"NEW {w}" for w in b.warnings),
            *_warnings(a, b),
        ],
    )


def _rows(key: Key, label: str, a: Side, b: Side) -> list[Row]:
    out = []
    for figure, old_values in a.samples[key].items():
        new_values = b.samples[key].get(figure)
        if new_values is None:
            continue
        figures = compare.compare(old_values, new_values)
        comparison = compare.Comparison(figure.column, "OLD", "NEW", label, **figures)  # type: ignore[arg-type]
        notes = [f"OLD {n}" for n in a.notes.get(key, [])]
        notes += [f"NEW {n}" for n in b.notes.get(key, [])]
        both_held = figure is STEADY_EPS and key in a.sustained and key in b.sustained
        out.append(
            Row(
                configuration=label,
                figure=figure,
                comparison=comparison,
                old_half=stats.interval(old_values)[3],
                new_half=stats.interval(new_values)[3],
                note="; ".join(notes),
                said="both sustained the rate offered" if both_held else "",
            )
        )
    return out


def _labeller(a: Side, b: Side) -> Callable[[Key], str]:
    """A configuration's name: its own (a bench's parts), or the values of the axes that
    tell the configurations of both runs apart."""
    keys = [*a.samples, *b.samples]
    axes = [axis for axis, _ in keys[0]] if keys else []
    varying = [i for i, axis in enumerate(axes) if len({k[i][1] for k in keys}) > 1]
    if all(dict(k).get("rate", 0) > 0 for k in keys):  # open loop: events = rate × duration
        varying = [i for i in varying if axes[i] != "events"]

    def label(key: Key) -> str:
        if key in b.names or key in a.names:
            return b.names.get(key) or a.names[key]
        shown = [f"{key[i][0]} = {md.value(key[i][1])}" for i in varying]
        return ", ".join(shown) or "the one configuration"

    return label


def _apart(a: Side, b: Side) -> str:
    """``: OLD has batch_size = 100, NEW batch_size = 200`` — the axes whose values the two
    runs share none of."""
    if a.kind != "experiment":
        return ""
    old, new = ({x: {dict(k)[x] for k in s.samples} for x in params.FIELDS} for s in (a, b))
    apart = [axis for axis in params.FIELDS if not old[axis] & new[axis]][:4]

    def values(side: dict[str, set[Any]]) -> str:
        return ", ".join(f"{x} = {md.values(sorted(side[x], key=str))}" for x in apart)

    return f": OLD has {values(old)}; NEW {values(new)}" if apart else ""


def _warnings(a: Side, b: Side) -> list[str]:
    """What makes the comparison less than an A/B of one change on one machine."""
    out = []
    if a.facts.get("experiment") != b.facts.get("experiment"):
        out.append(
            f"OLD is experiment {a.facts.get('experiment')!r} and NEW "
            f"{b.facts.get('experiment')!r}: only the configurations both ran are compared"
        )
    if a.facts.get("quick") != b.facts.get("quick"):
        quick = "OLD" if a.facts.get("quick") else "NEW"
        out.append(f"only {quick} ran with --quick: its trials were shorter")
    (h1, c1), (h2, c2) = ((s.facts.get("host"), s.facts.get("cpu_count")) for s in (a, b))
    if h1 and h2 and (h1, c1) != (h2, c2):
        out.append(f"the runs were made on other machines: {h1}, {c1} cores; {h2}, {c2} cores")
    configs = a.facts.get("config"), b.facts.get("config")
    if isinstance(configs[0], dict) and isinstance(configs[1], dict):
        differ = [
            f"{k} {md.value(configs[0].get(k))} → {md.value(configs[1].get(k))}"
            for k in dict.fromkeys([*configs[0], *configs[1]])
            if k != "repeat" and configs[0].get(k) != configs[1].get(k)
        ]
        if differ:
            out.append(f"the runs' configurations differ: {', '.join(differ)}")
    return out


# -- what it says -------------------------------------------------------------------------

HEADER = ("configuration", "figure", "runs", "OLD", "NEW", "NEW/OLD", "95% interval", "p")


def times(ratio: float) -> str:
    """A ratio as ``1.20×``; ``–`` when there is none."""
    if math.isnan(ratio):
        return "–"
    return f"{ratio:.3g}×" if ratio < 0.1 else f"{ratio:,.2f}×"


def cells(row: Row) -> list[str]:
    """A row's cells under :data:`HEADER`, then its verdict (and note, if any)."""
    c, d = row.comparison, row.figure.decimals
    interval = "–" if math.isnan(c.ratio_low) else f"{times(c.ratio_low)}–{times(c.ratio_high)}"
    p = "–" if math.isnan(c.p_value) else ("< 0.001" if c.p_value < 0.001 else f"{c.p_value:.3f}")
    return [
        row.configuration,
        row.figure.label,
        f"{c.n_baseline} · {c.n_other}",
        md.cell(c.baseline_mean, row.old_half, c.n_baseline, d),
        md.cell(c.other_mean, row.new_half, c.n_other, d),
        times(c.ratio),
        interval,
        p,
        row.verdict,
    ]


def tally(result: AB) -> str:
    """``NEW against OLD: 2 faster, 1 lower, 3 no difference beyond the noise, 2 without
    an interval.``"""
    counts: dict[str, int] = {}
    for row in result.rows:
        verdict = row.verdict if row.judged or row.said else "without an interval"
        counts[verdict] = counts.get(verdict, 0) + 1
    order = ["faster", "slower", "lower", "higher", "no difference beyond the noise"]
    ranked = sorted(counts, key=lambda v: order.index(v) if v in order else len(order))
    return "NEW against OLD: " + ", ".join(f"{counts[v]} {v}" for v in ranked) + "."


EXPLAINED = (
    "Means over each configuration's runs (± their 95% interval); NEW/OLD is the ratio "
    "of the means with its 95% interval, p Welch's t-test of the difference. A difference "
    "beats the noise when p < 0.05 and the interval leaves out 1."
)


def markdown(result: AB) -> str:
    """The comparison as markdown: what was compared, the table, what only one run had."""
    lines = [f"- OLD: `{result.old.path}`: {result.old.about}"]
    lines += [f"- NEW: `{result.new.path}`: {result.new.about}", ""]
    lines += [f"**Warning:** {w}" + "\n" for w in result.warnings]
    notes = any(row.note for row in result.rows)
    header = [*HEADER, "verdict", *(["note"] if notes else [])]
    rows = [[*cells(r), *([r.note or "–"] if notes else [])] for r in result.rows]
    lines += [md.table(rows, header), "", EXPLAINED, ""]
    lines += only(result, "`")
    lines.append(tally(result))
    return "\n".join(lines) + "\n"


def only(result: AB, quote: str = "") -> list[str]:
    """``Only in OLD: …`` and ``Only in NEW: …``, each with a blank line after it."""
    out = []
    for side, names in (("OLD", result.only_old), ("NEW", result.only_new)):
        if names:
            out += [f"Only in {side}: " + "; ".join(f"{quote}{n}{quote}" for n in names) + ".", ""]
    return out


def improved(row: Row) -> bool | None:
    """Whether NEW is better (``True``), worse (``False``) or neither beyond the noise."""
    if not row.judged or not row.comparison.verdict:
        return None
    return row.verdict in ("faster", "lower")
