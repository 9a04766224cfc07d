"""Redis Streams with one consumer group: at-least-once delivery that survives a dead consumer.

Unlike the seed's ``RPUSH``/``BLPOP`` list, an entry read with ``XREADGROUP`` stays in
the group's pending list until it is acknowledged, which consumers do only after the
PostgreSQL transaction that applied it has committed. A consumer that dies between
read and acknowledgement leaves its entries pending; it drains them itself when it
comes back (``XREADGROUP … 0``), and its peers take them over with ``XAUTOCLAIM`` once
they have been idle for ``claim_idle_ms``.

One stream entry carries one or more events (``entry_size``), encoded as a JSON
array, with the publisher's clock at creation (for end-to-end latency). The entry's
fields, the records a consumer gets and the protocol both brokers follow are in
:mod:`harness.delivery.protocol`; :func:`open_broker` opens either broker by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from harness.delivery.keys import Keys
from harness.delivery.listbroker import ListBroker
from harness.delivery.protocol import (
    WAIT_TIMEOUT_MS,
    Backlog,
    Broker,
    Delivery,
    Outgoing,
    Producer,
    connect,
    entry_fields,
    not_replicated,
    stamps,
    wait_for_replicas,
)
from harness.infra import sentinel_url
from harness.model.modes import BROKERS
from harness.model.retry import RetryPolicy


def _id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def open_broker(kind: str, url: str, keys: Keys, *, role: str | None = None) -> Broker:
    """A broker of this kind on its own connection, named ``<prefix>:<role>`` in Redis."""
    client = connect(url, client_name=keys.client_name(role) if role else None)
    if kind == "stream":
        return StreamBroker(client, keys)
    if kind == "list":
        return ListBroker(client, keys)
    raise ValueError(f"unknown broker {kind!r}; choose one of {', '.join(BROKERS)}")


class StreamBroker(Broker):
    """The events stream, its consumer group and its dead-letter stream."""

    # -- set-up -----------------------------------------------------------------------

    def reset(self) -> None:
        """Delete the streams and create an empty stream with a fresh group."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*self.keys.all())
        pipe.xgroup_create(self.keys.stream, self.keys.group, id="0", mkstream=True)
        pipe.execute()

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.stream, self.keys.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- publishing -------------------------------------------------------------------

    def _send(self, outgoing: Sequence[Outgoing], replicas: int = 0) -> None:
        """XADD each entry, pipelined (and WAIT for ``replicas``, on the same connection)."""
        pipe = self.client.pipeline(transaction=False)
        for events, count, stamp, identity in outgoing:
            pipe.xadd(self.keys.stream, entry_fields(events, count, stamp, identity))
        wait_for_replicas(pipe, replicas)

    # -- consuming --------------------------------------------------------------------

    def read(
        self, consumer: str, count: int, block_ms: int, ack: Sequence[bytes] = ()
    ) -> list[Delivery]:
        """New entries for ``consumer``; waits up to ``block_ms`` when there are none.

        ``ack``: entries to acknowledge first, in the same round trip (Redis runs the XACK
        before the read, so they are acknowledged even while the read waits).
        """
        if not ack:
            reply = self.client.xreadgroup(
                self.keys.group, consumer, {self.keys.stream: ">"}, count=count, block=block_ms
            )
            return self._deliveries(reply, redelivered=False)
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.keys.stream, self.keys.group, *ack)
        pipe.xreadgroup(
            self.keys.group, consumer, {self.keys.stream: ">"}, count=count, block=block_ms
        )
        _, reply = pipe.execute()
        return self._deliveries(reply, redelivered=False)

    def read_own_pending(self, consumer: str, count: int) -> list[Delivery]:
        """Entries delivered to ``consumer`` before and not acknowledged (after a restart)."""
        reply = self.client.xreadgroup(
            self.keys.group, consumer, {self.keys.stream: "0"}, count=count
        )
        return self._deliveries(reply, redelivered=True)

    def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]:
        """Take over entries another consumer has held for at least ``min_idle_ms``."""
        reply = self.client.xautoclaim(
            self.keys.stream, self.keys.group, consumer, min_idle_ms, start_id="0-0", count=count
        )
        # Redis 6.2 answers [cursor, entries]; 7.0 adds the ids deleted meanwhile.
        entries = reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:
            self.ack(deleted)  # trimmed away: nothing left to deliver
        return [Delivery(eid, fields, True) for eid, fields in entries if fields is not None]

    def touch(self, consumer: str, entry_ids: Sequence[bytes]) -> None:
        """Reset the idle time of entries this consumer is still working on.

        A consumer stuck in retries keeps its entries, instead of its peers taking them
        over as if it had died (which would apply them twice and inflate ``received``).
        """
        if entry_ids:
            self.client.xclaim(
                self.keys.stream, self.keys.group, consumer, 0, list(entry_ids), justid=True
            )

    def delivery_counts(self, entry_ids: Sequence[bytes]) -> dict[bytes, int]:
        """How many times each of these pending entries has been delivered."""
        if not entry_ids:
            return {}
        ordered = sorted(entry_ids, key=_id_tuple)
        rows = self.client.xpending_range(
            self.keys.stream,
            self.keys.group,
            min=ordered[0],
            max=ordered[-1],
            count=len(ordered) * 4 + 10,
        )
        wanted = set(entry_ids)
        return {
            row["message_id"]: int(row["times_delivered"])
            for row in rows
            if row["message_id"] in wanted
        }

    def ack(self, entry_ids: Sequence[bytes]) -> int:
        if not entry_ids:
            return 0
        return int(self.client.xack(self.keys.stream, self.keys.group, *entry_ids))

    def prune_bound_ms(self) -> int:
        """The time (ms) of the oldest entry that can still be delivered: the lower of the
        oldest pending id and the group's last delivered id (new entries come later)."""
        return _id_tuple(self._oldest_needed())[0]

    @staticmethod
    def _deliveries(reply: Any, *, redelivered: bool) -> list[Delivery]:
        if not reply:
            return []
        out = []
        for _stream, entries in reply:
            for eid, fields in entries:
                if fields:  # a pending entry deleted from the stream comes back empty
                    out.append(Delivery(eid, fields, redelivered))
        return out

    # -- dead letters -----------------------------------------------------------------

    def dead_letter(
        self, delivery: Delivery, reason: str, *, consumer: str, ack: bool = True
    ) -> None:
        """Keep an entry that cannot be applied, with why, and acknowledge it (unless not
        ``ack``: some of its events are still to be applied)."""
        pipe = self.client.pipeline(transaction=True)
        record: dict[Any, Any] = {
            **delivery.fields,
            b"entry_id": delivery.entry_id,
            b"reason": reason.encode("utf-8", "replace"),
            b"consumer": consumer.encode(),
        }
        pipe.xadd(self.keys.dead_letter, record)
        if ack:
            pipe.xack(self.keys.stream, self.keys.group, delivery.entry_id)
        pipe.execute()

    def dead_letter_count(self) -> int:
        return int(self.client.xlen(self.keys.dead_letter))

    def dead_letters(self, count: int = 100) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return list(self.client.xrange(self.keys.dead_letter, count=count) or [])  # type: ignore[arg-type]

    # -- bookkeeping ------------------------------------------------------------------

    def backlog(self) -> Backlog:
        pipe = self.client.pipeline(transaction=True)
        pipe.xinfo_stream(self.keys.stream)
        pipe.xinfo_groups(self.keys.stream)
        stream, groups = pipe.execute()
        group = next(g for g in groups if _text(g["name"]) == self.keys.group)
        last_generated = _id_tuple(stream["last-generated-id"])
        last_delivered = _id_tuple(group["last-delivered-id"])
        return Backlog(
            length=int(stream["length"]),
            pending=int(group["pending"]),
            undelivered=last_delivered < last_generated,
            lag=None if group.get("lag") is None else int(group["lag"]),
        )

    def trim(self) -> int:
        """Drop acknowledged entries: everything below the oldest one still needed.

        Needed are the pending entries and those not yet delivered, so the bound is
        min(oldest pending id, last delivered id). New deliveries only take ids above
        the last delivered one, so the bound read here stays safe while we trim.
        """
        bound = self._oldest_needed()
        if bound == "0-0":
            return 0
        return int(self.client.xtrim(self.keys.stream, minid=bound, approximate=False))

    def _oldest_needed(self) -> str:
        """min(oldest pending id, last delivered id): what :meth:`trim` keeps."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xpending(self.keys.stream, self.keys.group)
        pipe.xinfo_groups(self.keys.stream)
        pending, groups = pipe.execute()
        group = next(g for g in groups if _text(g["name"]) == self.keys.group)
        bound = _text(group["last-delivered-id"])
        if pending and pending.get("pending") and pending.get("min") is not None:
            oldest = _text(pending["min"])
            if _id_tuple(oldest) < _id_tuple(bound):
                bound = oldest
        return bound

    def pending_by_consumer(self) -> dict[str, int]:
        """Entries delivered and not yet acknowledged, by consumer name (``XPENDING``)."""
        summary = self.client.xpending(self.keys.stream, self.keys.group)
        return {_text(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []}

    def stream_length(self) -> int:
        return int(self.client.xlen(self.keys.stream))

    def server_version(self) -> str:
        return str(self.client.info("server")["redis_version"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class AsyncPublisher:
    """Publishing to the events stream from an event loop (the HTTP service).

    Requests that arrive together share a round trip: each :meth:`publish` queues its
    entry and waits; the entries queued meanwhile go as one pipeline of XADDs, at most
    ``in_flight`` pipelines at a time, and each waiter learns its own entry's fate.
    One request alone goes at once; under load, while pipelines are out, the queue
    fills and the next one carries it all (group commit, for Redis). The fields and
    identities are those of :meth:`StreamBroker.publish`.

    ``replicas``: a ``WAIT replicas`` follows the XADDs in the same pipeline (same
    connection), and an entry is confirmed only once that many replicas have it; fewer
    is :class:`~harness.delivery.protocol.NotReplicated`. ``resend_s``: a round whose
    fate is unknown (its connection lost, or its ``WAIT`` short) is sent again, with the
    same fields and so the same identities (the consumers recognise a second copy and
    skip it), until this long after its first send; a failover then shows as latency.
    With 0 (the default) its waiters get the error at once."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        producer: Producer | None = None,
        *,
        in_flight: int = 2,
        replicas: int = 0,
        resend_s: float = 0.0,
    ) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be ≥ 1, got {in_flight}")
        if replicas < 0 or resend_s < 0:
            raise ValueError(f"replicas and resend_s must be ≥ 0, got {replicas}, {resend_s:g}")
        self.client = client
        self.keys = keys
        self.producer = producer or Producer()
        self.in_flight = in_flight
        self.replicas = replicas
        self.resend_s = resend_s
        self._queue: list[tuple[dict[Any, Any], asyncio.Future[None]]] = []
        self._sending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: pipelines sent, and entries in them (their ratio: entries per round trip);
        #: a round sent again counts again
        self.round_trips = 0
        self.entries = 0
        #: entries sent again because their round's fate was unknown (see ``resend_s``)
        self.resent = 0

    async def publish(self, events: bytes, count: int, *, created_ns: int | None = None) -> None:
        """XADD one entry of ``count`` events (their JSON array) under a new identity;
        returns once Redis has it (and ``replicas`` replicas), raises what Redis said
        otherwise."""
        (stamp,) = stamps(created_ns, 1)
        (identity,) = self.producer.take(1)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((entry_fields(events, count, stamp, identity), done))
        if self._sending < self.in_flight:
            self._send_queued()
        await done

    def _send_queued(self) -> None:
        batch, self._queue = self._queue, []
        self._sending += 1
        task = asyncio.create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[dict[Any, Any], asyncio.Future[None]]]) -> None:
        try:
            results = await self._round(batch)
            for (_, done), result in zip(batch, results, strict=True):
                if done.done():  # its request was cancelled
                    continue
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(None)
        finally:
            self._sending -= 1
            if self._queue and self._sending < self.in_flight:
                self._send_queued()

    async def _round(self, batch: list[tuple[dict[Any, Any], asyncio.Future[None]]]) -> list[Any]:
        """Each entry's XADD reply, or its exception; sent again while its fate is unknown
        and ``resend_s`` allows (see the class)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resend_s
        failures = 0
        while True:
            pipe = self.client.pipeline(transaction=False)
            for fields, _ in batch:
                pipe.xadd(self.keys.stream, fields)
            if self.replicas:
                pipe.wait(self.replicas, WAIT_TIMEOUT_MS)
            self.round_trips += 1
            self.entries += len(batch)
            failure: Exception
            try:
                results = await pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                failure = exc  # the round trip failed: its entries may or may not be in
            except Exception as exc:  # the round trip failed: so did every entry in it
                return [exc] * len(batch)
            else:
                if not self.replicas:
                    return list(results)
                *replies, acknowledged = results
                short = (
                    acknowledged
                    if isinstance(acknowledged, Exception)
                    else not_replicated(acknowledged, self.replicas)
                )
                if short is None:
                    return replies
                failure = short
            failures += 1
            delay = RESEND.delay(failures, random.random())
            if (
                all(done.done() for _, done in batch)
                or not RESEND.may_retry(failures)
                or loop.time() + delay > deadline
            ):
                return [failure] * len(batch)
            await asyncio.sleep(delay)
            self.resent += len(batch)


#: how :class:`AsyncPublisher` waits before it sends a round again (``resend_s`` bounds it)
RESEND = RetryPolicy(max_attempts=100, base_delay=0.05, max_delay=1.0)


class _BlockingSentinelPool(SentinelConnectionPool, redis.asyncio.BlockingConnectionPool):
    """Sentinel's pool (it asks a Sentinel where the primary is before each new
    connection, and drops its idle ones when the answer changes), bounded as the
    blocking pool is: a command beyond ``max_connections`` waits for a connection
    instead of failing ("Too many connections"). Both are redis-py's; this only
    combines them (Sentinel's pool derives from the plain, unbounded-wait one)."""


@contextlib.asynccontextmanager
async def connect_async(
    url: str, *, max_connections: int, **kwargs: Any
) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client of ``url``, as :func:`~harness.delivery.protocol.connect` takes it
    (a server's ``redis://``…, or ``redis+sentinel://``: then every new connection goes
    to the primary the Sentinels name, so after a failover a command that failed, retried,
    reaches the promoted replica), with at most ``max_connections`` connections: a command
    beyond them waits for one (``timeout``: how long, ``None``, the default, forever).
    ``kwargs`` go to each connection (``socket_timeout``…). Closed on exit, with the
    Sentinel clients."""
    kwargs.setdefault("timeout", None)
    address = sentinel_url.parse(url)
    if address is None:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, **kwargs
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        try:
            yield client
        finally:
            await client.aclose()
            await pool.aclose()
        return
    sentinels = Sentinel(list(address.sentinels), sentinel_kwargs=sentinel_url.SENTINEL_KWARGS)
    client = sentinels.master_for(
        address.master,
        connection_pool_class=_BlockingSentinelPool,
        db=address.db,
        max_connections=max_connections,
        **kwargs,
    )
    try:
        yield client
    finally:
        await client.aclose()  # and its pool: master_for's client owns it
        await sentinels.aclose()
