"""The service bench's targets: each a server process of its own, and what it kept.

(s0) is :mod:`harness.bench.bare_endpoint`, (s1) ``harness serve``; each starts on a free
port with a PostgreSQL schema and Redis key prefix of the run's own (:class:`Names`),
its output in a log file, and stops when its block ends. A :class:`Check` reads what
the target holds before a k6 run and says after it whether the target kept exactly what
k6 saw accepted: (s0) its stream grew by one entry per accepted request; (s1) once
``/stats`` says nothing is pending, ``received`` grew by exactly the events k6 counted
accepted, ``unique_processed`` by the fresh ones, ``duplicate_dropped`` by the re-sends,
and nothing was rejected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil

from harness.bench import k6
from harness.bench.service import TARGETS, ServiceBenchConfig
from harness.delivery import broker as broker_mod
from harness.delivery.keys import Keys
from harness.infra import environment, processes
from harness.infra import health as services
from harness.infra.config import Settings
from harness.infra.processes import free_port
from harness.store.postgres import Store

ROOT = Path(__file__).resolve().parents[2]
#: the /stats counters that must grow by exactly what k6 counted
COUNTERS = ("received", "unique_processed", "duplicate_dropped")
#: seconds a target has to answer GET /health once started
STARTUP_S = 60.0
#: shows a passing state (``""`` ends it): how far a drain has come
Waiting = Callable[[str], object]


class TargetFailed(RuntimeError):
    """A target did not start, or stopped answering."""


@dataclasses.dataclass(frozen=True)
class Names:
    """Where this run keeps its data: a schema and a key prefix no one else uses."""

    tag: str

    @classmethod
    def new(cls) -> Names:
        return cls(uuid.uuid4().hex[:10])

    @property
    def pg_schema(self) -> str:
        return f"service_bench_{self.tag}"

    @property
    def prefix(self) -> str:
        return f"service-bench:{self.tag}"

    def key_prefix(self, target: str) -> str:
        return f"{self.prefix}:{target}"


# -- a target's process ------------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    """A target's server process, started by :func:`started`."""

    key: str
    url: str
    command: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    key_prefix: str
    pg_schema: str | None

    def cpu_s(self) -> float:
        """The target's CPU seconds so far (user + system, its threads and its child
        processes included: ``harness serve``'s HTTP workers and consumers)."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise TargetFailed(f"{self.key} ({TARGETS[self.key]}) exited: {_tail(self.log_path)}")

    def describe(self) -> dict[str, Any]:
        return {
            "name": TARGETS[self.key],
            "command": self.command,
            "url": self.url,
            "key_prefix": self.key_prefix,
            "pg_schema": self.pg_schema,
            "log": self.log_path.name,
        }


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no log)"


def command_for(key: str, port: int, cfg: ServiceBenchConfig) -> list[str]:
    if key == "s0":
        return [sys.executable, "-m", "harness.bench.bare_endpoint", "--port", str(port)]
    return [
        sys.executable, "-m", "harness", "serve", "--port", str(port),
        "--consumers", str(cfg.consumers), "--workers", str(cfg.workers),
    ]  # fmt: skip


@contextlib.contextmanager
def started(
    key: str, settings: Settings, names: Names, cfg: ServiceBenchConfig, folder: Path
) -> Iterator[Target]:
    """The target running and healthy on a free port for the block; stopped after it."""
    port = free_port()
    schema = names.pg_schema if key == "s1" else None
    env = {
        **os.environ,
        "HARNESS_PG_DSN": settings.pg_dsn,
        "HARNESS_REDIS_URL": settings.redis_url,
        "HARNESS_PG_SCHEMA": names.pg_schema,
        "HARNESS_KEY_PREFIX": names.key_prefix(key),
    }
    log_path = folder / f"{key}.log"
    command = command_for(key, port, cfg)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    target = Target(
        key, f"http://127.0.0.1:{port}", command, proc, log_path, names.key_prefix(key), schema
    )
    try:
        _wait_healthy(target)
        yield target
    finally:
        _stop(proc)


def _wait_healthy(target: Target) -> None:
    deadline = time.monotonic() + STARTUP_S
    with httpx.Client(timeout=2, trust_env=False) as client:
        while True:
            target.alive()
            try:
                if client.get(f"{target.url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TargetFailed(
                    f"{target.key} not healthy after {STARTUP_S:.0f} s: {_tail(target.log_path)}"
                )
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    processes.stop(proc, grace_s=30)


# -- what a target kept ------------------------------------------------------------------


class Check(Protocol):
    """Before a k6 run, what the target holds; after it, whether it holds what k6 saw."""

    def before(self) -> None: ...

    def after(self, summary: k6.Summary, waiting: Waiting) -> tuple[bool, str]: ...

    def close(self) -> None: ...


class StreamCheck:
    """(s0): one stream entry per accepted request. The stream is emptied after each
    check, so that no run pays for the memory of the one before."""

    def __init__(self, settings: Settings, key_prefix: str) -> None:
        self.client = broker_mod.connect(settings.redis_url)
        self.stream = Keys(key_prefix).stream
        self.length = 0

    def before(self) -> None:
        self.length = int(self.client.xlen(self.stream))

    def after(self, summary: k6.Summary, waiting: Waiting) -> tuple[bool, str]:
        added = int(self.client.xlen(self.stream)) - self.length
        self.client.delete(self.stream)
        ok = added == summary.accepted == summary.requests - summary.failed_requests
        return ok, f"stream +{added:,} entries; k6 saw {summary.accepted:,} accepted"

    def close(self) -> None:
        self.client.close()


class StatsCheck:
    """(s1): ``/stats``, once the consumers have stored everything, grew by what k6 saw."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.client = httpx.Client(timeout=10, trust_env=False)
        self.url = url
        self.timeout_s = timeout_s
        self.stats: dict[str, Any] = {}

    def _stats(self) -> dict[str, Any]:
        reply = self.client.get(f"{self.url}/stats")
        reply.raise_for_status()
        return dict(reply.json())

    def before(self) -> None:
        self.stats = self._stats()

    def after(self, summary: k6.Summary, waiting: Waiting) -> tuple[bool, str]:
        before = self.stats
        after = self._drained(before, summary.accepted, waiting)
        grown = {name: int(after[name]) - int(before[name]) for name in COUNTERS}
        expected = {
            "received": summary.accepted,
            "unique_processed": summary.fresh,
            "duplicate_dropped": summary.accepted - summary.fresh,
        }
        rejected = int(after["rejected"]) - int(before["rejected"])
        ok = grown == expected and after["pending"] == 0 and rejected == 0
        detail = (
            f"received +{grown['received']:,} (k6 accepted {summary.accepted:,}), "
            f"unique +{grown['unique_processed']:,} (fresh {summary.fresh:,}), "
            f"duplicates +{grown['duplicate_dropped']:,}"
        )
        if after["pending"]:
            detail += f", {after['pending']:,} still pending"
        if rejected:
            detail += f", {rejected:,} rejected"
        return ok, detail

    def _drained(self, before: Mapping[str, Any], accepted: int, waiting: Waiting) -> dict:
        """``/stats`` once nothing is pending and ``received`` has grown by ``accepted``,
        or has stopped moving for a few seconds, or at the timeout."""
        deadline = time.monotonic() + self.timeout_s
        last: tuple[int, ...] | None = None
        still_since = time.monotonic()
        while True:
            stats = self._stats()
            now = tuple(int(stats[name]) for name in COUNTERS)
            grown = now[0] - int(before["received"])
            if stats["pending"] == 0 and grown >= accepted:
                break
            if now != last:
                last, still_since = now, time.monotonic()
            elif stats["pending"] == 0 and time.monotonic() - still_since > 5:
                break  # nothing left to store: the check says what is missing
            if time.monotonic() > deadline:
                break
            waiting(
                f"s1: storing what k6 saw accepted: {grown:,} of {accepted:,}, "
                f"{stats['pending']:,} pending"
            )
            time.sleep(0.25)
        waiting("")
        return stats

    def close(self) -> None:
        self.client.close()


def check_for(target: Target, settings: Settings, cfg: ServiceBenchConfig) -> Check:
    """How to check what ``target`` kept."""
    if target.key == "s0":
        return StreamCheck(settings, target.key_prefix)
    return StatsCheck(target.url, cfg.drain_timeout_s)


def clean_up(settings: Settings, names: Names) -> None:
    """Drop the run's schema and delete its Redis keys."""
    with Store(settings.pg_dsn, schema=names.pg_schema) as store:
        store.drop_schema()
    client = broker_mod.connect(settings.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{names.prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def settings_record(settings: Settings, names: Names) -> dict[str, str]:
    """What the results file says of where the run kept its data (no passwords)."""
    return {
        "pg_dsn": services.redact(settings.pg_dsn),
        "redis_url": services.redact(settings.redis_url),
        "pg_schema": names.pg_schema,
        "key_prefix": names.prefix,
    }


#: what serves the targets, beside what :func:`harness.infra.environment.describe` records
HTTP_PACKAGES = ("uvicorn", "starlette", "fastapi", "orjson", "h11", "httptools", "uvloop")


def http_packages() -> dict[str, str | None]:
    """The versions of :data:`HTTP_PACKAGES` (``None``: not installed; uvicorn then does
    without: h11 for HTTP, asyncio's own loop)."""
    return environment.package_versions(HTTP_PACKAGES)
