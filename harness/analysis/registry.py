"""One way to register charts and draw them: for runs, benches and service benches alike.

A chart is a file name, a title, whether a source (a run, a ``bench.json``…) has the data
for it, how to draw it and what it shows. :func:`draw_all` draws every chart of a
registry that applies into a folder and removes the files of those that no longer do, so
the folder always matches its source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from matplotlib.figure import Figure

Source = TypeVar("Source")


def _always(source: object) -> bool:
    return True


def _nothing(source: object) -> str:
    return ""


@dataclasses.dataclass(frozen=True)
class Chart(Generic[Source]):
    """One chart: its file, its title, whether a source can draw it, how, and what it
    shows."""

    filename: str
    title: str
    applies: Callable[[Source], bool] = _always
    draw: Callable[[Source], Figure] = dataclasses.field(kw_only=True)
    describe: Callable[[Source], str] = _nothing


def draw_all(charts: Sequence[Chart[Source]], source: Source, directory: Path) -> list[Path]:
    """Draw every chart of ``charts`` that ``source`` has the data for into ``directory``;
    remove the files of the others (drawn earlier, from older data). The files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for chart in charts:
        target = directory / chart.filename
        if chart.applies(source):
            chart.draw(source).savefig(target)
            written.append(target)
        else:
            target.unlink(missing_ok=True)
    return written
