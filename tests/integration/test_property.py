"""Property: any mix of valid, duplicate and poison events, in any packing and batching,
ends with exact counts — on the real Redis and PostgreSQL."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.delivery.broker import StreamBroker
from harness.pipeline.consumer import Consumer, ConsumerConfig
from harness.store.postgres import Store

pytestmark = pytest.mark.integration

POISON = [
    {"topic": ""},
    {"event_id": "a\x00b"},
    {"timestamp": "yesterday"},
    {"timestamp": "2025-12-17T10:00:00"},
    {"payload": [1]},
    {"topic": "t" * 256},
    {"source": None},
]


def make_event(key: int, topic: int) -> dict[str, Any]:
    return {
        "topic": f"topic-{topic}",
        "event_id": f"id-{key}",
        "timestamp": "2025-12-17T10:00:00Z",
        "source": "property",
        "payload": {"k": key},
    }


event_spec = st.one_of(
    st.tuples(st.just("ok"), st.integers(0, 30), st.integers(0, 2)),
    st.tuples(st.just("poison"), st.integers(0, 30), st.integers(0, len(POISON) - 1)),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    specs=st.lists(event_spec, min_size=1, max_size=80),
    entry_size=st.integers(1, 7),
    batch_size=st.integers(1, 40),
)
def test_any_mix_ends_with_exact_counts(
    broker: StreamBroker,
    store: Store,
    specs: list[tuple[str, int, int]],
    entry_size: int,
    batch_size: int,
) -> None:
    store.reset()
    broker.reset()
    tagged = [
        (make_event(key, extra), False)
        if kind == "ok"
        else ({**make_event(key, 0), **POISON[extra]}, True)
        for kind, key, extra in specs
    ]
    entries = [tagged[i : i + entry_size] for i in range(0, len(tagged), entry_size)]
    broker.publish([(orjson.dumps([e for e, _ in entry]), len(entry)) for entry in entries])

    consumer = Consumer(
        broker, store, ConsumerConfig(name="c", batch_size=batch_size, entry_size=entry_size)
    )
    for _ in range(10_000):
        if broker.backlog().drained:
            break
        consumer.step()

    # one poison event dead-letters its whole entry; every other entry is applied
    poisoned = [entry for entry in entries if any(bad for _, bad in entry)]
    clean = [e for entry in entries if entry not in poisoned for e, _ in entry]
    counters = store.counters()
    assert counters.received == len(clean)
    assert counters.unique_processed == len({(x["topic"], x["event_id"]) for x in clean})
    assert counters.duplicate_dropped == counters.received - counters.unique_processed
    assert store.verify({(x["topic"], x["event_id"]) for x in clean}).lost == 0
    assert broker.dead_letter_count() == len(poisoned)
    assert consumer.stats.rejected == sum(len(e) for e in poisoned)
