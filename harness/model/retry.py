"""When and how long to wait before trying again: a transaction, a send, a reconnect.

Every backoff in the harness is a :class:`RetryPolicy`; :class:`Backoff` counts the failures in
a row of a loop that never gives up (a consumer reconnecting). Time and chance are passed in.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")

#: SQLSTATEs after which PostgreSQL's docs advise retrying the whole transaction.
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
RETRYABLE_SQLSTATES = frozenset({SERIALIZATION_FAILURE, DEADLOCK_DETECTED})


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter.

    The wait before retry ``n`` (1-based) is uniform in ``[0, min(max_delay,
    base_delay · 2^(n-1))]``: jitter spreads out workers that failed together on the
    same hot row, so they do not collide again on the next attempt.
    """

    max_attempts: int = 30
    base_delay: float = 0.001
    max_delay: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be ≥ 1, got {self.max_attempts}")
        if not 0 <= self.base_delay <= self.max_delay:
            raise ValueError("need 0 ≤ base_delay ≤ max_delay")

    def may_retry(self, failures: int) -> bool:
        """Whether another attempt is allowed after ``failures`` failed attempts."""
        return failures < self.max_attempts

    def delay(self, failures: int, chance: float) -> float:
        """Seconds to wait after the ``failures``-th failure; ``chance`` is uniform in [0, 1)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(failures - 1, 30))
        return ceiling * chance

    def run(
        self,
        attempt: Callable[[], Result],
        classify: Callable[[Exception], str | None],
        *,
        sleep: Callable[[float], None],
        chance: Callable[[], float],
        before_retry: Callable[[], None] | None = None,
    ) -> tuple[Result, int, dict[str, int]]:
        """``attempt()`` until it returns or the policy gives up; between attempts, the
        policy's wait, then ``before_retry()``. ``classify`` names the cause of a failure
        (its label in the counts), or ``None`` when retrying cannot help: that error is
        raised at once. Returns the result, the attempts made, the failures by cause."""
        retries: collections.Counter[str] = collections.Counter()
        failures = 0
        while True:
            try:
                return attempt(), failures + 1, dict(retries)
            except Exception as exc:
                label = classify(exc)
                if label is None:
                    raise
                failures += 1
                retries[label] += 1
                if not self.may_retry(failures):
                    raise
            sleep(self.delay(failures, chance()))
            if before_retry is not None:
                before_retry()


@dataclasses.dataclass
class Backoff:
    """The waits of a loop that retries until it is stopped (a consumer reconnecting to a
    server that is down): the policy's delay after each failure in a row, from the first
    again after a success. Never gives up; ``max_attempts`` does not apply."""

    policy: RetryPolicy
    chance: Callable[[], float] = random.random
    failures: int = 0

    def failed(self) -> float:
        """Count a failure; the seconds to wait before the next attempt."""
        self.failures += 1
        return self.policy.delay(self.failures, self.chance())

    def succeeded(self) -> None:
        self.failures = 0
