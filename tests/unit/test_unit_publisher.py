"""The publisher's rounds, made as it goes or all before its first send."""

from __future__ import annotations

from typing import Any

import pytest

from harness.experiment import ExperimentError, TrialParams
from harness.generator import Generator, Workload
from harness.publisher import Publisher, PublishPlan


class _Recorder:
    """A broker that keeps what is published, and how many entries had been encoded
    when each round was sent."""

    def __init__(self, encoded: list[int]) -> None:
        self.rounds: list[list[tuple[bytes, int]]] = []
        self.encoded_at_send: list[int] = []
        self._encoded = encoded

    def publish(self, entries: list[tuple[bytes, int]], created_ns: int = 0) -> None:
        self.rounds.append(list(entries))
        self.encoded_at_send.append(self._encoded[0])


def _publish(monkeypatch: pytest.MonkeyPatch, *, ahead: bool) -> _Recorder:
    encoded = [0]
    original = Generator.encoded_entry

    def counting(self: Generator, ordinals: Any) -> bytes:
        encoded[0] += 1
        return original(self, ordinals)

    monkeypatch.setattr(Generator, "encoded_entry", counting)
    recorder = _Recorder(encoded)
    workload = Workload(events=1_050, duplicate_rate=0.3, topics=4, seed=9)
    (plan,) = PublishPlan.split(workload, 1, entry_size=10, pipeline=20, ahead=ahead)
    stats = Publisher(recorder).run(plan)  # type: ignore[arg-type]
    assert stats.events == workload.events
    assert stats.entries == 105
    return recorder


def test_ahead_sends_the_same_entries_after_making_all_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inline = _publish(monkeypatch, ahead=False)
    ahead = _publish(monkeypatch, ahead=True)
    assert ahead.rounds == inline.rounds
    assert [len(r) for r in ahead.rounds] == [20] * 5 + [5]
    # inline: a round is encoded, then sent; ahead: all 105 entries before the first send
    assert inline.encoded_at_send == [20, 40, 60, 80, 100, 105]
    assert ahead.encoded_at_send == [105] * 6


def test_generate_is_a_checked_trial_parameter() -> None:
    assert TrialParams().generate == "inline"
    assert TrialParams(generate="ahead").generate == "ahead"
    with pytest.raises(ExperimentError, match="generate"):
        TrialParams(generate="later")
