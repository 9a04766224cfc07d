"""``python -m harness compare OLD NEW`` as a user runs it, on synthetic runs: no services,
no Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.test_cli import harness
from tests.data import runs
from tests.unit.test_unit_ab import OLD_BENCH, SPEED_UP, bench_run, pair

pytestmark = pytest.mark.acceptance


def test_compare_prints_the_a_b_and_writes_it_as_markdown(tmp_path: Path) -> None:
    old, new = pair(tmp_path)
    markdown = tmp_path / "ab" / "compare.md"
    proc = harness("compare", str(old), str(new), "--markdown", str(markdown), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"OLD: {old}: experiment synthetic" in proc.stdout
    assert "NEW against OLD" in proc.stdout  # the table's title
    assert "consumers = 1" in proc.stdout and "1.20×" in proc.stdout
    assert "NEW against OLD: 2 faster, 2 lower." in proc.stdout
    assert f"markdown: {markdown}" in proc.stdout
    text = markdown.read_text()
    assert "| configuration | figure | runs | OLD | NEW | NEW/OLD | 95% interval | p |" in text
    assert text.count("| faster |") == 2 and text.count("| lower |") == 2


def test_compare_of_two_identical_runs_exits_0_with_no_difference(tmp_path: Path) -> None:
    old, new = pair(tmp_path, new_scale=1.0)
    proc = harness("compare", str(old), str(new), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NEW against OLD: 4 no difference beyond the noise." in proc.stdout


def test_compare_of_two_bench_runs(tmp_path: Path) -> None:
    old = bench_run(tmp_path / "old", OLD_BENCH)
    new = bench_run(tmp_path / "new", {**OLD_BENCH, "c": [SPEED_UP * v for v in OLD_BENCH["c"]]})
    proc = harness("compare", str(old), str(new / "bench.json"), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(c) c" in proc.stdout and "c/a" in proc.stdout
    assert "NEW against OLD: 1 faster, 1 higher, 1 no difference beyond the noise." in proc.stdout


@pytest.mark.parametrize("bad", ["missing", "empty", "bench", "other-batch"])
def test_compare_refuses_what_it_cannot_compare_with_one_line_and_exit_2(
    tmp_path: Path, bad: str
) -> None:
    run = runs.make_run(tmp_path, params={"batch_size": 100}, run_id="run")
    other = {
        "missing": tmp_path / "no-such-run",
        "empty": tmp_path / "empty",
        "bench": bench_run(tmp_path / "bench", OLD_BENCH),
        "other-batch": runs.make_run(tmp_path, params={"batch_size": 200}, run_id="other"),
    }[bad]
    (tmp_path / "empty").mkdir(exist_ok=True)
    proc = harness("compare", str(run), str(other), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    expected = {
        "missing": "is not a run folder (no such file or folder)",
        "empty": "is not a run folder (no meta.json nor bench.json)",
        "bench": "compare two runs of one kind",
        "other-batch": "no configuration in common: OLD has batch_size = 100",
    }[bad]
    assert proc.stderr.startswith("error: ") and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
