"""A trial's second-by-second series: the actors' counts, with the driver's looks beside."""

from __future__ import annotations

from harness.model.steady import PerSecond, Window
from harness.trials.state import Sample, timeseries


def _sample(at: float, retries: int, alive: int) -> Sample:
    return Sample(elapsed_s=at, published=0, committed=0, retries=retries, consumers_alive=alive)


def test_each_second_carries_what_the_driver_last_saw_by_its_end() -> None:
    data = PerSecond(
        sent={0: 100, 1: 100, 2: 100},
        committed={0: 90, 1: 100, 2: 100, 3: 10},
        latencies={},
        lag_ms={},
    )
    # the driver looked at 0.4 s, 1.7 s and 3.2 s: out of order, as a list may come
    samples = [_sample(3.2, 9, 3), _sample(0.4, 1, 4), _sample(1.7, 5, 4)]
    rows = timeseries(data, Window.of(1, 3), samples, consumers=4)
    assert [r["second"] for r in rows] == [0, 1, 2, 3]
    assert [r["phase"] for r in rows] == ["warmup", "window", "window", "drain"]
    assert [r["published"] for r in rows] == [100, 200, 300, 300]
    assert [r["committed"] for r in rows] == [90, 190, 290, 300]
    assert [r["backlog"] for r in rows] == [10, 10, 10, 0]
    # a row ends at second + 1: it takes the last look at or before then
    assert [r["retries"] for r in rows] == [1, 5, 5, 9]
    assert [r["consumers_alive"] for r in rows] == [4, 4, 4, 3]


def test_before_the_driver_first_looks_the_trial_has_all_its_consumers() -> None:
    data = PerSecond(sent={0: 5}, committed={0: 5}, latencies={}, lag_ms={})
    (row,) = timeseries(data, None, [], consumers=2)
    assert row["phase"] == "burst"
    assert (row["retries"], row["consumers_alive"]) == (0, 2)
