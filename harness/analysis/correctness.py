"""The correctness matrix: for each design (counter strategy, broker, fault, ingress) and
isolation level, whether the invariants held, what was a known anomaly, what was lost."""

from __future__ import annotations

from typing import Any

from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.analysis import stats
from harness.analysis.plots import figure, label, trials_text
from harness.trials.results import Run

VERDICT_COLOURS = {
    "violation": "#e34a33",
    "anomaly": "#fdbb84",
    "did not finish": "#d9d9d9",
    "holds": "#a1d99b",
}


def correctness(run: Run) -> Figure:
    cells = stats.correctness_cells(run)
    axes = stats.design_axes(stats.frame(run))
    design = " × ".join(label(a) for a in axes)
    isolations = stats.ordered("isolation", cells["isolation"])
    designs = list(dict.fromkeys(cells["design"]))
    # Isolation levels across the top when there are many designs, so the figure stays narrow.
    across = "design" if len(designs) <= 4 else "isolation"
    cols, rows = (designs, isolations) if across == "design" else (isolations, designs)
    caption = (
        f"{trials_text(len(run.trials))}. A cell holds when every trial in it kept every invariant "
        "(nothing lost, nothing stored twice, counters exact); an anomaly is a loss its design "
        "is expected to show (a counter strategy unsafe at that isolation level, the list "
        "broker under a fault); a violation is a bug."
    )
    fig, (ax,) = figure(
        1, f"Correctness: isolation level × {design}", caption,
        width=1.6 + 2.2 * len(cols), height=1.9 + 1.0 * len(rows),
    )  # fmt: skip
    names = list(stats.VERDICTS)
    grid = [[float(names.index("holds"))] * len(cols) for _ in rows]
    counters_shown = "counter" in axes or bool(cells["lost_updates"].any())
    for c in cells.to_dict("records"):
        i, j = isolations.index(c["isolation"]), designs.index(c["design"])
        if across == "isolation":
            i, j = j, i
        grid[i][j] = names.index(c["verdict"])
        text = _cell_text(c, counters_kept=counters_shown)
        ax.text(j, i, text, ha="center", va="center", fontsize=9)
    cmap = ListedColormap([VERDICT_COLOURS[v] for v in names])
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5)
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(design if across == "design" else label("isolation"))
    ax.set_ylabel(label("isolation") if across == "design" else design)
    ax.set_aspect("auto")
    shown = set(cells["verdict"])
    handles = [Patch(color=VERDICT_COLOURS[v], label=v) for v in names if v in shown]
    fig.legend(handles=handles, loc="outside right center")
    return fig


def _cell_text(cell: dict[str, Any], *, counters_kept: bool) -> str:
    text = [cell["verdict"], f"{cell['held']}/{cell['trials']} trials hold"]
    text.append(f"{cell['lost']:,} events lost")
    if cell["double_applied"]:
        text.append(f"{cell['double_applied']:,} stored twice")
    if counters_kept:
        text.append(f"{cell['lost_updates']:,.0f} counter updates lost")
    return "\n".join(text)


def describe_correctness(run: Run) -> str:
    cells, t = stats.correctness_cells(run), stats.frame(run)
    axes = [label("isolation"), *(label(a) for a in stats.design_axes(t) if t[a].nunique() > 1)]
    where = "at any " + (f"{', '.join(axes[:-1])} or {axes[-1]}" if len(axes) > 1 else axes[0])
    if (cells["verdict"] == "holds").all():
        every = "The only trial holds" if len(t) == 1 else f"All {len(t)} trials hold"
        return f"{every} every invariant: no event was lost or stored twice {where}."
    parts = [f"{int(t['holds'].sum())} of {len(t)} trials hold every invariant"]
    for verdict, what in (
        ("anomaly", "show{s} an expected anomaly"),
        ("violation", "break{s} an invariant"),
        ("did not finish", "did not finish"),
    ):
        n = int((t["verdict"] == verdict).sum())
        if n:
            bad = cells[cells["verdict"] == verdict]
            designs = dict.fromkeys(bad["design"])
            where_ = "; ".join(_where(cells, design, verdict) for design in designs)
            parts.append(f"{n} {what.format(s='s' if n == 1 else '')} ({where_})")
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] + "."


def _where(cells: Any, design: str, verdict: str) -> str:
    """``list · kill-consumer at every isolation level: 111 events lost``."""
    bad = cells[(cells["design"] == design) & (cells["verdict"] == verdict)]
    levels = list(bad["isolation"])
    if len(levels) > 1 and set(levels) == set(cells["isolation"]):
        at = "every isolation level"
    else:
        at = " and ".join(levels)
    return f"{design} at {at}{_losses(bad.sum(numeric_only=True).to_dict())}"


def _losses(cell: dict[str, Any]) -> str:
    lost = [
        f"{cell[key]:,.0f} {name}"
        for key, name in (
            ("lost", "events lost"),
            ("double_applied", "stored twice"),
            ("lost_updates", "counter updates lost"),
        )
        if cell[key]
    ]
    return f": {', '.join(lost)}" if lost else ""


def applies_correctness(run: Run) -> bool:
    return not run.trials.empty


# -- axes ------------------------------------------------------------------------------
