"""The bench's arithmetic: medians over rounds, ratios of the medians, and the targets."""

from __future__ import annotations

import math

import pytest

from harness.bench.pipeline import BenchConfig, Measurement, medians, ratios, round_ratios, targets


def m(key: str, rate: float, r: int) -> Measurement:
    return Measurement(key, key, events=int(rate), seconds=1.0, verified=True, round=r)


RATES = [
    # (a)–(f) per round; round 2 is a burst of load elsewhere on the machine
    {"a": 70_000, "b": 1_000, "c": 60_000, "d": 2_000, "e": 27_000, "f": 30_000},
    {"a": 100_000, "b": 900, "c": 50_000, "d": 2_500, "e": 20_000, "f": 31_000},
    {"a": 72_000, "b": 1_050, "c": 61_000, "d": 1_800, "e": 28_000, "f": 29_000},
]
ROUNDS = [[m(key, rate, r) for key, rate in rates.items()] for r, rates in enumerate(RATES)]
ALL = [x for round_ in ROUNDS for x in round_]


def test_medians_are_per_part_over_the_rounds() -> None:
    assert medians(ALL) == {
        "a": 72_000,
        "b": 1_000,
        "c": 60_000,
        "d": 2_000,
        "e": 27_000,
        "f": 30_000,
    }


def test_ratios_are_of_the_medians() -> None:
    assert ratios(ALL) == pytest.approx(
        {"c/a": 60_000 / 72_000, "c/b": 60.0, "d/b": 2.0, "e/f": 0.9}
    )


def test_round_ratios_are_within_each_round() -> None:
    per_round = round_ratios(ALL)
    assert len(per_round) == 3
    assert per_round[1]["c/a"] == pytest.approx(0.5)
    assert per_round[0] == ratios(ROUNDS[0])


def test_a_missing_part_gives_nan_not_an_error() -> None:
    got = ratios([m("a", 1.0, 0), m("c", 1.0, 0)])
    assert got["c/a"] == 1.0 and math.isnan(got["c/b"]) and math.isnan(got["d/b"])
    assert math.isnan(got["e/f"])


def test_repeat_must_be_positive_and_quick_is_one_round() -> None:
    with pytest.raises(ValueError, match="repeat"):
        BenchConfig(repeat=0)
    assert BenchConfig().repeat == 3
    assert BenchConfig().quick().repeat == 1
    assert BenchConfig().warmup and not BenchConfig().quick().warmup


def test_targets_are_judged_on_the_medians() -> None:
    got = {t.name: t for t in targets(ALL)}
    assert list(got) == ["c/a", "c/b", "d/b", "e/f", "(c) events/s"]
    # recognising redeliveries costs exactly the 10% allowed: met
    assert got["e/f"].value == pytest.approx(0.9) and got["e/f"].met
    assert got["c/a"].value == pytest.approx(60_000 / 72_000) and got["c/a"].met
    assert got["c/b"].met and got["d/b"].met  # exactly 60 and 2.0 against 60 and 1.5
    # (a) stays below 100,000 events/s: the pipeline's own figure is not the bar, c/a is
    assert not got["(c) events/s"].met and not got["(c) events/s"].applies
    assert got["(c) events/s"].verdict == "does not apply"


def test_the_pipeline_must_reach_100k_when_the_database_alone_does() -> None:
    fast = [m("a", 120_000, 0), m("b", 1_000, 0), m("c", 99_000, 0), m("d", 1_400, 0)]
    got = {t.name: t for t in targets(fast)}
    assert got["(c) events/s"].applies and not got["(c) events/s"].met
    assert got["(c) events/s"].claim == "(c) events/s 99,000 ≥ 100,000"
    assert got["(c) events/s"].verdict == "NOT met"
    assert (got["c/a"].claim, got["c/a"].verdict) == ("c/a 0.82 ≥ 0.8", "met")
    assert got["c/a"].met and not got["d/b"].met
    assert [t.name for t in targets([m("c", 1.0, 0), m("b", 1.0, 0)])] == ["c/b"]


def test_e_and_f_differ_only_in_whether_redeliveries_are_recognised() -> None:
    from harness.bench.pipeline import SHAPES
    from harness.trials.experiment import ExperimentError, TrialParams

    e, f = SHAPES["e"][1], SHAPES["f"][1]
    assert {k: v for k, v in f.items() if k != "redelivery"} == e
    assert f["redelivery"] == "counted" and TrialParams().redelivery == "recognised"
    assert e["entry_size"] == 1  # every event its own entry: an identity per event
    with pytest.raises(ExperimentError, match="redelivery = 'ignored' is not supported"):
        TrialParams(redelivery="ignored")
