"""The HTTP service's publisher: concurrent requests share round trips, each learns its
own entry's fate, and the entries are the ones StreamBroker.publish would write."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio

from harness.delivery import broker as broker_mod
from harness.delivery.keys import Keys
from harness.delivery.protocol import FIELD_COUNT, FIELD_EVENTS
from harness.infra.config import Settings

pytestmark = pytest.mark.integration


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _publish_all(settings: Settings, n: int, in_flight: int) -> broker_mod.AsyncPublisher:
    client = redis.asyncio.Redis.from_url(settings.redis_url)
    try:
        publisher = broker_mod.AsyncPublisher(
            client, Keys(settings.key_prefix), in_flight=in_flight
        )
        await asyncio.gather(
            *(publisher.publish(orjson.dumps([{"i": i}]), 1, created_ns=i + 1) for i in range(n))
        )
        return publisher
    finally:
        await client.aclose()


def test_concurrent_entries_share_pipelines_and_all_arrive(
    settings: Settings, broker: broker_mod.StreamBroker
) -> None:
    publisher = run(_publish_all(settings, 500, in_flight=2))
    assert publisher.entries == 500
    # 500 requests at once: the first goes alone, the rest ride the next pipelines
    assert publisher.round_trips < 10
    entries = broker.client.xrange(broker.keys.stream)
    assert len(entries) == 500
    assert sorted(orjson.loads(f[FIELD_EVENTS])[0]["i"] for _, f in entries) == list(range(500))
    assert {f[FIELD_COUNT] for _, f in entries} == {b"1"}
    # each entry has its own identity, numbered by one producer
    identities = [broker_mod.Delivery(eid, f, redelivered=False).identity for eid, f in entries]
    assert len(set(identities)) == 500
    assert {producer for producer, _ in identities} == {publisher.producer.id}  # type: ignore[misc]


def test_an_entry_redis_refuses_fails_alone(
    settings: Settings, broker: broker_mod.StreamBroker
) -> None:
    """One pipeline, two keys: XADD to a key that is not a stream fails; the other entry
    of the same round trip is still written and its caller told so."""

    async def go() -> list[BaseException | None]:
        client = redis.asyncio.Redis.from_url(settings.redis_url)
        try:
            good = broker_mod.AsyncPublisher(client, Keys(settings.key_prefix), in_flight=1)
            bad_keys = Keys(settings.key_prefix + ":wrong")
            await client.set(bad_keys.stream, b"not a stream")
            bad = broker_mod.AsyncPublisher(client, bad_keys, in_flight=1)
            results = await asyncio.gather(
                good.publish(b"[]", 0), bad.publish(b"[]", 0), return_exceptions=True
            )
            await client.delete(bad_keys.stream)
            return results
        finally:
            await client.aclose()

    ok, failed = run(go())
    assert ok is None
    assert isinstance(failed, redis.ResponseError) and "WRONGTYPE" in str(failed)
    assert broker.client.xlen(broker.keys.stream) == 1


def test_a_lost_connection_fails_every_waiter(settings: Settings) -> None:
    async def go() -> list[BaseException | None]:
        client = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
        try:
            publisher = broker_mod.AsyncPublisher(client, Keys(settings.key_prefix))
            return await asyncio.gather(
                *(publisher.publish(b"[]", 0) for _ in range(5)), return_exceptions=True
            )
        finally:
            await client.aclose()

    results = run(go())
    assert len(results) == 5
    assert all(isinstance(r, redis.ConnectionError) for r in results)
