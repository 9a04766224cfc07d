"""Open-loop trials and the capacity search, as a user runs them: the CLI in a subprocess.

The properties checked do not depend on the machine's speed: the window's arithmetic, the
schedule's event count, the per-second series adding up to the totals, the capacity row
agreeing with the trials it came from. Whether a rate is sustained here is the machine's
business, not the test's.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from harness.infra.config import Settings
from tests.acceptance.test_cli import _env, harness

pytestmark = pytest.mark.acceptance


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_an_open_loop_trial_measures_its_window_and_holds_every_invariant(
    settings: Settings, tmp_path: Path
) -> None:
    proc = harness(
        "run",
        "smoke",
        "--set",
        "repeat=1",
        "--set",
        "rate=1500",
        "--set",
        "duration_s=3.5",
        "--set",
        "warmup_s=1",
        "--out",
        str(tmp_path),
        "--run-id",
        "open",
        env=_env(settings),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "offered 1,500/s" in proc.stdout
    run = tmp_path / "smoke" / "open"
    (row,) = _rows(run / "trials.csv")
    assert row["invariant_ok"] == "True"
    # events follow from the rate: 1,500/s for 3.5 s
    assert int(row["events"]) == int(row["events_published"]) == 5_250
    # the window is the whole seconds from 1 to 3.5: seconds 1 and 2
    assert float(row["window_s"]) == 2.0
    assert float(row["offered_eps"]) == 1500.0
    assert float(row["steady_eps"]) > 0
    assert 0 < float(row["steady_p50_ms"]) <= float(row["steady_p99_ms"])
    assert float(row["steady_p99_ms"]) <= float(row["steady_p999_ms"])
    assert row["sustained"] in ("True", "False")
    assert (row["not_sustained"] == "") == (row["sustained"] == "True")

    series = _rows(run / "timeseries.csv")
    phases = [r["phase"] for r in series]
    assert phases[:3] == ["warmup", "window", "window"]
    assert set(phases[3:]) <= {"drain"}
    # cumulative counts end at everything published and committed
    assert int(series[-1]["published"]) == 5_250
    assert int(series[-1]["committed"]) == int(row["received"])
    window = [r for r in series if r["phase"] == "window"]
    assert all(not math.isnan(float(r["latency_p99_ms"])) for r in window)
    assert (run / "report.md").exists()


@pytest.mark.slow
def test_capacity_writes_a_row_per_share_that_agrees_with_its_trials(
    settings: Settings, tmp_path: Path
) -> None:
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "tiny.toml").write_text(
        'description = "one configuration, short trials"\n'
        "seed = 3\n"
        "[params]\npublishers = 1\nconsumers = 2\nevents = 3000\n"
        "duration_s = 3\nwarmup_s = 1\n"
    )
    proc = harness(
        "capacity",
        "tiny",
        "--experiments",
        str(experiments),
        "--max-trials",
        "2",
        "--out",
        str(tmp_path),
        "--run-id",
        "cap",
        env=_env(settings),
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Capacity" in proc.stdout
    run = tmp_path / "tiny" / "cap"
    trials = _rows(run / "trials.csv")
    assert all(t["invariant_ok"] == "True" for t in trials)
    probe, *searched = trials
    assert float(probe["rate"]) == 0.0  # the burst that starts the search
    # the search starts at the probe's throughput, to 3 significant digits
    first = float(searched[0]["rate"])
    assert math.isclose(first, float(probe["throughput_eps"]), rel_tol=0.01)
    sustained = [float(t["rate"]) for t in searched[:2] if t["sustained"] == "True"]
    points = _rows(run / "capacity.csv")
    if not sustained:
        (point,) = points
        assert point["capacity_eps"] == "" or math.isnan(float(point["capacity_eps"]))
        return
    capacity = max(sustained)
    assert [float(p["fraction"]) for p in points] == [0.25, 0.5, 0.75, 1.0]
    by_trial = {t["trial"]: t for t in trials}
    for point in points:
        assert float(point["capacity_eps"]) == capacity
        trial = by_trial[point["trial"]]
        assert math.isclose(float(trial["rate"]), capacity * float(point["fraction"]), rel_tol=0.01)
        assert float(point["steady_p99_ms"]) == float(trial["steady_p99_ms"])
