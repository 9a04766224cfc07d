"""harness.infra.processes: a process stopped and continued, as pause-consumer does it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from harness.infra import processes


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def wait_for(pid: int, wanted: tuple[str, ...]) -> str:
    """The process's state once it is one of ``wanted`` (a signal takes a moment)."""
    deadline = time.monotonic() + 10
    while (state := processes.state(pid)) not in wanted and time.monotonic() < deadline:
        time.sleep(0.01)
    return state


def test_a_process_is_stopped_and_continued(child: subprocess.Popen[bytes]) -> None:
    assert processes.signal_process(child.pid, None) in ("S", "R")  # only a look
    processes.signal_process(child.pid, signal.SIGSTOP)
    assert wait_for(child.pid, ("T", "t")) in ("T", "t")
    processes.signal_process(child.pid, signal.SIGCONT)
    assert wait_for(child.pid, ("S", "R")) in ("S", "R")
    assert child.poll() is None  # continued, not ended


def test_a_process_that_is_gone_has_no_state(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.wait()
    assert processes.state(child.pid) == ""
    assert processes.signal_process(child.pid, signal.SIGCONT) == ""
