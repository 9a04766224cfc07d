"""Ports and processes: the one way the harness finds a free port and stops a child."""

from __future__ import annotations

import os
import socket
import subprocess


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the kernel's choice; free until someone binds it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace_s: float = 10.0) -> None:
    """SIGTERM, up to ``grace_s`` seconds to exit, then SIGKILL; reaps the process."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def state(pid: int) -> str:
    """A process's state letter from ``/proc`` (``T``: stopped, ``S``: sleeping, …), or
    ``""`` when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # "pid (comm) S …": the name may hold spaces and parentheses; the state
            # follows the last ")"
            return f.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""


def signal_process(pid: int, signum: int | None) -> str:
    """Send ``signum`` to ``pid`` (``None``: only look); its state after (see :func:`state`)."""
    if signum is not None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return ""
    return state(pid)
