"""``python -m harness``: the parser of every command, and the dispatch to its module."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from harness import __version__
from harness.cli import bench as bench_cli
from harness.cli import common
from harness.cli import compare as compare_cli
from harness.cli import publish as publish_cli
from harness.cli import run as run_cli
from harness.cli import service as service_cli
from harness.cli import service_bench as service_bench_cli
from harness.infra import health as services
from harness.trials import experiment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="Idempotent pub-sub log aggregator: run and measure experiments.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run_cli.add(sub)
    service_cli.add(sub)
    publish_cli.add(sub)
    bench_cli.add(sub)
    service_bench = sub.add_parser(
        "service-bench",
        help="the seed's k6 load against a bare endpoint and against `serve`, in one run",
    )
    service_bench_cli.arguments(service_bench)
    service_bench.set_defaults(handler=service_bench_cli.main)
    compare_cli.add(sub)

    plot = sub.add_parser("plot", help="redraw a run's charts into RUN/plots/")
    plot.add_argument(
        "run", help="a run folder, e.g. results/smoke/20261125T160046Z (or a bench run's)"
    )
    plot.set_defaults(handler=_plot)
    rep = sub.add_parser("report", help="write RUN/report.md (redraws the charts)")
    rep.add_argument("run", help="a run folder, e.g. results/smoke/20261125T160046Z")
    rep.set_defaults(handler=_report)
    lst = sub.add_parser("list", help="list the experiments")
    lst.add_argument("--experiments", help="folder of experiment files (default: experiments/)")
    lst.set_defaults(handler=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM ends a run like Ctrl-C: results written, Ray stopped
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, common.on_stop_signal)
    with common.CLEANUP:  # stops embedded servers, if any were started
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    from harness.infra.embedded import EmbeddedError
    from harness.trials.meta import MetaError

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=150)  # logs and pipes: do not squeeze tables
    err = Console(stderr=True, highlight=False)
    try:
        return int(args.handler(args, console))
    except (experiment.ExperimentError, common.UsageError, MetaError) as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        return common.EXIT_USAGE
    except (services.ServiceUnavailable, FileNotFoundError, EmbeddedError) as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        return common.EXIT_USAGE


def _plot(args: argparse.Namespace, console: Console) -> int:
    from harness.analysis import charts
    from harness.bench import plots as bench_plots
    from harness.bench import service_plots as service_bench_plots

    run = Path(args.run)
    if (run / "bench.json").exists():
        drawn = bench_plots.write(run)
    elif (run / service_bench_cli.RESULTS).exists():
        drawn = service_bench_plots.write(run)
    else:
        drawn = charts.plot_run(run)
    for path in drawn:
        console.print(str(path))
    return common.EXIT_OK


def _report(args: argparse.Namespace, console: Console) -> int:
    from harness.analysis import report

    console.print(str(report.write_report(args.run)))
    return common.EXIT_OK


def _list(args: argparse.Namespace, console: Console) -> int:
    directory = common.experiments_dir(args.experiments)
    for exp in experiment.available(directory):
        n = sum(1 for _ in exp.trials())
        console.print(
            f"[bold]{exp.name:<12}[/bold] {n:>3} trial{'s' if n != 1 else ' '}  {exp.description}"
        )
    return common.EXIT_OK
