"""The bare endpoint: ``POST /publish`` parses the body and XADDs it, nothing more.

What one uvicorn worker can do for a one-event request before any of the service's work
(validation, entry identities, metrics, consumers, PostgreSQL): the ceiling the service
bench holds ``harness serve`` against. One stream entry per request, through
``redis.asyncio``; it answers as the service does (202, ``{"queued": n}``), so the same
k6 scripts drive both. Nothing consumes the stream.

    python -m harness.bench.bare_endpoint --port 8090     # HARNESS_REDIS_URL, HARNESS_KEY_PREFIX
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Sequence

import orjson
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from harness.delivery.broker import connect_async
from harness.delivery.keys import Keys
from harness.delivery.protocol import FIELD_EVENTS
from harness.infra.config import Settings

JSON = "application/json"
#: Redis connections at most: as many as the seed scenario's VUs
REDIS_CONNECTIONS = 100


def _json(status: int, body: object) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def create_app(redis_url: str, stream: str) -> Starlette:
    """The app: ``POST /publish`` appends the body to ``stream``; ``GET /health``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Requests beyond the pool wait for a connection, as the service's wait for a
        # thread of its pool: redis-py's default pool refuses them ("Too many
        # connections"), which turns an overload into errors instead of latency. The
        # URL may be a redis+sentinel:// one, as the service's.
        async with connect_async(redis_url, max_connections=REDIS_CONNECTIONS) as client:
            app.state.redis = client
            yield

    async def publish(request: Request) -> Response:
        body = await request.body()
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _json(400, {"error": f"body is not JSON: {exc}"})
        batch = data.get("events") if isinstance(data, dict) else None
        queued = len(batch) if isinstance(batch, list) else 1
        await request.app.state.redis.xadd(stream, {FIELD_EVENTS: body})
        return _json(202, {"status": "accepted", "queued": queued})

    async def health(request: Request) -> Response:
        try:
            await request.app.state.redis.ping()
        except (redis.RedisError, OSError) as exc:
            return _json(503, {"status": "unavailable", "redis": type(exc).__name__})
        return _json(200, {"status": "ok", "redis": "ok"})

    return Starlette(
        routes=[
            Route("/publish", publish, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m harness.bench.bare_endpoint",
        description="POST /publish: parse the body, XADD it to a Redis stream, answer 202.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port (8090)")
    parser.add_argument("--redis-url", help="Redis URL (HARNESS_REDIS_URL)")
    parser.add_argument("--key-prefix", help="prefix of the stream's key (HARNESS_KEY_PREFIX)")
    args = parser.parse_args(argv)
    settings = Settings.from_env(redis_url=args.redis_url, key_prefix=args.key_prefix)
    app = create_app(settings.redis_url, Keys(settings.key_prefix).stream)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
