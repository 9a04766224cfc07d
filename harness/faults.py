"""Faults injected mid-trial at seeded moments, to show what each design loses.

The moments are fractions of the workload: the driver injects a fault when the events
its consumers have committed first reach that share of the events to publish, so a
fault lands mid-trial however fast the machine is. ``publisher-retry`` happens inside
the publishers (a lost reply after a pipelined XADD, so they send the round again): the
driver only tells each publisher which rounds.
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
    #: shares of the workload (0–1) at which to inject, in order
    at: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of {', '.join(KINDS)}")
        if any(not 0 <= x <= 1 for x in self.at) or list(self.at) != sorted(self.at):
            raise ValueError("fault moments must be sorted shares of the workload in [0, 1]")

    @classmethod
    def draw(cls, kind: str, count: int, seed: int) -> FaultPlan:
        """``count`` moments, uniform in the middle of the trial (10%–80% of the events)."""
        if kind == "none" or count <= 0:
            return cls(kind)
        rng = random.Random(f"{seed}:{kind}")
        return cls(kind, tuple(sorted(rng.uniform(0.1, 0.8) for _ in range(count))))

    @property
    def driver_side(self) -> bool:
        return self.kind not in ("none", "publisher-retry")

    def due(self, done: int, total: int, injected: int) -> int:
        """How many more faults to inject now that ``done`` of ``total`` events are in."""
        if not self.driver_side or total <= 0:
            return 0
        reached = sum(1 for x in self.at if done >= x * total)
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


def rng_for(seed: int, kind: str) -> random.Random:
    """The driver's choices (which consumer to kill) for this trial, seeded."""
    return random.Random(f"{seed}:{kind}:victims")
