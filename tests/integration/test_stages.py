"""``bench --stages``: each step of the pipeline timed in one process, on real servers."""

from __future__ import annotations

import pytest

from harness.bench import stages
from harness.infra.config import Settings
from harness.store.postgres import Store

pytestmark = pytest.mark.integration


def test_every_step_is_timed_and_the_workload_goes_through(settings: Settings) -> None:
    cfg = stages.StagesConfig(events=3_000, batch_size=500, entry_size=100, repeat=2)
    steps = stages.run(settings, cfg)
    assert [t.step for t in steps] == list(stages.STEPS)
    assert all(t.events == 3_000 and t.cpu_s > 0 and t.wall_s > 0 for t in steps)
    # waiting on PostgreSQL is wall time, not the client's CPU
    apply = next(t for t in steps if t.step == "apply")
    assert apply.wall_s >= apply.cpu_s
    with Store(settings.pg_dsn, schema=settings.pg_schema) as store:
        assert store.counters().received == 0  # left as found


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="must be ≥ 1"):
        stages.StagesConfig(events=0)


def test_round_trips_are_measured_on_both_servers(settings: Settings) -> None:
    trips = stages.round_trips(settings, n=20)
    assert set(trips) == {key for _, key in stages.PROBES}
    assert all(us > 0 for us in trips.values())
