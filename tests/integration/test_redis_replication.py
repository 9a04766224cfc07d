"""harness.infra.redis_replication: a Redis primary, its replica and three Sentinels, failed
over, followed by a client through the Sentinels, and removed."""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import redis

from harness.delivery import protocol
from harness.delivery.protocol import WAIT_TIMEOUT_MS
from harness.infra import processes, sentinel_url
from harness.infra.redis_replication import ReplicatedRedis, ReplicationError

pytestmark = pytest.mark.integration

STREAM = "s"
T = TypeVar("T")


def retrying(call: Callable[[], T], timeout: float = 20.0) -> T:
    """``call()``, again after a connection error (the primary is failing over), until
    ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def write_and_wait(client: redis.Redis, rr: ReplicatedRedis, n: int) -> tuple[bytes, int]:
    """XADD, then ``WAIT 1``, on one connection: the entry id and the replicas that have it."""
    pipe = client.pipeline(transaction=False)
    pipe.xadd(STREAM, {"n": n})
    pipe.execute_command("WAIT", rr.wait_replicas, WAIT_TIMEOUT_MS)
    entry, replicas = pipe.execute()
    return entry, int(replicas)


def stream_ids(client: redis.Redis) -> list[bytes]:
    entries = cast(list[tuple[bytes, Any]], retrying(lambda: client.xrange(STREAM)))
    return [entry for entry, _ in entries]


def assert_gone(rr: ReplicatedRedis, folder: Path) -> None:
    assert rr.pids and all(processes.state(pid) == "" for pid in rr.pids)
    assert not folder.exists()


class Writer(threading.Thread):
    """Writes (XADD, WAIT 1) through the failovers, on the test's own client, and keeps
    the entries the replica acknowledged."""

    def __init__(self, client: redis.Redis, rr: ReplicatedRedis) -> None:
        super().__init__(daemon=True)
        self.client, self.rr = client, rr
        self.acknowledged: list[bytes] = []
        self.connection_errors = 0
        self.failure: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        n = 0
        try:
            while not self.done.is_set():
                try:
                    entry, replicas = write_and_wait(self.client, self.rr, n)
                except (redis.ConnectionError, redis.TimeoutError):
                    self.connection_errors += 1
                    time.sleep(0.05)
                    continue
                if replicas >= 1:
                    self.acknowledged.append(entry)
                n += 1
                time.sleep(0.01)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.failure = exc

    def stop(self) -> None:
        self.done.set()
        self.join(30)
        assert not self.is_alive()
        if self.failure is not None:
            raise self.failure


def test_wait_mode_fails_over_three_times_and_keeps_every_write_the_replica_acknowledged(
    tmp_path: Path,
) -> None:
    """Each failover promotes the replica and brings the crashed primary back as its
    replica; the client follows through the Sentinels. A write ``WAIT 1`` confirmed is
    on the replica, so none is lost, even with writes going on while the primary dies."""
    folder = tmp_path / "redis-trial"
    rr = ReplicatedRedis(folder, "wait", failovers=3)
    client: redis.Redis | None = None
    writer: Writer | None = None
    try:
        rr.start()
        assert rr.wait_replicas == 1
        address = sentinel_url.parse(rr.url)
        assert address is not None and address.sentinels == rr.sentinels
        assert address.master == rr.master
        client = c = protocol.connect(rr.url)
        assert c.info("server")["tcp_port"] == rr.primary_port
        confirmed = []
        for n in range(20):  # no fault yet: the replica acknowledges every write
            entry, replicas = write_and_wait(c, rr, n)
            assert replicas == 1
            confirmed.append(entry)
        gap = rr.offset_gap()
        assert isinstance(gap, int) and gap >= 0

        writer = Writer(c, rr)
        writer.start()
        primaries = [rr.primary_port]
        for round_ in range(3):
            gap = rr.fail_over()
            assert isinstance(gap, int) and gap >= 0
            # the same client, after a retry, writes to the promoted replica
            retrying(functools.partial(c.xadd, STREAM, {"after": round_}))
            assert retrying(lambda: c.info("server"))["tcp_port"] == rr.primary_port
            assert rr.primary_port != primaries[-1]
            primaries.append(rr.primary_port)
            for n in range(5):  # the crashed primary is back as a replica, and streams
                entry, replicas = retrying(functools.partial(write_and_wait, c, rr, 1000 + n))
                assert replicas == 1
                confirmed.append(entry)
            acknowledged = set(confirmed) | set(writer.acknowledged)
            assert acknowledged <= set(stream_ids(c)), f"failover {round_ + 1} lost some"
        writer.stop()
        # every write the replica acknowledged, in the order it was made
        ids = stream_ids(c)
        assert [entry for entry in ids if entry in set(confirmed)] == confirmed
        assert set(writer.acknowledged) <= set(ids)
        assert writer.acknowledged, "the writer never had a write acknowledged"
        assert primaries == [rr.ports[n % 2] for n in range(4)]  # back and forth
        assert len(rr.promotion_s) == len(rr.missing) == rr.failed_over == 3
        assert all(m >= 0 for m in rr.missing)
        assert all(seconds > 0 for seconds in rr.promotion_s)
        with pytest.raises(ReplicationError, match="ready for 3 failovers"):
            rr.fail_over()
    finally:
        if writer is not None and writer.is_alive():
            writer.done.set()
            writer.join(30)
        if client is not None:
            client.close()
        rr.stop()
    assert_gone(rr, folder)
    rr.stop()  # again: nothing left to do, and no error


def test_async_mode_keeps_what_was_replicated_before_the_failover(tmp_path: Path) -> None:
    folder = tmp_path / "redis-trial"
    rr = ReplicatedRedis(folder, "async", appendfsync="always")
    client: redis.Redis | None = None
    try:
        rr.start()
        assert rr.wait_replicas == 0
        client = c = protocol.connect(rr.url)
        first = rr.primary_port
        written = [c.xadd(STREAM, {"n": n}) for n in range(100)]
        assert rr.offset_gap() >= 0
        # the replica acknowledges once a second: then the gap closes
        deadline = time.monotonic() + 10
        while rr.offset_gap() > 0:
            assert time.monotonic() < deadline, f"the replica lags by {rr.offset_gap()} bytes"
            time.sleep(0.05)
        gap = rr.fail_over()
        assert isinstance(gap, int) and gap >= 0
        assert rr.missing == [0]  # it had read everything: the gap had closed
        assert rr.primary_port != first
        assert stream_ids(c) == written
        retrying(lambda: c.xadd(STREAM, {"after": 1}))
        assert retrying(lambda: c.info("server"))["tcp_port"] == rr.primary_port
        with pytest.raises(ReplicationError, match="ready for 1 failovers"):
            rr.fail_over()
    finally:
        if client is not None:
            client.close()
        rr.stop()
    assert_gone(rr, folder)


def test_a_failed_start_says_why_and_stop_still_removes_everything(tmp_path: Path) -> None:
    folder = tmp_path / "redis-trial"
    rr = ReplicatedRedis(folder, "async")
    taken = socket.socket()  # a Sentinel's port, taken: that Sentinel cannot start
    taken.bind(rr.sentinels[-1])
    taken.listen()
    try:
        with pytest.raises(ReplicationError, match="did not start") as failure:
            rr.start()
        assert "sentinel" in str(failure.value)  # with the logs' tails
    finally:
        taken.close()
        rr.stop()
    assert_gone(rr, folder)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "sync"}, "replication mode"),
        ({"mode": "async", "appendfsync": "no"}, "appendfsync"),
        ({"mode": "async", "master": "two words"}, "master name"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReplicatedRedis(Path("/nonexistent"), **kwargs)
