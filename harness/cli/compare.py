"""``python -m harness compare OLD NEW``: two runs side by side, every figure as an A/B.

The arithmetic is :mod:`harness.analysis.ab`'s; this prints it as a table and, with
``--markdown FILE``, writes it as markdown too. A report, not a test: it exits 0 whatever
the verdicts, 2 when the two paths cannot be compared.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.cli import common

#: a verdict's colour: NEW better, worse, or neither beyond the noise
COLOURS = {True: "green", False: "red", None: ""}


def add(sub: Any) -> None:
    parser = sub.add_parser(
        "compare",
        help="two runs of one experiment (or two bench runs) side by side: each figure's "
        "NEW/OLD ratio, its 95%% interval, and whether it beats the noise",
    )
    parser.add_argument(
        "old", metavar="OLD", help="the baseline: a run folder, a bench run or its bench.json"
    )
    parser.add_argument("new", metavar="NEW", help="the run set against it, of the same kind")
    parser.add_argument(
        "--markdown",
        metavar="FILE",
        help="also write the comparison to FILE as markdown (for docs/performance.md)",
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace, console: Console) -> int:
    from harness.analysis import ab

    try:
        result = ab.compare_runs(args.old, args.new)
    except ab.NotComparable as exc:
        raise common.UsageError(str(exc)) from None
    console.print(f"OLD: {escape(str(result.old.path))}: {escape(result.old.about)}")
    console.print(f"NEW: {escape(str(result.new.path))}: {escape(result.new.about)}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    console.print(table(result))
    console.print(ab.EXPLAINED, soft_wrap=True)
    for line in ab.only(result):
        if line:
            console.print(escape(line), soft_wrap=True)
    console.print(ab.tally(result))
    if args.markdown:
        path = Path(args.markdown)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(ab.markdown(result))
        except OSError as exc:
            raise common.UsageError(f"--markdown {path}: {exc.strerror or exc}") from None
        console.print(f"markdown: {path}")
    return common.EXIT_OK


def table(result: Any) -> Table:
    """The rows of ``result`` (an :class:`harness.analysis.ab.AB`), verdicts coloured."""
    from harness.analysis import ab

    notes = any(row.note for row in result.rows)
    out = Table(title="NEW against OLD")
    for column in (*ab.HEADER, "verdict", *(["note"] if notes else [])):
        left = column in ("configuration", "figure", "verdict", "note")
        out.add_column(column, justify="left" if left else "right")
    for row in result.rows:
        *figures, verdict = ab.cells(row)
        colour = COLOURS[ab.improved(row)]
        shown = f"[{colour}]{escape(verdict)}[/{colour}]" if colour else escape(verdict)
        extra = [escape(row.note)] if notes else []
        out.add_row(*(escape(c) for c in figures), shown, *extra)
    return out
