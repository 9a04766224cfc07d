"""A publisher: its slice of the workload, packed into stream entries, XADDed in pipelines.

Without a rate it sends its slice as fast as it can (a burst). With one it keeps an
open-loop schedule (:mod:`harness.model.schedule`): each entry is stamped with the time its
first event was due, and latency runs from there.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from harness.delivery.protocol import Broker
from harness.model import steady
from harness.model.generator import Generator, Workload
from harness.model.retry import RetryPolicy
from harness.model.schedule import Pacer, Schedule

#: A publisher gives up on a round it cannot get Redis to confirm within this long (and
#: fails): the consumers remember applied identities longer than this
#: (:attr:`harness.pipeline.consumer.ConsumerConfig.remember_s`), so a round sent again within it
#: is recognised wherever its first copy went.
RESEND_DEADLINE_S = 30.0
#: how a publisher waits before it sends a round again after a connection error
RESEND = RetryPolicy(max_attempts=20, base_delay=0.02, max_delay=1.0)


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
    #: a round counts as sent only once ``WAIT`` says this many replicas have it (else
    #: it is sent again, with the same identities, as after a connection error)
    replicas: int = 0
    #: fault injection: pipeline rounds (0-based) whose reply is "lost" after Redis took
    #: them, so the publisher sends them again, as a real client would after a timeout
    lose_replies: tuple[int, ...] = ()
    #: the same on a schedule: the first round sent at or after each of these wall-clock
    #: times (ns) "loses" its reply
    lose_replies_at_ns: tuple[int, ...] = ()
    #: make and encode the whole slice before the first XADD, which is when a trial's
    #: clock starts: the trial then times the pipeline, not the load generator, as
    #: ``bench``'s (a) is timed. Holds the slice's wire form in memory (~230 bytes an
    #: event at 100-byte payloads), so it is for benchmarks, not for 10M-event trials.
    ahead: bool = False
    #: events/s this publisher offers on an open-loop schedule; 0: as fast as it can
    rate: float = 0.0
    #: the trial's clock origin (wall clock, ns): an open-loop schedule starts there, and
    #: sends are counted by whole seconds since it. 0: the publisher's first send.
    origin_ns: int = 0

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate must be ≥ 0, got {self.rate}")
        if self.rate and self.ahead:
            raise ValueError("an open-loop publisher makes its entries as they fall due")

    @property
    def events(self) -> int:
        return self.stop - self.start

    def pacer(
        self, max_events: int, *, clock_ns: Callable[[], int], sleep: Callable[[float], None]
    ) -> Pacer:
        """The open-loop schedule of this slice, from the trial's origin (or now, without
        one), in rounds of at most ``max_events`` events."""
        start = self.origin_ns or clock_ns()
        schedule = Schedule(start, self.rate, self.events)
        return Pacer(schedule, max_events, clock_ns=clock_ns, sleep=sleep)

    @staticmethod
    def split(
        workload: Workload, publishers: int, *, rate: float = 0.0, **kwargs: Any
    ) -> list[PublishPlan]:
        """Contiguous, near-equal slices, one per publisher. ``rate`` (events/s, all
        publishers together) is shared in proportion to the slices, so that every
        publisher's schedule ends at the same time."""
        n = workload.events
        plans = []
        for i in range(publishers):
            start, stop = i * n // publishers, (i + 1) * n // publishers
            share = rate * (stop - start) / n if n else 0.0
            plans.append(
                PublishPlan(workload=workload, start=start, stop=stop, rate=share, **kwargs)
            )
        return plans


@dataclasses.dataclass
class PublisherStats:
    events: int = 0
    entries: int = 0
    backpressure_s: float = 0.0
    #: wall clock of the first XADD (trial duration runs from the earliest one)
    first_publish_ns: int = 0
    #: events sent again as new after a reply was lost on purpose (certainly in Redis
    #: twice, the second time as a receipt of its own: an at-least-once client)
    resent: int = 0
    #: rounds whose reply was lost on purpose
    replies_lost: int = 0
    #: events sent again after a real connection error (perhaps in Redis twice), with
    #: their identities: a copy that arrives twice is recognised
    resent_uncertain: int = 0
    #: the identities this publisher's entries carry: its producer id, and how many it
    #: numbered (each one an entry Redis confirmed)
    producer: int = 0
    entries_numbered: int = 0
    #: events sent, by whole second of wall-clock send time since the trial's origin
    sent_by_second: collections.Counter[int] = dataclasses.field(
        default_factory=collections.Counter
    )
    #: how late the latest round sent in each second went out against its schedule, at
    #: most (ms)
    lag_by_second: dict[int, float] = dataclasses.field(default_factory=dict)

    def sent(self, events: int, entries: int, now_ns: int, origin_ns: int, lag_ns: int = 0) -> None:
        """Count a round that went out at ``now_ns``, ``lag_ns`` behind its schedule."""
        if not self.first_publish_ns:
            self.first_publish_ns = now_ns
        second = steady.second_of(now_ns, origin_ns or self.first_publish_ns)
        self.sent_by_second[second] += events
        self.lag_by_second[second] = max(self.lag_by_second.get(second, 0.0), lag_ns / 1e6)
        self.events += events
        self.entries += entries

    def per_second(self) -> dict[str, dict[int, Any]]:
        return {"sent_by_second": dict(self.sent_by_second), "lag_by_second": self.lag_by_second}


class Publisher:
    def __init__(
        self,
        broker: Broker,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
        chance: Callable[[], float] = random.random,
    ) -> None:
        self.broker = broker
        self.stats = PublisherStats()
        self._clock_ns = clock_ns
        self._sleep = sleep
        self._chance = chance

    def run(self, plan: PublishPlan, stop: threading.Event | None = None) -> PublisherStats:
        if plan.rate:
            return self._run_on_schedule(plan, stop)
        rounds = self._rounds(plan)
        if plan.ahead:
            rounds = iter(list(rounds))
        lost = frozenset(plan.lose_replies)
        for number, entries in enumerate(rounds):
            if stop is not None and stop.is_set():
                break
            self._wait_for_room(plan.max_backlog)
            created_ns = self._clock_ns()
            self._publish(entries, created_ns, lose_reply=number in lost, replicas=plan.replicas)
            self.stats.sent(sum(n for _, n in entries), len(entries), created_ns, plan.origin_ns)
        return self.stats

    def _run_on_schedule(self, plan: PublishPlan, stop: threading.Event | None) -> PublisherStats:
        """Send each event when it falls due; what is overdue goes out at once, in rounds
        of up to ``pipeline`` entries, stamped with the times it was due."""
        generator = Generator(plan.workload)
        ordinals = generator.ordinals(plan.start, plan.stop)
        pacer = plan.pacer(
            plan.entry_size * plan.pipeline, clock_ns=self._clock_ns, sleep=self._sleep
        )
        lost = frozenset(plan.lose_replies)
        lose_at = sorted(plan.lose_replies_at_ns)
        for number, round_ in enumerate(pacer.rounds()):
            if stop is not None and stop.is_set():
                break
            lose = number in lost
            if lose_at and self._clock_ns() >= lose_at[0]:
                lose = True
                del lose_at[0]
            part = ordinals[round_.first : round_.first + round_.count]
            if plan.entry_size == 1:  # a few events a round: formatting beats numpy here
                entries = [(b"[" + generator.encoded(u) + b"]", 1) for u in part.tolist()]
            else:
                step = plan.entry_size
                groups = [part[i : i + step] for i in range(0, len(part), step)]
                entries = [(generator.encoded_entry(g), len(g)) for g in groups]
            stamps = pacer.stamps(round_, plan.entry_size)
            self._publish(entries, stamps, lose_reply=lose, replicas=plan.replicas)
            self.stats.sent(
                round_.count, len(entries), self._clock_ns(), plan.origin_ns, round_.lag_ns
            )
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
        self,
        entries: list[tuple[bytes, int]],
        created_ns: int | list[int],
        *,
        lose_reply: bool,
        replicas: int = 0,
    ) -> None:
        """XADD a round, again until Redis confirms it: at-least-once publishing.

        After a connection error the round goes again with the same identities (Kafka's
        idempotent producer): if Redis had taken it, the consumers recognise the second
        copy; so does a round that ``WAIT`` did not see reach ``replicas`` replicas in time
        (:class:`~harness.delivery.protocol.NotReplicated`: a failover may lose it). A
        lost reply injected on purpose (``publisher-retry``) sends it again as
        new, as a client that knows nothing of identities would: a receipt of its own.
        """
        events = sum(count for _, count in entries)
        producer = self.broker.producer
        ids = producer.take(len(entries))
        self.stats.producer = producer.id
        failures = 0
        deadline = self._clock_ns() + RESEND_DEADLINE_S * 1e9
        while True:
            try:
                self.broker.publish(entries, created_ns=created_ns, ids=ids, replicas=replicas)
            except (redis.ConnectionError, redis.TimeoutError):
                failures += 1
                if not RESEND.may_retry(failures) or self._clock_ns() > deadline:
                    raise
                self.stats.resent_uncertain += events
                self._sleep(RESEND.delay(failures, self._chance()))
                continue
            if lose_reply:  # Redis took it; pretend the reply never came
                lose_reply = False
                self.stats.replies_lost += 1
                self.stats.resent += events
                ids = producer.take(len(entries))
                continue
            self.stats.entries_numbered = producer.taken
            return

    def _wait_for_room(self, max_backlog: int) -> None:
        if max_backlog <= 0:
            return
        while self.broker.stream_length() > max_backlog:
            self._sleep(0.005)
            self.stats.backpressure_s += 0.005
