"""The seed's design kept to be measured (one event per transaction, three statements):
it still stores each key once and counts exactly, on a real PostgreSQL."""

from __future__ import annotations

import pytest

from harness.store.batch import Counters
from harness.store.postgres import Store

pytestmark = pytest.mark.integration

EVENT = {
    "topic": "auth",
    "event_id": "e-1",
    "timestamp": "2026-12-03T10:00:00Z",
    "source": "seed",
    "payload": {"user": 7},
}


def test_the_seed_apply_stores_once_and_counts_every_receipt(store: Store) -> None:
    assert store.apply_like_the_seed(EVENT) is True
    assert store.apply_like_the_seed(EVENT) is False  # a duplicate, dropped
    assert store.apply_like_the_seed({**EVENT, "event_id": "e-2"}) is True
    assert store.counters() == Counters(received=3, unique_processed=2, duplicate_dropped=1)
    assert sorted(e["event_id"] for e in store.list_events(limit=10)) == ["e-1", "e-2"]
