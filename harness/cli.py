"""``python -m harness``: run experiments and list them."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from harness import __version__, environment, experiment, services
from harness.config import Settings

EXIT_OK, EXIT_FAILED_TRIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _experiments_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    here = Path("experiments")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "experiments"


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("services (flags override HARNESS_* variables)")
    group.add_argument("--pg-dsn", help="PostgreSQL DSN (HARNESS_PG_DSN)")
    group.add_argument("--redis-url", help="Redis URL (HARNESS_REDIS_URL)")
    group.add_argument("--pg-schema", help="PostgreSQL schema for the tables (HARNESS_PG_SCHEMA)")
    group.add_argument("--key-prefix", help="prefix of every Redis key (HARNESS_KEY_PREFIX)")
    group.add_argument("--ray-address", help="attach to this Ray cluster instead of starting one")
    group.add_argument("--ray-tmpdir", help="Ray's session files and logs (HARNESS_RAY_TMPDIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="Idempotent pub-sub log aggregator: run and measure experiments.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment's sweep and write its results")
    run.add_argument("name", help="experiment name (experiments/NAME.toml) or a .toml path")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter; KEY=a,b,c sweeps it (repeatable)",
    )
    run.add_argument("--out", help="results folder (default: results/, HARNESS_RESULTS_DIR)")
    run.add_argument("--run-id", help="name of the run folder (default: a UTC time stamp)")
    run.add_argument("--experiments", help="folder of experiment files (default: experiments/)")
    run.add_argument("--quiet", action="store_true", help="no live progress line")
    _connection_flags(run)

    lst = sub.add_parser("list", help="list the experiments")
    lst.add_argument("--experiments", help="folder of experiment files (default: experiments/)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=150)  # logs and pipes: do not squeeze tables
    err = Console(stderr=True, highlight=False)
    try:
        if args.command == "list":
            return _list(args, console)
        return _run(args, console)
    except experiment.ExperimentError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        return EXIT_USAGE
    except services.ServiceUnavailable as exc:
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
        ray_address=args.ray_address,
        ray_tmpdir=args.ray_tmpdir,
        results_dir=getattr(args, "out", None),
    )


def _run(args: argparse.Namespace, console: Console) -> int:
    exp = experiment.load(experiment.find(args.name, _experiments_dir(args.experiments)))
    exp = exp.with_overrides(args.overrides)
    trials = list(exp.trials())
    settings = _settings(args)
    versions = services.check(settings)

    # Imported here: Ray is slow to import, and list/--help/errors should not wait for it.
    from harness import cluster, progress, results
    from harness.runner import Runner

    run_id = args.run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = settings.results_dir / exp.name / run_id
    if out.exists():
        raise experiment.ExperimentError(f"{out} exists already; choose another --run-id")
    varying = [k for k in exp.sweep]
    console.print(
        f"[bold]{exp.name}[/bold]: {len(trials)} trial{'s' if len(trials) != 1 else ''} → {out}"
    )
    writer = results.RunWriter(
        out,
        {
            "experiment": exp.to_dict(),
            "resolved_trials": [
                {
                    "trial": t.index,
                    "trial_id": t.trial_id,
                    "repeat": t.repeat,
                    "seed": t.seed,
                    "params": dataclasses.asdict(t.params),
                }
                for t in trials
            ],
            "settings": {
                "pg_dsn": services.redact(settings.pg_dsn),
                "redis_url": services.redact(settings.redis_url),
                "pg_schema": settings.pg_schema,
                "key_prefix": settings.key_prefix,
            },
            "servers": versions,
            "environment": environment.describe(),
            "argv": sys.argv,
        },
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
    failed = [r for r in finished if not r.invariant_ok]
    console.print(f"results: {out}/trials.csv, {out}/meta.json")
    if status == "interrupted":
        console.print("[yellow]interrupted[/yellow]: the trials finished so far are written")
        return EXIT_INTERRUPTED
    if failed:
        console.print(
            f"[bold red]{len(failed)} of {len(finished)} trials broke an invariant[/bold red]"
        )
        return EXIT_FAILED_TRIAL
    console.print(f"[green]all {len(finished)} trials hold every invariant[/green]")
    return EXIT_OK
