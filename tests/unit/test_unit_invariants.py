"""The post-trial checks: each invariant, broken alone, is reported alone."""

from __future__ import annotations

import dataclasses

import pytest

from harness.store.batch import Counters, Verification
from harness.trials.faults import Durability
from harness.trials.invariants import Evidence, check, classify

PUBLISHED, UNIQUE = 1_000, 700


def evidence(
    received: int = PUBLISHED,
    unique: int = UNIQUE,
    duplicate: int | None = None,
    rows: int = UNIQUE,
    distinct: int | None = None,
    lost: int = 0,
    unexpected: int = 0,
    broker_lost: int = 0,
) -> Evidence:
    """Consistent evidence unless a keyword says otherwise."""
    return Evidence(
        published=PUBLISHED,
        expected_unique=UNIQUE,
        counters=Counters(received, unique, received - unique if duplicate is None else duplicate),
        stored=Verification(rows, rows if distinct is None else distinct, lost, unexpected),
        broker_lost=broker_lost,
    )


def test_consistent_evidence_breaks_nothing() -> None:
    assert check(evidence()) == []


def test_no_duplicates_at_all_is_consistent() -> None:
    ev = Evidence(
        published=10,
        expected_unique=10,
        counters=Counters(10, 10, 0),
        stored=Verification(10, 10, 0, 0),
    )
    assert check(ev) == []


@pytest.mark.parametrize(
    ("ev", "message"),
    [
        (evidence(received=PUBLISHED + 1), f"received {PUBLISHED + 1} != events published"),
        (evidence(received=PUBLISHED - 1), f"received {PUBLISHED - 1} != events published"),
        (
            evidence(unique=UNIQUE - 1, rows=UNIQUE - 1),
            f"unique_processed {UNIQUE - 1} != expected unique {UNIQUE}",
        ),
        (evidence(rows=UNIQUE + 1), f"!= rows stored {UNIQUE + 1}"),
        (
            evidence(duplicate=PUBLISHED - UNIQUE - 1),
            f"duplicate_dropped {PUBLISHED - UNIQUE - 1} != received - unique",
        ),
        (evidence(lost=3), "3 expected events are missing"),
        (evidence(unexpected=2), "2 stored events were never published"),
    ],
    ids=[
        "received-high",
        "received-low",
        "unique-vs-expected",
        "unique-vs-rows",
        "duplicate",
        "lost",
        "unexpected",
    ],
)
def test_each_broken_invariant_is_reported_alone(ev: Evidence, message: str) -> None:
    broken = check(ev)
    assert len(broken) == 1, broken
    assert message in broken[0]


def test_double_applied_rows_are_reported() -> None:
    # rows counts a key twice: rows > distinct keys (impossible with the primary key)
    ev = evidence(unique=UNIQUE, rows=UNIQUE + 2, distinct=UNIQUE)
    assert ev.double_applied == 2
    broken = check(ev)
    assert any("2 events are stored more than once" in line for line in broken), broken
    assert any("!= rows stored" in line for line in broken), broken


def test_several_broken_invariants_are_all_reported() -> None:
    ev = evidence(received=PUBLISHED - 5, unique=UNIQUE - 5, rows=UNIQUE - 5, lost=5)
    broken = check(ev)
    assert len(broken) == 3, broken
    assert any("received" in line for line in broken)
    assert any("expected unique" in line for line in broken)
    assert any("missing" in line for line in broken)


@pytest.mark.parametrize("extra", [1, 5])
def test_received_is_exact_redeliveries_excuse_nothing(extra: int) -> None:
    # A redelivery is recognised and counted only in `redelivered`: one event counted
    # twice as received is a violation, whatever was redelivered.
    ev = dataclasses.replace(
        evidence(received=PUBLISHED + extra),
        counters=Counters(PUBLISHED + extra, UNIQUE, PUBLISHED + extra - UNIQUE, redelivered=50),
    )
    broken = check(ev)
    assert broken == [f"received {PUBLISHED + extra} != events published {PUBLISHED}"]


def test_what_redis_lost_is_measured_an_anomaly_with_everysec_a_violation_with_always() -> None:
    from harness.trials.invariants import classify

    lost = dataclasses.replace(
        evidence(received=PUBLISHED - 30, unique=UNIQUE - 20, rows=UNIQUE - 20, lost=20),
        broker_lost=30,
        fault="redis-restart",
    )
    verdict = classify(lost)
    assert not verdict.violations, verdict.violations
    assert any("Redis lost 30 events it had confirmed" in line for line in verdict.anomalies)
    # received is exactly what was published less what Redis lost: nothing else short
    assert verdict.lost_updates == 0
    always = classify(dataclasses.replace(lost, durability=Durability(appendfsync="always")))
    assert any("Redis lost 30 events" in line for line in always.violations)
    # received short by more than Redis lost: a violation even with everysec
    worse = dataclasses.replace(
        lost, counters=Counters(PUBLISHED - 31, UNIQUE - 20, PUBLISHED - 31 - UNIQUE + 20)
    )
    assert any(
        "received" in line for line in classify(worse).anomalies + classify(worse).violations
    )


def test_evidence_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        evidence().published = 3  # type: ignore[misc]


def test_the_list_losing_an_abandoned_batch_is_its_expected_anomaly_the_stream_never() -> None:
    from harness.trials.invariants import classify

    lost = dataclasses.replace(
        evidence(received=PUBLISHED - 44, unique=UNIQUE - 44, rows=UNIQUE - 44, lost=44),
        durability=Durability("list"),
        isolation="serializable",
    )
    # no fault, nothing abandoned: the list lost events for no known reason: a violation
    assert classify(lost).violations
    # a consumer gave up a batch after a serialization-failure storm: the list had handed
    # it out already, so it is gone; that is the seed's design, measured
    abandoned = dataclasses.replace(lost, abandoned=1)
    verdict = classify(abandoned)
    assert not verdict.violations and verdict.anomalies
    # the stream keeps an abandoned batch pending: losing it there is a bug
    assert classify(dataclasses.replace(abandoned, durability=Durability("stream"))).violations


# -- losses attributed: commits PostgreSQL took back ---------------------------------------


def crashed(
    *, lost: int, commit_lost: int, synchronous_commit: str, broker_lost: int = 0
) -> Evidence:
    """A pg-crash trial whose crash took back ``commit_lost`` confirmed events' commits:
    their batches' receipts are gone from the counters with their rows."""
    return Evidence(
        published=PUBLISHED,
        expected_unique=UNIQUE,
        counters=Counters(PUBLISHED - lost, UNIQUE - lost, PUBLISHED - UNIQUE),
        stored=Verification(UNIQUE - lost, UNIQUE - lost, lost, 0),
        commit_lost=commit_lost,
        broker_lost=broker_lost,
        attributes_loss=True,
        fault="pg-crash",
        durability=Durability(synchronous_commit=synchronous_commit),
    )


def test_commits_taken_back_with_synchronous_commit_off_are_the_expected_loss() -> None:
    verdict = classify(crashed(lost=5, commit_lost=5, synchronous_commit="off"))
    assert verdict.ok
    assert "PostgreSQL took back 5 events whose commit it had confirmed" in verdict.anomalies


def test_with_synchronous_commit_on_a_commit_taken_back_is_a_violation() -> None:
    verdict = classify(crashed(lost=5, commit_lost=5, synchronous_commit="on"))
    assert "PostgreSQL took back 5 events whose commit it had confirmed" in verdict.violations


def test_a_loss_attributed_to_no_cause_is_a_violation_whatever_the_settings() -> None:
    verdict = classify(crashed(lost=5, commit_lost=3, synchronous_commit="off"))
    assert any("2 lost events are attributed to no cause" in v for v in verdict.violations)
