"""Synthetic run folders for the analysis tests, written by the harness's own ``RunWriter``
so their format cannot drift from a real run's.

The numbers follow simple rules the tests can recompute: throughput grows with consumers
and falls with stricter isolation, the second repetition is 10% faster, latency falls with
the batch size, and only the stricter levels retry.

Open-loop trials (``rate`` > 0) follow their own rules (:func:`steady_state`): a
configuration sustains any rate up to its burst throughput (:func:`ceiling`) and none
above it. :func:`make_capacity_run` writes a capacity search's run, ``capacity.csv``
included.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.model.steady import SteadyState, Window
from harness.trials import capacity, roles
from harness.trials.experiment import Experiment, Trial, TrialParams
from harness.trials.meta import Meta
from harness.trials.results import RunWriter, TrialResult, resolved_trials

#: throughput divisor per isolation level
ISOLATION_COST = {"read_committed": 1.0, "repeatable_read": 2.0, "serializable": 4.0}
#: retries per consumer per trial
RETRIES = {"read_committed": 0, "repeatable_read": 5, "serializable": 10}
EVENTS = 1000


def throughput(p: TrialParams, repeat: int) -> float:
    return 1000.0 * p.consumers / ISOLATION_COST[p.isolation] * (1 + 0.1 * repeat)


def p50_ms(p: TrialParams) -> float:
    return 1000.0 / p.batch_size**0.5 * ISOLATION_COST[p.isolation]


def result(trial: Trial, **overrides: Any) -> TrialResult:
    if trial.params.rate > 0:
        return open_loop_result(trial, **overrides)
    p = trial.params
    duration = EVENTS / throughput(p, trial.repeat)
    fields: dict[str, Any] = {
        "trial": trial,
        "events_published": EVENTS,
        "expected_unique": 700,
        "received": EVENTS,
        "unique_processed": 700,
        "duplicate_dropped": 300,
        "db_rows": 700,
        "lost": 0,
        "unexpected": 0,
        "double_applied": 0,
        "redelivered": 0,
        "rejected": 0,
        "elapsed_s": duration,
        "reset_s": 0.01,
        "latency_p50_ms": p50_ms(p),
        "latency_p95_ms": 1.8 * p50_ms(p),
        "latency_p99_ms": 2.0 * p50_ms(p),
        "latency_max_ms": 2.5 * p50_ms(p),
        "retries": RETRIES[p.isolation] * p.consumers,
        "serialization_failures": RETRIES[p.isolation] * p.consumers,
        "deadlocks": 0,
        "connection_retries": 0,
    }
    return TrialResult(**{**fields, **overrides})


def series(trial: Trial, every_s: float = 0.1) -> list[dict[str, Any]]:
    """Samples like the runner's, every ``every_s`` seconds until the trial drained (an
    open-loop trial's: a row per second, :func:`open_loop_series`)."""
    if trial.params.rate > 0:
        return open_loop_series(trial)
    rate = throughput(trial.params, trial.repeat)
    samples = []
    for k in range(1, int(EVENTS / rate / every_s + 1e-9) + 1):
        t = round(k * every_s, 6)
        if t >= EVENTS / rate:
            break
        committed = int(rate * t)
        samples.append(
            {
                "elapsed_s": t,
                "published": EVENTS,
                "committed": committed,
                "retries": 0,
                "consumers_alive": trial.params.consumers,
                "backlog": EVENTS - committed,
            }
        )
    return samples


def make_run(
    root: Path,
    *,
    sweep: Mapping[str, Sequence[Any]] | None = None,
    params: Mapping[str, Any] | None = None,
    repeat: int = 1,
    timeseries: bool = True,
    outcome: Callable[[Trial], dict[str, Any]] | None = None,
    run_id: str = "r1",
    reference: Mapping[str, Any] | None = None,
    cases: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``root/synthetic/<run_id>`` and return its path. ``outcome(trial)`` returns
    overrides of that trial's result (``violations``, ``lost``, ``error``…); a ``rate`` in
    ``params`` or ``sweep`` makes open-loop trials; ``reference`` is the experiment's
    ``[reference]``."""
    exp = Experiment(
        name="synthetic",
        description="A synthetic sweep for the analysis tests",
        seed=42,
        repeat=repeat,
        params={"events": EVENTS, **(params or {})},
        sweep=sweep or {},
        cases=cases,
        reference=reference or {},
    )
    trials = list(exp.trials())
    writer = RunWriter(root / "synthetic" / run_id, _meta(exp, trials))
    per_second = any(t.params.rate > 0 for t in trials)  # the format of results 2 on
    for trial in trials:
        overrides = outcome(trial) if outcome else {}
        samples = per_second_series(trial) if per_second else series(trial)
        writer.add(result(trial, **overrides), samples if timeseries else [])
    writer.finish(status="complete", trials_run=len(trials))
    return writer.directory


def _meta(exp: Experiment, trials: list[Trial], **fields: Any) -> Meta:
    return Meta(
        experiment=exp.to_dict(),
        resolved_trials=resolved_trials(trials),
        servers={"postgresql": "15.20", "redis": "7.0.15"},
        environment={
            "python": "3.11.7",
            "platform": "Linux-test",
            "host": "testhost",
            "cpu_count": 2,
            "git_commit": "0123456789abcdef",
            "packages": {"ray": "2.60.0", "psycopg": "3.3.9", "redis": "8.1.0"},
        },
        argv=["harness", "run", "synthetic"],
        **fields,
    )


# -- open-loop trials ---------------------------------------------------------------------

#: the seed report's figures, as experiments/seed.toml gives them
SEED_REFERENCE = {
    "label": "the seed report",
    "source": "its latency and throughput analysis",
    "steady_eps": 113.4,
    "steady_p50_ms": 250,
    "steady_p95_ms": 450,
    "steady_p99_ms": 650,
}


def ceiling(p: TrialParams) -> float:
    """The highest rate a configuration sustains: its burst throughput (first repetition)."""
    return throughput(p, 0)


def steady_p50_ms(p: TrialParams, repeat: int) -> float:
    """p50 of the window: ``10 ms × (1 + rate / ceiling) × isolation cost / consumers``,
    10% more per repetition; p95, p99 and p99.9 are 2×, 4× and 5× it, and p99 40× it
    above the ceiling."""
    load = p.rate / ceiling(p)
    return 10.0 * (1 + load) * ISOLATION_COST[p.isolation] / p.consumers * (1 + 0.1 * repeat)


def steady_state(p: TrialParams, repeat: int) -> SteadyState:
    """The window: committed ``min(rate, ceiling)``, 1% less per repetition; above the
    ceiling the backlog grows by the difference and the window is not sustained."""
    top = ceiling(p)
    p50 = steady_p50_ms(p, repeat)
    held = p.rate <= top
    growth = max(0.0, p.rate - top)
    return SteadyState(
        window_s=float(Window.of(p.warmup_s, p.duration_s).seconds),
        offered_eps=p.rate,
        achieved_publish_eps=p.rate,
        steady_eps=min(p.rate, top) * (1 - 0.01 * repeat),
        steady_p50_ms=p50,
        steady_p95_ms=2 * p50,
        steady_p99_ms=(4 if held else 40) * p50,
        steady_p999_ms=(5 if held else 50) * p50,
        steady_max_ms=(6 if held else 60) * p50,
        backlog_growth_eps=growth,
        publish_lag_max_ms=1.0,
        rate_held=True,
        sustained=held,
        not_sustained=() if held else (f"backlog grew {growth:,.0f} events/s",),
    )


def open_loop_result(trial: Trial, **overrides: Any) -> TrialResult:
    p = trial.params
    unique = round(0.7 * p.events)
    st = steady_state(p, trial.repeat)
    fields: dict[str, Any] = {
        "events_published": p.events,
        "expected_unique": unique,
        "received": p.events,
        "unique_processed": unique,
        "duplicate_dropped": p.events - unique,
        "db_rows": unique,
        "elapsed_s": p.duration_s + 0.5,
        "latency_p50_ms": st.steady_p50_ms,
        "latency_p95_ms": st.steady_p95_ms,
        "latency_p99_ms": st.steady_p99_ms,
        "latency_max_ms": st.steady_max_ms,
        "steady": st,
    }
    # the burst's fields, but these and the trial itself
    burst = Trial(trial.index, trial.repeat, trial.seed, dataclasses.replace(p, rate=0.0))
    return dataclasses.replace(result(burst, **{**fields, **overrides}), trial=trial)


def per_second_series(trial: Trial) -> list[dict[str, Any]]:
    """A row per second as the actors count them (results format 2): an open-loop
    trial's (:func:`open_loop_series`), or a burst's, its p99 the whole trial's."""
    if trial.params.rate > 0:
        return open_loop_series(trial)
    rate, p99 = throughput(trial.params, trial.repeat), 2.0 * p50_ms(trial.params)
    return [
        {
            "second": second,
            "elapsed_s": float(second + 1),
            "published": EVENTS,
            "committed": min(EVENTS, round(rate * (second + 1))),
            "backlog": EVENTS - min(EVENTS, round(rate * (second + 1))),
            "latency_p99_ms": p99,
            "phase": "burst",
            "retries": 0,
            "consumers_alive": trial.params.consumers,
        }
        for second in range(math.ceil(EVENTS / rate))
    ]


def open_loop_series(trial: Trial) -> list[dict[str, Any]]:
    """A row per second like the actors': cumulative counts, the p99 of the events due in
    that second (the window's p99), its phase, then one drain second."""
    p = trial.params
    window = Window.of(p.warmup_s, p.duration_s)
    st = steady_state(p, trial.repeat)
    rows = []
    for second in range(math.ceil(p.duration_s) + 1):
        published = round(min(p.rate * (second + 1), p.events))
        committed = round(min(published, st.steady_eps * (second + 1)))
        phase = window.phase(second)
        if phase == "drain":
            committed = published
        rows.append(
            {
                "second": second,
                "elapsed_s": float(second + 1),
                "published": published,
                "committed": committed,
                "backlog": published - committed,
                "latency_p99_ms": math.nan if phase == "drain" else st.steady_p99_ms,
                "phase": phase,
                "retries": 0,
                "consumers_alive": p.consumers,
            }
        )
    return rows


def make_capacity_run(
    root: Path,
    *,
    consumers: Sequence[int] = (1, 2, 4),
    none_sustained: Sequence[int] = (),
    repeat: int = 1,
    run_id: str = "c1",
) -> Path:
    """A capacity search's run, written as ``harness capacity`` writes one: per number of
    consumers a burst probe, a failed trial at 1.2× the :func:`ceiling`, and trials at 25,
    50, 75 and 100% of it (the capacity), ``repeat`` times each (the repetitions' ``repeat``
    makes their figures differ); with ``consumers`` in ``none_sustained``, a single failed
    trial at twice the ceiling and no capacity."""
    params = {"duration_s": 5, "warmup_s": 1, "slo_p99_ms": 1000.0}
    exp = Experiment(
        name="synthetic",
        description="A synthetic capacity search",
        seed=42,
        params=params,
        sweep={"consumers": list(consumers)},
    )
    configs = capacity.configurations(exp)
    trials: list[Trial] = []
    points: list[capacity.Point] = []

    def run(p: TrialParams, rate: float, r: int = 0, role: roles.Role = roles.STEP) -> TrialResult:
        trial = Trial(len(trials), r, exp.seed, dataclasses.replace(p, rate=rate), role)
        trials.append(trial)
        return result(trial)

    for number, p in enumerate(configs):
        probe = run(p, 0.0, role=roles.PROBE)
        top = ceiling(p)
        if p.consumers in none_sustained:
            failed = run(p, capacity.round_rate(2 * top))
            points.append(capacity.Point(number, math.nan, math.nan, probe.throughput_eps, failed))
            continue
        run(p, capacity.round_rate(1.2 * top))
        for fraction in capacity.FRACTIONS:
            for r in range(repeat):
                at = run(p, capacity.round_rate(fraction * top), r, roles.FRACTION)
                points.append(capacity.Point(number, fraction, top, probe.throughput_eps, at, r))
    meta = _meta(exp, trials, mode="capacity", search={"tolerance": 0.1, "step": 0.6})
    writer = RunWriter(root / "synthetic" / run_id, meta)
    for trial in trials:
        writer.add(result(trial), per_second_series(trial))
    writer.finish(status="complete", trials_run=len(trials))
    rows = [point.row(["consumers"]) for point in points]
    with (writer.directory / "capacity.csv").open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    return writer.directory
