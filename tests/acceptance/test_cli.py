"""The CLI as a user runs it: a subprocess, real services, real Ray."""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness.delivery.keys import Keys
from harness.infra.config import Settings

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]


def harness(*args: str, env: dict[str, str] | None = None, timeout: float = 240):
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _env(settings: Settings) -> dict[str, str]:
    return {
        "HARNESS_PG_DSN": settings.pg_dsn,
        "HARNESS_REDIS_URL": settings.redis_url,
        "HARNESS_PG_SCHEMA": settings.pg_schema,
        "HARNESS_KEY_PREFIX": settings.key_prefix,
    }


@pytest.fixture
def trial_tmp() -> Iterator[Path]:
    """A temporary folder for the harness's own servers (TMPDIR), which the user it runs
    PostgreSQL as can reach: what a run leaves behind is looked for there alone, so that
    another suite on the machine cannot confuse the check."""
    folder = Path(tempfile.mkdtemp(prefix="harness-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _left_behind(folder: Path) -> list[str]:
    """What a run left in ``folder``: files, and processes that run from there."""
    data = [f"{folder}/harness-pg-trial-", f"{folder}/harness-redis-"]  # servers' folders
    running = [p for p in _processes() if any(d in p for d in data)]
    # harness-pginstall: the PostgreSQL binaries, copied once where its user can run them
    kept = [str(p) for p in folder.iterdir() if p.name != "harness-pginstall"]
    return kept + running


@pytest.mark.slow
def test_run_smoke_writes_results_that_hold_every_invariant(
    settings: Settings, tmp_path: Path
) -> None:
    proc = harness("run", "smoke", "--out", str(tmp_path), "--run-id", "r1", env=_env(settings))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "invariants hold" in proc.stdout

    run = tmp_path / "smoke" / "r1"
    rows = list(csv.DictReader((run / "trials.csv").open()))
    assert [r["repeat"] for r in rows] == ["0", "1", "2"]  # smoke runs three times
    row = rows[0]
    required = [
        "trial",
        "repeat",
        "publishers",
        "consumers",
        "isolation",
        "batch_size",
        "events_published",
        "expected_unique",
        "received",
        "unique_processed",
        "duplicate_dropped",
        "db_rows",
        "lost",
        "double_applied",
        "invariant_ok",
        "elapsed_s",
        "throughput_eps",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "latency_max_ms",
        "retries",
        "serialization_failures",
        "deadlocks",
    ]
    assert not [c for c in required if c not in row]
    n = int(row["events_published"])
    assert n == 20_000
    assert int(row["received"]) == n
    assert int(row["unique_processed"]) == int(row["expected_unique"]) == int(row["db_rows"])
    assert int(row["duplicate_dropped"]) == n - int(row["unique_processed"])
    assert int(row["lost"]) == 0 and int(row["double_applied"]) == 0
    assert row["invariant_ok"] == "True"
    assert float(row["latency_p50_ms"]) <= float(row["latency_p99_ms"])

    meta = json.loads((run / "meta.json").read_text())
    assert meta["results_format"] == 3
    assert meta["status"] == "complete"
    assert meta["servers"]["postgresql"] and meta["servers"]["redis"]
    assert meta["environment"]["packages"]["ray"]
    assert meta["experiment"]["params"]["consumers"] == 4


def test_list_shows_the_shipped_experiments() -> None:
    proc = harness("list")
    assert proc.returncode == 0, proc.stderr
    assert "smoke" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nosuch"], "no experiment named 'nosuch'"),
        (["run", "smoke", "--set", "consumers=zero"], "consumers must be a whole number"),
        (["run", "smoke", "--set", "colour=blue"], "unknown parameter 'colour'"),
        (["run", "smoke", "--set", "isolation=chaos"], "unknown isolation level 'chaos'"),
        (["bench", "--events", "-5"], "--events: events must be ≥ 1, got -5"),
        (["bench", "--repeat", "0"], "--repeat: repeat must be ≥ 1, got 0"),
        (["bench", "--stages", "--events", "0"], "events must be ≥ 1, got 0"),
    ],
)
def test_bad_input_gets_one_clear_line(args: list[str], message: str) -> None:
    proc = harness(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unreachable_service_is_named_not_traced(tmp_path: Path) -> None:
    proc = harness(
        "run",
        "smoke",
        "--out",
        str(tmp_path),
        env={"HARNESS_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert proc.returncode == 2
    assert "Redis at redis://127.0.0.1:1/0 is not answering" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow
def test_http_ingress_and_every_counter_strategy_hold_their_promises(
    settings: Settings, tmp_path: Path
) -> None:
    """Publishers post to an ingress-only service the harness starts; rmw at READ
    COMMITTED shows its expected anomaly without failing the run."""
    proc = harness(
        "run",
        "smoke",
        "--out",
        str(tmp_path),
        "--run-id",
        "r2",
        "--set",
        "events=4000",
        "--set",
        "consumers=4",
        "--set",
        "ingress=redis,http",
        "--set",
        "counter=atomic,rmw",
        "--set",
        "repeat=1",
        env=_env(settings),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = list(csv.DictReader((tmp_path / "smoke" / "r2" / "trials.csv").open()))
    assert [(r["ingress"], r["counter"]) for r in rows] == [
        ("redis", "atomic"),
        ("redis", "rmw"),
        ("http", "atomic"),
        ("http", "rmw"),
    ]
    for row in rows:
        assert row["invariant_ok"] == "True", row
        assert int(row["db_rows"]) == int(row["expected_unique"])  # data is always exact
        assert int(row["lost"]) == 0 and int(row["double_applied"]) == 0
        if row["counter"] == "atomic":
            assert int(row["received"]) == 4000 and row["anomaly"] == "False"
        elif row["anomaly"] == "True":  # a lost update, measured
            assert int(row["lost_updates"]) == 4000 - int(row["received"]) > 0


@pytest.mark.slow
def test_resume_runs_only_the_trials_not_recorded(settings: Settings, tmp_path: Path) -> None:
    common = ["--out", str(tmp_path), "--quick", "--set", "consumers=1,2", "--quiet"]
    first = harness("run", "smoke", "--run-id", "r", *common, env=_env(settings))
    assert first.returncode == 0, first.stdout + first.stderr
    trials_csv = tmp_path / "smoke" / "r" / "trials.csv"
    lines = trials_csv.read_text().splitlines(keepends=True)
    assert len(lines) == 3  # header + 2 trials; each with 2,000 events (--quick)
    assert [r["events"] for r in csv.DictReader(lines)] == ["2000", "2000"]
    trials_csv.write_text("".join(lines[:2]))  # as if stopped before the second trial

    again = harness("run", "smoke", "--resume", "r", *common, env=_env(settings))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 trial recorded, 1 to run" in again.stdout
    rows = list(csv.DictReader(trials_csv.open()))
    assert [r["consumers"] for r in rows] == ["1", "2"]
    assert all(r["invariant_ok"] == "True" for r in rows)

    other = harness("run", "smoke", "--resume", "r", "--out", str(tmp_path), env=_env(settings))
    assert other.returncode == 2 and "run with other parameters" in other.stderr


@pytest.mark.parametrize(
    ("fault", "servers"),
    [
        ("none", ""),
        ("pg-crash", ""),
        ("pg-failover", "pg_standby=sync"),
        ("redis-failover", "redis_replica=async"),
    ],
)
def test_ctrl_c_in_a_trial_stops_the_run_and_keeps_what_finished(
    settings: Settings, tmp_path: Path, fault: str, servers: str, trial_tmp: Path
) -> None:
    """Ctrl-C reaches the terminal's whole process group while the driver waits on its
    actors: the run ends with 130, says so, and marks itself interrupted (``--resume``
    then runs what it did not record). A trial on a PostgreSQL of its own (pg-crash), on
    a primary and its standby (pg-failover), or on a Redis primary with a replica and
    three Sentinels (redis-failover), leaves neither those servers nor their data
    folders behind."""
    args = ["run", "smoke", "--out", str(tmp_path), "--run-id", "i", "--quiet"]
    # a trial far too long to finish before the signal (its faults far off)
    slow = ["--set", "events=5000000", "--set", "batch_size=10", "--set", "publishers=1",
            "--set", f"fault={fault}", "--set", "faults=1"]  # fmt: skip
    slow += ["--set", servers] if servers else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args, *slow],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a driver that hangs is made to show where (faulthandler, on SIGABRT)
        env={**os.environ, **_env(settings), "PYTHONFAULTHANDLER": "1", "TMPDIR": str(trial_tmp)},
        start_new_session=True,  # its own process group, as a shell gives a job
    )
    stream = Keys(settings.key_prefix).stream
    try:
        deadline = time.monotonic() + 120
        while _stream_length(settings, trial_tmp, stream) < 10:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the trial did not start"
            time.sleep(0.2)
        time.sleep(1.0)  # the driver is in its polling loop, waiting on the actors
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGABRT)
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"the run did not stop within 120 s of Ctrl-C; where it was:\n{err}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out + err
    assert "interrupted" in out
    run = tmp_path / "smoke" / "i"
    assert json.loads((run / "meta.json").read_text())["status"] == "interrupted"
    assert not (run / "trials.csv").exists()  # no trial finished; the cut one is not kept
    assert _left_behind(trial_tmp) == []  # no trial server, no data folder


def _stream_length(settings: Settings, trial_tmp: Path, stream: str) -> int:
    """The trial's stream length: in the run's Redis, or in a trial's own replicated one
    (its servers' ports are in their config files in ``trial_tmp``)."""
    ports = [
        int(line.split()[1])
        for conf in trial_tmp.glob("harness-redis-*/node-*/redis.conf")
        for line in conf.read_text().splitlines()
        if line.startswith("port ")
    ]
    urls = [f"redis://127.0.0.1:{port}/0" for port in ports] or [settings.redis_url]
    longest = 0
    for url in urls:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        with contextlib.suppress(redis.RedisError, OSError):
            longest = max(longest, int(client.xlen(stream)))
        client.close()
    return longest


@pytest.mark.slow
def test_faults_lose_nothing_on_the_stream(settings: Settings, tmp_path: Path) -> None:
    proc = harness(
        "run",
        "smoke",
        "--out",
        str(tmp_path),
        "--run-id",
        "f",
        "--quiet",
        "--set",
        "rate=3000",
        "--set",
        "duration_s=5",
        "--set",
        "warmup_s=1",
        "--set",
        "faults=2",
        "--set",
        "fault=kill-consumer,pg-terminate,redis-client-kill,publisher-retry",
        "--set",
        "repeat=1",
        env=_env(settings),
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = list(csv.DictReader((tmp_path / "smoke" / "f" / "trials.csv").open()))
    assert [r["fault"] for r in rows] == [
        "kill-consumer",
        "pg-terminate",
        "redis-client-kill",
        "publisher-retry",
    ]
    for row in rows:
        assert row["invariant_ok"] == "True" and row["anomaly"] == "False", row
        assert int(row["faults_injected"]) == 2, row
        # under load every fault lands on work in flight: none tested nothing
        assert int(row["faults_missed"]) == 0 and int(row["in_flight_at_fault"]) > 0, row
        assert int(row["lost"]) == 0 and int(row["double_applied"]) == 0
        assert int(row["db_rows"]) == int(row["expected_unique"])
    killed = rows[0]
    assert int(killed["redelivered"]) > 0  # the killed consumers' entries came back
    retried = rows[3]
    assert int(retried["resent"]) > 0
    assert int(retried["received"]) == 15000 + int(retried["resent"])


@pytest.mark.slow
def test_a_paused_consumers_work_is_taken_over_and_applied_once(
    settings: Settings, tmp_path: Path
) -> None:
    """pause-consumer under load: each pause outlasts claim_idle_ms, so the paused
    consumer's peers take its entries over and apply them; it wakes and acknowledges
    them. Every other pause lands right after a commit, so a peer meets entries already
    applied: recognised, never applied twice. With the one counter row (atomic), a pause
    mid-transaction holds it, and its peers wait for it to wake."""
    proc = harness(
        "run", "smoke", "--out", str(tmp_path), "--run-id", "p", "--quiet",
        "--set", "rate=2000", "--set", "duration_s=9", "--set", "warmup_s=1",
        "--set", "fault=pause-consumer", "--set", "faults=2", "--set", "claim_idle_ms=500",
        "--set", "consumers=3", "--set", "repeat=1",
        env=_env(settings),
        timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = list(csv.DictReader((tmp_path / "smoke" / "p" / "trials.csv").open()))
    assert row["invariant_ok"] == "True" and row["anomaly"] == "False", row
    assert int(row["faults_injected"]) == 2 and int(row["faults_missed"]) == 0, row
    assert int(row["redelivered"]) > 0, row  # the zombie's work, recognised
    assert int(row["lost"]) == 0 and int(row["double_applied"]) == 0
    assert int(row["db_rows"]) == int(row["unique_processed"]) == int(row["expected_unique"])
    assert int(row["received"]) == int(row["unique_processed"]) + int(row["duplicate_dropped"])
    spans = [tuple(map(float, w.split("-"))) for w in row["fault_windows"].split(";")]
    assert len(spans) == 2
    for start, end in spans:  # each pause outlasted claim_idle_ms: 2 s (pause_s)
        assert end - start >= 1.9, spans
    assert spans[0][1] <= spans[1][0]  # one at a time


@pytest.mark.slow
def test_a_postgres_crash_loses_only_what_synchronous_commit_off_allows(
    settings: Settings, tmp_path: Path, trial_tmp: Path
) -> None:
    """pg-crash under load, on a PostgreSQL of the trial's own: with synchronous_commit
    on nothing is lost; with off, whatever is lost is a commit a consumer had been told
    succeeded (commit_lost), and nothing else. No server or data folder is left."""
    rows = _fault_trials(
        settings, tmp_path, trial_tmp, "synchronous_commit", "fault=pg-crash", "duration_s=6"
    )
    for row in rows.values():
        assert row["error"] == "" and int(row["double_applied"]) == 0, row
        assert int(row["faults_injected"]) == 2 and int(row["faults_missed"]) == 0, row
        assert int(row["lost"]) == int(row["commit_lost"]) + int(row["broker_lost"]), row
        assert int(row["db_rows"]) == int(row["unique_processed"])  # counters agree with rows
    safe, unsafe = rows["on"], rows["off"]
    assert safe["invariant_ok"] == "True" and safe["anomaly"] == "False", safe
    assert int(safe["lost"]) == 0 and safe["received"] == safe["events_published"], safe
    assert unsafe["invariant_ok"] == "True", unsafe  # a loss, if any, is the expected one
    assert _left_behind(trial_tmp) == []


@pytest.mark.slow
def test_a_failover_to_a_synchronous_standby_loses_nothing(
    settings: Settings, tmp_path: Path, trial_tmp: Path
) -> None:
    """pg-failover under load: the primary crashes and its standby is promoted, twice;
    the consumers find the new primary through their multi-host DSN. Synchronous: nothing
    lost. Asynchronous: whatever is lost is a commit the consumers were told succeeded."""
    rows = _fault_trials(
        settings, tmp_path, trial_tmp, "pg_standby", "fault=pg-failover", "duration_s=8"
    )
    for row in rows.values():
        assert row["error"] == "" and int(row["double_applied"]) == 0, row
        assert int(row["faults_injected"]) == 2 and int(row["faults_missed"]) == 0, row
        assert int(row["lost"]) == int(row["commit_lost"]), row
        assert all(d.startswith("standby ") for d in row["fault_details"].split(";")), row
    safe = rows["sync"]
    assert safe["invariant_ok"] == "True" and safe["anomaly"] == "False", safe
    assert int(safe["lost"]) == 0 and safe["received"] == safe["events_published"], safe
    assert rows["async"]["invariant_ok"] == "True", rows["async"]
    assert _left_behind(trial_tmp) == []


@pytest.mark.slow
def test_a_redis_failover_with_wait_loses_nothing(
    settings: Settings, tmp_path: Path, trial_tmp: Path
) -> None:
    """redis-failover under load: the primary is killed and the Sentinels promote its
    replica, twice; publishers and consumers find it through the Sentinels. With WAIT
    nothing is lost; asynchronous: whatever is lost is an XADD Redis had confirmed
    (broker_lost), and nothing is applied twice. No server or folder is left."""
    rows = _fault_trials(
        settings, tmp_path, trial_tmp, "redis_replica", "fault=redis-failover", "duration_s=12"
    )
    for row in rows.values():
        assert row["error"] == "" and int(row["double_applied"]) == 0, row
        assert int(row["faults_injected"]) == 2 and int(row["faults_missed"]) == 0, row
        assert int(row["lost"]) == int(row["broker_lost"]), row
        assert int(row["db_rows"]) == int(row["unique_processed"])  # counters agree with rows
        details = row["fault_details"].split(";")
        assert all(re.fullmatch(r"replica [\d,]+ B unacknowledged, ≥ [\d,]+ B missing", d)
                   for d in details), row  # fmt: skip
    safe = rows["wait"]
    assert safe["invariant_ok"] == "True" and safe["anomaly"] == "False", safe
    assert int(safe["lost"]) == 0 and safe["received"] == safe["events_published"], safe
    assert rows["async"]["invariant_ok"] == "True", rows["async"]
    assert _left_behind(trial_tmp) == []


#: the values of each axis the fault tests sweep
SETTINGS = {
    "synchronous_commit": "on,off",
    "pg_standby": "async,sync",
    "redis_replica": "async,wait",
}


def _fault_trials(
    settings: Settings, out: Path, trial_tmp: Path, axis: str, *sets: str
) -> dict[str, dict[str, str]]:
    """A smoke run under 3,000 events/s with two faults, once per value of ``axis``, its
    servers' folders in ``trial_tmp``; its trials by that value."""
    flags = [x for kv in ("rate=3000", "warmup_s=1", "faults=2", "repeat=1", *sets,
                          f"{axis}={SETTINGS[axis]}") for x in ("--set", kv)]  # fmt: skip
    proc = harness(
        "run", "smoke", "--out", str(out), "--run-id", "f", "--quiet", *flags,
        env={**_env(settings), "TMPDIR": str(trial_tmp)}, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {r[axis]: r for r in csv.DictReader((out / "smoke" / "f" / "trials.csv").open())}


def _processes() -> list[str]:
    """Every process's command line, and the folder it works in (redis-server renames
    itself ``redis-server host:port``, but works in its ``--dir``)."""
    lines = []
    for proc in glob.glob("/proc/[0-9]*"):
        with contextlib.suppress(OSError):
            cmdline = Path(proc, "cmdline").read_bytes().replace(b"\0", b" ")
            lines.append(f"{cmdline.decode(errors='replace')} (in {os.readlink(proc + '/cwd')}/)")
    return lines


@pytest.mark.slow
def test_bench_runs_every_part_and_verifies_them(settings: Settings, tmp_path: Path) -> None:
    proc = harness(
        "bench",
        "--quick",
        "--events",
        "5000",
        "--repeat",
        "2",
        "--out",
        str(tmp_path),
        "--run-id",
        "b",
        env=_env(settings),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "round 2:" in proc.stdout and "of the medians" in proc.stdout
    result = json.loads((tmp_path / "bench" / "b" / "bench.json").read_text())
    rounds = [[m for m in result["measurements"] if m["round"] == r] for r in (0, 1)]
    for measured_in_round in rounds:
        measured = {m["key"]: m for m in measured_in_round}
        assert sorted(measured) == ["a", "b", "c", "d", "e", "f"]
        assert all(m["verified"] and m["events_per_s"] > 0 for m in measured.values())
        assert (measured["a"]["events"], measured["b"]["events"]) == (5000, 2000)
    c = [m["events_per_s"] for m in result["measurements"] if m["key"] == "c"]
    a = [m["events_per_s"] for m in result["measurements"] if m["key"] == "a"]
    assert result["ratios"]["c/a"] == pytest.approx((sum(c) / 2) / (sum(a) / 2))
    assert len(result["round_ratios"]) == 2
    assert result["environment"]["cpu_count"] and result["servers"]["postgresql"]
    assert [t["name"] for t in result["targets"]] == ["c/a", "c/b", "d/b", "e/f", "(c) events/s"]
    # (e) and (f) differ only in recognising redeliveries, and took turns going first
    e_f = [m["key"] for m in result["measurements"] if m["key"] in "ef"]
    assert e_f == ["e", "f", "f", "e"]
    assert "targets: c/a" in proc.stdout
    plots = tmp_path / "bench" / "b" / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["bench_cpu.png", "bench_throughput.png"]
    for chart in plots.iterdir():
        chart.unlink()
    redrawn = harness("plot", str(tmp_path / "bench" / "b"))
    assert redrawn.returncode == 0, redrawn.stderr
    assert sorted(p.name for p in plots.iterdir()) == ["bench_cpu.png", "bench_throughput.png"]


def test_bench_stages_times_each_step_and_writes_them(settings: Settings, tmp_path: Path) -> None:
    proc = harness(
        "bench",
        "--stages",
        "--quick",
        "--out",
        str(tmp_path),
        "--run-id",
        "s",
        env=_env(settings),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "consumer, in all" in proc.stdout and "a round trip costs the client" in proc.stdout
    result = json.loads((tmp_path / "stages" / "s" / "stages.json").read_text())
    assert [s["step"] for s in result["steps"]] == [
        "encode",
        "xadd",
        "read",
        "decode",
        "prepare",
        "apply",
    ]
    assert all(s["events"] == 20_000 and s["cpu_us"] > 0 for s in result["steps"])
    assert result["round_trip_cpu_us"]["pg"] > 0
