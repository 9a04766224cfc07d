"""One verdict for a trial, worst first, asked by the live line, the table and the analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.trials.experiment import Experiment, Trial
from harness.trials.results import VERDICTS, verdict
from tests.data.runs import make_run, result


@pytest.mark.parametrize(
    ("error", "ok", "anomalous", "expected"),
    [
        ("timed out", False, True, "did not finish"),
        ("", False, True, "violation"),
        ("", True, True, "anomaly"),
        ("", True, False, "holds"),
    ],
)
def test_the_worst_finding_decides(error: str, ok: bool, anomalous: bool, expected: str) -> None:
    assert verdict(error=error, invariant_ok=ok, anomalous=anomalous) == expected
    assert expected in VERDICTS


OUTCOMES = [
    {"error": "not drained after 60 s"},
    {"violations": ("lost 3 events",), "lost": 3},
    {"anomalies": ("rmw at read_committed lost 5 updates",), "lost_updates": 5},
    {},
]


def test_a_run_read_back_has_the_verdicts_its_trials_were_given(tmp_path: Path) -> None:
    from harness.analysis import stats
    from harness.trials.results import load

    def outcome(trial: Trial) -> dict[str, Any]:
        return OUTCOMES[trial.index % len(OUTCOMES)]

    run = load(make_run(tmp_path, sweep={"consumers": [1, 2, 3, 4]}, outcome=outcome))
    frame = stats.frame(run).sort_values("trial")
    trials = list(Experiment(name="v", sweep={"consumers": [1, 2, 3, 4]}).trials())
    expected = [result(t, **outcome(t)).verdict for t in trials]
    assert expected == ["did not finish", "violation", "anomaly", "holds"]
    assert list(frame["verdict"]) == expected
    assert list(frame["holds"]) == [False, False, False, True]
