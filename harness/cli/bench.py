"""``python -m harness bench``: the pipeline bench, or ``--stages``: each step's CPU."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.cli import common


def add(sub: Any) -> None:
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
    common.connection_flags(bench)

    bench.set_defaults(handler=main)


def main(args: argparse.Namespace, console: Console) -> int:
    from harness.bench import pipeline as bench
    from harness.trials import cluster, results

    if args.stages:
        return _stages(args, console)
    cfg = _config(args, bench.BenchConfig())
    settings, versions = common.services(args, common.settings_of(args), console)
    out = common.new_run_dir(settings, "bench", args.run_id)
    started = results.now_iso()
    with console.status("starting Ray…"):
        ray_facts = cluster.init(settings)
    try:
        measured = bench.run_all(settings, cfg, progress=console.print)
    finally:
        cluster.shutdown()
    _show(measured, cfg, console)
    ratio, per_round = bench.ratios(measured), bench.round_ratios(measured)
    goals, cpu = bench.targets(measured), bench.cpu_medians(measured)
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
                "ray": ray_facts,
                **common.provenance(versions),
            },
            indent=2,
        )
    )
    console.print(f"results: {out}/bench.json")
    from harness.bench import plots as bench_plots

    common.draw_charts(bench_plots.write, out, console)
    return common.EXIT_OK if all(m.verified for m in measured) else common.EXIT_FAILED_TRIAL


def _config(args: argparse.Namespace, cfg: Any) -> Any:
    """The bench's configuration: --quick, then --events and --repeat."""
    if args.quick:
        cfg = cfg.quick()
    for flag in ("events", "repeat"):
        if getattr(args, flag) is not None:
            try:
                cfg = dataclasses.replace(cfg, **{flag: getattr(args, flag)})
            except ValueError as exc:
                raise common.UsageError(f"--{flag}: {exc}") from None
    return cfg


def _show(measured: list[Any], cfg: Any, console: Console) -> None:
    """The bench's table, its ratios (per round and of the medians), targets and CPU."""
    from harness.bench import pipeline as bench

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


def _target_text(target: Any) -> str:
    """``c/a 0.91 ≥ 0.8 met``, coloured by its verdict."""
    colour = {"met": "green", "NOT met": "red"}.get(target.verdict, "dim")
    return f"{target.claim} [{colour}]{target.verdict}[/{colour}]"


def _stages(args: argparse.Namespace, console: Console) -> int:
    from harness.bench import stages
    from harness.trials import results

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
        raise common.UsageError(str(exc)) from None
    settings, versions = common.services(args, common.settings_of(args), console)
    out = common.new_run_dir(settings, "stages", args.run_id)
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
                **common.provenance(versions),
            },
            indent=2,
        )
    )
    console.print(f"results: {out}/stages.json")
    return common.EXIT_OK


def _cpu_table(cpu: dict[str, dict[str, float]], *, rounds: int) -> Table:
    """Where each part's CPU went, in µs per event, by part of the system."""
    from harness.bench.cpu import MACHINE, ROLES

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
