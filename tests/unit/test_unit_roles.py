"""harness.trials.roles: what a trial's load decides, and roles that must fit the load."""

from __future__ import annotations

import pytest

from harness.trials import roles
from harness.trials.experiment import Trial, TrialParams

BURST = TrialParams(events=1_000)
RATED = TrialParams(rate=1_000.0, duration_s=6.0, warmup_s=2.0, timeout_s=30.0)


def test_a_sweeps_trial_is_a_burst_or_open_loop_by_its_rate() -> None:
    assert Trial(0, 0, 1, BURST).role is roles.BURST
    assert Trial(0, 0, 1, RATED).role is roles.OPEN_LOOP


def test_a_burst_starts_its_clock_with_the_publishers_and_measures_it_all() -> None:
    load = roles.BURST.load
    assert load.origin_ns(123) == 123 and not load.open_loop  # its clock starts again
    assert load.window(BURST) is None
    assert load.deadline_s(BURST) == BURST.timeout_s


def test_open_loop_starts_a_moment_ahead_and_measures_after_the_warm_up() -> None:
    load = roles.OPEN_LOOP.load
    assert load.origin_ns(123) == 123 + roles.START_LEAD_NS and load.open_loop
    window = load.window(RATED)
    assert window is not None and (window.first, window.end) == (2, 6)
    assert load.deadline_s(RATED) == 30.0 + 6.0  # the load's own time, then the timeout


@pytest.mark.parametrize(
    ("role", "params"),
    [(roles.PROBE, RATED), (roles.STEP, BURST), (roles.FRACTION, BURST), (roles.BURST, RATED)],
)
def test_a_role_that_does_not_fit_the_load_is_refused(
    role: roles.Role, params: TrialParams
) -> None:
    with pytest.raises(ValueError, match=f"a {role.name} trial is"):
        Trial(0, 0, 1, params, purpose=role)


def test_roles_are_found_by_name_and_an_unknown_one_says_which_there_are() -> None:
    assert roles.role("capacity probe") is roles.PROBE
    with pytest.raises(ValueError, match="one of: burst, open loop, capacity probe"):
        roles.role("warmup")
