"""A Redis primary with a replica and three Sentinels, on this machine, for a trial to fail
over: the Redis analogue of :class:`~harness.infra.replication.ReplicatedPostgres`.

Every server persists with an append-only file (``appendfsync`` as asked); the replica
streams from the primary (``replicaof``), and three Sentinels watch the primary with a
quorum of 2. When the primary dies they agree it is down, elect one of them, and that one
promotes the replica; clients find whichever is primary as users' clients do, through the
Sentinels: a ``redis+sentinel://`` URL (:mod:`harness.infra.sentinel_url`), which
:func:`harness.delivery.protocol.connect` turns into a client that asks them again after a
connection error.

Redis replication is asynchronous: a write is acknowledged before the replica has it, and
a failover loses what the replica had not received. With ``mode = "wait"`` clients send
``WAIT 1`` after their writes (:attr:`ReplicatedRedis.wait_replicas` replicas; its timeout
is :data:`harness.delivery.protocol.WAIT_TIMEOUT_MS`), which returns once the replica has
acknowledged them: a write it confirmed
this way survives the primary's crash. The servers are the same in both modes; the mode
says what the clients do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.infra import processes
from harness.infra.processes import free_port
from harness.infra.redis_server import RedisServerError, executable
from harness.infra.sentinel_url import SentinelAddress
from harness.model.modes import APPENDFSYNC, replicas_waited_for

REPLICATION_MODES = ("async", "wait")
#: Sentinels, and how many must agree the primary is down before one fails it over
SENTINELS = 3
QUORUM = 2
#: how long the primary may not answer before a Sentinel deems it down. Not less: after
#: a failover a Sentinel connects to the promoted primary only on its next reconnection
#: attempt (one a second), and meanwhile counts it as not answering; at 1000 or below
#: two Sentinels could deem the new primary down too and fail it over again, onto the
#: crashed one that has only just come back
DOWN_AFTER_MS = 1500
#: Sentinel's failover timeout: an election or a promotion not done by then is abandoned,
#: and a Sentinel tries the same master again only after twice this (a failover that
#: succeeded resets the clock: the next may follow at once)
FAILOVER_TIMEOUT_MS = 3000
#: how long a server, the replication link, the Sentinels' agreement or a promotion is
#: given before :class:`ReplicationError`
STARTUP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 30.0
PROMOTION_TIMEOUT_S = 30.0
HOST = "127.0.0.1"


class ReplicationError(RedisServerError):
    """The primary, replica and Sentinels did not start, agree, or fail over in time."""


@dataclasses.dataclass
class _Node:
    """One redis-server: its port and folder (config, log, AOF) outlive its processes."""

    name: str
    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.directory / (
            "sentinel.conf" if self.name.startswith("sentinel") else "redis.conf"
        )

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name.partition('-')[0]}.log"


@dataclasses.dataclass
class ReplicatedRedis:
    """A primary, its replica and three Sentinels in ``directory`` (removed by :meth:`stop`)."""

    directory: Path
    #: ``async``: writes return before the replica has them; ``wait``: clients follow
    #: them with ``WAIT 1`` (see :attr:`wait_replicas`)
    mode: str
    appendfsync: str = "everysec"
    #: the name the Sentinels know the primary by
    master: str = "harness"
    #: failovers to be ready for: after each, the crashed primary comes back as the
    #: replica of the promoted one, so the next has a replica to promote
    failovers: int = 1
    #: failovers so far
    failed_over: int = 0
    #: per failover, seconds from the primary's crash until a Sentinel named the promoted
    #: replica and it answered as master
    promotion_s: list[float] = dataclasses.field(default_factory=list, init=False)
    #: per failover, replication stream the primary had written when it was last asked,
    #: just before its crash, that the promoted replica had not read (bytes): a lower
    #: bound of what it lacked (the primary may have written more in between), where
    #: :meth:`offset_gap` is an upper bound
    missing: list[int] = dataclasses.field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.mode not in REPLICATION_MODES:
            raise ValueError(f"replication mode must be one of {', '.join(REPLICATION_MODES)}")
        if self.appendfsync not in APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {', '.join(APPENDFSYNC)}")
        if not self.master or any(c.isspace() for c in self.master):
            raise ValueError(f"master name {self.master!r}: not empty, no spaces")
        if self.failovers < 0:
            raise ValueError(f"failovers must be ≥ 0, not {self.failovers}")
        ports: list[int] = []
        while len(ports) < 2 + SENTINELS:
            if (port := free_port()) not in ports:
                ports.append(port)
        self._nodes = [
            _Node(f"redis-{n}", ports[n], self.directory / f"node-{n}") for n in range(2)
        ]
        self._sentinels = [
            _Node(f"sentinel-{n}", port, self.directory / f"sentinel-{n}")
            for n, port in enumerate(ports[2:])
        ]
        self._primary, self._replica = self._nodes
        #: every process started, in order (a restarted node's old one too)
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def wait_replicas(self) -> int:
        """How many replicas a client's ``WAIT`` asks for after a write: 1 in mode
        ``wait``, 0 (no ``WAIT``) in mode ``async``."""
        return replicas_waited_for(self.mode)

    @property
    def sentinels(self) -> tuple[tuple[str, int], ...]:
        return tuple((HOST, node.port) for node in self._sentinels)

    @property
    def url(self) -> str:
        """A ``redis+sentinel://`` URL naming the Sentinels and the master (db 0)."""
        return SentinelAddress(self.sentinels, self.master).url

    @property
    def ports(self) -> tuple[int, int]:
        """The two servers' ports (each keeps its port across a crash and restart)."""
        return self._nodes[0].port, self._nodes[1].port

    @property
    def replica_port(self) -> int:
        """The port of the server that should be the replica now."""
        return self._replica.port

    @property
    def pids(self) -> list[int]:
        """Every process this deployment started, the crashed ones too."""
        return [proc.pid for proc in self._procs]

    @property
    def primary_port(self) -> int:
        """The current primary's port, as the first Sentinel that answers names it."""
        errors = []
        for _, port in self.sentinels:
            try:
                with _client(port) as client:
                    reply = client.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master
                    )
            except redis.RedisError as exc:
                errors.append(f"{port}: {exc}")
                continue
            if reply:
                return int(reply[1])
            errors.append(f"{port}: does not know {self.master!r}")
        raise ReplicationError(f"no Sentinel names the primary: {'; '.join(errors)}")

    def start(self) -> None:
        """Start the primary, the replica and the Sentinels; return once the replica
        streams and every Sentinel watches the primary, sees the replica and the other
        Sentinels (after a failure, :meth:`stop` still removes what was started)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._start_server(self._primary, replica_of=None)
        self._start_server(self._replica, replica_of=self._primary.port)
        for sentinel in self._sentinels:
            self._start_sentinel(sentinel)
        self._wait_ready()

    def offset_gap(self) -> int:
        """Replication stream the primary has written and its replica has not acknowledged,
        bytes (0 when no replica is connected: there is nothing to compare). An upper
        bound of what a failover now would lose: a replica acknowledges once a second
        (and at once for a ``WAIT``), so some of it may have arrived. Right after a
        ``WAIT`` it is the ``REPLCONF GETACK`` the WAIT itself sent (37 bytes): the
        replica answers it with the offset before it."""
        with _client(self._primary.port) as client:
            info = client.info("replication")
        acknowledged = [
            int(value["offset"])
            for key, value in info.items()
            if key.startswith("slave") and isinstance(value, dict) and "offset" in value
        ]
        if not acknowledged:
            return 0
        return max(0, int(info["master_repl_offset"]) - max(acknowledged))

    def fail_over(self) -> int:
        """The primary crashes (SIGKILL) and the Sentinels promote the replica; then the
        crashed server starts again, on its port with its config, as the replica of the
        promoted one, and streams, so that the next failover has a replica. Returns the
        :meth:`offset_gap` measured just before the crash; the time to the promotion is
        appended to :attr:`promotion_s`, what the replica lacked to :attr:`missing`. Its
        AOF's writes the replica never had are dropped: it resynchronises in full from the
        promoted one."""
        if self.failed_over >= self.failovers:
            raise ReplicationError(f"ready for {self.failovers} failovers, not more")
        old, new = self._primary, self._replica
        gap = self.offset_gap()
        with _client(old.port) as client:
            written = int(client.info("replication")["master_repl_offset"])
        started = time.monotonic()
        _crash(old)
        self._wait_promoted(new)
        self.promotion_s.append(time.monotonic() - started)
        with _client(new.port) as client:
            # a promoted replica's history with its old primary ends where it had read to
            had = int(client.info("replication")["second_repl_offset"]) - 1
        self.missing.append(max(0, written - had))
        # replicaof from the start: without it the old primary would come back as a second
        # master until a Sentinel noticed and demoted it (after the failover timeout)
        self._start_server(old, replica_of=new.port)
        self._primary, self._replica = new, old
        self.failed_over += 1
        self._wait_ready()
        return gap

    def stop(self) -> None:
        """Stop every process it ran (each on its own: one that fails stops none of the
        others from stopping; the Sentinels first, so that none fails anything over) and
        remove the folder. Safe to call again, and after a failed :meth:`start`."""
        for proc in [*self._sentinel_procs(), *reversed(self._procs)]:
            with contextlib.suppress(Exception):
                processes.stop(proc)
        for node in (*self._nodes, *self._sentinels):
            node.proc = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def _sentinel_procs(self) -> list[subprocess.Popen[bytes]]:
        return [node.proc for node in self._sentinels if node.proc is not None]

    def _start_server(self, node: _Node, *, replica_of: int | None) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        if not node.config.exists():  # a restart keeps it (Sentinel may have rewritten it)
            node.config.write_text(
                _config(
                    **_basics(node),
                    appendonly="yes",
                    appendfsync=self.appendfsync,
                    save='""',
                    **{
                        "repl-diskless-sync": "yes",
                        "repl-diskless-sync-delay": "0",
                        "min-replicas-to-write": "0",
                    },
                )
            )
        # on the command line, after the file: it wins over a replicaof Sentinel wrote there
        extra = (
            ["--replicaof", HOST, str(replica_of)] if replica_of else ["--replicaof", "no", "one"]
        )
        self._spawn(node, [executable(), str(node.config), *extra])

    def _start_sentinel(self, node: _Node) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        name = self.master
        node.config.write_text(
            _config(**_basics(node))
            + "sentinel resolve-hostnames no\n"
            + f"sentinel monitor {name} {HOST} {self._primary.port} {QUORUM}\n"
            + f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}\n"
            + f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}\n"
            + f"sentinel parallel-syncs {name} 1\n"
        )
        self._spawn(node, [executable(), str(node.config), "--sentinel"])

    def _spawn(self, node: _Node, argv: list[str]) -> None:
        """Start ``argv`` as ``node``'s process; return once it answers (and, a server,
        has loaded its data)."""
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        node.proc = proc
        self._procs.append(proc)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with _client(node.port, timeout=0.5) as client:
            while True:
                try:
                    if client.ping() and (
                        node.name.startswith("sentinel")
                        or client.info("persistence").get("loading") == 0
                    ):
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ReplicationError(
                        f"{node.name} on port {node.port} did not start" + self._logs()
                    )
                time.sleep(0.02)

    def _wait_ready(self) -> None:
        """Until the replica streams from the primary, and every Sentinel names the
        primary, watches it up, sees the replica up and streaming, and the other Sentinels."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                waiting_for = self._not_ready()
            except redis.RedisError as exc:
                waiting_for = str(exc)
            if waiting_for is None:
                return
            if time.monotonic() > deadline:
                raise ReplicationError(
                    f"not ready after {READY_TIMEOUT_S:.0f} s: {waiting_for}" + self._logs()
                )
            time.sleep(0.05)

    def _not_ready(self) -> str | None:
        """What is not yet as :meth:`_wait_ready` wants it; ``None`` when all is."""
        primary, replica = self._primary.port, self._replica.port
        with _client(replica) as client:
            info = client.info("replication")
        if info.get("master_port") != primary or info.get("master_link_status") != "up":
            return (
                f"replica {replica} streams from {info.get('master_port')}:"
                f" {info.get('master_link_status')}, not from {primary}: up"
            )
        for _, port in self.sentinels:
            with _client(port) as client:
                master = _pairs(client.execute_command("SENTINEL", "MASTER", self.master))
                replicas = [
                    _pairs(item)
                    for item in client.execute_command("SENTINEL", "REPLICAS", self.master)
                ]
            if int(master["port"]) != primary or master["flags"] != "master":
                return f"Sentinel {port} sees master {master['port']} as {master['flags']}"
            if int(master["num-other-sentinels"]) != SENTINELS - 1:
                return f"Sentinel {port} knows {master['num-other-sentinels']} other Sentinels"
            states = {int(r["port"]): (r["flags"], r.get("master-link-status")) for r in replicas}
            if states.get(replica) != ("slave", "ok"):
                return f"Sentinel {port} sees replica {replica} as {states.get(replica)}"
        return None

    def _wait_promoted(self, new: _Node) -> None:
        """Until a Sentinel names ``new`` the primary and it answers as master."""
        deadline = time.monotonic() + PROMOTION_TIMEOUT_S
        seen = "nothing"
        while True:
            try:
                port = self.primary_port
                seen = f"Sentinels name {port}"
                if port == new.port:
                    with _client(port) as client:
                        role = client.execute_command("ROLE")
                    seen += f", which answers {role[0]!r}"
                    if role[0] == "master":
                        return
            except (redis.RedisError, ReplicationError) as exc:
                seen = str(exc)
            if time.monotonic() > deadline:
                raise ReplicationError(
                    f"replica {new.port} not promoted after {PROMOTION_TIMEOUT_S:.0f} s: {seen}"
                    + self._logs()
                )
            time.sleep(0.02)

    def _logs(self) -> str:
        tails = []
        for node in (*self._nodes, *self._sentinels):
            if node.log.exists():
                tail = node.log.read_text(errors="replace")[-600:]
                tails.append(f"\n--- {node.name} ({node.port}) {node.log.name}:\n{tail}")
        return "".join(tails)


def _crash(node: _Node) -> None:
    """SIGKILL, as :meth:`ManagedRedis.crash`: no shutdown, no fsync beyond appendfsync's."""
    if node.proc is not None and node.proc.poll() is None:
        node.proc.kill()
        node.proc.wait(10)


def _client(port: int, timeout: float = 1.0) -> redis.Redis:
    """A client of its own for a look at one server or Sentinel: short timeouts, and no
    retries (redis-py retries a failed command 3 times, with back-off, by default: the
    callers poll, and a server that is down should say so at once)."""
    return redis.Redis(
        HOST,
        port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _basics(node: _Node) -> dict[str, Any]:
    """What every server and Sentinel's config says: where it listens, works and logs."""
    return {
        "port": node.port,
        "bind": HOST,
        "dir": node.directory,
        "logfile": node.log,
        "daemonize": "no",
    }


def _config(**settings: Any) -> str:
    """A config file's lines: ``key value``; paths in quotes."""
    lines = []
    for key, value in settings.items():
        text = f'"{value}"' if isinstance(value, Path) else str(value)
        lines.append(f"{key} {text}\n")
    return "".join(lines)


def _pairs(reply: Any) -> dict[str, Any]:
    """A Sentinel's flat ``[key, value, key, value…]`` reply as a dict."""
    if isinstance(reply, dict):
        return {str(k): v for k, v in reply.items()}
    items = list(reply)
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
