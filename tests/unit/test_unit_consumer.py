"""The consumer's configuration, and its apply step with the broker and store stubbed."""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
import psycopg.errors as pge
import pytest

from harness.delivery.protocol import (
    FIELD_CREATED_NS,
    FIELD_EVENTS,
    FIELD_PRODUCER,
    FIELD_SEQ,
    Delivery,
)
from harness.pipeline.consumer import Consumer, ConsumerConfig
from harness.store.batch import ApplyResult, Entries, prepare


@pytest.mark.parametrize(
    ("batch_size", "entry_size"), [(100, 1), (100, 3), (100, 100), (100, 250), (1, 10), (7, 2)]
)
def test_read_count_is_the_entries_needed_for_a_batch(batch_size: int, entry_size: int) -> None:
    cfg = ConsumerConfig(name="c", batch_size=batch_size, entry_size=entry_size)
    assert cfg.read_count == max(1, math.ceil(batch_size / entry_size))
    # enough entries to hold a batch, and one fewer would not be
    assert cfg.read_count * entry_size >= batch_size
    assert (cfg.read_count - 1) * entry_size < batch_size


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": 0}, {"entry_size": 0}, {"batch_size": -1}, {"entry_size": -2}]
)
def test_config_rejects_non_positive_sizes(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ConsumerConfig(name="c", **kwargs)


# -- apply, with stubs ----------------------------------------------------------------


class FakeBroker:
    def __init__(self) -> None:
        self.acked: list[bytes] = []
        self.dead: list[tuple[bytes, str]] = []
        self.touched: list[list[bytes]] = []
        self.log: list[str] = []
        self.to_read: list[Delivery] = []

    def touch(self, consumer: str, entry_ids: list[bytes]) -> None:
        self.touched.append(list(entry_ids))

    def read(
        self, consumer: str, count: int, block_ms: int, ack: Sequence[bytes] = ()
    ) -> list[Delivery]:
        self.log.append("read")
        if ack:
            self.ack(list(ack))
        batch, self.to_read = self.to_read[:count], self.to_read[count:]
        return batch

    def read_own_pending(self, consumer: str, count: int) -> list[Delivery]:
        return []

    def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]:
        self.log.append("reclaim")
        return []

    def trim(self) -> int:
        return 0

    def ack(self, entry_ids: list[bytes]) -> int:
        self.log.append("ack")
        self.acked.extend(entry_ids)
        return len(entry_ids)

    def dead_letter(
        self, delivery: Delivery, reason: str, *, consumer: str, ack: bool = True
    ) -> None:
        self.dead.append((delivery.entry_id, reason))


class FakeStore:
    def __init__(self, fail: Exception | None = None, retries: int = 0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail
        self.retries = retries
        #: identities applied, as the real store's applied_ranges holds them
        self.applied: set[tuple[int, int]] = set()

    def apply_rows(
        self, rows: list[tuple[str, ...]], *, entries: Entries | None = None, **kwargs: Any
    ) -> ApplyResult:
        """The consumer's entry point; records the batch as event dicts again, and skips
        the rows of entries whose identity it has applied (as the real store does)."""
        keys = ("topic", "event_id", "timestamp", "source")
        batch = [
            {**dict(zip(keys, r[:4], strict=True)), "payload": orjson.loads(r[4])} for r in rows
        ]
        if entries is None:
            return self.apply_batch(batch, **kwargs)
        identities = list(zip(entries.producers, entries.seqs, strict=True))
        assert len(entries.of_row) == len(rows) and len(entries.events) == len(identities)
        seen = set(self.applied)
        fresh = set()
        for i, ident in enumerate(identities, 1):
            if ident not in seen:
                fresh.add(i)
                seen.add(ident)
        taken = [e for e, i in zip(batch, entries.of_row, strict=True) if i in fresh]
        result = self.apply_batch(taken, **kwargs)
        if not self.fail:
            self.applied.update(identities[i - 1] for i in fresh)
        return dataclasses.replace(result, redelivered=len(batch) - len(taken))

    def refusal(self, rows: list[tuple[str, ...]]) -> Exception | None:
        """What applying these rows would raise (nothing is recorded)."""
        batches = list(self.batches)
        try:
            self.apply_rows(rows, before_retry=lambda: None)
        except psycopg.DatabaseError as exc:
            return exc
        finally:
            self.batches = batches
        return None

    def apply_batch(
        self, batch: list[dict[str, Any]], *, shard: int = 0, **kwargs: Any
    ) -> ApplyResult:
        self.batches.append(batch)
        for _ in range(self.retries):
            kwargs["before_retry"]()
        if self.fail:
            raise self.fail
        p = prepare(batch)
        return ApplyResult(p.received, p.distinct, p.received - p.distinct, 1, {"40001": 1})


def event(i: int) -> dict[str, Any]:
    return {
        "topic": "t",
        "event_id": f"e{i}",
        "timestamp": "2025-12-17T00:00:00Z",
        "source": "s",
        "payload": {"i": i},
    }


def delivery(entry_id: bytes, payload: bytes, *, redelivered: bool = False) -> Delivery:
    fields = {FIELD_EVENTS: payload, FIELD_CREATED_NS: b"1000000000"}
    return Delivery(entry_id, fields, redelivered)


def consumer(store: FakeStore, broker: FakeBroker) -> Consumer:
    return Consumer(
        broker,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        ConsumerConfig(name="c1"),
        clock_ns=lambda: 1_005_000_000,  # 5 ms after creation
    )


def test_apply_stores_valid_entries_dead_letters_bad_ones_and_acks() -> None:
    broker, store = FakeBroker(), FakeStore()
    c = consumer(store, broker)
    deliveries = [
        delivery(b"1-0", orjson.dumps([event(1), event(2)])),
        delivery(b"2-0", b"not json"),
        delivery(b"3-0", orjson.dumps([event(3), {**event(4), "topic": ""}])),
        delivery(b"4-0", orjson.dumps([event(1)]), redelivered=True),
    ]
    applied = c.apply(deliveries)
    assert applied == 3
    assert store.batches == [[event(1), event(2), event(1)]]
    assert [entry for entry, _ in broker.dead] == [b"2-0", b"3-0"]
    assert "topic" in broker.dead[1][1]
    assert broker.acked == [b"1-0", b"4-0"]  # dead letters are acked by dead_letter itself
    stats = c.stats
    assert (stats.batches, stats.received, stats.unique, stats.duplicate) == (1, 3, 2, 1)
    # entry 4-0 came back from the pending list; not applied before, so it is a receipt
    assert (stats.rejected, stats.redelivered, stats.delivered_again) == (2, 0, 1)
    assert broker.log == ["ack"]
    assert stats.retries == {"40001": 1}
    assert stats.last_commit_ns == 1_005_000_000
    assert stats.histogram.get_total_count() == 3
    assert stats.histogram.values_are_equivalent(stats.histogram.get_max_value(), 5_000)


def identified(
    entry_id: bytes, producer: int, seq: int, *evs: int, again: bool = False
) -> Delivery:
    fields = {
        FIELD_EVENTS: orjson.dumps([event(i) for i in evs]),
        FIELD_CREATED_NS: b"1000000000",
        FIELD_PRODUCER: str(producer).encode(),
        FIELD_SEQ: str(seq).encode(),
    }
    return Delivery(entry_id, fields, again)


def test_the_consumer_hands_the_store_each_entrys_identity_and_time() -> None:
    store = FakeStore()
    captured: list[Entries] = []
    apply_rows = store.apply_rows

    def spy(rows: list[tuple[str, ...]], **kwargs: Any) -> ApplyResult:
        captured.append(kwargs["entries"])
        return apply_rows(rows, **kwargs)

    store.apply_rows = spy  # type: ignore[method-assign]
    c = consumer(store, FakeBroker())
    c.apply(
        [
            identified(b"1700000000123-4", 9, 0, 1, 2),
            Delivery(
                b"1700000000500-0",
                {FIELD_EVENTS: orjson.dumps([event(3)]), FIELD_CREATED_NS: b"1"},
                False,
            ),
        ]
    )
    (entries,) = captured
    assert entries.producers[0] == 9 and entries.seqs[0] == 0
    # an entry without an identity is known by its stream id
    assert entries.producers[1] == 0 and entries.seqs[1] == 1700000000500 << 20
    assert entries.seen_ms == [1700000000123, 1700000000500]
    assert entries.events == [2, 1] and entries.of_row == [1, 1, 2]


def test_an_entry_applied_before_is_skipped_and_counted_only_as_redelivered() -> None:
    broker, store = FakeBroker(), FakeStore()
    c = consumer(store, broker)
    c.apply([identified(b"1-0", 7, 0, 1, 2), identified(b"2-0", 7, 1, 3)])
    # the first entry again (a redelivery), and a publisher's retry of the second under
    # a new stream id, with a fresh entry between them
    c.apply(
        [
            identified(b"1-0", 7, 0, 1, 2, again=True),
            identified(b"3-0", 7, 2, 4),
            identified(b"4-0", 7, 1, 3),
        ]
    )
    s = c.stats
    assert (s.received, s.unique, s.duplicate, s.redelivered) == (4, 4, 0, 3)
    assert s.delivered_again == 2
    assert broker.acked == [b"1-0", b"2-0", b"1-0", b"3-0", b"4-0"]


def test_nothing_is_acked_when_the_transaction_fails() -> None:
    broker, store = FakeBroker(), FakeStore(fail=RuntimeError("database down"))
    c = consumer(store, broker)
    with pytest.raises(RuntimeError):
        c.apply([delivery(b"1-0", orjson.dumps([event(1), event(2)]), redelivered=True)])
    assert broker.acked == []
    assert c.stats.batches == 0 and c.stats.received == 0 and c.stats.redelivered == 0


def test_a_batch_of_only_bad_entries_touches_no_store() -> None:
    broker, store = FakeBroker(), FakeStore()
    c = consumer(store, broker)
    assert c.apply([delivery(b"1-0", b"{}")]) == 0
    assert store.batches == []
    assert broker.acked == []
    assert [entry for entry, _ in broker.dead] == [b"1-0"]


def test_a_batch_the_retry_policy_gave_up_on_stays_pending() -> None:
    broker, store = FakeBroker(), FakeStore(fail=pge.SerializationFailure())
    c = consumer(store, broker)
    assert c.apply([delivery(b"1-0", orjson.dumps([event(1)]))]) == 0
    assert broker.acked == []
    assert c.stats.gave_up == 1
    assert c.stats.batches == 0 and c.stats.received == 0


def test_an_entry_the_database_refuses_is_dead_lettered_alone() -> None:
    broker, store = FakeBroker(), FakeStore(fail=psycopg.errors.CheckViolation())
    c = consumer(store, broker)
    assert c.apply([delivery(b"1-0", orjson.dumps([event(1), event(2)]))]) == 0
    assert broker.acked == []
    ((entry, reason),) = broker.dead
    assert entry == b"1-0" and reason.startswith("PostgreSQL refused it (23514)")
    assert c.stats.rejected == 2 and c.stats.batches == 0


class PoisonStore(FakeStore):
    """Refuses any batch holding event e13, as a CHECK constraint would."""

    def apply_batch(
        self, batch: list[dict[str, Any]], *, shard: int = 0, **kwargs: Any
    ) -> ApplyResult:
        self.fail = (
            psycopg.errors.CheckViolation() if any(e["event_id"] == "e13" for e in batch) else None
        )
        return super().apply_batch(batch, shard=shard, **kwargs)


def test_only_the_refused_events_of_an_entry_are_dead_lettered() -> None:
    """An entry of several events (one HTTP request's) that PostgreSQL refuses for one of
    them: that event is dead-lettered alone, first and without acknowledging the entry;
    the rest of the entry is then applied and acknowledged."""
    broker, store = FakeBroker(), PoisonStore()
    c = consumer(store, broker)
    entry = delivery(b"1-0", orjson.dumps([event(12), event(13), event(14), event(13)]))
    assert c.apply([entry]) == 2
    ((dead, reason),) = broker.dead
    assert dead == b"1-0" and reason.startswith("PostgreSQL refused 2 of the entry's 4 events")
    assert broker.acked == [b"1-0"]
    assert [e["event_id"] for e in store.batches[-1]] == ["e12", "e14"]
    assert (c.stats.received, c.stats.rejected, c.stats.batches) == (2, 2, 1)


def test_a_refused_entry_never_holds_back_the_rest_of_its_batch() -> None:
    broker, store = FakeBroker(), PoisonStore()
    c = consumer(store, broker)
    entries = [delivery(f"{i}-0".encode(), orjson.dumps([event(i)])) for i in range(10, 18)]
    assert c.apply(entries) == 7
    assert [entry for entry, _ in broker.dead] == [b"13-0"]
    assert sorted(broker.acked) == sorted(d.entry_id for d in entries if d.entry_id != b"13-0")
    assert c.stats.received == 7 and c.stats.rejected == 1
    committed = [
        e["event_id"]
        for b in store.batches
        if not any(x["event_id"] == "e13" for x in b)
        for e in b
    ]
    assert sorted(committed) == sorted(f"e{i}" for i in range(10, 18) if i != 13)


def test_entries_in_hand_are_touched_before_each_retry() -> None:
    broker, store = FakeBroker(), FakeStore(retries=2)
    c = consumer(store, broker)
    c.apply(
        [
            delivery(b"1-0", orjson.dumps([event(1)])),
            delivery(b"2-0", b"[]"),
            delivery(b"3-0", b"x"),
        ]
    )
    # the valid entries (an empty array is valid) are kept from peers; the dead letter is not
    assert broker.touched == [[b"1-0", b"2-0"], [b"1-0", b"2-0"]]
    assert broker.acked == [b"1-0", b"2-0"]


@pytest.mark.parametrize(
    ("batch_size", "entry_size", "prefetch", "fetch"),
    [(1, 1, 100, 100), (1000, 100, 100, 10), (100, 1, 100, 100), (30, 1, 100, 120), (7, 2, 1, 4)],
)
def test_a_read_fetches_whole_batches_and_at_least_the_prefetch(
    batch_size: int, entry_size: int, prefetch: int, fetch: int
) -> None:
    cfg = ConsumerConfig(
        name="c", batch_size=batch_size, entry_size=entry_size, prefetch_events=prefetch
    )
    assert cfg.fetch_count == fetch
    assert cfg.fetch_count % cfg.read_count == 0


class CountingStore(FakeStore):
    """Gives up (as the retry policy would) on the batch holding event ``fail_on``."""

    def __init__(self, fail_on: int | None = None) -> None:
        super().__init__()
        self.fail_on = fail_on

    def apply_batch(
        self, batch: list[dict[str, Any]], *, shard: int = 0, **kwargs: Any
    ) -> ApplyResult:
        give_up = any(e["event_id"] == f"e{self.fail_on}" for e in batch)
        self.fail = pge.SerializationFailure() if give_up else None
        return super().apply_batch(batch, shard=shard, **kwargs)


def small_batches(store: FakeStore, broker: FakeBroker) -> Consumer:
    return Consumer(
        broker,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        ConsumerConfig(name="c1", batch_size=2),
    )


def test_prefetched_entries_are_applied_a_batch_per_transaction_and_acked_once() -> None:
    broker, store = FakeBroker(), CountingStore()
    c = small_batches(store, broker)
    entries = [delivery(f"{i}-0".encode(), orjson.dumps([event(i)])) for i in range(5)]
    assert c.apply(entries) == 5
    # batches of two events, each its own transaction…
    assert [[e["event_id"] for e in b] for b in store.batches] == [
        ["e0", "e1"],
        ["e2", "e3"],
        ["e4"],
    ]
    assert c.stats.batches == 3
    # …and one acknowledgement for all, after the last commit
    assert broker.log == ["ack"]
    assert broker.acked == [d.entry_id for d in entries]


def test_after_a_batch_is_given_up_the_rest_of_the_read_waits_and_the_committed_are_acked() -> None:
    broker, store = FakeBroker(), CountingStore(fail_on=2)
    c = small_batches(store, broker)
    entries = [delivery(f"{i}-0".encode(), orjson.dumps([event(i)])) for i in range(6)]
    assert c.apply(entries) == 2
    assert len(store.batches) == 2  # e4, e5 were not tried against a database that is away
    assert broker.acked == [b"0-0", b"1-0"]
    assert c.stats.gave_up == 1


def test_a_step_acknowledges_what_it_committed_with_the_next_read() -> None:
    broker, store = FakeBroker(), CountingStore()
    clock = iter(range(100))
    c = Consumer(
        broker,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        ConsumerConfig(name="c1", batch_size=2, reclaim_every_s=1000),
        monotonic=lambda: float(next(clock)),
    )
    broker.to_read = [delivery(f"{i}-0".encode(), orjson.dumps([event(i)])) for i in range(2)]
    assert c.step() == 2
    assert broker.acked == []  # committed, not yet acknowledged…
    assert c.step() == 0
    # …until the next read, which carries the acknowledgement in its round trip
    assert broker.acked == [b"0-0", b"1-0"]
    assert broker.log == ["reclaim", "read", "read", "ack"]


def test_stopping_acknowledges_the_last_commits() -> None:
    broker, store = FakeBroker(), CountingStore()
    c = small_batches(store, broker)
    broker.to_read = [delivery(b"7-0", orjson.dumps([event(7)]))]
    stop = threading.Event()
    original = c.step

    def step_then_stop() -> int:
        applied = original()
        stop.set()
        return applied

    c.step = step_then_stop  # type: ignore[method-assign]
    c.run(stop)
    assert broker.acked == [b"7-0"] and store.batches


# -- linger and the per-second figures --------------------------------------------------


class FakeTime:
    """A monotonic clock that moves only when the consumer sleeps (or the test moves it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _lingering(broker: FakeBroker, clock: FakeTime, linger_ms: float) -> Consumer:
    return Consumer(
        broker,  # type: ignore[arg-type]
        FakeStore(),  # type: ignore[arg-type]
        ConsumerConfig(name="c1", batch_size=10, linger_ms=linger_ms),
        monotonic=clock,
        sleep=clock.sleep,
        clock_ns=lambda: 1_005_000_000,
    )


def _entries(n: int, start: int = 0) -> list[Delivery]:
    return [delivery(f"{i}-0".encode(), orjson.dumps([event(i)])) for i in range(start, start + n)]


def test_a_consumer_that_keeps_up_reads_at_most_once_per_linger() -> None:
    broker, clock = FakeBroker(), FakeTime()
    c = _lingering(broker, clock, linger_ms=4)
    c._own_pending_done = True
    broker.to_read = _entries(3)
    assert c.step() == 3  # the first read goes out at once
    assert clock.sleeps == []
    clock.now += 0.001  # the transaction took 1 ms
    broker.to_read = _entries(2, 3)
    assert c.step() == 2
    # the last read was short of a batch: wait out the rest of the 4 ms since it
    assert clock.sleeps == pytest.approx([0.003])


def test_a_consumer_behind_reads_again_at_once() -> None:
    broker, clock = FakeBroker(), FakeTime()
    c = _lingering(broker, clock, linger_ms=4)
    c._own_pending_done = True
    broker.to_read = _entries(250)
    while broker.to_read:
        c.step()  # every read brings a full fetch: no lingering
    assert clock.sleeps == []


def test_without_linger_a_short_read_is_followed_at_once() -> None:
    broker, clock = FakeBroker(), FakeTime()
    c = _lingering(broker, clock, linger_ms=0)
    c._own_pending_done = True
    for start in (0, 1, 2):
        broker.to_read = _entries(1, start)
        c.step()
    assert clock.sleeps == []


@pytest.mark.parametrize("linger_ms", [-1.0, 1001.0])
def test_linger_is_bounded(linger_ms: float) -> None:
    with pytest.raises(ValueError, match="linger_ms"):
        ConsumerConfig(name="c", linger_ms=linger_ms)


def test_with_an_origin_latency_and_commits_are_kept_per_second() -> None:
    broker, store = FakeBroker(), FakeStore()
    origin = 1_000_000_000
    c = Consumer(
        broker,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        ConsumerConfig(name="c1", origin_ns=origin),
        clock_ns=lambda: origin + 2_500_000_000,  # commits in second 2
    )
    due_in_1 = {FIELD_EVENTS: orjson.dumps([event(1), event(2)]), FIELD_CREATED_NS: b"2400000000"}
    due_in_0 = {FIELD_EVENTS: orjson.dumps([event(3)]), FIELD_CREATED_NS: b"1000000000"}
    c.apply([Delivery(b"1-0", due_in_1, False), Delivery(b"2-0", due_in_0, False)])
    stats = c.stats
    assert stats.committed_by_second == {2: 3}
    assert sorted(stats.latency_by_second) == [0, 1]  # by the second each was due in
    assert stats.latency_by_second[1].get_total_count() == 2
    one = stats.latency_by_second[1]
    assert one.values_are_equivalent(one.get_max_value(), 1_100_000)  # 1.1 s, in µs
    assert stats.histogram.get_total_count() == 0  # not kept twice
    assert set(stats.encoded_latencies()) == {0, 1}
    assert stats.snapshot()["committed_by_second"] == {2: 3}


def test_pruning_goes_by_the_bound_seen_one_pruning_earlier_less_remember_s() -> None:
    bounds = iter([100_000, 250_000, 400_000])
    pruned_below: list[int] = []

    class Broker(FakeBroker):
        def prune_bound_ms(self) -> int:
            return next(bounds)

    class Store(FakeStore):
        def prune_applied(self, before_ms: int) -> int:
            pruned_below.append(before_ms)
            return 7

    c = Consumer(
        Broker(),  # type: ignore[arg-type]
        Store(),  # type: ignore[arg-type]
        ConsumerConfig(name="c1", remember_s=60.0),
    )
    # the first pruning only notes the bound: a Redis crash could still take back the
    # acknowledgements it reflects
    assert c.prune() == 0 and pruned_below == []
    assert c.prune() == 7 and pruned_below == [100_000 - 60_000]
    assert c.prune() == 7 and pruned_below == [40_000, 250_000 - 60_000]
    assert c.stats.pruned == 14


def test_remember_s_and_prune_every_s_are_checked() -> None:
    with pytest.raises(ValueError, match="remember_s"):
        ConsumerConfig(name="c", remember_s=-1)
    with pytest.raises(ValueError, match="prune_every_s"):
        ConsumerConfig(name="c", prune_every_s=0)


@pytest.mark.parametrize(("within_s", "stops"), [(None, True), (60.0, True), (-1.0, False)])
def test_a_pause_armed_for_the_next_commit_lands_only_within_its_time(
    monkeypatch: pytest.MonkeyPatch, within_s: float | None, stops: bool
) -> None:
    """Whoever arms it stops the process itself once that time has passed: a pause still
    armed then would stop the process again, with no one to continue it. It is one-shot."""
    signals: list[int] = []
    monkeypatch.setattr("os.kill", lambda pid, signum: signals.append(signum))
    c = consumer(FakeStore(), FakeBroker())
    c.pause_after_next_commit(within_s)
    c._fault_after_commit()
    c._fault_after_commit()  # the next commit: disarmed
    assert signals == ([signal.SIGSTOP] if stops else [])
