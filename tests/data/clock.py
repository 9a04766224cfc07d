"""A wall clock for tests of code that is handed its clock and its sleep."""

from __future__ import annotations

from harness.model.schedule import NS


class FakeClock:
    """Time in ns that passes only when the code under test sleeps (or a test moves it)."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        return self.now_ns

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now_ns += round(seconds * NS)
