"""Fault plans: seeded moments, when the driver injects, which publisher rounds lose replies."""

from __future__ import annotations

import dataclasses

import pytest

from harness.store.batch import Counters, Verification
from harness.trials.faults import KINDS, Durability, FaultPlan
from harness.trials.invariants import Evidence, classify


def test_draw_is_seeded_sorted_and_mid_trial() -> None:
    a = FaultPlan.draw("kill-consumer", 5, seed=3)
    assert a == FaultPlan.draw("kill-consumer", 5, seed=3)
    assert a != FaultPlan.draw("kill-consumer", 5, seed=4)
    assert list(a.at) == sorted(a.at) and len(a.at) == 5
    assert all(0.1 <= x <= 0.8 for x in a.at)
    assert FaultPlan.draw("none", 5, seed=3).at == ()
    assert FaultPlan.draw("pg-terminate", 0, seed=3).at == ()


def test_unknown_kinds_and_bad_moments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        FaultPlan("meteor")
    with pytest.raises(ValueError):
        FaultPlan("pg-terminate", (0.5, 0.2))
    with pytest.raises(ValueError):
        FaultPlan("pg-terminate", (1.5,))


def test_due_counts_the_moments_reached_and_not_yet_injected() -> None:
    plan = FaultPlan("kill-consumer", (0.2, 0.5, 0.7))
    assert plan.due(done=10, total=100, injected=0) == 0
    assert plan.due(done=20, total=100, injected=0) == 1
    assert plan.due(done=60, total=100, injected=1) == 1
    assert plan.due(done=100, total=100, injected=0) == 3
    assert plan.due(done=100, total=100, injected=3) == 0
    assert FaultPlan("publisher-retry", (0.2,)).due(100, 100, 0) == 0  # not the driver's
    assert FaultPlan("none").due(100, 100, 0) == 0


def test_publisher_rounds_spread_the_moments_over_all_rounds() -> None:
    plan = FaultPlan("publisher-retry", (0.0, 0.45, 0.5, 0.99))
    # 10 + 10 rounds end to end: shares 0, .45, .5, .99 → rounds 0, 9, 10, 19
    assert plan.publisher_rounds([10, 10]) == [(0, 9), (0, 9)]
    assert FaultPlan("kill-consumer", (0.5,)).publisher_rounds([10, 10]) == [(), ()]
    assert plan.publisher_rounds([0, 0]) == [(), ()]


def test_every_kind_draws() -> None:
    for kind in KINDS:
        assert len(FaultPlan.draw(kind, 2, seed=1).at) == (0 if kind == "none" else 2)


def evidence(
    broker: str,
    fault: str,
    *,
    received: int,
    unique: int,
    rows: int,
    lost: int,
    unexpected: int = 0,
) -> Evidence:
    return Evidence(
        published=100,
        expected_unique=70,
        counters=Counters(received, unique, received - unique),
        stored=Verification(rows=rows, distinct_keys=rows, lost=lost, unexpected=unexpected),
        fault=fault,
        durability=Durability(broker),
    )


def test_the_list_brokers_loss_under_kill_consumer_is_an_expected_anomaly() -> None:
    verdict = classify(evidence("list", "kill-consumer", received=90, unique=65, rows=65, lost=5))
    assert verdict.violations == ()
    assert any("lost" in a for a in verdict.anomalies)
    assert verdict.lost_updates == 10


def test_the_same_loss_on_the_stream_broker_is_a_violation() -> None:
    verdict = classify(evidence("stream", "kill-consumer", received=90, unique=65, rows=65, lost=5))
    assert any("lost" in v for v in verdict.violations)


def test_the_list_broker_without_a_killing_fault_must_not_lose() -> None:
    verdict = classify(evidence("list", "pg-terminate", received=90, unique=65, rows=65, lost=5))
    assert verdict.violations


def test_events_never_published_are_a_violation_even_for_the_list() -> None:
    verdict = classify(
        evidence("list", "kill-consumer", received=100, unique=70, rows=71, lost=0, unexpected=1)
    )
    assert any("never published" in v for v in verdict.violations)


def test_a_crashed_redis_may_lose_its_last_second_only_with_everysec() -> None:
    lossy = evidence("stream", "redis-restart", received=95, unique=67, rows=67, lost=3)
    assert classify(lossy).violations == ()  # appendfsync defaults to everysec
    strict = dataclasses.replace(lossy, durability=Durability(appendfsync="always"))
    assert any("lost" in v for v in classify(strict).violations)


def test_under_load_faults_land_at_seeded_times_inside_the_window() -> None:
    plan = FaultPlan.draw("kill-consumer", 4, seed=3, window=(2.0, 8.0))
    assert plan == FaultPlan.draw("kill-consumer", 4, seed=3, window=(2.0, 8.0))
    assert plan.at == () and len(plan.at_s) == plan.count == 4
    # in the window's first 90%: while the load still flows
    assert all(2.0 <= t <= 2.0 + 0.9 * 6.0 for t in plan.at_s)
    assert list(plan.at_s) == sorted(plan.at_s)


def test_timed_faults_fall_due_by_the_clock_not_by_the_work_done() -> None:
    plan = FaultPlan("pg-terminate", at_s=(2.5, 4.0))
    assert plan.due(done=10**6, total=10, injected=0, elapsed_s=2.4) == 0
    assert plan.due(done=0, total=10, injected=0, elapsed_s=2.5) == 1
    assert plan.due(done=0, total=10, injected=1, elapsed_s=9.0) == 1
    assert plan.due(done=0, total=10, injected=2, elapsed_s=9.0) == 0


def test_a_plan_is_shares_or_times_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        FaultPlan("pg-terminate", (0.5,), at_s=(1.0,))
    with pytest.raises(ValueError, match="sorted"):
        FaultPlan("pg-terminate", at_s=(3.0, 1.0))


def test_under_load_publishers_take_the_retry_times_in_turn() -> None:
    plan = FaultPlan("publisher-retry", at_s=(1.0, 2.5, 4.0))
    origin = 1_000 * 10**9
    assert plan.publisher_times(2, origin) == [
        (origin + 10**9, origin + 4 * 10**9),
        (origin + 2_500_000_000,),
    ]
    assert FaultPlan("kill-consumer", at_s=(1.0,)).publisher_times(2, origin) == [(), ()]
