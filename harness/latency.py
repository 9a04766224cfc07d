"""End-to-end latency in an HdrHistogram: microseconds, 3 significant digits, up to 1 hour."""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3


def new() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record(hist: HdrHistogram, micros: int, count: int = 1) -> None:
    """Record ``count`` events of this latency, clamped into the histogram's range."""
    hist.record_value(min(max(micros, LOWEST_US), HIGHEST_US), count)


def encode(hist: HdrHistogram) -> str:
    return hist.encode().decode("ascii")


def merge(encoded: Iterable[str]) -> HdrHistogram:
    total = new()
    for item in encoded:
        if item:
            total.add(HdrHistogram.decode(item.encode("ascii")))
    return total


def summary_ms(hist: HdrHistogram) -> dict[str, float]:
    """p50, p95, p99 and max in milliseconds (NaN when nothing was recorded)."""
    if hist.get_total_count() == 0:
        nan = float("nan")
        return {
            "latency_p50_ms": nan,
            "latency_p95_ms": nan,
            "latency_p99_ms": nan,
            "latency_max_ms": nan,
        }
    return {
        "latency_p50_ms": hist.get_value_at_percentile(50) / 1000,
        "latency_p95_ms": hist.get_value_at_percentile(95) / 1000,
        "latency_p99_ms": hist.get_value_at_percentile(99) / 1000,
        "latency_max_ms": hist.get_max_value() / 1000,
    }
