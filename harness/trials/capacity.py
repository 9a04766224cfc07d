"""Capacity: the highest open-loop rate each configuration sustains, and its latency below it.

For every configuration of a sweep (the ``rate`` axis aside):

1. a **probe**: a burst of the experiment's events, as fast as the publishers can send
   them; its throughput is where the search starts;
2. a **search**: open-loop trials at one rate each. The first is the probe's
   throughput; while none is sustained (:mod:`harness.model.steady`) the rate steps down, while
   none has failed it steps up, then it bisects between the highest sustained and the
   lowest failed rate until they are within ``tolerance`` of each other. The capacity is
   the highest sustained rate;
3. the **fractions**: trials at 25%, 50% and 75% of the capacity, for the latency a user
   sees below saturation (100% is the search's own trial); with ``repeat`` > 1, each
   fraction runs that many times back to back, and their spread shows the noise.

Every trial is an ordinary verified trial, recorded in ``trials.csv`` with its role
(``capacity probe``, ``capacity step``, ``capacity fraction``: :mod:`harness.trials.roles`;
a step whose rate is a fraction's is that fraction's first run); ``capacity.csv``
holds one row per configuration and fraction. :class:`Search` decides the next rate from
what was tried, so the search itself is tested without running anything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from harness.trials import roles
from harness.trials.experiment import Experiment
from harness.trials.params import ExperimentError, Trial, TrialParams
from harness.trials.results import TrialResult

LATENCIES = ("steady_p50_ms", "steady_p95_ms", "steady_p99_ms", "steady_p999_ms")
#: shares of the capacity whose latency is measured
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def round_rate(rate: float) -> float:
    """A rate rounded to 3 significant digits (12,345 → 12,300): readable, and close."""
    if rate <= 0:
        return 0.0
    digits = 3 - math.ceil(math.log10(rate))
    return float(round(rate, digits))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Search:
    """Where to probe next, given what was tried."""

    #: stop when the lowest failed rate is within this share above the highest sustained
    tolerance: float = 0.1
    #: factor to step down by while nothing is sustained, up by (its inverse) while
    #: nothing has failed
    step: float = 0.6
    #: open-loop trials at most, fractions not included
    max_trials: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if not 0 < self.step < 1:
            raise ValueError(f"step must be in (0, 1), got {self.step}")
        if self.max_trials < 1:
            raise ValueError(f"max_trials must be ≥ 1, got {self.max_trials}")

    def next_rate(self, start: float, tried: Sequence[tuple[float, bool]]) -> float | None:
        """The next rate to try (events/s), or ``None`` when the search is over.

        ``start``: the first rate (the probe's throughput); ``tried``: ``(rate,
        sustained)`` of every trial so far.
        """
        if not tried:
            return round_rate(start)
        if len(tried) >= self.max_trials:
            return None
        lo = max((r for r, ok in tried if ok), default=None)
        hi = min((r for r, ok in tried if not ok), default=None)
        if lo is None:
            assert hi is not None
            rate = hi * self.step
        elif hi is None:
            rate = lo / self.step
        elif hi <= lo * (1 + self.tolerance):
            return None
        else:
            rate = (lo + hi) / 2
        rate = round_rate(rate)
        if any(rate == r for r, _ in tried):
            return None  # rounding leaves nothing between them
        return rate

    @staticmethod
    def capacity(tried: Sequence[tuple[float, bool]]) -> float:
        """The highest sustained rate (NaN when none was)."""
        return max((r for r, ok in tried if ok), default=math.nan)


def configurations(exp: Experiment) -> list[TrialParams]:
    """The experiment's configurations, ``rate`` aside: one per combination of the other
    axes (repetitions are the search's own business)."""
    without = dataclasses.replace(
        exp,
        params={k: v for k, v in exp.params.items() if k != "rate"},
        sweep={k: v for k, v in exp.sweep.items() if k != "rate"},
        repeat=1,
    )
    return [t.params for t in without.trials()]


@dataclasses.dataclass(frozen=True)
class Point:
    """One row of ``capacity.csv``: a configuration at a share of its capacity."""

    config: int
    fraction: float
    capacity_eps: float
    probe_eps: float
    result: TrialResult
    #: which of the fraction's repetitions (0-based)
    repeat: int = 0

    def row(self, axes: Sequence[str]) -> dict[str, Any]:
        r, st = self.result, self.result.steady
        return {
            "config": self.config,
            **{a: getattr(r.trial.params, a) for a in axes},
            "fraction": self.fraction,
            "repeat": self.repeat,
            "capacity_eps": round(self.capacity_eps, 1),
            "probe_eps": round(self.probe_eps, 1),
            "trial": r.trial.index,
            "rate": r.trial.params.rate,
            "steady_eps": round(st.steady_eps, 1),
            **{k: round(getattr(st, k), 3) for k in LATENCIES},
            "sustained": st.sustained,
            "invariant_ok": r.invariant_ok,
        }


class CapacitySearch:
    """Runs the probe, the search and the fractions of every configuration.

    ``run_trial(trial)`` runs and records one trial and returns its result (the CLI
    passes the runner and the results writer); ``on_point`` is told of each row.
    """

    def __init__(
        self,
        exp: Experiment,
        run_trial: Callable[[Trial], TrialResult],
        *,
        search: Search | None = None,
        fractions: Sequence[float] = FRACTIONS,
        repeat: int = 1,
    ) -> None:
        if repeat < 1:
            raise ValueError(f"repeat must be ≥ 1, got {repeat}")
        self.exp = exp
        self.configs = configurations(exp)
        if not self.configs:
            raise ExperimentError(f"{exp.name} has no configuration to search")
        self.search = search or Search()
        self.fractions = tuple(fractions)
        self.repeat = repeat
        self._run_trial = run_trial
        self._index = 0

    def points(self) -> Iterator[Point]:
        for number, params in enumerate(self.configs):
            yield from self._configuration(number, params)

    def _trial(self, params: TrialParams, role: roles.Role, *, rate: float) -> TrialResult:
        trial = Trial(
            index=self._index,
            repeat=0,
            seed=self.exp.seed,
            params=dataclasses.replace(params, rate=rate),
            purpose=role,
        )
        self._index += 1
        return self._run_trial(trial)

    def _configuration(self, number: int, params: TrialParams) -> Iterator[Point]:
        probe = self._trial(params, roles.PROBE, rate=0.0)
        probe_eps = probe.throughput_eps if probe.error is None else math.nan
        if not probe_eps > 0:
            return  # the probe failed: its trial row says why
        tried: list[tuple[float, bool]] = []
        results: dict[float, TrialResult] = {}
        while (rate := self.search.next_rate(probe_eps, tried)) is not None:
            result = self._trial(params, roles.STEP, rate=rate)
            results[rate] = result
            tried.append((rate, bool(result.steady.sustained) and result.error is None))
        capacity = Search.capacity(tried)
        if math.isnan(capacity):  # not even the lowest rate tried was sustained
            yield Point(number, math.nan, capacity, probe_eps, results[min(results)])
            return
        for fraction in self.fractions:
            rate = round_rate(capacity * fraction)
            runs = [results[rate]] if rate in results else []
            while len(runs) < self.repeat:  # back to back: their spread is the noise
                runs.append(self._trial(params, roles.FRACTION, rate=rate))
            results[rate] = runs[0]
            for r, result in enumerate(runs):
                yield Point(number, fraction, capacity, probe_eps, result, r)
