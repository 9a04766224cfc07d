"""The bench's charts, drawn from a bench.json built by the bench's own functions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from harness.bench import pipeline as bench
from harness.bench import plots as bench_plots

PNG = b"\x89PNG\r\n\x1a\n"
CPU = {"postgres": 10.0, "consumers": 2.0, "redis": 0.3, "busy": 12.3, "idle": 1.5}


def _bench_json(*, with_cpu: bool = True, with_targets: bool = True) -> dict[str, Any]:
    rates = {"a": [150_000, 140_000, 145_000], "b": [1_400, 1_300], "c": [125_000, 120_000]}
    measured = [
        bench.Measurement(key, key, events=int(rate), seconds=1.0, verified=True, round=r)
        for key, values in rates.items()
        for r, rate in enumerate(values)
    ]
    data: dict[str, Any] = {
        "measurements": [
            {**dataclasses.asdict(m), "events_per_s": m.events_per_s} for m in measured
        ],
        "ratios": bench.ratios(measured),
        "cpu_us_per_event": {"a": CPU, "c": CPU, "b": {"postgres": 400.0, "idle": 500.0}}
        if with_cpu
        else {},
    }
    if with_targets:
        data["targets"] = [
            {**dataclasses.asdict(t), "met": t.met if t.applies else None}
            for t in bench.targets(measured)
        ]
    return data


def _write(tmp_path: Path, data: dict[str, Any]) -> list[Path]:
    (tmp_path / "bench.json").write_text(json.dumps(data))
    return bench_plots.write(tmp_path)


def test_a_run_gets_both_charts_as_png(tmp_path: Path) -> None:
    written = _write(tmp_path, _bench_json())
    assert [p.name for p in written] == ["bench_throughput.png", "bench_cpu.png"]
    assert all(p.read_bytes().startswith(PNG) and p.stat().st_size > 5000 for p in written)


def test_a_run_without_cpu_figures_gets_the_throughput_chart_only(tmp_path: Path) -> None:
    written = _write(tmp_path, _bench_json(with_cpu=False))
    assert [p.name for p in written] == ["bench_throughput.png"]


def test_throughput_bars_are_the_medians_on_a_log_axis_with_the_targets_said() -> None:
    fig = bench_plots.throughput(_bench_json())
    (ax,) = fig.axes
    heights = [b.get_height() for b in ax.patches]
    assert heights == [145_000, pytest.approx(1_350), pytest.approx(122_500)]
    assert ax.get_yscale() == "log" and ax.get_ylim()[0] == 1_000
    assert _ticks(ax) == ["(a) store ceiling", "(b) the seed's design", "(c) the pipeline"]
    caption = _caption(fig)
    assert "c/b 90.74 ≥ 60: met" in caption
    assert "(c) events/s 122,500 ≥ 100,000: met" in caption


def test_older_files_without_targets_or_rounds_get_them_judged_all_the_same() -> None:
    data = _bench_json(with_targets=False)
    for m in data["measurements"]:
        del m["round"], m["cpu"], m["started_ns"], m["ended_ns"]  # as files of session 2
    assert "c/a 0.84 ≥ 0.8: met" in _caption(bench_plots.throughput(data))


def test_a_bench_json_reads_back_as_the_measurements_it_was_written_from() -> None:
    data = _bench_json()
    measured = bench.measurements_of(data)
    assert bench.medians(measured) == {"a": 145_000, "b": 1_350, "c": 122_500}
    assert bench.round_ratios(measured)[0]["c/a"] == pytest.approx(125_000 / 150_000)


def test_cpu_stacks_each_role_in_one_colour_across_both_panels() -> None:
    fig = bench_plots.cpu(_bench_json())
    left, right = fig.axes[:2]
    assert _ticks(left) == ["(a) store ceiling", "(c) the pipeline"]
    assert _ticks(right) == ["(b) the seed's design"]
    # stacked: postgres at the bottom, idle on top, and nothing drawn for "busy"
    tops = max(p.get_y() + p.get_height() for p in left.patches)
    assert tops == pytest.approx(10.0 + 0.3 + 2.0 + 1.5)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["idle", "consumers", "redis", "postgres"]
    postgres = bench_plots.ROLE_COLOURS["postgres"]
    assert (
        sum(1 for ax in (left, right) for p in ax.patches if _hex(p.get_facecolor()) == postgres)
        == 3
    )


def _ticks(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def _caption(fig: Any) -> str:
    """The text under a figure (``plots.figure`` puts it in the figure's supxlabel, wrapped)."""
    return " ".join(str(fig._supxlabel.get_text()).split())


def _hex(rgba: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgba[:3])
