"""A URL for "find the Redis primary through Sentinels", where a plain ``redis://`` URL
names one server.

``redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/harness/0``: the
Sentinels to ask (any one that answers will do; a port left out is Sentinel's 26379),
the name they monitor the primary by, and the database number (0 when left out). A
client asks a Sentinel where the primary is before it connects, and again after a
connection fails, so it follows a failover (see :func:`harness.delivery.protocol.connect`).

:func:`client` opens either kind of URL: the one place a synchronous client is made of
one (the asynchronous one is :func:`harness.delivery.broker.connect_async`).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import Any

import redis
from redis.sentinel import Sentinel

SCHEME = "redis+sentinel"
#: the port a Sentinel listens on when the URL names none
DEFAULT_SENTINEL_PORT = 26379
#: how the Sentinels themselves are asked: one that is down costs a second, not the
#: client's socket timeout
SENTINEL_KWARGS = {"socket_timeout": 1, "socket_connect_timeout": 1}


@dataclasses.dataclass(frozen=True)
class SentinelAddress:
    """Where a primary is found: the Sentinels that monitor it, its name there, the db."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0

    def __post_init__(self) -> None:
        if not self.sentinels:
            raise ValueError("a sentinel URL names at least one Sentinel host")
        for host, port in self.sentinels:
            if not host:
                raise ValueError("a sentinel URL has an empty Sentinel host")
            if not 0 < port < 65536:
                raise ValueError(f"Sentinel port {port} of {host} is not in 1–65535")
        if not self.master:
            raise ValueError("a sentinel URL names the master: redis+sentinel://hosts/<name>")
        if self.db < 0:
            raise ValueError(f"database number {self.db} is negative")

    @property
    def url(self) -> str:
        """This address as a ``redis+sentinel://`` URL (:func:`parse` reads it back)."""
        hosts = ",".join(f"{_host_text(host)}:{port}" for host, port in self.sentinels)
        return f"{SCHEME}://{hosts}/{urllib.parse.quote(self.master, safe='')}/{self.db}"


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() == SCHEME


def parse(url: str) -> SentinelAddress | None:
    """The Sentinel address a ``redis+sentinel://`` URL names; ``None`` for any other URL
    (``redis://``, ``rediss://``, ``unix://``: one server, connected to directly).

    Raises :class:`ValueError`, saying what is wrong, for a malformed sentinel URL: no
    hosts, a bad port, no master name, a bad db, or parts it does not support (user
    and password, query parameters).
    """
    if not is_sentinel_url(url):
        return None
    rest = url.partition("://")[2]
    if "?" in rest or "#" in rest:
        raise ValueError(f"{url!r}: a sentinel URL takes no query parameters or fragment")
    netloc, _, path = rest.partition("/")
    if "@" in netloc:
        raise ValueError(f"{url!r}: a sentinel URL takes no user or password")
    if not netloc.strip(","):
        raise ValueError(f"{url!r}: a sentinel URL names at least one Sentinel host")
    sentinels = tuple(_host_port(url, part) for part in netloc.split(","))
    segments = path.split("/") if path else []
    if segments and segments[-1] == "":  # a trailing slash
        segments.pop()
    if not segments or not segments[0]:
        raise ValueError(f"{url!r}: no master name (redis+sentinel://hosts/<name>[/<db>])")
    if len(segments) > 2:
        raise ValueError(f"{url!r}: too many path parts (expected /<name>[/<db>])")
    master = urllib.parse.unquote(segments[0])
    db = 0
    if len(segments) == 2:
        if not _is_number(segments[1]):
            raise ValueError(f"{url!r}: database {segments[1]!r} is not a number ≥ 0")
        db = int(segments[1])
    try:
        return SentinelAddress(sentinels, master, db)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None


def _host_port(url: str, part: str) -> tuple[str, int]:
    """``host:port``, ``host`` (the default port) or ``[v6 address]:port``."""
    if not part:
        raise ValueError(f"{url!r}: an empty Sentinel host (two commas in a row?)")
    if part.startswith("["):
        host, bracket, port_text = part[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError(f"{url!r}: bad IPv6 Sentinel address {part!r}")
        port_text = port_text[1:]
        if port_text == "" and part.endswith(":"):
            raise ValueError(f"{url!r}: Sentinel {part!r} has an empty port")
    elif ":" in part:
        host, _, port_text = part.rpartition(":")
        if not port_text:
            raise ValueError(f"{url!r}: Sentinel {part!r} has an empty port")
    else:
        host, port_text = part, ""
    if not host:
        raise ValueError(f"{url!r}: Sentinel {part!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not _is_number(port_text) or not 0 < int(port_text) < 65536:
        raise ValueError(f"{url!r}: Sentinel {part!r} has a bad port (1–65535)")
    return host, int(port_text)


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def client(url: str, **kwargs: Any) -> redis.Redis:
    """A client of ``url``: a server's, or the primary the Sentinels of a
    ``redis+sentinel://`` URL name (asked again before each new connection). ``kwargs``
    go to each connection; :class:`ValueError` for a URL either refuses."""
    address = parse(url)
    if address is None:
        return redis.Redis.from_url(url, **kwargs)
    sentinels = Sentinel(list(address.sentinels), sentinel_kwargs=SENTINEL_KWARGS)
    return sentinels.master_for(address.master, db=address.db, **kwargs)
