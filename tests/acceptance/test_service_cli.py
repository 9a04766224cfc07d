"""`harness serve` and `harness publish` as a user runs them: real processes, real services."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from harness.infra.config import Settings

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
#: events per POST in the kill test
PER_REQUEST = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "HARNESS_PG_DSN": settings.pg_dsn,
        "HARNESS_REDIS_URL": settings.redis_url,
        "HARNESS_PG_SCHEMA": settings.pg_schema,
        "HARNESS_KEY_PREFIX": settings.key_prefix,
    }


def harness_cli(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m harness ARGV`` on this test's services, to its end (60 s at most)."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *argv],
        cwd=ROOT,
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


class Server:
    def __init__(self, settings: Settings, port: int, *extra: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "serve", "--port", str(port), *extra],
            cwd=ROOT,
            env=env_for(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.proc.communicate(timeout=5)[0] if self.proc.poll() is not None else ""
                self.stop()
                raise AssertionError(f"serve did not come up: {out}")
            time.sleep(0.2)

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/stats", timeout=5).json()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server(settings: Settings) -> Iterator[Server]:
    srv = Server(settings, free_port(), "--consumers", "4", "--workers", "2")
    yield srv
    srv.stop()


def test_the_seeds_publisher_against_the_service(server: Server, settings: Settings) -> None:
    """The seed's run — 20,000 events, 30% duplicates, 10 topics, batches of 100 — ends
    with received = 20,000 and unique_processed = the publisher's distinct count."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "publish", "--url", server.url, "--seed", "7"],
        cwd=ROOT,
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every event stored exactly once" in proc.stdout

    from harness.model.generator import Generator, Workload

    truth = Generator(Workload(events=20_000, duplicate_rate=0.3, topics=10, seed=7))
    stats = server.stats()
    assert stats["received"] == 20_000
    assert stats["unique_processed"] == truth.expected_unique
    assert stats["duplicate_dropped"] == 20_000 - truth.expected_unique
    assert stats["topics"] == 10
    assert f"{truth.expected_unique:,} distinct" in proc.stdout
    # the metrics of two HTTP processes and four consumer processes, summed
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert "aggregator_events_accepted_total 20000.0" in metrics
    assert "aggregator_consumer_received_total 20000.0" in metrics
    assert f"aggregator_consumer_unique_total {truth.expected_unique}.0" in metrics


def test_publish_to_a_service_that_is_not_there_says_so(settings: Settings) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = harness_cli(settings, "publish", "--url", url, "--wait", "1")
    assert proc.returncode == 2
    assert "not healthy after 1 s" in proc.stderr
    assert "Traceback" not in proc.stderr


def _events(n: int, distinct: int) -> list[dict]:
    return [
        {
            "topic": f"t{i % 3}",
            "event_id": f"e{i % distinct}",
            "timestamp": "2025-12-17T10:00:00Z",
            "source": "restart-test",
            "payload": {"i": i},
        }
        for i in range(n)
    ]


def _post_all(url: str, events: list[dict], per_request: int) -> int:
    accepted = 0
    for i in range(0, len(events), per_request):
        r = httpx.post(f"{url}/publish", json={"events": events[i : i + per_request]}, timeout=10)
        assert r.status_code == 202, r.text
        accepted += r.json()["queued"]
    return accepted


def _drained(server: Server, accepted: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = server.stats()
        if stats["pending"] == 0 and stats["received"] >= accepted:
            return stats
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_service_loses_nothing_it_accepted(settings: Settings, workers: int) -> None:
    """SIGKILL the service with events accepted and not yet stored, start it again on
    the same port: every accepted event is stored exactly once. Its child processes
    (HTTP workers) went with it: none is left holding the port."""
    port = free_port()
    first = Server(settings, port, "--consumers", "0", "--workers", str(workers))
    children = psutil.Process(first.proc.pid).children(recursive=True)
    try:
        accepted = _post_all(first.url, _events(5000, 1500), PER_REQUEST)
        # nobody consumes: every request is still queued (one stream entry each)
        assert first.stats()["pending"] == accepted // PER_REQUEST
    finally:
        first.kill()
    left = psutil.wait_procs(children, timeout=30)[1]
    assert not left, f"left running after the service was killed: {left}"

    second = Server(settings, port, "--consumers", "2", "--workers", str(workers))
    try:
        stats = _drained(second, accepted)
        assert stats["received"] == accepted
        assert stats["unique_processed"] == 1500
        assert stats["duplicate_dropped"] == stats["received"] - 1500
        rows = httpx.get(f"{second.url}/events", params={"limit": 1000}).json()
        assert rows["count"] == 1000 and rows["next_cursor"]
    finally:
        second.stop()


def test_a_consumer_that_dies_after_a_commit_is_replaced_and_counts_nothing_twice(
    settings: Settings,
) -> None:
    """A consumer process exits right after its third commit, before acknowledging it
    (the worst moment): the service starts another, which gets those entries again,
    recognises them as applied and skips them. received = accepted, exactly."""
    server = Server(
        settings,
        free_port(),
        *("--consumers", "1", "--batch-size", "5", "--crash-after-commits", "3"),
    )
    try:
        accepted = _post_all(server.url, _events(300, 120), 10)  # entries of 10 events
        stats = _drained(server, accepted)
        assert stats["received"] == accepted
        assert stats["unique_processed"] == 120
        # the third commit's entry at least came back, and was recognised whole
        assert stats["redelivered"] >= 10 and stats["redelivered"] % 10 == 0
    finally:
        server.stop()
    assert "exited (17); starting it again" in server.proc.communicate(timeout=10)[0]


def test_serve_on_a_port_taken_says_so_in_one_line(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = harness_cli(settings, "serve", "--port", str(port))
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_a_killed_services_metrics_directory_is_swept_by_the_next_one(settings: Settings) -> None:
    """prometheus multiprocess mode keeps the metrics in files; a SIGKILLed service cannot
    remove its directory, so the next service to start removes those of dead services."""
    first = Server(settings, free_port(), "--consumers", "0")
    pid = first.proc.pid
    left = list(Path(tempfile.gettempdir()).glob(f"harness-metrics-{pid}-*"))
    assert len(left) == 1
    first.kill()
    assert left[0].exists()
    second = Server(settings, free_port(), "--consumers", "0")
    try:
        assert not left[0].exists()
    finally:
        second.stop()


def test_serve_follows_a_failover_to_a_synchronous_standby(settings: Settings) -> None:
    """``harness serve`` on a primary with a synchronous standby, given the multi-host DSN
    users' clients use (``target_session_attrs=read-write``): the primary crashes and the
    standby is promoted while the consumers apply what was accepted; afterwards /stats
    counts exactly what the service accepted, each distinct event once."""
    from harness.infra.replication import ReplicatedPostgres

    folder = Path(tempfile.mkdtemp(prefix="harness-pg-trial-"))
    pair = ReplicatedPostgres(folder, "sync", failovers=1)
    server = None
    try:
        pair.start()
        on_pair = dataclasses.replace(settings, pg_dsn=pair.dsn)
        server = Server(on_pair, free_port(), "--consumers", "2")
        events = _events(6000, 1500)  # 1,500 distinct keys (topics cycle in step)
        accepted = _post_all(server.url, events[:3000], 100)
        pair.fail_over()  # the consumers are applying the first half now
        accepted += _post_all(server.url, events[3000:], 100)
        deadline = time.monotonic() + 90
        while True:  # a read that meets a connection to the old primary gets a 503
            response = httpx.get(f"{server.url}/stats", timeout=5)
            stats = response.json() if response.status_code == 200 else {}
            if stats.get("pending") == 0 and stats.get("received", 0) >= accepted:
                break
            assert time.monotonic() < deadline, (response.status_code, stats)
            time.sleep(0.2)
        assert pair.failed_over == 1
        assert stats["received"] == accepted == 6000
        assert stats["unique_processed"] == 1500
        assert stats["duplicate_dropped"] == 4500
    finally:
        if server is not None:
            server.stop()
        pair.stop()
    assert not folder.exists()
