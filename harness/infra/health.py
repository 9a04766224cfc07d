"""Is PostgreSQL answering? Is Redis? One clear line when not, instead of a traceback."""

from __future__ import annotations

import re
import urllib.parse

import psycopg
import redis
from redis.sentinel import MasterNotFoundError

from harness.infra import sentinel_url
from harness.infra.config import Settings


class ServiceUnavailable(RuntimeError):
    """A service the harness needs is not answering."""


def redact(url: str) -> str:
    """The URL or DSN without its password, for messages and meta.json."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and parts.netloc:
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        query = urllib.parse.urlencode(
            [
                (k, "***" if k.lower() in _SECRET_KEYS else v)
                for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
    # libpq key=value form: host=db password=s3cret
    return re.sub(r"(?i)\b(password)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", r"\1=***", url)


_SECRET_KEYS = frozenset({"password", "pass", "passwd"})


def check_postgres(dsn: str) -> str:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ServiceUnavailable(
            f"PostgreSQL at {redact(dsn)} is not answering ({reason}). Start it "
            "(Debian: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) "
            "or point HARNESS_PG_DSN / --pg-dsn at one that runs."
        ) from None


def check_redis(url: str) -> str:
    """The server version of the Redis at ``url``: a server's URL, or a ``redis+sentinel://``
    one (:mod:`harness.infra.sentinel_url`), then the primary's that the Sentinels name."""
    try:
        address = sentinel_url.parse(url)
        client = sentinel_url.client(url, socket_timeout=3, socket_connect_timeout=3)
    except ValueError as exc:  # a URL redis-py or the sentinel URL refuses
        raise ServiceUnavailable(f"HARNESS_REDIS_URL / --redis-url: {exc}") from None
    try:
        info = client.info("server")
    except (redis.RedisError, OSError) as exc:
        if isinstance(exc, MasterNotFoundError) and address is not None:
            # its own text is the repr of every Sentinel client
            exc = MasterNotFoundError(f"none of them names a primary {address.master!r}")
        if address is None:
            where, start = (
                f"Redis at {redact(url)}",
                "Start it (redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
                "--save '' --appendonly no)",
            )
        else:
            where, start = (
                f"The Redis primary that the Sentinels of {url} name",
                "Start the Sentinels and the primary they monitor",
            )
        raise ServiceUnavailable(
            f"{where} is not answering ({exc}). {start} or point HARNESS_REDIS_URL / "
            "--redis-url at one that runs."
        ) from None
    finally:
        client.close()
    version = str(info.get("redis_version", "?"))
    if tuple(int(x) for x in version.split(".")[:2]) < (6, 2):
        raise ServiceUnavailable(
            f"Redis at {redact(url)} is {version}; the harness needs 6.2 or newer "
            "(XAUTOCLAIM, XTRIM MINID)."
        )
    return version


def check(settings: Settings) -> dict[str, str]:
    """Server versions, or :class:`ServiceUnavailable` naming the first one that is down."""
    return {
        "postgresql": check_postgres(settings.pg_dsn),
        "redis": check_redis(settings.redis_url),
    }
