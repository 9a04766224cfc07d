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
import time
from collections.abc import Callable
from operator import methodcaller
from typing import ClassVar, Protocol

#: about how long a failover takes here: the primary's crash, the standby's promotion,
#: and a new standby cloned and streaming (seconds)
FAILOVER_S = 2.0
#: and a Redis failover: the Sentinels see the primary down (``down-after-milliseconds``
#: 1.5 s), elect a leader and promote the replica, and the old primary rejoins as its
#: replica (3–4.6 s measured here)
REDIS_FAILOVER_S = 4.5
#: The application name consumers' PostgreSQL connections carry (pg-terminate finds them).
CONSUMER_APPLICATION = "harness-consumer"
#: how long a fault waits for work in flight to hit before it lands on nothing. The
#: seed's list consumers hold events only while they apply them (a few ms in a hundred),
#: and the driver sees that only through Ray calls to each: 1 s missed about one list
#: kill in ten under --quick; the stream's pending entries are found at once
FIND_S = 3.0


@dataclasses.dataclass(frozen=True)
class Durability:
    """What a trial's settings promise to keep, which decides what loss a fault admits:
    the broker, Redis's fsync policy and its replica, PostgreSQL's commit and its standby."""

    broker: str = "stream"
    appendfsync: str = "everysec"
    synchronous_commit: str = "on"
    pg_standby: str = "none"
    redis_replica: str = "none"


class Target(Protocol):
    """A running trial as a fault acts on it (the runner's :class:`FaultTarget`)."""

    def kill_consumer(self) -> int:
        """Kill a consumer that holds work, start its successor; what it held."""
        ...

    def busy_backends(self) -> int:
        """The consumers' PostgreSQL connections in a statement or transaction now."""
        ...

    def terminate_backends(self) -> None: ...

    def unacknowledged(self) -> int:
        """Entries queued or in flight in the broker now."""
        ...

    def restart_redis(self) -> None:
        """Crash the trial's own redis-server and start it again from its AOF."""
        ...

    def held(self) -> int:
        """What the consumers hold now: delivered, unacknowledged entries (or events in
        hand, on the list broker)."""
        ...

    def kill_redis_clients(self) -> None: ...

    def crash_postgres(self) -> None:
        """Crash the trial's own PostgreSQL (immediate shutdown) and start it again."""
        ...

    def fail_over_postgres(self) -> None:
        """Crash the trial's own primary and promote its standby."""
        ...

    def fail_over_redis(self) -> None:
        """Crash the trial's own Redis primary; its Sentinels promote the replica."""
        ...

    def pause_consumer(self) -> int:
        """Stop a consumer that holds work (SIGSTOP) for :func:`pause_s`: at once, or
        (every other one) right after its next commit, before its acknowledgement; what
        it held."""
        ...

    def pausing(self) -> bool:
        """Whether a consumer is paused now."""
        ...


def first_nonzero(
    look: Callable[[], int],
    patience_s: float = FIND_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """``look()`` until it finds something or ``patience_s`` has passed; what it found."""
    deadline = clock() + patience_s
    while True:
        found = look()
        if found or clock() > deadline:
            return found
        sleep(0.005)


class Fault:
    """One kind of fault: how a trial prepares for it, injects it and measures what it
    hit, and what loss it admits. The kinds are the subclasses' instances in
    :data:`FAULTS`; the runner and the invariants ask them, never compare names."""

    name: ClassVar[str]
    #: injected by the driver at the plan's moments (else inside the publishers, or never)
    driver_side: ClassVar[bool] = True
    #: happens inside the publishers: a lost reply after a pipelined XADD
    publisher_side: ClassVar[bool] = False
    #: the trial runs a redis-server of its own, persisting to an AOF, to crash
    own_redis: ClassVar[bool] = False
    #: successors of killed consumers are started before the trial, so that a kill's
    #: replacement is up at once
    spares: ClassVar[bool] = False
    #: the brokers that lose events under this fault by design (the seed's list hands
    #: out events and forgets them)
    lossy_brokers: ClassVar[frozenset[str]] = frozenset()
    #: confirmed writes the broker itself may lose are counted (``broker_lost``)
    measures_broker_loss: ClassVar[bool] = False
    #: lasts beyond its injection (a pause): its window ends when the runner ends it
    lasting: ClassVar[bool] = False
    #: takes long enough (a pause, a failover) that its moments are planned a slot
    #: apart, and ``--quick`` keeps the load its span needs (:meth:`span_s`)
    spaced: ClassVar[bool] = False
    #: the trial runs a PostgreSQL of its own, to crash
    own_postgres: ClassVar[bool] = False
    #: ... with a streaming standby (``pg_standby``), to promote
    needs_standby: ClassVar[bool] = False
    #: the trial runs a Redis of its own with a replica and Sentinels
    #: (``redis_replica``), to fail over
    needs_replica: ClassVar[bool] = False
    #: the consumers keep the keys of every commit they were told succeeded, so that one
    #: that vanished is counted (``commit_lost``)
    records_commits: ClassVar[bool] = False

    def ready(self, target: Target) -> bool:
        """Whether one can be injected now (else the runner tries at its next poll)."""
        return True

    def span_s(self, claim_idle_ms: int) -> float:
        """About how long one lasts, seconds (0: an instant)."""
        return 0.0

    #: the :class:`Target` method that tells what a driver-side fault would hit now,
    #: asked until it finds some (see :func:`first_nonzero`) …
    finds: ClassVar[methodcaller | None] = None
    #: … and the one that does it
    strikes: ClassVar[methodcaller | None] = None

    def inject(self, target: Target) -> int:
        """Inject one, now; what it hit (0: nothing in flight)."""
        finds, strikes = self.finds, self.strikes
        if finds is None or strikes is None:
            raise NotImplementedError(f"{self.name} is not injected by the driver")
        hit: int = first_nonzero(lambda: int(finds(target)))
        strikes(target)
        return hit

    def admits_loss(self, d: Durability) -> bool:
        """Whether a trial of this fault, with these settings, is known to lose events."""
        return d.broker in self.lossy_brokers

    def __repr__(self) -> str:
        return f"<fault {self.name}>"


class NoFault(Fault):
    name = "none"
    driver_side = False


class KillConsumer(Fault):
    """SIGKILL-like, mid-batch; every other kill right after a commit, before its ack."""

    name = "kill-consumer"
    spares = True
    lossy_brokers = frozenset({"list"})

    def inject(self, target: Target) -> int:
        return target.kill_consumer()


class PgTerminate(Fault):
    """``pg_terminate_backend`` on every consumer connection: open transactions abort."""

    name = "pg-terminate"
    finds = methodcaller("busy_backends")
    strikes = methodcaller("terminate_backends")


class RedisClientKill(Fault):
    """``CLIENT KILL`` on the consumers' and publishers' Redis connections."""

    name = "redis-client-kill"
    lossy_brokers = frozenset({"list"})

    finds = methodcaller("held")
    strikes = methodcaller("kill_redis_clients")


class RedisRestart(Fault):
    """The trial's own redis-server crashes and restarts from its AOF."""

    name = "redis-restart"
    own_redis = True
    measures_broker_loss = True

    finds = methodcaller("unacknowledged")
    strikes = methodcaller("restart_redis")

    def admits_loss(self, d: Durability) -> bool:
        # the broker's own loss: writes not yet fsynced when it crashed
        return d.appendfsync != "always"


class PgCrash(Fault):
    """The trial's own PostgreSQL stops at once (``pg_ctl stop -m immediate``: no
    checkpoint, every backend gone, as in a power cut for everything not yet flushed) and
    starts again, recovering from its WAL. With ``synchronous_commit = off`` it had
    acknowledged commits whose WAL was not on disk: they are gone, and the consumers had
    acknowledged their entries in Redis, so nothing brings them back (``commit_lost``).
    It hit the transactions open when it crashed."""

    name = "pg-crash"
    own_postgres = True
    records_commits = True

    finds = methodcaller("busy_backends")
    strikes = methodcaller("crash_postgres")

    def admits_loss(self, d: Durability) -> bool:
        return d.synchronous_commit == "off"


class PgFailover(Fault):
    """The trial's own PostgreSQL primary crashes (immediate shutdown) and its streaming
    standby is promoted; clients find it through their multi-host DSN
    (``target_session_attrs=read-write``), and a new standby is cloned from it for the
    next failover. An asynchronous standby may not have received the last commits the
    primary confirmed: they are gone (``commit_lost``); a synchronous one had flushed
    each before it was confirmed. It hit the transactions open at the crash; its detail
    is the standby's replication lag then."""

    name = "pg-failover"
    own_postgres = True
    needs_standby = True
    records_commits = True
    spaced = True

    def span_s(self, claim_idle_ms: int) -> float:
        return FAILOVER_S

    finds = methodcaller("busy_backends")
    strikes = methodcaller("fail_over_postgres")

    def admits_loss(self, d: Durability) -> bool:
        return d.pg_standby != "sync" or d.synchronous_commit == "off"


class RedisFailover(Fault):
    """The trial's own Redis primary crashes (SIGKILL) and its Sentinels promote the
    replica; clients find it through the Sentinels (redis-py's ``Sentinel``), and the old
    primary comes back as the new one's replica, for the next failover. An asynchronous
    replica may not have received the last XADDs the primary confirmed (``broker_lost``)
    nor the last XACKs (redeliveries, which the consumers recognise); with ``wait`` a
    publisher counts a round sent only once ``WAIT`` says the replica has it. It hit the
    entries queued or in flight at the crash; its detail is the replica's offset gap then."""

    name = "redis-failover"
    needs_replica = True
    measures_broker_loss = True
    spaced = True
    finds = methodcaller("unacknowledged")
    strikes = methodcaller("fail_over_redis")

    def span_s(self, claim_idle_ms: int) -> float:
        return REDIS_FAILOVER_S

    def admits_loss(self, d: Durability) -> bool:
        return d.redis_replica != "wait"


class PauseConsumer(Fault):
    """A consumer stops (SIGSTOP: a GC pause, a stalled VM) for longer than
    ``claim_idle_ms``, then goes on (SIGCONT). Its peers take over its pending entries
    (XAUTOCLAIM) and apply them; when it wakes it finishes the batch it held and
    acknowledges it, and XACK names no consumer, so it acknowledges what its peers hold:
    the trap of exactly-once effects. Every other pause lands right after a commit,
    before its acknowledgement, so its peers meet entries already applied, which they
    must recognise. It hit what its peers took over while it slept (none: missed). One
    pause at a time."""

    name = "pause-consumer"
    lasting = True
    spaced = True

    def span_s(self, claim_idle_ms: int) -> float:
        return pause_s(claim_idle_ms)

    def ready(self, target: Target) -> bool:
        return not target.pausing()

    def inject(self, target: Target) -> int:
        return target.pause_consumer()


def pause_s(claim_idle_ms: int) -> float:
    """How long a pause lasts: twice the idle time after which peers take a consumer's
    entries over, and a second, so that they do, and apply them, while it sleeps."""
    return 2 * claim_idle_ms / 1000 + 1.0


class PublisherRetry(Fault):
    """A lost reply after a pipelined XADD: the publisher sends the round again."""

    name = "publisher-retry"
    driver_side = False
    publisher_side = True


#: every kind, by name, in the order experiments list them
FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        NoFault(),
        KillConsumer(),
        PgTerminate(),
        RedisClientKill(),
        RedisRestart(),
        PublisherRetry(),
        PauseConsumer(),
        PgCrash(),
        PgFailover(),
        RedisFailover(),
    )
}
KINDS = tuple(FAULTS)


def fault(name: str) -> Fault:
    """The kind of this name, or :class:`ValueError` listing them."""
    try:
        return FAULTS[name]
    except KeyError:
        raise ValueError(f"unknown fault {name!r}; choose one of {', '.join(KINDS)}") from None


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    kind: str
    #: shares of the workload (0–1) at which to inject, in order (a burst)
    at: tuple[float, ...] = ()
    #: seconds since the trial's origin at which to inject, in order (open loop)
    at_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        fault(self.kind)  # a known kind, or ValueError
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
        the middle of the trial (10%–80% of the events). A fault that takes a while (a
        pause, a failover: ``spaced``) gets one moment in the first half of each of
        ``count`` equal slots, so that each has time to end before the next is due."""
        if fault(kind) is FAULTS["none"] or count <= 0:
            return cls(kind)
        rng = random.Random(f"{seed}:{kind}")
        low, high = (window[0], window[0] + 0.9 * (window[1] - window[0])) if window else (0.1, 0.8)
        if fault(kind).spaced:
            slot = (high - low) / count
            moments = [low + i * slot + rng.uniform(0, slot / 2) for i in range(count)]
        else:
            moments = sorted(rng.uniform(low, high) for _ in range(count))
        return cls(kind, at_s=tuple(moments)) if window else cls(kind, tuple(moments))

    @property
    def count(self) -> int:
        return len(self.at) + len(self.at_s)

    @property
    def fault(self) -> Fault:
        return fault(self.kind)

    @property
    def driver_side(self) -> bool:
        return self.fault.driver_side

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
        if not self.fault.publisher_side or total == 0:
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
        if not self.fault.publisher_side:
            return [() for _ in range(publishers)]
        times = [origin_ns + round(t * 1e9) for t in self.at_s]
        return [tuple(times[i::publishers]) for i in range(publishers)]


def rng_for(seed: int, kind: str) -> random.Random:
    """The driver's choices (which consumer to kill) for this trial, seeded."""
    return random.Random(f"{seed}:{kind}:victims")
