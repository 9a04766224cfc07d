"""The vocabulary of a trial's modes: names and enums that every layer may read.

The store implements the isolation levels and counter strategies, the delivery layer the
brokers, the publisher the generation modes and the managed redis-server the fsync
policies; their names live here so that a trial's parameters (and whoever reads its
results) need none of those layers.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import TypeVar

#: the brokers (:mod:`harness.delivery.broker`)
BROKERS = ("stream", "list")
#: when publishers make their events (:mod:`harness.pipeline.publisher`)
GENERATE = ("inline", "ahead")
#: redis-server's appendfsync policies a trial may ask for (:mod:`harness.infra.redis_server`)
APPENDFSYNC = ("always", "everysec")
#: PostgreSQL's synchronous_commit a trial's own server may run with (fault = pg-crash):
#: ``off`` tells a client its commit succeeded before the WAL is on disk
SYNCHRONOUS_COMMIT = ("on", "off")
#: a trial's own PostgreSQL with a streaming standby (:mod:`harness.infra.replication`):
#: none, asynchronous, or synchronous (a commit waits for the standby to flush it)
PG_STANDBY = ("none", "async", "sync")
#: a trial's own Redis with a replica and three Sentinels
#: (:mod:`harness.infra.redis_replication`): none, asynchronous, or ``wait`` (a publisher
#: counts a round as sent only once ``WAIT`` says the replica has it)
REDIS_REPLICA = ("none", "async", "wait")


def replicas_waited_for(redis_replica: str) -> int:
    """How many replicas a publisher's ``WAIT`` asks for under this ``redis_replica``:
    1 with ``wait``, else 0 (no ``WAIT``)."""
    return 1 if redis_replica == "wait" else 0


_Choice = TypeVar("_Choice", bound=enum.Enum)


def _parse_choice(
    cls: type[_Choice], value: object, aliases: Mapping[str, str], what: str
) -> _Choice:
    """A member from its value in any case, with spaces or dashes for underscores."""
    if isinstance(value, cls):
        return value
    norm = re.sub(r"[\s-]+", "_", str(value).strip().lower())
    try:
        return cls(aliases.get(norm, norm))
    except ValueError:
        choices = ", ".join(str(member.value) for member in cls)
        raise ValueError(f"unknown {what} {value!r}; choose one of {choices}") from None


class Isolation(enum.Enum):
    READ_COMMITTED = "read_committed"
    REPEATABLE_READ = "repeatable_read"
    SERIALIZABLE = "serializable"

    @classmethod
    def parse(cls, value: str | Isolation) -> Isolation:
        """Accepts ``read_committed``, ``READ COMMITTED``, ``read-committed``, ``rc``…"""
        aliases = {"rc": "read_committed", "rr": "repeatable_read", "ser": "serializable"}
        return _parse_choice(cls, value, aliases, "isolation level")


class CounterStrategy(enum.Enum):
    """How ``apply_batch`` adds a batch to the counters, in the batch's own transaction.

    - ``atomic``: ``x = x + n`` on the one row ``shard = 0``. Concurrent batches queue
      on that row's lock; at REPEATABLE READ and SERIALIZABLE the losers get 40001.
    - ``rmw``: read the row, add in Python, write the sums back: the seed report's
      "WRONG" example, kept to measure it. At READ COMMITTED a batch that read the row
      before a concurrent batch committed overwrites that batch's counts (a lost
      update); at REPEATABLE READ and SERIALIZABLE the same conflict is a 40001.
    - ``sharded``: ``x = x + n`` on the caller's own row ``shard = <shard>``, so
      consumers with distinct shards never touch the same row; readers sum the rows.
    """

    ATOMIC = "atomic"
    RMW = "rmw"
    SHARDED = "sharded"

    @classmethod
    def parse(cls, value: str | CounterStrategy) -> CounterStrategy:
        """Accepts ``atomic``, ``rmw`` (or ``read-modify-write``), ``sharded``, any case."""
        return _parse_choice(cls, value, {"read_modify_write": "rmw"}, "counter strategy")

    @property
    def safe_isolations(self) -> frozenset[Isolation]:
        """The isolation levels at which this strategy is expected to count exactly."""
        if self is CounterStrategy.RMW:
            # Hermitage: lost update (P4) is possible at READ COMMITTED only.
            return frozenset({Isolation.REPEATABLE_READ, Isolation.SERIALIZABLE})
        return frozenset(Isolation)

    def safe_at(self, isolation: Isolation | str) -> bool:
        """Whether exact counters are expected at ``isolation``; where they are not, a
        shortfall is the strategy's known anomaly rather than a bug."""
        return Isolation.parse(isolation) in self.safe_isolations
