"""Fault kinds as objects: what each does to a trial, what it hit, what loss it admits."""

from __future__ import annotations

import pytest

from harness.trials import faults
from harness.trials.experiment import TrialParams


class FakeTarget:
    """A trial that records what was done to it; each look finds ``found`` at once."""

    def __init__(self, found: int = 4) -> None:
        self.found = found
        self.calls: list[str] = []

    def _look(self, name: str) -> int:
        self.calls.append(name)
        return self.found

    def kill_consumer(self) -> int:
        return self._look("kill_consumer")

    def busy_backends(self) -> int:
        return self._look("busy_backends")

    def terminate_backends(self) -> None:
        self.calls.append("terminate_backends")

    def unacknowledged(self) -> int:
        return self._look("unacknowledged")

    def restart_redis(self) -> None:
        self.calls.append("restart_redis")

    def held(self) -> int:
        return self._look("held")

    def kill_redis_clients(self) -> None:
        self.calls.append("kill_redis_clients")

    def pause_consumer(self) -> int:
        self.paused = True
        return self._look("pause_consumer")

    def pausing(self) -> bool:
        return getattr(self, "paused", False)


@pytest.mark.parametrize(
    ("name", "calls"),
    [
        ("kill-consumer", ["kill_consumer"]),
        ("pg-terminate", ["busy_backends", "terminate_backends"]),
        ("redis-client-kill", ["held", "kill_redis_clients"]),
        ("redis-restart", ["unacknowledged", "restart_redis"]),
        ("pause-consumer", ["pause_consumer"]),
    ],
)
def test_a_driver_side_fault_looks_at_what_is_in_flight_then_strikes(
    name: str, calls: list[str]
) -> None:
    target = FakeTarget(found=4)
    kind = faults.fault(name)
    assert kind.driver_side and not kind.publisher_side
    assert kind.inject(target) == 4
    assert target.calls == calls


@pytest.mark.parametrize("name", ["none", "publisher-retry"])
def test_faults_the_driver_does_not_inject_refuse_to_be(name: str) -> None:
    kind = faults.fault(name)
    assert not kind.driver_side
    with pytest.raises(NotImplementedError, match=name):
        kind.inject(FakeTarget())


def test_a_fault_that_finds_nothing_in_flight_waits_then_says_so() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    looks: list[float] = []

    def look() -> int:
        looks.append(now[0])
        return 0

    assert faults.first_nonzero(look, patience_s=0.1, clock=lambda: now[0], sleep=sleep) == 0
    assert looks[0] == 0.0 and 0.1 <= looks[-1] <= 0.11  # looked until its patience ran out
    seen = iter([0, 0, 3])
    assert faults.first_nonzero(lambda: next(seen), clock=lambda: now[0], sleep=sleep) == 3


@pytest.mark.parametrize(
    ("name", "broker", "appendfsync", "loses"),
    [
        ("none", "list", "everysec", False),
        ("kill-consumer", "list", "everysec", True),
        ("kill-consumer", "stream", "everysec", False),
        ("redis-client-kill", "list", "always", True),
        ("redis-client-kill", "stream", "everysec", False),
        ("pg-terminate", "list", "everysec", False),
        ("redis-restart", "stream", "everysec", True),
        ("redis-restart", "stream", "always", False),
        ("publisher-retry", "list", "everysec", False),
    ],
)
def test_each_kind_admits_the_loss_its_design_allows_and_no_other(
    name: str, broker: str, appendfsync: str, loses: bool
) -> None:
    assert faults.fault(name).admits_loss(faults.Durability(broker, appendfsync)) is loses


@pytest.mark.parametrize(("synchronous_commit", "loses"), [("on", False), ("off", True)])
def test_a_crashing_postgres_loses_only_what_it_had_not_flushed(
    synchronous_commit: str, loses: bool
) -> None:
    """With synchronous_commit off a commit is confirmed before its WAL is on disk."""
    kind = faults.fault("pg-crash")
    durability = faults.Durability("stream", "always", synchronous_commit=synchronous_commit)
    assert kind.admits_loss(durability) is loses
    assert kind.own_postgres and kind.records_commits and not kind.own_redis


def test_a_postgres_crash_hits_the_transactions_open_then_restarts_it() -> None:
    class Target(FakeTarget):
        def crash_postgres(self) -> None:
            self.calls.append("crash_postgres")

    target = Target(found=3)
    assert faults.fault("pg-crash").inject(target) == 3
    assert target.calls == ["busy_backends", "crash_postgres"]


def test_only_a_crashing_redis_needs_its_own_server_and_counts_what_it_lost() -> None:
    own = {k for k, f in faults.FAULTS.items() if f.own_redis}
    measured = {k for k, f in faults.FAULTS.items() if f.measures_broker_loss}
    assert own == {"redis-restart"}
    assert measured == {"redis-restart", "redis-failover"}
    assert {k for k, f in faults.FAULTS.items() if f.spares} == {"kill-consumer"}


def test_an_unknown_kind_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown fault 'kill-redis'; choose one of none, "):
        faults.fault("kill-redis")
    with pytest.raises(ValueError, match="unknown fault"):
        faults.FaultPlan("kill-redis")


def test_a_trial_over_http_cannot_crash_a_redis_of_its_own() -> None:
    with pytest.raises(ValueError, match="redis-restart, redis_replica = none runs a Redis"):
        TrialParams(ingress="http", fault="redis-restart")


def test_a_pause_lasts_and_waits_for_the_one_before_it_to_end() -> None:
    kind, target = faults.fault("pause-consumer"), FakeTarget()
    assert kind.lasting and not faults.fault("kill-consumer").lasting
    assert kind.ready(target)
    kind.inject(target)
    assert not kind.ready(target)  # one pause at a time
    assert faults.fault("kill-consumer").ready(target)


@pytest.mark.parametrize("broker", ["stream", "list"])
def test_a_pause_admits_no_loss(broker: str) -> None:
    """The paused consumer goes on and commits what it held: later, never lost."""
    assert not faults.fault("pause-consumer").admits_loss(faults.Durability(broker))


@pytest.mark.parametrize(("claim_idle_ms", "seconds"), [(500, 2.0), (2000, 5.0)])
def test_a_pause_outlasts_the_idle_time_peers_take_entries_over_after(
    claim_idle_ms: int, seconds: float
) -> None:
    assert faults.pause_s(claim_idle_ms) == seconds > claim_idle_ms / 1000


@pytest.mark.parametrize("window", [(1.0, 11.0), None])
def test_pauses_are_planned_a_slot_apart_so_each_can_end_before_the_next(
    window: tuple[float, float] | None,
) -> None:
    """One moment in the first half of each of ``count`` equal slots of the span."""
    plan = faults.FaultPlan.draw("pause-consumer", 3, seed=7, window=window)
    moments = plan.at_s if window else plan.at
    low, high = (1.0, 10.0) if window else (0.1, 0.8)
    slot = (high - low) / 3
    assert len(moments) == 3
    for i, moment in enumerate(moments):
        assert low + i * slot <= moment <= low + (i + 0.5) * slot
    assert faults.FaultPlan.draw("pause-consumer", 3, seed=7, window=window) == plan  # seeded


@pytest.mark.parametrize(
    ("pg_standby", "synchronous_commit", "loses"),
    [("sync", "on", False), ("async", "on", True), ("sync", "off", True)],
)
def test_a_failover_loses_what_the_standby_had_not_received(
    pg_standby: str, synchronous_commit: str, loses: bool
) -> None:
    """A synchronous standby flushed every commit before it was confirmed."""
    kind = faults.fault("pg-failover")
    durability = faults.Durability(
        "stream", "always", synchronous_commit=synchronous_commit, pg_standby=pg_standby
    )
    assert kind.admits_loss(durability) is loses
    assert kind.needs_standby and kind.own_postgres and kind.records_commits


def test_a_failover_hits_the_transactions_open_then_promotes_the_standby() -> None:
    class Target(FakeTarget):
        def fail_over_postgres(self) -> None:
            self.calls.append("fail_over_postgres")

    target = Target(found=2)
    assert faults.fault("pg-failover").inject(target) == 2
    assert target.calls == ["busy_backends", "fail_over_postgres"]


@pytest.mark.parametrize(
    ("redis_replica", "appendfsync", "loses"),
    [("wait", "everysec", False), ("async", "always", True), ("async", "everysec", True)],
)
def test_a_redis_failover_loses_what_the_replica_had_not_received(
    redis_replica: str, appendfsync: str, loses: bool
) -> None:
    """WAIT kept every round on the replica before it counted as sent; the primary's AOF
    does not matter, since its replica takes over."""
    kind = faults.fault("redis-failover")
    durability = faults.Durability("stream", appendfsync, redis_replica=redis_replica)
    assert kind.admits_loss(durability) is loses
    assert kind.needs_replica and kind.measures_broker_loss and kind.spaced
    assert not (kind.own_redis or kind.own_postgres or kind.records_commits)


def test_a_redis_failover_hits_the_entries_in_flight_then_promotes_the_replica() -> None:
    class Target(FakeTarget):
        def fail_over_redis(self) -> None:
            self.calls.append("fail_over_redis")

    target = Target(found=5)
    assert faults.fault("redis-failover").inject(target) == 5
    assert target.calls == ["unacknowledged", "fail_over_redis"]


def test_a_fault_the_driver_does_not_inject_says_so() -> None:
    with pytest.raises(NotImplementedError, match="publisher-retry is not injected"):
        faults.fault("publisher-retry").inject(FakeTarget())
