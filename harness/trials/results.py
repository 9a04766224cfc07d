"""Trial results: one frozen record per trial, ``trials.csv`` and ``meta.json`` on disk.

``load(path)`` is the public way to read a run back (notebooks, plots, reports).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Any

from harness.model.steady import SteadyState
from harness.trials import meta as meta_mod
from harness.trials import roles
from harness.trials.meta import RESULTS_FORMAT, Meta, now_iso
from harness.trials.params import Trial

__all__ = ["RESULTS_FORMAT", "Meta", "Run", "RunWriter", "TrialResult", "load", "now_iso"]


#: what a trial's checks concluded, worst first
VERDICTS = ("did not finish", "violation", "anomaly", "holds")


def verdict(*, error: str, invariant_ok: bool, anomalous: bool) -> str:
    """The verdict of a trial (one of :data:`VERDICTS`): ``did not finish`` (an error),
    ``violation`` (an invariant broke), ``anomaly`` (what its design is known to lose:
    a counter strategy's lost updates, the list broker's events) or ``holds``. The one
    place a verdict is decided: the live line, the summary table and the analysis ask it."""
    if error:
        return "did not finish"
    if not invariant_ok:
        return "violation"
    return "anomaly" if anomalous else "holds"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrialResult:
    trial: Trial
    events_published: int
    expected_unique: int
    received: int
    unique_processed: int
    duplicate_dropped: int
    db_rows: int
    lost: int
    unexpected: int
    double_applied: int
    #: events in deliveries recognised as applied before and skipped (a redelivery after
    #: a kill, a reclaim or a Redis restart; a publisher's retry with the same
    #: identities): ``event_stats.redelivered``, counted in the transactions themselves
    redelivered: int
    rejected: int
    elapsed_s: float
    #: wall clock (ns since the epoch) of the first publish and the last commit, the span
    #: ``elapsed_s`` measures; 0 when unknown. Not written to trials.csv.
    started_ns: int = 0
    ended_ns: int = 0
    #: time to empty the table, zero the counters and recreate the stream and group
    reset_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    retries: int
    serialization_failures: int
    deadlocks: int
    connection_retries: int
    #: broken invariants, one line each; empty when the trial holds
    violations: tuple[str, ...] = ()
    #: counter breaks expected of the trial's counter strategy at its isolation level
    anomalies: tuple[str, ...] = ()
    #: events whose count in ``received`` a lost update overwrote (see invariants.Verdict)
    lost_updates: int = 0
    #: faults injected in the trial (see harness.trials.faults)
    faults_injected: int = 0
    #: what the faults found in flight when they landed, summed (entries held, open
    #: transactions, … by kind: see ``Runner._inject``)
    in_flight_at_fault: int = 0
    #: faults that found nothing in flight: the trial tested nothing with them
    faults_missed: int = 0
    #: each fault's span, ``start-end`` seconds since the trial's origin, ``;`` between
    fault_windows: str = ""
    #: what each fault found, in words (a standby's lag, what a pause's peers took
    #: over), ``;`` between
    fault_details: str = ""
    #: events publishers sent again as new after a reply was lost on purpose (receipts)
    resent: int = 0
    #: events whose publish outcome was unknown (a connection error), sent again with
    #: the same identities, stored
    recovered: int = 0
    #: events Redis confirmed to a publisher that never reached the store: their entries'
    #: identities are not among the applied ones (redis-restart: an AOF that had not
    #: synced them)
    broker_lost: int = 0
    #: lost events a consumer had been told were committed: the database took the commit
    #: back (pg-crash with synchronous_commit = off)
    commit_lost: int = 0
    #: Ray nodes the trial's publishers and consumers ran on
    nodes: int = 0
    #: peak resident memory of the driver and the trial's actors, summed (MiB)
    rss_peak_mb: float = math.nan
    #: Redis used_memory, the highest the driver saw (sampled each second, MiB)
    redis_peak_mb: float = math.nan
    #: the measured window of an open-loop trial (all NaN for a burst)
    steady: SteadyState = dataclasses.field(default_factory=SteadyState)
    error: str | None = None

    @property
    def invariant_ok(self) -> bool:
        return not self.violations and self.error is None

    @property
    def verdict(self) -> str:
        return verdict(
            error=self.error or "",
            invariant_ok=self.invariant_ok,
            anomalous=bool(self.anomalies) or self.lost_updates > 0,
        )

    @property
    def throughput_eps(self) -> float:
        return self.events_published / self.elapsed_s if self.elapsed_s > 0 else math.nan

    def row(self) -> dict[str, Any]:
        p = self.trial.params
        return {
            "trial": self.trial.index,
            "trial_id": self.trial.trial_id,
            "repeat": self.trial.repeat,
            "seed": self.trial.seed,
            "role": self.trial.role.name,
            **dataclasses.asdict(p),
            "events_published": self.events_published,
            "expected_unique": self.expected_unique,
            "received": self.received,
            "unique_processed": self.unique_processed,
            "duplicate_dropped": self.duplicate_dropped,
            "db_rows": self.db_rows,
            "lost": self.lost,
            "unexpected": self.unexpected,
            "double_applied": self.double_applied,
            "redelivered": self.redelivered,
            "rejected": self.rejected,
            "faults_injected": self.faults_injected,
            "in_flight_at_fault": self.in_flight_at_fault,
            "faults_missed": self.faults_missed,
            "fault_windows": self.fault_windows,
            "fault_details": self.fault_details,
            "resent": self.resent,
            "recovered": self.recovered,
            "broker_lost": self.broker_lost,
            "commit_lost": self.commit_lost,
            "nodes": self.nodes,
            "rss_peak_mb": round(self.rss_peak_mb, 1),
            "redis_peak_mb": round(self.redis_peak_mb, 1),
            "invariant_ok": self.invariant_ok,
            "anomaly": bool(self.anomalies),
            "lost_updates": self.lost_updates,
            "elapsed_s": round(self.elapsed_s, 4),
            "throughput_eps": round(self.throughput_eps, 1),
            "reset_s": round(self.reset_s, 4),
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "latency_max_ms": self.latency_max_ms,
            **self.steady.row(),
            "retries": self.retries,
            "serialization_failures": self.serialization_failures,
            "deadlocks": self.deadlocks,
            "connection_retries": self.connection_retries,
            "violations": " | ".join(self.violations),
            "anomalies": " | ".join(self.anomalies),
            "error": self.error or "",
        }


def resolved_trials(trials: list[Trial]) -> list[dict[str, Any]]:
    """What meta.json records of each planned trial: its id, repeat, seed and parameters."""
    return [
        {
            "trial": t.index,
            "trial_id": t.trial_id,
            "repeat": t.repeat,
            "seed": t.seed,
            "params": dataclasses.asdict(t.params),
        }
        for t in trials
    ]


class RunWriter:
    """Writes one run's folder as it goes: a row per finished trial, meta at start and end."""

    def __init__(self, directory: Path, meta: Meta) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=False)
        self.meta = meta
        meta_mod.write(directory, meta)
        self._csv = directory / "trials.csv"
        self._timeseries = directory / "timeseries.csv"
        self._columns: list[str] | None = None

    @classmethod
    def resume(cls, directory: Path) -> tuple[RunWriter, set[str]]:
        """Reopen a run folder to add trials; also returns the trial ids recorded there."""
        meta = meta_mod.read(directory)
        if meta.results_format != RESULTS_FORMAT:
            raise meta_mod.MetaError(
                f"{directory} is of results format {meta.results_format}, whose trials.csv "
                f"has other columns than format {RESULTS_FORMAT}'s; it cannot be resumed"
            )
        writer = cls.__new__(cls)
        writer.directory = directory
        writer.meta = meta.replace(
            results_format=RESULTS_FORMAT, resumed=[*meta.resumed, now_iso()]
        )
        writer._csv = directory / "trials.csv"
        writer._timeseries = directory / "timeseries.csv"
        writer._columns = None
        recorded: set[str] = set()
        indexes: set[str] = set()
        if writer._csv.exists():
            with writer._csv.open(newline="") as f:
                reader = csv.DictReader(f)
                writer._columns = list(reader.fieldnames or []) or None
                for row in reader:
                    recorded.add(row["trial_id"])
                    indexes.add(row["trial"])
        if writer._timeseries.exists():
            # drop samples of trials that never got their row (interrupted mid-trial)
            with writer._timeseries.open(newline="") as f:
                reader = csv.DictReader(f)
                fields, kept = reader.fieldnames, [r for r in reader if r["trial"] in indexes]
            with writer._timeseries.open("w", newline="") as f:
                out = csv.DictWriter(f, fieldnames=list(fields or []))
                out.writeheader()
                out.writerows(kept)
        meta_mod.write(directory, writer.meta)
        return writer, recorded

    def add(self, result: TrialResult, timeseries: list[dict[str, Any]]) -> None:
        row = result.row()
        new = self._columns is None
        columns = self._columns = self._columns or list(row)
        with self._csv.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            if new:
                writer.writeheader()
            writer.writerow(row)
        if timeseries:
            first = not self._timeseries.exists()
            with self._timeseries.open("a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["trial", *timeseries[0]])
                if first:
                    writer.writeheader()
                for sample in timeseries:
                    writer.writerow({"trial": result.trial.index, **sample})

    def finish(self, **changes: Any) -> None:
        """Record how the run ended (``status``, ``ray``, ``trials_run``: fields of
        :class:`Meta`) and when."""
        self.meta = self.meta.replace(**changes, finished=now_iso())
        meta_mod.write(self.directory, self.meta)


@dataclasses.dataclass(frozen=True)
class Run:
    """A run read back from disk, upgraded to the current format."""

    path: Path
    meta: Meta
    trials: Any  # pandas.DataFrame
    timeseries: Any  # pandas.DataFrame (empty when none was recorded)
    #: ``capacity.csv`` of a capacity search (``harness capacity``); empty otherwise
    capacity: Any = None

    @property
    def mode(self) -> str:
        """What made the run: ``sweep`` (``harness run``) or ``capacity`` (a search)."""
        return self.meta.mode

    @property
    def is_capacity(self) -> bool:
        return self.meta.is_capacity


def load(path: str | Path) -> Run:
    """Read a run folder (``results/<experiment>/<run_id>``) into pandas frames."""
    import pandas as pd

    path = Path(path)
    meta, csv_file = meta_mod.read(path), path / "trials.csv"
    trials = pd.read_csv(csv_file) if csv_file.exists() else pd.DataFrame()
    trials = trials.rename(columns=meta_mod.RENAMED_COLUMNS.get(meta.results_format, {}))
    trials = _with_roles(trials, meta)
    ts_file = path / "timeseries.csv"
    timeseries = pd.read_csv(ts_file) if ts_file.exists() else pd.DataFrame()
    cap_file = path / "capacity.csv"
    capacity = pd.read_csv(cap_file) if cap_file.exists() else pd.DataFrame()
    return Run(path=path, meta=meta, trials=trials, timeseries=timeseries, capacity=capacity)


def _with_roles(trials: Any, meta: Meta) -> Any:
    """``trials`` with its ``role`` column: as recorded (results format 3 on), or for an
    older run as its rates and mode tell (a capacity search's open-loop trials as steps)."""
    if trials.empty or "role" in trials:
        return trials
    burst, rated = (roles.PROBE, roles.STEP) if meta.is_capacity else (roles.BURST, roles.OPEN_LOOP)
    import pandas as pd

    rates = pd.to_numeric(trials.get("rate", pd.Series(0, index=trials.index)), errors="coerce")
    where = trials.columns.get_loc("seed") + 1 if "seed" in trials else 0
    trials.insert(where, "role", (rates > 0).map({True: rated.name, False: burst.name}))
    return trials
