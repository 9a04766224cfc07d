"""Faults injected mid-trial at seeded moments, to show what each design loses.

In an open-loop trial the moments are seeded times inside the measured window, while
the load flows (:attr:`FaultPlan.at_s`); in a burst they are fractions of the workload:
the driver injects a fault when the events its consumers have committed first reach that
share, so it lands mid-trial however fast the machine is. ``publisher-retry`` happens
inside the publishers (a lost reply after a pipelined XADD, so they send the round
again): the driver only tells each publisher which rounds, or from which times.

A fault must be shown to have hit something (Jepsen's rule): the runner counts what was
in flight when each landed, and a fault that found nothing is *missed*.
"""

from __future__ import annotations

import dataclasses
import random

KINDS = (
    "none",
    "kill-consumer",
    "pg-terminate",
    "redis-client-kill",
    "redis-restart",
    "publisher-retry",
)

#: The application name consumers' PostgreSQL connections carry (pg-terminate finds them).
CONSUMER_APPLICATION = "harness-consumer"


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    kind: str
    #: shares of the workload (0–1) at which to inject, in order (a burst)
    at: tuple[float, ...] = ()
    #: seconds since the trial's origin at which to inject, in order (open loop)
    at_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of {', '.join(KINDS)}")
        if any(not 0 <= x <= 1 for x in self.at) or list(self.at) != sorted(self.at):
            raise ValueError("fault moments must be sorted shares of the workload in [0, 1]")
        if any(not x >= 0 for x in self.at_s) or list(self.at_s) != sorted(self.at_s):
            raise ValueError("fault times must be sorted seconds ≥ 0")
        if self.at and self.at_s:
            raise ValueError("fault moments are shares of the workload or times, not both")

    @classmethod
    def draw(
        cls, kind: str, count: int, seed: int, window: tuple[float, float] | None = None
    ) -> FaultPlan:
        """``count`` moments: with a ``window`` (its first and end second, open loop),
        times uniform in its first 90%, while the load still flows; else shares uniform in
        the middle of the trial (10%–80% of the events)."""
        if kind == "none" or count <= 0:
            return cls(kind)
        rng = random.Random(f"{seed}:{kind}")
        if window is not None:
            start, end = window
            latest = start + 0.9 * (end - start)
            return cls(kind, at_s=tuple(sorted(rng.uniform(start, latest) for _ in range(count))))
        return cls(kind, tuple(sorted(rng.uniform(0.1, 0.8) for _ in range(count))))

    @property
    def count(self) -> int:
        return len(self.at) + len(self.at_s)

    @property
    def driver_side(self) -> bool:
        return self.kind not in ("none", "publisher-retry")

    def due(self, done: int, total: int, injected: int, elapsed_s: float = 0.0) -> int:
        """How many more faults to inject now that ``done`` of ``total`` events are in
        and ``elapsed_s`` seconds have passed since the trial's origin."""
        if not self.driver_side or total <= 0:
            return 0
        reached = sum(1 for x in self.at if done >= x * total)
        reached += sum(1 for x in self.at_s if elapsed_s >= x)
        return max(0, reached - injected)

    def publisher_rounds(self, rounds: list[int]) -> list[tuple[int, ...]]:
        """For ``publisher-retry``: which rounds each publisher loses the reply of.

        ``rounds[i]`` is how many pipelined rounds publisher ``i`` sends. The moments are
        shares of all rounds, laid end to end across the publishers.
        """
        lost: list[list[int]] = [[] for _ in rounds]
        total = sum(rounds)
        if self.kind != "publisher-retry" or total == 0:
            return [() for _ in rounds]
        for share in self.at:
            position = min(int(share * total), total - 1)
            for i, n in enumerate(rounds):
                if position < n:
                    lost[i].append(position)
                    break
                position -= n
        return [tuple(sorted(set(x))) for x in lost]

    def publisher_times(self, publishers: int, origin_ns: int) -> list[tuple[int, ...]]:
        """For ``publisher-retry`` under load: the wall-clock times (ns) from which each
        publisher loses the reply of its next round; the moments go to the publishers in
        turn."""
        if self.kind != "publisher-retry":
            return [() for _ in range(publishers)]
        times = [origin_ns + round(t * 1e9) for t in self.at_s]
        return [tuple(times[i::publishers]) for i in range(publishers)]


def rng_for(seed: int, kind: str) -> random.Random:
    """The driver's choices (which consumer to kill) for this trial, seeded."""
    return random.Random(f"{seed}:{kind}:victims")
