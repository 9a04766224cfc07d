"""What a consumer counted: its batches, receipts, retries, latencies; read by the driver
while it runs and when it stops."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from harness.model import latency, steady
from harness.store.batch import ApplyResult


@dataclasses.dataclass
class ConsumerStats:
    """What a consumer did; read by the driver while it runs and when it stops."""

    batches: int = 0
    received: int = 0
    unique: int = 0
    duplicate: int = 0
    rejected: int = 0
    #: events in entries recognised as applied before (a redelivery, a publisher's retry)
    #: and skipped
    redelivered: int = 0
    #: events in entries delivered again by the broker (own pending after a restart,
    #: reclaimed from a peer), applied or recognised
    delivered_again: int = 0
    #: events retried after a COMMIT whose outcome was unknown (the retry recognises them
    #: if it had committed)
    uncertain: int = 0
    #: identities of applied entries pruned by this consumer
    pruned: int = 0
    #: times the loop lost Redis or PostgreSQL and started over
    reconnects: int = 0
    #: batches abandoned after the retry policy gave up (left pending, applied later)
    gave_up: int = 0
    #: wall clock of the last commit (trial duration runs to the latest one)
    last_commit_ns: int = 0
    #: events read and not yet committed: what a kill now would leave pending (stream)
    #: or take with it (the seed's list)
    in_hand: int = 0
    retries: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    #: ``(topic, event_id)`` of every event in a commit this consumer was told succeeded
    #: (only with ``ConsumerConfig.record_commits``)
    committed_keys: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    histogram: Any = dataclasses.field(default_factory=latency.new)
    #: with an origin: latency histograms by second the events were due in, and events
    #: committed by second of commit (seconds since the origin)
    latency_by_second: dict[int, Any] = dataclasses.field(default_factory=dict)
    committed_by_second: collections.Counter[int] = dataclasses.field(
        default_factory=collections.Counter
    )

    def record_latency(self, origin_ns: int, due_ns: int, micros: int, events: int) -> None:
        if not origin_ns:
            latency.record(self.histogram, micros, events)
            return
        second = steady.second_of(due_ns, origin_ns)
        hist = self.latency_by_second.get(second)
        if hist is None:
            hist = self.latency_by_second[second] = latency.new(latency.PER_SECOND_DIGITS)
        latency.record(hist, micros, events)

    def encoded_latencies(self) -> dict[int, str]:
        """The per-second histograms (or the one histogram, as second 0) as text."""
        if not self.latency_by_second:
            return {0: latency.encode(self.histogram)} if self.histogram.total_count else {}
        return {s: latency.encode(h) for s, h in self.latency_by_second.items()}

    def committed(
        self,
        result: ApplyResult,
        committed_ns: int,
        origin_ns: int,
        entries: list[tuple[int, int]],
    ) -> None:
        """Count a committed batch: what it applied, its retries, when it committed, and the
        latency of its ``entries`` (each one's creation time and events)."""
        self.batches += 1
        self.last_commit_ns = committed_ns
        self.received += result.received
        self.unique += result.unique
        self.duplicate += result.duplicate
        self.retries.update(result.retries)
        self.redelivered += result.redelivered
        self.uncertain += result.uncertain
        if origin_ns:
            self.committed_by_second[steady.second_of(committed_ns, origin_ns)] += result.received
        for created_ns, n in entries:
            if created_ns and n:
                self.record_latency(origin_ns, created_ns, (committed_ns - created_ns) // 1000, n)

    def snapshot(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "received": self.received,
            "unique": self.unique,
            "duplicate": self.duplicate,
            "rejected": self.rejected,
            "redelivered": self.redelivered,
            "delivered_again": self.delivered_again,
            "uncertain": self.uncertain,
            "pruned": self.pruned,
            "gave_up": self.gave_up,
            "reconnects": self.reconnects,
            "last_commit_ns": self.last_commit_ns,
            "in_hand": self.in_hand,
            "retries": dict(self.retries),
            "committed_by_second": dict(self.committed_by_second),
        }
