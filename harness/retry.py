"""When and how long to wait before retrying a transaction. Pure: time and chance are passed in."""

from __future__ import annotations

import dataclasses

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
