"""The service bench's configuration, its measurements, and the arithmetic on them.

The same k6 load against two targets in one run (:mod:`harness.bench.service_run` runs
it): (s0) a bare endpoint that only parses each POST and XADDs it
(:mod:`harness.bench.bare_endpoint`), the practical ceiling of one uvicorn worker with k6 on
the same machine; and (s1) ``harness serve``, the whole service. Each gets the seed's
closed-loop scenario (``harness/bench/load/seed.js``: ramp to 50 VUs, hold 100, ramp down) and
an open-loop ladder of rates (``harness/bench/load/open_loop.js``). A rate is *held* when its
p99 stays within the objective with under ``max_lost`` of the iterations dropped and
under ``max_lost`` of the requests failed; a target's highest rate is the last one
held on the way up the ladder, before the first one not held.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.bench import k6

#: the targets, in the order they run and are shown
TARGETS = {"s0": "bare endpoint", "s1": "harness serve"}
#: the scenarios: a short open-loop run before the rest (thrown away), the seed's
#: closed-loop stages, and one open-loop step per rate of the ladder
WARMUP, SEED, OPEN_LOOP = "warm-up", "seed", "open-loop"
#: the seed scenario's length at scale 1 (30 s ramp, 60 s at 100 VUs, 30 s down)
SEED_SECONDS = 120.0
#: the results file's own format version
FORMAT = 1
#: what the seed report measured with the same scenario (issue #15): about 500
#: requests/s with p95 under 50 ms
SEED_REPORT_RPS = 500
SEED_REPORT_P95_MS = 50


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceBenchConfig:
    """What a service bench runs; every field has a flag of the same name."""

    #: multiplies the seed scenario's stages (1: two minutes a target)
    scale: float = 1.0
    #: the open-loop ladder, requests/s, climbed from the lowest
    rates: tuple[int, ...] = (250, 500, 1000, 2000, 3000, 4000)
    #: seconds of load at each rate of the ladder
    step_s: float = 20.0
    #: seconds of open-loop load at the lowest rate before anything is measured; 0: none
    warmup_s: float = 5.0
    #: the latency objective a rate must meet: p99 of k6's request durations, ms
    slo_p99_ms: float = 25.0
    #: a rate is not held once this share of its iterations was dropped, or of its
    #: requests failed (k6 drops an iteration when no VU is free at its intended start:
    #: k6's latency excludes that wait, so the share dropped is where an overload shows)
    max_lost: float = 0.01
    #: climb the whole ladder even past a rate not held (else a target stops there)
    all_rates: bool = False
    #: consumer processes of ``harness serve`` (its default)
    consumers: int = 2
    #: HTTP worker processes of ``harness serve`` (its default)
    workers: int = 1
    #: seconds to wait for ``harness serve`` to store what k6 saw accepted
    drain_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if not self.rates:
            raise ValueError("rates: give at least one rate")
        if any(r < 1 for r in self.rates):
            raise ValueError(f"rates must be ≥ 1 request/s, got {list(self.rates)}")
        if list(self.rates) != sorted(set(self.rates)):
            raise ValueError(f"rates must rise, each once, got {list(self.rates)}")
        if not self.step_s >= 1:
            raise ValueError(f"step seconds must be ≥ 1, got {self.step_s}")
        if not self.warmup_s >= 0:
            raise ValueError(f"warm-up seconds must be ≥ 0, got {self.warmup_s}")
        if not self.slo_p99_ms > 0:
            raise ValueError(f"the p99 objective must be > 0 ms, got {self.slo_p99_ms}")
        if not 0 < self.max_lost < 1:
            raise ValueError(f"max lost share must be in (0, 1), got {self.max_lost}")
        if self.consumers < 1:
            raise ValueError(f"consumers must be ≥ 1 (or nothing is stored), got {self.consumers}")
        if self.workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {self.workers}")
        if not self.drain_timeout_s > 0:
            raise ValueError(f"drain timeout must be > 0 s, got {self.drain_timeout_s}")

    def quick(self) -> ServiceBenchConfig:
        """Seconds, not minutes: the seed's stages at 5% (6 s), three 3-second steps, and
        30 s at most for s1 to store what it accepted."""
        return dataclasses.replace(
            self, scale=0.05, rates=(250, 500, 1000), step_s=3.0, warmup_s=1.0,
            drain_timeout_s=min(self.drain_timeout_s, 30.0),
        )  # fmt: skip

    @property
    def seed_s(self) -> float:
        return SEED_SECONDS * self.scale


def parse_rates(text: str) -> tuple[int, ...]:
    """``"250, 500,1000"`` → ``(250, 500, 1000)``, sorted; ``ValueError`` saying what is wrong."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("give rates as a comma-separated list, e.g. 250,500,1000")
    rates = []
    for part in parts:
        try:
            rate = int(part.replace("_", ""))
        except ValueError:
            raise ValueError(f"{part!r} is not a whole number of requests/s") from None
        if rate < 1:
            raise ValueError(f"rates must be ≥ 1 request/s, got {rate}")
        rates.append(rate)
    return tuple(sorted(set(rates)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measurement:
    """One k6 run against one target, and whether the target stored what k6 saw accepted."""

    target: str
    scenario: str
    #: the offered rate of an open-loop run (requests/s); ``None`` for the seed scenario
    rate: int | None
    summary: k6.Summary
    verified: bool
    #: what the check found (counts), or why it failed
    detail: str = ""
    #: CPU seconds over the run: k6's own, the target's process, the whole machine's busy
    #: time; and the run's wall clock seconds (so that CPU / wall is cores used)
    k6_cpu_s: float = 0.0
    target_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}")
        if self.scenario not in (WARMUP, SEED, OPEN_LOOP):
            raise ValueError(f"unknown scenario {self.scenario!r}")
        if (self.rate is None) != (self.scenario == SEED):
            raise ValueError("an open-loop run has a rate, the seed scenario none")

    def cores(self) -> dict[str, float]:
        """CPU used over the run in cores: k6, the target's process, the machine."""
        wall = self.wall_s or float("nan")
        return {
            "k6": self.k6_cpu_s / wall,
            "target": self.target_cpu_s / wall,
            "machine": self.machine_busy_s / wall,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
            "summary": self.summary.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        names = {f.name for f in dataclasses.fields(cls)} - {"summary"}
        summary = {
            f.name: data["summary"][f.name]
            for f in dataclasses.fields(k6.Summary)
            if f.name in data["summary"]
        }
        return cls(summary=k6.Summary(**summary), **{k: v for k, v in data.items() if k in names})


def shortfalls(m: Measurement, cfg: ServiceBenchConfig) -> list[str]:
    """Why an open-loop step was not held (``p99 31.2 ms > 25``, ``2.0% dropped``); empty
    when it was."""
    s = m.summary
    out = []
    if not s.p99_ms <= cfg.slo_p99_ms:
        out.append(f"p99 {s.p99_ms:,.1f} ms > {cfg.slo_p99_ms:g}")
    if s.dropped_share >= cfg.max_lost:
        out.append(f"{100 * s.dropped_share:.1f}% dropped")
    if s.error_rate >= cfg.max_lost:
        out.append(f"{100 * s.error_rate:.1f}% failed")
    if s.requests == 0:
        out.append("no requests")
    return out


def held(m: Measurement, cfg: ServiceBenchConfig) -> bool:
    return not shortfalls(m, cfg)


def ladder(measurements: Iterable[Measurement], target: str) -> list[Measurement]:
    """A target's open-loop steps, lowest rate first."""
    steps = [m for m in measurements if m.target == target and m.scenario == OPEN_LOOP]
    return sorted(steps, key=lambda m: m.rate or 0)


def highest_held(
    measurements: Iterable[Measurement], target: str, cfg: ServiceBenchConfig
) -> int | None:
    """The highest rate the target held with every lower rate of its ladder held too;
    ``None`` when it did not hold the lowest. A rate held above one not held is noise or
    luck, not capacity, and is not counted."""
    best = None
    for m in ladder(measurements, target):
        if not held(m, cfg):
            break
        best = m.rate
    return best


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; ``None`` when either is missing or the denominator 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclasses.dataclass(frozen=True)
class Figures:
    """The run's headline: the seed scenario's requests/s of each target and s1/s0; the
    highest rate each held and s1/s0; and whether that rate was the top of the ladder
    (then the target may hold more: the figure is a lower bound)."""

    seed_rps: Mapping[str, float | None]
    seed_ratio: float | None
    highest: Mapping[str, int | None]
    rate_ratio: float | None
    at_top: Mapping[str, bool]

    @classmethod
    def of(cls, measurements: Sequence[Measurement], cfg: ServiceBenchConfig) -> Figures:
        seed = {
            t: next(
                (m.summary.requests_per_s for m in measurements
                 if m.target == t and m.scenario == SEED),
                None,
            )
            for t in TARGETS
        }  # fmt: skip
        highest = {t: highest_held(measurements, t, cfg) for t in TARGETS}
        return cls(
            seed_rps=seed,
            seed_ratio=ratio(seed["s1"], seed["s0"]),
            highest=highest,
            rate_ratio=ratio(highest["s1"], highest["s0"]),
            at_top={t: highest[t] is not None and highest[t] == max(cfg.rates) for t in TARGETS},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed_requests_per_s": dict(self.seed_rps),
            "seed_ratio_s1_s0": self.seed_ratio,
            "highest_rate_held": dict(self.highest),
            "highest_rate_ratio_s1_s0": self.rate_ratio,
            "highest_rate_is_top_of_ladder": dict(self.at_top),
        }


def config_of(data: Mapping[str, Any]) -> ServiceBenchConfig:
    """The configuration of a parsed ``service-bench.json``."""
    names = {f.name for f in dataclasses.fields(ServiceBenchConfig)}
    values = {k: v for k, v in data["config"].items() if k in names}
    if "rates" in values:
        values["rates"] = tuple(values["rates"])
    return ServiceBenchConfig(**values)


def measurements_of(data: Mapping[str, Any]) -> list[Measurement]:
    """The measurements of a parsed ``service-bench.json``."""
    return [Measurement.from_dict(m) for m in data["measurements"]]
