"""Shared fixtures. Every test that touches a service gets its own PostgreSQL schema and its
own Redis key prefix, and removes them afterwards, so tests never share state with each
other or with a user's data."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from harness.delivery import broker as broker_mod
from harness.delivery.keys import Keys
from harness.infra import embedded
from harness.infra import health as services
from harness.infra.config import Settings
from harness.store.postgres import Store


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def live_settings(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """The services the tests use: the configured ones, or, when none is configured and
    nothing answers at the defaults, embedded ones for the session (as the CLI does).
    Fails every test that needs them, with the reason, when a chosen one is down."""
    try:
        with embedded.services_or_embedded(
            base_settings,
            explicit=embedded.configured({}),
            folder=tmp_path_factory.mktemp("embedded"),
        ) as (live, _versions):
            yield live
    except (services.ServiceUnavailable, embedded.EmbeddedError) as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def settings(live_settings: Settings) -> Iterator[Settings]:
    """Settings with a schema and key prefix of this test's own; both removed afterwards."""
    tag = uuid.uuid4().hex[:10]
    mine = Settings.from_env(
        pg_dsn=live_settings.pg_dsn,
        redis_url=live_settings.redis_url,
        pg_schema=f"test_{tag}",
        key_prefix=f"harness-test:{tag}",
    )
    yield mine
    with Store(mine.pg_dsn, schema=mine.pg_schema) as store:
        store.drop_schema()
    client = broker_mod.connect(mine.redis_url)
    keys = list(client.scan_iter(match=f"{mine.key_prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def make_store(settings: Settings) -> Iterator[Callable[..., Store]]:
    """``make_store(isolation=…)``: a Store on this test's schema, created on first use."""
    stores: list[Store] = []

    def create(**kwargs: object) -> Store:
        store = Store(settings.pg_dsn, schema=settings.pg_schema, **kwargs)  # type: ignore[arg-type]
        if not stores:
            store.create_schema()
        stores.append(store)
        return store

    yield create
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()


@pytest.fixture
def make_broker(settings: Settings) -> Iterator[Callable[[], broker_mod.StreamBroker]]:
    brokers: list[broker_mod.StreamBroker] = []

    def create() -> broker_mod.StreamBroker:
        b = broker_mod.StreamBroker(
            broker_mod.connect(settings.redis_url), Keys(settings.key_prefix)
        )
        if not brokers:
            b.reset()
        brokers.append(b)
        return b

    yield create
    for b in brokers:
        b.client.close()


@pytest.fixture
def broker(make_broker: Callable[[], broker_mod.StreamBroker]) -> broker_mod.StreamBroker:
    return make_broker()
