"""Bad input gets a clear error and changes nothing; odd but valid input round-trips."""

from __future__ import annotations

import time

import psycopg
import pytest
from fastapi.testclient import TestClient

from harness.infra.config import Settings
from harness.model import events
from tests.service.conftest import Factory, event, settle, with_settings

pytestmark = pytest.mark.integration


def problems(response) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    return [(p["index"], p["field"]) for p in response.json()["problems"]]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (event(topic="user\x00login"), "topic"),
        (event(event_id="a\x00b"), "event_id"),
        (event(source="s\x00"), "source"),
        (event(payload={"msg": "nul \x00 inside"}), "payload"),
        (event(payload={"k\x00": 1}), "payload"),
        (event(topic="t" * 256), "topic"),
        (event(event_id="e" * 256), "event_id"),
        (event(source="s" * 256), "source"),
        (event(topic=""), "topic"),
        (event(topic=42), "topic"),
        (event(event_id=None), "event_id"),
        (event(timestamp=1734431445), "timestamp"),
        (event(timestamp="2025-12-17T10:30:45"), "timestamp"),
        (event(timestamp="2025-W51-3T10:00Z"), "timestamp"),
        (event(payload=[1, 2]), "payload"),
        (event(payload="text"), "payload"),
        (event(payload={"big": "x" * events.MAX_PAYLOAD_BYTES}), "payload"),
    ],
)
def test_an_invalid_event_is_refused_with_its_field(
    service: TestClient, bad: dict, field: str
) -> None:
    response = service.post("/publish", json=bad)
    assert response.status_code == 422, response.text
    assert problems(response) == [(0, field)]


def test_one_bad_event_refuses_the_whole_request(service: TestClient) -> None:
    batch = [event(1), event(2, topic=""), event(3), event(4, timestamp="now")]
    response = service.post("/publish", json={"events": batch})
    assert response.status_code == 422
    assert "none was queued" in response.json()["error"]
    assert problems(response) == [(1, "topic"), (3, "timestamp")]
    stats = service.get("/stats").json()
    assert (stats["received"], stats["pending"], stats["rejected"]) == (0, 0, 4)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"", 400),
        (b'"just a string"', 422),
        (b"[1, 2]", 422),
        (b'{"events": "nope"}', 422),
        (b'{"events": []}', 422),
        (b'{"events": [42]}', 422),
        (b'"\\ud800"', 400),  # a lone surrogate is not valid JSON text
    ],
)
def test_malformed_bodies(service: TestClient, body: bytes, status: int) -> None:
    response = service.post("/publish", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_an_oversize_body_is_refused(make_service: Factory) -> None:
    service = make_service(consumers=1, max_body_bytes=10_000)
    response = service.post("/publish", json={"events": [event(i) for i in range(200)]})
    assert response.status_code == 413
    assert service.get("/stats").json()["pending"] == 0


def test_too_many_events_in_one_request(make_service: Factory) -> None:
    service = make_service(consumers=1, max_events_per_request=5)
    response = service.post("/publish", json={"events": [event(i) for i in range(6)]})
    assert response.status_code == 413


@pytest.mark.parametrize(
    "text",
    ["📦 order.créé", "עברית-topic", "e\u0301\u0301", "\u200b\u200d zero-width", "ＦＵＬＬ"],
)
def test_odd_unicode_is_stored_and_returned_exactly(service: TestClient, text: str) -> None:
    sent = event(topic=text, event_id=text, payload={"msg": text, text: [text]})
    assert service.post("/publish", json=sent).status_code == 202
    settle(service, received=1)
    (stored,) = service.get("/events", params={"topic": text}).json()["events"]
    assert (stored["topic"], stored["event_id"], stored["payload"]) == (
        text,
        text,
        sent["payload"],
    )


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"since": "yesterday"},
        {"cursor": "bm90IGEgY3Vyc29y"},
        {"topic": "t" * 256},
    ],
)
def test_bad_query_parameters(service: TestClient, params: dict) -> None:
    assert service.get("/events", params=params).status_code == 422


def test_since_filters_by_timestamp(service: TestClient) -> None:
    batch = [event(i, timestamp=f"2025-12-17T10:00:{i:02d}+00:00") for i in range(6)]
    service.post("/publish", json={"events": batch})
    settle(service, received=6)
    body = service.get("/events", params={"since": "2025-12-17T10:00:04Z"}).json()
    assert [e["event_id"] for e in body["events"]] == ["evt-5", "evt-4"]


def test_health_names_the_service_that_is_down(make_service: Factory, settings: Settings) -> None:
    down = with_settings(settings, pg_dsn="postgresql://postgres@127.0.0.1:1/postgres")
    service = make_service(consumers=1, settings_override=down)
    response = service.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["redis"] == "ok" and body["postgresql"].startswith("unavailable")
    assert body["error"] == "postgresql not answering"
    assert service.get("/stats").status_code == 503


def test_metrics_are_prometheus_text(service: TestClient) -> None:
    service.post("/publish", json={"events": [event(1), event(1)]})
    service.post("/publish", json={"events": [event(topic="")]})
    settle(service, received=2)
    # the consumers count a batch just after its commit, which /stats may see first
    deadline = time.monotonic() + 10
    while "aggregator_consumer_received_total 2.0" not in (text := service.get("/metrics").text):
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    assert "aggregator_events_accepted_total 2.0" in text
    assert "aggregator_events_rejected_total 1.0" in text
    assert "aggregator_consumer_unique_total 1.0" in text
    assert "aggregator_consumer_duplicate_total 1.0" in text
    assert "aggregator_pending_requests 0.0" in text
    assert "aggregator_publish_seconds_bucket" in text
    assert (
        "aggregator_batch_seconds_count 1.0" in text or "aggregator_batch_seconds_count 2.0" in text
    )


def test_an_event_the_database_refuses_is_dead_lettered_and_the_rest_stored(
    service: TestClient, settings: Settings
) -> None:
    """An event that passes validation but that PostgreSQL refuses (here: a CHECK
    constraint a DBA added) goes to the dead-letter stream with its reason; the rest of
    its batch is stored and the consumers keep going."""
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"ALTER TABLE {settings.pg_schema}.processed_events "
            "ADD CONSTRAINT no_poison CHECK (source <> 'poison')"
        )
    batch = [event(i) for i in range(10)]
    batch[4]["source"] = "poison"
    assert service.post("/publish", json={"events": batch}).status_code == 202
    stats = settle(service, received=9)
    assert (stats["received"], stats["unique_processed"]) == (9, 9)
    assert (stats["dead_lettered"], stats["rejected"]) == (1, 1)
    app = service.app.state.aggregator  # type: ignore[attr-defined]
    ((_, fields),) = app.broker.dead_letters()
    assert b"23514" in fields[b"reason"] and b"poison" in fields[b"e"]
    service.post("/publish", json=event(99))  # still consuming
    assert settle(service, received=10)["unique_processed"] == 10


def test_publish_with_redis_down_is_refused_with_503(
    make_service: Factory, settings: Settings
) -> None:
    down = with_settings(settings, redis_url="redis://127.0.0.1:1/0")
    service = make_service(consumers=0, settings_override=down)
    response = service.post("/publish", json=event(1))
    assert response.status_code == 503
    assert "none was queued" in response.json()["error"]
    health = service.get("/health")
    assert health.status_code == 503 and health.json()["error"] == "redis not answering"


def test_publish_not_confirmed_on_the_replicas_asked_for_is_a_503_that_says_send_again(
    make_service: Factory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wait_replicas=1`` on a Redis without a replica: each ``WAIT`` times out, so the
    round is sent again, with the same identity, until the resend budget is spent, then
    a 503 that says the events may be queued (they are, on the primary) and to send them
    again; not "none was queued"."""
    from harness.delivery.protocol import FIELD_PRODUCER, FIELD_SEQ
    from harness.service import app as app_mod

    monkeypatch.setattr(app_mod, "PUBLISH_RESEND_S", 1.5)  # room for one resend
    service = make_service(consumers=0, wait_replicas=1)
    state = service.app.state.aggregator  # type: ignore[attr-defined]
    if state.broker.client.info("replication")["connected_slaves"]:
        pytest.skip("this Redis has replicas: WAIT 1 would be answered")
    response = service.post("/publish", json=event(1))
    assert response.status_code == 503
    error = response.json()["error"]
    assert "may be queued: send them again" in error and "0 of 1 replicas" in error
    assert state.publisher.resent == 1
    copies = state.broker.client.xrange(state.keys.stream)
    assert len(copies) == 2
    assert len({(f[FIELD_PRODUCER], f[FIELD_SEQ]) for _, f in copies}) == 1


def test_publish_takes_only_post_and_is_documented(service: TestClient) -> None:
    response = service.get("/publish")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    operation = service.get("/openapi.json").json()["paths"]["/publish"]["post"]
    assert set(operation["responses"]) == {"202", "400", "413", "422", "503"}
