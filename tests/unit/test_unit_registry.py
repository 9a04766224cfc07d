"""One chart registry for runs, benches and service benches: what it draws and removes."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from harness.analysis.registry import Chart, draw_all


def _figure(data: dict[str, int]) -> Figure:
    fig = Figure()
    fig.add_subplot().plot([0, 1], [0, data["n"]])
    return fig


CHARTS = (
    Chart("always.png", "Always", draw=_figure),
    Chart("if_big.png", "If big", lambda d: d["n"] > 10, draw=_figure),
)


def test_draws_what_applies_and_removes_what_no_longer_does(tmp_path: Path) -> None:
    out = tmp_path / "plots"
    assert draw_all(CHARTS, {"n": 20}, out) == [out / "always.png", out / "if_big.png"]
    assert (out / "if_big.png").stat().st_size > 0
    # redrawn from data that no longer has the second chart: its old file goes
    assert draw_all(CHARTS, {"n": 1}, out) == [out / "always.png"]
    assert sorted(p.name for p in out.iterdir()) == ["always.png"]


def test_every_registry_is_of_one_kind() -> None:
    from harness.analysis import charts
    from harness.bench import plots as bench_plots
    from harness.bench import service_plots

    for registry in (charts.CHARTS, bench_plots.CHARTS, service_plots.CHARTS):
        assert registry and all(isinstance(c, Chart) for c in registry)
        assert len({c.filename for c in registry}) == len(registry)
