"""The publisher's rounds, made as it goes or all before its first send."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from harness.delivery.protocol import Producer
from harness.model.generator import Generator, Workload
from harness.pipeline.http_publisher import HttpPublisher
from harness.pipeline.publisher import Publisher, PublishPlan
from harness.trials.experiment import ExperimentError, TrialParams


class _Recorder:
    """A broker that keeps what is published, and how many entries had been encoded
    when each round was sent."""

    def __init__(self, encoded: list[int]) -> None:
        self.rounds: list[list[tuple[bytes, int]]] = []
        self.encoded_at_send: list[int] = []
        self._encoded = encoded
        self.producer = Producer()

    def publish(
        self,
        entries: list[tuple[bytes, int]],
        created_ns: int = 0,
        ids: Any = None,
        replicas: int = 0,
    ) -> None:
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


def _post_over_http(monkeypatch: pytest.MonkeyPatch, *, ahead: bool) -> tuple[list[bytes], int]:
    """The bodies an HTTP publisher posts, and how many events it had made by its first."""
    made = [0]
    original = Generator.encoded_entry

    def counting(self: Generator, ordinals: Any) -> bytes:
        made[0] += len(ordinals)
        return original(self, ordinals)

    monkeypatch.setattr(Generator, "encoded_entry", counting)
    bodies: list[bytes] = []
    made_at_first: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        made_at_first.append(made[0])
        bodies.append(request.content)
        return httpx.Response(202, json={"accepted": 1})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    workload = Workload(events=250, duplicate_rate=0.3, topics=4, seed=9)
    (plan,) = PublishPlan.split(workload, 1, pipeline=100, ahead=ahead)
    stats = HttpPublisher(client, "http://aggregator").run(plan)
    assert stats.events == 250 and stats.requests == 3
    return bodies, made_at_first[0]


def test_http_publisher_ahead_posts_the_same_bodies_after_making_all_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inline, inline_made = _post_over_http(monkeypatch, ahead=False)
    ahead, ahead_made = _post_over_http(monkeypatch, ahead=True)
    assert ahead == inline and len(ahead) == 3
    assert [len(orjson.loads(b)["events"]) for b in ahead] == [100, 100, 50]
    assert (inline_made, ahead_made) == (100, 250)
