"""Latency histograms: record, encode, merge, summarise."""

from __future__ import annotations

import math

import pytest

from harness.model import latency


def test_encode_merge_round_trip_keeps_counts() -> None:
    a, b = latency.new(), latency.new()
    for micros in (150, 2_000, 35_000):
        latency.record(a, micros, count=3)
    latency.record(b, 900_000, count=5)
    latency.record(b, 150)
    merged = latency.merge([latency.encode(a), "", latency.encode(b)])
    assert merged.get_total_count() == 3 * 3 + 5 + 1
    assert merged.get_count_at_value(150) == 4
    assert merged.get_count_at_value(900_000) == 5
    assert merged.values_are_equivalent(merged.get_max_value(), 900_000)


def test_merge_of_nothing_is_empty() -> None:
    assert latency.merge([]).get_total_count() == 0
    assert latency.merge(["", ""]).get_total_count() == 0


def test_encoding_is_ascii_text() -> None:
    hist = latency.new()
    latency.record(hist, 42)
    text = latency.encode(hist)
    assert isinstance(text, str)
    text.encode("ascii")


def test_summary_of_an_empty_histogram_is_nan() -> None:
    summary = latency.summary_ms(latency.new())
    assert set(summary) == {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms"}
    assert all(math.isnan(v) for v in summary.values())


def test_summary_is_in_milliseconds() -> None:
    hist = latency.new()
    latency.record(hist, 1_000, count=90)  # 1 ms
    latency.record(hist, 20_000, count=10)  # 20 ms
    summary = latency.summary_ms(hist)
    rel = 10**-latency.SIGNIFICANT_DIGITS
    assert summary["latency_p50_ms"] == pytest.approx(1.0, rel=rel)
    assert summary["latency_p95_ms"] == pytest.approx(20.0, rel=rel)
    assert summary["latency_p99_ms"] == pytest.approx(20.0, rel=rel)
    assert summary["latency_max_ms"] == pytest.approx(20.0, rel=rel)


@pytest.mark.parametrize("micros", [0, -5, -(10**12)])
def test_values_below_the_range_clamp_to_the_lowest(micros: int) -> None:
    hist = latency.new()
    latency.record(hist, micros)
    assert hist.get_total_count() == 1
    assert hist.values_are_equivalent(hist.get_min_value(), latency.LOWEST_US)


@pytest.mark.parametrize("micros", [latency.HIGHEST_US + 1, latency.HIGHEST_US * 10, 10**15])
def test_values_above_the_range_clamp_to_the_highest(micros: int) -> None:
    hist = latency.new()
    latency.record(hist, micros, count=2)
    assert hist.get_total_count() == 2
    assert hist.values_are_equivalent(hist.get_max_value(), latency.HIGHEST_US)
