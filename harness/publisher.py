"""A publisher: its slice of the workload, packed into stream entries, XADDed in pipelines."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from harness.broker import Broker
from harness.generator import Generator, Workload

#: When publishers make their events (a trial parameter): as they go, or all before
#: their first send (:attr:`PublishPlan.ahead`).
GENERATE = ("inline", "ahead")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PublishPlan:
    workload: Workload
    #: this publisher's slice of the event sequence: start ≤ i < stop
    start: int
    stop: int
    entry_size: int = 1
    #: stream entries per pipelined round trip
    pipeline: int = 100
    #: pause while the stream holds more entries than this (0: never pause)
    max_backlog: int = 0
    #: fault injection: pipeline rounds (0-based) whose reply is "lost" after Redis took
    #: them, so the publisher sends them again, as a real client would after a timeout
    lose_replies: tuple[int, ...] = ()
    #: make and encode the whole slice before the first XADD, which is when a trial's
    #: clock starts: the trial then times the pipeline, not the load generator, as
    #: ``bench``'s (a) is timed. Holds the slice's wire form in memory (~230 bytes an
    #: event at 100-byte payloads), so it is for benchmarks, not for 10M-event trials.
    ahead: bool = False

    @staticmethod
    def split(workload: Workload, publishers: int, **kwargs: Any) -> list[PublishPlan]:
        """Contiguous, near-equal slices, one per publisher."""
        n = workload.events
        return [
            PublishPlan(
                workload=workload,
                start=i * n // publishers,
                stop=(i + 1) * n // publishers,
                **kwargs,
            )
            for i in range(publishers)
        ]


@dataclasses.dataclass
class PublisherStats:
    events: int = 0
    entries: int = 0
    backpressure_s: float = 0.0
    #: wall clock of the first XADD (trial duration runs from the earliest one)
    first_publish_ns: int = 0
    #: events sent again after a reply was lost on purpose (certainly in Redis twice)
    resent: int = 0
    #: events sent again after a real connection error (perhaps in Redis twice)
    resent_uncertain: int = 0


class Publisher:
    def __init__(
        self,
        broker: Broker,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.broker = broker
        self.stats = PublisherStats()
        self._clock_ns = clock_ns
        self._sleep = sleep

    def run(self, plan: PublishPlan, stop: threading.Event | None = None) -> PublisherStats:
        rounds = self._rounds(plan)
        if plan.ahead:
            rounds = iter(list(rounds))
        lost = frozenset(plan.lose_replies)
        for number, entries in enumerate(rounds):
            if stop is not None and stop.is_set():
                break
            self._wait_for_room(plan.max_backlog)
            created_ns = self._clock_ns()
            if not self.stats.first_publish_ns:
                self.stats.first_publish_ns = created_ns
            self._publish(entries, created_ns, lose_reply=number in lost)
            self.stats.events += sum(count for _, count in entries)
            self.stats.entries += len(entries)
        return self.stats

    @staticmethod
    def _rounds(plan: PublishPlan) -> Iterator[list[tuple[bytes, int]]]:
        """The slice's pipeline rounds: lists of (stream entry, events in it)."""
        generator = Generator(plan.workload)
        per_round = plan.entry_size * plan.pipeline
        for chunk in generator.ordinal_groups(plan.start, plan.stop, per_round):
            parts = [chunk[i : i + plan.entry_size] for i in range(0, len(chunk), plan.entry_size)]
            yield [(generator.encoded_entry(part), len(part)) for part in parts]

    def _publish(
        self, entries: list[tuple[bytes, int]], created_ns: int, *, lose_reply: bool
    ) -> None:
        """XADD a round, again until Redis confirms it: at-least-once publishing."""
        events = sum(count for _, count in entries)
        failures = 0
        while True:
            try:
                self.broker.publish(entries, created_ns=created_ns)
            except (redis.ConnectionError, redis.TimeoutError):
                failures += 1
                if failures > 20:
                    raise
                self.stats.resent_uncertain += events
                self._sleep(min(0.01 * 2**failures, 1.0))
                continue
            if lose_reply:  # Redis took it; pretend the reply never came
                lose_reply = False
                self.stats.resent += events
                continue
            return

    def _wait_for_room(self, max_backlog: int) -> None:
        if max_backlog <= 0:
            return
        while self.broker.stream_length() > max_backlog:
            self._sleep(0.005)
            self.stats.backpressure_s += 0.005
