"""``python -m harness service-bench``: its flags, its progress, its table and its files."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from harness.bench.service import (
    FORMAT,
    OPEN_LOOP,
    SEED,
    TARGETS,
    WARMUP,
    Figures,
    Measurement,
    ServiceBenchConfig,
    held,
    parse_rates,
    shortfalls,
)
from harness.cli import common
from harness.cli.common import ConfigFlag
from harness.infra import environment
from harness.infra.config import Settings

if TYPE_CHECKING:
    from harness.bench.service_targets import Names

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: the flags that set a field of :class:`ServiceBenchConfig` (the defaults are its)
FLAGS = {
    "step_seconds": ConfigFlag("step_s", "seconds at each rate of the ladder"),
    "warmup_seconds": ConfigFlag(
        "warmup_s", "open-loop load at the lowest rate before measuring, thrown away"
    ),
    "slo_ms": ConfigFlag("slo_p99_ms", "the p99 a rate must keep to, ms"),
    "max_lost": ConfigFlag(
        "max_lost",
        "share of iterations dropped, or of requests failed, from which a rate is not held",
    ),
    "all_rates": ConfigFlag(
        "all_rates",
        "climb the whole ladder (by default a target stops at the first rate it misses)",
    ),
    "consumers": ConfigFlag("consumers", "harness serve's consumer processes"),
    "workers": ConfigFlag("workers", "harness serve's HTTP worker processes"),
    "drain_timeout": ConfigFlag(
        "drain_timeout_s", "seconds to wait for s1 to store what it accepted"
    ),
}
RESULTS = "service-bench.json"


def arguments(parser: argparse.ArgumentParser) -> None:
    """The command's flags (defaults: :class:`ServiceBenchConfig`)."""
    d = ServiceBenchConfig()
    parser.add_argument(
        "--quick",
        action="store_true",
        help="seconds, not minutes: the seed's stages at scale 0.05 (6 s), rates 250,500,1000 "
        "for 3 s each, a 1 s warm-up (other flags override)",
    )
    parser.add_argument(
        "--rates",
        help=f"the open-loop ladder, requests/s ({','.join(str(r) for r in d.rates)})",
    )
    parser.add_argument(
        "--scale",
        type=float,
        help=f"the seed scenario's stages times this ({d.scale:g}: {d.seed_s:.0f} s a target)",
    )
    common.config_flags(parser, d, FLAGS)
    parser.add_argument("--out", help="results folder (default: results/, HARNESS_RESULTS_DIR)")
    parser.add_argument("--run-id", help="name of the run folder (default: a UTC time stamp)")
    group = parser.add_argument_group("services (flags override HARNESS_* variables)")
    group.add_argument("--pg-dsn", help="PostgreSQL DSN (HARNESS_PG_DSN)")
    group.add_argument("--redis-url", help="Redis URL (HARNESS_REDIS_URL)")


def config_from(args: argparse.Namespace) -> ServiceBenchConfig:
    """The configuration the flags ask for; ``ValueError`` naming the flag at fault."""
    cfg = ServiceBenchConfig()
    if args.quick:
        cfg = cfg.quick()
    changes: list[tuple[str, str, Any]] = []
    if args.rates is not None:
        try:
            changes.append(("rates", "rates", parse_rates(args.rates)))
        except ValueError as exc:
            raise ValueError(f"--rates: {exc}") from None
    if args.scale is not None:
        changes.append(("scale", "scale", args.scale))
    for flag, field, value in changes:
        try:
            cfg = dataclasses.replace(cfg, **{field: value})
        except ValueError as exc:
            raise ValueError(f"--{flag.replace('_', '-')}: {exc}") from None
    return common.configured(cfg, args, FLAGS)  # a UsageError is a ValueError


class LiveReporter:
    """Progress on a terminal: a bar for the k6 run going on (its requests so far and their
    rate), a spinner while a target starts or drains; lines above it. Off a terminal,
    a line when each k6 run starts."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[extra]}"),
            console=console,
            transient=True,
        )
        self.task: TaskID = self.progress.add_task("", total=None, extra="", visible=False)
        self._expected = 0.0
        self._label = ""

    def __enter__(self) -> LiveReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def say(self, text: str) -> None:
        self.progress.console.print(text, soft_wrap=True, highlight=False)

    def k6_started(self, label: str, expected_s: float) -> None:
        self._label, self._expected = label, expected_s
        self.progress.update(
            self.task, description=label, total=expected_s, completed=0, extra="", visible=True
        )
        if not self.console.is_terminal:
            self.say(f"[dim]{label}: k6 running, about {expected_s:,.0f} s[/dim]")

    def k6_tick(self, elapsed_s: float, requests: int | None) -> None:
        extra = f"{elapsed_s:,.0f}/{self._expected:,.0f} s"
        if requests is not None and elapsed_s > 0:
            extra += f"  {requests:,} requests, {requests / elapsed_s:,.0f}/s"
        self.progress.update(
            self.task, completed=min(elapsed_s, self._expected), extra=extra, visible=True
        )

    def k6_finished(self) -> None:
        self.progress.update(self.task, visible=False)

    def waiting(self, text: str) -> None:
        if text:
            self.progress.update(self.task, description=text, total=None, extra="", visible=True)
        else:
            self.progress.update(self.task, visible=False)


def _ms(value: float) -> str:
    return f"{value:,.1f}"


def table(measured: list[Measurement], cfg: ServiceBenchConfig) -> Table:
    """Every k6 run but the warm-ups: what k6 measured, and whether it was verified."""
    out = Table(
        title=f"service bench: s0 {TARGETS['s0']}, s1 {TARGETS['s1']} "
        f"({cfg.workers} HTTP workers, {cfg.consumers} consumers); seed.js at scale "
        f"{cfg.scale:g}, open loop "
        f"{cfg.step_s:g} s a rate, held = p99 ≤ {cfg.slo_p99_ms:g} ms, "
        f"< {100 * cfg.max_lost:g}% dropped and failed"
    )
    columns = (
        "target", "scenario", "requests", "requests/s", "p50 ms", "p95 ms", "p99 ms",
        "failed", "dropped", "held", "cores: k6/target/all", "verified",
    )  # fmt: skip
    for column in columns:
        out.add_column(column, justify="left" if column in ("target", "scenario") else "right")
    for m in measured:
        if m.scenario == WARMUP:
            continue
        s = m.summary
        cores = m.cores()
        out.add_row(
            m.target,
            "seed.js" if m.scenario == SEED else f"open {m.rate:,}/s",
            f"{s.requests:,}",
            f"{s.requests_per_s:,.0f}",
            _ms(s.p50_ms),
            _ms(s.p95_ms),
            _ms(s.p99_ms),
            f"{100 * s.error_rate:.2f}%",
            "" if m.scenario == SEED else f"{100 * s.dropped_share:.2f}%",
            ""
            if m.scenario == SEED
            else ("yes" if held(m, cfg) else f"[red]no[/red]: {'; '.join(shortfalls(m, cfg))}"),
            f"{cores['k6']:.2f}/{cores['target']:.2f}/{cores['machine']:.2f}",
            "yes" if m.verified else "[red]NO[/red]",
        )
    return out


def _figure(value: float | None, fmt: str = ",.0f") -> str:
    return "—" if value is None else format(value, fmt)


def headline(figures: Figures, cfg: ServiceBenchConfig) -> list[str]:
    """The seed scenario's s1/s0, and the highest rate each held and s1/s0."""
    s0, s1 = figures.seed_rps["s0"], figures.seed_rps["s1"]
    lines = [
        f"seed scenario (closed loop, up to 100 VUs): s1 {_figure(s1)} / s0 {_figure(s0)} "
        f"requests/s = [bold]{_figure(figures.seed_ratio, '.2f')}[/bold]"
    ]
    rates = "  ".join(
        f"{key} none (not even {cfg.rates[0]:,}/s)"
        if rate is None
        else f"{key} {rate:,}/s"
        + (" (the top of the ladder: may hold more)" if figures.at_top[key] else "")
        for key, rate in figures.highest.items()
    )
    lines.append(
        f"highest rate held (p99 ≤ {cfg.slo_p99_ms:g} ms, < {100 * cfg.max_lost:g}% dropped "
        f"and failed): {rates}; s1/s0 = [bold]{_figure(figures.rate_ratio, '.2f')}[/bold]"
    )
    return lines


def _record(m: Measurement, cfg: ServiceBenchConfig) -> dict[str, Any]:
    out = m.to_dict()
    out["cores"] = m.cores()
    if m.scenario == OPEN_LOOP:
        out["held"] = held(m, cfg)
        out["shortfalls"] = shortfalls(m, cfg)
    return out


def main(args: argparse.Namespace, console: Console) -> int:
    from harness.bench import k6
    from harness.infra import embedded
    from harness.infra import health as services

    err = Console(stderr=True, highlight=False)

    def fail(message: object) -> int:
        err.print(f"[bold red]error:[/bold red] {escape(str(message))}", soft_wrap=True)
        return EXIT_USAGE

    try:
        cfg = config_from(args)
        k6.binary()
        for name in ("seed.js", "open_loop.js"):
            k6.script(name)
    except (ValueError, FileNotFoundError) as exc:
        return fail(exc)
    base = Settings.from_env(pg_dsn=args.pg_dsn, redis_url=args.redis_url, results_dir=args.out)
    try:
        out = common.new_run_dir(base, "service-bench", args.run_id)
    except common.UsageError as exc:
        return fail(exc)
    run_id = out.name
    explicit = embedded.configured({"pg_dsn": args.pg_dsn, "redis_url": args.redis_url})
    try:
        stack = contextlib.ExitStack()
        settings, versions = stack.enter_context(
            embedded.services_or_embedded(
                base, explicit=explicit, say=lambda line: console.print(line, soft_wrap=True)
            )
        )
    except (services.ServiceUnavailable, embedded.EmbeddedError) as exc:
        return fail(exc)
    with stack:
        run = _run(settings, cfg, out, run_id, console)
    if run.problem:
        err.print(f"[bold red]the run failed:[/bold red] {escape(run.problem)}", soft_wrap=True)
    figures = Figures.of(run.measured, cfg)
    if run.measured:
        console.print(table(run.measured, cfg))
        for line in headline(figures, cfg):
            console.print(line, soft_wrap=True)
    for m in run.unverified:
        err.print(
            f"[red]unverified[/red]: {m.target} {m.scenario} "
            f"{'' if m.rate is None else m.rate}: {m.detail}",
            soft_wrap=True,
        )
    (out / RESULTS).write_text(json.dumps(_results(run, cfg, figures, versions), indent=2))
    console.print(f"results: {out / RESULTS} (k6's summaries and logs, the targets' logs: raw/)")
    if run.measured:
        from harness.bench import service_plots

        common.draw_charts(service_plots.write, out, console)
    if run.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK if run.status == "complete" and run.verified else EXIT_FAILED


@dataclasses.dataclass
class _Run:
    """What a run measured, and how it ended."""

    run_id: str
    settings: Settings
    names: Names
    started: str
    measured: list[Measurement] = dataclasses.field(default_factory=list)
    targets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: the machine's CPU in use just before the run, % of all cores (other tenants)
    busy_before: float = 0.0
    #: complete, interrupted (Ctrl-C, SIGTERM) or failed (``problem`` says why)
    status: str = "complete"
    problem: str = ""

    @property
    def unverified(self) -> list[Measurement]:
        return [m for m in self.measured if not m.verified]

    @property
    def verified(self) -> bool:
        return bool(self.measured) and not self.unverified


def _run(
    settings: Settings, cfg: ServiceBenchConfig, out: Path, run_id: str, console: Console
) -> _Run:
    """Measure both targets, with live progress; what was measured however it ends."""
    import httpx
    import psycopg
    import redis

    from harness.bench import k6
    from harness.bench import service_run as service_bench_run
    from harness.bench import service_targets as service_bench_targets
    from harness.trials import results

    folder = out / "raw"
    folder.mkdir(parents=True)
    names = service_bench_targets.Names.new()
    # the load alone, every rate climbed: drains and start-ups come on top, and a target
    # that misses a rate skips the ones above it
    minutes = 2 * (cfg.warmup_s + cfg.seed_s + len(cfg.rates) * cfg.step_s) / 60
    console.print(
        f"[bold]service bench[/bold] → {out}: seed.js at scale {cfg.scale:g} "
        f"({cfg.seed_s:,.0f} s), then open loop at "
        f"{', '.join(f'{r:,}' for r in cfg.rates)}/s for {cfg.step_s:g} s each, "
        f"against s0 and then s1 (at most about {minutes:.0f} min of load); "
        f"PostgreSQL schema {names.pg_schema}, Redis prefix {names.prefix} (removed after)",
        soft_wrap=True,
    )
    run = _Run(run_id, settings, names, results.now_iso(), busy_before=_busy_now())
    if run.busy_before > BUSY_WARNING:
        console.print(
            f"[yellow]the machine was {run.busy_before:.0f}% busy before the run started: "
            "other load will bend the figures[/yellow]"
        )
    with (
        LiveReporter(console) as reporter,
        contextlib.closing(
            service_bench_run.measure(
                settings, cfg, folder, run_id=run_id, names=names, targets=run.targets,
                reporter=reporter,
            )
        ) as measurements,
    ):  # fmt: skip
        try:
            for m in measurements:
                run.measured.append(m)
        except KeyboardInterrupt:
            run.status = "interrupted"
        except (
            service_bench_targets.TargetFailed,
            k6.K6Failed,
            OSError,
            httpx.HTTPError,
            redis.RedisError,
            psycopg.Error,
        ) as exc:
            run.status, run.problem = "failed", f"{type(exc).__name__}: {exc}"
    return run


#: % of the machine's CPU busy before a run from which the run warns of other load
BUSY_WARNING = 20.0


def _busy_now(seconds: float = 2.0) -> float:
    """% of the machine's CPU in use over the next ``seconds``."""
    import psutil

    return float(psutil.cpu_percent(interval=seconds))


def _results(
    run: _Run, cfg: ServiceBenchConfig, figures: Figures, versions: dict[str, str]
) -> dict[str, Any]:
    """The contents of ``service-bench.json``."""
    from harness.bench import k6
    from harness.bench import service_targets as service_bench_targets
    from harness.trials import results

    return {
        "format": FORMAT,
        "kind": "service-bench",
        "run_id": run.run_id,
        "status": run.status,
        "problem": run.problem or None,
        "started": run.started,
        "finished": results.now_iso(),
        "config": dataclasses.asdict(cfg),
        "verified": run.verified,
        "machine_busy_before_pct": run.busy_before,
        "figures": figures.to_dict(),
        "measurements": [_record(m, cfg) for m in run.measured],
        "targets": run.targets,
        "settings": service_bench_targets.settings_record(run.settings, run.names),
        "k6": k6.version(k6.binary()),
        "http_packages": service_bench_targets.http_packages(),
        "servers": versions,
        "environment": environment.describe(),
        "argv": sys.argv,
    }
