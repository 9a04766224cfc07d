"""The idempotent apply against a real PostgreSQL, alone and under concurrency."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from harness.model.generator import Generator, Workload
from harness.model.modes import Isolation
from harness.store.batch import ApplyResult
from harness.store.postgres import Store

pytestmark = pytest.mark.integration


def test_duplicates_within_and_across_batches_are_counted_once(store: Store) -> None:
    gen = Generator(Workload(events=3000, duplicate_rate=0.4, topics=5, seed=7))
    events = list(gen.events())
    for i in range(0, len(events), 250):
        store.apply_batch(events[i : i + 250])
    # apply everything a second time: pure redelivery, all duplicates
    again = store.apply_batch(events)
    assert again.unique == 0 and again.duplicate == len(events)

    counters = store.counters()
    assert counters.received == 2 * len(events)
    assert counters.unique_processed == gen.expected_unique
    assert counters.duplicate_dropped == 2 * len(events) - gen.expected_unique
    check = store.verify(gen.expected_keys())
    assert (check.rows, check.lost, check.unexpected) == (gen.expected_unique, 0, 0)


def test_same_event_id_on_two_topics_is_two_events(store: Store) -> None:
    base = {"event_id": "same", "timestamp": "2025-12-17T10:00:00Z", "source": "s", "payload": {}}
    result = store.apply_batch([{**base, "topic": "a"}, {**base, "topic": "b"}])
    assert (result.unique, result.duplicate) == (2, 0)


@pytest.mark.parametrize("isolation", list(Isolation))
def test_eight_concurrent_callers_with_overlapping_duplicates(
    make_store: Callable[..., Store], isolation: Isolation
) -> None:
    """8 threads, each with its own connection, apply shuffled batches drawn from one key
    space, so every batch overlaps others. Counts must come out exact; retries are fine,
    an unhandled deadlock or serialization failure is not."""
    gen = Generator(Workload(events=16_000, duplicate_rate=0.5, topics=3, seed=11))
    events = list(gen.events())
    rng = random.Random(5)
    rng.shuffle(events)
    workers, per_batch = 8, 200
    shares = [events[i::workers] for i in range(workers)]
    stores = [make_store(isolation=isolation) for _ in range(workers)]
    results: list[list[ApplyResult]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(workers)

    def work(i: int) -> None:
        try:
            barrier.wait()
            share = shares[i]
            for j in range(0, len(share), per_batch):
                results[i].append(stores[i].apply_batch(share[j : j + per_batch]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors

    flat = [r for rs in results for r in rs]
    counters = stores[0].counters()
    assert counters.received == len(events) == sum(r.received for r in flat)
    assert counters.unique_processed == gen.expected_unique == sum(r.unique for r in flat)
    assert counters.duplicate_dropped == len(events) - gen.expected_unique
    check = stores[0].verify(gen.expected_keys())
    assert (check.rows, check.distinct_keys, check.lost, check.unexpected) == (
        gen.expected_unique,
        gen.expected_unique,
        0,
        0,
    )
    retries: dict[str, int] = {}
    for r in flat:
        for state, n in r.retries.items():
            retries[state] = retries.get(state, 0) + n
    # Sorted batches take their locks in one order: no deadlock to retry at any level.
    assert retries.get("40P01", 0) == 0
    if isolation is Isolation.READ_COMMITTED:
        assert retries == {}  # READ COMMITTED re-reads the counter row instead of failing


def _wait_until_blocked(conn: psycopg.Connection[Any], application_name: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock'",
            (application_name,),
        ).fetchone()
        if row and row[0]:
            return
        time.sleep(0.01)
    raise AssertionError("the apply never waited for the lock")


@pytest.mark.parametrize("isolation", [Isolation.REPEATABLE_READ, Isolation.SERIALIZABLE])
def test_a_concurrent_counter_update_is_retried_and_counted_by_sqlstate(
    make_store: Callable[..., Store], isolation: Isolation
) -> None:
    """Hold the counter row in another transaction, let the apply start and wait for it,
    then commit: at REPEATABLE READ and SERIALIZABLE the apply's snapshot is stale, its
    UPDATE fails with 40001, and the store retries the whole transaction."""
    store = make_store(isolation=isolation)
    store.counters()  # connect
    holder = psycopg.connect(store.dsn, options=f"-c search_path={store.schema}")
    holder.execute("UPDATE event_stats SET received = received + 1 WHERE shard = 0")
    event = {
        "topic": "t",
        "event_id": "e1",
        "timestamp": "2025-12-17T10:00:00Z",
        "source": "s",
        "payload": {},
    }
    outcome: list[ApplyResult] = []
    worker = threading.Thread(target=lambda: outcome.append(store.apply_batch([event])))
    worker.start()
    _wait_until_blocked(holder, "harness")
    holder.commit()
    holder.close()
    worker.join(30)

    assert outcome, "apply_batch did not finish"
    assert outcome[0].retries == {"40001": 1}
    assert outcome[0].attempts == 2
    counters = store.counters()
    assert (counters.received, counters.unique_processed) == (2, 1)  # holder's +1, then ours


def test_reset_empties_events_and_counters(store: Store) -> None:
    gen = Generator(Workload(events=500, duplicate_rate=0.2, topics=2, seed=1))
    store.apply_batch(list(gen.events()))
    store.reset()
    assert store.counters().received == 0
    assert store.verify([]).rows == 0
    assert store.schema_version() >= 1


@pytest.mark.parametrize("insert", ["unnest", "copy"])
def test_both_insert_paths_store_the_same(make_store: Callable[..., Store], insert: str) -> None:
    store = make_store(insert=insert)
    gen = Generator(Workload(events=2500, duplicate_rate=0.3, topics=4, seed=2))
    events = list(gen.events())
    results = [store.apply_batch(events[i : i + 300]) for i in range(0, len(events), 300)]
    assert sum(r.unique for r in results) == gen.expected_unique
    check = store.verify(gen.expected_keys())
    assert (check.rows, check.lost) == (gen.expected_unique, 0)
    store.close()  # a new connection must get its own staging table
    assert store.apply_batch(events[:10]).unique == 0


def test_a_rolled_back_first_batch_does_not_lose_the_staging_table(
    make_store: Callable[..., Store],
) -> None:
    store = make_store(insert="copy")
    bad = {"topic": "t", "event_id": "e", "timestamp": "not a time", "source": "", "payload": {}}
    with pytest.raises(psycopg.DataError):
        store.apply_batch([bad])
    good = {**bad, "timestamp": "2025-12-17T10:00:00Z"}
    assert store.apply_batch([good]).unique == 1


def test_a_failed_copy_batch_leaves_nothing_staged_for_the_next(
    make_store: Callable[..., Store],
) -> None:
    store = make_store(insert="copy")
    gen = Generator(Workload(events=100, duplicate_rate=0, topics=2, seed=4))
    events = list(gen.events())  # ≥ COPY_FROM distinct events: the COPY path
    broken = [*events[:-1], {**events[-1], "timestamp": "not a time"}]
    with pytest.raises(psycopg.DataError):
        store.apply_batch(broken)
    result = store.apply_batch(events)
    assert (result.received, result.unique) == (100, 100)
    assert store.counters().received == 100  # the failed attempt counted nothing
    assert store.verify(gen.expected_keys()).rows == 100


def test_the_staging_table_is_truncated_not_left_full_of_dead_rows(
    make_store: Callable[..., Store],
) -> None:
    """A temporary table is never vacuumed: emptying it with DELETE would leave dead rows
    that every later batch scans (a 10M-event run slowed to a crawl that way)."""
    store = make_store(insert="copy")
    gen = Generator(Workload(events=3000, duplicate_rate=0.3, topics=3, seed=8))
    events = list(gen.events())
    for i in range(0, len(events), 500):
        store.apply_batch(events[i : i + 500])
    size = store.conn.execute("SELECT pg_relation_size('staging')").fetchone()
    assert size == (0,)
