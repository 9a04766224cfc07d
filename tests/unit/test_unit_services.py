"""Service URLs in messages never show a password."""

from __future__ import annotations

import pytest

from harness.infra.health import redact


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://app:p@ss:w@rd@db/app", "postgresql://app:***@db/app"),
    ],
)
def test_redact_hides_the_password(url: str, expected: str) -> None:
    redacted = redact(url)
    assert redacted == expected
    assert "s3cret" not in redacted and "p@ss" not in redacted


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "redis://127.0.0.1:6379/0",
        "postgresql:///postgres",
        "not a url",
        "",
    ],
)
def test_redact_keeps_urls_without_a_password(url: str) -> None:
    assert redact(url) == url


def test_redact_hides_a_password_query_parameter() -> None:
    assert "s3cret" not in redact("postgresql://app@db:5432/app?password=s3cret")
