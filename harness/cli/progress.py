"""What the user sees while a run goes: a live line per trial, a summary table at the end."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from harness.trials.params import Trial
from harness.trials.results import TrialResult
from harness.trials.state import Sample


def describe(trial: Trial, varying: Sequence[str]) -> str:
    p = trial.params
    shown = varying or ("publishers", "consumers", "isolation", "batch_size")
    parts = [f"{name}={getattr(p, name)}" for name in shown]
    if trial.repeat:
        parts.append(f"repeat={trial.repeat}")
    return " ".join(parts)


class LiveProgress:
    """A rich live line while each trial runs; one printed line when it ends."""

    def __init__(self, console: Console, varying: Sequence[str] = ()) -> None:
        self.console = console
        self.varying = tuple(varying)
        self._live: Live | None = None
        self._label = ""
        self._last: Sample | None = None
        self._rate_from: Sample | None = None

    def trial_started(self, trial: Trial, position: int, total: int) -> None:
        count = f"{position}/{total}" if total > 0 else str(position)
        self._label = f"[{count}] {describe(trial, self.varying)}"
        self._last = self._rate_from = None
        self._live = Live(
            Text(f"{self._label}  starting…"),
            console=self.console,
            refresh_per_second=8,
            transient=True,
        )
        self._live.start()

    def update(self, sample: Sample) -> None:
        base = self._rate_from
        if base is None or sample.elapsed_s - base.elapsed_s > 2.0:
            self._rate_from = base = self._last or sample
        span = sample.elapsed_s - base.elapsed_s
        pub_rate = (sample.published - base.published) / span if span > 0 else 0.0
        com_rate = (sample.committed - base.committed) / span if span > 0 else 0.0
        self._last = sample
        phase = "" if sample.phase == "burst" else f"{PHASES.get(sample.phase, sample.phase)}  "
        if self._live is not None:
            self._live.update(
                Text(
                    f"{self._label}  {phase}{sample.elapsed_s:5.1f}s  "
                    f"published {sample.published:,} "
                    f"({pub_rate:,.0f}/s)  committed {sample.committed:,} ({com_rate:,.0f}/s)  "
                    f"backlog {sample.backlog:,}  retries {sample.retries:,}"
                )
            )

    def trial_finished(self, result: TrialResult) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        verdict = _verdict_text(result)
        self.console.print(f"{self._label}  {finished_line(result)}  {verdict}", highlight=False)


#: how the live line names a phase of an open-loop trial
PHASES = {"warmup": "warming up", "window": "measuring", "drain": "draining"}


def finished_line(result: TrialResult) -> str:
    """What a finished trial did, in one line: the window's figures for an open-loop
    trial, the burst's for the others."""
    st = result.steady
    if st.sustained is None:
        return (
            f"{result.events_published:,} events in {result.elapsed_s:.2f}s "
            f"= {result.throughput_eps:,.0f} events/s, p99 {_ms(result.latency_p99_ms)}"
        )
    held = (
        "[green]sustained[/green]"
        if st.sustained
        else "[yellow]not sustained[/yellow] (" + "; ".join(st.not_sustained) + ")"
    )
    return (
        f"offered {st.offered_eps:,.0f}/s: committed {st.steady_eps:,.0f}/s over a "
        f"{st.window_s:g} s window, p50 {_ms(st.steady_p50_ms)}, p99 {_ms(st.steady_p99_ms)}, "
        f"p99.9 {_ms(st.steady_p999_ms)}; {held}"
    )


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:,.1f} ms"


def _num(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:,.1f}"


def summary_table(results: Sequence[TrialResult], varying: Sequence[str]) -> Table:
    table = Table(title="Trials", show_lines=False)
    columns = list(varying) or ["publishers", "consumers", "isolation", "batch_size"]
    for name in columns:
        table.add_column(name)
    open_loop = any(r.steady.sustained is not None for r in results)
    for name in (
        "events",
        "received",
        "unique",
        "duplicate",
        "rows",
        "lost",
        "twice",
        "events/s",
        "p50 ms",
        "p99 ms",
        "retries",
        *(["sustained"] if open_loop else []),
        "invariants",
    ):
        table.add_column(name, justify="right")
    if open_loop:
        table.caption = "events/s, p50 and p99: the measured window of open-loop trials"
    for r in results:
        ok = {
            "holds": "[green]hold[/green]",
            "anomaly": f"[yellow]anomaly −{r.lost_updates:,}[/yellow]",
        }.get(r.verdict, "[red]FAIL[/red]")
        table.add_row(
            *(str(getattr(r.trial.params, c)) for c in columns),
            f"{r.events_published:,}",
            f"{r.received:,}",
            f"{r.unique_processed:,}",
            f"{r.duplicate_dropped:,}",
            f"{r.db_rows:,}",
            str(r.lost),
            str(r.double_applied),
            *_speed(r),
            str(r.retries),
            *([_sustained(r)] if open_loop else []),
            ok,
        )
    return table


def _speed(r: TrialResult) -> tuple[str, str, str]:
    """events/s, p50 and p99: the window's for an open-loop trial, else the whole trial's."""
    st = r.steady
    if st.sustained is None:
        return f"{r.throughput_eps:,.0f}", _num(r.latency_p50_ms), _num(r.latency_p99_ms)
    return f"{st.steady_eps:,.0f}", _num(st.steady_p50_ms), _num(st.steady_p99_ms)


def _sustained(r: TrialResult) -> str:
    if r.steady.sustained is None:
        return "–"
    return "[green]yes[/green]" if r.steady.sustained else "[yellow]no[/yellow]"


def conclude(
    console: Console, out: Path, finished: Sequence[TrialResult], *, interrupted: bool
) -> str:
    """Write the run's report, say how it ended, and return how: ``interrupted``,
    ``failed`` (a trial broke an invariant), ``missed`` (a fault hit nothing in flight, so
    its trial tested nothing) or ``ok``."""
    if finished:
        from harness.analysis import report

        try:
            console.print(f"report: {report.write_report(out)}, charts in {out}/plots/")
        except Exception as exc:  # the results are safe on disk; say what went wrong
            console.print(f"[yellow]charts and report not written[/yellow]: {exc!r}")
    if interrupted:
        console.print("[yellow]interrupted[/yellow]: the trials finished so far are written")
        return "interrupted"
    failed = [r for r in finished if not r.invariant_ok]
    if failed:
        console.print(
            f"[bold red]{len(failed)} of {len(finished)} trials broke an invariant[/bold red]"
        )
        return "failed"
    missed = [r for r in finished if r.faults_missed]
    if missed:
        console.print(
            f"[bold red]{len(missed)} of {len(finished)} trials had a fault that hit nothing "
            "in flight[/bold red] (trials " + ", ".join(str(r.trial.index) for r in missed) + "): "
            "those faults tested nothing. A failure of the experiment, not of the system: "
            "offer more load (rate) so that work is in flight when they land."
        )
        return "missed"
    anomalous = [r for r in finished if r.anomalies]
    if anomalous:
        console.print(
            f"[green]no invariant broken[/green] that the designs promise; "
            f"[yellow]{len(anomalous)} trial{'s' if len(anomalous) != 1 else ''} showed the "
            "anomaly expected of their design (a counter strategy's lost updates, or what "
            "their broker or durability settings admit to lose)[/yellow]"
        )
        return "ok"
    console.print(f"[green]all {len(finished)} trials hold every invariant[/green]")
    return "ok"


def _verdict_text(result: TrialResult) -> str:
    """The live line's words for a trial's verdict (:func:`harness.trials.results.verdict`)."""
    p = result.trial.params
    if result.verdict == "anomaly" and result.lost:
        cause = f"under {p.fault}" if p.fault != "none" else "(batches abandoned after retries)"
        return (
            f"[yellow]expected loss[/yellow] of the {p.broker} broker {cause}: "
            f"{result.lost:,} events lost"
        )
    if result.verdict == "anomaly":
        return (
            f"[yellow]expected anomaly[/yellow] ({p.counter} at {p.isolation}): "
            f"{result.lost_updates:,} updates lost; stored data exact"
        )
    if result.verdict == "holds" and result.faults_missed:
        return (
            f"invariants hold, [bold red]but {result.faults_missed} of its faults hit "
            "nothing in flight[/bold red]"
        )
    if result.verdict == "holds":
        return "[green]invariants hold[/green]"
    return "[bold red]FAILED[/bold red]: " + (result.error or "; ".join(result.violations))
