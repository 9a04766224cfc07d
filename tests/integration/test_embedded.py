"""Embedded PostgreSQL and Redis: started when nothing answers and nothing was chosen."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from harness.delivery import broker as broker_mod
from harness.delivery.keys import Keys
from harness.infra import embedded
from harness.infra import health as services
from harness.infra.config import Settings
from harness.store.postgres import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEAD = Settings(
    pg_dsn="postgresql://postgres@127.0.0.1:1/postgres", redis_url="redis://127.0.0.1:1/0"
)


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_nothing_answering_and_nothing_chosen_starts_both(tmp_path: Path) -> None:
    lines: list[str] = []
    with embedded.services_or_embedded(DEAD, explicit=set(), folder=tmp_path, say=lines.append) as (
        live,
        versions,
    ):
        assert live.pg_dsn != DEAD.pg_dsn and live.redis_url != DEAD.redis_url
        assert versions["postgresql"] and versions["redis"]
        assert [line.split(" is not")[0] for line in lines] == ["PostgreSQL", "Redis"]
        with Store(live.pg_dsn, schema="embedded_check") as store:
            store.create_schema()
            event = {
                "topic": "t",
                "event_id": "1",
                "timestamp": "2025-12-17T10:00:00Z",
                "source": "s",
                "payload": {},
            }
            assert store.apply_batch([event, event]).unique == 1
        channel = broker_mod.StreamBroker(broker_mod.connect(live.redis_url), Keys("emb"))
        channel.reset()
        assert channel.backlog().drained
        channel.client.close()
        ports = [int(url.rsplit(":", 1)[1].split("/")[0]) for url in (live.pg_dsn, live.redis_url)]
    assert not any(answers(p) for p in ports)  # both stopped with the block


def test_a_chosen_service_that_is_down_is_an_error_not_replaced(tmp_path: Path) -> None:
    chosen = embedded.services_or_embedded(DEAD, explicit={"pg_dsn"}, folder=tmp_path)
    with pytest.raises(services.ServiceUnavailable, match="PostgreSQL at"), chosen:
        pass


def test_configured_reads_flags_and_environment() -> None:
    assert embedded.configured({}, environ={}) == set()
    assert embedded.configured({"pg_dsn": "x"}, environ={}) == {"pg_dsn"}
    assert embedded.configured({}, environ={"HARNESS_REDIS_URL": "redis://x"}) == {"redis_url"}


def test_pgservers_bundle_runs_even_where_root_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the pgserver bundle, installed where `nobody` cannot reach (under /root):
    the bundle is copied out once and PostgreSQL 16 runs from the copy."""
    bundled = [p for p in embedded.postgres_bins() if "pgserver" in str(p)]
    if not bundled:
        pytest.skip("pgserver is not installed")
    monkeypatch.setattr(embedded, "postgres_bins", lambda: bundled)
    pg = embedded.EmbeddedPostgres(tmp_path / "pg")
    pg.start()
    try:
        assert services.check_postgres(pg.dsn).startswith("16")
    finally:
        pg.stop()
