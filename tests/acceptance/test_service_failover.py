"""`harness serve` on a Redis primary with a replica and three Sentinels, found through a
``redis+sentinel://`` URL: the primary crashes while requests arrive, the Sentinels
promote the replica, and the service goes on on the new primary, losing nothing it
accepted."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from harness.infra.config import Settings
from harness.infra.redis_replication import ReplicatedRedis
from tests.acceptance.test_service_cli import Server, free_port

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

#: events per request, and the distinct keys they cycle through
PER_REQUEST = 50
DISTINCT = 3000
#: events accepted before the failover, and after it, at least
BEFORE = 3000
AFTER = 3000


def _event(i: int) -> dict[str, Any]:
    return {
        "topic": f"t{i % 3}",
        "event_id": f"e{i % DISTINCT}",
        "timestamp": "2025-12-17T10:00:00Z",
        "source": "redis-failover-test",
        "payload": {"i": i},
    }


class Poster(threading.Thread):
    """POSTs requests of :data:`PER_REQUEST` events, one after another, until stopped. A
    request that fails (a 5xx, a connection error) is sent again with the same events
    until it is accepted; only the events of 202s are counted."""

    def __init__(self, url: str) -> None:
        super().__init__(name="poster", daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.accepted = 0
        self.keys: set[tuple[str, str]] = set()
        #: requests answered with a 5xx or not answered, each time
        self.failed: list[str] = []
        self.slowest_s = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=60) as client:
                i = 0
                while not self.stop.is_set():
                    batch = [_event(n) for n in range(i, i + PER_REQUEST)]
                    self._send(client, batch)
                    i += PER_REQUEST
        except BaseException as exc:  # the test reads it
            self.error = exc

    def _send(self, client: httpx.Client, batch: list[dict[str, Any]]) -> None:
        while True:
            started = time.monotonic()
            try:
                response = client.post(f"{self.url}/publish", json={"events": batch})
            except httpx.HTTPError as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")
            else:
                if response.status_code == 202:
                    self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                    self.accepted += response.json()["queued"]
                    self.keys.update((e["topic"], e["event_id"]) for e in batch)
                    return
                if response.status_code < 500:
                    raise AssertionError(f"{response.status_code}: {response.text}")
                self.failed.append(f"{response.status_code}: {response.text}")
            time.sleep(0.1)


def _until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not {what} after {timeout:.0f} s"
        time.sleep(0.1)


def test_serve_follows_a_sentinel_failover_and_loses_nothing_it_accepted(
    settings: Settings, tmp_path: Path
) -> None:
    """``harness serve --wait-replicas 1`` on the Sentinels' URL: its 202 comes once the
    replica has the request's entry. The primary crashes (SIGKILL) mid-stream and the
    replica is promoted; the service's requests meanwhile wait (or fail, and are sent
    again); afterwards ``/stats`` counts exactly the events the service accepted, each
    distinct one once, and ``/health`` finds Redis through the Sentinels."""
    rr = ReplicatedRedis(tmp_path / "redis", "wait")
    server: Server | None = None
    poster: Poster | None = None
    children: list[psutil.Process] = []
    try:
        rr.start()
        first_primary = rr.primary_port
        on_rr = dataclasses.replace(settings, redis_url=rr.url)
        server = Server(
            on_rr,
            free_port(),
            *("--consumers", "2", "--workers", "2", "--wait-replicas", str(rr.wait_replicas)),
        )
        children = psutil.Process(server.proc.pid).children(recursive=True)
        poster = Poster(server.url)
        poster.start()
        _until("posting", lambda: poster.accepted >= BEFORE or poster.error, 30)
        assert poster.error is None, poster.error
        before, started = poster.accepted, time.monotonic()
        rr.fail_over()
        failover_s = time.monotonic() - started
        at_failover = poster.accepted
        _until("posting after", lambda: poster.accepted >= at_failover + AFTER or poster.error, 60)
        poster.stop.set()
        poster.join(60)
        assert poster.error is None, poster.error
        accepted = poster.accepted

        def drained() -> dict[str, Any] | None:
            response = httpx.get(f"{server.url}/stats", timeout=5)
            stats = response.json() if response.status_code == 200 else {}
            if stats.get("pending") == 0 and stats.get("received", 0) >= accepted:
                return dict(stats)
            return None

        stats = _until("drained", drained, 60)
        health = httpx.get(f"{server.url}/health", timeout=5)
        print(
            f"\nfailover {failover_s:.1f} s (promotion {rr.promotion_s[0]:.1f} s); "
            f"{accepted} events accepted: {before} before the crash, "
            f"{at_failover - before} while failing over; {len(poster.failed)} requests "
            f"failed; slowest 202 {poster.slowest_s:.2f} s"
        )
        assert rr.failed_over == 1 and rr.primary_port != first_primary
        assert health.status_code == 200, health.text
        assert health.json()["redis"] == "ok"
        assert stats["received"] == accepted, (stats, poster.failed)
        assert stats["unique_processed"] == len(poster.keys) == DISTINCT
        assert stats["duplicate_dropped"] == accepted - DISTINCT
        assert stats["dead_lettered"] == 0
    finally:
        if poster is not None:
            poster.stop.set()
            poster.join(60)
        if server is not None:
            server.stop()
        rr.stop()
    assert not psutil.wait_procs(children, timeout=30)[1], "serve left processes behind"
    assert not (tmp_path / "redis").exists()
