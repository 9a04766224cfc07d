"""What a broker hands a consumer, and what every broker must do.

Both brokers (:mod:`harness.delivery.broker`, the stream; :mod:`harness.delivery.listbroker`,
list) and their users depend on this module, and it on neither: the entry fields, the
`Delivery` and `Backlog` records, the :class:`Broker` base class, and the
Redis connection every broker opens.
"""

from __future__ import annotations

import abc
import dataclasses
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from harness.delivery.keys import Keys
from harness.infra import sentinel_url

FIELD_EVENTS = b"e"
FIELD_COUNT = b"n"
FIELD_CREATED_NS = b"t"
#: the entry's identity: the producer that made it and its number there (see :class:`Producer`)
FIELD_PRODUCER = b"p"
FIELD_SEQ = b"s"

#: the producer id of entries that carry no identity of their own: the consumer numbers
#: them by their stream entry id, which recognises a broker's redelivery (not a re-send)
ANONYMOUS = 0


class Producer:
    """Where entry identities come from: ``(producer id, sequence number)``.

    Kafka's idempotent producer, for a stream: each publisher (each connection of the
    HTTP service) draws a random 63-bit id when it starts, so an identity is never reused,
    not across restarts of the publisher nor of Redis, and numbers its entries 0, 1, 2….
    A round sent again because its reply never came keeps its identities, so the copy
    that arrives second is recognised by the consumers; a deliberate re-send takes new
    ones and is a new receipt. Thread-safe.
    """

    def __init__(self, producer_id: int | None = None) -> None:
        self.id = producer_id if producer_id is not None else secrets.randbits(63) or 1
        self._next = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> list[tuple[int, int]]:
        """Identities for ``n`` new entries."""
        with self._lock:
            first, self._next = self._next, self._next + n
        return [(self.id, seq) for seq in range(first, first + n)]

    @property
    def taken(self) -> int:
        """How many identities were handed out."""
        return self._next


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a consumer."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    #: ``True`` when it came back from the pending list (own restart or a reclaim).
    redelivered: bool

    @property
    def created_ns(self) -> int:
        try:
            return int(self.fields.get(FIELD_CREATED_NS, b"0"))
        except ValueError:
            return 0

    @property
    def payload(self) -> bytes:
        return self.fields.get(FIELD_EVENTS, b"")

    def with_events(self, events: bytes, count: int) -> Delivery:
        """This delivery carrying other events (some of its own, to dead-letter)."""
        fields = {**self.fields, FIELD_EVENTS: events, FIELD_COUNT: str(count).encode()}
        return dataclasses.replace(self, fields=fields)

    @property
    def seen_ms(self) -> int:
        """When the broker took the entry (ms): a stream entry id's time; for the list
        broker, which keeps no such time, when it was popped."""
        head = self.entry_id.partition(b"-")[0]
        return int(head) if head.isdigit() else time.time_ns() // 1_000_000

    @property
    def identity(self) -> tuple[int, int] | None:
        """``(producer, sequence)``: the publisher's, or, for an entry without one,
        (:data:`ANONYMOUS`, its stream entry id as one number); ``None`` when there is
        nothing to recognise it by (then every delivery of it is a receipt)."""
        producer, seq = self.fields.get(FIELD_PRODUCER), self.fields.get(FIELD_SEQ)
        if producer is not None and seq is not None:
            try:
                return int(producer), int(seq)
            except ValueError:
                pass
        ms, _, number = self.entry_id.partition(b"-")
        try:
            return ANONYMOUS, int(ms) << 20 | int(number or 0)
        except ValueError:  # not a stream id
            return None


@dataclasses.dataclass(frozen=True)
class Backlog:
    length: int  # entries in the stream (acknowledged ones until trimmed)
    pending: int  # delivered, not acknowledged
    undelivered: bool  # entries exist beyond the group's last-delivered id
    #: entries not yet delivered (Redis ≥ 7 reports it; on 6.2 ``None``)
    lag: int | None = None

    @property
    def drained(self) -> bool:
        return self.pending == 0 and not self.undelivered

    @property
    def unacknowledged(self) -> int:
        """Entries queued or in flight: not yet delivered, or delivered and not acknowledged.

        Without Redis 7's ``lag``, the stream length stands in for the undelivered part
        (an upper bound: it also holds acknowledged entries not yet trimmed).
        """
        if not self.undelivered:
            return self.pending
        return self.pending + (self.lag if self.lag is not None else self.length)


def connect(url: str, **kwargs: Any) -> redis.Redis:
    """A client whose socket timeout outlasts any ``BLOCK`` we use (see redis-py #3138).

    ``url`` is a server's (``redis://``…), or a ``redis+sentinel://`` URL (see
    :mod:`harness.infra.sentinel_url`): then the client asks the Sentinels where the
    primary is before each new connection, so after a failover its next connection (a
    command that failed with a connection error, retried) goes to the promoted replica.
    The Sentinels themselves are asked with short timeouts: one that is down costs a
    second, not the socket timeout.
    """
    kwargs.setdefault("socket_timeout", 30)
    kwargs.setdefault("socket_connect_timeout", 5)
    kwargs.setdefault("health_check_interval", 30)
    return sentinel_url.client(url, **kwargs)


class NotReplicated(redis.ConnectionError):
    """``WAIT`` timed out before enough replicas had a round: a failover now may lose it,
    so its publisher treats it as it treats a lost connection, and sends it again with
    the same identities."""


#: how long a round waits for its replicas (``WAIT``'s timeout) before it is sent again
WAIT_TIMEOUT_MS = 1000


def wait_for_replicas(pipe: redis.client.Pipeline, replicas: int) -> None:
    """Run ``pipe``, with ``WAIT replicas`` after its writes when ``replicas`` > 0, on the
    same connection; :class:`NotReplicated` if fewer than that many acknowledged them."""
    if replicas > 0:
        pipe.wait(replicas, WAIT_TIMEOUT_MS)
    replies = pipe.execute()
    if replicas > 0 and (short := not_replicated(replies[-1], replicas)) is not None:
        raise short


def not_replicated(acknowledged: object, replicas: int) -> NotReplicated | None:
    """What a ``WAIT`` reply says of the writes before it: ``None`` when at least
    ``replicas`` replicas have them, else the error to treat them by."""
    if isinstance(acknowledged, int) and acknowledged >= replicas:
        return None
    return NotReplicated(f"WAIT: {acknowledged} of {replicas} replicas within {WAIT_TIMEOUT_MS} ms")


def identities(
    producer: Producer, ids: Sequence[tuple[int, int]] | None, n: int
) -> Sequence[tuple[int, int]]:
    """The identities of ``n`` entries: those given (a re-send keeps them), or new ones."""
    if ids is None:
        return producer.take(n)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} identities for {n} entries")
    return ids


def stamps(created_ns: int | Sequence[int] | None, n: int) -> list[bytes]:
    """The ``FIELD_CREATED_NS`` value of each of ``n`` entries."""
    if created_ns is None or isinstance(created_ns, int):
        return [str(time.time_ns() if created_ns is None else created_ns).encode()] * n
    if len(created_ns) != n:
        raise ValueError(f"{len(created_ns)} time stamps for {n} entries")
    return [str(t).encode() for t in created_ns]


def entry_fields(
    events: bytes, count: int, stamp: bytes, identity: tuple[int, int]
) -> dict[Any, Any]:
    """A stream entry's fields: its events (a JSON array of ``count``), when they were
    made (``FIELD_CREATED_NS``) and its identity ``(producer, seq)``."""
    producer, seq = identity
    return {
        FIELD_EVENTS: events,
        FIELD_COUNT: str(count).encode(),
        FIELD_CREATED_NS: stamp,
        FIELD_PRODUCER: str(producer).encode(),
        FIELD_SEQ: str(seq).encode(),
    }


def kill_clients(client: redis.Redis, name_prefix: str) -> int:
    """``CLIENT KILL`` every connection whose client name starts with ``name_prefix``."""
    killed = 0
    for info in client.client_list():
        if str(info.get("name", "")).startswith(name_prefix):
            try:
                client.client_kill_filter(_id=info["id"])
                killed += 1
            except redis.ResponseError:  # gone already
                pass
    return killed


#: one entry as a broker sends it: its events, their count, its time stamp, its identity
Outgoing = tuple[bytes, int, bytes, tuple[int, int]]


class Broker(abc.ABC):
    """What consumers, publishers and the runner need of a broker; what both brokers share
    (their connection, keys and producer; publishing's time stamps and identities) is
    here, and each sends and delivers entries its own way."""

    def __init__(self, client: redis.Redis, keys: Keys, producer: Producer | None = None) -> None:
        self.client = client
        self.keys = keys
        #: the identities of the entries this broker publishes (see :class:`Producer`)
        self.producer = producer or Producer()

    def publish(
        self,
        entries: Sequence[tuple[bytes, int]],
        *,
        created_ns: int | Sequence[int] | None = None,
        ids: Sequence[tuple[int, int]] | None = None,
        replicas: int = 0,
    ) -> int:
        """Send each ``(encoded events, count)`` as an entry, in one round trip.

        ``created_ns``: when the entries' events were made or due (one time for all, or
        one per entry); latency runs from it. Now, when not given. ``ids``: the entries'
        identities, when this is a round sent again (new ones from :attr:`producer`
        otherwise). ``replicas``: ``WAIT`` until this many replicas have them
        (:func:`wait_for_replicas`).
        """
        n = len(entries)
        if n:
            marks, names = stamps(created_ns, n), identities(self.producer, ids, n)
            self._send(
                [
                    (events, count, mark, name)
                    for (events, count), mark, name in zip(entries, marks, names, strict=True)
                ],
                replicas,
            )
        return n

    @abc.abstractmethod
    def _send(self, outgoing: Sequence[Outgoing], replicas: int = 0) -> None:
        """Send the entries in one round trip (see :func:`wait_for_replicas`)."""

    def kill_clients(self, name_prefix: str) -> int:
        """``CLIENT KILL`` every connection whose client name starts with ``name_prefix``."""
        return kill_clients(self.client, name_prefix)

    @abc.abstractmethod
    def reset(self) -> None: ...
    @abc.abstractmethod
    def ensure_group(self) -> None: ...
    @abc.abstractmethod
    def read(
        self, consumer: str, count: int, block_ms: int, ack: Sequence[bytes] = ()
    ) -> list[Delivery]: ...
    @abc.abstractmethod
    def read_own_pending(self, consumer: str, count: int) -> list[Delivery]: ...
    @abc.abstractmethod
    def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]: ...
    @abc.abstractmethod
    def touch(self, consumer: str, entry_ids: Sequence[bytes]) -> None: ...
    @abc.abstractmethod
    def delivery_counts(self, entry_ids: Sequence[bytes]) -> dict[bytes, int]: ...
    @abc.abstractmethod
    def ack(self, entry_ids: Sequence[bytes]) -> int: ...
    @abc.abstractmethod
    def prune_bound_ms(self) -> int: ...
    @abc.abstractmethod
    def trim(self) -> int: ...
    @abc.abstractmethod
    def dead_letter(
        self, delivery: Delivery, reason: str, *, consumer: str, ack: bool = True
    ) -> None: ...
    @abc.abstractmethod
    def dead_letter_count(self) -> int: ...
    @abc.abstractmethod
    def backlog(self) -> Backlog: ...
    @abc.abstractmethod
    def stream_length(self) -> int: ...
    @abc.abstractmethod
    def pending_by_consumer(self) -> dict[str, int]: ...
