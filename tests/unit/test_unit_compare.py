"""Comparisons with verdicts: ratios with intervals, Welch's test, what a run allows."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from harness.analysis import compare, report
from harness.trials.results import load
from tests.data import runs


def test_ratio_interval_and_p_value_of_known_samples() -> None:
    base, other = [100.0, 110.0, 90.0], [200.0, 190.0, 215.0]
    got = compare.compare(base, other)
    assert got["baseline_mean"] == 100.0 and got["other_mean"] == pytest.approx(201.6667)
    assert got["ratio"] == pytest.approx(2.016667)
    assert got["ratio_low"] < got["ratio"] < got["ratio_high"]
    assert got["p_value"] == pytest.approx(
        scipy_stats.ttest_ind(other, base, equal_var=False).pvalue
    )
    # by hand: the delta method on the log scale, Welch–Satterthwaite's df
    la = 100.0 / (3 * 100.0**2)
    lb = (sum((v - 201.6667) ** 2 for v in other) / 2) / (3 * 201.6667**2)
    df = (la + lb) ** 2 / (la**2 / 2 + lb**2 / 2)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(la + lb)
    assert math.log(got["ratio_high"] / got["ratio"]) == pytest.approx(half, rel=1e-3)
    assert math.log(got["ratio"] / got["ratio_low"]) == pytest.approx(half, rel=1e-3)


def _comparison(base: list[float], other: list[float]) -> compare.Comparison:
    return compare.Comparison(
        metric="throughput_eps",
        baseline="b",
        other="o",
        where="",
        **compare.compare(base, other),  # type: ignore[arg-type]
    )


def test_a_clear_difference_is_beyond_the_noise_and_a_blur_is_not() -> None:
    assert _comparison([100, 101, 99, 100], [150, 151, 149, 150]).verdict is True
    blur = _comparison([100, 130, 80, 110], [105, 95, 125, 90])
    assert blur.verdict is False
    assert blur.ratio_low < 1 < blur.ratio_high


def test_one_run_a_side_has_no_verdict_and_says_how_to_get_one() -> None:
    c = _comparison([100.0], [150.0, 160.0])
    assert c.ratio == pytest.approx(1.55)
    assert math.isnan(c.ratio_low) and math.isnan(c.p_value)
    assert c.verdict is None


def test_identical_runs_have_an_exact_ratio() -> None:
    c = _comparison([100.0, 100.0], [200.0, 200.0])
    assert (c.ratio, c.ratio_low, c.ratio_high) == (2.0, 2.0, 2.0)
    assert c.verdict is True
    same = _comparison([100.0, 100.0], [100.0, 100.0])
    assert same.verdict is False


def test_nothing_finite_gives_nan_not_an_error() -> None:
    got = compare.compare([math.nan], [])
    assert got["n_baseline"] == 0 and math.isnan(got["ratio"])


def test_a_run_compares_each_isolation_level_with_the_first_at_each_consumer_count(
    tmp_path: Path,
) -> None:
    path = runs.make_run(
        tmp_path,
        sweep={"isolation": ["read_committed", "serializable"], "consumers": [1, 2]},
        repeat=3,
    )
    found = compare.comparisons(load(path))
    throughput = [
        c for c in found if c.metric == "throughput_eps" and c.other.startswith("isolation")
    ]
    assert [(c.other, c.where) for c in throughput] == [
        ("isolation = serializable", "consumers = 1"),
        ("isolation = serializable", "consumers = 2"),
    ]
    for c in throughput:
        # the synthetic serializable trials run at a quarter of read committed's rate
        assert c.ratio == pytest.approx(0.25)
        assert c.n_baseline == c.n_other == 3
        assert c.verdict is True
    text = report.write_report(path).read_text()
    assert "## Comparisons" in text
    assert "| isolation = serializable | isolation = read_committed | consumers = 1 |" in text


def test_a_run_of_single_trials_says_no_verdict_can_be_had(tmp_path: Path) -> None:
    path = runs.make_run(tmp_path, sweep={"isolation": ["read_committed", "serializable"]})
    section = compare.section(load(path))
    assert "ran once" in section and "repeat=3" in section
    assert all(c.verdict is None for c in compare.comparisons(load(path)))


def test_a_run_that_sweeps_none_of_the_compared_axes_has_no_section(tmp_path: Path) -> None:
    path = runs.make_run(tmp_path, sweep={"topics": [5, 10]})
    assert compare.section(load(path)) == ""


def test_under_load_a_pair_that_sustains_its_rate_compares_latency_and_a_saturated_one_throughput(
    tmp_path: Path,
) -> None:
    # synthetic ceilings: read committed 1,000 events/s, serializable 250 (one consumer)
    path = runs.make_run(
        tmp_path,
        sweep={"isolation": ["read_committed", "serializable"], "rate": [200, 500]},
        params={"duration_s": 4, "warmup_s": 1, "consumers": 1},
        repeat=3,
    )
    found = {(c.where, c.metric): c for c in compare.comparisons(load(path))}
    # both sustain 200 events/s: their throughput is that rate, their latency differs
    assert ("rate = 200.0", "throughput_eps") not in found
    slower = found[("rate = 200.0", "latency_p99_ms")]
    assert slower.ratio > 3 and slower.verdict is True
    # serializable saturates at 500: its throughput is its ceiling, its latency a backlog
    assert ("rate = 500.0", "latency_p99_ms") not in found
    saturated = found[("rate = 500.0", "throughput_eps")]
    assert saturated.ratio == pytest.approx(0.5, rel=0.01)
    assert saturated.verdict is True
    assert "both sustain" in compare.section(load(path))


def test_a_verdict_sentence_per_pair_names_where_it_beats_the_noise(tmp_path: Path) -> None:
    path = runs.make_run(
        tmp_path,
        sweep={"isolation": ["read_committed", "serializable"], "consumers": [1, 2]},
        repeat=3,
    )
    found = compare.comparisons(load(path))
    sentences = compare.verdicts(found)
    # serializable runs at a quarter of read committed's rate, at both consumer counts
    assert (
        "- **isolation = serializable** against isolation = read_committed, events/s: beyond "
        "the noise, at consumers = 1 (0.25×); consumers = 2 (0.25×)."
    ) in sentences
    assert all(s in compare.section(load(path)) for s in sentences)


def test_a_verdict_sentence_says_when_nothing_beats_the_noise() -> None:
    same = [
        compare.Comparison(
            "throughput_eps", "a = 1", "a = 2", f"b = {b}", 1, 1, 3, 3, r, 0.5, 2, 0.6
        )
        for b, r in ((1, 0.9), (2, 1.1))
    ]
    assert compare.verdicts(same) == [
        "- **a = 2** against a = 1, events/s: within the noise in all 2 configurations "
        "(0.90×–1.10×)."
    ]


@pytest.mark.parametrize("axis", ["batch_size", "consumers"])
def test_a_size_or_a_count_is_compared_with_the_next_smaller_one(tmp_path: Path, axis: str) -> None:
    path = runs.make_run(tmp_path, sweep={axis: [1, 10, 100]}, repeat=3)
    pairs = {(c.other, c.baseline) for c in compare.comparisons(load(path))}
    assert pairs == {(f"{axis} = 10", f"{axis} = 1"), (f"{axis} = 100", f"{axis} = 10")}


def test_a_capacity_search_has_no_comparisons(tmp_path: Path) -> None:
    run = load(runs.make_capacity_run(tmp_path))
    assert compare.comparisons(run) == [] and compare.section(run) == ""
