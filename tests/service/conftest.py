"""A running aggregator service (the real app, its consumer threads, real Redis and
PostgreSQL) for each test, on the test's own schema and key prefix."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from harness.infra.config import Settings
from harness.service.aggregator import ServiceConfig
from harness.service.app import create_app

Factory = Callable[..., TestClient]


@pytest.fixture
def make_service(settings: Settings) -> Iterator[Factory]:
    """``make_service(consumers=…, settings=…)``: a started service; stopped at teardown."""
    open_clients: list[TestClient] = []

    def start(*, settings_override: Settings | None = None, **config: Any) -> TestClient:
        config.setdefault("batch_size", 50)
        client = TestClient(create_app(settings_override or settings, ServiceConfig(**config)))
        client.__enter__()
        open_clients.append(client)
        return client

    yield start
    for client in open_clients:
        client.__exit__(None, None, None)


@pytest.fixture
def service(make_service: Factory) -> TestClient:
    return make_service(consumers=2)


def event(n: int | str = 1, topic: str = "user.login", **fields: Any) -> dict[str, Any]:
    return {
        "topic": topic,
        "event_id": f"evt-{n}",
        "timestamp": "2025-12-17T10:30:45.123Z",
        "source": "tests",
        "payload": {"n": str(n)},
        **fields,
    }


def settle(client: TestClient, *, received: int, timeout: float = 30) -> dict[str, Any]:
    """/stats once everything queued is stored and ``received`` deliveries were counted."""
    deadline = time.monotonic() + timeout
    while True:
        stats = client.get("/stats").json()
        if stats["pending"] == 0 and stats["received"] >= received:
            return dict(stats)
        assert time.monotonic() < deadline, stats
        time.sleep(0.05)


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)
