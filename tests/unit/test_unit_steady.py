"""The steady-state window of an open-loop trial, its verdicts, and the per-second series."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest

from harness.model import latency
from harness.model.steady import PerSecond, SteadyState, Window, measure


def hist(ms: float, count: int = 1) -> str:
    """One second's encoded latency histogram: ``count`` events of ``ms`` milliseconds."""
    h = latency.new(latency.PER_SECOND_DIGITS)
    latency.record(h, round(ms * 1000), count)
    return latency.encode(h)


def data(
    sent: Mapping[int, int],
    committed: Mapping[int, int],
    latencies: Mapping[int, str] | None = None,
    lag_ms: Mapping[int, float] | None = None,
) -> PerSecond:
    return PerSecond(
        sent=dict(sent),
        committed=dict(committed),
        latencies={s: (h,) for s, h in (latencies or {}).items()},
        lag_ms=dict(lag_ms or {}),
    )


# -- Window ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("warmup_s", "duration_s", "first", "end"),
    [(2, 10, 2, 10), (0, 1, 0, 1), (1.5, 6.7, 2, 6), (0.2, 2.0, 1, 2), (2.0, 3.0, 2, 3)],
)
def test_window_is_the_whole_seconds_between_warmup_and_duration(
    warmup_s: float, duration_s: float, first: int, end: int
) -> None:
    window = Window.of(warmup_s, duration_s)
    assert (window.first, window.end, window.seconds) == (first, end, end - first)


@pytest.mark.parametrize(("warmup_s", "duration_s"), [(2, 2), (2, 2.9), (2.5, 3.5), (3, 1)])
def test_a_window_without_a_whole_second_is_an_error(warmup_s: float, duration_s: float) -> None:
    with pytest.raises(ValueError, match="no whole second"):
        Window.of(warmup_s, duration_s)


def test_window_membership_and_phases() -> None:
    window = Window.of(2, 5)
    assert [s in window for s in range(7)] == [False, False, True, True, True, False, False]
    assert "3" not in window and 3.0 not in window
    assert [window.phase(s) for s in range(7)] == [
        "warmup",
        "warmup",
        "window",
        "window",
        "window",
        "drain",
        "drain",
    ]


# -- PerSecond ------------------------------------------------------------------------


def test_merge_sums_across_actors_with_string_keys_as_json_gives_them() -> None:
    publishers: list[dict[str, Any]] = [
        {"sent_by_second": {"0": 10, "1": 20}, "lag_by_second": {"0": 1.5, "1": 0.0}},
        {"sent_by_second": {0: 5, 2: 7}, "lag_by_second": {"0": 0.5, "2": 30.0}},
        {},  # a publisher that reported nothing
    ]
    consumers: list[dict[str, Any]] = [
        {"committed_by_second": {"1": 12, "2": 3}, "latencies": {"0": hist(5), "1": hist(9)}},
        {"committed_by_second": {1: 4, "3": 23}, "latencies": {0: hist(7)}},
    ]
    merged = PerSecond.merge(publishers, consumers)
    assert dict(merged.sent) == {0: 15, 1: 20, 2: 7}
    assert dict(merged.committed) == {1: 16, 2: 3, 3: 23}
    assert dict(merged.lag_ms) == {0: 1.5, 1: 0.0, 2: 30.0}  # the most behind, not a sum
    assert sorted(merged.latencies) == [0, 1]
    assert len(merged.latencies[0]) == 2 and len(merged.latencies[1]) == 1
    assert merged.histogram([0]).get_total_count() == 2
    assert merged.histogram([0, 1, 2]).get_total_count() == 3
    assert merged.last == 3
    assert sum(merged.sent.values()) == sum(merged.committed.values()) == 42


def test_nothing_reported_has_no_last_second_and_no_rows() -> None:
    empty = PerSecond.merge([], [])
    assert empty.last == -1
    assert empty.series(Window.of(1, 3)) == []
    assert empty.backlog_at(10) == 0


def test_backlog_at_a_second_is_published_minus_committed_before_it() -> None:
    d = data(sent={0: 100, 1: 100, 2: 100}, committed={0: 40, 1: 90, 2: 120, 3: 50})
    assert [d.backlog_at(s) for s in range(5)] == [0, 60, 70, 50, 0]


def test_series_is_cumulative_a_row_a_second_with_phases() -> None:
    d = data(
        sent={0: 100, 1: 100, 2: 100, 3: 100},
        committed={0: 50, 1: 100, 2: 100, 3: 100, 4: 50},
        latencies={0: hist(20), 2: hist(40), 4: hist(80)},
    )
    rows = d.series(Window.of(1, 3))
    assert [r["second"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["elapsed_s"] for r in rows] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [r["published"] for r in rows] == [100, 200, 300, 400, 400]
    assert [r["committed"] for r in rows] == [50, 150, 250, 350, 400]
    assert [r["backlog"] for r in rows] == [50, 50, 50, 50, 0]
    assert [r["phase"] for r in rows] == ["warmup", "window", "window", "drain", "drain"]
    p99 = [r["latency_p99_ms"] for r in rows]
    assert math.isnan(p99[1]) and math.isnan(p99[3])  # no event was due in those seconds
    assert p99[0] == pytest.approx(20, rel=0.01)
    assert p99[2] == pytest.approx(40, rel=0.01)
    assert p99[4] == pytest.approx(80, rel=0.01)
    # a burst has no window: every row says so
    assert {r["phase"] for r in d.series(None)} == {"burst"}


def test_series_backlog_never_shows_negative() -> None:
    """Commits counted in an earlier second than the sends (clocks apart) read as 0."""
    rows = data(sent={1: 10}, committed={0: 10}).series(None)
    assert [r["backlog"] for r in rows] == [0, 0]


# -- measure --------------------------------------------------------------------------

WINDOW = Window.of(2, 6)  # seconds 2, 3, 4, 5
RATE = 1000.0
SLO_MS = 100.0


def trial(
    *, sent: int = 1000, committed: int = 1000, ms: float | None = 20.0, lag: float = 0.0
) -> PerSecond:
    """Seconds 0 … 7 of a trial at ``RATE``: ``sent`` and ``committed`` a second (the
    rate itself outside the window), latencies of ``ms`` (none when ``None``)."""
    seconds = range(8)
    return data(
        sent={s: sent if s in WINDOW else 1000 for s in seconds},
        committed={s: committed if s in WINDOW else 1000 for s in seconds},
        latencies={} if ms is None else {s: hist(ms, 100) for s in seconds},
        lag_ms={s: lag for s in seconds},
    )


def test_a_held_bounded_window_under_the_slo_is_sustained() -> None:
    st = measure(trial(lag=3.5), WINDOW, offered_eps=RATE, slo_p99_ms=SLO_MS)
    assert st.sustained is True and st.rate_held is True
    assert st.not_sustained == ()
    assert st.window_s == 4.0
    assert st.offered_eps == RATE
    assert st.achieved_publish_eps == st.steady_eps == 1000.0
    assert st.backlog_growth_eps == 0.0
    assert st.publish_lag_max_ms == 3.5
    for name in ("p50", "p95", "p99", "p999", "max"):
        assert getattr(st, f"steady_{name}_ms") == pytest.approx(20, rel=0.01)


def test_publishers_short_of_the_rate_are_not_sustained() -> None:
    st = measure(trial(sent=900, committed=900), WINDOW, offered_eps=RATE, slo_p99_ms=SLO_MS)
    assert st.rate_held is False and st.sustained is False
    assert st.achieved_publish_eps == 900.0
    assert st.not_sustained == ("publishers sent 900 of 1,000 events/s",)


def test_publishers_at_95_percent_still_hold_the_rate() -> None:
    st = measure(trial(sent=950, committed=950), WINDOW, offered_eps=RATE, slo_p99_ms=SLO_MS)
    assert st.rate_held is True and st.sustained is True


def test_a_growing_backlog_is_not_sustained() -> None:
    st = measure(trial(committed=900), WINDOW, offered_eps=RATE, slo_p99_ms=SLO_MS)
    assert st.rate_held is True and st.sustained is False
    assert st.backlog_growth_eps == 100.0
    assert st.steady_eps == 900.0
    assert st.not_sustained == ("backlog grew 100 events/s",)


def test_backlog_growth_of_five_percent_is_still_bounded() -> None:
    st = measure(trial(committed=950), WINDOW, offered_eps=RATE, slo_p99_ms=SLO_MS)
    assert st.backlog_growth_eps == 50.0 and st.sustained is True


def test_p99_over_the_slo_is_not_sustained() -> None:
    st = measure(trial(ms=250.0), WINDOW, offered_eps=RATE, slo_p99_ms=SLO_MS)
    assert st.rate_held is True and st.sustained is False
    assert st.steady_p99_ms == pytest.approx(250, rel=0.01)
    (why,) = st.not_sustained
    assert why.startswith("p99 25") and why.endswith("ms over the 100 ms objective")


def test_only_the_window_counts() -> None:
    """Slow seconds in the warm-up and the drain do not fail the window."""
    d = trial()
    slow = hist(5000.0, 100)
    latencies = {**d.latencies, 0: (slow,), 1: (slow,), 6: (slow,), 7: (slow,)}
    d = PerSecond(sent=d.sent, committed=d.committed, latencies=latencies, lag_ms=d.lag_ms)
    st = measure(d, WINDOW, offered_eps=RATE, slo_p99_ms=SLO_MS)
    assert st.sustained is True
    assert st.steady_max_ms == pytest.approx(20, rel=0.01)


def test_latencies_missing_from_the_window_are_not_within_the_slo() -> None:
    st = measure(trial(ms=None), WINDOW, offered_eps=RATE, slo_p99_ms=SLO_MS)
    assert math.isnan(st.steady_p99_ms) and math.isnan(st.steady_max_ms)
    assert st.sustained is False
    assert st.not_sustained == ("p99 nan ms over the 100 ms objective",)


def test_nothing_committed_is_not_sustained_for_every_reason_that_holds() -> None:
    st = measure(trial(committed=0, ms=None), WINDOW, offered_eps=RATE, slo_p99_ms=SLO_MS)
    assert st.steady_eps == 0.0
    assert math.isnan(st.steady_p99_ms)
    assert st.sustained is False and st.rate_held is True
    assert len(st.not_sustained) == 2
    assert st.not_sustained[0] == "backlog grew 1,000 events/s"
    assert st.not_sustained[1].startswith("p99 nan ms")


def test_all_three_failures_are_reported_together() -> None:
    st = measure(
        trial(sent=500, committed=100, ms=400.0), WINDOW, offered_eps=RATE, slo_p99_ms=SLO_MS
    )
    assert [w.split()[0] for w in st.not_sustained] == ["publishers", "backlog", "p99"]


def test_a_burst_has_no_window_figures() -> None:
    burst = SteadyState()
    assert math.isnan(burst.steady_p99_ms) and burst.sustained is None
    row = burst.row()
    assert row["sustained"] == "" and row["rate_held"] == "" and row["not_sustained"] == ""
    assert math.isnan(row["steady_eps"])


def test_steady_row_rounds_floats_and_joins_reasons() -> None:
    st = measure(trial(sent=900, committed=800), WINDOW, offered_eps=RATE, slo_p99_ms=SLO_MS)
    row = st.row()
    assert row["sustained"] is False and row["rate_held"] is False
    assert (
        row["not_sustained"] == "publishers sent 900 of 1,000 events/s; backlog grew 100 events/s"
    )
    assert row["steady_p99_ms"] == round(st.steady_p99_ms, 3)
    assert list(row) == [
        "window_s",
        "offered_eps",
        "achieved_publish_eps",
        "steady_eps",
        "steady_p50_ms",
        "steady_p95_ms",
        "steady_p99_ms",
        "steady_p999_ms",
        "steady_max_ms",
        "backlog_growth_eps",
        "publish_lag_max_ms",
        "rate_held",
        "sustained",
        "not_sustained",
    ]
