"""What must hold after every trial, checked against ground truth and the database itself.

Two kinds of break. A *data* break (an event lost, stored twice, never published, or a
row count other than the distinct events published) is a violation whatever the trial
ran. A *counter* break is a violation too, except when the trial's counter strategy is
not expected to be safe at its isolation level (``rmw`` at READ COMMITTED) and the break
is what that strategy's known anomaly, the lost update, produces: counters that fall
short. Such breaks are reported as anomalies, measured, and do not fail the trial.

One more expected anomaly: the seed's list broker (``broker = list``) loses the events a
consumer had popped when it dies, or when it abandons their transaction after its retry
policy gave up (a serialization-failure storm). Under a fault that kills consumers or their Redis
connections, missing events and the counters' shortfall are that design's measured
loss, not a harness bug. Events stored twice or never published stay violations. So is a
crashed Redis (``redis-restart``) that forgets entries it had confirmed: expected with
``appendfsync everysec``, measured as ``broker_lost``; a violation with ``always``; so
is a Redis that fails over (``redis-failover``) to a replica that had not received them:
expected with an asynchronous replica, a violation with ``wait``; and a
crashed PostgreSQL (``pg-crash``) that takes back commits it had confirmed: expected with
``synchronous_commit = off``, measured as ``commit_lost``, a violation with ``on``. Where
the consumers kept what they committed, a loss that is neither is a violation whatever
the settings: every lost event must be attributed.

The counters are exact, not bounded: ``received`` is the events published as receipts,
less what Redis lost. A redelivery (an entry applied, then delivered again after a kill,
a reclaim or a Redis restart) and a publisher's retry of a round with the same identities
are recognised by the consumers and counted only in ``redelivered``.
"""

from __future__ import annotations

import dataclasses

from harness.model.modes import CounterStrategy, Isolation
from harness.store.batch import Counters, Verification
from harness.trials import faults

#: Faults under which a list broker's popped-but-uncommitted events are gone.


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evidence:
    """Everything the checks look at."""

    #: events the publishers sent as receipts (ground truth): each event of the workload
    #: once, plus the rounds re-sent as new on purpose (``publisher-retry``). A broker's
    #: redelivery or a publisher's retry with the same identities is no receipt: the
    #: consumers recognise it, so ``received`` must equal this, not exceed it.
    published: int
    expected_unique: int  # distinct keys among them (ground truth)
    counters: Counters  # what the consumers counted, in PostgreSQL
    stored: Verification  # what is in processed_events
    #: events Redis confirmed to a publisher that never reached the store (a crashed
    #: Redis's unsynced tail): ``received`` falls short by exactly these
    broker_lost: int = 0
    #: lost events whose commit a consumer had been told succeeded (the database took it
    #: back), and whether the trial kept what its consumers committed, so that every loss
    #: must be one of these or ``broker_lost``
    commit_lost: int = 0
    attributes_loss: bool = False
    #: the trial's counter strategy and isolation level: together they say whether a
    #: counter shortfall is a bug or the strategy's expected anomaly
    counter: str = CounterStrategy.ATOMIC.value
    isolation: str = Isolation.READ_COMMITTED.value
    #: the fault injected, and what the settings promise to keep (the broker, Redis's
    #: fsync and replica, PostgreSQL's commit and standby): together they say what loss
    #: the trial admits (the list broker loses events under some faults, everysec ~1 s of
    #: writes at a Redis crash, synchronous_commit off a crash's last commits, …)
    fault: str = "none"
    durability: faults.Durability = dataclasses.field(default_factory=faults.Durability)
    #: batches the consumers abandoned after their retry policy gave up (a retry storm, a
    #: database away): the stream keeps them pending and applies them later; the seed's
    #: list has already handed them out, and they are gone
    abandoned: int = 0

    def __post_init__(self) -> None:
        # Fail on a misspelt name here, not when the verdict is already being written.
        CounterStrategy.parse(self.counter)
        Isolation.parse(self.isolation)
        faults.fault(self.fault)

    @property
    def broker(self) -> str:
        return self.durability.broker

    @property
    def double_applied(self) -> int:
        return self.stored.rows - self.stored.distinct_keys

    @property
    def counters_expected_exact(self) -> bool:
        return (
            CounterStrategy.parse(self.counter).safe_at(self.isolation) and not self.loss_expected
        )

    @property
    def loss_expected(self) -> bool:
        """Whether this broker is known to lose events under this fault (or when its
        consumers abandon batches)."""
        if faults.fault(self.fault).admits_loss(self.durability):
            return True
        # the seed's list has handed out the events of an abandoned batch: they are gone
        return self.broker == "list" and self.abandoned > 0


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of the checks. The trial holds when ``violations`` is empty."""

    #: broken invariants, one readable line each
    violations: tuple[str, ...]
    #: counter breaks that are the strategy's expected anomaly at this isolation level
    anomalies: tuple[str, ...]
    #: events published (and not lost by Redis) but missing from ``received``. Every
    #: receipt adds 1 to ``received`` exactly once (redeliveries are recognised and add
    #: nothing), so this is how many events' counting a lost update overwrote, or a
    #: broker lost. Measured whatever the strategy: under a safe one any shortfall is
    #: also a violation.
    lost_updates: int

    @property
    def ok(self) -> bool:
        return not self.violations


def classify(ev: Evidence) -> Verdict:
    """Sort every broken invariant into a violation or an expected anomaly."""
    anomalous_counters_expected = not ev.counters_expected_exact
    violations: list[str] = []
    anomalies: list[str] = []
    for line, shortfall in _counter_breaks(ev):
        # A lost update can only drop increments, so an anomaly is a counter that falls
        # short. A counter that overshoots cannot come from one: that is a bug.
        if anomalous_counters_expected and shortfall:
            anomalies.append(line)
        else:
            violations.append(line)
    if anomalous_counters_expected and ev.stored.rows > ev.expected_unique:
        violations.append(f"rows stored {ev.stored.rows} > expected unique {ev.expected_unique}")
    elif (
        anomalous_counters_expected
        and ev.stored.rows != ev.expected_unique
        and not ev.loss_expected
    ):
        # Under a safe strategy the counter lines above already report this (the unique
        # counter cannot equal both); here they may have become anomalies, so say it.
        violations.append(f"rows stored {ev.stored.rows} != expected unique {ev.expected_unique}")
    for line, is_loss in _data_breaks(ev):
        (anomalies if ev.loss_expected and is_loss else violations).append(line)
    return Verdict(
        violations=tuple(violations),
        anomalies=tuple(anomalies),
        lost_updates=max(0, ev.published - ev.broker_lost - ev.counters.received),
    )


def check(ev: Evidence) -> list[str]:
    """Broken invariants, each as one readable line; empty when everything holds."""
    return list(classify(ev).violations)


def _counter_breaks(ev: Evidence) -> list[tuple[str, bool]]:
    """Each broken counter invariant, with whether it is a shortfall."""
    c, s = ev.counters, ev.stored
    broken = []
    expected = ev.published - ev.broker_lost
    if c.received != expected:
        what = f"events published {ev.published}"
        if ev.broker_lost:
            what += f" - lost by Redis {ev.broker_lost}"
        broken.append((f"received {c.received} != {what}", c.received < expected))
    if c.unique_processed != ev.expected_unique:
        broken.append(
            (
                f"unique_processed {c.unique_processed} != expected unique {ev.expected_unique}",
                c.unique_processed < ev.expected_unique,
            )
        )
    if c.unique_processed != s.rows:
        broken.append(
            (
                f"unique_processed {c.unique_processed} != rows stored {s.rows}",
                c.unique_processed < s.rows,
            )
        )
    if c.duplicate_dropped != c.received - c.unique_processed:
        # Never a shortfall: every strategy, rmw included, writes all three counters of a
        # row together from one consistent read, so a lost update drops whole batches and
        # keeps duplicate = received - unique. A mismatch is a bug in the counting.
        broken.append(
            (
                f"duplicate_dropped {c.duplicate_dropped} != received - unique "
                f"{c.received - c.unique_processed}",
                False,
            )
        )
    return broken


def _data_breaks(ev: Evidence) -> list[tuple[str, bool]]:
    """Each broken data invariant, with whether it is a loss."""
    s = ev.stored
    broken = []
    if ev.broker_lost:
        broken.append((f"Redis lost {ev.broker_lost} events it had confirmed", True))
    if ev.commit_lost:
        broken.append(
            (f"PostgreSQL took back {ev.commit_lost} events whose commit it had confirmed", True)
        )
    if ev.attributes_loss and s.lost > ev.commit_lost + ev.broker_lost:
        broken.append(
            (
                f"{s.lost - ev.commit_lost - ev.broker_lost} lost events are attributed to "
                "no cause: neither a commit taken back nor a write Redis forgot",
                False,
            )
        )
    if s.lost:
        broken.append((f"{s.lost} expected events are missing (lost)", True))
    if s.unexpected:
        broken.append((f"{s.unexpected} stored events were never published", False))
    if ev.double_applied:
        broken.append((f"{ev.double_applied} events are stored more than once", False))
    return broken
