"""Charts and the report, drawn from synthetic run folders written by the real RunWriter."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness.analysis import charts, correctness, load_plots, plots, report, stats, time_plots
from harness.trials.experiment import Trial
from harness.trials.results import load
from tests.data import runs

PNG = b"\x89PNG\r\n\x1a\n"
ISO_BY_CONSUMERS = {"isolation": ["read_committed", "serializable"], "consumers": [1, 2, 4]}


def drawn(paths: list[Path]) -> set[str]:
    assert all(p.read_bytes().startswith(PNG) and p.stat().st_size > 5000 for p in paths)
    return {p.name for p in paths}


# -- which charts a run gets ----------------------------------------------------------


def test_isolation_by_consumers_draws_every_chart_but_latency_vs_batch(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, repeat=2)
    written = charts.plot_run(run)
    assert all(p.parent == run / "plots" for p in written)
    assert drawn(written) == {
        "throughput_vs_consumers.png",
        "retries_vs_consumers.png",
        "correctness.png",
        "throughput_over_time.png",
    }


def test_a_batch_size_sweep_adds_throughput_and_latency_vs_batch(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path, sweep={"batch_size": [10, 100, 1000]})
    assert drawn(charts.plot_run(run)) == {
        "throughput_vs_batch.png",
        "latency_vs_batch.png",
        "correctness.png",
        "throughput_over_time.png",
    }


def test_a_single_trial_gets_the_correctness_matrix_and_the_time_series(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path)
    assert drawn(charts.plot_run(run)) == {"correctness.png", "throughput_over_time.png"}


def test_without_a_time_series_there_is_no_chart_over_time(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, timeseries=False)
    assert not (run / "timeseries.csv").exists()
    assert "throughput_over_time.png" not in drawn(charts.plot_run(run))


def test_redrawing_removes_charts_that_no_longer_apply(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS)
    stale = run / "plots" / "latency_vs_batch.png"
    stale.parent.mkdir()
    stale.write_bytes(PNG)
    charts.plot_run(run)
    assert not stale.exists()


def test_a_run_with_no_trials_draws_nothing(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS)
    (run / "trials.csv").unlink()
    (run / "timeseries.csv").unlink()
    assert charts.plot_run(run) == []
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
    assert "correctness.png" in drawn(charts.plot_run(path))


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
    for chart in charts.charts_for(run):
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
    assert "trials last 0.5–1.0 s" in time_plots.describe_throughput_over_time(run)


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
    assert correctness.describe_correctness(run) == (
        "5 of 6 trials hold every invariant and 1 breaks an invariant "
        "(atomic at serializable: 3 events lost)."
    )
    texts = [t.get_text() for t in correctness.correctness(run).axes[0].texts]
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
    sentence = correctness.describe_correctness(run)
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
    assert correctness.describe_correctness(run) == (
        "6 of 8 trials hold every invariant and 2 show an expected anomaly "
        "(list · kill-consumer at every isolation level: 10 events lost)."
    )
    fig = correctness.correctness(run)
    assert fig.get_suptitle() == "Correctness: isolation level × broker × fault"


def test_a_trial_that_did_not_finish_is_left_out_of_the_numbers(tmp_path: Path) -> None:
    def failed(trial: Trial) -> dict[str, object]:
        return {"error": "not drained after 300 s"} if trial.index == 0 else {}

    run = load(runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, outcome=failed))
    assert len(stats.measured(run)) == len(run.trials) - 1
    assert stats.frame(run)["verdict"].iloc[0] == "did not finish"
    assert "1 did not finish" in correctness.describe_correctness(run)


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
    assert headings == [
        "What ran",
        "Environment",
        "Correctness",
        "Results",
        "Comparisons",
        "Charts",
    ]
    run = load(path)
    listed = charts.charts_for(run)
    assert len(listed) == 6  # every chart: this run varies isolation, consumers and batch
    for chart in listed:
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
    assert "throughput_vs_batch.png" in [c.filename for c in charts.charts_for(run)]
    fig = plots.throughput_vs_batch(run)
    assert fig.axes[0].get_xlabel() == "batch size (events per transaction)"
    sentence = plots.describe_throughput_vs_batch(run)
    # the synthetic throughput does not depend on the batch: peak = smallest, 1.0×
    assert sentence.startswith("Throughput peaks at") and "1.0×" in sentence


# -- open-loop load -------------------------------------------------------------------

OPEN_LOOP = {"duration_s": 5, "warmup_s": 1}
#: 1 consumer sustains up to 1,000 events/s, 2 up to 2,000 (runs.ceiling)
RATES_BY_CONSUMERS = {"consumers": [1, 2], "rate": [500, 1500, 3000]}


def joined(ax: Any, prefix: str) -> list[Any]:
    """The lines joining a latency's points (labelled ``p99 · 1 consumer`` …)."""
    return [line for line in ax.lines if line.get_label().startswith(prefix)]


def hollow(ax: Any) -> list[tuple[float, float]]:
    """The points drawn with hollow markers."""
    return [
        (x, y)
        for line in ax.lines
        if line.get_marker() not in ("None", "", None) and line.get_markerfacecolor() == "none"
        for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
    ]


def test_open_loop_trials_at_several_rates_get_latency_vs_throughput(tmp_path: Path) -> None:
    path = runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP)
    written = drawn(charts.plot_run(path))
    assert "latency_vs_throughput.png" in written
    assert "capacity.png" not in written  # no capacity.csv


def test_latency_vs_throughput_needs_two_rates_in_a_configuration(tmp_path: Path) -> None:
    bursts = load(runs.make_run(tmp_path, sweep=ISO_BY_CONSUMERS, run_id="bursts"))
    one_rate = load(
        runs.make_run(
            tmp_path, sweep={"consumers": [1, 2]}, params={**OPEN_LOOP, "rate": 500}, run_id="one"
        )
    )
    names = {c.filename for c in charts.CHARTS if c.applies(bursts) or c.applies(one_rate)}
    assert "latency_vs_throughput.png" not in names
    assert not load_plots.applies_latency_vs_throughput(bursts)
    assert not load_plots.applies_latency_vs_throughput(one_rate)


def test_latency_vs_throughput_axes_and_a_line_per_configuration_and_percentile(
    tmp_path: Path,
) -> None:
    run = load(runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP))
    fig = load_plots.latency_vs_throughput(run)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "events/s committed in the measured window"
    assert ax.get_ylabel() == "latency, intended send to commit (ms)"
    assert fig.get_suptitle() == "Latency vs throughput"
    assert "intended send time" in fig.get_supxlabel()
    p99, p50 = joined(ax, "p99 ·"), joined(ax, "p50 (median) ·")
    assert [line.get_label() for line in p99] == ["p99 · 1 consumer", "p99 · 2 consumers"]
    assert len(p50) == 2
    assert {line.get_linestyle() for line in p99} == {"-"}
    assert {line.get_linestyle() for line in p50} == {"--"}
    assert p99[0].get_color() != p99[1].get_color()
    # joined in order of rate: 1 consumer commits 500, then at most 1,000 events/s
    assert list(p99[0].get_xdata()) == pytest.approx([500, 1000, 1000])
    p50_one = [runs.steady_p50_ms(_params(consumers=1, rate=r), 0) for r in (500, 1500, 3000)]
    assert list(p50[0].get_ydata()) == pytest.approx(p50_one)
    legend = fig.legends[0]
    assert legend.get_title().get_text() == "consumers"
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:2] == ["1 consumer", "2 consumers"]
    assert {"p99", "p50 (median)", "not sustained", "p99 objective (100 ms)"} <= set(texts)


def _params(**changes: Any) -> Any:
    from harness.trials.experiment import TrialParams

    return TrialParams(**{**OPEN_LOOP, **changes})


def test_unsustained_points_are_hollow(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP))
    (ax,) = load_plots.latency_vs_throughput(run).axes
    # above its ceiling a configuration is not sustained: 1 consumer at 1,500 and 3,000,
    # 2 consumers at 3,000; each hollow twice (its p99 and its p50)
    points = hollow(ax)
    assert len(points) == 6
    assert sorted({x for x, _ in points}) == pytest.approx([1000, 2000])
    p99_one_at_3000 = 40 * runs.steady_p50_ms(_params(consumers=1, rate=3000), 0)
    assert any(y == pytest.approx(p99_one_at_3000) for _, y in points)
    filled = [
        line
        for line in ax.lines
        if line.get_linestyle() == "None" and line.get_markerfacecolor() != "none"
    ]
    assert sum(len(line.get_xdata()) for line in filled) == 2 * 3  # the sustained points


def test_repeated_rates_are_plotted_as_mean_with_95_percent_interval(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP, repeat=3))
    fig = load_plots.latency_vs_throughput(run)
    (ax,) = fig.axes
    assert ax.containers, "error bars for the repeats"
    p99 = joined(ax, "p99 · 1 consumer")[0]
    # 1 consumer at 500 events/s: p99 = 4 × p50, p50 10% more per repetition
    values = [4 * runs.steady_p50_ms(_params(consumers=1, rate=500), r) for r in range(3)]
    summary = stats.summarize(pd.DataFrame({"v": values}), [], ["v"])
    assert p99.get_ydata()[0] == pytest.approx(summary["v_mean"].iloc[0])
    assert "mean of 3 repeats" in fig.get_supxlabel()


def test_latency_vs_throughput_sentence(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP))
    # best sustained: 2 consumers at 1,500 (p50 = 10 × (1 + 0.75) / 2 = 8.75, p99 35 ms);
    # 1 consumer: p99 4 × 15 = 60 ms at 500, 40 × 40 = 1,600 ms at 3,000
    assert load_plots.describe_latency_vs_throughput(run) == (
        "The highest sustained throughput is 1,500 events/s committed, by 2 consumers, at an "
        "offered 1,500 events/s, with p99 35 ms there; p99 goes from 60 ms at 500 events/s "
        "offered to 1,600 ms at 3,000 with 1 consumer and from 25 ms at 500 to 500 ms at 3,000 "
        "with 2 consumers."
    )


def test_a_reference_is_drawn_beside_ours_as_stars(tmp_path: Path) -> None:
    path = runs.make_run(
        tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP, reference=runs.SEED_REFERENCE
    )
    fig = load_plots.latency_vs_throughput(load(path))
    (ax,) = fig.axes
    (stars,) = [line for line in ax.lines if line.get_marker() == "*"]
    assert list(stars.get_xdata()) == [113.4, 113.4]
    assert list(stars.get_ydata()) == [250, 650]
    assert ax.get_xscale() == "log"  # 113 to 2,000 events/s
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "the seed report (p50 and p99)" in texts


def test_the_sweep_charts_show_an_open_loop_trials_window(tmp_path: Path) -> None:
    path = runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP)
    run = load(path)
    headline = stats.headline(run).trials
    assert "events" not in headline  # it follows the rate
    one = headline[(headline["consumers"] == 1) & (headline["rate"] == 3000)]
    assert one["throughput_eps"].tolist() == [1000.0]  # committed, not offered
    assert plots.describe_throughput_vs_consumers(run).startswith(
        "Throughput peaks at 2,000 events/s with 2 consumers at 3,000 events/s offered"
    )
    assert "measured window" in plots.throughput_vs_consumers(run).get_supxlabel()


# -- capacity -------------------------------------------------------------------------


def test_a_capacity_run_gets_the_capacity_chart_and_burst_only_sweep_charts(
    tmp_path: Path,
) -> None:
    path = runs.make_capacity_run(tmp_path)
    written = drawn(charts.plot_run(path))
    assert {"capacity.png", "latency_vs_throughput.png", "throughput_vs_consumers.png"} <= written
    run = load(path)
    # the probes alone: 1,000 events/s per consumer
    assert plots.describe_throughput_vs_consumers(run) == (
        "Throughput peaks at 4,000 events/s with 4 consumers at read_committed, against "
        "1,000 events/s with 1 consumer."
    )
    assert "capacity search's probes" in plots.throughput_vs_consumers(run).get_supxlabel()


def test_capacity_chart_does_not_apply_without_capacity_csv(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP))
    assert run.capacity.empty
    assert not load_plots.applies_capacity(run)


def test_capacity_chart_bars_and_latency_by_share(tmp_path: Path) -> None:
    path = runs.make_capacity_run(tmp_path, none_sustained=(4,))
    capacity = pd.read_csv(path / "capacity.csv")
    capacity.loc[(capacity["consumers"] == 2) & (capacity["fraction"] == 0.5), "sustained"] = False
    capacity.to_csv(path / "capacity.csv", index=False)
    fig = load_plots.capacity(load(path))
    bars, lines = fig.axes
    assert [p.get_height() for p in bars.patches] == [1000, 2000]  # none for 4 consumers
    texts = [t.get_text() for t in bars.texts]
    assert texts == ["1,000", "2,000", "none\nsustained"]
    assert [t.get_text() for t in bars.get_xticklabels()] == [
        "1 consumer",
        "2 consumers",
        "4 consumers",
    ]
    assert bars.get_ylabel() == "events/s"
    assert lines.get_yscale() == "log"
    assert lines.get_ylabel() == "latency, intended send to commit (ms)"
    assert [t.get_text() for t in lines.get_xticklabels()] == ["25%", "50%", "75%", "100%"]
    p99 = joined(lines, "p99 ·")
    assert [line.get_label() for line in p99] == ["p99 · 1 consumer", "p99 · 2 consumers"]
    assert len(joined(lines, "p50 (median) ·")) == 2
    assert list(p99[0].get_xdata()) == [25, 50, 75, 100]
    assert list(p99[0].get_ydata()) == pytest.approx([50, 60, 70, 80])  # 4 × 10 × (1 + share)
    # the share made unsustained above is hollow, its p99 (30 ms) and its p50 (7.5 ms)
    points = sorted(hollow(lines))
    assert [x for x, _ in points] == [50, 50]
    assert [y for _, y in points] == pytest.approx([7.5, 30.0])


def test_capacity_sentence(tmp_path: Path) -> None:
    run = load(runs.make_capacity_run(tmp_path, none_sustained=(4,)))
    assert load_plots.describe_capacity(run) == (
        "Capacity, the highest open-loop rate sustained: 1,000 events/s with 1 consumer, p99 "
        "60 ms at half of it; 2,000 events/s with 2 consumers, p99 30 ms at half of it; none "
        "sustained with 4 consumers."
    )


def test_capacity_repeats_are_summarised_per_share(tmp_path: Path) -> None:
    run = load(runs.make_capacity_run(tmp_path, consumers=(1,), repeat=3))
    summary, axes = stats.capacity_summary(run)
    assert axes == ["consumers"]
    half = summary[summary["fraction"] == 0.5].iloc[0]
    assert half["trials"] == 3 and half["sustained"] == 3
    # p99 60 ms, 10% more per repetition: 60, 66, 72
    assert half["steady_p99_ms_mean"] == pytest.approx(66.0)
    assert load_plots.capacity(run).axes[1].containers  # error bars


# -- the time series of an open-loop run ----------------------------------------------


def test_time_series_with_latency_gets_a_log_latency_row_and_the_window(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP))
    fig = time_plots.throughput_over_time(run)
    top, bottom = fig.axes
    assert top.get_ylabel() == "commit rate (events/s)"
    assert bottom.get_ylabel() == "p99 latency of each second (ms)"
    assert bottom.get_yscale() == "log"
    assert bottom.get_xlabel() == "time since publishing began (s)"
    assert len(bottom.lines) == len(run.trials)
    # warm-up 1 s of 5: the window is seconds 1 to 4, shaded from 1 s to 5 s
    for ax in (top, bottom):
        (span,) = windows(ax)
        assert (span.get_x(), span.get_x() + span.get_width()) == (1.0, 5.0)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "measured window" in texts
    assert "500 events/s offered" in texts  # the colours are the rates' …
    assert "consumers = 1" in texts
    sentence = time_plots.describe_throughput_over_time(run)
    assert "the p99 latency of a second ranges from 25 to 1,600 ms in the measured windows" in (
        sentence
    )


def test_time_series_without_latency_keeps_one_row(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep={"consumers": [1, 2]}))
    assert "latency_p99_ms" not in run.timeseries
    fig = time_plots.throughput_over_time(run)
    assert len(fig.axes) == 1
    assert not windows(fig.axes[0])


def windows(ax: Any) -> list[Any]:
    return [p for p in ax.patches if p.get_label() == "_measured window"]


def test_each_fault_is_shaded_from_its_start_to_its_end(tmp_path: Path) -> None:
    """A pause spans seconds; a kill, an instant, still shows; an unended one is left out."""

    def outcome(trial: Any) -> dict[str, Any]:
        if trial.params.consumers == 1:
            return {"fault_windows": "1.50-3.50;4.00-4.01"}
        return {"fault_windows": "2.00-nan"}

    run = load(
        runs.make_run(tmp_path, sweep={"consumers": [1, 2]}, params=OPEN_LOOP, outcome=outcome)
    )
    assert time_plots.fault_spans(run.trials) == [(1.5, 3.5), (4.0, 4.1)]
    fig = time_plots.throughput_over_time(run)
    for ax in fig.axes:
        spans = [p for p in ax.patches if p.get_label() == "_fault"]
        assert [(p.get_x(), round(p.get_x() + p.get_width(), 6)) for p in spans] == [
            (1.5, 3.5),
            (4.0, 4.1),
        ]
    assert "fault" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Red: each fault" in " ".join(fig.get_supxlabel().split())


def test_trials_without_faults_shade_none(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep={"consumers": [1, 2]}, params=OPEN_LOOP))
    fig = time_plots.throughput_over_time(run)
    assert not [p for ax in fig.axes for p in ax.patches if p.get_label() == "_fault"]


def test_repeated_configurations_get_a_mean_line_in_a_band_per_configuration(
    tmp_path: Path,
) -> None:
    run = load(
        runs.make_run(
            tmp_path, sweep={"consumers": [1, 2]}, params={"rate": 500, **OPEN_LOOP}, repeat=3
        )
    )
    banded = time_plots.bands(run)
    second = banded[(banded["consumers"] == 1) & (banded["second"] == 2)].iloc[0]
    # 500 events/s committed, 1% less per repetition: 500, 495, 490
    assert second["rate_eps_n"] == 3
    assert second["rate_eps_mean"] == pytest.approx(495, abs=1)
    assert second["rate_eps_low"] < second["rate_eps_mean"] < second["rate_eps_high"]
    fig = time_plots.throughput_over_time(run)
    top, bottom = fig.axes
    assert len(top.lines) == len(bottom.lines) == 2  # a line per configuration, not per trial
    assert len(top.collections) == len(bottom.collections) == 2  # and its band
    assert "the mean of its 3 repeats" in " ".join(fig.get_supxlabel().split())


def test_configurations_run_once_keep_a_line_per_trial(tmp_path: Path) -> None:
    run = load(runs.make_run(tmp_path, sweep=RATES_BY_CONSUMERS, params=OPEN_LOOP))
    assert time_plots.bands(run).empty
    assert time_plots.throughput_over_time(run).get_suptitle().endswith(", per trial")


def test_each_case_of_an_experiment_has_a_colour_of_its_own_over_time(tmp_path: Path) -> None:
    """Cases vary several settings together: a colour (and a legend entry) per case, not
    a colour and a line style for two of their settings, which two cases may share."""
    cases = [
        {"fault": "pg-failover", "pg_standby": "sync"},
        {"fault": "pg-failover", "pg_standby": "async"},
        {"fault": "pg-crash", "synchronous_commit": "off"},
        {"fault": "pause-consumer", "consumers": 3},
    ]
    run = load(runs.make_run(tmp_path, cases=cases, params={"rate": 1000, "duration_s": 4}))
    t = stats.frame(run)
    style = time_plots._TraceStyle.of(run, t)
    assert style.colour_axis == "case" and style.dash_axis is None
    colours = {style.line(row)["color"] for _, row in t.iterrows()}
    assert len(colours) == 4
    labels = [h.get_label() for h in style.handles(per_trial=False)]
    assert labels[0] == "fault = pg-failover, pg_standby\n  = sync"
    fig = time_plots.throughput_over_time(run)
    assert fig.legends  # drawn
    # consumers change only with a case: no chart of throughput against them
    assert t["consumers"].nunique() == 2 and not plots.applies_consumers(run)
