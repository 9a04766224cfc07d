"""harness.cli.session: an interruption is never lost, even when a library swallows it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from harness.cli import common
from harness.cli.session import Session


@pytest.fixture(autouse=True)
def _clear_stop() -> Iterator[None]:
    common.STOP.clear()
    yield
    common.STOP.clear()


class Writer:
    def __init__(self) -> None:
        self.added: list[Any] = []

    def add(self, result: Any, series: Any) -> None:
        self.added.append(result)


class Runner:
    """Runs a trial; ``swallow``: Ctrl-C came mid-trial and became a failed trial (as when
    Ray turns it into an actor's death)."""

    def __init__(self, *, swallow: bool) -> None:
        self.swallow = swallow

    def run(self, trial: Any, *, position: int, total: int) -> tuple[str, list[Any]]:
        if self.swallow:
            with pytest.raises(KeyboardInterrupt):
                common.on_stop_signal(signal.SIGINT, None)
        return f"result of {trial}", []


def test_a_trial_is_recorded_when_nothing_interrupted_it() -> None:
    writer = Writer()
    session = Session(Runner(swallow=False), writer)
    assert session.run("t0", total=1) == "result of t0"
    assert writer.added == ["result of t0"] and session.finished == ["result of t0"]


def test_an_interrupt_swallowed_inside_a_trial_still_stops_the_session() -> None:
    writer = Writer()
    session = Session(Runner(swallow=True), writer)
    with pytest.raises(KeyboardInterrupt):
        session.run("t0", total=3)
    assert writer.added == [] and session.finished == []  # the cut trial is not kept
