"""harness.infra.replication: a primary and a streaming standby, failed over, removed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import psycopg
import pytest

from harness.infra.replication import ReplicatedPostgres

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_pair_fails_over_twice_and_keeps_every_commit_it_confirmed(mode: str) -> None:
    """Each failover promotes the standby and clones a new one; clients follow through
    the multi-host DSN. Without load, nothing is lost even asynchronously."""
    folder = Path(tempfile.mkdtemp(prefix="harness-pg-trial-"))
    pair = ReplicatedPostgres(folder, mode, failovers=2)
    try:
        pair.start()
        with psycopg.connect(pair.primary.dsn, autocommit=True) as conn:
            expected = "sync" if mode == "sync" else "async"
            assert conn.execute("SELECT sync_state FROM pg_stat_replication").fetchone() == (
                expected,
            )
        with psycopg.connect(pair.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
        ports = []
        for n in range(2):
            pair.fail_over()
            with psycopg.connect(pair.dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO t VALUES (0)")
                count, recovering, port = conn.execute(
                    "SELECT count(*), pg_is_in_recovery(), inet_server_port() FROM t"
                ).fetchone()
            assert (count, recovering) == (101 + n, False)
            ports.append(port)
        assert ports == pair.ports[1:3]  # each time the next server took over
        with pytest.raises(Exception, match="ready for 2 failovers"):
            pair.fail_over()
    finally:
        pair.stop()
    assert not folder.exists()
