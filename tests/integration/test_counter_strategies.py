"""The three counter strategies against a real PostgreSQL, under 8 concurrent callers.

The numbers these tests assert are the ones the harness exists to show: ``rmw`` at READ
COMMITTED loses updates (and the invariants call that an expected anomaly), the same
conflicts are 40001 retries at REPEATABLE READ and SERIALIZABLE, and ``sharded`` removes
the retries that ``atomic``'s one hot row causes.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from harness.model.generator import Generator, Workload
from harness.model.modes import CounterStrategy, Isolation
from harness.store.batch import ApplyResult, Counters, Verification
from harness.store.postgres import Store
from harness.trials import invariants

pytestmark = pytest.mark.integration

WORKERS = 8
#: small batches: many short transactions, so many of them meet on the counter row
PER_BATCH = 20


@dataclasses.dataclass(frozen=True)
class Outcome:
    events: int
    generator: Generator
    results: list[ApplyResult]
    verdict: invariants.Verdict
    counters: Counters
    stored: Verification

    @property
    def applied(self) -> int:
        """Events of committed batches, by the callers' own count."""
        return sum(r.received for r in self.results)

    def retries(self, sqlstate: str) -> int:
        return sum(r.retries.get(sqlstate, 0) for r in self.results)


def run_concurrently(
    make_store: Callable[..., Store],
    *,
    counter: CounterStrategy,
    isolation: Isolation,
    events: int = 8_000,
    overlapping: bool = True,
) -> Outcome:
    """8 threads, each with its own connection and its own shard, start together behind a
    barrier and apply their share in batches of ``PER_BATCH``.

    ``overlapping``: shares drawn from one shuffled key space, so batches insert the same
    keys concurrently. Otherwise each thread owns a disjoint range of keys, and the
    counters are the only thing the threads can conflict on.
    """
    gen = Generator(Workload(events=events, duplicate_rate=0.5, topics=3, seed=11))
    evs = list(gen.events())
    if overlapping:
        random.Random(5).shuffle(evs)
        shares = [evs[i::WORKERS] for i in range(WORKERS)]
    else:
        evs.sort(key=lambda e: (e["topic"], e["event_id"]))
        cut = [len(evs) * i // WORKERS for i in range(WORKERS + 1)]
        shares = [evs[cut[i] : cut[i + 1]] for i in range(WORKERS)]
    stores = [make_store(isolation=isolation, counter=counter) for _ in range(WORKERS)]
    for s in stores:
        s.connect()  # before the barrier, so the threads really start together
    results: list[list[ApplyResult]] = [[] for _ in range(WORKERS)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(WORKERS)

    def work(i: int) -> None:
        try:
            barrier.wait()
            share = shares[i]
            for j in range(0, len(share), PER_BATCH):
                results[i].append(stores[i].apply_batch(share[j : j + PER_BATCH], shard=i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors

    counters = stores[0].counters()
    stored = stores[0].verify(gen.expected_keys())
    evidence = invariants.Evidence(
        published=len(evs),
        expected_unique=gen.expected_unique,
        counters=counters,
        stored=stored,
        counter=counter.value,
        isolation=isolation.value,
    )
    return Outcome(
        events=len(evs),
        generator=gen,
        results=[r for rs in results for r in rs],
        verdict=invariants.classify(evidence),
        counters=counters,
        stored=stored,
    )


def assert_rows_exact(out: Outcome) -> None:
    """Whatever the counters say, every event is stored exactly once."""
    unique = out.generator.expected_unique
    s = out.stored
    assert (s.rows, s.distinct_keys, s.lost, s.unexpected) == (unique, unique, 0, 0)
    assert out.applied == out.events, "every batch committed"
    assert sum(r.unique for r in out.results) == unique


def assert_counters_exact(out: Outcome) -> None:
    c = out.counters
    unique = out.generator.expected_unique
    assert (c.received, c.unique_processed, c.duplicate_dropped) == (
        out.events,
        unique,
        out.events - unique,
    )
    assert out.verdict == invariants.Verdict(violations=(), anomalies=(), lost_updates=0)


def test_rmw_at_read_committed_loses_updates_and_says_so(
    make_store: Callable[..., Store],
) -> None:
    out = run_concurrently(
        make_store, counter=CounterStrategy.RMW, isolation=Isolation.READ_COMMITTED
    )
    assert_rows_exact(out)
    c = out.counters
    # The lost update, measured: batches that committed, whose counts were overwritten.
    assert c.received < out.events
    assert c.unique_processed < out.generator.expected_unique
    # Each write replaces the whole row from one consistent read: whole batches vanish
    # from the counters, and the counters stay consistent with each other.
    assert c.duplicate_dropped == c.received - c.unique_processed
    # READ COMMITTED raises nothing: the overwrite is silent.
    assert all(r.retries == {} for r in out.results)

    verdict = out.verdict
    assert verdict.violations == ()
    assert verdict.ok
    assert verdict.lost_updates == out.events - c.received > 0
    assert any("received" in line for line in verdict.anomalies), verdict.anomalies


@pytest.mark.parametrize("isolation", [Isolation.REPEATABLE_READ, Isolation.SERIALIZABLE])
def test_rmw_conflicts_become_40001_retries_above_read_committed(
    make_store: Callable[..., Store], isolation: Isolation
) -> None:
    out = run_concurrently(make_store, counter=CounterStrategy.RMW, isolation=isolation)
    assert_rows_exact(out)
    assert_counters_exact(out)
    assert out.retries("40001") > 0
    assert out.retries("40P01") == 0


@pytest.mark.parametrize("isolation", list(Isolation))
def test_sharded_counts_exactly_at_every_level(
    make_store: Callable[..., Store], isolation: Isolation
) -> None:
    out = run_concurrently(make_store, counter=CounterStrategy.SHARDED, isolation=isolation)
    assert_rows_exact(out)
    assert_counters_exact(out)
    assert out.retries("40P01") == 0
    if isolation is Isolation.READ_COMMITTED:
        assert all(r.retries == {} for r in out.results)


def test_sharded_removes_the_hot_row_retries_at_repeatable_read(
    make_store: Callable[..., Store],
) -> None:
    """Disjoint keys: the counters are the only shared thing. On ``atomic``'s one row the
    threads collide into 40001s; on a row each, they never do."""
    rr = Isolation.REPEATABLE_READ
    kwargs: dict[str, Any] = {"isolation": rr, "overlapping": False}
    atomic = run_concurrently(make_store, counter=CounterStrategy.ATOMIC, **kwargs)
    make_store().reset()
    sharded = run_concurrently(make_store, counter=CounterStrategy.SHARDED, **kwargs)
    for out in (atomic, sharded):
        assert_rows_exact(out)
        assert_counters_exact(out)
    assert atomic.retries("40001") > 0
    assert sharded.retries("40001") == 0


def test_sharded_has_fewer_retries_than_atomic_with_overlapping_keys(
    make_store: Callable[..., Store],
) -> None:
    """Overlapping keys still conflict on insert at REPEATABLE READ (40001 on ON CONFLICT
    against a row committed after the snapshot); only the counter conflicts go away.
    (``atomic`` alone, at every level, is tested in test_store_concurrency.py.)"""
    rr = Isolation.REPEATABLE_READ
    atomic = run_concurrently(make_store, counter=CounterStrategy.ATOMIC, isolation=rr)
    make_store().reset()
    sharded = run_concurrently(make_store, counter=CounterStrategy.SHARDED, isolation=rr)
    assert_counters_exact(atomic)
    assert_counters_exact(sharded)
    assert sharded.retries("40001") < atomic.retries("40001")


# -- one caller -----------------------------------------------------------------------


def _counter_rows(store: Store) -> list[tuple[int, int]]:
    with psycopg.connect(store.dsn, options=f"-c search_path={store.schema}") as conn:
        rows = conn.execute("SELECT shard, received FROM event_stats ORDER BY shard").fetchall()
    return [(int(shard), int(received)) for shard, received in rows]


@pytest.mark.parametrize("counter", list(CounterStrategy))
def test_each_strategy_counts_one_callers_batches_and_redelivery(
    make_store: Callable[..., Store], counter: CounterStrategy
) -> None:
    store = make_store(counter=counter)
    gen = Generator(Workload(events=1000, duplicate_rate=0.4, topics=4, seed=3))
    evs = list(gen.events())
    for i in range(0, len(evs), 100):
        store.apply_batch(evs[i : i + 100], shard=3)
    store.apply_batch(evs[:100], shard=3)  # a redelivery: all duplicates
    c = store.counters()
    assert (c.received, c.unique_processed) == (len(evs) + 100, gen.expected_unique)
    assert c.duplicate_dropped == len(evs) + 100 - gen.expected_unique
    # only sharded writes to the caller's shard; atomic and rmw keep to row 0
    used = 3 if counter is CounterStrategy.SHARDED else 0
    assert [shard for shard, received in _counter_rows(store) if received] == [used]


def test_reset_leaves_row_0_and_sharded_recreates_its_rows(
    make_store: Callable[..., Store],
) -> None:
    sharded = make_store(counter="sharded")
    event = {"topic": "t", "event_id": "e", "timestamp": "2025-12-17T10:00:00Z", "payload": {}}
    for shard in (1, 2):
        sharded.apply_batch([event], shard=shard)
    assert [s for s, _ in _counter_rows(sharded)] == [0, 1, 2]

    sharded.reset()
    assert _counter_rows(sharded) == [(0, 0)]
    assert sharded.counters().received == 0

    sharded.apply_batch([event], shard=2)
    make_store(counter="rmw").apply_batch([event])
    assert _counter_rows(sharded) == [(0, 1), (2, 1)]
    c = sharded.counters()
    assert (c.received, c.unique_processed, c.duplicate_dropped) == (2, 1, 1)
