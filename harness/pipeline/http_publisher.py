"""Publishing over HTTP to ``POST /publish``: the seed's publisher, and the harness's
``ingress = http`` path. Same workload generator, same plan as the Redis publisher."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterator

import httpx

from harness.model.generator import Generator
from harness.model.retry import RetryPolicy
from harness.pipeline.publisher import PublisherStats, PublishPlan

#: HTTP statuses worth another try: too many requests, and server-side trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_RETRY = RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=5.0)


class PublishError(RuntimeError):
    """The service refused a request or stayed away past the retries."""


@dataclasses.dataclass
class HttpPublisherStats(PublisherStats):
    requests: int = 0
    retries: int = 0


def wait_healthy(
    client: httpx.Client, url: str, timeout_s: float, *, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Poll ``GET /health`` until it answers 200, or raise :class:`PublishError`."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            response = client.get(f"{url}/health")
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise PublishError(f"{url} not healthy after {timeout_s:g} s ({last})")
        sleep(0.25)


class HttpPublisher:
    def __init__(
        self,
        client: httpx.Client,
        url: str,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        chance: Callable[[], float] = random.random,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.client = client
        self.url = url.rstrip("/")
        self.retry = retry
        self.stats = HttpPublisherStats()
        self._sleep = sleep
        self._chance = chance
        self._clock_ns = clock_ns

    def post(self, body: bytes, *, created_ns: int | None = None) -> httpx.Response:
        """POST one batch; retry connection errors, 429 and 5xx with backoff and jitter.

        A retried request may have been taken the first time (a timeout after the
        service queued it): the events are then sent twice, and the consumers' de-
        duplication absorbs the re-send — at-least-once, as the design intends.
        """
        failures = 0
        while True:
            self.stats.requests += 1
            try:
                headers = {"content-type": "application/json"}
                if created_ns is not None:
                    headers["x-created-ns"] = str(created_ns)
                response = self.client.post(f"{self.url}/publish", content=body, headers=headers)
                if response.status_code not in RETRY_STATUSES:
                    if response.status_code >= 400:
                        raise PublishError(
                            f"POST /publish answered {response.status_code}: {response.text[:300]}"
                        )
                    return response
                problem = f"{response.status_code} {response.text[:200]}"
                wait = _retry_after(response)
            except httpx.TransportError as exc:
                problem, wait = f"{type(exc).__name__}: {exc}", None
            failures += 1
            if not self.retry.may_retry(failures):
                raise PublishError(f"POST /publish failed {failures} times; last: {problem}")
            self.stats.retries += 1
            self._sleep(wait if wait is not None else self.retry.delay(failures, self._chance()))

    def run(self, plan: PublishPlan, stop: threading.Event | None = None) -> HttpPublisherStats:
        """Send the plan's slice in batches of ``plan.pipeline`` events per request: back to
        back, or with a rate, what has fallen due (up to ``pipeline`` events) in each."""
        generator = Generator(plan.workload)
        if plan.rate:
            ordinals = generator.ordinals(plan.start, plan.stop).tolist()
            pacer = plan.pacer(plan.pipeline, clock_ns=self._clock_ns, sleep=self._sleep)
            for round_ in pacer.rounds():
                if stop is not None and stop.is_set():
                    break
                part = ordinals[round_.first : round_.first + round_.count]
                body = _body(generator, part)
                self.post(body, created_ns=round_.intended_ns)
                self.stats.sent(
                    len(part), len(part), self._clock_ns(), plan.origin_ns, round_.lag_ns
                )
            return self.stats
        bodies: Iterator[tuple[bytes, int]] = (
            (_body(generator, part), len(part))
            for part in generator.ordinal_groups(plan.start, plan.stop, plan.pipeline)
        )
        if plan.ahead:  # made before the first request, when the clock starts
            bodies = iter(list(bodies))
        for body, count in bodies:
            if stop is not None and stop.is_set():
                break
            created_ns = self._clock_ns()
            self.post(body, created_ns=created_ns)
            self.stats.sent(count, count, created_ns, plan.origin_ns)
        return self.stats


def _body(generator: Generator, ordinals: list[int]) -> bytes:
    """A request of these events: ``{"events": [...]}``, formatted in bulk."""
    return b'{"events":' + generator.encoded_entry(ordinals) + b"}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(float(value), 30.0) if value else None
    except ValueError:
        return None
