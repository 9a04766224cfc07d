"""The seed's broker, kept only to be measured: a Redis list, ``RPUSH`` and ``BLPOP``.

A popped item exists only in the consumer that popped it. If that consumer dies before
its transaction commits, the item is gone: nothing is pending, nothing is redelivered.
The ``broker = list`` axis shows that loss in numbers next to the stream's none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from harness.delivery.keys import Keys
from harness.delivery.protocol import (
    FIELD_COUNT,
    FIELD_CREATED_NS,
    FIELD_EVENTS,
    FIELD_PRODUCER,
    FIELD_SEQ,
    Backlog,
    Broker,
    Delivery,
    Outgoing,
    Producer,
    wait_for_replicas,
)

_SEPARATOR = b"\n"


class ListBroker(Broker):
    """Same interface as :class:`~harness.delivery.broker.StreamBroker`, none of its guarantees."""

    def __init__(self, client: redis.Redis, keys: Keys, producer: Producer | None = None) -> None:
        super().__init__(client, keys, producer)
        self._popped = 0

    def reset(self) -> None:
        self.client.delete(*self.keys.all())

    def ensure_group(self) -> None:
        pass

    def _send(self, outgoing: Sequence[Outgoing], replicas: int = 0) -> None:
        # "created_ns producer seq\n<events json>": the list holds plain strings
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(
            self.keys.queue,
            *(
                b"%s %d %d%s%s" % (stamp, producer, seq, _SEPARATOR, events)
                for events, _, stamp, (producer, seq) in outgoing
            ),
        )
        wait_for_replicas(pipe, replicas)

    def read(
        self, consumer: str, count: int, block_ms: int, ack: Sequence[bytes] = ()
    ) -> list[Delivery]:
        first = self.client.blpop([self.keys.queue], timeout=max(block_ms, 1) / 1000)
        if not first:
            return []
        items: list[Any] = [first[1]]
        if count > 1:
            items += self.client.lpop(self.keys.queue, count - 1) or []
        return [self._delivery(bytes(item)) for item in items]

    def _delivery(self, item: bytes) -> Delivery:
        head, _, payload = item.partition(_SEPARATOR)
        stamp, _, identity = head.partition(b" ")
        producer, _, seq = identity.partition(b" ")
        self._popped += 1
        fields = {FIELD_EVENTS: payload, FIELD_CREATED_NS: stamp, FIELD_COUNT: b"0"}
        if producer and seq:
            fields.update({FIELD_PRODUCER: producer, FIELD_SEQ: seq})
        return Delivery(f"list-{self._popped}".encode(), fields, False)

    # A list has no pending entries, no redelivery and nothing to acknowledge or trim.
    def read_own_pending(self, consumer: str, count: int) -> list[Delivery]:
        return []

    def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]:
        return []

    def touch(self, consumer: str, entry_ids: Sequence[bytes]) -> None:
        pass

    def delivery_counts(self, entry_ids: Sequence[bytes]) -> dict[bytes, int]:
        return {}

    def ack(self, entry_ids: Sequence[bytes]) -> int:
        return 0

    def trim(self) -> int:
        return 0

    def prune_bound_ms(self) -> int:
        """Nothing popped comes back: only entries still queued can be delivered, and
        those have not been applied. Now, by Redis's clock."""
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def dead_letter(
        self, delivery: Delivery, reason: str, *, consumer: str, ack: bool = True
    ) -> None:
        """Keep an entry that cannot be applied, with why (a list has nothing to
        acknowledge: ``ack`` changes nothing)."""
        record: dict[Any, Any] = {**delivery.fields, b"reason": reason.encode("utf-8", "replace")}
        self.client.xadd(self.keys.dead_letter, record)

    def dead_letter_count(self) -> int:
        return int(self.client.xlen(self.keys.dead_letter))

    def backlog(self) -> Backlog:
        length = int(self.client.llen(self.keys.queue))
        return Backlog(length=length, pending=0, undelivered=length > 0, lag=length)

    def stream_length(self) -> int:
        return int(self.client.llen(self.keys.queue))

    def pending_by_consumer(self) -> dict[str, int]:
        """A list keeps no record of what its consumers hold: nothing to report."""
        return {}
