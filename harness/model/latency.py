"""End-to-end latency in an HdrHistogram: microseconds, 3 significant digits, up to 1 hour.

A trial keeps one histogram per second (by when each event was due), at 2 significant
digits (1% resolution, a tenth of the memory): the steady window's percentiles and the
per-second p99 series are merges of them.
"""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
#: the per-second histograms of a trial
PER_SECOND_DIGITS = 2


def new(significant_digits: int = SIGNIFICANT_DIGITS) -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, significant_digits)


def record(hist: HdrHistogram, micros: int, count: int = 1) -> None:
    """Record ``count`` events of this latency, clamped into the histogram's range."""
    hist.record_value(min(max(micros, LOWEST_US), HIGHEST_US), count)


def encode(hist: HdrHistogram) -> str:
    return hist.encode().decode("ascii")


def merge(encoded: Iterable[str], significant_digits: int = SIGNIFICANT_DIGITS) -> HdrHistogram:
    total = new(significant_digits)
    for item in encoded:
        if item:
            total.add(HdrHistogram.decode(item.encode("ascii")))
    return total


#: the percentiles a summary gives, by the name of their column's middle part
PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def percentile_ms(hist: HdrHistogram, percentile: float) -> float:
    """One percentile in milliseconds (NaN when nothing was recorded)."""
    if hist.get_total_count() == 0:
        return float("nan")
    return float(hist.get_value_at_percentile(percentile)) / 1000


def summary_ms(
    hist: HdrHistogram, prefix: str = "latency", names: Iterable[str] = ("p50", "p95", "p99")
) -> dict[str, float]:
    """``<prefix>_<name>_ms`` for each percentile named, and ``<prefix>_max_ms``, in
    milliseconds (NaN when nothing was recorded)."""
    out = {f"{prefix}_{name}_ms": percentile_ms(hist, PERCENTILES[name]) for name in names}
    empty = hist.get_total_count() == 0
    out[f"{prefix}_max_ms"] = float("nan") if empty else hist.get_max_value() / 1000
    return out
