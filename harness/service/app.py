"""The aggregator as an HTTP service (the seed's API, done carefully), on the harness's core.

``POST /publish`` checks a request's events and appends them, as one entry, to the same
Redis stream the harness uses; the consumers (threads of this app when it runs on its
own, processes of their own under ``harness serve``: :mod:`harness.service.serve`) run the same
:class:`~harness.pipeline.consumer.Consumer` as the Ray actors; ``GET /events`` and ``GET /stats``
read through the same :class:`~harness.store.postgres.Store`. There is no second implementation
of anything.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

import orjson
import psycopg
import redis
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from harness import __version__
from harness.delivery import broker as broker_mod
from harness.delivery.protocol import NotReplicated
from harness.infra.config import Settings
from harness.model import events
from harness.service import ingress
from harness.service.aggregator import Aggregator, ServiceConfig

MAX_LIMIT = 1000
#: Redis connections of one HTTP process for POST /publish, at most (requests beyond
#: them wait for one: an overload shows as latency, not as errors)
PUBLISH_CONNECTIONS = 100
#: with ``wait_replicas``, how long a request's round whose fate is unknown (a connection
#: lost, a WAIT short of replicas) is sent again before the request is answered 503: a
#: Sentinel failover (seconds) shows as latency, not as errors
PUBLISH_RESEND_S = 15.0
JSON = "application/json"


PUBLISH_DOC = """One event, or ``{"events": [...]}`` (at most ``max_events_per_request``).

All or nothing: a request with any invalid event is refused whole (422, naming each bad
event's index, field and reason); 413 for a body or a batch over the limits; 503 when
Redis does not take it. A 202 means the events are in Redis: they will be stored.
With ``wait_replicas`` a 202 also means that many replicas have them; a 503 then may
mean they are queued but not confirmed: send them again (an event stored already is
counted as a duplicate, not stored twice)."""

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
        "503": {
            "description": "Redis did not take the events; none was queued (with "
            "wait_replicas: not confirmed on the replicas, perhaps queued; send them again)"
        },
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

    One event, or ``{"events": [...]}``; all or nothing (see :mod:`harness.service.ingress`).
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
            if isinstance(exc, NotReplicated) or (
                self.config.wait_replicas and not isinstance(exc, redis.ResponseError)
            ):  # sent, perhaps more than once (see AsyncPublisher): some copy may be in
                return 503, {
                    "error": "Redis did not confirm the events on its replicas; they may be "
                    f"queued: send them again ({exc})"
                }
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
    app = _Service(
        _Publish(state),
        title="Idempotent log aggregator",
        version=__version__,
        description="Publish log events; each (topic, event_id) is stored exactly once.",
        lifespan=_lifespan(state),
    )
    app.state.aggregator = state
    app.add_exception_handler(psycopg.OperationalError, _postgres_down)
    app.add_exception_handler(redis.ConnectionError, _redis_down)
    app.include_router(reads)
    return app


def _lifespan(state: Aggregator) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the consumers and open the publish connections; stop and close them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.start)
        replicas = state.config.wait_replicas
        try:
            async with broker_mod.connect_async(
                state.settings.redis_url,
                max_connections=PUBLISH_CONNECTIONS,
                socket_timeout=30,
                socket_connect_timeout=5,
            ) as client:
                state.publisher = broker_mod.AsyncPublisher(
                    client,
                    state.keys,
                    replicas=replicas,
                    resend_s=PUBLISH_RESEND_S if replicas else 0.0,
                )
                yield
        finally:
            state.publisher = None
            await run_in_threadpool(state.stop)

    return lifespan


async def _postgres_down(request: Request, exc: Exception) -> Response:
    return _error(503, f"PostgreSQL is not answering: {type(exc).__name__}")


async def _redis_down(request: Request, exc: Exception) -> Response:
    return _error(503, f"Redis is not answering: {type(exc).__name__}")


def _aggregator(request: Request) -> Aggregator:
    return request.app.state.aggregator


#: the service's state, for a route that reads (a FastAPI dependency)
State = Annotated[Aggregator, Depends(_aggregator)]
#: the read side: ``/``, ``/events``, ``/stats``, ``/health``, ``/metrics``
reads = APIRouter()


@reads.get("/")
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


@reads.get("/events")
def list_events(
    state: State,
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


@reads.get("/stats")
def stats(state: State) -> dict[str, Any]:
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
        "consumers": state.config.consumers,
    }


@reads.get("/health")
def health(state: State) -> Response:
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


@reads.get("/metrics")
def metrics(state: State) -> Response:
    return Response(state.metrics_text(), media_type="text/plain; version=0.0.4")
