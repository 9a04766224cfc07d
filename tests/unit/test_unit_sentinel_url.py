"""harness.infra.sentinel_url: the redis+sentinel:// URL, read and written back; and
protocol.connect's choice between a server's URL and the Sentinels' (without connecting)."""

from __future__ import annotations

import pytest
import redis
import redis.sentinel
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.delivery import protocol
from harness.infra.sentinel_url import SentinelAddress, parse

THREE = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/harness/0"


def test_a_url_names_the_sentinels_the_master_and_the_db() -> None:
    address = parse(THREE)
    assert address == SentinelAddress(
        (("127.0.0.1", 26379), ("127.0.0.1", 26380), ("127.0.0.1", 26381)), "harness", 0
    )
    assert address.url == THREE


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://h:1/m", SentinelAddress((("h", 1),), "m")),
        ("redis+sentinel://h:1/m/", SentinelAddress((("h", 1),), "m")),
        ("redis+sentinel://h/m/3", SentinelAddress((("h", 26379),), "m", 3)),
        ("REDIS+SENTINEL://h:1/m/0", SentinelAddress((("h", 1),), "m")),
        (
            "redis+sentinel://[::1]:5000,[::1]/m/2",
            SentinelAddress((("::1", 5000), ("::1", 26379)), "m", 2),
        ),
        ("redis+sentinel://h:1/my%2Fmaster/0", SentinelAddress((("h", 1),), "my/master")),
    ],
)
def test_the_db_and_ports_have_defaults_and_names_may_be_quoted(
    url: str, expected: SentinelAddress
) -> None:
    assert parse(url) == expected
    assert parse(expected.url) == expected


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "rediss://h:6380/1", "unix:///tmp/redis.sock", "redis://h,g/0"],
)
def test_any_other_url_is_not_a_sentinel_url(url: str) -> None:
    assert parse(url) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel:///harness/0", "at least one Sentinel host"),
        ("redis+sentinel://,/harness/0", "at least one Sentinel host"),
        ("redis+sentinel://", "at least one Sentinel host"),
        ("redis+sentinel://a:1,,b:2/harness", "empty Sentinel host"),
        ("redis+sentinel://:26379/harness", "has no host"),
        ("redis+sentinel://h:port/harness", "bad port"),
        ("redis+sentinel://h:0/harness", "bad port"),
        ("redis+sentinel://h:65536/harness", "bad port"),
        ("redis+sentinel://h:-1/harness", "bad port"),
        ("redis+sentinel://h:²/harness", "bad port"),
        ("redis+sentinel://h:/harness", "empty port"),
        ("redis+sentinel://[::1/harness", "bad IPv6"),
        ("redis+sentinel://[::1]x/harness", "bad IPv6"),
        ("redis+sentinel://[::1]:/harness", "empty port"),
        ("redis+sentinel://h:1", "no master name"),
        ("redis+sentinel://h:1/", "no master name"),
        ("redis+sentinel://h:1//0", "no master name"),
        ("redis+sentinel://h:1/harness/x", "not a number"),
        ("redis+sentinel://h:1/harness/-1", "not a number"),
        ("redis+sentinel://h:1/harness/0/extra", "too many path parts"),
        ("redis+sentinel://h:1/harness/0?timeout=1", "no query parameters"),
        ("redis+sentinel://user:pw@h:1/harness/0", "no user or password"),
    ],
)
def test_a_malformed_sentinel_url_says_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(url)


@pytest.mark.parametrize(
    ("sentinels", "master", "db", "message"),
    [
        ((), "m", 0, "at least one"),
        ((("", 1),), "m", 0, "empty Sentinel host"),
        ((("h", 0),), "m", 0, "not in 1–65535"),
        ((("h", 1),), "", 0, "names the master"),
        ((("h", 1),), "m", -1, "negative"),
    ],
)
def test_an_address_is_checked_when_made(
    sentinels: tuple[tuple[str, int], ...], master: str, db: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SentinelAddress(sentinels, master, db)


hosts = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True),
    st.ip_addresses().map(str),
)


@settings(max_examples=200)
@given(
    sentinels=st.lists(st.tuples(hosts, st.integers(1, 65535)), min_size=1, max_size=4),
    master=st.text(min_size=1, max_size=20),
    db=st.integers(0, 10_000),
)
def test_every_address_survives_its_url(
    sentinels: list[tuple[str, int]], master: str, db: int
) -> None:
    address = SentinelAddress(tuple(sentinels), master, db)
    assert parse(address.url) == address


def test_connect_asks_the_sentinels_for_a_sentinel_url() -> None:
    """Nothing connects yet (the unit tier forbids it): only the pool is made."""
    client = protocol.connect(THREE, client_name="x")
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "harness"
    assert pool.connection_kwargs["db"] == 0
    assert pool.connection_kwargs["socket_timeout"] == 30  # the defaults, as for redis://
    assert pool.connection_kwargs["client_name"] == "x"
    sentinel = pool.sentinel_manager
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinel.sentinels] == [
        26379,
        26380,
        26381,
    ]
    # a Sentinel that is down costs a second, not the 30 s socket timeout
    assert sentinel.sentinel_kwargs["socket_timeout"] <= 1
    client.close()


def test_connect_keeps_a_plain_url_a_plain_client() -> None:
    client = protocol.connect("redis://127.0.0.1:6390/2")
    pool = client.connection_pool
    assert type(pool) is redis.ConnectionPool
    assert (pool.connection_kwargs["port"], pool.connection_kwargs["db"]) == (6390, 2)
    assert pool.connection_kwargs["socket_timeout"] == 30
    client.close()
