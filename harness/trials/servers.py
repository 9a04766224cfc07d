"""The servers a trial runs for itself, and their removal.

A fault that crashes Redis (``own_redis``) needs a redis-server of the trial's own,
persisting to an AOF; a trial with a replica (``redis_replica``), a Redis primary of its
own with that replica and three Sentinels; a fault that crashes PostgreSQL or fails it
over (``own_postgres``), or a trial with a standby (``pg_standby``), a PostgreSQL of its
own, with that standby. They start before the trial and are removed, with their
folders, after it and when the run ends, interrupted or not: nothing outlives the
harness.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from harness.delivery import broker as broker_mod
from harness.delivery.keys import Keys
from harness.infra.embedded import EmbeddedPostgres
from harness.infra.redis_replication import ReplicatedRedis
from harness.infra.redis_server import ManagedRedis
from harness.infra.replication import ReplicatedPostgres
from harness.store.postgres import Store
from harness.trials.faults import Fault
from harness.trials.params import TrialParams


class TrialServers:
    """The trial's own servers, if it has any (``None`` otherwise)."""

    def __init__(self, keys: Keys, pg_schema: str) -> None:
        self.keys = keys
        self.pg_schema = pg_schema
        self.redis: ManagedRedis | ReplicatedRedis | None = None
        self.brokers: dict[str, broker_mod.Broker] = {}
        self.postgres: EmbeddedPostgres | ReplicatedPostgres | None = None
        #: the store on :attr:`postgres`
        self.store: Store | None = None

    def start_redis(self, kind: Fault, p: TrialParams) -> str | None:
        """For a fault that crashes Redis, a redis-server of the trial's own with an AOF;
        for a trial with a replica, a primary, that replica and three Sentinels (its URL,
        which names the Sentinels; :attr:`brokers` are the driver's on it); ``None``: the
        run's."""
        if not kind.own_redis and p.redis_replica == "none":
            return None
        folder = Path(tempfile.mkdtemp(prefix="harness-redis-"))
        if p.redis_replica == "none":
            self.redis = ManagedRedis(folder, appendfsync=p.appendfsync)
        else:
            self.redis = ReplicatedRedis(
                folder,
                p.redis_replica,
                appendfsync=p.appendfsync,
                failovers=p.faults if kind.needs_replica else 0,
            )
        self.redis.start()
        self.brokers = {
            name: broker_mod.open_broker(name, self.redis.url, self.keys, role="driver")
            for name in broker_mod.BROKERS
        }
        return self.redis.url

    def start_postgres(self, kind: Fault, p: TrialParams) -> str | None:
        """For a fault that crashes PostgreSQL, or a trial with a standby, a deployment
        of the trial's own (its DSN; :attr:`store` is on it); ``None``: the run's."""
        if not kind.own_postgres and p.pg_standby == "none":
            return None
        folder = Path(tempfile.mkdtemp(prefix="harness-pg-trial-"))
        folder.chmod(0o755)  # the server may run as another user (as root: nobody)
        if p.pg_standby == "none":
            self.postgres = EmbeddedPostgres(
                folder, options={"synchronous_commit": p.synchronous_commit}
            )
        else:
            self.postgres = ReplicatedPostgres(
                folder,
                p.pg_standby,
                p.synchronous_commit,
                failovers=p.faults if kind.needs_standby else 0,
            )
        self.postgres.start()
        self.store = Store(self.postgres.dsn, schema=self.pg_schema)
        self.store.create_schema()
        return self.postgres.dsn

    def stop(self) -> None:
        """Stop whatever runs and remove its folders."""
        if self.redis is not None:
            for channel in self.brokers.values():
                channel.client.close()
            self.redis.stop()
            shutil.rmtree(self.redis.directory, ignore_errors=True)
            self.redis, self.brokers = None, {}
        if self.postgres is not None:
            if self.store is not None:
                self.store.close()
            self.postgres.stop()
            shutil.rmtree(self.postgres.directory, ignore_errors=True)
            self.postgres, self.store = None, None
