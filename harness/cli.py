"""``python -m harness``: run experiments and list them."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from harness import __version__, environment, experiment, service_bench_cli, services
from harness.config import Settings

EXIT_OK, EXIT_FAILED_TRIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: exit codes by how a run ended (:func:`harness.progress.conclude`)
EXITS = {
    "ok": EXIT_OK,
    "failed": EXIT_FAILED_TRIAL,
    "missed": EXIT_FAILED_TRIAL,
    "interrupted": EXIT_INTERRUPTED,
}


class UsageError(ValueError):
    """A command-line value is not valid."""


def _experiments_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    here = Path("experiments")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "experiments"


def _connection_flags(parser: argparse.ArgumentParser, *, ray: bool = True) -> None:
    group = parser.add_argument_group("services (flags override HARNESS_* variables)")
    group.add_argument("--pg-dsn", help="PostgreSQL DSN (HARNESS_PG_DSN)")
    group.add_argument("--redis-url", help="Redis URL (HARNESS_REDIS_URL)")
    group.add_argument("--pg-schema", help="PostgreSQL schema for the tables (HARNESS_PG_SCHEMA)")
    group.add_argument("--key-prefix", help="prefix of every Redis key (HARNESS_KEY_PREFIX)")
    if ray:
        group.add_argument("--ray-address", help="attach to this Ray cluster, not a local one")
        group.add_argument("--ray-tmpdir", help="Ray's session files and logs (HARNESS_RAY_TMPDIR)")


def _experiment_flags(parser: argparse.ArgumentParser, *, sweeps: str) -> None:
    """The experiment to run, its overrides, and where its results go."""
    parser.add_argument("name", help="experiment name (experiments/NAME.toml) or a .toml path")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a parameter; KEY=a,b,c {sweeps} (repeatable)",
    )
    parser.add_argument("--out", help="results folder (default: results/, HARNESS_RESULTS_DIR)")
    parser.add_argument("--run-id", help="name of the run folder (default: a UTC time stamp)")
    parser.add_argument("--experiments", help="folder of experiment files (default: experiments/)")
    parser.add_argument("--quiet", action="store_true", help="no live progress line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="Idempotent pub-sub log aggregator: run and measure experiments.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment's sweep and write its results")
    _experiment_flags(run, sweeps="sweeps it")
    run.add_argument(
        "--quick",
        action="store_true",
        help="a fast look: each configuration once, 10× fewer events (at least 1,000) or "
        "a tenth of the load (at least 3 s, at most 30,000 events a trial)",
    )
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue this run: skip the trials it has recorded already",
    )
    _connection_flags(run)

    cap = sub.add_parser(
        "capacity",
        help="find the highest rate each configuration sustains, and its latency below it",
    )
    _experiment_flags(cap, sweeps="searches each value")
    cap.add_argument(
        "--quick", action="store_true", help="shorter trials (3 s of load) and a coarser search"
    )
    cap.add_argument(
        "--tolerance",
        type=float,
        default=0.1,
        help="stop when the lowest failed rate is within this share of the highest "
        "sustained one (0.1)",
    )
    cap.add_argument(
        "--max-trials", type=int, default=8, help="open-loop trials per configuration at most (8)"
    )
    cap.add_argument(
        "--repeat",
        type=int,
        help="trials at each share of the capacity, back to back (default: the experiment's "
        "repeat; 1 with --quick); their spread is the noise",
    )
    _connection_flags(cap)

    serve = sub.add_parser("serve", help="run the aggregator HTTP service")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (8080)")
    serve.add_argument(
        "--consumers",
        type=int,
        default=2,
        help="consumer processes storing to PostgreSQL (2; 0: ingress only)",
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="HTTP worker processes on the one port (1)"
    )
    serve.add_argument("--batch-size", type=int, default=100, help="events per transaction")
    serve.add_argument(
        "--linger-ms",
        type=float,
        default=20.0,
        help="a consumer that keeps up waits this long between reads, to fill its batch (20)",
    )
    serve.add_argument("--isolation", default="read_committed", help="transaction isolation level")
    serve.add_argument(
        "--name",
        default="aggregator",
        help="consumer name prefix; keep it across restarts (aggregator)",
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    # fault injection for the tests: a consumer process dies right after N commits
    serve.add_argument("--crash-after-commits", type=int, help=argparse.SUPPRESS)
    _connection_flags(serve, ray=False)

    pub = sub.add_parser(
        "publish", help="publish a workload to the HTTP service (the seed's publisher)"
    )
    pub.add_argument("--url", default="http://127.0.0.1:8080", help="service URL")
    pub.add_argument("--events", type=int, default=20_000, help="events to send, re-sends included")
    pub.add_argument("--duplicate-rate", type=float, default=0.3, help="share of re-sends (0.3)")
    pub.add_argument("--topics", type=int, default=10, help="topics (10)")
    pub.add_argument("--batch", type=int, default=100, help="events per request (100)")
    pub.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="requests in flight at once, each on its own connection (4; the seed's: 1)",
    )
    pub.add_argument("--payload-bytes", type=int, default=100, help="payload size (100)")
    pub.add_argument("--seed", type=int, help="workload seed (default: from the clock; printed)")
    pub.add_argument("--wait", type=float, default=30.0, help="seconds to wait for /health")
    pub.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not wait for the service to store everything and check /stats",
    )

    bench = sub.add_parser(
        "bench", help="store ceiling vs the seed's design vs the pipeline, in one run"
    )
    bench.add_argument(
        "--events",
        type=int,
        help="events for (a) and (c) (400,000); (c)'s publisher holds them all, ~230 bytes each",
    )
    bench.add_argument(
        "--quick", action="store_true", help="a small run (20,000 events, one round)"
    )
    bench.add_argument(
        "--repeat", type=int, help="rounds of all four parts; ratios of the medians (3)"
    )
    bench.add_argument(
        "--stages",
        action="store_true",
        help="instead: the CPU per event of each step of the pipeline, in one process "
        "(200,000 events, best of --repeat passes)",
    )
    bench.add_argument("--out", help="results folder (default: results/)")
    bench.add_argument("--run-id", help="name of the run folder (default: a UTC time stamp)")
    _connection_flags(bench)

    service_bench = sub.add_parser(
        "service-bench",
        help="the seed's k6 load against a bare endpoint and against `serve`, in one run",
    )
    service_bench_cli.arguments(service_bench)

    plot = sub.add_parser("plot", help="redraw a run's charts into RUN/plots/")
    plot.add_argument(
        "run", help="a run folder, e.g. results/smoke/20261125T160046Z (or a bench run's)"
    )
    rep = sub.add_parser("report", help="write RUN/report.md (redraws the charts)")
    rep.add_argument("run", help="a run folder, e.g. results/smoke/20261125T160046Z")

    dlq = sub.add_parser("dlq", help="list dead-lettered entries and why")
    dlq.add_argument("--count", type=int, default=50, help="how many, oldest first (50)")
    _connection_flags(dlq, ray=False)

    lst = sub.add_parser("list", help="list the experiments")
    lst.add_argument("--experiments", help="folder of experiment files (default: experiments/)")
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run like Ctrl-C: results written, Ray stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    with _CLEANUP:  # stops embedded servers, if any were started
        return _dispatch(args)


#: What must be undone on the way out (embedded servers).
_CLEANUP = contextlib.ExitStack()


def _services(
    args: argparse.Namespace, settings: Settings, console: Console
) -> tuple[Settings, dict[str, str]]:
    """The services to use: the configured ones, or embedded ones for a service the user
    did not choose and that does not answer at its default (see harness.embedded)."""
    from harness import embedded

    explicit = embedded.configured({"pg_dsn": args.pg_dsn, "redis_url": args.redis_url})
    return _CLEANUP.enter_context(
        embedded.services_or_embedded(
            settings, explicit=explicit, say=lambda line: console.print(line, soft_wrap=True)
        )
    )


def _dispatch(args: argparse.Namespace) -> int:
    from harness.embedded import EmbeddedError

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=150)  # logs and pipes: do not squeeze tables
    err = Console(stderr=True, highlight=False)
    try:
        if args.command == "list":
            return _list(args, console)
        if args.command == "serve":
            return _serve(args, console)
        if args.command == "bench":
            return _bench(args, console)
        if args.command == "service-bench":
            return service_bench_cli.main(args, console)
        if args.command == "plot":
            from harness import bench_plots, charts, service_bench_plots

            run = Path(args.run)
            if (run / "bench.json").exists():
                drawn = bench_plots.write(run)
            elif (run / service_bench_cli.RESULTS).exists():
                drawn = service_bench_plots.write(run)
            else:
                drawn = charts.plot_run(run)
            for path in drawn:
                console.print(str(path))
            return EXIT_OK
        if args.command == "report":
            from harness import report

            console.print(str(report.write_report(args.run)))
            return EXIT_OK
        if args.command == "dlq":
            return _dlq(args, console)
        if args.command == "publish":
            from harness import publish_cli

            return publish_cli.main(args, console)
        if args.command == "capacity":
            return _capacity(args, console)
        return _run(args, console)
    except (experiment.ExperimentError, UsageError) as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        return EXIT_USAGE
    except (services.ServiceUnavailable, FileNotFoundError, EmbeddedError) as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        return EXIT_USAGE


def _list(args: argparse.Namespace, console: Console) -> int:
    directory = _experiments_dir(args.experiments)
    for exp in experiment.available(directory):
        n = sum(1 for _ in exp.trials())
        console.print(
            f"[bold]{exp.name:<12}[/bold] {n:>3} trial{'s' if n != 1 else ' '}  {exp.description}"
        )
    return EXIT_OK


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        pg_dsn=args.pg_dsn,
        redis_url=args.redis_url,
        pg_schema=args.pg_schema,
        key_prefix=args.key_prefix,
        ray_address=getattr(args, "ray_address", None),
        ray_tmpdir=getattr(args, "ray_tmpdir", None),
        results_dir=getattr(args, "out", None),
    )


def _bench(args: argparse.Namespace, console: Console) -> int:
    import json

    from rich.table import Table

    from harness import bench, cluster, results

    if args.stages:
        return _stages(args, console)
    cfg = bench.BenchConfig()
    if args.quick:
        cfg = cfg.quick()
    for flag in ("events", "repeat"):
        if getattr(args, flag) is not None:
            try:
                cfg = dataclasses.replace(cfg, **{flag: getattr(args, flag)})
            except ValueError as exc:
                raise UsageError(f"--{flag}: {exc}") from None
    settings, versions = _services(args, _settings(args), console)
    out = _new_run_dir(settings, "bench", args.run_id)
    started = results.now_iso()
    with console.status("starting Ray…"):
        ray_facts = cluster.init(settings)
    try:
        measured = bench.run_all(settings, cfg, progress=console.print)
    finally:
        cluster.shutdown()
    table = Table(title="bench")
    for column in ("", "events", "seconds", "events/s", "verified", "detail"):
        table.add_column(column, justify="left" if column in ("", "detail") else "right")
    for m in measured:
        table.add_row(
            f"({m.key}) {m.name}" + (f", round {m.round + 1}" if cfg.repeat > 1 else ""),
            f"{m.events:,}",
            f"{m.seconds:.2f}",
            f"{m.events_per_s:,.0f}",
            "yes" if m.verified else "[red]NO[/red]",
            m.detail,
        )
    console.print(table)
    ratio = bench.ratios(measured)
    per_round = bench.round_ratios(measured)
    if cfg.repeat > 1:
        for r, values in enumerate(per_round, 1):
            console.print(f"round {r}: " + "  ".join(f"{k} = {v:,.2f}" for k, v in values.items()))
        rates = bench.medians(measured)
        console.print("medians: " + "  ".join(f"({k}) {v:,.0f} events/s" for k, v in rates.items()))
        console.print("of the medians: ", end="")
    console.print("  ".join(f"{k} = {v:,.2f}" for k, v in ratio.items()))
    goals = bench.targets(measured)
    console.print("targets: " + "  ".join(_target_text(t) for t in goals))
    cpu = bench.cpu_medians(measured)
    if cpu:
        console.print(_cpu_table(cpu, rounds=cfg.repeat))
    out.mkdir(parents=True)
    (out / "bench.json").write_text(
        json.dumps(
            {
                "results_format": results.RESULTS_FORMAT,
                "started": started,
                "finished": results.now_iso(),
                "config": dataclasses.asdict(cfg),
                "measurements": [
                    {**dataclasses.asdict(m), "events_per_s": m.events_per_s} for m in measured
                ],
                "ratios": ratio,
                "medians": bench.medians(measured),
                "round_ratios": per_round,
                "targets": [
                    {**dataclasses.asdict(t), "met": t.met if t.applies else None} for t in goals
                ],
                "cpu_us_per_event": cpu,
                "servers": versions,
                "ray": ray_facts,
                "environment": environment.describe(),
                "argv": sys.argv,
            },
            indent=2,
        )
    )
    console.print(f"results: {out}/bench.json")
    from harness import bench_plots

    try:
        charts = bench_plots.write(out)
        console.print(f"charts: {', '.join(str(c) for c in charts)}")
    except Exception as exc:  # the results are safe on disk; say what went wrong
        console.print(f"[yellow]charts not drawn[/yellow]: {exc!r}")
    return EXIT_OK if all(m.verified for m in measured) else EXIT_FAILED_TRIAL


def _target_text(target: Any) -> str:
    """``c/a 0.91 ≥ 0.8 met``, coloured by its verdict."""
    colour = {"met": "green", "NOT met": "red"}.get(target.verdict, "dim")
    return f"{target.claim} [{colour}]{target.verdict}[/{colour}]"


def _new_run_dir(settings: Settings, kind: str, run_id: str | None) -> Path:
    """``results/<kind>/<run id>`` (a UTC time stamp by default), which must not exist."""
    run_id = run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = settings.results_dir / kind / run_id
    if out.exists():
        raise UsageError(f"{out} exists already; choose another --run-id")
    return out


def _stages(args: argparse.Namespace, console: Console) -> int:
    import json

    from rich.table import Table

    from harness import results, stages

    cfg = stages.StagesConfig()
    if args.quick:
        cfg = dataclasses.replace(cfg, events=20_000, repeat=1)
    try:
        cfg = dataclasses.replace(
            cfg,
            events=cfg.events if args.events is None else args.events,
            repeat=cfg.repeat if args.repeat is None else args.repeat,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    settings, versions = _services(args, _settings(args), console)
    out = _new_run_dir(settings, "stages", args.run_id)
    started = results.now_iso()
    steps = stages.run(settings, cfg, progress=console.print)
    table = Table(
        title=f"the pipeline's steps, one process, {cfg.events:,} events "
        f"(batch {cfg.batch_size}, {cfg.entry_size} events per entry; best of {cfg.repeat})"
    )
    for column in ("step", "CPU µs/event", "wall µs/event"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for t in steps:
        table.add_row(t.step, f"{t.cpu_us:.2f}", f"{t.wall_us:.2f}")
    publisher = sum(t.cpu_us for t in steps if t.step in stages.PUBLISHER_STEPS)
    consumer = sum(t.cpu_us for t in steps if t.step not in stages.PUBLISHER_STEPS)
    table.add_row("publisher, in all", f"{publisher:.2f}", "", style="bold")
    table.add_row("consumer, in all", f"{consumer:.2f}", "", style="bold")
    console.print(table)
    trips = stages.round_trips(settings)
    console.print(
        "a round trip costs the client (CPU µs): "
        + "  ".join(f"{label} {trips[key]:,.0f}" for label, key in stages.PROBES)
    )
    out.mkdir(parents=True)
    (out / "stages.json").write_text(
        json.dumps(
            {
                "started": started,
                "finished": results.now_iso(),
                "config": dataclasses.asdict(cfg),
                "steps": [
                    {**dataclasses.asdict(t), "cpu_us": t.cpu_us, "wall_us": t.wall_us}
                    for t in steps
                ],
                "round_trip_cpu_us": trips,
                "servers": versions,
                "environment": environment.describe(),
                "argv": sys.argv,
            },
            indent=2,
        )
    )
    console.print(f"results: {out}/stages.json")
    return EXIT_OK


def _cpu_table(cpu: dict[str, dict[str, float]], *, rounds: int) -> Any:
    """Where each part's CPU went, in µs per event, by part of the system."""
    from rich.table import Table

    from harness.cpu import MACHINE, ROLES

    parts = sorted(cpu)
    title = "CPU µs per event" + (f" (medians of {rounds} rounds)" if rounds > 1 else "")
    table = Table(title=title)
    table.add_column("")
    for key in parts:
        table.add_column(f"({key})", justify="right")
    for role in (*ROLES, *MACHINE):
        values = [cpu[key].get(role, 0.0) for key in parts]
        if role in MACHINE or any(v >= 0.05 for v in values):
            table.add_row(role, *(f"{v:,.1f}" for v in values))
    return table


def _dlq(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from harness import broker as broker_mod
    from harness.keys import Keys

    settings = _settings(args)
    services.check_redis(settings.redis_url)
    channel = broker_mod.StreamBroker(
        broker_mod.connect(settings.redis_url), Keys(settings.key_prefix)
    )
    total = channel.dead_letter_count()
    table = Table(title=f"{channel.keys.dead_letter}: {total} dead-lettered entries")
    for column in ("dead-lettered at", "entry", "consumer", "reason", "events"):
        table.add_column(column, overflow="fold")
    for letter_id, fields in channel.dead_letters(args.count):
        at = dt.datetime.fromtimestamp(int(letter_id.split(b"-")[0]) / 1000, dt.UTC)
        table.add_row(
            at.isoformat(timespec="seconds"),
            fields.get(b"entry_id", b"").decode(errors="replace"),
            fields.get(b"consumer", b"").decode(errors="replace"),
            fields.get(b"reason", b"").decode(errors="replace"),
            fields.get(b"e", b"").decode(errors="replace")[:200],
        )
    console.print(table)
    channel.client.close()
    return EXIT_OK


def _serve(args: argparse.Namespace, console: Console) -> int:
    from harness.serve import check_address, serve
    from harness.service import ServiceConfig
    from harness.store import Isolation

    settings = _settings(args)
    try:
        config = ServiceConfig(
            host=args.host,
            port=args.port,
            consumers=args.consumers,
            workers=args.workers,
            linger_ms=args.linger_ms,
            crash_after_commits=args.crash_after_commits,
            batch_size=args.batch_size,
            isolation=Isolation.parse(args.isolation).value,
            name=args.name,
        )
        check_address(config.host, config.port)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    settings, _ = _services(args, settings, console)
    plural = "es" if config.consumers != 1 else ""
    console.print(
        f"serving on http://{config.host}:{config.port} (API docs at /docs): "
        f"{config.workers} HTTP worker{'s' if config.workers != 1 else ''}, "
        f"{config.consumers} consumer process{plural}; PostgreSQL schema "
        f"{settings.pg_schema!r}, Redis prefix {settings.key_prefix!r}. Ctrl-C stops."
    )
    serve(settings, config, access_log=args.access_log)
    return EXIT_OK


def _run_meta(
    exp: experiment.Experiment, settings: Settings, versions: dict[str, str], **extra: Any
) -> dict[str, Any]:
    """What a run folder's meta.json records of what produced it."""
    return {
        "experiment": exp.to_dict(),
        **extra,
        "settings": {
            "pg_dsn": services.redact(settings.pg_dsn),
            "redis_url": services.redact(settings.redis_url),
            "pg_schema": settings.pg_schema,
            "key_prefix": settings.key_prefix,
        },
        "servers": versions,
        "environment": environment.describe(),
        "argv": sys.argv,
    }


def _capacity(args: argparse.Namespace, console: Console) -> int:
    from harness import capacity

    exp = experiment.load(experiment.find(args.name, _experiments_dir(args.experiments)))
    if args.quick:
        exp = exp.quick()
    exp = exp.with_overrides(args.overrides)
    try:
        search = capacity.Search(
            tolerance=args.tolerance if not args.quick else max(args.tolerance, 0.2),
            max_trials=args.max_trials if not args.quick else min(args.max_trials, 5),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    repeat = exp.repeat if args.repeat is None else args.repeat
    if repeat < 1:
        raise UsageError(f"--repeat must be ≥ 1, got {repeat}")
    configs = capacity.configurations(exp)
    settings, versions = _services(args, _settings(args), console)
    out = _new_run_dir(settings, exp.name, args.run_id)
    console.print(
        f"[bold]{exp.name}[/bold]: capacity of {len(configs)} configuration"
        f"{'s' if len(configs) != 1 else ''} → {out}"
    )
    from harness import capacity_cli

    meta = _run_meta(
        exp,
        settings,
        versions,
        quick=bool(args.quick),
        mode="capacity",
        search=dataclasses.asdict(search),
        fractions=list(capacity.FRACTIONS),
        repeat=repeat,
    )
    return EXITS[
        capacity_cli.main(
            exp, search, settings, out, meta, console, quiet=args.quiet, repeat=repeat
        )
    ]


def _run(args: argparse.Namespace, console: Console) -> int:
    exp = experiment.load(experiment.find(args.name, _experiments_dir(args.experiments)))
    if args.quick:
        exp = exp.quick()
    exp = exp.with_overrides(args.overrides)
    trials = list(exp.trials())
    settings, versions = _services(args, _settings(args), console)

    # Imported here: Ray is slow to import, and list/--help/errors should not wait for it.
    from harness import cluster, progress, results
    from harness.runner import Runner

    if args.resume and args.run_id:
        raise UsageError("give --resume RUN_ID or --run-id, not both")
    run_id = args.resume or args.run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = settings.results_dir / exp.name / run_id
    varying = [k for k in exp.sweep]
    resolved = results.resolved_trials(trials)
    if args.resume:
        if not out.exists():
            raise UsageError(f"no run {out} to resume")
        writer, recorded = results.RunWriter.resume(out)
        planned = {t["trial_id"] for t in writer.meta.get("resolved_trials", [])}
        if planned != {t.trial_id for t in trials}:
            raise UsageError(
                f"{out} was run with other parameters; resume with the same experiment, "
                "--quick and --set values"
            )
        skipped = [t for t in trials if t.trial_id in recorded]
        trials = [t for t in trials if t.trial_id not in recorded]
        console.print(
            f"[bold]{exp.name}[/bold]: resuming {out}: {len(skipped)} trial"
            f"{'s' if len(skipped) != 1 else ''} recorded, {len(trials)} to run"
        )
    else:
        if out.exists():
            raise UsageError(f"{out} exists already; choose another --run-id or --resume it")
        console.print(
            f"[bold]{exp.name}[/bold]: {len(trials)} trial{'s' if len(trials) != 1 else ''} → {out}"
        )
        writer = results.RunWriter(
            out,
            _run_meta(exp, settings, versions, quick=args.quick, resolved_trials=resolved),
        )
    with console.status("starting Ray…"):
        ray_facts = cluster.init(settings)
    live = progress.LiveProgress(console, varying) if not args.quiet else None
    runner = Runner(settings, progress=live)
    finished: list[results.TrialResult] = []
    status = "complete"
    try:
        for position, trial in enumerate(trials, start=1):
            result, series = runner.run(trial, position=position, total=len(trials))
            writer.add(result, series)
            finished.append(result)
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        runner.close()
        cluster.shutdown()
        writer.finish(status=status, ray=ray_facts, trials_run=len(finished))
    console.print(progress.summary_table(finished, varying))
    console.print(f"results: {out}/trials.csv, {out}/meta.json")
    return EXITS[progress.conclude(console, out, finished, interrupted=status == "interrupted")]
