"""A/B of two runs (``harness compare``): matched configurations, ratios with intervals,
verdicts, and the refusals, on synthetic runs written by the harness's own writers."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import ab
from harness.bench import pipeline as bench
from harness.trials.params import Trial
from tests.data import runs

#: how much faster NEW is than OLD in the synthetic pairs
SPEED_UP = 1.2


def steady(scale: float = 1.0) -> Any:
    """An ``outcome`` for :func:`runs.make_run`: throughput ``scale`` × the synthetic rule
    at the first repetition, 2% more per repetition (a spread, so that there is noise to
    beat), and a p99 ``1 / scale`` × its rule, 2% more per repetition."""

    def outcome(trial: Trial) -> dict[str, Any]:
        spread = 1 + 0.02 * trial.repeat
        eps = runs.throughput(trial.params, 0) * scale * spread
        p99 = 2.0 * runs.p50_ms(trial.params) / scale * spread
        return {"elapsed_s": runs.EVENTS / eps, "latency_p99_ms": p99}

    return outcome


def pair(
    tmp_path: Path,
    *,
    new_scale: float = SPEED_UP,
    repeat: int = 3,
    old_sweep: Mapping[str, Sequence[Any]] | None = None,
    new_sweep: Mapping[str, Sequence[Any]] | None = None,
) -> tuple[Path, Path]:
    sweep = {"consumers": [1, 2]}
    old = runs.make_run(
        tmp_path, sweep=old_sweep or sweep, repeat=repeat, outcome=steady(), run_id="old"
    )
    new = runs.make_run(
        tmp_path,
        sweep=new_sweep or sweep,
        repeat=repeat,
        outcome=steady(new_scale),
        run_id="new",
    )
    return old, new


def rows(result: ab.AB) -> dict[tuple[str, str], ab.Row]:
    return {(r.configuration, r.figure.column): r for r in result.rows}


def test_a_new_run_20_percent_faster_is_faster_beyond_the_noise(tmp_path: Path) -> None:
    old, new = pair(tmp_path)
    result = ab.compare_runs(old, new)
    got = rows(result)
    assert set(got) == {
        (f"consumers = {c}", f) for c in (1, 2) for f in ("throughput_eps", "latency_p99_ms")
    }
    for consumers in (1, 2):
        eps = got[(f"consumers = {consumers}", "throughput_eps")]
        c = eps.comparison
        assert (c.n_baseline, c.n_other) == (3, 3)
        assert c.ratio == pytest.approx(SPEED_UP, rel=1e-3)
        assert 1 < c.ratio_low < c.ratio < c.ratio_high
        assert c.p_value < 0.05
        assert eps.verdict == "faster" and ab.improved(eps) is True
        p99 = got[(f"consumers = {consumers}", "latency_p99_ms")]
        assert p99.comparison.ratio == pytest.approx(1 / SPEED_UP, rel=1e-3)
        assert p99.comparison.ratio_high < 1
        assert p99.verdict == "lower" and ab.improved(p99) is True
    assert result.only_old == result.only_new == []
    assert ab.tally(result) == "NEW against OLD: 2 faster, 2 lower."


def test_a_slower_new_run_is_slower_and_its_latency_higher(tmp_path: Path) -> None:
    old, new = pair(tmp_path, new_scale=1 / SPEED_UP)
    got = rows(ab.compare_runs(old, new))
    assert got[("consumers = 2", "throughput_eps")].verdict == "slower"
    higher = got[("consumers = 2", "latency_p99_ms")]
    assert higher.verdict == "higher" and ab.improved(higher) is False


def test_two_runs_of_the_same_figures_show_no_difference(tmp_path: Path) -> None:
    old, new = pair(tmp_path, new_scale=1.0)
    result = ab.compare_runs(old, new)
    for row in result.rows:
        assert row.comparison.ratio == pytest.approx(1.0)
        assert row.comparison.ratio_low < 1 < row.comparison.ratio_high
        assert row.comparison.p_value == pytest.approx(1.0)
        assert row.verdict == "no difference beyond the noise"
        assert ab.improved(row) is None
    assert ab.tally(result) == "NEW against OLD: 4 no difference beyond the noise."


def test_one_run_each_gives_the_ratio_without_an_interval(tmp_path: Path) -> None:
    old, new = pair(tmp_path, repeat=1)
    result = ab.compare_runs(old, new)
    eps = rows(result)[("consumers = 1", "throughput_eps")]
    assert eps.comparison.ratio == pytest.approx(SPEED_UP, rel=1e-3)
    assert math.isnan(eps.comparison.ratio_low) and math.isnan(eps.comparison.p_value)
    assert eps.verdict == "one run each: no interval"
    cells = ab.cells(eps)
    assert cells[2:] == ["1 · 1", cells[3], cells[4], "1.20×", "–", "–", eps.verdict]
    assert ab.tally(result) == "NEW against OLD: 4 without an interval."


def test_configurations_in_one_run_only_are_listed_as_such(tmp_path: Path) -> None:
    old, new = pair(tmp_path, old_sweep={"consumers": [1, 2]}, new_sweep={"consumers": [2, 4]})
    result = ab.compare_runs(old, new)
    assert {r.configuration for r in result.rows} == {"consumers = 2"}
    assert result.only_old == ["consumers = 1"]
    assert result.only_new == ["consumers = 4"]
    text = ab.markdown(result)
    assert "Only in OLD: `consumers = 1`." in text and "Only in NEW: `consumers = 4`." in text


def test_the_markdown_is_a_table_of_the_same_rows(tmp_path: Path) -> None:
    old, new = pair(tmp_path)
    result = ab.compare_runs(old, new)
    text = ab.markdown(result)
    assert f"- OLD: `{old}`: experiment synthetic" in text
    header = "| configuration | figure | runs | OLD | NEW | NEW/OLD | 95% interval | p | verdict |"
    assert header in text
    table = [line for line in text.splitlines() if line.startswith("| consumers")]
    assert len(table) == len(result.rows) == 4
    assert table[0].startswith("| consumers = 1 | events/s | 3 · 3 | ")
    assert "| 1.20× | " in table[0] and table[0].endswith("| faster |")
    assert text.rstrip().endswith("NEW against OLD: 2 faster, 2 lower.")


def test_open_loop_runs_compare_their_window_and_say_when_both_sustained(
    tmp_path: Path,
) -> None:
    # one consumer at read committed sustains up to 1,000 events/s (runs.ceiling)
    load = {"consumers": 1, "duration_s": 5, "warmup_s": 1}
    sweep = {"rate": [500, 4000]}
    old = runs.make_run(tmp_path, params=load, sweep=sweep, repeat=3, run_id="old")
    new = runs.make_run(tmp_path, params=load, sweep=sweep, repeat=3, run_id="new")
    got = rows(ab.compare_runs(old, new))
    assert {f for _, f in got} == {"steady_eps", "steady_p99_ms"}
    held = got[("rate = 500", "steady_eps")]
    assert held.verdict == "both sustained the rate offered" and held.note == ""
    saturated = got[("rate = 4,000", "steady_eps")]
    assert saturated.verdict == "no difference beyond the noise"
    assert saturated.note == "OLD 0/3 sustained; NEW 0/3 sustained"
    assert got[("rate = 500", "steady_p99_ms")].figure.label == "steady p99 ms"


def test_trials_that_did_not_finish_are_left_out_and_noted(tmp_path: Path) -> None:
    old = runs.make_run(tmp_path, repeat=3, outcome=steady(), run_id="old")

    def broken(trial: Trial) -> dict[str, Any]:
        return {**steady()(trial), **({"error": "boom"} if trial.repeat == 0 else {})}

    new = runs.make_run(tmp_path, repeat=3, outcome=broken, run_id="new")
    row = rows(ab.compare_runs(old, new))[("the one configuration", "throughput_eps")]
    assert (row.comparison.n_baseline, row.comparison.n_other) == (3, 2)
    assert row.note == "NEW 1/3 did not finish"


def test_other_experiments_and_quick_runs_are_compared_with_a_warning(tmp_path: Path) -> None:
    old, new = pair(tmp_path)
    meta = json.loads((new / "meta.json").read_text())
    meta["experiment"]["name"], meta["quick"] = "other", True
    (new / "meta.json").write_text(json.dumps(meta))
    result = ab.compare_runs(old, new)
    assert len(result.rows) == 4
    assert any("'synthetic'" in w and "'other'" in w for w in result.warnings)
    assert any("only NEW ran with --quick" in w for w in result.warnings)
    assert "**Warning:** OLD is experiment 'synthetic'" in ab.markdown(result)


def test_runs_with_nothing_in_common_say_which_parameters_differ(tmp_path: Path) -> None:
    old = runs.make_run(tmp_path, params={"batch_size": 100}, run_id="old")
    new = runs.make_run(tmp_path, params={"batch_size": 200}, run_id="new")
    with pytest.raises(ab.NotComparable, match=r"no configuration in common.*batch_size = 100"):
        ab.compare_runs(old, new)


def test_what_is_not_a_run_or_not_of_the_same_kind_is_refused(tmp_path: Path) -> None:
    run = runs.make_run(tmp_path, run_id="r")
    with pytest.raises(ab.NotComparable, match="is not a run folder"):
        ab.compare_runs(run, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ab.NotComparable, match="is not a run folder"):
        ab.compare_runs(tmp_path / "empty", run)
    folder = bench_run(tmp_path / "b", {"a": [100.0, 110.0]})
    with pytest.raises(
        ab.NotComparable, match=r"a run of kind experiment and NEW .* of kind bench"
    ):
        ab.compare_runs(run, folder)
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "stages.json").write_text(json.dumps({"steps": []}))
    with pytest.raises(ab.NotComparable, match="bench --stages"):
        ab.compare_runs(tmp_path / "stages", tmp_path / "stages")


def test_a_capacity_search_is_refused(tmp_path: Path) -> None:
    search = runs.make_capacity_run(tmp_path)
    with pytest.raises(ab.NotComparable, match="capacity search"):
        ab.compare_runs(search, search)


# -- bench runs ---------------------------------------------------------------------------


def bench_run(folder: Path, rates: Mapping[str, Sequence[float]], **config: Any) -> Path:
    """``folder/bench.json`` as ``harness bench`` writes it (harness/cli/bench.py), from
    the bench's own Measurement: each part's events/s per round (a second each)."""
    cfg = dataclasses.replace(bench.BenchConfig(), **config)
    measured = [
        bench.Measurement(key, key, int(rate), 1.0, True, "", round=r)
        for r in range(max(len(v) for v in rates.values()))
        for key, values in rates.items()
        for rate in values[r : r + 1]
    ]
    folder.mkdir(parents=True)
    data = {
        "results_format": 3,
        "started": "2026-12-01T10:00:00+00:00",
        "finished": "2026-12-01T10:05:00+00:00",
        "config": dataclasses.asdict(cfg),
        "measurements": [
            {**dataclasses.asdict(m), "events_per_s": m.events_per_s} for m in measured
        ],
        "ratios": bench.ratios(measured),
        "medians": bench.medians(measured),
        "round_ratios": bench.round_ratios(measured),
        "targets": [],
        "cpu_us_per_event": bench.cpu_medians(measured),
        "environment": {"host": "testhost", "cpu_count": 2, "git_commit": "0123456789"},
    }
    (folder / "bench.json").write_text(json.dumps(data, indent=2))
    return folder


OLD_BENCH = {"a": [100_000.0, 104_000.0, 98_000.0], "c": [80_000.0, 82_000.0, 79_000.0]}


def test_bench_runs_compare_each_part_over_its_rounds_and_the_ratios(tmp_path: Path) -> None:
    new_rates = {"a": OLD_BENCH["a"], "c": [SPEED_UP * v for v in OLD_BENCH["c"]]}
    old = bench_run(tmp_path / "old", OLD_BENCH)
    new = bench_run(tmp_path / "new", new_rates)
    result = ab.compare_runs(old, new / "bench.json")  # the folder or the file
    got = rows(result)
    # the ratios of parts not run, (b), (d), (e) and (f), are NaN: left out
    assert set(got) == {("(a) a", "events_per_s"), ("(c) c", "events_per_s"), ("c/a", "ratio")}
    assert got[("(a) a", "events_per_s")].verdict == "no difference beyond the noise"
    c = got[("(c) c", "events_per_s")]
    assert c.comparison.ratio == pytest.approx(SPEED_UP)
    assert c.comparison.ratio_low > 1 and c.verdict == "faster"
    assert (c.comparison.n_baseline, c.comparison.n_other) == (3, 3)
    assert got[("c/a", "ratio")].verdict == "higher"
    assert result.warnings == []
    assert result.old.about.startswith("bench, started 2026-12-01T10:00:00+00:00, git 0123456")


def test_benches_of_other_sizes_are_compared_with_a_warning(tmp_path: Path) -> None:
    old = bench_run(tmp_path / "old", OLD_BENCH)
    new = bench_run(tmp_path / "new", OLD_BENCH, events=20_000)
    (warning,) = ab.compare_runs(old, new).warnings
    assert warning == "the runs' configurations differ: events 400,000 → 20,000"


def test_an_unverified_bench_round_is_left_out(tmp_path: Path) -> None:
    old = bench_run(tmp_path / "old", OLD_BENCH)
    new = bench_run(tmp_path / "new", OLD_BENCH)
    data = json.loads((new / "bench.json").read_text())
    data["measurements"][0]["verified"] = False  # (a), round 1
    (new / "bench.json").write_text(json.dumps(data))
    row = rows(ab.compare_runs(old, new))[("(a) a", "events_per_s")]
    assert row.comparison.n_other == 2 and row.note == "NEW round 1 not verified, left out"


def test_service_bench_runs_compare_each_step_once_each(tmp_path: Path) -> None:
    from tests.unit.test_unit_service_bench import CFG, MEASURED, run_json

    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        data = {"kind": "service-bench", **run_json(MEASURED, CFG.quick())}
        (tmp_path / name / "service-bench.json").write_text(json.dumps(data))
    result = ab.compare_runs(tmp_path / "old", tmp_path / "new")
    assert [r.configuration for r in result.rows[:4]] == [
        "s0 seed.js",
        "s0 seed.js",
        "s0 open loop 250/s",
        "s0 open loop 250/s",
    ]
    assert len(result.rows) == 2 * len(MEASURED)
    assert {r.verdict for r in result.rows} == {"one run each: no interval"}
    assert {r.comparison.ratio for r in result.rows} == {1.0}
