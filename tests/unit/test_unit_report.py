"""report.md of open-loop runs: the steady-state table, someone else's figures beside ours,
a capacity search's table; drawn from synthetic run folders written by the real RunWriter."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from harness.analysis import report
from tests.data import runs

OPEN_LOOP = {"duration_s": 5, "warmup_s": 1}
#: 1 consumer sustains up to 1,000 events/s, 2 up to 2,000 (runs.ceiling)
RATES_BY_CONSUMERS = {"consumers": [1, 2], "rate": [500, 1500, 3000]}
#: the seed's set-up, as experiments/seed.toml has it: one configuration, three repeats
SEED = {**OPEN_LOOP, "consumers": 4, "rate": 2000}


def section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def headings(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, flags=re.M)


def write(path: Path) -> str:
    return report.write_report(path).read_text(encoding="utf-8")


# -- steady state -----------------------------------------------------------------------


def test_an_open_loop_run_gets_a_steady_state_section(tmp_path: Path) -> None:
    text = write(runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP))
    assert headings(text) == [
        "What ran",
        "Environment",
        "Correctness",
        "Results",
        "Steady state",
        "Comparisons",
        "Charts",
    ]
    steady = section(text, "Steady state")
    for words in (
        "the publishers together send `rate` events/s for `duration_s` seconds (here 5 s, "
        "the first 1 s of it warm-up)",
        "the measured window that follows (4 s)",
        "intended send time",
        "(coordinated omission)",
        "at least 95% of the rate",
        "(`slo_p99_ms` = 100 ms)",
    ):
        assert words in steady, words
    assert (
        "| consumers | offered (events/s) | trial | published (events/s) | committed (events/s) "
        "| p50 (ms) | p95 (ms) | p99 (ms) | p99.9 (ms) | backlog growth (events/s) | sustained |"
    ) in steady
    # 1 consumer at 500 events/s: p50 = 10 × (1 + 0.5) = 15 ms, p95 2×, p99 4×, p99.9 5×
    assert "| 1 | 500 | 0 | 500 | 500 | 15.0 | 30.0 | 60.0 | 75.0 | 0 | yes |" in steady
    # … at 1,500, above its ceiling of 1,000: p50 25 ms, p99 40× that, backlog +500/s
    assert (
        "| 1 | 1,500 | 1 | 1,500 | 1,000 | 25.0 | 50.0 | 1,000.0 | 1,250.0 | 500 "
        "| no: backlog grew 500 events/s |"
    ) in steady
    assert len(re.findall(r"^\| [12] \| [\d,]+ \| \d ", steady, flags=re.M)) == 6


def test_repeated_rates_are_one_row_with_intervals_and_a_count(tmp_path: Path) -> None:
    text = write(runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP, repeat=2))
    steady = section(text, "Steady state")
    assert "| consumers | offered (events/s) | trials |" in steady
    assert "With repeats, a row is the mean ± the 95% confidence interval." in steady
    # committed 1,000 then 990 (1% less per repetition): mean 995, ± 12.706 · 7.07 / √2
    assert "| 1 | 1,500 | 2 | 1,500 ± 0 | 995 ± 64 |" in steady
    # the kind of reason and how many trials gave it, in each of the three rows above a ceiling
    assert steady.count("none: backlog grew (2)") == 3
    assert "| all 2 |" in steady


def test_results_show_the_window_of_an_open_loop_trial(tmp_path: Path) -> None:
    text = write(runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP))
    results = section(text, "Results")
    assert "For an open-loop trial (rate > 0), throughput is the events/s committed" in results
    assert "| consumers | offered rate (events/s) | trials | throughput (events/s) |" in results
    # committed in the window, not offered: 1 consumer at 3,000 commits 1,000
    assert "| 1 | 3,000 | 1 | 1,000 | 40 | 1,600 | 0.0 |" in results
    what_ran = section(text, "What ran")
    assert "| swept: rate | 500, 1,500, 3,000 |" in what_ran
    assert "| events | rate × duration_s in an open-loop trial |" in what_ran


def test_what_ran_lists_each_case_not_a_product_of_their_values(tmp_path: Path) -> None:
    cases = [{"fault": "pg-crash", "synchronous_commit": "off"}, {"fault": "kill-consumer"}]
    text = write(runs.make_run(tmp_path, sweep={"consumers": [1, 2]}, cases=cases))
    what_ran = section(text, "What ran")
    assert "| case 1 | fault = pg-crash, synchronous_commit = off |" in what_ran
    assert "| case 2 | fault = kill-consumer |" in what_ran
    assert "| swept: consumers | 1, 2 |" in what_ran
    assert "swept: fault" not in what_ran and "swept: synchronous_commit" not in what_ran


def test_a_burst_run_has_no_open_loop_sections(tmp_path: Path) -> None:
    text = write(runs.make_run(tmp_path, sweep={"consumers": [1, 2]}))
    assert headings(text) == [
        "What ran",
        "Environment",
        "Correctness",
        "Results",
        "Comparisons",
        "Charts",
    ]
    assert "open-loop" not in section(text, "Results")


# -- beside someone else's figures ------------------------------------------------------


def test_the_seeds_figures_are_set_beside_ours(tmp_path: Path) -> None:
    path = runs.make_run(tmp_path, params=SEED, repeat=3, reference=runs.SEED_REFERENCE)
    text = write(path)
    assert headings(text)[4:] == ["Steady state", "Beside the seed report", "Charts"]
    beside = section(text, "Beside the seed report")
    assert "Theirs: its latency and throughput analysis." in beside
    assert "|  | the seed report (theirs) | ours |" in beside
    # ours over 3 repeats: committed 2,000, 1,980, 1,960; p50 3.75 ms, 10% more per repeat
    for row in (
        "| events/s committed | 113.4 | 1,980 ± 50 |",
        "| latency p50 (ms) | 250 | 4.1 ± 0.9 |",
        "| latency p95 (ms) | 450 | 8.2 ± 1.9 |",
        "| latency p99 (ms) | 650 | 16.5 ± 3.7 |",
    ):
        assert row in beside, row
    assert "Ours commits 17× their events/s, with 0.025× their p99." in beside


def test_many_configurations_beside_a_reference_get_a_row_each(tmp_path: Path) -> None:
    path = runs.make_run(
        tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP, reference=runs.SEED_REFERENCE
    )
    beside = section(write(path), "Beside the seed report")
    assert (
        "|  | events/s committed | latency p50 (ms) | latency p95 (ms) | latency p99 (ms) |"
    ) in beside
    assert "| the seed report (theirs) | 113.4 | 250 | 450 | 650 |" in beside
    assert "| ours: 2 consumers, 1,500 events/s offered | 1,500 | 8.8 | 17.5 | 35.0 |" in beside
    assert "Ours commits 4.4× to 18× their events/s" in beside


def test_a_burst_run_is_set_beside_a_reference_with_its_whole_trial_figures(
    tmp_path: Path,
) -> None:
    path = runs.make_run(tmp_path, reference={"label": "theirs", "steady_p99_ms": 100.0})
    beside = section(write(path), "Beside theirs")
    assert "Ours: bursts" in beside
    # the synthetic burst: p99 = 2 × 1000 / √100 = 200 ms
    assert "| latency p99 (ms) | 100 | 200.0 |" in beside


# -- capacity -------------------------------------------------------------------------


def test_a_capacity_run_gets_a_capacity_table(tmp_path: Path) -> None:
    text = write(runs.make_capacity_run(tmp_path, none_sustained=(4,)))
    assert headings(text) == [
        "What ran",
        "Environment",
        "Correctness",
        "Results",
        "Capacity",
        "Steady state",
        "Charts",
    ]
    capacity = section(text, "Capacity")
    assert "within 10% of each other" in capacity
    assert (
        "| consumers | burst (events/s) | capacity (events/s) | p50 / p99 at 25% "
        "| p50 / p99 at 50% | p50 / p99 at 75% | p50 / p99 at 100% |"
    ) in capacity
    # 1 consumer: p50 = 10 × (1 + share) ms, p99 4× it
    assert "| 1 | 1,000 | 1,000 | 12.5 / 50.0 | 15.0 / 60.0 | 17.5 / 70.0 | 20.0 / 80.0 |" in (
        capacity
    )
    assert "| 4 | 4,000 | none sustained | – | – | – | – |" in capacity
    # the search's rates are no axis: the results table holds the bursts, one per row
    results = section(text, "Results")
    assert "This table holds the capacity search's bursts" in results
    assert "| 1 | 1 | 1,000 | 100 | 200 | 0.0 |" in results
    assert "| rate | chosen by the capacity search: " in section(text, "What ran")


def test_an_unsustained_share_is_marked(tmp_path: Path) -> None:
    import pandas as pd

    path = runs.make_capacity_run(tmp_path, consumers=(1,), repeat=2)
    rows = pd.read_csv(path / "capacity.csv")
    first_half = rows.index[rows["fraction"] == 0.5][0]
    rows.loc[first_half, "sustained"] = False
    rows.to_csv(path / "capacity.csv", index=False)
    capacity = section(write(path), "Capacity")
    # p99 at 50%: 60 and 66 ms over the two runs
    assert "| 15.8 / 63.0 ± 38.1 * |" in capacity
    assert "\\* not sustained (not every run at that share)" in capacity


def test_the_report_is_written_again_from_the_stored_files_alone(tmp_path: Path) -> None:
    path = runs.make_capacity_run(tmp_path)
    first = write(path)
    shutil.rmtree(path / "plots")
    assert write(path) == first
    assert (path / "plots" / "capacity.png").exists()


def test_the_report_names_trials_whose_faults_hit_nothing(tmp_path: Path) -> None:
    def outcome(trial: Any) -> dict[str, Any]:
        missed = trial.params.fault == "pg-terminate"
        return {"faults_injected": 3, "in_flight_at_fault": 0 if missed else 9,
                "faults_missed": 3 if missed else 0}  # fmt: skip

    path = runs.make_run(
        tmp_path, sweep={"fault": ["kill-consumer", "pg-terminate"]}, outcome=outcome
    )
    text = report.write_report(path).read_text(encoding="utf-8")
    assert "**1 of the 2 trials with faults tested nothing" in text
    assert "trials 1 (pg-terminate)" in text

    fine = runs.make_run(
        tmp_path,
        sweep={"fault": ["kill-consumer"]},
        outcome=lambda t: {"faults_injected": 3, "in_flight_at_fault": 9},
        run_id="r2",
    )
    assert "Every fault of the 1 trials with faults hit work in flight" in (
        report.write_report(fine).read_text(encoding="utf-8")
    )
