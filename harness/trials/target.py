"""A running trial as the faults act on it: the driver's side of :class:`faults.Target`.

Each method does one thing to the system under test, or looks at it, with what the
runner holds (the actors, the store's connection, the trial's own redis-server).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError

from harness.delivery.keys import Keys
from harness.infra.redis_server import ManagedRedis
from harness.store.postgres import Store
from harness.trials.faults import CONSUMER_APPLICATION, FIND_S
from harness.trials.state import TrialState

#: how long a consumer armed to die after its next commit is given to commit one (under
#: load, milliseconds); one that has not died by then is killed like the others
CRASH_WAIT_S = 5.0

Reports = dict[int, dict[str, Any]]


@dataclasses.dataclass
class FaultTarget:
    run: TrialState
    store: Store
    keys: Keys
    #: the trial's own redis-server (faults with ``own_redis``)
    managed: ManagedRedis | None
    #: a new consumer actor, not started
    new_consumer: Callable[[], Any]
    #: the live consumers' reports; drops the ones that died from ``alive``
    poll_consumers: Callable[[dict[int, Any]], Reports]
    #: the consumers' reports at the poll that injects the fault
    reports: Reports = dataclasses.field(default_factory=dict)

    def kill_consumer(self) -> int:
        """SIGKILL-like: no cleanup, mid-batch. A new actor takes the same consumer name,
        so it finds the entries its predecessor held in its pending list."""
        run, alive = self.run, self.run.alive
        index, hit = self._victim()
        run.dead_reports.append(self.reports.get(index, {}))
        if len(run.in_flight) % 2 == 1:
            # every other kill lands at the worst moment: right after a commit, before its
            # acknowledgement, so what it committed is delivered again (and must be
            # recognised); the others land wherever the victim is
            crash_after_next_commit(alive[index])
        ray.kill(alive[index], no_restart=True)
        replacement = run.spares.pop() if run.spares else self.new_consumer()
        ray.get(replacement.start.remote(run.configs[index], **run.consumer_setup))
        alive[index] = replacement
        return hit

    def busy_backends(self) -> int:
        return self.store.busy_backends(CONSUMER_APPLICATION)

    def terminate_backends(self) -> None:
        self.store.terminate_backends(CONSUMER_APPLICATION)

    def unacknowledged(self) -> int:
        return self.run.broker.backlog().unacknowledged

    def restart_redis(self) -> None:
        if self.managed is None:
            raise RuntimeError("this trial has no redis-server of its own to restart")
        self.managed.restart()

    def held(self) -> int:
        """Delivered, unacknowledged entries (stream), or events read and not committed,
        as the consumers last said (the seed's list)."""
        pending = self.run.broker.pending_by_consumer()
        if pending or self.run.trial.params.broker == "stream":
            return sum(pending.values())
        return sum(r.get("in_hand", 0) for r in self.poll_consumers(self.run.alive).values())

    def kill_redis_clients(self) -> None:
        channel = self.run.brokers["stream"]
        channel.kill_clients(self.keys.client_name("consumer"))
        channel.kill_clients(self.keys.client_name("publisher"))

    def _victim(self) -> tuple[int, int]:
        """The consumer to kill: one that holds work now (seeded among those that do), and
        what it holds; refreshes :attr:`reports` on the list broker."""
        run = self.run
        names = {run.configs[i].name: i for i in run.alive}
        deadline = time.monotonic() + FIND_S
        while True:
            if run.trial.params.broker == "stream":
                pending = run.broker.pending_by_consumer()
                held = {names[n]: k for n, k in pending.items() if n in names and k > 0}
            else:
                self.reports = self.poll_consumers(run.alive) or self.reports
                held = {i: r["in_hand"] for i, r in self.reports.items() if r.get("in_hand")}
            if held:
                index = run.victims.choice(sorted(held))
                return index, held[index]
            if time.monotonic() > deadline:
                return run.victims.choice(sorted(run.alive)), 0
            time.sleep(0.005)


def crash_after_next_commit(actor: Any) -> bool:
    """Arm a consumer actor to exit after its next commit, and wait until it has; ``False``
    when it had not within :data:`CRASH_WAIT_S` (nothing to commit)."""
    try:
        ray.get(actor.crash_after_next_commit.remote())
    except RayActorError:
        return True
    deadline = time.monotonic() + CRASH_WAIT_S
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ready.remote(), timeout=1)
        except (RayActorError, ray.exceptions.GetTimeoutError):
            return True
        time.sleep(0.005)
    return False
