"""Charts and the report, drawn from synthetic run folders written by the real RunWriter."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness import plots, report, stats
from harness.experiment import Trial
from harness.results import load
from tests.data import runs

PNG = b"\x89PNG\r\n\x1a\n"
ISO_BY_CONSUMERS = {"isolation": ["read_committed", "serializable"], "consumers": [1, 2, 4]}


def drawn(paths: list[Path]) -> set[str]:
    assert all(p.read_bytes().startswith(PNG) and p.stat().st_size > 5000 for p in paths)
    return {p.name for p in paths}


# -- which charts a run gets ----------------------------------------------------------


def test_isolation_by_consumers_draws_every_chart_but_latency_vs_batch(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, repeat=2)
    written = plots.plot_run(run)
    assert all(p.parent == run / "plots" for p in written)
    assert drawn(written) == {
        "throughput_vs_consumers.png",
        "retries_vs_consumers.png",
        "correctness.png",
        "throughput_over_time.png",
    }


def test_a_batch_size_sweep_adds_throughput_and_latency_vs_batch(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path, sweep={"batch_size": [10, 100, 1000]})
    assert drawn(plots.plot_run(run)) == {
        "throughput_vs_batch.png",
        "latency_vs_batch.png",
        "correctness.png",
        "throughput_over_time.png",
    }


def test_a_single_trial_gets_the_correctness_matrix_and_the_time_series(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path)
    assert drawn(plots.plot_run(run)) == {"correctness.png", "throughput_over_time.png"}


def test_without_a_time_series_there_is_no_chart_over_time(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, timeseries=False)
    assert not (run / "timeseries.csv").exists()
    assert "throughput_over_time.png" not in drawn(plots.plot_run(run))


def test_redrawing_removes_charts_that_no_longer_apply(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS)
    stale = run / "plots" / "latency_vs_batch.png"
    stale.parent.mkdir()
    stale.write_bytes(PNG)
    plots.plot_run(run)
    assert not stale.exists()


def test_a_run_with_no_trials_draws_nothing(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS)
    (run / "trials.csv").unlink()
    (run / "timeseries.csv").unlink()
    assert plots.plot_run(run) == []
    assert "No trial was recorded" in report.write_report(run).read_text(encoding="utf-8")


# -- what the charts show -------------------------------------------------------------


def test_throughput_chart_has_a_line_per_isolation_level_with_95_percent_bars(
    tmp_path: Path,
) -> None:
    run = load(runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, repeat=2))
    fig = plots.throughput_vs_consumers(run)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "throughput (events/s)"
    assert "consumers" in ax.get_xlabel()
    legend = fig.legends[0]
    assert legend.get_title().get_text() == "isolation level"
    assert [t.get_text() for t in legend.get_texts()] == ["read_committed", "serializable"]
    assert "95% confidence interval" in fig.get_supxlabel()
    # read_committed with 1 consumer ran at 1,000 and 1,100 events/s: mean 1,050,
    # half-width t(1) · s / √2 with s = 70.71
    bars = ax.containers[0]
    (_, _, (segments,)) = bars.lines
    low, high = segments.get_segments()[0][:, 1]
    assert (low + high) / 2 == pytest.approx(1050)
    assert (high - low) / 2 == pytest.approx(12.706 * math.sqrt(5000) / math.sqrt(2), rel=1e-4)


def test_without_repeats_there_are_no_error_bars(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS))
    fig = plots.throughput_vs_consumers(run)
    assert all(c.has_yerr is False for c in fig.axes[0].containers)
    assert fig.get_supxlabel() == "One trial per point."


def test_axes_a_chart_does_not_show_are_held_at_the_base_value_and_said(tmp_path: Path) -> None:
    sweep = {**ISO_BY_CONSUMERS, "batch_size": [10, 100]}
    run = load(runs.make_run(tmp_path, sweep=sweep))
    summary, fixed, line = stats.sweep_summary(run, "consumers", ["throughput_eps"])
    assert fixed == {"batch_size": 100}  # TrialParams' default
    assert line == "isolation"
    assert len(summary) == 6
    assert "batch size = 100" in plots.throughput_vs_consumers(run).get_supxlabel()
    assert "(batch size 100)" in plots.describe_throughput_vs_consumers(run)


def test_without_an_isolation_sweep_the_lines_are_the_next_axis(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep={"consumers": [1, 2], "batch_size": [10, 100]}))
    fig = plots.throughput_vs_consumers(run)
    assert fig.legends[0].get_title().get_text() == "batch size"
    assert "batch size 10" in plots.describe_throughput_vs_consumers(run)


def test_counter_strategies_get_a_panel_each(tmp_path: Path) -> None:
    sweep = {"counter": ["atomic", "sharded"], **ISO_BY_CONSUMERS}
    run = load(runs.make_run(tmp_path, sweep=sweep))
    fig = plots.throughput_vs_consumers(run)
    assert [ax.get_title() for ax in fig.axes] == [
        "counter strategy: atomic",
        "counter strategy: sharded",
    ]


def test_a_run_without_a_counter_column_is_treated_as_atomic(tmp_path: Path) -> None:
    path = runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS)
    trials = pd.read_csv(path / "trials.csv")
    trials.drop(
        columns=["counter", "anomaly", "anomalies", "lost_updates"], errors="ignore"
    ).to_csv(path / "trials.csv", index=False)
    run = load(path)
    assert set(stats.frame(run)["counter"]) == {"atomic"}
    assert len(plots.throughput_vs_consumers(run).axes) == 1
    assert "correctness.png" in drawn(plots.plot_run(path))


def test_latency_chart_is_log_log_with_p50_and_p99(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep={"batch_size": [10, 100, 1000]}))
    fig = plots.latency_vs_batch(run)
    (ax,) = fig.axes
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert ax.get_ylabel() == "latency, publish to commit (ms)"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "p50 (median)" in labels and "p99" in labels
    sentence = plots.describe_latency_vs_batch(run)
    # p50 = 1000 / √batch ms: 316 ms at 10, 32 ms at 1,000
    assert "from 316 to 32 ms" in sentence


def test_each_chart_has_a_title_labelled_axes_and_a_legend(tmp_path: Path) -> None:
    run = load(
        runs.make_run(tmp_path, sweep={**ISO_BY_CONSUMERS, "batch_size": [10, 100]}, repeat=2)
    )
    for chart in plots.charts_for(run):
        fig = chart.draw(run)
        assert fig.get_suptitle(), chart.filename
        assert fig.legends, chart.filename
        assert all(ax.get_xlabel() for ax in fig.axes), chart.filename
        assert fig.axes[0].get_ylabel(), chart.filename


# -- the sentences ----------------------------------------------------------------------


def test_throughput_sentence_is_computed_from_the_data(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, repeat=2))
    # 4 consumers at read_committed: 4,000 and 4,400 events/s; serializable a quarter of it.
    assert plots.describe_throughput_vs_consumers(run) == (
        "Throughput peaks at 4,200 events/s with 4 consumers at read_committed; "
        "at their best, serializable reaches 25% of that."
    )


def test_retries_sentence_names_the_worst_case_and_the_calm_level(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS))
    sentence = plots.describe_retries_vs_consumers(run)
    # serializable: 10 retries per consumer over 1,000 events; 4 consumers → 40 per 1,000
    assert "rise with consumers, up to 40 per 1,000 events with 4 consumers at serializable" in (
        sentence
    )
    assert sentence.endswith("read_committed never retried.")


def test_time_series_rates_follow_the_committed_counts(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep={"consumers": [1, 2]}))
    steps = stats.rates(run)
    first = steps[steps["trial"] == 0]
    # 1 consumer at 1,000 events/s, sampled every 0.1 s, drained at 1.0 s
    assert first["start_s"].tolist() == pytest.approx([k / 10 for k in range(10)])
    assert first["end_s"].iloc[-1] == pytest.approx(1.0)
    assert first["rate_eps"].tolist() == pytest.approx([1000.0] * 10)
    assert "trials last 0.5–1.0 s" in plots.describe_throughput_over_time(run)


def test_a_sliver_of_a_last_step_is_merged_into_the_one_before(tmp_path: Path) -> None:
    path = runs.make_run(tmp_path, params={"consumers": 1})  # drained at 1.0 s
    columns = "trial,elapsed_s,published,committed,retries,consumers_alive,backlog\n"
    samples = "0,0.5,1000,500,0,1,500\n0,0.95,1000,950,0,1,50\n"
    (path / "timeseries.csv").write_text(columns + samples)
    steps = stats.rates(load(path))
    assert steps[["start_s", "end_s"]].values.tolist() == [[0.0, 0.5], [0.5, 1.0]]
    assert steps["rate_eps"].tolist() == pytest.approx([1000.0, 1000.0])


# -- correctness ----------------------------------------------------------------------


def broken(trial: Trial) -> dict[str, object]:
    if trial.params.isolation == "serializable" and trial.params.consumers == 4:
        return {"lost": 3, "violations": ("lost 3 != 0",)}
    return {}


def test_an_invariant_broken_shows_as_a_violation_with_its_losses(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, outcome=broken))
    cells = stats.correctness_cells(run).set_index("isolation")
    assert cells.loc["serializable", "verdict"] == "violation"
    assert cells.loc["serializable", "lost"] == 3
    assert cells.loc["read_committed", "verdict"] == "holds"
    assert plots.describe_correctness(run) == (
        "5 of 6 trials hold every invariant and 1 breaks an invariant "
        "(atomic at serializable: 3 events lost)."
    )
    texts = [t.get_text() for t in plots.correctness(run).axes[0].texts]
    assert any("violation" in t and "3 events lost" in t for t in texts)


def test_an_expected_anomaly_is_told_apart_from_a_violation(tmp_path: Path) -> None:
    def lost_update(trial: Trial) -> dict[str, object]:
        if trial.params.counter == "rmw" and trial.params.isolation == "read_committed":
            return {"anomalies": ("received 990 != 1000",), "lost_updates": 10}
        return {}

    sweep = {"counter": ["atomic", "rmw"], "isolation": ["read_committed", "serializable"]}
    run = load(runs.make_run(tmp_path, sweep=sweep, outcome=lost_update))
    frame = stats.frame(run)
    assert frame["verdict"].value_counts().to_dict() == {"holds": 3, "anomaly": 1}
    sentence = plots.describe_correctness(run)
    assert "1 shows an expected anomaly" in sentence
    assert "rmw at read_committed: 10 counter updates lost" in sentence


def test_the_matrix_columns_are_every_design_axis_the_run_varies(tmp_path: Path) -> None:
    def list_loses(trial: Trial) -> dict[str, object]:
        p = trial.params
        if p.broker == "list" and p.fault == "kill-consumer":
            return {"lost": 5, "anomalies": ("lost 5 events a killed consumer held",)}
        return {}

    sweep = {
        "fault": ["none", "kill-consumer"],
        "broker": ["stream", "list"],
        "isolation": ["read_committed", "serializable"],
    }
    run = load(runs.make_run(tmp_path, sweep=sweep, outcome=list_loses))
    cells = stats.correctness_cells(run)
    assert list(dict.fromkeys(cells["design"])) == [
        "stream · none",
        "stream · kill-consumer",
        "list · none",
        "list · kill-consumer",
    ]
    assert set(cells[cells["verdict"] == "anomaly"]["design"]) == {"list · kill-consumer"}
    assert plots.describe_correctness(run) == (
        "6 of 8 trials hold every invariant and 2 show an expected anomaly "
        "(list · kill-consumer at every isolation level: 10 events lost)."
    )
    fig = plots.correctness(run)
    assert fig.get_suptitle() == "Correctness: isolation level × broker × fault"


def test_a_trial_that_did_not_finish_is_left_out_of_the_numbers(tmp_path: Path) -> None:
    def failed(trial: Trial) -> dict[str, object]:
        return {"error": "not drained after 300 s"} if trial.index == 0 else {}

    run = load(runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, outcome=failed))
    assert len(stats.measured(run)) == len(run.trials) - 1
    assert stats.frame(run)["verdict"].iloc[0] == "did not finish"
    assert "1 did not finish" in plots.describe_correctness(run)


def test_older_runs_with_anomaly_as_text_are_read(tmp_path: Path) -> None:
    path = runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS)
    trials = pd.read_csv(path / "trials.csv")
    trials = trials.drop(columns=["anomaly", "anomalies", "lost_updates"], errors="ignore")
    trials["anomaly"] = ["lost update"] + [""] * (len(trials) - 1)
    trials.to_csv(path / "trials.csv", index=False)
    frame = stats.frame(load(path))
    assert frame["verdict"].iloc[0] == "anomaly"
    assert frame["anomalies"].iloc[0] == "lost update"
    assert frame["holds"].iloc[1:].all()


# -- the report -----------------------------------------------------------------------


def test_report_has_every_section_and_a_sentence_under_each_chart(tmp_path: Path) -> None:
    path = runs.make_run(
        tmp_path, sweep={**ISO_BY_CONSUMERS, "batch_size": [10, 100]}, repeat=2, outcome=broken
    )
    text = report.write_report(path).read_text(encoding="utf-8")
    assert path / "report.md" == report.write_report(path)
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == ["What ran", "Environment", "Correctness", "Results", "Charts"]
    run = load(path)
    charts = plots.charts_for(run)
    assert len(charts) == 6  # every chart: this run varies isolation, consumers and batch
    for chart in charts:
        assert (path / "plots" / chart.filename).exists()
        block = f"![{chart.title}](plots/{chart.filename})\n\n{chart.describe(run)}\n"
        assert block in text


def test_report_says_what_ran_and_where(tmp_path: Path) -> None:
    text = report.write_report(runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, repeat=3)).read_text(
        encoding="utf-8"
    )
    assert text.startswith("# synthetic: run r1\n")
    for fact in (
        "A synthetic sweep for the analysis tests.",
        "| status | complete: 18 of 18 trials recorded |",
        "| repeats | 3 per configuration; repetition r uses seed 42 + r |",
        "| swept: isolation | read_committed, serializable |",
        "| swept: consumers | 1, 2, 4 |",
        "events = 1,000",
        "| git commit | `0123456789abcdef` |",
        "| PostgreSQL | 15.20 |",
        "| Redis | 7.0.15 |",
        "| CPUs | 2 |",
        "| Ray | 2.60.0 |",
    ):
        assert fact in text, fact


def test_report_table_has_a_row_per_configuration_with_mean_and_interval(tmp_path: Path) -> None:
    text = report.write_report(runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, repeat=2)).read_text(
        encoding="utf-8"
    )
    assert (
        "| isolation level | consumers | trials | throughput (events/s) | p50 latency (ms) "
        "| p99 latency (ms) | retries per 1,000 events |"
    ) in text
    # 1,000 and 1,100 events/s: mean 1,050, half-width 12.706 · 70.71 / √2 = 635
    assert "| read_committed | 1 | 2 | 1,050 ± 635 | 100 ± 0 | 200 ± 0 | 0.0 ± 0.0 |" in text
    assert len(re.findall(r"^\| (read_committed|serializable) \| \d", text, flags=re.M)) == 6


def test_report_without_repeats_shows_means_alone(tmp_path: Path) -> None:
    text = report.write_report(runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS)).read_text(
        encoding="utf-8"
    )
    assert "| read_committed | 4 | 1 | 4,000 | 100 | 200 | 0.0 |" in text
    assert "±" not in text.split("## Results")[1].split("## Charts")[0].split("\n\n", 2)[2]


def test_report_lists_the_trials_that_broke_and_what_broke(tmp_path: Path) -> None:
    text = report.write_report(
        runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, outcome=broken)
    ).read_text(encoding="utf-8")
    correctness = text.split("## Correctness")[1].split("## Results")[0]
    assert (
        "| 5 | isolation = serializable, consumers = 4 | violation | 3 | 0 | 0 | lost 3 != 0 |"
        in (correctness)
    )


def test_shared_y_axis_fits_the_highest_panel_not_the_first(tmp_path: Path) -> None:
    """Panels share y; the limit must come from every panel (a later panel's higher
    throughput once ran off the top)."""
    sweep = {"counter": ["atomic", "sharded"], **ISO_BY_CONSUMERS}

    def faster_when_sharded(trial: Any) -> dict[str, Any]:
        speedup = 3.0 if trial.params.counter == "sharded" else 1.0
        return {"elapsed_s": runs.EVENTS / (runs.throughput(trial.params, 0) * speedup)}

    run = load(runs.make_run(tmp_path, sweep=sweep, outcome=faster_when_sharded))
    fig = plots.throughput_vs_consumers(run)
    highest = run.trials["throughput_eps"].max()
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 2
    assert all(ax.get_ylim()[1] >= highest for ax in panels)


def test_a_batch_sweep_gets_throughput_vs_batch_size(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep={"batch_size": [10, 100, 1000]}))
    assert "throughput_vs_batch.png" in [c.filename for c in plots.charts_for(run)]
    fig = plots.throughput_vs_batch(run)
    assert fig.axes[0].get_xlabel() == "batch size (events per transaction)"
    sentence = plots.describe_throughput_vs_batch(run)
    # the synthetic throughput does not depend on the batch: peak = smallest, 1.0×
    assert sentence.startswith("Throughput peaks at") and "1.0×" in sentence
