"""The harness's own redis-server: an AOF that survives a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from harness.infra.redis_server import ManagedRedis

pytestmark = pytest.mark.integration


def test_a_crash_with_appendfsync_always_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    server = ManagedRedis(tmp_path, appendfsync="always")
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        ids = [client.xadd("s", {"i": i}) for i in range(100)]
        client.close()
        server.restart()  # SIGKILL, then start: the AOF is replayed
        client = redis.Redis.from_url(server.url)
        assert [entry_id for entry_id, _ in client.xrange("s")] == ids
        client.close()
    finally:
        server.stop()


def test_appendfsync_is_checked() -> None:
    with pytest.raises(ValueError, match="appendfsync"):
        ManagedRedis(Path("/nonexistent"), appendfsync="sometimes")
