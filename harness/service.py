"""The aggregator as an HTTP service (the seed's API, done carefully), on the harness's core.

``POST /publish`` validates and appends events to the same Redis stream the harness
uses; background consumer threads run the same :class:`~harness.consumer.Consumer`
as the Ray actors; ``GET /events`` and ``GET /stats`` read through the same
:class:`~harness.store.Store`. There is no second implementation of anything.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import orjson
import psycopg
import redis
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from harness import __version__, events
from harness import broker as broker_mod
from harness.config import Settings
from harness.consumer import Consumer, ConsumerConfig
from harness.keys import Keys
from harness.store import Store

MAX_LIMIT = 1000


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    #: background consumer threads; 0 makes the service ingress-only
    consumers: int = 2
    batch_size: int = 100
    isolation: str = "read_committed"
    #: consumer names are ``<name>-<i>``: stable, so a restarted service drains the
    #: entries it held before it stopped
    name: str = "aggregator"
    max_body_bytes: int = 8 * 1024 * 1024
    max_events_per_request: int = 10_000
    #: PostgreSQL connections for the read endpoints
    readers: int = 4
    claim_idle_ms: int = 10_000

    def __post_init__(self) -> None:
        if self.consumers < 0 or self.batch_size < 1 or self.readers < 1:
            raise ValueError("consumers must be ≥ 0, batch_size and readers ≥ 1")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")


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


class _ConsumerCollector(Collector):
    """Exposes the background consumers' counters at scrape time."""

    def __init__(self, workers: list[Consumer]) -> None:
        self._workers = workers

    def collect(self) -> Iterator[CounterMetricFamily]:
        names = {
            "received": "Events the background consumers applied (deliveries)",
            "unique": "Events stored for the first time",
            "duplicate": "Deliveries dropped as duplicates",
            "rejected": "Stream entries dead-lettered by the consumers",
            "batches": "Transactions committed",
        }
        for field, doc in names.items():
            family = CounterMetricFamily(f"aggregator_consumer_{field}", doc)
            family.add_metric([], sum(getattr(w.stats, field) for w in self._workers))
            yield family
        retries = CounterMetricFamily(
            "aggregator_consumer_retries", "Transaction retries by cause", labels=["cause"]
        )
        causes: dict[str, int] = {}
        for w in self._workers:
            for cause, n in w.stats.retries.items():
                causes[cause] = causes.get(cause, 0) + n
        for cause, n in sorted(causes.items()):
            retries.add_metric([cause], n)
        yield retries


class Aggregator:
    """The service's state: connections, consumer threads, metrics."""

    def __init__(self, settings: Settings, config: ServiceConfig) -> None:
        self.settings = settings
        self.config = config
        self.keys = Keys(settings.key_prefix)
        self.started = time.monotonic()
        self.broker = broker_mod.StreamBroker(broker_mod.connect(settings.redis_url), self.keys)
        self.readers = _StorePool(self._store, config.readers)
        self.rejected_at_ingress = 0
        self._stop = threading.Event()
        self._prepare_lock = threading.Lock()
        self._prepared = False
        self._threads: list[threading.Thread] = []
        self.workers: list[Consumer] = []
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "aggregator_events_accepted",
            "Events accepted by POST /publish",
            registry=self.registry,
        )
        self.rejected = Counter(
            "aggregator_events_rejected",
            "Events refused by POST /publish",
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "aggregator_publish_seconds",
            "Time to validate and queue one POST /publish",
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "aggregator_batch_seconds",
            "Time to apply one batch in PostgreSQL, retries included",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.pending = Gauge(
            "aggregator_pending_events",
            "Events queued or in flight, not yet stored",
            registry=self.registry,
        )
        self.pending.set_function(self._pending_or_nan)
        self.registry.register(_ConsumerCollector(self.workers))

    def _store(self) -> Store:
        return Store(
            self.settings.pg_dsn, schema=self.settings.pg_schema, isolation=self.config.isolation
        )

    def prepare(self) -> None:
        """Create the tables and the consumer group if missing (idempotent)."""
        with self._prepare_lock:
            if self._prepared:
                return
            with contextlib.closing(self._store()) as store:
                store.create_schema()
            self.broker.ensure_group()
            self._prepared = True

    def start(self) -> None:
        # A service outlives its dependencies: /health says 503 until they answer, and
        # the consumer threads prepare the schema and group once they can.
        with contextlib.suppress(Exception):
            self.prepare()
        for i in range(self.config.consumers):
            consumer = Consumer(
                broker_mod.StreamBroker(broker_mod.connect(self.settings.redis_url), self.keys),
                self._store(),
                ConsumerConfig(
                    name=f"{self.config.name}-{i}",
                    batch_size=self.config.batch_size,
                    claim_idle_ms=self.config.claim_idle_ms,
                    block_ms=200,
                ),
                on_commit=lambda seconds, _events: self.batch_seconds.observe(seconds),
            )
            self.workers.append(consumer)
            thread = threading.Thread(
                target=self._consume, args=(consumer,), name=f"consumer-{i}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _consume(self, consumer: Consumer) -> None:
        """Run a consumer; after an error, wait and go on rather than crash-loop."""
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self.prepare()
                consumer.run(self._stop)
            except Exception:  # e.g. PostgreSQL or Redis gone: the entries stay pending
                consumer.store.close()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for consumer in self.workers:
            consumer.store.close()
            consumer.broker.client.close()
        self.readers.close()
        self.broker.client.close()

    def _pending_or_nan(self) -> float:
        try:
            return float(self.broker.backlog().unacknowledged)
        except (redis.RedisError, StopIteration):
            return float("nan")


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


def create_app(settings: Settings, config: ServiceConfig | None = None) -> FastAPI:
    config = config or ServiceConfig()
    state = Aggregator(settings, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.start)
        try:
            yield
        finally:
            await run_in_threadpool(state.stop)

    app = FastAPI(
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

    @app.post("/publish", status_code=202)
    async def publish(request: Request) -> Response:
        """One event, or ``{"events": [...]}``. All or nothing: a request with any invalid
        event is refused whole (422, naming each bad event's index, field and reason)."""
        started = time.perf_counter()
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > config.max_body_bytes:
            return _error(413, f"body larger than {config.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_body_bytes:
                return _error(413, f"body larger than {config.max_body_bytes} bytes")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"body is not JSON: {exc}")
        if isinstance(data, dict) and "events" in data:
            items = data["events"]
            if not isinstance(items, list):
                return _error(422, "'events' must be a list of events")
        elif isinstance(data, dict):
            items = [data]
        else:
            return _error(422, 'body must be an event object or {"events": [...]}')
        if not items:
            return _error(422, "'events' is empty")
        if len(items) > config.max_events_per_request:
            return _error(413, f"more than {config.max_events_per_request} events in one request")
        valid, problems = [], []
        for index, item in enumerate(items):
            try:
                valid.append(events.validate(item).to_dict())
            except events.InvalidEvent as exc:
                problems.append({"index": index, "field": exc.field, "reason": exc.reason})
        if problems:
            state.rejected_at_ingress += len(items)
            state.rejected.inc(len(items))
            return _error(
                422,
                f"{len(problems)} of {len(items)} events are invalid; none was queued",
                problems=problems[:100],
            )
        entries = [(orjson.dumps([e]), 1) for e in valid]
        # The harness's HTTP publishers send their clock, so latency starts at the client.
        created = request.headers.get("x-created-ns", "")
        created_ns = int(created) if created.isdigit() else None
        try:
            await run_in_threadpool(state.broker.publish, entries, created_ns=created_ns)
        except redis.RedisError as exc:
            return _error(503, f"Redis did not take the events; none was queued ({exc})")
        state.accepted.inc(len(valid))
        state.publish_seconds.observe(time.perf_counter() - started)
        return JSONResponse({"status": "accepted", "queued": len(valid)}, status_code=202)

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
        return {
            "received": counters.received,
            "unique_processed": counters.unique_processed,
            "duplicate_dropped": counters.duplicate_dropped,
            # deliveries recognised as applied before (after a crash) and skipped
            "redelivered": counters.redelivered,
            "topics": topics,
            "uptime_seconds": round(time.monotonic() - state.started, 3),
            "pending": backlog.unacknowledged,
            "rejected": state.rejected_at_ingress + dead,
            "rejected_at_ingress": state.rejected_at_ingress,
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
        return Response(generate_latest(state.registry), media_type="text/plain; version=0.0.4")

    return app
