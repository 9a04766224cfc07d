"""The verify phase: a trial's result from what the store holds and what its actors
counted; the invariants decide whether it held."""

from __future__ import annotations

from harness.model import latency
from harness.model.generator import Generator
from harness.model.retry import DEADLOCK_DETECTED, SERIALIZATION_FAILURE
from harness.store.batch import Counters, Verification
from harness.store.postgres import Store
from harness.trials import faults, invariants
from harness.trials.params import Trial
from harness.trials.results import TrialResult
from harness.trials.state import Outcome


def broker_lost(store: Store, trial: Trial, outcome: Outcome, confirmed: int) -> int:
    """Events Redis confirmed to a publisher that never reached the store: those of the
    confirmed entries whose identity is not among the applied ones. Only a Redis that
    crashed can lose them (a fault that ``measures_broker_loss``, before its AOF
    synced), so it is counted there, and only while every identity is still
    remembered (nothing pruned)."""
    kind = faults.fault(trial.params.fault)
    if not kind.measures_broker_loss or not outcome.producers or outcome.pruned:
        return 0
    _, applied = store.applied_entries(list(outcome.producers))
    return max(0, confirmed - applied)


def commits_lost(stored: Verification, outcome: Outcome) -> int:
    """Lost events a consumer had been told were committed: the database took the commit
    back (a crash with ``synchronous_commit = off``, a standby promoted before it had
    them). Counted where the consumers kept what they committed."""
    return len(outcome.committed_keys.intersection(stored.missing))


def result(
    store: Store, trial: Trial, generator: Generator, outcome: Outcome, error: str | None
) -> TrialResult:
    """The trial's result: what the store holds, checked against what was published
    (:func:`harness.trials.invariants.classify`), with what the actors counted."""
    counters = store.counters()
    stored = Verification(0, 0, 0, 0)
    verdict = invariants.Verdict(violations=(), anomalies=(), lost_updates=0)
    retries, lost_by_broker, commit_lost = outcome.retries(), 0, 0
    if outcome.ran:
        kind = faults.fault(trial.params.fault)
        stored = store.verify(generator.expected_keys(), with_missing=kind.records_commits)
        commit_lost = commits_lost(stored, outcome)
        if outcome.published != generator.total:
            error = f"publishers sent {outcome.published} events, the workload {generator.total}"
        confirmed = generator.total + outcome.resent - outcome.rejected
        lost_by_broker = broker_lost(store, trial, outcome, confirmed)
        verdict = _verdict(trial, generator, outcome, counters, stored, lost_by_broker, commit_lost)
    return TrialResult(
        trial=trial,
        events_published=outcome.published,
        expected_unique=generator.expected_unique,
        received=counters.received,
        unique_processed=counters.unique_processed,
        duplicate_dropped=counters.duplicate_dropped,
        db_rows=stored.rows,
        lost=stored.lost,
        unexpected=stored.unexpected,
        double_applied=stored.rows - stored.distinct_keys,
        redelivered=counters.redelivered,
        rejected=outcome.rejected,
        elapsed_s=outcome.elapsed_s,
        started_ns=outcome.first_ns,
        ended_ns=outcome.last_ns,
        reset_s=outcome.reset_s,
        **latency.summary_ms(outcome.latency),
        steady=outcome.steady,
        retries=sum(retries.values()),
        serialization_failures=retries.get(SERIALIZATION_FAILURE, 0),
        deadlocks=retries.get(DEADLOCK_DETECTED, 0),
        connection_retries=retries.get("connection", 0),
        violations=verdict.violations,
        anomalies=verdict.anomalies,
        lost_updates=verdict.lost_updates,
        faults_injected=outcome.faults_injected,
        in_flight_at_fault=outcome.in_flight_at_fault,
        faults_missed=outcome.faults_missed,
        fault_windows=outcome.fault_windows,
        fault_details=outcome.fault_details,
        resent=outcome.resent,
        recovered=outcome.resent_uncertain if stored.lost == 0 else 0,
        broker_lost=lost_by_broker,
        commit_lost=commit_lost,
        nodes=outcome.nodes,
        rss_peak_mb=outcome.rss_peak_mb,
        redis_peak_mb=outcome.redis_peak_mb,
        error=error,
    )


def _verdict(
    trial: Trial,
    generator: Generator,
    outcome: Outcome,
    counters: Counters,
    stored: Verification,
    lost_by_broker: int,
    commit_lost: int,
) -> invariants.Verdict:
    p = trial.params
    evidence = invariants.Evidence(
        # Rounds sent again as new after a lost reply are receipts of their own;
        # after a real connection error they keep their identities, and a copy
        # that arrived twice is recognised.
        published=generator.total + outcome.resent,
        expected_unique=generator.expected_unique,
        counters=counters,
        stored=stored,
        broker_lost=lost_by_broker,
        commit_lost=commit_lost,
        attributes_loss=faults.fault(p.fault).records_commits,
        counter=p.counter,
        isolation=p.isolation,
        fault=p.fault,
        durability=p.durability,
        abandoned=outcome.abandoned,
    )
    return invariants.classify(evidence)
