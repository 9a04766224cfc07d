"""The seed report's 18 test scenarios, against the real service, Redis and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import Factory, event, settle

pytestmark = pytest.mark.integration


def test_01_health(service: TestClient) -> None:
    response = service.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "postgresql": "ok", "redis": "ok"}


def test_02_root(service: TestClient) -> None:
    body = service.get("/").json()
    assert body["name"] and body["version"]
    assert {"publish", "events", "stats", "health", "metrics", "docs"} <= set(body["links"])
    assert service.get("/docs").status_code == 200
    assert service.get("/openapi.json").json()["paths"]["/publish"]


def test_03_stats_start_at_zero(service: TestClient) -> None:
    stats = service.get("/stats").json()
    for key in (
        "received",
        "unique_processed",
        "duplicate_dropped",
        "topics",
        "pending",
        "rejected",
    ):
        assert stats[key] == 0, key
    assert stats["uptime_seconds"] >= 0


def test_04_publish_single_event(service: TestClient) -> None:
    response = service.post("/publish", json=event())
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "queued": 1}
    stats = settle(service, received=1)
    assert (stats["unique_processed"], stats["duplicate_dropped"]) == (1, 0)


def test_05_publish_batch(service: TestClient) -> None:
    response = service.post("/publish", json={"events": [event(i) for i in range(10)]})
    assert response.json()["queued"] == 10
    assert settle(service, received=10)["unique_processed"] == 10


def test_06_invalid_schema_names_the_field(service: TestClient) -> None:
    bad = event()
    del bad["topic"]
    response = service.post("/publish", json=bad)
    assert response.status_code == 422
    assert response.json()["problems"] == [{"index": 0, "field": "topic", "reason": "missing"}]


def test_07_invalid_timestamp(service: TestClient) -> None:
    response = service.post("/publish", json=event(timestamp="17/12/2025 10:30"))
    assert response.status_code == 422
    (problem,) = response.json()["problems"]
    assert problem["field"] == "timestamp"


def test_08_duplicate_detection(service: TestClient) -> None:
    service.post("/publish", json=event(8))
    service.post("/publish", json=event(8))
    stats = settle(service, received=2)
    assert (stats["received"], stats["unique_processed"], stats["duplicate_dropped"]) == (2, 1, 1)


def test_09_many_duplicates(service: TestClient) -> None:
    for _ in range(10):
        service.post("/publish", json=event(9))
    stats = settle(service, received=10)
    assert (stats["unique_processed"], stats["duplicate_dropped"]) == (1, 9)


def test_10_same_event_id_on_another_topic(service: TestClient) -> None:
    service.post("/publish", json={"events": [event(10, "a.x"), event(10, "b.y")]})
    stats = settle(service, received=2)
    assert (stats["unique_processed"], stats["duplicate_dropped"], stats["topics"]) == (2, 0, 2)


def test_11_duplicates_inside_one_batch(service: TestClient) -> None:
    batch = [event(1), event(2), event(1), event(3), event(2)]
    service.post("/publish", json={"events": batch})
    stats = settle(service, received=5)
    assert (stats["unique_processed"], stats["duplicate_dropped"]) == (3, 2)


def test_12_concurrent_same_event(service: TestClient) -> None:
    with ThreadPoolExecutor(10) as pool:
        codes = list(
            pool.map(lambda _: service.post("/publish", json=event(12)).status_code, range(10))
        )
    assert codes == [202] * 10
    stats = settle(service, received=10)
    assert (stats["unique_processed"], stats["duplicate_dropped"]) == (1, 9)


def test_13_concurrent_distinct_events(service: TestClient) -> None:
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda i: service.post("/publish", json=event(i)), range(20)))
    stats = settle(service, received=20)
    assert (stats["unique_processed"], stats["duplicate_dropped"]) == (20, 0)


def test_14_high_load_consistency(make_service: Factory) -> None:
    service = make_service(consumers=4, batch_size=7)
    batches = [[event(i % 50) for i in range(j, j + 10)] for j in range(0, 100, 10)]
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda b: service.post("/publish", json={"events": b}), batches))
    stats = settle(service, received=100)
    assert (stats["received"], stats["unique_processed"], stats["duplicate_dropped"]) == (
        100,
        50,
        50,
    )


def test_15_events_are_listed_newest_first_in_pages(service: TestClient) -> None:
    batch = [event(i, timestamp=f"2025-12-17T10:00:{i:02d}Z") for i in range(25)]
    service.post("/publish", json={"events": batch})
    settle(service, received=25)
    seen, cursor = [], None
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = service.get("/events", params=params).json()
        seen += [e["event_id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"evt-{i}" for i in reversed(range(25))]


def test_16_topic_filter(service: TestClient) -> None:
    service.post("/publish", json={"events": [event(i, "a" if i % 3 else "b") for i in range(9)]})
    settle(service, received=9)
    body = service.get("/events", params={"topic": "b"}).json()
    assert body["count"] == 3
    assert {e["topic"] for e in body["events"]} == {"b"}
    assert body["events"][0]["payload"] == {"n": "6"}  # payload comes back as JSON


def test_17_stats_accumulate(service: TestClient) -> None:
    service.post("/publish", json={"events": [event(i) for i in range(5)]})
    first = settle(service, received=5)
    service.post("/publish", json={"events": [event(i) for i in range(3, 8)]})
    second = settle(service, received=10)
    assert first["unique_processed"] == 5
    assert (second["received"], second["unique_processed"], second["duplicate_dropped"]) == (
        10,
        8,
        2,
    )


def test_18_large_batch(service: TestClient) -> None:
    response = service.post("/publish", json={"events": [event(i) for i in range(500)]})
    assert response.json()["queued"] == 500
    stats = settle(service, received=500)
    assert stats["unique_processed"] == 500
