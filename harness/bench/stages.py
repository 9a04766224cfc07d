"""``python -m harness bench --stages``: the CPU each step of the pipeline costs per event.

One process runs the pipeline's steps one after the other on a real Redis and
PostgreSQL, the same code the actors run, and times each step's CPU (this thread's, so
that waiting on a server costs nothing) and wall clock:

publisher: ``encode`` (events into stream entries), ``xadd`` (pipelined, as publishers do);
consumer:  ``read`` (XREADGROUP, carrying the XACK of the batch before, as consumers
           do), ``decode`` (entries into validated rows), ``prepare`` (what the store does
           to a batch before it applies it), ``apply`` (the client's side of the insert
           and count: COPY text, the one round trip, the result).

Where :mod:`harness.bench.pipeline` says how fast the whole is, this says which step to make
cheaper; the per-change figures in docs/performance.md come from it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, TypeVar

from harness.bench.shape import Shape
from harness.delivery import broker as broker_mod
from harness.delivery.keys import Keys
from harness.infra.config import Settings
from harness.model import events
from harness.model.generator import Generator
from harness.store.postgres import Store

STEPS = ("encode", "xadd", "read", "decode", "prepare", "apply")
PUBLISHER_STEPS = frozenset({"encode", "xadd"})
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StagesConfig(Shape):
    """As ``bench`` runs (c), in one process, step by step."""

    #: stream entries per XADD round trip (the publishers' ``pipeline``)
    pipeline: int = 10


@dataclasses.dataclass(frozen=True)
class StepTime:
    step: str
    cpu_s: float
    wall_s: float
    events: int

    @property
    def cpu_us(self) -> float:
        """CPU µs per event."""
        return self.cpu_s / self.events * 1e6

    @property
    def wall_us(self) -> float:
        return self.wall_s / self.events * 1e6


class _Clock:
    """CPU and wall time spent in each step, summed over calls."""

    def __init__(self) -> None:
        self.cpu: dict[str, int] = dict.fromkeys(STEPS, 0)
        self.wall: dict[str, int] = dict.fromkeys(STEPS, 0)

    def time(self, step: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        out = fn(*args, **kwargs)
        self.cpu[step] += time.thread_time_ns() - c0
        self.wall[step] += time.perf_counter_ns() - w0
        return out


def _one_pass(settings: Settings, cfg: StagesConfig, store: Store, keys: Keys) -> _Clock:
    clock = _Clock()
    generator = Generator(cfg.workload())
    store.reset()
    channel = broker_mod.open_broker("stream", settings.redis_url, keys, role="stages")
    assert isinstance(channel, broker_mod.StreamBroker)
    channel.reset()
    # publisher: encode every entry, then XADD them in pipelined rounds
    payloads: list[tuple[bytes, int]] = []
    for ordinals in generator.ordinal_groups(0, cfg.events, cfg.entry_size):
        payloads.append((clock.time("encode", generator.encoded_entry, ordinals), len(ordinals)))
    for i in range(0, len(payloads), cfg.pipeline):
        clock.time("xadd", channel.publish, payloads[i : i + cfg.pipeline])
    payloads.clear()
    # consumer: what Consumer.apply does, a step at a time
    per_batch = max(1, -(-cfg.batch_size // cfg.entry_size))
    acks: list[bytes] = []
    while True:
        deliveries = clock.time("read", channel.read, "stages", per_batch, 1, ack=acks)
        if not deliveries:
            break
        rows: list[Any] = []
        for delivery in deliveries:
            rows.extend(clock.time("decode", events.decode_rows, delivery.payload))
        batch = clock.time("prepare", store.prepare_batch, rows)
        clock.time("apply", store.apply_prepared, batch, shard=1)
        acks = [x.entry_id for x in deliveries]
    counters = store.counters()
    if counters.received != cfg.events:
        raise RuntimeError(f"received {counters.received:,}, expected {cfg.events:,}")
    channel.client.delete(*keys.all())
    channel.client.close()
    return clock


def run(settings: Settings, cfg: StagesConfig, progress: Any = None) -> list[StepTime]:
    """Each step's best pass over ``cfg.repeat`` passes, in :data:`STEPS` order."""
    say = progress or (lambda _message: None)
    keys = Keys(f"{settings.key_prefix}:stages")
    best: dict[str, StepTime] = {}
    with Store(settings.pg_dsn, schema=settings.pg_schema, counter="sharded") as store:
        store.create_schema()
        for r in range(cfg.repeat):
            say(f"pass {r + 1}/{cfg.repeat}: {cfg.events:,} events")
            clock = _one_pass(settings, cfg, store, keys)
            for step in STEPS:
                t = StepTime(step, clock.cpu[step] / 1e9, clock.wall[step] / 1e9, cfg.events)
                if step not in best or t.cpu_s < best[step].cpu_s:
                    best[step] = t
        store.reset()
    return [best[step] for step in STEPS]


#: What a round trip costs the client here, measured by :func:`round_trips`.
PROBES = (
    ("redis PING", "redis"),
    ("PostgreSQL SELECT 1", "pg"),
    ("PostgreSQL SELECT pg_sleep(0.02)", "pg_sleep"),
)


def round_trips(settings: Settings, n: int = 500) -> dict[str, float]:
    """The client's CPU µs per round trip: a Redis PING, a PostgreSQL ``SELECT 1``, and a
    query that keeps the client waiting 20 ms (a batch's insert takes about that long).

    On a virtual machine, blocking and being woken is what a round trip costs the
    client, and the longer the wait the more it costs: the reason the pipeline sends as
    few round trips per batch as it can.
    """
    out: dict[str, float] = {}
    client = broker_mod.connect(settings.redis_url)
    try:
        out["redis"] = _cpu_us_each(client.ping, n)
    finally:
        client.close()
    with Store(settings.pg_dsn, schema=settings.pg_schema) as store:
        conn = store.conn
        out["pg"] = _cpu_us_each(lambda: conn.execute("SELECT 1"), n)
        out["pg_sleep"] = _cpu_us_each(lambda: conn.execute("SELECT pg_sleep(0.02)"), 50)
    return out


def _cpu_us_each(fn: Callable[[], object], n: int) -> float:
    fn()
    c0 = time.thread_time_ns()
    for _ in range(n):
        fn()
    return (time.thread_time_ns() - c0) / n / 1e3
