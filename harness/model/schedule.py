"""Open-loop pacing: when each event of a publisher's slice is *meant* to be sent.

A closed-loop load generator ("send, wait for the reply, send the next") slows down
when the system stalls, so the stall never shows in its latencies: coordinated
omission (Gil Tene; wrk2, OpenMessaging Benchmark). An open-loop one keeps a schedule
instead: event ``k`` of a slice is due at ``start + k / rate``, whatever happened to
event ``k − 1``, and its latency runs from that intended time. A publisher that falls
behind sends what is overdue at once, stamped with the times it was due, so the delay
is charged to the system that caused it.

:class:`Pacer` hands out rounds of due events; time is passed in, so the schedule is
tested without sleeping. (A burst, ``rate = 0``, has no schedule: its publisher sends
round after round as fast as it can.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

NS = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class Schedule:
    """``events`` events at ``rate`` events/s, the first due at ``start_ns`` (wall clock)."""

    start_ns: int
    rate: float
    events: int

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"a schedule needs a rate > 0, got {self.rate}")
        if self.events < 0:
            raise ValueError(f"events must be ≥ 0, got {self.events}")

    def intended_ns(self, k: int) -> int:
        """When event ``k`` (0-based) is due."""
        return self.start_ns + round(k * NS / self.rate)

    def due(self, now_ns: int) -> int:
        """How many events are due by ``now_ns`` (those with intended time ≤ now)."""
        if now_ns < self.start_ns:
            return 0
        k = int((now_ns - self.start_ns) * self.rate // NS) + 1
        # the float division may land one off at an exact boundary: settle it exactly
        while k > 0 and self.intended_ns(k - 1) > now_ns:
            k -= 1
        while k < self.events and self.intended_ns(k) <= now_ns:
            k += 1
        return min(k, self.events)

    @property
    def end_ns(self) -> int:
        """When the last event is due."""
        return self.intended_ns(max(0, self.events - 1))


@dataclasses.dataclass(frozen=True)
class Round:
    """Events ``first … first + count − 1`` of the slice, to be sent now."""

    first: int
    count: int
    #: when the round's first event was due
    intended_ns: int
    #: how late the round goes out: now − intended time of its first event
    lag_ns: int


#: an open-loop publisher sends at most once per this interval: what fell due since goes
#: out together. A round trip per event at a few thousand events/s would make the load
#: generator the machine's largest user of CPU; an event waits at most this long for its
#: round, and that wait is in its latency (it runs from the intended time).
TICK_NS = 1_000_000


class Pacer:
    """Rounds of at most ``max_events`` events, each handed out when it falls due on the
    :class:`Schedule`."""

    def __init__(
        self,
        schedule: Schedule,
        max_events: int,
        *,
        clock_ns: Callable[[], int],
        sleep: Callable[[float], None],
        tick_ns: int = TICK_NS,
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be ≥ 1, got {max_events}")
        self.max_events = max_events
        self.schedule = schedule
        self.tick_ns = tick_ns
        self._clock_ns = clock_ns
        self._sleep = sleep

    def rounds(self) -> Iterator[Round]:
        """The rounds, each yielded when it is due; the caller sends it, then asks for more."""
        sent, last = 0, None
        while sent < self.schedule.events:
            now = self._clock_ns()
            due = self.schedule.due(now)
            early = last is not None and now - last < self.tick_ns
            if due <= sent or (early and due - sent < self.max_events):
                # Sleep until the next event is due and a tick has passed since the last
                # round (unless a full round is overdue); never "sleep a fixed time after
                # each send", which would let a slow send push the whole schedule back.
                wake = self.schedule.intended_ns(sent) if due <= sent else now
                if last is not None:
                    wake = max(wake, last + self.tick_ns)
                self._sleep(max(0.0, (wake - now) / NS))
                continue
            count = min(self.max_events, due - sent)
            intended = self.schedule.intended_ns(sent)
            yield Round(sent, count, intended, max(0, now - intended))
            sent += count
            last = now

    def stamps(self, round_: Round, entry_size: int) -> list[int]:
        """The intended time of each entry of ``entry_size`` events in the round: its first
        event's, so an entry's latency is never understated."""
        starts = range(round_.first, round_.first + round_.count, entry_size)
        return [self.schedule.intended_ns(k) for k in starts]
