"""The analysis notebook runs headlessly against a small real run and draws its charts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import plots
from harness.config import Settings
from harness.results import load

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


@pytest.fixture
def small_run(settings: Settings, tmp_path: Path) -> Path:
    """``harness run smoke`` over 1 and 2 consumers, on this test's own schema and prefix
    (the ``settings`` fixture drops both afterwards)."""
    env = {
        **os.environ,
        "HARNESS_PG_DSN": settings.pg_dsn,
        "HARNESS_REDIS_URL": settings.redis_url,
        "HARNESS_PG_SCHEMA": settings.pg_schema,
        "HARNESS_KEY_PREFIX": settings.key_prefix,
    }
    argv = ["run", "smoke", "--set", "events=2000", "--set", "consumers=1,2"]
    proc = subprocess.run(
        [sys.executable, "-m", "harness", *argv, "--out", str(tmp_path), "--run-id", "nb"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp_path / "smoke" / "nb"


def test_notebook_runs_headless_and_shows_every_chart_of_the_run(
    small_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in notebook.cells), "store the notebook without outputs"
    monkeypatch.setenv("HARNESS_RUN", str(small_run))  # the kernel inherits the environment
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, if a cell fails

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    expected = plots.charts_for(load(small_run))
    assert len(expected) >= 3  # throughput and retries vs consumers, correctness
    assert len(images) == len(expected)
    assert str(small_run) in "".join(o.get("data", {}).get("text/plain", "") for o in outputs)


def test_bench_notebook_reads_every_kept_bench_run_and_draws_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """notebooks/bench.ipynb over two bench.json files: a table row each, the spread of
    c/a by round, and the newest run's two charts."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    kept = ROOT / "results" / "bench" / "reference" / "session4"
    for name in ("final-run-1.json", "final-run-2.json"):
        (tmp_path / name).write_bytes((kept / name).read_bytes())
    (tmp_path / "meta.json").write_text("{}")  # not a bench.json: left out
    notebook = nbformat.read(ROOT / "notebooks" / "bench.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in notebook.cells), "store the notebook without outputs"
    monkeypatch.setenv("HARNESS_BENCH", str(tmp_path))
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "**2 bench runs**" in markdown and "final-run-2.json" in markdown  # the newest
    assert "final-run-1.json" in text and "none" in text  # every target met in both
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # c/a by round, and the newest run's two charts
