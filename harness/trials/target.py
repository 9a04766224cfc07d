"""A running trial as the faults act on it: the driver's side of :class:`faults.Target`.

Each method does one thing to the system under test, or looks at it, with what the
runner holds (the actors, the store's connection, the trial's own redis-server).
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from harness.delivery.keys import Keys
from harness.infra import processes
from harness.infra.embedded import EmbeddedPostgres
from harness.infra.redis_replication import ReplicatedRedis
from harness.infra.redis_server import ManagedRedis
from harness.infra.replication import ReplicatedPostgres
from harness.store.postgres import Store
from harness.trials.faults import CONSUMER_APPLICATION, FIND_S, pause_s
from harness.trials.state import FaultWindow, Pause, TrialState

#: how long a consumer armed to die after its next commit is given to commit one (under
#: load, milliseconds); one that has not died by then is killed like the others
CRASH_WAIT_S = 5.0

Reports = dict[int, dict[str, Any]]
#: the states /proc gives a stopped process
STOPPED = ("T", "t")


@ray.remote(num_cpus=0)
def _signal_on_node(pid: int, signum: int | None) -> str:
    return processes.signal_process(pid, signum)


def signal_actor(node: str, pid: int, signum: int | None = None) -> str:
    """Send ``signum`` to process ``pid`` on Ray node ``node`` (``None``: only look), from
    the driver when it is that node, else from a task placed there; its state after."""
    if node == ray.get_runtime_context().get_node_id():
        return processes.signal_process(pid, signum)
    on_node = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
    return str(ray.get(_signal_on_node.options(scheduling_strategy=on_node).remote(pid, signum)))


def continue_process(node: str, pid: int) -> None:
    """SIGCONT a paused consumer's process (gone already: nothing to do)."""
    signal_actor(node, pid, signal.SIGCONT)


def continue_paused(
    run: TrialState, poll_peers: Callable[[], Reports], *, now: float, every: bool = False
) -> None:
    """Continue the paused consumers whose pause is over by ``now`` (the driver's
    monotonic clock; ``every``: all of them). A pause hit what its peers took over
    meanwhile: that is the fault's in-flight count (none taken over: it missed)."""
    for index, pause in list(run.paused.items()):
        if not every and now < pause.until:
            continue
        continue_process(pause.node, pause.pid)
        pause.window.end_s = run.since_origin()
        del run.paused[index]
        taken = sum(r.get("delivered_again", 0) for i, r in poll_peers().items() if i != index)
        run.in_flight[pause.fault] = max(0, taken - pause.reclaimed_before)
        pause.window.detail = f"peers took over {run.in_flight[pause.fault]:,} events"


@dataclasses.dataclass
class FaultTarget:
    run: TrialState
    store: Store
    keys: Keys
    #: the trial's own redis-server (faults with ``own_redis``), or its primary with a
    #: replica and Sentinels (``redis_replica``)
    managed: ManagedRedis | ReplicatedRedis | None
    #: the trial's own PostgreSQL (faults with ``own_postgres``), with its standby
    own_postgres: EmbeddedPostgres | ReplicatedPostgres | None
    #: a new consumer actor, not started
    new_consumer: Callable[[], Any]
    #: the live consumers' reports; drops the ones that died from ``alive``
    poll_consumers: Callable[[dict[int, Any]], Reports]
    #: the consumers' reports at the poll that injects the fault
    reports: Reports = dataclasses.field(default_factory=dict)
    #: the window of the fault being injected (set by the runner before each)
    window: FaultWindow | None = None

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
        if not isinstance(self.managed, ManagedRedis):
            raise RuntimeError("this trial has no redis-server of its own to restart")
        self.managed.restart()

    def fail_over_redis(self) -> None:
        own = self.managed
        if not isinstance(own, ReplicatedRedis):
            raise RuntimeError("this trial has no Redis replica to promote")
        gap = own.fail_over()
        if self.window is not None:
            self.window.detail = (
                f"replica {gap:,} B unacknowledged, ≥ {own.missing[-1]:,} B missing"
            )

    def crash_postgres(self) -> None:
        if self.own_postgres is None:
            raise RuntimeError("this trial has no PostgreSQL of its own to crash")
        self.store.close()  # the driver's connection dies with the server: reconnect after
        self.own_postgres.restart()

    def fail_over_postgres(self) -> None:
        own = self.own_postgres
        if not isinstance(own, ReplicatedPostgres):
            raise RuntimeError("this trial has no standby to promote")
        lag = own.lag_bytes()
        self.store.close()
        own.fail_over()
        if self.window is not None:
            self.window.detail = f"standby {lag:,} B behind"

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

    def pause_consumer(self) -> int:
        """Stop a consumer that holds work until the runner continues it (its pause is
        :func:`~harness.trials.faults.pause_s` long); every other pause lands right after
        a commit, before its acknowledgement. What it held."""
        run = self.run
        assert self.window is not None, "the runner sets the fault's window"
        index, hit = self._victim()
        actor = run.alive[index]
        pid, node = ray.get([actor.pid.remote(), actor.ready.remote()])
        report = self.reports.get(index) or self.poll_consumers({index: actor}).get(index, {})
        peers = {i: r for i, r in self.reports.items() if i != index}
        reclaimed_before = sum(r.get("delivered_again", 0) for r in peers.values())
        if len(run.in_flight) % 2 == 1:
            # not waited for: the consumer may stop itself before this call has answered,
            # and only we continue it (waiting deadlocked until gRPC's keepalive gave up)
            actor.pause_after_next_commit.remote(CRASH_WAIT_S)
            deadline = time.monotonic() + CRASH_WAIT_S
            while signal_actor(node, pid) not in STOPPED and time.monotonic() < deadline:
                time.sleep(0.005)
        if signal_actor(node, pid) not in STOPPED:  # nothing to commit: stop it as it is
            signal_actor(node, pid, signal.SIGSTOP)
        run.paused[index] = Pause(
            pid=pid,
            node=node,
            until=time.monotonic() + pause_s(run.trial.params.claim_idle_ms),
            window=self.window,
            fault=len(run.in_flight),
            report=report,
            reclaimed_before=reclaimed_before,
        )
        return hit

    def pausing(self) -> bool:
        return bool(self.run.paused)

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
