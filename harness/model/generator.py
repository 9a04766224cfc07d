"""A deterministic workload: events with re-sent duplicates, and the truth about them.

Event number ``i`` (0 ≤ i < events) is either *fresh* — the next unique event, with
ordinal ``u`` = the number of fresh events before it — or, with probability
``duplicate_rate``, a *re-send* of a uniformly chosen earlier fresh event. Every
re-send is byte-identical to its original, as a publisher's retry would be.

Because fresh events are numbered 0, 1, 2, …, the ground truth is small: the distinct
keys emitted are exactly those of ordinals ``0 … expected_unique - 1``.

Randomness is drawn per fixed-size chunk from ``(seed, chunk)``, so any slice of the
sequence (one publisher's share) is generated without generating the rest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from harness.model import events

CHUNK = 1 << 16
#: largest payload_bytes: the generated payload stays under the event model's limit
MAX_PAYLOAD_BYTES = events.MAX_PAYLOAD_BYTES - 1024

#: Topic names in the seed report's style; more topics get numbered names.
TOPIC_NAMES = (
    "user.login",
    "user.registration",
    "order.created",
    "order.shipped",
    "payment.processed",
    "payment.failed",
    "inventory.updated",
    "cart.abandoned",
    "session.expired",
    "audit.access",
)
_EPOCH = dt.datetime(2025, 12, 17, tzinfo=dt.UTC)
_MIX = 2654435761  # Knuth's multiplicative hash, to spread ordinals over topics


@dataclasses.dataclass(frozen=True, kw_only=True)
class Workload:
    """What a trial publishes."""

    events: int
    duplicate_rate: float
    topics: int
    payload_bytes: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ValueError(f"events must be ≥ 0, got {self.events}")
        if not 0.0 <= self.duplicate_rate < 1.0:
            raise ValueError(f"duplicate_rate must be in [0, 1), got {self.duplicate_rate}")
        if self.topics < 1:
            raise ValueError(f"topics must be ≥ 1, got {self.topics}")
        if self.seed < 0:
            raise ValueError(f"seed must be ≥ 0, got {self.seed}")
        if not 0 <= self.payload_bytes <= MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"payload_bytes must be in [0, {MAX_PAYLOAD_BYTES}], got {self.payload_bytes}"
            )


_DAY_MS = 86_400_000


def timestamp(ordinal: int) -> str:
    """The creation time of fresh event ``ordinal``: one millisecond after the one before."""
    if ordinal < _DAY_MS:  # the common case, formatted without datetime objects
        seconds, ms = divmod(ordinal, 1000)
        minutes, s = divmod(seconds, 60)
        h, m = divmod(minutes, 60)
        return f"2025-12-17T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"
    moment = _EPOCH + dt.timedelta(milliseconds=ordinal)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@functools.cache
def _seconds_of_day() -> np.ndarray:
    """``b"HH:MM:SS"`` for each second of the day."""
    return np.array(
        [b"%02d:%02d:%02d" % (u // 3600, u // 60 % 60, u % 60) for u in range(86_400)],
        dtype=object,
    )


@functools.cache
def _millis_and_source() -> np.ndarray:
    """What follows the seconds of an event's timestamp, up to its source's number, for
    each ordinal modulo 7000 (1000 milliseconds × 7 sources)."""
    return np.array(
        [b'.%03dZ","source":"service-%d' % (u % 1000, u % 7) for u in range(7_000)],
        dtype=object,
    )


def topic_name(index: int) -> str:
    return TOPIC_NAMES[index] if index < len(TOPIC_NAMES) else f"topic.{index:04d}"


class Generator:
    """Generates a :class:`Workload`'s events and knows its ground truth."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self._topics = [topic_name(i) for i in range(workload.topics)]
        self._filler = "x" * max(0, workload.payload_bytes - 40)
        self._template = (
            b'{"topic":"%s","event_id":"%s","timestamp":"%s","source":"service-%d",'
            b'"payload":{"seq":%d,"level":"INFO","msg":"' + self._filler.encode() + b'"}}'
        )
        # The same document with the event id and the time of day as numbers: the
        # template of entries, whose fields are computed for all their events at once.
        self._day_template = self._template.replace(
            b'"event_id":"%s"', f'"event_id":"{workload.seed:08x}-%010d"'.encode(), 1
        ).replace(b'"timestamp":"%s","source":"service-%d"', b'"timestamp":"2025-12-17T%s%s"', 1)
        self._topic_bytes = np.array([t.encode() for t in self._topics], dtype=object)
        self._entry_templates: dict[int, bytes] = {}

    # -- ground truth -----------------------------------------------------------------

    @property
    def total(self) -> int:
        """How many events are sent, re-sends included."""
        return self.workload.events

    @functools.cached_property
    def expected_unique(self) -> int:
        """How many distinct ``(topic, event_id)`` keys are sent."""
        chunks = -(-self.total // CHUNK)
        return self._fresh_before_chunk(chunks)

    def expected_keys(self) -> Iterator[tuple[str, str]]:
        """Every distinct key sent, in ordinal order."""
        for u in range(self.expected_unique):
            yield self.key(u)

    # -- events -----------------------------------------------------------------------

    def key(self, ordinal: int) -> tuple[str, str]:
        topic = self._topics[(ordinal * _MIX) % self.workload.topics]
        return topic, f"{self.workload.seed:08x}-{ordinal:010d}"

    def event(self, ordinal: int) -> dict[str, Any]:
        """The event with this fresh ordinal, as a JSON-ready dict."""
        topic, event_id = self.key(ordinal)
        return {
            "topic": topic,
            "event_id": event_id,
            "timestamp": timestamp(ordinal),
            "source": f"service-{ordinal % 7}",
            "payload": {"seq": ordinal, "level": "INFO", "msg": self._filler},
        }

    def encoded(self, ordinal: int) -> bytes:
        """:meth:`event` as compact JSON, built by formatting: the publishers' hot path.

        Every part is plain ASCII that needs no escaping (topic names, ids, digits, the
        filler), so this is the same document ``orjson.dumps(self.event(ordinal))`` gives.
        """
        topic, event_id = self.key(ordinal)
        return self._template % (
            topic.encode(),
            event_id.encode(),
            timestamp(ordinal).encode(),
            ordinal % 7,
            ordinal,
        )

    def encoded_entry(self, ordinals: Sequence[int] | np.ndarray) -> bytes:
        """Several events as one stream entry: a JSON array, the same bytes as
        ``b"[" + b",".join(map(self.encoded, ordinals)) + b"]"``.

        The publishers' hot path. Each event's fields (topic, time of day, source) are
        computed for the whole entry with numpy, and the entry is formatted by one ``%``
        on a template of that many events: no Python work per event.
        """
        n = len(ordinals)
        ords = np.asarray(ordinals, dtype=np.int64)
        if n == 0 or ords.min() < 0 or ords.max() >= _DAY_MS:
            return b"[" + b",".join(self.encoded(int(u)) for u in ords) + b"]"
        topics = self.workload.topics
        # (u * _MIX) % topics, without int64 overflow for any ordinal
        topic = self._topic_bytes[(ords % topics) * (_MIX % topics) % topics]
        # the time of day and the source from two tables: "HH:MM:SS" by second, and
        # '.mmmZ","source":"service-S' by ordinal modulo 7000 (ms and source repeat so)
        values = ords.tolist()
        fields = zip(
            topic.tolist(),
            values,
            _seconds_of_day()[ords // 1000].tolist(),
            _millis_and_source()[ords % 7000].tolist(),
            values,
            strict=True,
        )
        return self._entry_template(n) % tuple(itertools.chain.from_iterable(fields))

    def _entry_template(self, n: int) -> bytes:
        template = self._entry_templates.get(n)
        if template is None:
            template = b"[" + b",".join([self._day_template] * n) + b"]"
            self._entry_templates[n] = template
        return template

    def ordinals(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The fresh ordinal of each event ``start ≤ i < stop`` (re-sends repeat one)."""
        parts = list(self.ordinal_chunks(start, stop))
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def ordinal_chunks(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """:meth:`ordinals` a chunk at a time, so a slice of any size needs little memory."""
        stop = self.total if stop is None else min(stop, self.total)
        if start >= stop:
            return
        first, last = start // CHUNK, (stop - 1) // CHUNK
        fresh_before = self._fresh_before_chunk(first)
        for chunk in range(first, last + 1):
            ordinals, fresh_in_chunk = self._chunk(chunk, fresh_before)
            lo = max(start - chunk * CHUNK, 0)
            hi = min(stop - chunk * CHUNK, len(ordinals))
            yield ordinals[lo:hi]
            fresh_before += fresh_in_chunk

    def ordinal_groups(self, start: int, stop: int, size: int) -> Iterator[list[int]]:
        """The ordinals of ``start ≤ i < stop`` in lists of ``size`` (the last may be
        shorter), generated a chunk at a time: a publisher's rounds, a stream's entries."""
        pending: list[int] = []
        for chunk in self.ordinal_chunks(start, stop):
            pending.extend(chunk.tolist())
            while len(pending) >= size:
                yield pending[:size]
                del pending[:size]
        if pending:
            yield pending

    def events(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """The events ``start ≤ i < stop`` in order, as JSON-ready dicts."""
        for ordinal in self.ordinals(start, stop).tolist():
            yield self.event(ordinal)

    # -- internals --------------------------------------------------------------------

    def _chunk_len(self, chunk: int) -> int:
        return min(CHUNK, self.total - chunk * CHUNK)

    def _is_dup(self, rng: np.random.Generator, chunk: int) -> np.ndarray:
        is_dup = rng.random(self._chunk_len(chunk)) < self.workload.duplicate_rate
        if chunk == 0 and len(is_dup):
            is_dup[0] = False  # the first event has nothing to re-send
        return is_dup

    def _fresh_before_chunk(self, chunk: int) -> int:
        fresh = 0
        for c in range(chunk):
            rng = np.random.default_rng([self.workload.seed, c])
            fresh += int(np.count_nonzero(~self._is_dup(rng, c)))
        return fresh

    def _chunk(self, chunk: int, fresh_before: int) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng([self.workload.seed, chunk])
        is_dup = self._is_dup(rng, chunk)
        fresh = ~is_dup
        # fresh events before each position, this chunk's earlier ones included
        seen = fresh_before + np.cumsum(fresh) - fresh
        picks = (rng.random(len(is_dup)) * seen).astype(np.int64)
        ordinals = np.where(is_dup, picks, seen).astype(np.int64)
        return ordinals, int(np.count_nonzero(fresh))
