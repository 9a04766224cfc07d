"""A run's Ray session: Ray started, a runner for the trials, and on the way out (Ctrl-C
or SIGTERM included) the runner closed, Ray stopped and the run folder finished."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from rich.console import Console

from harness.cli import common
from harness.infra.config import Settings


@dataclasses.dataclass
class Session:
    """The runner of a session, and what its trials did so far."""

    runner: Any
    #: the run folder's writer (:class:`harness.trials.results.RunWriter`)
    writer: Any
    finished: list[Any] = dataclasses.field(default_factory=list)
    status: str = "complete"

    def run(self, trial: Any, *, total: int) -> Any:
        """Run one trial, record it in the run folder, and return its result."""
        result, series = self.runner.run(trial, position=len(self.finished) + 1, total=total)
        if common.STOP.is_set():  # cut short by Ctrl-C, though the trial did not say so
            raise KeyboardInterrupt
        self.writer.add(result, series)
        self.finished.append(result)
        return result

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"


@contextlib.contextmanager
def session(settings: Settings, writer: Any, console: Console, progress: Any) -> Iterator[Session]:
    """Start Ray and a runner; an interruption ends the session (``status`` says so)
    rather than the command, which then reports what was done."""
    from harness.trials import cluster
    from harness.trials.runner import Runner

    with console.status("starting Ray…"):
        ray_facts = cluster.init(settings)
    current = Session(Runner(settings, progress=progress), writer)
    try:
        yield current
    except KeyboardInterrupt:
        current.status = "interrupted"
    finally:
        current.runner.close()
        cluster.shutdown()
        writer.finish(status=current.status, ray=ray_facts, trials_run=len(current.finished))
