"""The service's configuration refuses what its processes would refuse later."""

from __future__ import annotations

import dataclasses

import pytest

from harness.service.aggregator import ServiceConfig


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workers": 0}, "workers must be ≥ 1"),
        ({"linger_ms": 5000}, "linger_ms must be in"),
        ({"linger_ms": -1}, "linger_ms must be in"),
        ({"batch_size": 0}, "batch_size"),
        ({"consumers": -1}, "consumers must be ≥ 0"),
        ({"port": 0}, "port must be in"),
    ],
)
def test_bad_settings_are_refused_up_front(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceConfig(**changes)


def test_each_consumer_has_its_name_and_counter_row() -> None:
    config = ServiceConfig(name="agg", batch_size=7, linger_ms=5, crash_after_commits=3)
    consumer = config.consumer_config(2)
    assert (consumer.name, consumer.shard, consumer.batch_size) == ("agg-2", 2, 7)
    assert (consumer.linger_ms, consumer.crash_after_commits) == (5, 3)


def test_the_configuration_round_trips_through_json_for_the_worker_processes() -> None:
    import orjson

    config = ServiceConfig(workers=2, consumers=3, consumers_in_process=False)
    again = ServiceConfig(**orjson.loads(orjson.dumps(dataclasses.asdict(config))))
    assert again == config
