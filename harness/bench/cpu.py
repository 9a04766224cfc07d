"""Where the CPU went: the CPU seconds of each part of the system over a time window.

A :class:`CpuSampler` runs in the driver. It reads, a few times a second, the CPU time of
the processes that make up a run on this machine (PostgreSQL's, Redis's, the trial's Ray
actors by class, Ray's own, the driver), and the machine's totals (busy, idle, steal).
:meth:`CpuSampler.window` then says how many CPU seconds each part used between two wall
clock instants, such as a trial's first publish and last commit, so that ``bench`` can
print the CPU each part of the pipeline costs per event, measured rather than guessed.

It sees only the machine it runs on: on a Ray cluster, actors on other nodes are missed.
Processes that start and end between two samples are missed too; the trial's actors and
PostgreSQL's connections live much longer than that.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Mapping, Sequence

import psutil

#: Ray actor classes, by the name Ray gives their process (``ray::<Class>``).
ACTOR_ROLES = {
    "ConsumerActor": "consumers",
    "PublisherActor": "publishers",
    "BenchWorker": "store workers",
    "ServiceActor": "service",
}
#: The parts a window reports, in the order ``bench`` prints them. ``other`` is the
#: machine's busy time that none of the others used (other tenants, the kernel).
ROLES = (
    "postgres",
    "redis",
    "consumers",
    "publishers",
    "store workers",
    "service",
    "ray",
    "driver",
    "other",
)
MACHINE = ("busy", "idle", "steal")


def role_of(name: str, cmdline: Sequence[str], *, driver: bool = False) -> str | None:
    """Which part of the system a process is, from its name and command line; ``None`` for
    a process that is none of them."""
    if driver:
        return "driver"
    head = cmdline[0] if cmdline else ""
    if name == "postgres" or head.startswith("postgres"):
        return "postgres"
    if name.startswith("redis-server") or head.startswith("redis-server"):
        return "redis"
    if head.startswith("ray::"):
        return ACTOR_ROLES.get(head[5:].split(".", 1)[0].split(" ", 1)[0], "ray")
    if any("/ray/" in part or "ray." in part for part in cmdline[:3]):
        return "ray"
    return None


class _Series:
    """A process's cumulative CPU seconds, sampled: (wall clock ns, seconds)."""

    __slots__ = ("role", "times", "values")

    def __init__(self, role: str) -> None:
        self.role = role
        self.times: list[int] = []
        self.values: list[float] = []

    def add(self, t_ns: int, value: float) -> None:
        self.times.append(t_ns)
        self.values.append(value)

    def at(self, t_ns: int) -> float:
        """The cumulative value at ``t_ns``, interpolated between samples; before the
        first sample the first value, after the last the last."""
        times, values = self.times, self.values
        i = bisect.bisect_left(times, t_ns)
        if i == 0:
            return values[0]
        if i == len(times):
            return values[-1]
        t0, t1 = times[i - 1], times[i]
        v0, v1 = values[i - 1], values[i]
        return v0 + (v1 - v0) * (t_ns - t0) / (t1 - t0) if t1 > t0 else v1


class CpuSampler:
    """Samples this machine's CPU by part in a background thread; use as a context manager.

    ``interval_s`` trades precision for cost: each sample reads one small ``/proc`` file per
    tracked process (a few dozen) plus the command lines of processes not seen before
    (and, every ``recheck_every`` samples, of Ray's workers). At the default interval it
    costs the driver about 1% of a core, which ``bench`` reports as the driver's.
    """

    def __init__(self, interval_s: float = 0.5, recheck_every: int = 2) -> None:
        self.interval_s = interval_s
        #: a Ray worker's command line is read again every this many samples, to see
        #: whether it has become an actor (reading it each time would cost the driver)
        self.recheck_every = recheck_every
        self._samples = 0
        self._procs: dict[int, tuple[psutil.Process, _Series]] = {}
        self._ignored: set[int] = set()
        self._retired: list[_Series] = []
        self._machine: dict[str, _Series] = {key: _Series(key) for key in MACHINE}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._driver = os.getpid()

    def __enter__(self) -> CpuSampler:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """Read every tracked process's CPU time once (and find new processes)."""
        now = time.time_ns()
        machine = psutil.cpu_times()
        idle = machine.idle + getattr(machine, "iowait", 0.0)
        steal = getattr(machine, "steal", 0.0)
        busy = sum(machine) - idle - steal - getattr(machine, "guest", 0.0)
        busy -= getattr(machine, "guest_nice", 0.0)
        readings: list[tuple[_Series, float]] = []
        self._samples += 1
        recheck = self._samples % self.recheck_every == 1 or self.recheck_every <= 1
        for pid in psutil.pids():
            entry = self._procs.get(pid)
            if entry is None:
                if pid in self._ignored:
                    continue
                entry = self._track(pid)
                if entry is None:
                    continue
            proc, series = entry
            try:
                if recheck and series.role == "ray":
                    role = _actor_role(proc)
                    if role is not None:
                        # a Ray worker that became an actor: a new series from here on
                        self._retired.append(series)
                        series = _Series(role)
                        self._procs[pid] = (proc, series)
                times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            readings.append((series, times.user + times.system))
        with self._lock:
            for series, value in readings:
                series.add(now, value)
            for key, value in zip(MACHINE, (busy, idle, steal), strict=True):
                self._machine[key].add(now, value)

    def _track(self, pid: int) -> tuple[psutil.Process, _Series] | None:
        try:
            proc = psutil.Process(pid)
            role = role_of(proc.name(), proc.cmdline(), driver=pid == self._driver)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            role = None
        if role is None:
            self._ignored.add(pid)
            return None
        entry = (proc, _Series(role))
        self._procs[pid] = entry
        return entry

    def window(self, start_ns: int, end_ns: int) -> dict[str, float]:
        """CPU seconds used between two wall clock instants: one entry per :data:`ROLES`
        (``other`` is the busy time none of them used) and per :data:`MACHINE`."""
        out = dict.fromkeys(ROLES, 0.0)
        with self._lock:
            series = [s for _, s in self._procs.values() if s.times]
            series += [s for s in self._retired if s.times]
            for s in series:
                out[s.role] += max(0.0, s.at(end_ns) - s.at(start_ns))
            machine = {
                key: max(0.0, s.at(end_ns) - s.at(start_ns)) if s.times else 0.0
                for key, s in self._machine.items()
            }
        out["other"] = max(0.0, machine["busy"] - sum(out[r] for r in ROLES if r != "other"))
        return out | machine


def _actor_role(proc: psutil.Process) -> str | None:
    """The role of a Ray worker process now running one of our actors, else ``None``."""
    cmdline = proc.cmdline()
    if not cmdline or not cmdline[0].startswith("ray::"):
        return None  # Ray's own processes, or a worker still starting
    role = role_of(proc.name(), cmdline)
    return role if role != "ray" else None


def per_event_us(cpu: Mapping[str, float], events: int) -> dict[str, float]:
    """CPU seconds by part as microseconds per event."""
    return {key: seconds / events * 1e6 for key, seconds in cpu.items()} if events else {}
