"""Capacity: the rate search decided from what was tried, and the search driven end to end
by a fake trial runner whose system sustains any rate up to a true capacity."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from harness.model.steady import SteadyState
from harness.trials import capacity
from harness.trials.capacity import FRACTIONS, CapacitySearch, Point, Search, round_rate
from harness.trials.experiment import Experiment, ExperimentError, Trial, TrialParams
from harness.trials.results import TrialResult

# -- round_rate -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "rounded"),
    [
        (12_345, 12_300.0),
        (12_355, 12_400.0),
        (1_000, 1_000.0),
        (999.5, 1_000.0),
        (100, 100.0),
        (123.45, 123.0),
        (7.777, 7.78),
        (0.5, 0.5),
        (0.012_345, 0.0123),
        (123_456_789, 123_000_000.0),
    ],
)
def test_round_rate_keeps_three_significant_digits(rate: float, rounded: float) -> None:
    assert round_rate(rate) == pytest.approx(rounded, rel=1e-12)
    assert isinstance(round_rate(rate), float)


@pytest.mark.parametrize("rate", [0.0, -5.0])
def test_round_rate_of_nothing_is_zero(rate: float) -> None:
    assert round_rate(rate) == 0.0


def test_round_rate_is_close_and_idempotent() -> None:
    for i in range(1, 2_000):
        rate = i * 37.3
        r = round_rate(rate)
        assert abs(r - rate) <= 0.005 * rate
        assert round_rate(r) == r


# -- Search ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"tolerance": 0}, {"tolerance": 1}, {"step": 0}, {"step": 1.5}, {"max_trials": 0}],
)
def test_search_settings_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Search(**kwargs)  # type: ignore[arg-type]


def test_the_first_rate_is_the_probe_rounded() -> None:
    assert Search().next_rate(12_345.6, []) == 12_300.0


def test_steps_down_while_nothing_is_sustained_and_up_while_nothing_failed() -> None:
    search = Search(step=0.5)
    assert search.next_rate(1000, [(1000.0, False)]) == 500.0
    assert search.next_rate(1000, [(1000.0, False), (500.0, False)]) == 250.0
    assert search.next_rate(1000, [(1000.0, True)]) == 2000.0
    assert search.next_rate(1000, [(1000.0, True), (2000.0, True)]) == 4000.0


def test_bisects_between_highest_sustained_and_lowest_failed() -> None:
    search = Search(tolerance=0.1)
    tried = [(1000.0, True), (1670.0, False)]
    assert search.next_rate(1000, tried) == 1340.0  # round_rate(1335)
    tried += [(1340.0, True), (1200.0, True), (1500.0, False)]
    assert search.next_rate(1000, tried) == 1420.0
    # the failed rate within 10 % above the sustained one: over
    assert search.next_rate(1000, [(1000.0, True), (1100.0, False)]) is None
    assert search.next_rate(1000, [(1000.0, True), (1101.0, False)]) == 1050.0


def test_search_stops_after_max_trials() -> None:
    search = Search(max_trials=3)
    assert search.next_rate(1000, [(1000.0, False), (600.0, False)]) == 360.0
    assert search.next_rate(1000, [(1000.0, False), (600.0, False), (360.0, False)]) is None


def test_search_stops_when_rounding_leaves_nothing_between() -> None:
    search = Search(tolerance=0.0001)
    assert search.next_rate(100, [(100.0, True), (100.1, False)]) is None


def test_capacity_is_the_highest_sustained_rate() -> None:
    assert Search.capacity([(1000.0, True), (2000.0, False), (1500.0, True)]) == 1500.0
    assert math.isnan(Search.capacity([(1000.0, False), (600.0, False)]))
    assert math.isnan(Search.capacity([]))


def search_for(true: float, probe: float, search: Search) -> list[tuple[float, bool]]:
    tried: list[tuple[float, bool]] = []
    while (rate := search.next_rate(probe, tried)) is not None:
        tried.append((rate, rate <= true))
    return tried


@pytest.mark.parametrize("true", [800, 1234, 3000, 5000, 7777, 9999, 14_999, 20_000, 33_333])
@pytest.mark.parametrize("probe", [4000, 15_000])
def test_search_lands_within_tolerance_below_the_true_capacity(true: float, probe: float) -> None:
    search = Search(tolerance=0.1, max_trials=12)
    tried = search_for(true, probe, search)
    found = Search.capacity(tried)
    assert true / 1.1 <= found <= true
    assert len(tried) <= search.max_trials
    # each rate is tried once
    assert len({r for r, _ in tried}) == len(tried)


def test_a_far_probe_is_cut_short_by_max_trials_but_stays_below_the_truth() -> None:
    search = Search(max_trials=8)
    tried = search_for(50_000, 1000, search)
    assert len(tried) == 8
    assert Search.capacity(tried) <= 50_000


# -- configurations -------------------------------------------------------------------


def test_configurations_are_the_sweep_without_rate_or_repeats() -> None:
    exp = Experiment(
        name="c",
        repeat=3,
        params={"rate": 500.0, "events": 2000, "duration_s": 6, "warmup_s": 2},
        sweep={"consumers": [1, 2], "rate": [100.0, 200.0, 300.0], "batch_size": [10, 50]},
    )
    configs = capacity.configurations(exp)
    assert [(c.consumers, c.batch_size) for c in configs] == [(1, 10), (1, 50), (2, 10), (2, 50)]
    # the probe of each is a burst of the experiment's events
    assert all(c.rate == 0.0 and not c.open_loop and c.events == 2000 for c in configs)
    assert all(c.duration_s == 6 and c.warmup_s == 2 for c in configs)


def test_an_experiment_with_no_sweep_is_one_configuration() -> None:
    assert capacity.configurations(Experiment(name="c")) == [TrialParams()]


# -- CapacitySearch with a fake runner ------------------------------------------------


def result(
    trial: Trial,
    *,
    elapsed_s: float = 1.0,
    sustained: bool | None = None,
    error: str | None = None,
) -> TrialResult:
    p = trial.params
    return TrialResult(
        trial=trial,
        events_published=p.events,
        expected_unique=p.events,
        received=p.events,
        unique_processed=p.events,
        duplicate_dropped=0,
        db_rows=p.events,
        lost=0,
        unexpected=0,
        double_applied=0,
        redelivered=0,
        rejected=0,
        elapsed_s=elapsed_s,
        reset_s=0.01,
        latency_p50_ms=1.0,
        latency_p95_ms=2.0,
        latency_p99_ms=3.0,
        latency_max_ms=4.0,
        retries=0,
        serialization_failures=0,
        deadlocks=0,
        connection_retries=0,
        steady=SteadyState(offered_eps=p.rate, sustained=sustained)
        if p.open_loop
        else SteadyState(),
        error=error,
    )


class FakeSystem:
    """Runs trials on paper: a burst at ``probe_eps``; a rate is sustained iff ≤ ``true``."""

    def __init__(
        self,
        true: float | Sequence[float],
        probe_eps: float | Sequence[float],
        *,
        probe_error: str | None = None,
        error_at: float | None = None,
    ) -> None:
        self.true = true
        self.probe_eps = probe_eps
        self.probe_error = probe_error
        self.error_at = error_at
        self.trials: list[Trial] = []
        self.configs = 0

    def _of(self, value: float | Sequence[float]) -> float:
        return value if isinstance(value, int | float) else value[self.configs - 1]

    def __call__(self, trial: Trial) -> TrialResult:
        self.trials.append(trial)
        p = trial.params
        if not p.open_loop:
            self.configs += 1
            if self.probe_error:
                return result(trial, error=self.probe_error, elapsed_s=0.0)
            return result(trial, elapsed_s=p.events / self._of(self.probe_eps))
        if p.rate == self.error_at:
            # the window looked fine but the trial failed (invariants, a crash): not sustained
            return result(trial, sustained=True, error="boom")
        return result(trial, sustained=p.rate <= self._of(self.true))

    def rates(self) -> list[float]:
        return [t.params.rate for t in self.trials]


EXP = Experiment(
    name="cap",
    seed=42,
    params={"events": 20_000, "duration_s": 6, "warmup_s": 2},
    sweep={"consumers": [1, 2]},
)


def test_capacity_is_found_within_tolerance_and_fractions_measured() -> None:
    system = FakeSystem(true=[7_777.0, 15_000.0], probe_eps=[10_000.0, 12_000.0])
    points = list(CapacitySearch(EXP, system).points())

    assert [(p.config, p.fraction) for p in points] == [(c, f) for c in (0, 1) for f in FRACTIONS]
    by_config = {c: [p for p in points if p.config == c] for c in (0, 1)}
    for config, true, probe in ((0, 7_777.0, 10_000.0), (1, 15_000.0, 12_000.0)):
        mine = by_config[config]
        cap = mine[0].capacity_eps
        assert all(p.capacity_eps == cap and p.probe_eps == probe for p in mine)
        assert true * (1 - 0.1) <= cap <= true
        # each fraction's trial runs at that share of the capacity, on that configuration
        for p in mine:
            assert p.result.trial.params.rate == round_rate(cap * p.fraction)
            assert p.result.trial.params.consumers == config + 1
            assert p.result.steady.sustained is True
        full = mine[-1]
        assert full.fraction == 1.0 and full.result.trial.params.rate == cap

    # every trial is a new one, numbered in order, with the experiment's seed
    assert [t.index for t in system.trials] == list(range(len(system.trials)))
    assert {t.seed for t in system.trials} == {42}
    assert len({t.trial_id for t in system.trials}) == len(system.trials)


def test_each_configuration_is_probe_then_search_then_the_missing_fractions() -> None:
    system = FakeSystem(true=7_777.0, probe_eps=10_000.0)
    search = Search()
    exp = Experiment(name="one", params={"duration_s": 6, "warmup_s": 2})
    points = list(CapacitySearch(exp, system, search=search).points())
    rates = system.rates()
    assert rates[0] == 0.0  # the probe: a burst
    tried = search_for(7_777.0, 10_000.0, search)
    assert rates[1 : 1 + len(tried)] == [r for r, _ in tried]
    cap = Search.capacity(tried)
    # 100 % is the search's own trial: not run again
    assert rates[1 + len(tried) :] == [round_rate(cap * f) for f in (0.25, 0.5, 0.75)]
    assert points[-1].result is not None and points[-1].result.trial.params.rate == cap
    # the open-loop trials offer their rate for the experiment's duration
    assert all(t.params.events == round(t.params.rate * 6) for t in system.trials[1:])
    # each trial says what it was for: the probe, the search's steps, the fractions
    roles = [t.role.name for t in system.trials]
    assert roles == [
        "capacity probe",
        *["capacity step"] * len(tried),
        *["capacity fraction"] * 3,
    ]


def test_a_fraction_already_tried_by_the_search_is_not_run_again() -> None:
    system = FakeSystem(true=2_000.0, probe_eps=1_000.0)
    exp = Experiment(name="one", params={"duration_s": 6, "warmup_s": 2})
    search = CapacitySearch(exp, system, search=Search(step=0.5), fractions=(0.5, 1.0))
    points = list(search.points())
    # 1000 and 2000 hold, 4000 … 2120 fail: capacity 2000, whose half was tried already
    assert system.rates() == [0.0, 1000.0, 2000.0, 4000.0, 3000.0, 2500.0, 2250.0, 2120.0]
    assert [p.result.trial.params.rate for p in points] == [1000.0, 2000.0]
    assert [p.result.trial.index for p in points] == [1, 2]


def test_a_failed_probe_yields_nothing_and_runs_no_search() -> None:
    system = FakeSystem(true=5_000.0, probe_eps=10_000.0, probe_error="Redis went away")
    points = list(CapacitySearch(EXP, system).points())
    assert points == []
    assert system.rates() == [0.0, 0.0]  # each configuration's probe, nothing else


def test_a_trial_with_an_error_is_not_sustained_whatever_its_window_says() -> None:
    system = FakeSystem(true=20_000.0, probe_eps=10_000.0, error_at=10_000.0)
    exp = Experiment(name="one", params={"duration_s": 6, "warmup_s": 2})
    points = list(CapacitySearch(exp, system).points())
    assert points and points[0].capacity_eps < 10_000.0
    assert system.rates()[1:3] == [10_000.0, 6_000.0]


def test_no_sustained_rate_yields_one_point_with_nan_capacity() -> None:
    system = FakeSystem(true=1.0, probe_eps=10_000.0)
    search = Search(max_trials=4)
    exp = Experiment(name="one", params={"duration_s": 6, "warmup_s": 2})
    (point,) = CapacitySearch(exp, system, search=search).points()
    assert system.rates() == [0.0, 10_000.0, 6_000.0, 3_600.0, 2_160.0]
    assert math.isnan(point.capacity_eps) and math.isnan(point.fraction)
    assert point.probe_eps == 10_000.0
    # it carries the lowest rate tried, to show how far from sustained that was
    assert point.result.trial.params.rate == 2_160.0
    assert point.result.steady.sustained is False


def test_an_experiment_with_nothing_to_search_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capacity, "configurations", lambda exp: [])
    with pytest.raises(ExperimentError, match="no configuration"):
        CapacitySearch(Experiment(name="none"), FakeSystem(1.0, 1.0))


def test_point_row_names_the_configuration_and_its_figures() -> None:
    system = FakeSystem(true=7_777.0, probe_eps=10_000.0)
    exp = Experiment(name="one", params={"duration_s": 6, "warmup_s": 2, "consumers": 3})
    point: Point = list(CapacitySearch(exp, system).points())[1]
    row = point.row(["consumers", "isolation"])
    assert row["config"] == 0 and row["fraction"] == 0.5
    assert (row["consumers"], row["isolation"]) == (3, "read_committed")
    assert row["rate"] == point.result.trial.params.rate == round_rate(point.capacity_eps / 2)
    assert row["trial"] == point.result.trial.index
    assert row["probe_eps"] == 10_000.0
    assert row["sustained"] is True and row["invariant_ok"] is True


def test_with_repeat_each_share_runs_that_many_times_back_to_back() -> None:
    system = FakeSystem(true=2_000.0, probe_eps=1_000.0)
    exp = Experiment(name="one", params={"duration_s": 6, "warmup_s": 2})
    search = CapacitySearch(exp, system, search=Search(step=0.5), fractions=(0.5, 1.0), repeat=3)
    points = list(search.points())
    # the search's own trials at 1000 and 2000 count as the first of each share's three
    assert [(p.fraction, p.repeat, p.result.trial.params.rate) for p in points] == [
        (0.5, 0, 1000.0),
        (0.5, 1, 1000.0),
        (0.5, 2, 1000.0),
        (1.0, 0, 2000.0),
        (1.0, 1, 2000.0),
        (1.0, 2, 2000.0),
    ]
    extra = system.rates()[8:]  # after the probe and the search
    assert extra == [1000.0, 1000.0, 2000.0, 2000.0]
    assert len({p.result.trial.index for p in points}) == 6
    assert points[1].row(["consumers"])["repeat"] == 1


def test_repeat_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="repeat"):
        CapacitySearch(EXP, FakeSystem(true=1.0, probe_eps=1.0), repeat=0)
