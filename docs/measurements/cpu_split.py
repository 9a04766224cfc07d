"""Where the cores went while one command ran: CPU seconds per process group (PostgreSQL,
Redis, each other command line) over the command's wall clock, the command's own
included. Run it around `harness publish` with `harness serve` already running:

    python docs/measurements/cpu_split.py python -m harness publish --events 400000 --seed 1
"""

import resource
import subprocess
import sys
import time

import psutil


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """Every process's group name and CPU seconds so far (user + system)."""
    out = {}
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        name, times = proc.info["name"] or "", proc.info["cpu_times"]
        if times is None:
            continue
        if "postgres" in name:
            group = "postgres"
        elif "redis" in name:
            group = "redis"
        else:
            group = " ".join(proc.info["cmdline"] or [])[:80]
        out[proc.pid] = (group, times.user + times.system)
    return out


before, started = cpu_by_process(), time.time()
children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
after, wall = cpu_by_process(), time.time() - started
print(done.stdout[-600:])
groups: dict[str, float] = {}
for pid, (group, cpu) in after.items():
    spent = cpu - before.get(pid, (group, 0.0))[1]
    if spent >= 0.05:
        groups[group] = groups.get(group, 0.0) + spent
for group, spent in sorted(groups.items(), key=lambda item: -item[1]):
    print(f"{spent / wall:5.2f} cores  {group}")
own = (
    children_after.ru_utime + children_after.ru_stime
    - children_before.ru_utime - children_before.ru_stime
)  # fmt: skip
print(f"{own / wall:5.2f} cores  the command itself")
print(f"wall {wall:.1f} s")
