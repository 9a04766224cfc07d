"""The aggregator as an HTTP service (the seed's API, done carefully), on the harness's core.

``POST /publish`` checks a request's events and appends them, as one entry, to the same
Redis stream the harness uses; the consumers (threads of this app when it runs on its
own, processes of their own under ``harness serve``: :mod:`harness.serve`) run the same
:class:`~harness.consumer.Consumer` as the Ray actors; ``GET /events`` and ``GET /stats``
read through the same :class:`~harness.store.Store`. There is no second implementation
of anything.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import orjson
import psycopg
import redis
import redis.asyncio
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from harness import __version__, events, ingress
from harness import broker as broker_mod
from harness.config import Settings
from harness.consumer import Consumer, ConsumerConfig
from harness.keys import Keys
from harness.serve import METRICS_ENV
from harness.store import Store

MAX_LIMIT = 1000
#: Redis connections of one HTTP process for POST /publish, at most (requests beyond
#: them wait for one: an overload shows as latency, not as errors)
PUBLISH_CONNECTIONS = 100
JSON = "application/json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    #: consumers applying the stream to PostgreSQL; 0 makes the service ingress-only
    consumers: int = 2
    #: ``True``: the consumers are threads of this process (an app run on its own, as
    #: the tests do); ``False``: someone else runs them (``harness serve`` runs each in
    #: its own process, see :mod:`harness.serve`)
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
    #: fault injection (tests): a consumer process exits, unacknowledged, right after
    #: this many commits; the one started in its place does not
    crash_after_commits: int | None = None

    def __post_init__(self) -> None:
        if self.consumers < 0 or self.batch_size < 1 or self.readers < 1:
            raise ValueError("consumers must be ≥ 0, batch_size and readers ≥ 1")
        if self.workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {self.workers}")
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


class _StorePool:
    """A few Store connections shared by the read endpoints (one per request at a time)."""

    def __init__(self, factory: Any, size: int) -> None:
        self._factory = factory
        self._idle: queue.LifoQueue[Store] = queue.LifoQueue()
        self._slots = threading.Semaphore(size)
        self._all: list[Store] = []

    @contextlib.contextmanager
    def get(self) -> Iterator[Store]:
        with self._slots:
            try:
                store = self._idle.get_nowait()
            except queue.Empty:
                store = self._factory()
                self._all.append(store)
            try:
                yield store
            except Exception:
                store.close()  # a broken connection is reopened on next use
                raise
            finally:
                self._idle.put(store)

    def close(self) -> None:
        for store in self._all:
            store.close()


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
    backoff = 0.1
    try:
        while not stop.is_set():
            try:
                prepare(settings, config)
                consumer.run(stop)
            except Exception:
                consumer.store.close()
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1
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
        self.readers = _StorePool(lambda: _store(settings, config), config.readers)
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


PUBLISH_DOC = """One event, or ``{"events": [...]}`` (at most ``max_events_per_request``).

All or nothing: a request with any invalid event is refused whole (422, naming each bad
event's index, field and reason); 413 for a body or a batch over the limits; 503 when
Redis does not take it. A 202 means the events are in Redis: they will be stored."""

_EVENT_SCHEMA = {
    "type": "object",
    "required": ["topic", "event_id", "timestamp", "source"],
    "properties": {
        "topic": {"type": "string", "minLength": 1, "maxLength": events.MAX_KEY_CHARS},
        "event_id": {"type": "string", "minLength": 1, "maxLength": events.MAX_KEY_CHARS},
        "timestamp": {"type": "string", "description": "ISO 8601 with a time zone"},
        "source": {"type": "string", "maxLength": events.MAX_SOURCE_CHARS},
        "payload": {"type": "object"},
    },
}
_PUBLISH_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "oneOf": [
                        _EVENT_SCHEMA,
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {"events": {"type": "array", "items": _EVENT_SCHEMA}},
                        },
                    ]
                }
            }
        },
    },
    "responses": {
        "202": {"description": 'Queued: ``{"status": "accepted", "queued": n}``'},
        "400": {"description": "Not JSON"},
        "413": {"description": "Body or batch too large"},
        "422": {"description": "Invalid events, each named; none was queued"},
        "503": {"description": "Redis did not take the events; none was queued"},
    },
}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _cursor(row: dict[str, Any]) -> str:
    raw = orjson.dumps([row["timestamp"], row["topic"], row["event_id"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[dt.datetime, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, topic, event_id = orjson.loads(raw)
        return events.parse_timestamp(ts), str(topic), str(event_id)
    except (ValueError, TypeError, events.InvalidEvent):
        raise ValueError("cursor is not one this service returned") from None


class _Publish:
    """``POST /publish`` as a bare ASGI app: the hot path, so it skips the framework's
    routing and middleware (a third of a request's CPU when it went through them).

    One event, or ``{"events": [...]}``; all or nothing (see :mod:`harness.ingress`).
    A 202 is sent once Redis has the request's entry."""

    def __init__(self, state: Aggregator) -> None:
        self.state = state
        self.config = state.config

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        headers = [(b"content-type", b"application/json")]
        try:
            if scope["method"] == "POST":
                status, body = await self._handle(scope, receive)
            else:
                status, body = 405, {"error": "POST events to /publish"}
                headers.append((b"allow", b"POST"))
        except Exception as exc:  # answered, not raised: the server would only log it
            status, body = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
        else:
            if status == 202:
                self.state.publish_seconds.observe(time.perf_counter() - started)
        data = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def _handle(self, scope: Any, receive: Any) -> tuple[int, dict[str, Any]]:
        limit = self.config.max_body_bytes
        declared, created = None, b""
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"x-created-ns":
                created = value
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return 413, {"error": f"body larger than {limit} bytes"}
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 499, {"error": "client went away"}
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return 413, {"error": f"body larger than {limit} bytes"}
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            entry = ingress.parse(body, max_events=self.config.max_events_per_request)
        except ingress.Refused as refused:
            if refused.events:
                await run_in_threadpool(self.state.count_rejected, refused.events)
            answer: dict[str, Any] = {"error": refused.message}
            if refused.problems:
                answer["problems"] = refused.problems[:100]
            return refused.status, answer
        publisher = self.state.publisher
        if publisher is None:
            return 503, {"error": "the service is starting"}
        # The harness's HTTP publishers send their clock, so latency starts at the client.
        try:
            await publisher.publish(
                entry.data, entry.count, created_ns=int(created) if created.isdigit() else None
            )
        except (redis.RedisError, OSError) as exc:
            return 503, {"error": f"Redis did not take the events; none was queued ({exc})"}
        self.state.accepted.inc(entry.count)
        return 202, {"status": "accepted", "queued": entry.count}


class _Service(FastAPI):
    """The API, with ``POST /publish`` answered before the framework's stack."""

    def __init__(self, publish: _Publish, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._publish = publish

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/publish":
            await self._publish(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            operation = {"summary": "Publish", "description": PUBLISH_DOC, **_PUBLISH_OPENAPI}
            schema.setdefault("paths", {})["/publish"] = {"post": operation}
            self.openapi_schema = schema
        return self.openapi_schema


def create_app(settings: Settings, config: ServiceConfig | None = None) -> FastAPI:
    config = config or ServiceConfig()
    state = Aggregator(settings, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.start)
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=PUBLISH_CONNECTIONS,
            timeout=None,
            socket_timeout=30,
            socket_connect_timeout=5,
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        state.publisher = broker_mod.AsyncPublisher(client, state.keys)
        try:
            yield
        finally:
            await client.aclose()
            await pool.aclose()
            await run_in_threadpool(state.stop)

    app = _Service(
        _Publish(state),
        title="Idempotent log aggregator",
        version=__version__,
        description="Publish log events; each (topic, event_id) is stored exactly once.",
        lifespan=lifespan,
    )
    app.state.aggregator = state

    @app.exception_handler(psycopg.OperationalError)
    async def postgres_down(request: Request, exc: psycopg.OperationalError) -> Response:
        return _error(503, f"PostgreSQL is not answering: {type(exc).__name__}")

    @app.exception_handler(redis.ConnectionError)
    async def redis_down(request: Request, exc: redis.ConnectionError) -> Response:
        return _error(503, f"Redis is not answering: {type(exc).__name__}")

    @app.get("/")
    def root() -> dict[str, Any]:
        return {
            "name": "harness log aggregator",
            "version": __version__,
            "links": {
                "publish": "/publish",
                "events": "/events",
                "stats": "/stats",
                "health": "/health",
                "metrics": "/metrics",
                "docs": "/docs",
            },
        }

    @app.get("/events")
    def list_events(
        topic: Annotated[str | None, Query(max_length=events.MAX_KEY_CHARS)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        since: Annotated[str | None, Query(description="ISO 8601 with a time zone")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the page before")] = None,
    ) -> Response:
        """Stored events, newest first by their timestamp, a page at a time."""
        try:
            since_ts = events.parse_timestamp(since) if since is not None else None
            before = _parse_cursor(cursor) if cursor else None
        except events.InvalidEvent as exc:
            return _error(422, f"since: {exc.reason}")
        except ValueError as exc:
            return _error(422, str(exc))
        with state.readers.get() as store:
            rows = store.list_events(topic=topic, since=since_ts, before=before, limit=limit)
        return JSONResponse(
            {
                "events": rows,
                "count": len(rows),
                "next_cursor": _cursor(rows[-1]) if len(rows) == limit else None,
            }
        )

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        with state.readers.get() as store:
            counters = store.counters()
            topics = store.topic_count()
        backlog = state.broker.backlog()
        dead = state.broker.dead_letter_count()
        rejected = state.rejected_at_ingress()
        return {
            "received": counters.received,
            "unique_processed": counters.unique_processed,
            "duplicate_dropped": counters.duplicate_dropped,
            # deliveries recognised as applied before (after a crash) and skipped
            "redelivered": counters.redelivered,
            "topics": topics,
            "uptime_seconds": round(time.monotonic() - state.started, 3),
            # requests (one stream entry each) queued or in flight, not yet stored
            "pending": backlog.unacknowledged,
            "rejected": rejected + dead,
            "rejected_at_ingress": rejected,
            "dead_lettered": dead,
            "consumers": config.consumers,
        }

    @app.get("/health")
    def health() -> Response:
        checks: dict[str, str] = {}
        try:
            with state.readers.get() as store:
                store.ping()
            checks["postgresql"] = "ok"
        except Exception as exc:  # any failure means "not healthy", with the reason
            checks["postgresql"] = f"unavailable: {type(exc).__name__}"
        try:
            state.broker.client.ping()
            checks["redis"] = "ok"
        except (redis.RedisError, OSError) as exc:
            checks["redis"] = f"unavailable: {type(exc).__name__}"
        down = [name for name, verdict in checks.items() if verdict != "ok"]
        body = {"status": "ok" if not down else "unavailable", **checks}
        if down:
            body["error"] = f"{' and '.join(down)} not answering"
        return JSONResponse(body, status_code=503 if down else 200)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(state.metrics_text(), media_type="text/plain; version=0.0.4")

    return app
