"""``python -m harness run`` and ``capacity``: an experiment's sweep, or its capacity."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.cli import common
from harness.cli.session import session
from harness.infra import health
from harness.infra.config import Settings
from harness.trials import experiment
from harness.trials.meta import Meta, MetaError
from harness.trials.params import Trial


def add(sub: Any) -> None:
    run = sub.add_parser("run", help="run an experiment's sweep and write its results")
    common.experiment_flags(run, sweeps="sweeps it")
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
    common.connection_flags(run)

    run.set_defaults(handler=main)
    cap = sub.add_parser(
        "capacity",
        help="find the highest rate each configuration sustains, and its latency below it",
    )
    common.experiment_flags(cap, sweeps="searches each value")
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
    common.connection_flags(cap)

    cap.set_defaults(handler=capacity_main)


def _run_meta(
    exp: experiment.Experiment, settings: Settings, versions: dict[str, str], **fields: Any
) -> Meta:
    """What a run folder's meta.json records of what produced it."""
    return Meta(
        experiment=exp.to_dict(),
        **fields,
        settings={
            "pg_dsn": health.redact(settings.pg_dsn),
            "redis_url": health.redact(settings.redis_url),
            "pg_schema": settings.pg_schema,
            "key_prefix": settings.key_prefix,
        },
        **common.provenance(versions),
    )


def capacity_main(args: argparse.Namespace, console: Console) -> int:
    from harness.trials import capacity

    exp = experiment.load(experiment.find(args.name, common.experiments_dir(args.experiments)))
    if args.quick:
        exp = exp.quick()
    exp = exp.with_overrides(args.overrides)
    try:
        search = capacity.Search(
            tolerance=args.tolerance if not args.quick else max(args.tolerance, 0.2),
            max_trials=args.max_trials if not args.quick else min(args.max_trials, 5),
        )
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    repeat = exp.repeat if args.repeat is None else args.repeat
    if repeat < 1:
        raise common.UsageError(f"--repeat must be ≥ 1, got {repeat}")
    configs = capacity.configurations(exp)
    settings, versions = common.services(args, common.settings_of(args), console)
    out = common.new_run_dir(settings, exp.name, args.run_id)
    console.print(
        f"[bold]{exp.name}[/bold]: capacity of {len(configs)} configuration"
        f"{'s' if len(configs) != 1 else ''} → {out}"
    )
    from harness.cli import capacity as capacity_cli

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
    return common.EXITS[
        capacity_cli.main(
            exp, search, settings, out, meta, console, quiet=args.quiet, repeat=repeat
        )
    ]


def main(args: argparse.Namespace, console: Console) -> int:
    exp = experiment.load(experiment.find(args.name, common.experiments_dir(args.experiments)))
    if args.quick:
        exp = exp.quick()
    exp = exp.with_overrides(args.overrides)
    trials = list(exp.trials())
    settings, versions = common.services(args, common.settings_of(args), console)

    # Imported here: Ray is slow to import, and list/--help/errors should not wait for it.
    from harness.cli import progress
    from harness.trials import results

    if args.resume and args.run_id:
        raise common.UsageError("give --resume RUN_ID or --run-id, not both")
    if args.resume:
        out = settings.results_dir / exp.name / args.resume
    else:
        out = common.new_run_dir(settings, exp.name, args.run_id, hint=" or --resume it")
    varying = exp.axes
    if args.resume:
        writer, trials = _resumed(out, trials, exp.name, console)
    else:
        console.print(
            f"[bold]{exp.name}[/bold]: {len(trials)} trial{'s' if len(trials) != 1 else ''} → {out}"
        )
        resolved = results.resolved_trials(trials)
        writer = results.RunWriter(
            out,
            _run_meta(exp, settings, versions, quick=bool(args.quick), resolved_trials=resolved),
        )
    live = progress.LiveProgress(console, varying) if not args.quiet else None
    with session(settings, writer, console, live) as current:
        for trial in trials:
            current.run(trial, total=len(trials))
    finished = current.finished
    console.print(progress.summary_table(finished, varying))
    console.print(f"results: {out}/trials.csv, {out}/meta.json")
    return common.EXITS[progress.conclude(console, out, finished, interrupted=current.interrupted)]


def _resumed(
    out: Path, trials: list[Trial], name: str, console: Console
) -> tuple[Any, list[Trial]]:
    """The writer of a run to resume, and the trials it has still to run; refuses a run
    planned with other parameters."""
    from harness.trials import results

    if not out.exists():
        raise common.UsageError(f"no run {out} to resume")
    try:
        writer, recorded = results.RunWriter.resume(out)
    except (FileNotFoundError, MetaError) as exc:
        raise common.UsageError(str(exc)) from None
    if writer.meta.planned != {t.trial_id for t in trials}:
        raise common.UsageError(
            f"{out} was run with other parameters; resume with the same experiment, "
            "--quick and --set values"
        )
    skipped = [t for t in trials if t.trial_id in recorded]
    todo = [t for t in trials if t.trial_id not in recorded]
    console.print(
        f"[bold]{name}[/bold]: resuming {out}: {len(skipped)} trial"
        f"{'s' if len(skipped) != 1 else ''} recorded, {len(todo)} to run"
    )
    return writer, todo
