"""Synthetic run folders for the analysis tests, written by the harness's own ``RunWriter``
so their format cannot drift from a real run's.

The numbers follow simple rules the tests can recompute: throughput grows with consumers
and falls with stricter isolation, the second repetition is 10% faster, latency falls with
the batch size, and only the stricter levels retry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.experiment import Experiment, Trial, TrialParams
from harness.results import RunWriter, TrialResult, resolved_trials

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
    """Samples like the runner's, every ``every_s`` seconds until the trial drained."""
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
) -> Path:
    """Write ``root/synthetic/<run_id>`` and return its path. ``outcome(trial)`` returns
    overrides of that trial's result (``violations``, ``lost``, ``error``…)."""
    exp = Experiment(
        name="synthetic",
        description="A synthetic sweep for the analysis tests",
        seed=42,
        repeat=repeat,
        params={"events": EVENTS, **(params or {})},
        sweep=sweep or {},
    )
    trials = list(exp.trials())
    writer = RunWriter(
        root / "synthetic" / run_id,
        {
            "experiment": exp.to_dict(),
            "resolved_trials": resolved_trials(trials),
            "servers": {"postgresql": "15.20", "redis": "7.0.15"},
            "environment": {
                "python": "3.11.7",
                "platform": "Linux-test",
                "host": "testhost",
                "cpu_count": 2,
                "git_commit": "0123456789abcdef",
                "packages": {"ray": "2.60.0", "psycopg": "3.3.9", "redis": "8.1.0"},
            },
            "argv": ["harness", "run", "synthetic"],
        },
    )
    for trial in trials:
        overrides = outcome(trial) if outcome else {}
        writer.add(result(trial, **overrides), series(trial) if timeseries else [])
    writer.finish(status="complete", trials_run=len(trials))
    return writer.directory
