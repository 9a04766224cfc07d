"""What the runner's phases share: a trial's running state, the looks the driver takes at
it, what the collect phase gathers (:class:`Outcome`), and how progress is reported."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import Any, Protocol

from harness.delivery import broker as broker_mod
from harness.model import latency
from harness.model.generator import Workload
from harness.model.steady import PerSecond, SteadyState, Window
from harness.pipeline.consumer import ConsumerConfig
from harness.pipeline.publisher import PublishPlan
from harness.trials.faults import FaultPlan
from harness.trials.params import Trial
from harness.trials.results import TrialResult


class TrialError(RuntimeError):
    """The trial could not run to its end."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One look at a running trial."""

    elapsed_s: float
    published: int
    committed: int
    retries: int
    consumers_alive: int
    #: ``warmup``, ``window`` or ``drain`` of an open-loop trial; ``burst`` otherwise
    phase: str = "burst"

    @property
    def backlog(self) -> int:
        return max(0, self.published - self.committed)


@dataclasses.dataclass
class FaultWindow:
    """When one injected fault began and ended, seconds since the trial's origin (an
    instant fault ends when its injection returns; a pause when the process continues)."""

    start_s: float
    end_s: float | None = None
    #: what the fault found, in words (a standby's lag, what a pause's peers took over)
    detail: str = ""

    def text(self) -> str:
        return f"{self.start_s:.2f}-{self.end_s if self.end_s is not None else math.nan:.2f}"


@dataclasses.dataclass
class Pause:
    """A consumer stopped by ``pause-consumer``, and what to continue it by."""

    pid: int
    node: str
    #: the driver's clock (monotonic s) at which it is continued
    until: float
    #: which fault this is: its window, and its place in :attr:`TrialState.in_flight`
    window: FaultWindow
    fault: int
    #: its last report before it stopped (it answers no calls while stopped)
    report: dict[str, Any]
    #: events its peers had taken over from others when it stopped
    reclaimed_before: int


@dataclasses.dataclass(kw_only=True)
class TrialState:
    """What the phases of one trial share while it runs."""

    trial: Trial
    workload: Workload
    brokers: dict[str, broker_mod.Broker]
    broker: broker_mod.Broker
    redis_url: str
    #: the ingress service's URL when publishers post over HTTP
    ingress_url: str | None
    #: consumer actors by index; a killed one is replaced under its index
    alive: dict[int, Any]
    publishers: list[Any]
    #: consumer actors started ahead, to take the place of killed ones at once
    spares: list[Any]
    configs: list[ConsumerConfig]
    consumer_setup: dict[str, Any]
    fault_plan: FaultPlan
    plans: list[PublishPlan]
    #: wall clock (ns) the trial's seconds count from
    origin_ns: int
    window: Window | None
    nodes: list[str]
    victims: random.Random
    reset_s: float
    redis_peak: float
    started: float = 0.0
    last_sample: float = 0.0
    injected: int = 0
    #: the last reports of killed consumers: what they did, as far as the driver knows
    dead_reports: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    samples: list[Sample] = dataclasses.field(default_factory=list)
    #: what each fault injected so far found in flight (0: it hit nothing)
    in_flight: list[int] = dataclasses.field(default_factory=list)
    #: each injected fault's span
    windows: list[FaultWindow] = dataclasses.field(default_factory=list)
    #: consumers stopped by a pause, by index: not polled until they are continued
    paused: dict[int, Pause] = dataclasses.field(default_factory=dict)

    def since_origin(self) -> float:
        """Seconds since the trial's clock origin, now."""
        return (time.time_ns() - self.origin_ns) / 1e9


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """What a trial's actors counted, gathered when it ended (or nothing, when it failed
    before: :meth:`failed`)."""

    #: the last report of every consumer alive at the end
    consumers: list[dict[str, Any]]
    latency: Any
    steady: SteadyState
    published: int
    resent: int
    resent_uncertain: int
    elapsed_s: float
    first_ns: int
    last_ns: int
    consumers_died: int
    #: events of batches consumers gave up on after their retries
    abandoned: int
    reset_s: float
    faults_injected: int
    in_flight_at_fault: int
    faults_missed: int
    #: each publisher's producer id, and the entries it numbered (all confirmed)
    producers: dict[int, int]
    pruned: int
    nodes: int
    rss_peak_mb: float
    redis_peak_mb: float
    #: each fault's span, ``start-end`` seconds since the origin, ``;`` between them
    fault_windows: str = ""
    #: what each fault found, in words, ``;`` between them
    fault_details: str = ""
    #: ``(topic, event_id)`` of every event in a commit a consumer was told succeeded
    #: (faults that ``records_commits``)
    committed_keys: frozenset[tuple[str, str]] = frozenset()
    #: whether the trial ran to its end (a failed one has only what the store holds)
    ran: bool = True

    @classmethod
    def failed(cls) -> Outcome:
        return cls(
            consumers=[],
            latency=latency.new(),
            steady=SteadyState(),
            published=0,
            resent=0,
            resent_uncertain=0,
            elapsed_s=0.0,
            first_ns=0,
            last_ns=0,
            consumers_died=0,
            abandoned=0,
            reset_s=math.nan,
            faults_injected=0,
            in_flight_at_fault=0,
            faults_missed=0,
            producers={},
            pruned=0,
            nodes=0,
            rss_peak_mb=math.nan,
            redis_peak_mb=math.nan,
            ran=False,
        )

    def retries(self) -> dict[str, int]:
        """Failed attempts of the consumers' batches, by SQLSTATE, summed."""
        total: dict[str, int] = {}
        for report in self.consumers:
            for state, n in report["retries"].items():
                total[state] = total.get(state, 0) + n
        return total

    @property
    def rejected(self) -> int:
        return sum(r["rejected"] for r in self.consumers)


def timeseries(
    per_second: PerSecond, window: Window | None, samples: list[Sample], consumers: int
) -> list[dict[str, Any]]:
    """A row per second of the trial (see :meth:`PerSecond.series`), with the retries and
    live consumers the driver last saw by the end of that second (``consumers`` before
    its first look)."""
    rows = per_second.series(window)
    pending = sorted(samples, key=lambda x: x.elapsed_s)
    retries, alive = 0, consumers
    for row in rows:
        while pending and pending[0].elapsed_s <= row["elapsed_s"]:
            seen = pending.pop(0)
            retries, alive = seen.retries, seen.consumers_alive
        row |= {"retries": retries, "consumers_alive": alive}
    return rows


class Progress(Protocol):
    def trial_started(self, trial: Trial, position: int, total: int) -> None: ...
    def update(self, sample: Sample) -> None: ...
    def trial_finished(self, result: TrialResult) -> None: ...


class NoProgress:
    def trial_started(self, trial: Trial, position: int, total: int) -> None:
        pass

    def update(self, sample: Sample) -> None:
        pass

    def trial_finished(self, result: TrialResult) -> None:
        pass
