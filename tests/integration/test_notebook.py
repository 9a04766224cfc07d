"""The notebooks run as a user runs them: ``jupyter nbconvert --execute``, whose kernel
starts in ``notebooks/`` as JupyterLab's does, against a small real run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import charts
from harness.infra.config import Settings
from harness.trials.results import load

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"
BENCH = ROOT / "notebooks" / "bench.ipynb"


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
    argv = ["run", "smoke", "--set", "events=2000", "--set", "consumers=1,2", "--set", "repeat=1"]
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


def execute(notebook: Path, out: Path, **env: str) -> list[dict[str, Any]]:
    """Run ``notebook`` with ``jupyter nbconvert --execute`` into ``out``; return the code
    cells' outputs. Fails with nbconvert's own message if a cell raises."""
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent)) or shutil.which(
        "jupyter"
    )
    assert jupyter, "jupyter is not installed: pip install -e '.[dev]' (or '.[notebooks]')"
    stored = json.loads(notebook.read_text())
    assert not any(c.get("outputs") for c in stored["cells"]), "store the notebook without outputs"
    proc = subprocess.run(
        [
            jupyter,
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            str(notebook),
            "--output-dir",
            str(out.parent),
            "--output",
            out.name,
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(out.read_text())
    return [o for c in done["cells"] if c["cell_type"] == "code" for o in c["outputs"]]


def _text(outputs: list[dict[str, Any]], kind: str) -> str:
    return "".join("".join(o.get("data", {}).get(kind, "")) for o in outputs)


def test_analysis_notebook_runs_as_a_user_runs_it_and_shows_every_chart(
    small_run: Path, tmp_path: Path
) -> None:
    outputs = execute(NOTEBOOK, tmp_path / "analysis.ipynb", HARNESS_RUN=str(small_run))
    assert not [o for o in outputs if o["output_type"] == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    expected = charts.charts_for(load(small_run))
    assert len(expected) >= 3  # throughput and retries vs consumers, correctness
    assert len(images) == len(expected)
    assert str(small_run) in _text(outputs, "text/plain")


def test_bench_notebook_reads_every_kept_bench_run_and_draws_the_newest(
    tmp_path: Path,
) -> None:
    """notebooks/bench.ipynb over two bench.json files: a table row each, the spread of
    c/a by round, and the newest run's two charts."""
    kept = ROOT / "results" / "bench" / "reference" / "session4"
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("final-run-1.json", "final-run-2.json"):
        (runs / name).write_bytes((kept / name).read_bytes())
    (runs / "meta.json").write_text("{}")  # not a bench.json: left out
    outputs = execute(
        ROOT / "notebooks" / "bench.ipynb", tmp_path / "b.ipynb", HARNESS_BENCH=str(runs)
    )
    assert not [o for o in outputs if o["output_type"] == "error"]
    text, markdown = _text(outputs, "text/plain"), _text(outputs, "text/markdown")
    assert "**2 bench runs**" in markdown and "final-run-2.json" in markdown  # the newest
    assert "final-run-1.json" in text and "none" in text  # every target met in both
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # c/a by round, and the newest run's two charts


def test_bench_notebook_finds_the_kept_runs_from_the_notebooks_folder(tmp_path: Path) -> None:
    """Without HARNESS_BENCH the kernel, started in notebooks/, still finds
    results/bench/reference (it once found nothing and failed with KeyError: 'started')."""
    outputs = execute(BENCH, tmp_path / "b.ipynb", HARNESS_BENCH="")
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert "bench runs** read from `../results/bench/reference`" in _text(outputs, "text/markdown")


def test_bench_notebook_with_no_run_says_so_in_a_sentence(tmp_path: Path) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    outputs = execute(
        ROOT / "notebooks" / "bench.ipynb", tmp_path / "b.ipynb", HARNESS_BENCH=str(empty)
    )
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert "No bench run found" in _text(outputs, "text/markdown")
    assert not [o for o in outputs if "image/png" in o.get("data", {})]


def test_service_bench_notebook_reads_the_kept_runs(tmp_path: Path) -> None:
    """notebooks/service_bench.ipynb over the kept service-bench runs (found from the
    notebooks folder): a headline row each, every k6 run, the p99 chart, CPU per request."""
    outputs = execute(
        ROOT / "notebooks" / "service_bench.ipynb", tmp_path / "s.ipynb", HARNESS_SERVICE_BENCH=""
    )
    assert not [o for o in outputs if o["output_type"] == "error"]
    markdown, text = _text(outputs, "text/markdown"), _text(outputs, "text/plain")
    assert "**2 service-bench runs** read from `../results/service-bench/reference`" in markdown
    assert "second-run/service-bench.json" in text and "0.85" in text and "1.08" in text
    # CPU per request, from the kept files: s1 spent 195 µs a request at 4,000/s
    assert "195.0" in text
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 1


def test_service_bench_notebook_with_no_run_says_so_in_a_sentence(tmp_path: Path) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    outputs = execute(
        ROOT / "notebooks" / "service_bench.ipynb",
        tmp_path / "s.ipynb",
        HARNESS_SERVICE_BENCH=str(empty),
    )
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert "No service-bench run found" in _text(outputs, "text/markdown")
    assert not [o for o in outputs if "image/png" in o.get("data", {})]
