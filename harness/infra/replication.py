"""A PostgreSQL primary with a streaming standby, on this machine, for a trial to fail over.

The primary is an :class:`~harness.infra.embedded.EmbeddedPostgres` with WAL for a
replica; the standby is cloned from it (``pg_basebackup -R``) and streams from it. With
``mode = "sync"`` the primary names it in ``synchronous_standby_names``, so a commit
returns only once the standby has flushed it; with ``async`` it returns before, and a
failover loses the tail the standby had not received. Clients find whichever is primary
as users' clients do: a multi-host DSN with ``target_session_attrs=read-write``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from pathlib import Path

import psycopg

from harness.infra.embedded import EmbeddedError, EmbeddedPostgres
from harness.infra.processes import free_port

#: how long a standby is given to catch up with its primary and stream
STREAMING_TIMEOUT_S = 30.0
STANDBY_MODES = ("async", "sync")


@dataclasses.dataclass
class ReplicatedPostgres:
    """A primary and its standby in ``directory`` (removed by :meth:`stop`)."""

    directory: Path
    #: ``async`` or ``sync`` replication
    mode: str
    synchronous_commit: str = "on"
    #: failovers to be ready for: each needs a new standby, on a port of its own that the
    #: DSN names from the start (a client's DSN does not change mid-trial)
    failovers: int = 1
    primary: EmbeddedPostgres = dataclasses.field(init=False)
    standby: EmbeddedPostgres = dataclasses.field(init=False)
    #: the port of every server this deployment will run, in the order they take over
    ports: list[int] = dataclasses.field(init=False)
    #: failovers so far
    failed_over: int = 0

    def __post_init__(self) -> None:
        if self.mode not in STANDBY_MODES:
            raise ValueError(f"standby mode must be one of {', '.join(STANDBY_MODES)}")
        options = {
            "synchronous_commit": self.synchronous_commit,
            "wal_level": "replica",
            "max_wal_senders": "4",
            "wal_keep_size": "512MB",
        }
        if self.mode == "sync":
            options["synchronous_standby_names"] = "'*'"  # quoted for pg_ctl's shell
        self._options = options
        self.ports = [free_port() for _ in range(self.failovers + 2)]
        self.primary = EmbeddedPostgres(self.directory / "node-0", self.ports[0], options)
        self.standby = self._node(1)
        self._gone: list[EmbeddedPostgres] = []

    def _node(self, n: int) -> EmbeddedPostgres:
        """The ``n``-th server: a standby to be, with the primary's settings for when it
        is promoted (a standby ignores them until then)."""
        return EmbeddedPostgres(self.directory / f"node-{n}", self.ports[n], dict(self._options))

    @property
    def dsn(self) -> str:
        """Every server the deployment will run; libpq connects to whichever accepts
        writes (the others refuse at once, or answer read-only)."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)  # the servers may run as another user (as root: nobody)
        self.primary.start()
        self.primary.clone(self.standby)
        self.standby.start()
        self._wait_streaming()

    def _wait_streaming(self) -> None:
        """Until the primary sees its standby streaming (and, in sync mode, as ``sync``)."""
        wanted = "sync" if self.mode == "sync" else "async"
        deadline = time.monotonic() + STREAMING_TIMEOUT_S
        while True:
            with psycopg.connect(self.primary.dsn, autocommit=True, connect_timeout=5) as conn:
                states = conn.execute(
                    "SELECT state, sync_state FROM pg_stat_replication"
                ).fetchall()
            if ("streaming", wanted) in states:
                return
            if time.monotonic() > deadline:
                raise EmbeddedError(f"the standby does not stream ({wanted}): {states}")
            time.sleep(0.05)

    def lag_bytes(self) -> int:
        """WAL the primary has written that its standby has not replayed, bytes (0 when
        the standby is not connected: there is nothing to compare)."""
        with psycopg.connect(self.primary.dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0)"
                " FROM pg_stat_replication"
            ).fetchone()
        return int(row[0]) if row else 0

    def restart(self) -> None:
        """The primary crashes and starts again (its standby reconnects)."""
        self.primary.restart()

    def fail_over(self) -> None:
        """The primary crashes (immediate shutdown) and the standby is promoted; then a new
        standby is cloned from it, so that the next failover has one (until it streams,
        commits on the new primary are not replicated: the deployment is degraded)."""
        if self.failed_over >= self.failovers:
            raise EmbeddedError(f"ready for {self.failovers} failovers, not more")
        self.primary.crash()
        self.standby.promote()
        self._gone.append(self.primary)
        self.primary, self.failed_over = self.standby, self.failed_over + 1
        self.standby = self._node(self.failed_over + 1)
        self.primary.clone(self.standby)
        self.standby.start()
        self._wait_streaming()

    def stop(self) -> None:
        """Stop every server it ran (each on its own: one that fails stops none of the
        others from stopping) and remove the folder."""
        for server in (self.standby, self.primary, *self._gone):
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
