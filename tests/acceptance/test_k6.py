"""The seed's k6 load (harness/bench/load/*.js) against `harness serve`, run as a user runs it.

What k6 counted is what the service stored: `/stats` grows by exactly the events k6 saw
accepted (received), the accepted ones that were not re-sends (unique) and the re-sends
(duplicates). Latency and throughput are the machine's business, not the test's.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.bench import k6 as k6_mod
from harness.infra.config import Settings
from tests.acceptance.test_service_cli import ROOT, Server, free_port

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

LOAD = k6_mod.LOAD_DIR
COUNTERS = ("received", "unique_processed", "duplicate_dropped")


@pytest.fixture
def server(settings: Settings) -> Iterator[Server]:
    """`harness serve` as a user starts it (two consumer processes), on this test's schema
    and key prefix."""
    srv = Server(settings, free_port())
    yield srv
    srv.stop()


def k6(script: str, url: str, summary: Path, **env: str) -> dict:
    """Run one of the k6 scripts the package ships to its end; its JSON summary."""
    binary = k6_mod.binary()
    flags = [f"--env={k}={v}" for k, v in {"BASE_URL": url, "SUMMARY": str(summary), **env}.items()]
    # a REST API port of its own: k6's default (6565) is taken by any other k6 running
    flags.append(f"--address=127.0.0.1:{free_port()}")
    proc = subprocess.run(
        [binary, "run", "--quiet", "--no-usage-report", *flags, str(LOAD / script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(proc.stdout)  # k6's summary, shown with the test's output when it fails
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in ("requests/s", "p50", "p95", "p99", "errors", "accepted"):
        assert line in proc.stdout, proc.stdout
    return json.loads(summary.read_text())


def drained(server: Server, before: dict, received: int, timeout: float = 60) -> dict:
    """/stats once the consumers hold nothing and `received` has grown by `received`, or
    has stopped moving (then the assertions say what is missing), or at the timeout."""
    deadline = time.monotonic() + timeout
    last: tuple[int, ...] | None = None
    while True:
        stats = server.stats()
        now = tuple(stats[name] for name in COUNTERS)
        idle = stats["pending"] == 0
        if idle and (stats["received"] - before["received"] >= received or now == last):
            return stats
        if time.monotonic() > deadline:
            return stats
        last = now if idle else None
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("script", "env"),
    [
        pytest.param("seed.js", {"SCALE": "0.05"}, id="seed-stages-6s"),
        pytest.param("open_loop.js", {"RATE": "200", "DURATION": "3s"}, id="open-loop-200"),
    ],
)
def test_the_service_stores_exactly_what_k6_saw_accepted(
    server: Server, tmp_path: Path, script: str, env: dict[str, str]
) -> None:
    before = server.stats()
    run = k6(script, server.url, tmp_path / "summary.json", **env)

    assert run["failed_requests"] == 0, run
    assert run["requests"] > 0
    # one event per request, every one accepted; some of them re-sends
    assert run["accepted"] == run["requests"]
    assert 0 < run["fresh"] < run["accepted"]

    after = drained(server, before, run["accepted"])
    grown = {name: after[name] - before[name] for name in COUNTERS}
    assert grown == {
        "received": run["accepted"],
        "unique_processed": run["fresh"],
        "duplicate_dropped": run["accepted"] - run["fresh"],
    }
    assert after["pending"] == 0
    assert after["rejected"] == before["rejected"]
