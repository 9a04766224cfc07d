"""A trial's role: how it offers its load, and what it is run for.

Two loads (:class:`Burst`, :class:`OpenLoop`) decide what differs in running a trial:
when its clock starts, which seconds are measured, how long it may take. Five roles
(:data:`ROLES`) name what a trial is for: a sweep's ``burst`` or ``open loop`` trial, or
a capacity search's ``capacity probe`` (the burst its search starts from), ``capacity
step`` (one rate of the search) and ``capacity fraction`` (a share of the capacity found,
for the latency below saturation). ``trials.csv`` records each trial's role, so an
analysis reads what a trial was instead of guessing it from its rate and the run's mode.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

from harness.model.steady import Window

if TYPE_CHECKING:
    from harness.trials.params import TrialParams

#: an open-loop schedule starts this long after the trial's set-up, so that every
#: publisher is running when the first event falls due
START_LEAD_NS = 500_000_000


class Burst:
    """Every publisher sends its slice as fast as it can (``rate`` = 0): the clock starts
    again when the publishers are told to start (a load that is not ``open_loop``); the
    whole trial is measured; faults land at shares of the work committed."""

    name: ClassVar[str] = "burst"
    open_loop: ClassVar[bool] = False

    def origin_ns(self, set_up_ns: int) -> int:
        return set_up_ns

    def window(self, p: TrialParams) -> Window | None:
        return None

    def deadline_s(self, p: TrialParams) -> float:
        return p.timeout_s


class OpenLoop:
    """The publishers offer ``rate`` events/s on a schedule for ``duration_s``: the clock
    starts a moment after set-up, when every publisher runs; the seconds after the
    warm-up are measured, and faults land at seeded times in them."""

    name: ClassVar[str] = "open loop"
    open_loop: ClassVar[bool] = True

    def origin_ns(self, set_up_ns: int) -> int:
        return set_up_ns + START_LEAD_NS

    def window(self, p: TrialParams) -> Window | None:
        return Window.of(p.warmup_s, p.duration_s)

    def deadline_s(self, p: TrialParams) -> float:
        return p.timeout_s + p.duration_s


Load = Burst | OpenLoop
BURST_LOAD, OPEN_LOOP_LOAD = Burst(), OpenLoop()


@dataclasses.dataclass(frozen=True)
class Role:
    """What a trial is run for, and the load it offers."""

    name: str
    load: Load

    def check(self, p: TrialParams) -> None:
        """A role fits only the load its parameters make: a probe is a burst, a step or a
        fraction is open loop."""
        if p.open_loop != self.load.open_loop:
            raise ValueError(f"a {self.name} trial is {self.load.name}, but its rate is {p.rate:g}")


BURST = Role("burst", BURST_LOAD)
OPEN_LOOP = Role("open loop", OPEN_LOOP_LOAD)
PROBE = Role("capacity probe", BURST_LOAD)
STEP = Role("capacity step", OPEN_LOOP_LOAD)
FRACTION = Role("capacity fraction", OPEN_LOOP_LOAD)
ROLES = {r.name: r for r in (BURST, OPEN_LOOP, PROBE, STEP, FRACTION)}


def of_params(p: TrialParams) -> Role:
    """A sweep's trial: a burst, or open loop when it has a rate."""
    return OPEN_LOOP if p.open_loop else BURST


def role(name: str) -> Role:
    try:
        return ROLES[name]
    except KeyError:
        raise ValueError(f"unknown role {name!r}; one of: {', '.join(ROLES)}") from None
