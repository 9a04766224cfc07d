"""The aggregator's state in one HTTP process: its configuration, its connections, its
metrics, and the consumers it runs (threads here; processes of their own under
``harness serve``, :mod:`harness.service.serve`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg_pool
import redis
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from harness.delivery import broker as broker_mod
from harness.delivery.keys import Keys
from harness.infra.config import Settings
from harness.model.retry import Backoff, RetryPolicy
from harness.pipeline.consumer import Consumer, ConsumerConfig
from harness.store.postgres import Store

#: set (to a folder) in every process of a multi-process service: the metrics live in files
#: there, which every process writes and a scrape reads (prometheus_client's multiprocess
#: mode)
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: how a consumer thread that failed (its servers down at start, say) waits to start again
RESTART = RetryPolicy(base_delay=0.1, max_delay=5.0)
#: how long a read endpoint waits for a PostgreSQL connection before it answers 503
READ_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    #: consumers applying the stream to PostgreSQL; 0 makes the service ingress-only
    consumers: int = 2
    #: ``True``: the consumers are threads of this process (an app run on its own, as
    #: the tests do); ``False``: someone else runs them (``harness serve`` runs each in
    #: its own process, see :mod:`harness.service.serve`)
    consumers_in_process: bool = True
    #: HTTP worker processes (``harness serve``); each runs this app
    workers: int = 1
    batch_size: int = 100
    #: a consumer that keeps up waits up to this long between reads, so that one
    #: transaction carries what arrived meanwhile (see ConsumerConfig.linger_ms)
    linger_ms: float = 20.0
    isolation: str = "read_committed"
    #: consumer names are ``<name>-<i>``: stable, so a restarted service drains the
    #: entries it held before it stopped
    name: str = "aggregator"
    max_body_bytes: int = 8 * 1024 * 1024
    max_events_per_request: int = 10_000
    #: PostgreSQL connections for the read endpoints
    readers: int = 4
    claim_idle_ms: int = 10_000
    #: replicas of the Redis primary that must have a request's entry before its 202
    #: (``WAIT`` after the XADDs): with 1 and a replica, an accepted event survives a
    #: failover of the primary (a ``redis+sentinel://`` URL finds the promoted one);
    #: 0 answers once the primary has it
    wait_replicas: int = 0
    #: fault injection (tests): a consumer process exits, unacknowledged, right after
    #: this many commits; the one started in its place does not
    crash_after_commits: int | None = None

    def __post_init__(self) -> None:
        if self.consumers < 0 or self.batch_size < 1 or self.readers < 1:
            raise ValueError("consumers must be ≥ 0, batch_size and readers ≥ 1")
        if self.workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {self.workers}")
        if self.wait_replicas < 0:
            raise ValueError(f"wait_replicas must be ≥ 0, got {self.wait_replicas}")
        if not 0 <= self.linger_ms <= 1000:
            raise ValueError(f"linger_ms must be in [0, 1000], got {self.linger_ms:g}")
        self.consumer_config(0)  # what the consumers would refuse, refused here
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")

    def consumer_config(self, index: int) -> ConsumerConfig:
        """The configuration of consumer ``index``."""
        return ConsumerConfig(
            name=f"{self.name}-{index}",
            batch_size=self.batch_size,
            claim_idle_ms=self.claim_idle_ms,
            block_ms=200,
            linger_ms=self.linger_ms,
            crash_after_commits=self.crash_after_commits,
            shard=index,
        )


class Readers:
    """The read endpoints' PostgreSQL connections: a :class:`psycopg_pool.ConnectionPool`
    of at most ``size``, each lent to a :class:`Store` for one request. The pool opens in
    the background, so a service starts before PostgreSQL answers (/health says 503)."""

    def __init__(self, settings: Settings, config: ServiceConfig) -> None:
        self._template = _store(settings, config)
        self._pool = psycopg_pool.ConnectionPool(
            settings.pg_dsn,
            min_size=1,
            max_size=config.readers,
            kwargs=self._template.connection_options(),
            timeout=READ_TIMEOUT_S,
            open=False,
            name="readers",
        )

    def open(self) -> None:
        self._pool.open(wait=False)

    @contextlib.contextmanager
    def get(self) -> Iterator[Store]:
        with self._pool.connection() as conn:
            t = self._template
            yield Store(
                t.dsn, schema=t.schema, isolation=t.isolation, counter=t.counter, connection=conn
            )

    def close(self) -> None:
        self._pool.close()


_CONSUMER_COUNTERS = {
    "received": "Events the consumers applied (deliveries)",
    "unique": "Events stored for the first time",
    "duplicate": "Deliveries dropped as duplicates",
    "redelivered": "Deliveries recognised as applied before and skipped",
    "rejected": "Events dead-lettered by the consumers",
    "batches": "Transactions committed",
}


class ConsumerMetrics:
    """The consumers' Prometheus metrics, kept up to date from their stats.

    Counters, not a scrape-time view of the consumers' objects, so that they add up
    across processes too: under ``harness serve`` each consumer runs in its own process
    and ``prometheus_client``'s multiprocess mode sums them.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        kw: dict[str, Any] = {"registry": registry}
        self.counters = {
            field: Counter(f"aggregator_consumer_{field}", doc, **kw)
            for field, doc in _CONSUMER_COUNTERS.items()
        }
        self.retries = Counter(
            "aggregator_consumer_retries", "Transaction retries by cause", ["cause"], **kw
        )
        self.batch_seconds = Histogram(
            "aggregator_batch_seconds",
            "Time to apply one batch in PostgreSQL, retries included",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            **kw,
        )
        self._seen: dict[int, dict[str, int]] = {}
        self._lock = threading.Lock()

    def committed(self, consumer: Consumer, seconds: float) -> None:
        """After ``consumer`` committed a batch that took ``seconds``."""
        self.batch_seconds.observe(seconds)
        self.sync(consumer)

    def sync(self, consumer: Consumer) -> None:
        """Add what ``consumer`` did since the last call."""
        stats = consumer.stats
        now = {field: getattr(stats, field) for field in _CONSUMER_COUNTERS}
        now.update({f"retry:{cause}": n for cause, n in stats.retries.items()})
        with self._lock:
            seen = self._seen.setdefault(id(consumer), {})
            for key, value in now.items():
                delta = value - seen.get(key, 0)
                if delta > 0:
                    if key.startswith("retry:"):
                        self.retries.labels(key[6:]).inc(delta)
                    else:
                        self.counters[key].inc(delta)
            seen.update(now)


def run_consumer(
    settings: Settings,
    config: ServiceConfig,
    index: int,
    stop: threading.Event,
    metrics: ConsumerMetrics,
) -> None:
    """Consumer ``index`` until ``stop``; after an error it waits and goes on rather than
    crash-loop (PostgreSQL or Redis gone: its entries stay pending meanwhile). The body
    of each consumer thread, and of each consumer process of ``harness serve``."""
    keys = Keys(settings.key_prefix)
    consumer = Consumer(
        broker_mod.StreamBroker(broker_mod.connect(settings.redis_url), keys),
        # each consumer adds to its own counter row: none waits on another's
        _store(settings, config, counter="sharded"),
        config.consumer_config(index),
        on_commit=lambda seconds, _events: metrics.committed(consumer, seconds),
    )
    backoff = Backoff(RESTART)
    try:
        while not stop.is_set():
            try:
                prepare(settings, config)
                consumer.run(stop)
            except Exception:
                consumer.store.close()
                stop.wait(backoff.failed())
            else:
                backoff.succeeded()
            finally:
                metrics.sync(consumer)
    finally:
        consumer.store.close()
        consumer.broker.client.close()


def _store(settings: Settings, config: ServiceConfig, counter: str = "atomic") -> Store:
    return Store(
        settings.pg_dsn, schema=settings.pg_schema, isolation=config.isolation, counter=counter
    )


_prepared: set[tuple[str, str, str, str]] = set()
_prepare_lock = threading.Lock()


def prepare(settings: Settings, config: ServiceConfig) -> None:
    """Create the tables and the consumer group if missing (idempotent; once a process)."""
    key = (settings.pg_dsn, settings.pg_schema, settings.redis_url, settings.key_prefix)
    with _prepare_lock:
        if key in _prepared:
            return
        with contextlib.closing(_store(settings, config)) as store:
            store.create_schema()
        client = broker_mod.connect(settings.redis_url)
        try:
            broker_mod.StreamBroker(client, Keys(settings.key_prefix)).ensure_group()
        finally:
            client.close()
        _prepared.add(key)


class _Pending(Collector):
    """``aggregator_pending_requests``, read from the stream at scrape time."""

    def __init__(self, broker: broker_mod.StreamBroker) -> None:
        self._broker = broker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            value = float(self._broker.backlog().unacknowledged)
        except (redis.RedisError, StopIteration):
            value = float("nan")
        yield GaugeMetricFamily(
            "aggregator_pending_requests",
            "Requests (stream entries) queued or in flight, not yet stored",
            value,
        )


class Aggregator:
    """The service's state in one HTTP process: connections, metrics, and the consumer
    threads when it runs its consumers itself."""

    def __init__(self, settings: Settings, config: ServiceConfig) -> None:
        self.settings = settings
        self.config = config
        self.keys = Keys(settings.key_prefix)
        self.started = time.monotonic()
        self.broker = broker_mod.StreamBroker(broker_mod.connect(settings.redis_url), self.keys)
        self.readers = Readers(settings, config)
        #: set in the app's lifespan (it belongs to the event loop)
        self.publisher: broker_mod.AsyncPublisher | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.multiprocess = METRICS_ENV in os.environ
        # Under multiprocess mode the values live in files every process writes, and a
        # scrape reads them all (see metrics_text); otherwise in this app's registry.
        self.registry = CollectorRegistry()
        own = None if self.multiprocess else self.registry
        self.accepted = Counter(
            "aggregator_events_accepted", "Events accepted by POST /publish", registry=own
        )
        self.rejected = Counter(
            "aggregator_events_rejected", "Events refused by POST /publish", registry=own
        )
        self.publish_seconds = Histogram(
            "aggregator_publish_seconds",
            "Time to check and queue one POST /publish",
            registry=own,
        )
        self.consumer_metrics = ConsumerMetrics(own)
        self._pending = _Pending(self.broker)
        if not self.multiprocess:
            self.registry.register(self._pending)

    def start(self) -> None:
        self.readers.open()
        # A service outlives its dependencies: /health says 503 until they answer, and
        # the consumers prepare the schema and group once they can.
        with contextlib.suppress(Exception):
            prepare(self.settings, self.config)
        if not self.config.consumers_in_process:
            return
        for i in range(self.config.consumers):
            thread = threading.Thread(
                target=run_consumer,
                args=(self.settings, self.config, i, self._stop, self.consumer_metrics),
                name=f"consumer-{i}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.readers.close()
        self.broker.client.close()

    def metrics_text(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(self._pending)
        return generate_latest(registry)

    def count_rejected(self, n: int) -> None:
        """Events refused at ingress: counted in Redis, where every HTTP process adds."""
        self.rejected.inc(n)
        with contextlib.suppress(redis.RedisError):
            self.broker.client.incrby(self.keys.rejected, n)

    def rejected_at_ingress(self) -> int:
        return int(self.broker.client.get(self.keys.rejected) or 0)
