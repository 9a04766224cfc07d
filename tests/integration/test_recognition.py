"""Recognition of entries applied before, at the store, against a real PostgreSQL.

A stream entry carries an identity ``(producer, seq)``; the transaction that applies it
records the identity in ``applied_ranges``, and any later delivery of it (the broker's
redelivery, a publisher's retry of the same round) is skipped in the same statement:
it is no receipt and changes no counter but ``event_stats.redelivered``. A deliberate
re-send carries new identities and is a receipt (its events count as duplicates).

Every test asserts the counters exactly, on both ways a batch reaches PostgreSQL
(arrays for small batches, COPY from ``COPY_FROM`` rows) and with each counter strategy
and isolation level.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from harness.infra.config import Settings
from harness.model.events import Row
from harness.model.modes import CounterStrategy, Isolation
from harness.store.batch import ApplyResult, Counters, Entries
from harness.store.postgres import COPY_FROM, Store

pytestmark = pytest.mark.integration

PRODUCER = 7_000_000_000_000_000_001
OTHER_PRODUCER = 42
EVENTS_PER_ENTRY = 3
#: entries per batch: 12 rows go as arrays, 90 rows by COPY
SIZES = {"arrays": 4, "copy": 30}

ISOLATIONS = list(Isolation)
COUNTERS = list(CounterStrategy)


def row(key: int, topic: str = "t") -> Row:
    return (topic, f"e-{key:05d}", "2025-12-17T10:00:00Z", "recognition", f'{{"k": {key}}}')


@dataclasses.dataclass(frozen=True)
class Entry:
    """A stream entry as the store sees it: its identity, its time in the broker and its
    events."""

    producer: int
    seq: int
    rows: tuple[Row, ...]
    seen_ms: int = 1_000

    @property
    def events(self) -> int:
        return len(self.rows)


def entry(seq: int, keys: list[int], *, producer: int = PRODUCER, seen_ms: int = 1_000) -> Entry:
    return Entry(producer, seq, tuple(row(k) for k in keys), seen_ms)


def fresh_entries(n: int, first_seq: int = 0, first_key: int = 0) -> list[Entry]:
    """``n`` entries of ``EVENTS_PER_ENTRY`` events each, every key new."""
    return [
        entry(
            first_seq + i,
            [first_key + i * EVENTS_PER_ENTRY + j for j in range(EVENTS_PER_ENTRY)],
        )
        for i in range(n)
    ]


def batch_of(entries: list[Entry]) -> tuple[list[Row], Entries]:
    """The rows of these entries in order, and the :class:`Entries` naming them, as the
    consumer builds them (an identity that appears twice is passed twice)."""
    rows: list[Row] = []
    described = Entries([], [], [], [], [])
    for position, e in enumerate(entries, 1):
        described.producers.append(e.producer)
        described.seqs.append(e.seq)
        described.seen_ms.append(e.seen_ms)
        described.events.append(e.events)
        described.of_row.extend([position] * e.events)
        rows.extend(e.rows)
    return rows, described


def apply(store: Store, entries: list[Entry], shard: int = 0) -> ApplyResult:
    rows, described = batch_of(entries)
    return store.apply_rows(rows, entries=described, shard=shard)


def outcome(result: ApplyResult) -> tuple[int, int, int, int]:
    return result.received, result.unique, result.duplicate, result.redelivered


def staged_by_copy(store: Store) -> bool:
    """Whether this store's connection has taken the COPY path (it creates its staging
    table on the first COPY)."""
    found = store.conn.execute("SELECT to_regclass('pg_temp.staging')").fetchone()
    return found is not None and found[0] is not None


def keys_of(entries: list[Entry]) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for e in entries for r in e.rows}


# -- a redelivery ----------------------------------------------------------------------


@pytest.mark.parametrize("path", list(SIZES))
@pytest.mark.parametrize("isolation", ISOLATIONS, ids=lambda i: i.value)
@pytest.mark.parametrize("counter", COUNTERS, ids=lambda c: c.value)
def test_the_same_entries_applied_twice_are_recognised(
    make_store: Callable[..., Store], counter: CounterStrategy, isolation: Isolation, path: str
) -> None:
    """The second delivery of a batch (a redelivery after a crash between commit and
    ack) is no receipt: received 0, redelivered = its events, nothing stored twice."""
    store = make_store(counter=counter, isolation=isolation)
    entries = fresh_entries(SIZES[path])
    events = sum(e.events for e in entries)
    assert (events >= COPY_FROM) == (path == "copy")
    shard = 3 if counter is CounterStrategy.SHARDED else 0

    first = apply(store, entries, shard)
    assert outcome(first) == (events, events, 0, 0)
    # rmw counts in Python, so its batches never go by COPY
    assert staged_by_copy(store) == (path == "copy" and counter is not CounterStrategy.RMW)
    assert store.counters() == Counters(events, events, 0, 0)

    second = apply(store, entries, shard)
    assert outcome(second) == (0, 0, 0, events)
    assert store.counters() == Counters(events, events, 0, events)

    # a third delivery is recognised just the same
    assert outcome(apply(store, entries, shard)) == (0, 0, 0, events)
    assert store.counters() == Counters(events, events, 0, 2 * events)

    check = store.verify(keys_of(entries))
    assert (check.rows, check.lost, check.unexpected) == (events, 0, 0)
    assert store.applied_entry_count() == len(entries)
    assert store.applied_entries([PRODUCER]) == (len(entries), events)


@pytest.mark.parametrize("path", list(SIZES))
@pytest.mark.parametrize("counter", COUNTERS, ids=lambda c: c.value)
def test_a_deliberate_resend_with_new_identities_is_a_receipt(
    make_store: Callable[..., Store], counter: CounterStrategy, path: str
) -> None:
    """The same events under new identities (a publisher re-sending on purpose) are
    received again, as duplicates: the identity, not the content, decides."""
    store = make_store(counter=counter, isolation=Isolation.SERIALIZABLE)
    entries = fresh_entries(SIZES[path])
    events = sum(e.events for e in entries)
    apply(store, entries)
    resent = [dataclasses.replace(e, producer=OTHER_PRODUCER) for e in entries]
    assert outcome(apply(store, resent)) == (events, 0, events, 0)
    assert store.counters() == Counters(2 * events, events, events, 0)
    assert store.verify(keys_of(entries)).rows == events


# -- within one batch --------------------------------------------------------------------


def _in_batch_copy_cases() -> list[object]:
    cases: list[object] = []
    for counter in COUNTERS:
        for path in SIZES:
            cases.append(pytest.param(counter, path, id=f"{counter.value}-{path}"))
    return cases


@pytest.mark.parametrize(("counter", "path"), _in_batch_copy_cases())
def test_two_copies_of_one_identity_in_one_batch_count_once(
    make_store: Callable[..., Store], counter: CounterStrategy, path: str
) -> None:
    """A publisher's retry can land in the same read as the original: the batch then
    holds one identity twice. The first copy is the receipt, the second is recognised."""
    store = make_store(counter=counter)
    others = fresh_entries(SIZES[path], first_seq=1, first_key=100)
    twice = entry(0, [1, 2, 3])
    batch = [twice, *others[:2], twice, *others[2:]]
    events = sum(e.events for e in [twice, *others])
    assert (events + twice.events >= COPY_FROM) == (path == "copy")

    result = apply(store, batch)
    assert outcome(result) == (events, events, 0, twice.events)
    assert store.counters() == Counters(events, events, 0, twice.events)
    check = store.verify(keys_of(batch))
    assert (check.rows, check.lost, check.unexpected) == (events, 0, 0)
    assert store.applied_entry_count() == 1 + len(others)


@pytest.mark.parametrize("path", list(SIZES))
@pytest.mark.parametrize("counter", COUNTERS, ids=lambda c: c.value)
def test_a_real_duplicate_among_redelivered_entries_is_a_receipt(
    make_store: Callable[..., Store], counter: CounterStrategy, path: str
) -> None:
    """A batch mixing redelivered and fresh entries, where fresh entries repeat keys (the
    seed's re-sends of an event, under identities of their own): those events are
    received and dropped as duplicates, not taken for redeliveries."""
    store = make_store(counter=counter, isolation=Isolation.REPEATABLE_READ)
    old = fresh_entries(2)  # keys 0..5
    apply(store, old)

    repeats_stored = entry(10, [1000, 1])  # key 1 is stored already
    repeats_itself = entry(11, [1001, 1001])  # a key twice within the entry
    repeats_sibling = entry(12, [1000])  # repeats a key of an entry in this batch
    padding = fresh_entries(SIZES[path] - 2, first_seq=20, first_key=2000)
    batch = [old[1], repeats_stored, old[0], repeats_itself, repeats_sibling, *padding]
    assert (sum(e.events for e in batch) >= COPY_FROM) == (path == "copy")

    fresh = [repeats_stored, repeats_itself, repeats_sibling, *padding]
    received = sum(e.events for e in fresh)
    unique = len(keys_of(fresh) - keys_of(old))
    redelivered = sum(e.events for e in old)
    assert received - unique == 3  # key 1, the second 1001, the second 1000

    assert outcome(apply(store, batch)) == (received, unique, 3, redelivered)
    before = sum(e.events for e in old)
    assert store.counters() == Counters(before + received, before + unique, 3, redelivered)
    check = store.verify(keys_of(batch))
    assert (check.rows, check.lost, check.unexpected) == (before + unique, 0, 0)


# -- two connections at once ------------------------------------------------------------


def _waiting_on_locks(watcher: psycopg.Connection[tuple[object, ...]], names: list[str]) -> int:
    row = watcher.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = ANY(%s) AND wait_event_type = 'Lock'",
        [names],
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


@pytest.mark.parametrize("path", list(SIZES))
@pytest.mark.parametrize("counter", COUNTERS, ids=lambda c: c.value)
@pytest.mark.parametrize("isolation", ISOLATIONS, ids=lambda i: i.value)
def test_two_connections_applying_the_same_entries_count_them_once(
    settings: Settings,
    make_store: Callable[..., Store],
    isolation: Isolation,
    counter: CounterStrategy,
    path: str,
) -> None:
    """Two consumers apply the same entries at the same time (a reclaim racing a slow
    consumer). The overlap is forced: a third connection holds one of the batch's keys
    in an open transaction, so the first applier records the identities and waits on
    that key; the second then waits on the first's identities. When the key is let go,
    the first commits; the second finds the identities taken: at READ COMMITTED directly,
    at REPEATABLE READ and SERIALIZABLE after a 40001 that the retry policy absorbs.
    Exactly one of them counted the events; the other recognised them."""
    tag = settings.pg_schema
    names = [f"{tag}-first", f"{tag}-second"]
    stores = [
        make_store(isolation=isolation, counter=counter, application_name=name) for name in names
    ]
    entries = fresh_entries(SIZES[path])
    events = sum(e.events for e in entries)
    results: list[ApplyResult | None] = [None, None]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = apply(stores[i], entries, shard=i + 1)
        except BaseException as exc:
            errors.append(exc)

    blocker = psycopg.connect(settings.pg_dsn, options=f"-c search_path={settings.pg_schema}")
    watcher = psycopg.connect(settings.pg_dsn, autocommit=True)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    try:
        last = entries[-1].rows[-1]
        blocker.execute(
            "INSERT INTO processed_events (topic, event_id, ts, source, payload)"
            " VALUES (%s, %s, %s::timestamptz, %s, %s::jsonb)",
            last,
        )
        deadline = time.monotonic() + 20
        for started, thread in enumerate(threads, 1):
            thread.start()
            while _waiting_on_locks(watcher, names) < started:
                assert time.monotonic() < deadline, "the appliers never met"
                time.sleep(0.005)
        blocker.rollback()  # the key was never stored: only the appliers' rows count
    finally:
        blocker.close()
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join(60)
        watcher.close()
    assert not errors, errors

    first, second = results
    assert first is not None and second is not None
    assert outcome(first) == (events, events, 0, 0)
    assert outcome(second) == (0, 0, 0, events)
    # the second waited for the first to commit, was refused (23P01: its entries had been
    # applied), read what and applied the rest (nothing); at READ COMMITTED no 40001
    assert second.retries.get("23P01", 0) >= 1
    if isolation is Isolation.READ_COMMITTED:
        assert "40001" not in second.retries
    assert stores[0].counters() == Counters(events, events, 0, events)
    check = stores[0].verify(keys_of(entries))
    assert (check.rows, check.lost, check.unexpected) == (events, 0, 0)
    assert stores[0].applied_entry_count() == len(entries)


@pytest.mark.parametrize("isolation", ISOLATIONS, ids=lambda i: i.value)
def test_many_rounds_of_racing_appliers_count_each_entry_once(
    make_store: Callable[..., Store], isolation: Isolation
) -> None:
    """Unforced races: two threads behind a barrier apply the same batches, round after
    round (the sharded strategy, each on its own row). Whoever wins a round, the counters
    end with every event received once and recognised once."""
    stores = [make_store(isolation=isolation, counter="sharded") for _ in range(2)]
    rounds = [fresh_entries(4, first_seq=10 * r, first_key=100 * r) for r in range(15)]
    barrier = threading.Barrier(2)
    results: list[list[ApplyResult]] = [[], []]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for entries in rounds:
                barrier.wait(30)
                results[i].append(apply(stores[i], entries, shard=i + 1))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors

    per_round = 4 * EVENTS_PER_ENTRY
    for a, b in zip(*results, strict=True):
        assert sorted([outcome(a), outcome(b)]) == [
            (0, 0, 0, per_round),
            (per_round, per_round, 0, 0),
        ]
    total = per_round * len(rounds)
    assert stores[0].counters() == Counters(total, total, 0, total)


# -- pruning -----------------------------------------------------------------------------


def test_pruning_forgets_identities_below_the_bound_only(store: Store) -> None:
    old, edge, young = (
        entry(0, [0, 1], seen_ms=1_000),
        entry(1, [2], seen_ms=2_000),
        entry(2, [3, 4, 5], seen_ms=3_000),
    )
    for batch in ([old], [edge], [young]):  # a run each (a run goes by its latest seen_ms)
        apply(store, batch)
    assert store.applied_entry_count() == 3

    assert store.prune_applied(1_000) == 0  # strictly below the bound
    assert store.prune_applied(2_000) == 1
    assert store.applied_entries([PRODUCER]) == (2, 4)
    assert store.prune_applied(2_000) == 0
    assert store.prune_applied(2_001) == 1
    assert store.applied_entries([PRODUCER]) == (1, 3)
    assert store.applied_entry_count() == 1

    # the kept identity is still recognised…
    assert outcome(apply(store, [young])) == (0, 0, 0, 3)
    # …while a pruned one is a stranger again: its redelivery counts as a receipt (its
    # events as duplicates). This is why pruning must lag behind the oldest entry the
    # broker can still deliver, and behind a publisher's retries.
    assert outcome(apply(store, [old])) == (2, 0, 2, 0)
    assert store.counters() == Counters(6 + 2, 6, 2, 3)
    assert store.applied_entry_count() == 2  # recorded again
    assert store.verify(keys_of([old, edge, young])).rows == 6


def test_pruning_is_skipped_while_another_connection_prunes(
    settings: Settings, store: Store
) -> None:
    apply(store, fresh_entries(3))
    other = psycopg.connect(settings.pg_dsn)
    try:
        other.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))",
            [f"{settings.pg_schema}.applied_ranges"],
        )
        assert store.prune_applied(10**15) == 0
        assert store.applied_entry_count() == 3
    finally:
        other.rollback()
        other.close()
    assert store.prune_applied(10**15) == 3
    assert store.applied_entry_count() == 0
