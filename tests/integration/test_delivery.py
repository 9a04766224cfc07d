"""At-least-once delivery on real Redis Streams, with the consumer applying to real PostgreSQL."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable

import orjson
import pytest

from harness.delivery import broker as broker_mod
from harness.delivery.broker import StreamBroker
from harness.delivery.keys import Keys
from harness.infra.config import Settings
from harness.model.generator import Generator, Workload
from harness.pipeline.consumer import Consumer, ConsumerConfig
from harness.pipeline.publisher import Publisher, PublishPlan
from harness.store.postgres import Store

pytestmark = pytest.mark.integration


def _publish(broker: StreamBroker, workload: Workload, entry_size: int = 1) -> None:
    (plan,) = PublishPlan.split(workload, 1, entry_size=entry_size, pipeline=50)
    stats = Publisher(broker).run(plan)
    assert stats.events == workload.events


def _drain(consumer: Consumer, broker: StreamBroker, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not broker.backlog().drained:
        consumer.step()
        assert time.monotonic() < deadline, broker.backlog()


def test_pending_entries_survive_until_acknowledged(broker: StreamBroker) -> None:
    broker.publish([(b"[]", 0)] * 5)
    first = broker.read("a", 3, 10)
    assert len(first) == 3
    # not acknowledged: a restarted "a" gets them back, nobody else gets them as new
    assert [d.entry_id for d in broker.read_own_pending("a", 10)] == [d.entry_id for d in first]
    assert all(d.redelivered for d in broker.read_own_pending("a", 10))
    assert len(broker.read("b", 10, 10)) == 2
    broker.ack([d.entry_id for d in first])
    assert broker.read_own_pending("a", 10) == []


def test_reclaim_takes_over_only_idle_entries(broker: StreamBroker) -> None:
    broker.publish([(b"[]", 0)] * 4)
    held = broker.read("dead", 4, 10)
    assert broker.reclaim("peer", 60_000, 10) == []  # not idle long enough yet
    time.sleep(0.05)
    claimed = broker.reclaim("peer", 20, 10)
    assert sorted(d.entry_id for d in claimed) == sorted(d.entry_id for d in held)


def test_touch_keeps_a_slow_consumer_from_being_taken_over(broker: StreamBroker) -> None:
    broker.publish([(b"[]", 0)] * 3)
    held = [d.entry_id for d in broker.read("slow", 3, 10)]
    time.sleep(0.08)
    broker.touch("slow", held)  # what a consumer does before each retry
    assert broker.reclaim("peer", 60, 10) == []
    time.sleep(0.08)
    assert len(broker.reclaim("peer", 60, 10)) == 3  # without touching it goes


def test_trim_keeps_every_entry_still_needed(broker: StreamBroker) -> None:
    broker.publish([(b"[]", 0)] * 10)
    got = broker.read("a", 6, 10)  # 6 delivered, 4 undelivered
    broker.ack([d.entry_id for d in got[1:]])  # the first stays pending
    broker.trim()
    assert broker.stream_length() == 10  # nothing below the oldest pending entry goes
    broker.ack([got[0].entry_id])
    broker.trim()
    # delivered and acknowledged entries are gone, except the last delivered one, which
    # bounds the trim; the 4 undelivered entries stay
    assert broker.stream_length() == 5
    assert len(broker.read("b", 10, 10)) == 4


def test_consumers_apply_a_stream_exactly_once(
    broker: StreamBroker, make_store: Callable[..., Store]
) -> None:
    workload = Workload(events=5000, duplicate_rate=0.3, topics=10, seed=3)
    _publish(broker, workload, entry_size=7)
    consumer = Consumer(
        broker, make_store(), ConsumerConfig(name="c", batch_size=300, entry_size=7)
    )
    _drain(consumer, broker)
    gen = Generator(workload)
    counters = consumer.store.counters()
    assert counters.received == workload.events
    assert counters.unique_processed == gen.expected_unique
    assert consumer.stats.histogram.get_total_count() == workload.events
    assert consumer.store.verify(gen.expected_keys()).lost == 0


def test_an_invalid_entry_is_dead_lettered_and_the_rest_stored(
    broker: StreamBroker, store: Store
) -> None:
    good = Generator(Workload(events=3, duplicate_rate=0, topics=1, seed=1))
    bad = {
        "topic": "",
        "event_id": "x",
        "timestamp": "2025-12-17T10:00:00Z",
        "source": "s",
        "payload": {},
    }
    broker.publish(
        [
            (orjson.dumps(list(good.events())), 3),
            (orjson.dumps([bad]), 1),
            (b"not json", 1),
        ]
    )
    consumer = Consumer(broker, store, ConsumerConfig(name="c", batch_size=10))
    _drain(consumer, broker)
    assert store.counters().unique_processed == 3
    letters = broker.dead_letters()
    assert len(letters) == 2
    reasons = sorted(fields[b"reason"].decode() for _, fields in letters)
    assert reasons[1].startswith("topic: must not be empty")
    assert consumer.stats.rejected == 2


def _consume_then_die(settings: Settings) -> None:
    """Child process: apply one batch, commit it, and exit hard before acknowledging."""
    broker = StreamBroker(broker_mod.connect(settings.redis_url), Keys(settings.key_prefix))
    store = Store(settings.pg_dsn, schema=settings.pg_schema)
    config = ConsumerConfig(name="doomed", batch_size=100, crash_after_commits=1)
    Consumer(broker, store, config).run(threading.Event())


def test_consumer_killed_between_commit_and_ack_loses_nothing(
    settings: Settings, broker: StreamBroker, make_store: Callable[..., Store]
) -> None:
    """A real process dies right after its commit; the entries it held stay pending, and
    each later delivery of them (its own after a restart, a peer's reclaim) is recognised
    in the transaction and skipped: the counters end exact, not inflated."""
    store = make_store()
    workload = Workload(events=1000, duplicate_rate=0.3, topics=4, seed=9)
    _publish(broker, workload)

    child = multiprocessing.get_context("spawn").Process(target=_consume_then_die, args=(settings,))
    child.start()
    child.join(60)
    assert child.exitcode == 17  # died by the fault hook, after its commit

    after_crash = store.counters()
    assert after_crash.received == 100  # its batch committed…
    assert broker.backlog().pending == 100  # …but was never acknowledged
    assert after_crash.redelivered == 0

    # It comes back under the same name, reads its own pending batch, recognises it as
    # applied, and dies again before acknowledging (a kill-consumer trial hitting the
    # same consumer twice): the recognition is counted in PostgreSQL, durably.
    again = multiprocessing.get_context("spawn").Process(target=_consume_then_die, args=(settings,))
    again.start()
    again.join(60)
    assert again.exitcode == 17
    assert (store.counters().received, store.counters().redelivered) == (100, 100)

    peer = Consumer(broker, store, ConsumerConfig(name="peer", batch_size=100, claim_idle_ms=50))
    time.sleep(0.1)
    _drain(peer, broker)

    gen = Generator(workload)
    counters = store.counters()
    assert peer.stats.redelivered == 100 and peer.stats.delivered_again == 100
    assert counters.redelivered == 200  # both recognitions, the dead one's too
    assert counters.received == workload.events  # exactly what was published
    assert counters.unique_processed == gen.expected_unique
    assert counters.duplicate_dropped == counters.received - counters.unique_processed
    check = store.verify(gen.expected_keys())
    assert (check.rows, check.lost, check.unexpected) == (gen.expected_unique, 0, 0)


def test_the_list_broker_forgets_what_a_dead_consumer_popped(
    settings: Settings,
) -> None:
    """The seed's design: once popped, an item is nowhere but in the consumer. If it dies
    before committing, nothing is pending and nothing can be redelivered."""
    from harness.delivery.broker import open_broker

    keys = Keys(settings.key_prefix)
    for kind in ("list", "stream"):
        channel = open_broker(kind, settings.redis_url, keys)
        channel.reset()
        channel.ensure_group()
        channel.publish([(b"[]", 0)] * 5)
        held = channel.read("doomed", 3, 10)  # ...and the consumer dies here
        assert len(held) == 3
        backlog = channel.backlog()
        if kind == "list":
            assert (backlog.length, backlog.pending) == (2, 0)  # 3 items are simply gone
            assert channel.reclaim("peer", 0, 10) == []
        else:
            assert backlog.pending == 3  # still owed to someone
            time.sleep(0.02)
            assert len(channel.reclaim("peer", 10, 10)) == 3
        channel.client.delete(*keys.all())
        channel.client.close()


def test_an_entry_delivered_too_often_is_dead_lettered_not_retried_forever(
    broker: StreamBroker, store: Store
) -> None:
    good = Generator(Workload(events=2, duplicate_rate=0, topics=1, seed=5))
    broker.publish([(orjson.dumps(list(good.events())), 2)])
    broker.read("c", 10, 10)
    for _ in range(4):  # four restarts that each died before committing it
        broker.read_own_pending("c", 10)
    # five deliveries so far; the consumer's own read is the sixth, one too many
    consumer = Consumer(broker, store, ConsumerConfig(name="c", max_deliveries=5))
    consumer.step()
    ((_, fields),) = broker.dead_letters()
    assert fields[b"reason"] == b"delivered 6 times without being applied"
    assert consumer.stats.rejected == 2
    assert broker.backlog().drained and store.counters().received == 0
