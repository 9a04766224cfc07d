"""Bounded exponential backoff with full jitter."""

from __future__ import annotations

import itertools

import pytest

from harness.model.retry import (
    DEADLOCK_DETECTED,
    RETRYABLE_SQLSTATES,
    SERIALIZATION_FAILURE,
    RetryPolicy,
)


def ceiling(policy: RetryPolicy, failures: int) -> float:
    """The documented bound: min(max_delay, base_delay · 2^(failures-1))."""
    return min(policy.max_delay, policy.base_delay * 2 ** (failures - 1))


@pytest.mark.parametrize("failures", [1, 2, 3, 5, 8, 12, 40])
@pytest.mark.parametrize("chance", [0.0, 0.25, 0.5, 0.999999])
def test_delay_is_within_zero_and_the_ceiling(failures: int, chance: float) -> None:
    policy = RetryPolicy(base_delay=0.001, max_delay=0.25)
    delay = policy.delay(failures, chance)
    assert 0.0 <= delay <= ceiling(policy, failures)
    assert delay == pytest.approx(ceiling(policy, failures) * chance)


def test_ceiling_doubles_then_caps_at_max_delay() -> None:
    policy = RetryPolicy(base_delay=0.001, max_delay=0.25)
    # chance → 1 makes the delay approach the ceiling itself
    top = [policy.delay(n, 1.0) for n in range(1, 16)]
    assert top[0] == pytest.approx(policy.base_delay)
    capped_from = next(i for i, d in enumerate(top) if d >= policy.max_delay)
    for before, after in itertools.pairwise(top[:capped_from]):
        assert after == pytest.approx(2 * before)
    assert capped_from > 0
    assert all(d == pytest.approx(policy.max_delay) for d in top[capped_from:])


def test_huge_failure_counts_do_not_overflow() -> None:
    policy = RetryPolicy(base_delay=0.001, max_delay=0.25)
    assert policy.delay(10_000, 0.5) == pytest.approx(0.125)


@pytest.mark.parametrize("failures", [1, 2, 10, 100])
def test_zero_chance_means_no_wait(failures: int) -> None:
    assert RetryPolicy().delay(failures, 0.0) == 0.0


def test_may_retry_is_bounded_by_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=4)
    assert [policy.may_retry(n) for n in range(1, 6)] == [True, True, True, False, False]
    single = RetryPolicy(max_attempts=1)
    assert not single.may_retry(1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": -3},
        {"base_delay": -0.001},
        {"base_delay": 0.5, "max_delay": 0.25},
        {"base_delay": 0.0, "max_delay": -1.0},
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_zero_delays_are_allowed() -> None:
    assert RetryPolicy(base_delay=0.0, max_delay=0.0).delay(3, 0.7) == 0.0


def test_retryable_sqlstates() -> None:
    assert {SERIALIZATION_FAILURE, DEADLOCK_DETECTED} == {"40001", "40P01"}
    assert frozenset({"40001", "40P01"}) == RETRYABLE_SQLSTATES


def test_a_backoff_grows_with_failures_in_a_row_and_starts_over_after_a_success() -> None:
    from harness.model.retry import Backoff

    backoff = Backoff(RetryPolicy(base_delay=0.05, max_delay=2.0), chance=lambda: 1.0)
    assert [backoff.failed() for _ in range(8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    backoff.succeeded()
    assert backoff.failed() == 0.05
    # it never gives up, whatever the policy's max_attempts
    stubborn = Backoff(
        RetryPolicy(max_attempts=1, base_delay=0.01, max_delay=0.01), chance=lambda: 0.5
    )
    assert [stubborn.failed() for _ in range(3)] == [0.005, 0.005, 0.005]


def test_run_retries_what_it_is_told_to_counts_it_and_gives_up_on_the_rest() -> None:
    waits: list[float] = []
    calls: list[str] = []
    outcomes = iter([TimeoutError("a"), ConnectionError("b"), "done"])

    def attempt() -> str:
        calls.append("attempt")
        out = next(outcomes)
        if isinstance(out, Exception):
            raise out
        return out

    def classify(exc: Exception) -> str | None:
        return type(exc).__name__ if isinstance(exc, OSError) else None

    policy = RetryPolicy(max_attempts=5, base_delay=0.1, max_delay=1.0)
    result = policy.run(
        attempt,
        classify,
        sleep=waits.append,
        chance=lambda: 1.0,
        before_retry=lambda: calls.append("touch"),
    )
    assert result == ("done", 3, {"TimeoutError": 1, "ConnectionError": 1})
    assert waits == [0.1, 0.2]
    assert calls == ["attempt", "touch", "attempt", "touch", "attempt"]
    # an error it is not told to retry is raised at once; a retried one after the last attempt
    with pytest.raises(ValueError):
        policy.run(lambda: int("x"), classify, sleep=waits.append, chance=lambda: 1.0)
    with pytest.raises(TimeoutError):
        RetryPolicy(max_attempts=2).run(
            lambda: (_ for _ in ()).throw(TimeoutError()),
            classify,
            sleep=waits.append,
            chance=lambda: 0.0,
        )
