"""The idempotent consumer: read a batch from the stream, apply it in one transaction, then ack.

The order is the whole guarantee. An entry is acknowledged only after the transaction
that applied it committed, so a crash anywhere before the ack leaves it pending and it
is delivered again. The transaction that applies an entry also records its identity
(``(producer, seq)``, see :class:`~harness.delivery.protocol.Producer`), so that second delivery,
or a publisher's retry of the same entry, is recognised and skipped: it is no receipt
and changes no counter but ``redelivered``. Nothing is lost, nothing is stored or
counted twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import redis

from harness.delivery.protocol import ANONYMOUS, FIELD_COUNT, Broker, Delivery
from harness.model import events
from harness.model.retry import Backoff, RetryPolicy
from harness.pipeline.consumer_stats import ConsumerStats
from harness.store.batch import Entries
from harness.store.postgres import Store

#: Errors after which the consumer reconnects and goes on.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, psycopg.OperationalError)
#: how a consumer that lost Redis or PostgreSQL waits before it tries again
RECONNECT = RetryPolicy(base_delay=0.05, max_delay=2.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsumerConfig:
    name: str
    #: events per transaction (entries are read until the batch holds at least this many)
    batch_size: int = 100
    #: events per stream entry, to turn ``batch_size`` into an XREADGROUP COUNT
    entry_size: int = 1
    block_ms: int = 50
    #: a peer's entry idle this long is taken over (its consumer is presumed dead)
    claim_idle_ms: int = 2000
    reclaim_every_s: float = 0.5
    trim_every_s: float = 0.5
    #: how often the identities of applied entries are pruned (see :attr:`remember_s`)
    prune_every_s: float = 5.0
    #: an applied entry's identity is kept until the oldest entry the broker can still
    #: deliver is this much younger than it: longer than a publisher may take to send a
    #: round again (:data:`harness.pipeline.publisher.RESEND_DEADLINE_S`). Pruning goes by the
    #: bound seen one pruning earlier (≥ ``prune_every_s`` old), which a Redis crash
    #: cannot take back (its AOF syncs every second)
    remember_s: float = 60.0
    #: counter row this consumer adds to under the ``sharded`` strategy (the others use
    #: row 0): give each concurrent consumer its own, or they share one hot row again
    shard: int = 0
    #: an entry delivered more often than this without being applied is dead-lettered
    #: (it keeps killing or stalling whoever takes it) instead of being retried forever
    max_deliveries: int = 5
    #: events to read per XREADGROUP at least: with small batches one read (and one
    #: acknowledgement) serves several transactions, each still its own batch
    prefetch_events: int = 100
    #: record each applied entry's identity and skip a second delivery of it (the
    #: default); ``False``: apply and count every delivery, as before recognition (kept
    #: to measure its cost)
    recognise: bool = True
    #: fault injection: exit the process, unacknowledged, after this many commits
    crash_after_commits: int | None = None
    #: keep the key of every event in a commit this consumer was told succeeded
    #: (:attr:`ConsumerStats.committed_keys`), so that a commit the database loses
    #: afterwards is told apart from an event that never reached it (``pg-crash``)
    record_commits: bool = False
    #: while the consumer keeps up (its last read was less than a batch), it reads at
    #: most once per this many ms, so that a transaction carries what arrived meanwhile
    #: rather than one or two events (Kafka's fetch.max.wait, Nagle's algorithm). 0:
    #: read again at once. Costs up to this much latency; saves a transaction per read.
    linger_ms: float = 0.0
    #: the trial's clock origin (wall clock, ns). When set, latencies are kept per whole
    #: second since it (by when each event was due) and commits are counted per second
    #: (by when they committed), for the steady window; 0 (a long-running service): one
    #: latency histogram, no per-second data.
    origin_ns: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.entry_size < 1:
            raise ValueError("batch_size and entry_size must be ≥ 1")
        if self.remember_s < 0 or self.prune_every_s <= 0:
            raise ValueError("remember_s must be ≥ 0 and prune_every_s > 0")
        if not 0 <= self.linger_ms <= 1000:
            raise ValueError(f"linger_ms must be in [0, 1000], got {self.linger_ms}")

    @property
    def read_count(self) -> int:
        """Stream entries per transaction: enough to hold a batch."""
        return max(1, -(-self.batch_size // self.entry_size))

    @property
    def fetch_count(self) -> int:
        """Stream entries per read: whole batches, at least ``prefetch_events`` events."""
        per_batch = self.read_count
        batches = max(1, -(-self.prefetch_events // (per_batch * self.entry_size)))
        return per_batch * batches


class Consumer:
    def __init__(
        self,
        broker: Broker,
        store: Store,
        config: ConsumerConfig,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        """``on_commit(seconds, events)`` is called after each committed batch (metrics)."""
        self.broker = broker
        self.store = store
        self.config = config
        self.stats = ConsumerStats()
        self._clock_ns = clock_ns
        self._monotonic = monotonic
        self._sleep = sleep
        self._on_commit = on_commit
        #: when the last read of new entries was sent, if it brought less than a batch
        self._short_read_at: float | None = None
        self._own_pending_done = False
        self._next_reclaim = 0.0
        self._next_trim = 0.0
        self._next_prune = monotonic() + config.prune_every_s
        #: the broker's prune bound at the last pruning: the next one goes by it
        self._prune_bound_ms: int | None = None
        #: committed entries whose XACK goes out with the next read (see :meth:`step`)
        self._acks: list[bytes] = []
        #: what to do right after the next commit (fault injection): ``crash`` or ``pause``
        self._after_commit: str | None = None
        #: a pause armed to land only before this (monotonic seconds; ``None``: whenever)
        self._pause_by: float | None = None

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; finishes the batch in hand first.

        A lost connection to Redis or PostgreSQL (outside the store's own transaction
        retries) does not end the loop: nothing unacknowledged is lost, so the consumer
        waits, reconnects, and re-reads its own pending entries first.
        """
        backoff = Backoff(RECONNECT)
        while not stop.is_set():
            try:
                self.step()
                backoff.succeeded()
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The group vanished (a Redis that lost it in a crash): recreate it from
                # the start of the stream; re-applied entries count as duplicates.
                self.broker.ensure_group()
                self._own_pending_done = False
            except TRANSIENT_ERRORS:
                self.stats.reconnects += 1
                self._own_pending_done = False
                self.store.close()
                stop.wait(backoff.failed())
        with contextlib.suppress(*TRANSIENT_ERRORS):
            self.flush_acks()  # else they stay pending, and are applied again later

    def step(self) -> int:
        """Read and apply what one read brings (one or more batches, each in its own
        transaction). Returns how many events it applied.

        What it commits is acknowledged by the next step, in the same round trip as that
        step's read: still after the commit, and one wait on Redis fewer per read. Stop
        with :meth:`run` (or call :meth:`flush_acks`) to send the last acknowledgement.
        """
        deliveries = self._next_batch()
        if not deliveries:
            return 0
        return self._apply(deliveries)

    def flush_acks(self) -> None:
        """Acknowledge now what was committed and is not yet acknowledged."""
        with self._sending_acks() as acks:
            self.broker.ack(acks)

    @contextlib.contextmanager
    def _sending_acks(self) -> Iterator[list[bytes]]:
        """The acknowledgements to send now; kept for the next try if sending fails."""
        acks, self._acks = self._acks, []
        try:
            yield acks
        except BaseException:
            self._acks = acks + self._acks
            raise

    def _next_batch(self) -> list[Delivery]:
        cfg = self.config
        now = self._monotonic()
        reclaiming = now >= self._next_reclaim
        if self._acks and (reclaiming or not self._own_pending_done):
            self.flush_acks()  # pending entries are read next: not the committed ones
        if not self._own_pending_done:
            pending = self.broker.read_own_pending(cfg.name, cfg.fetch_count)
            if pending:
                return self._without_exhausted(pending)
            self._own_pending_done = True
        if now >= self._next_trim:
            self._next_trim = now + cfg.trim_every_s
            self.broker.trim()
        if now >= self._next_prune:
            self._next_prune = now + cfg.prune_every_s
            self.prune()
        if reclaiming:
            self._next_reclaim = now + cfg.reclaim_every_s
            claimed = self.broker.reclaim(cfg.name, cfg.claim_idle_ms, cfg.fetch_count)
            if claimed:
                return self._without_exhausted(claimed)
        if cfg.linger_ms and self._short_read_at is not None:
            wait = self._short_read_at + cfg.linger_ms / 1000 - now
            if wait > 0:
                self._sleep(wait)
        read_at = self._monotonic()
        with self._sending_acks() as acks:
            got = self.broker.read(cfg.name, cfg.fetch_count, cfg.block_ms, ack=acks)
        self._short_read_at = read_at if len(got) < cfg.read_count else None
        return got

    def prune(self) -> int:
        """Forget applied identities that cannot be needed again: those of entries the
        broker took more than ``remember_s`` before the oldest entry it could deliver at
        the previous pruning. Returns how many were forgotten."""
        bound, self._prune_bound_ms = self._prune_bound_ms, self.broker.prune_bound_ms()
        if bound is None:
            return 0
        pruned = self.store.prune_applied(bound - round(self.config.remember_s * 1000))
        self.stats.pruned += pruned
        return pruned

    def _without_exhausted(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Dead-letter the redelivered entries that used up their deliveries."""
        counts = self.broker.delivery_counts([d.entry_id for d in deliveries])
        keep = []
        for delivery in deliveries:
            times = counts.get(delivery.entry_id, 0)
            if times > self.config.max_deliveries:
                reason = f"delivered {times} times without being applied"
                self.broker.dead_letter(delivery, reason, consumer=self.config.name)
                self.stats.rejected += _event_count(delivery)
            else:
                keep.append(delivery)
        return keep

    def apply(self, deliveries: list[Delivery]) -> int:
        """Apply these entries, ``read_count`` of them per transaction, then acknowledge
        every committed one in a single XACK.

        Returns how many events were committed. Entries that do not decode or validate
        are dead-lettered first; an entry PostgreSQL refuses is found by splitting the
        batch and dead-lettered alone, so it never holds back the rest of its batch.
        Acknowledging after the last commit rather than after each is still after the
        commit: a crash in between leaves committed entries pending, to be redelivered
        and recognised.
        """
        try:
            return self._apply(deliveries)
        finally:
            self.flush_acks()  # what did commit, even if a later batch failed

    def _apply(self, deliveries: list[Delivery]) -> int:
        """:meth:`apply`, leaving the acknowledgements in ``self._acks``."""
        decoded = []
        for delivery in deliveries:
            items = self._decode(delivery)
            if items is not None:
                decoded.append((delivery, items))
        self.stats.delivered_again += sum(len(evs) for d, evs in decoded if d.redelivered)
        per_batch = self.config.read_count
        applied = 0
        gave_up = self.stats.gave_up
        self.stats.in_hand = sum(len(evs) for _, evs in decoded)
        try:
            for start in range(0, len(decoded), per_batch):
                # what commits joins self._acks at once: a later batch's failure keeps it
                part = decoded[start : start + per_batch]
                applied += self._apply_decoded(part, self._acks)
                self.stats.in_hand -= sum(len(evs) for _, evs in part)
                if self.stats.gave_up != gave_up:
                    break  # the database is away: leave the rest pending for later
        finally:
            self.stats.in_hand = 0
        return applied

    def _apply_decoded(
        self, items: list[tuple[Delivery, list[events.Row]]], committed: list[bytes]
    ) -> int:
        """One transaction; adds the entries it committed to ``committed``."""
        if not items:
            return 0
        ids = [delivery.entry_id for delivery, _ in items]
        batch = [event for _, evs in items for event in evs]
        entries = _entries(items) if self.config.recognise else None
        began = self._monotonic()
        try:
            result = self.store.apply_rows(
                batch,
                entries=entries,
                shard=self.config.shard,
                before_retry=lambda: self.broker.touch(self.config.name, ids),
            )
        except psycopg.OperationalError:
            # The retry policy gave up (a retry storm or a database that stays
            # away). Nothing committed, nothing acknowledged: the entries stay
            # pending, and this consumer reads its own pending ones again first.
            self.stats.gave_up += 1
            self._own_pending_done = False
            return 0
        except psycopg.DatabaseError as exc:
            return self._refused(items, exc, committed)
        committed_ns = self._clock_ns()
        if self.config.record_commits:
            self.stats.committed_keys.update((row[0], row[1]) for row in batch)
        self._fault_after_commit()
        seconds = self._monotonic() - began if self._on_commit is not None else 0.0
        self.stats.committed(
            result,
            committed_ns,
            self.config.origin_ns,
            [(d.created_ns, len(evs)) for d, evs in items],
        )
        if self._on_commit is not None:  # after the stats: it may read them
            self._on_commit(seconds, result.received)
        committed.extend(ids)
        return len(batch)

    def _refused(
        self,
        items: list[tuple[Delivery, list[events.Row]]],
        exc: psycopg.DatabaseError,
        committed: list[bytes],
    ) -> int:
        """A batch PostgreSQL itself refused (not transient): halve it until the entry at
        fault is alone, then apply that entry without its refused rows, or dead-letter it."""
        if len(items) == 1:
            delivery, evs = items[0]
            refused = self._refused_rows(evs) if len(evs) > 1 else {}
            if refused and len(refused) < len(evs):
                return self._apply_without(delivery, evs, refused, committed)
            reason = f"PostgreSQL refused it ({exc.sqlstate}): {str(exc).strip()[:300]}"
            self.broker.dead_letter(delivery, reason, consumer=self.config.name)
            self.stats.rejected += len(evs)
            return 0
        half = len(items) // 2
        return self._apply_decoded(items[:half], committed) + self._apply_decoded(
            items[half:], committed
        )

    def _refused_rows(self, rows: list[events.Row]) -> dict[int, psycopg.DatabaseError]:
        """The rows of an entry PostgreSQL refuses, by position, found by halving: each
        half is tried in a transaction rolled back (log2(n) tries a refused row)."""
        refused: dict[int, psycopg.DatabaseError] = {}

        def search(lo: int, hi: int) -> None:
            error = self.store.refusal(rows[lo:hi])
            if error is None:
                return
            if hi - lo == 1:
                refused[lo] = error
                return
            mid = (lo + hi) // 2
            search(lo, mid)
            search(mid, hi)

        search(0, len(rows))
        return refused

    def _apply_without(
        self,
        delivery: Delivery,
        rows: list[events.Row],
        refused: dict[int, psycopg.DatabaseError],
        committed: list[bytes],
    ) -> int:
        """Dead-letter the ``refused`` events of an entry, then apply the rest of it.

        The refused ones go first, without acknowledging the entry: a crash between the
        two leaves the entry pending, so the rest is never lost (the refused events are
        then dead-lettered a second time)."""
        bad = [rows[i] for i in sorted(refused)]
        first = refused[min(refused)]
        reason = (
            f"PostgreSQL refused {len(bad)} of the entry's {len(rows)} events "
            f"({first.sqlstate}): {str(first).strip()[:300]}"
        )
        self.broker.dead_letter(
            delivery.with_events(events.encode_rows(bad), len(bad)),
            reason,
            consumer=self.config.name,
            ack=False,
        )
        self.stats.rejected += len(bad)
        kept = [row for i, row in enumerate(rows) if i not in refused]
        return self._apply_decoded([(delivery, kept)], committed)

    def _decode(self, delivery: Delivery) -> list[events.Row] | None:
        """The entry's events, validated; an entry that is not is dead-lettered whole."""
        try:
            return events.decode_rows(delivery.payload)
        except (events.InvalidEvent, ValueError) as exc:
            self.broker.dead_letter(delivery, str(exc), consumer=self.config.name)
            self.stats.rejected += _event_count(delivery)
            return None

    def crash_after_next_commit(self) -> None:
        """Fault injection: exit the process right after the next commit, before its
        acknowledgement: the worst moment to die (what it committed comes back)."""
        self._after_commit = "crash"

    def pause_after_next_commit(self, within_s: float | None = None) -> None:
        """Fault injection: stop the process (SIGSTOP) right after the next commit, before
        its acknowledgement, until someone sends it SIGCONT: a GC pause or a stalled VM
        at the worst moment. Its peers take over what it holds; when it wakes it
        acknowledges entries they hold, having applied nothing twice. ``within_s``: only
        if that commit comes within this long (whoever armed it stops the process itself
        after that, and a pause still armed would stop it again once continued)."""
        self._after_commit = "pause"
        self._pause_by = None if within_s is None else time.monotonic() + within_s

    def _fault_after_commit(self) -> None:
        limit = self.config.crash_after_commits
        if self._after_commit == "crash" or (limit is not None and self.stats.batches + 1 >= limit):
            # Fault injection: die like a killed process would, after the commit and
            # before the acknowledgement. No cleanup, no exception handlers.
            os._exit(17)
        if self._after_commit == "pause":
            self._after_commit = None
            if self._pause_by is None or time.monotonic() <= self._pause_by:
                os.kill(os.getpid(), signal.SIGSTOP)  # returns when the process is continued


def _entries(items: list[tuple[Delivery, list[events.Row]]]) -> Entries:
    """The identities of a batch's entries, for the store to recognise them by."""
    entries = Entries([], [], [], [], [])
    for position, (delivery, evs) in enumerate(items, 1):
        producer, seq = delivery.identity or _unrecognisable()
        entries.producers.append(producer)
        entries.seqs.append(seq)
        entries.seen_ms.append(delivery.seen_ms)
        entries.events.append(len(evs))
        entries.of_row.extend([position] * len(evs))
    return entries


def _unrecognisable() -> tuple[int, int]:
    """An identity no other entry has, for an entry that carries none and has no stream
    id to be known by: every delivery of it is a receipt (negative numbers, which stream
    ids never map to)."""
    return ANONYMOUS, -1 - secrets.randbits(62)


def _event_count(delivery: Delivery) -> int:
    """Events an entry says it holds (at least 1, for counting what was rejected)."""
    try:
        return max(1, int(delivery.fields.get(FIELD_COUNT, b"1")))
    except ValueError:
        return 1
