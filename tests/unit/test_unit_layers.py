"""The layers as a reader meets them: what importing the analysis layer brings in.

import-linter checks the direction of every import (``lint-imports``, in CI); this test
checks the promise a notebook relies on at run time: reading results and drawing charts
starts neither Ray nor a Redis or PostgreSQL client.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("ray", "redis", "psycopg", "psycopg_pool", "fastapi", "uvicorn")

PROBE = f"""
import importlib, json, pkgutil, sys
import harness.analysis
names = [m.name for m in pkgutil.walk_packages(harness.analysis.__path__, "harness.analysis.")]
for name in names:
    importlib.import_module(name)
import harness.trials.results, harness.trials.experiment, harness.trials.params
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print(json.dumps({{"modules": names, "heavy": heavy}}))
"""


def test_the_analysis_layer_imports_neither_ray_nor_redis_nor_psycopg() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    # the probe did import the layer: its charts, statistics and report
    assert {"harness.analysis.stats", "harness.analysis.report", "harness.analysis.charts"} <= set(
        found["modules"]
    )
    assert found["heavy"] == []
