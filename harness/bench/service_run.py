"""Running the service bench: the steps, k6 against each target in turn, the checks.

For each target, (s0) the bare endpoint and then (s1) ``harness serve``
(:mod:`harness.bench.service_targets`): start it; run the warm-up, the seed scenario and
the open-loop ladder, one k6 run at a time, each followed by the check that the target
kept exactly what k6 saw accepted; stop it. A target that misses a rate of the ladder
skips the rates above it (unless ``all_rates``). The run's schema and keys are removed
at the end, however it ends.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any, Protocol

import psutil

from harness.bench import k6
from harness.bench.service import (
    OPEN_LOOP,
    SEED,
    TARGETS,
    WARMUP,
    Measurement,
    ServiceBenchConfig,
    held,
    shortfalls,
)
from harness.bench.service_targets import Check, Names, Target, check_for, clean_up, started
from harness.infra.config import Settings

CORES = psutil.cpu_count() or 1
#: on top of a scenario's length: k6's start, and the 30 s its executors give
#: iterations still running at the end to finish
K6_SLACK_S = 90.0


class Reporter(Protocol):
    """What the run tells its user while it goes (the CLI's live progress)."""

    def say(self, text: str) -> None:
        """A line that stays."""

    def k6_started(self, label: str, expected_s: float) -> None:
        """A k6 run of about ``expected_s`` seconds begins."""

    def k6_tick(self, elapsed_s: float, requests: int | None) -> None:
        """k6 has run ``elapsed_s`` seconds and made ``requests`` (``None``: unknown)."""

    def k6_finished(self) -> None:
        """The k6 run ended."""

    def waiting(self, text: str) -> None:
        """A passing state (starting, draining); an empty text ends it."""


class Silent:
    """A :class:`Reporter` that tells nothing."""

    def say(self, text: str) -> None:
        pass

    def k6_started(self, label: str, expected_s: float) -> None:
        pass

    def k6_tick(self, elapsed_s: float, requests: int | None) -> None:
        pass

    def k6_finished(self) -> None:
        pass

    def waiting(self, text: str) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class Step:
    """One k6 run of a target's sequence."""

    scenario: str
    script: str
    env: Mapping[str, str]
    expected_s: float
    rate: int | None = None

    @property
    def label(self) -> str:
        if self.scenario == SEED:
            return "seed.js"
        return f"{'warm-up' if self.scenario == WARMUP else 'open loop'} {self.rate:,}/s"

    @property
    def name(self) -> str:
        """For file names: ``seed``, ``warm-up``, ``open-loop-500``."""
        return (
            self.scenario
            if self.rate is None or self.scenario == WARMUP
            else f"{self.scenario}-{self.rate}"
        )


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def warmup_step(cfg: ServiceBenchConfig) -> Step | None:
    if cfg.warmup_s <= 0:
        return None
    env = {"RATE": str(cfg.rates[0]), "DURATION": _ms(cfg.warmup_s)}
    return Step(WARMUP, "open_loop.js", env, cfg.warmup_s, cfg.rates[0])


def seed_step(cfg: ServiceBenchConfig) -> Step:
    return Step(SEED, "seed.js", {"SCALE": f"{cfg.scale:g}"}, cfg.seed_s)


def ladder_steps(cfg: ServiceBenchConfig) -> list[Step]:
    return [
        Step(
            OPEN_LOOP, "open_loop.js", {"RATE": str(r), "DURATION": _ms(cfg.step_s)}, cfg.step_s, r
        )
        for r in cfg.rates
    ]


# -- the run -----------------------------------------------------------------------------------


def _idle_s() -> float:
    """The machine's idle CPU seconds so far, all cores (steal counted as idle: the host
    took it, not us).

    Busy time is the capacity less this, not /proc/stat's user + system: those are
    sampled at each timer tick and, in this VM, missed most of a light load's short
    bursts (a 250/s run: 0.6 s counted against about 5.8 s of its processes' own CPU time),
    while the idle time is kept exactly."""
    t = psutil.cpu_times()
    return float(t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0))


def _measure(
    target: Target,
    check: Check,
    step: Step,
    executable: str,
    run_id: str,
    folder: Path,
    reporter: Reporter,
) -> Measurement:
    check.before()
    env = {"BASE_URL": target.url, "RUN_ID": f"{run_id}-{target.key}-{step.name}", **step.env}
    reporter.k6_started(f"{target.key} {TARGETS[target.key]}: {step.label}", step.expected_s)
    cpu0, idle0, wall0 = target.cpu_s(), _idle_s(), time.monotonic()
    try:
        finished = k6.run(
            executable,
            k6.script(step.script),
            env,
            folder / f"{target.key}-{step.name}.json",
            folder / f"{target.key}-{step.name}.log",
            timeout_s=step.expected_s + K6_SLACK_S,
            tick=reporter.k6_tick,
        )
    finally:
        reporter.k6_finished()
    wall, idle, cpu = time.monotonic() - wall0, _idle_s() - idle0, target.cpu_s() - cpu0
    busy = max(0.0, CORES * wall - idle)
    target.alive()
    verified, detail = check.after(finished.summary, reporter.waiting)
    return Measurement(
        target=target.key,
        scenario=step.scenario,
        rate=step.rate,
        summary=finished.summary,
        verified=verified,
        detail=detail,
        k6_cpu_s=finished.cpu_s,
        target_cpu_s=cpu,
        machine_busy_s=busy,
        wall_s=wall,
    )


def _line(m: Measurement, cfg: ServiceBenchConfig) -> str:
    s = m.summary
    text = (
        f"{m.target} {m.scenario}{'' if m.rate is None else f' {m.rate:,}/s'}: "
        f"{s.requests_per_s:,.0f} requests/s, p50 {s.p50_ms:,.1f} ms, p95 {s.p95_ms:,.1f} ms, "
        f"p99 {s.p99_ms:,.1f} ms, {100 * s.error_rate:.2f}% failed"
    )
    if m.scenario != SEED:
        text += f", {100 * s.dropped_share:.2f}% dropped"
    if m.scenario == OPEN_LOOP:
        text += ", held" if held(m, cfg) else f", not held ({'; '.join(shortfalls(m, cfg))})"
    return text + ("" if m.verified else f" [red]UNVERIFIED[/red]: {m.detail}")


def measure(
    settings: Settings,
    cfg: ServiceBenchConfig,
    folder: Path,
    *,
    run_id: str,
    names: Names,
    targets: dict[str, dict[str, Any]],
    reporter: Reporter | None = None,
) -> Generator[Measurement, None, None]:
    """Each measurement as it is made: s0's warm-up, seed scenario and ladder, then s1's.
    ``targets`` receives what each target was (command, URL, schema, prefix). Close the
    iterator (``contextlib.closing``) to stop early: the targets stop, the data goes."""
    reporter = reporter or Silent()
    executable = k6.binary()
    for name in ("seed.js", "open_loop.js"):
        k6.script(name)
    try:
        for key in TARGETS:
            reporter.waiting(f"starting {key} ({TARGETS[key]})…")
            with started(key, settings, names, cfg, folder) as target:
                reporter.waiting("")
                targets[key] = target.describe()
                reporter.say(f"[bold]{key}[/bold] {TARGETS[key]} at {target.url}")
                check = check_for(target, settings, cfg)
                try:
                    steps = [s for s in (warmup_step(cfg), seed_step(cfg)) if s is not None]
                    for step in [*steps, *ladder_steps(cfg)]:
                        m = _measure(target, check, step, executable, run_id, folder, reporter)
                        reporter.say(_line(m, cfg))
                        yield m
                        if m.scenario == OPEN_LOOP and not held(m, cfg) and not cfg.all_rates:
                            higher = [r for r in cfg.rates if r > (m.rate or 0)]
                            if higher:
                                reporter.say(
                                    f"{key} did not hold {m.rate:,}/s: its higher rates "
                                    f"({', '.join(f'{r:,}' for r in higher)}) are skipped"
                                )
                            break
                finally:
                    check.close()
    finally:
        reporter.waiting("")
        clean_up(settings, names)
