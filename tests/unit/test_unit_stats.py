"""Statistics: means, spreads and 95% intervals of repeated trials, checked by hand."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis import stats
from harness.trials.results import load
from tests.data import runs

# -- the t quantile -------------------------------------------------------------------


def test_t_critical_matches_the_printed_table() -> None:
    # Two-sided 95% values from any statistics textbook's t table.
    printed = {1: 12.706, 2: 4.303, 5: 2.571, 10: 2.228, 20: 2.086, 30: 2.042}
    for df, value in printed.items():
        assert stats.t_critical(df) == pytest.approx(value, abs=5e-4)


def test_t_critical_for_many_degrees_of_freedom_approaches_the_normal_quantile() -> None:
    assert stats.t_critical(40) == pytest.approx(2.021, abs=1e-3)
    assert stats.t_critical(60) == pytest.approx(2.000, abs=1e-3)
    assert stats.t_critical(120) == pytest.approx(1.980, abs=1e-3)
    assert stats.t_critical(10**6) == pytest.approx(1.960, abs=1e-3)
    values = [stats.t_critical(df) for df in range(1, 300)]
    assert values == sorted(values, reverse=True)


def test_t_critical_of_no_degrees_of_freedom_is_nan() -> None:
    assert math.isnan(stats.t_critical(0))


# -- one sample -----------------------------------------------------------------------


def test_interval_of_known_numbers() -> None:
    mean, std, n, half = stats.interval([10.0, 12.0, 14.0])
    assert (mean, std, n) == (12.0, 2.0, 3)
    assert half == pytest.approx(4.303 * 2.0 / math.sqrt(3), rel=1e-4)  # 4.969


def test_interval_agrees_with_the_statistics_module() -> None:
    values = [15124.4, 3320.3, 12822.3, 6197.9, 15881.8, 10476.2, 10840.1]
    mean, std, n, half = stats.interval(values)
    assert mean == pytest.approx(statistics.mean(values))
    assert std == pytest.approx(statistics.stdev(values))
    assert n == 7
    assert half == pytest.approx(2.447 * statistics.stdev(values) / math.sqrt(7), rel=1e-4)


def test_one_value_has_a_mean_but_no_spread() -> None:
    mean, std, n, half = stats.interval([7.5])
    assert (mean, n) == (7.5, 1)
    assert math.isnan(std) and math.isnan(half)


def test_nan_values_are_left_out_and_nothing_gives_nan() -> None:
    assert stats.interval([1.0, math.nan, 3.0])[:3] == (2.0, math.sqrt(2), 2)
    mean, std, n, half = stats.interval([math.nan])
    assert n == 0 and math.isnan(mean) and math.isnan(std) and math.isnan(half)


# -- summarize ------------------------------------------------------------------------


def trials() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "isolation": ["rc", "rc", "rc", "ser", "ser", "ser"],
            "consumers": [1, 1, 1, 1, 1, 2],
            "throughput_eps": [100.0, 110.0, 120.0, 50.0, 70.0, 40.0],
            "latency_p99_ms": [10.0, 10.0, 10.0, 30.0, math.nan, 90.0],
        }
    )


def test_summarize_groups_in_sorted_order_with_every_statistic() -> None:
    s = stats.summarize(trials(), ["isolation", "consumers"], ["throughput_eps"])
    assert list(s.columns) == [
        "isolation",
        "consumers",
        *(f"throughput_eps_{x}" for x in ("mean", "std", "n", "ci", "low", "high")),
    ]
    assert s[["isolation", "consumers"]].values.tolist() == [["rc", 1], ["ser", 1], ["ser", 2]]
    rc = s.iloc[0]
    assert rc["throughput_eps_mean"] == 110.0
    assert rc["throughput_eps_std"] == 10.0
    assert rc["throughput_eps_n"] == 3
    half = 4.303 * 10.0 / math.sqrt(3)
    assert rc["throughput_eps_ci"] == pytest.approx(half, rel=1e-4)
    assert rc["throughput_eps_low"] == pytest.approx(110.0 - half, rel=1e-4)
    assert rc["throughput_eps_high"] == pytest.approx(110.0 + half, rel=1e-4)
    two = s.iloc[1]  # n = 2: t = 12.706
    assert two["throughput_eps_ci"] == pytest.approx(
        12.706 * math.sqrt(200) / math.sqrt(2), rel=1e-4
    )


def test_summarize_a_single_trial_group_has_a_nan_interval_not_an_error() -> None:
    s = stats.summarize(trials(), ["isolation", "consumers"], ["throughput_eps"])
    single = s.iloc[2]
    assert single["throughput_eps_mean"] == 40.0
    assert single["throughput_eps_n"] == 1
    assert math.isnan(single["throughput_eps_ci"]) and math.isnan(single["throughput_eps_std"])


def test_summarize_counts_n_per_metric_without_its_nans() -> None:
    s = stats.summarize(trials(), ["isolation"], ["throughput_eps", "latency_p99_ms"])
    ser = s[s["isolation"] == "ser"].iloc[0]
    assert ser["throughput_eps_n"] == 3
    assert ser["latency_p99_ms_n"] == 2
    assert ser["latency_p99_ms_mean"] == 60.0


def test_summarize_without_groups_is_one_row_over_everything() -> None:
    s = stats.summarize(trials(), [], ["throughput_eps"])
    assert len(s) == 1
    assert s["throughput_eps_mean"].iloc[0] == pytest.approx(
        statistics.mean(trials().throughput_eps)
    )


def test_summarize_names_a_missing_column() -> None:
    with pytest.raises(KeyError, match="batch_size"):
        stats.summarize(trials(), ["batch_size"], ["throughput_eps"])


def test_repeated_trials_not_sustained_are_summarised_by_kind_of_reason(tmp_path: Path) -> None:
    # one consumer sustains 1,000 events/s (tests.data.runs.ceiling): 3,000 is too much
    params = {"rate": 3000, "consumers": 1, "duration_s": 4, "warmup_s": 1}
    summary, _ = stats.steady_summary(load(runs.make_run(tmp_path, params=params, repeat=3)))
    assert summary["not_sustained"].tolist() == ["backlog grew (3)"]
    once, _ = stats.steady_summary(load(runs.make_run(tmp_path, params=params, run_id="r2")))
    assert once["not_sustained"].iloc[0].startswith("backlog grew 2,0")  # the figure itself


def test_flags_read_bools_text_and_blanks_alike() -> None:
    values = pd.Series([True, "True", "false", "False", math.nan, ""], dtype=object)
    assert stats.flags(values).tolist() == [True, True, False, False, False, False]
