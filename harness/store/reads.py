"""The store's reading side: counters, verification, the service's reads, fault
administration. A mixin of :class:`harness.store.postgres.Store`, which owns the
connection and the named statements these methods run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg

from harness.store.batch import Counters, Verification


class Reads:
    """Queries that read (or administer) and apply nothing."""

    _q: Mapping[str, tuple[str, ...]]

    @property
    def conn(self) -> psycopg.Connection[Any]:
        raise NotImplementedError

    def _run(self, name: str, params: Mapping[str, Any] | None = None) -> psycopg.Cursor[Any]:
        raise NotImplementedError

    def _one(self, name: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        raise NotImplementedError

    # -- reading and verifying --------------------------------------------------------

    def counters(self) -> Counters:
        received, unique, duplicate, redelivered = self._one("read_counters")
        return Counters(int(received), int(unique), int(duplicate), int(redelivered))

    def applied_entries(self, producers: Sequence[int]) -> tuple[int, int]:
        """How many entries of these producers were applied, and their events (as far as
        their identities have not been pruned)."""
        entries, events = self._one("applied_entries", {"producers": list(producers)})
        return int(entries), int(events)

    def applied_entry_count(self) -> int:
        """Identities remembered in ``applied_ranges`` now (what pruning keeps small)."""
        return int(self._one("applied_entry_count")[0])

    def prune_applied(self, before_ms: int) -> int:
        """Forget the runs of identities whose entries the broker took, all of them, before
        ``before_ms``; returns how many entries. Skips (0) while another connection
        prunes. Runs at READ COMMITTED."""
        conn = self.conn
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        with conn.transaction():
            return int(self._one("prune_applied", {"before_ms": int(before_ms)})[0])

    def verify(
        self, expected_keys: Iterable[tuple[str, str]], *, with_missing: bool = False
    ) -> Verification:
        """Compare the stored keys with the keys that should be there; ``with_missing``:
        name the lost ones too (:attr:`Verification.missing`)."""
        rows, distinct = self._one("count_rows")
        with self.conn.transaction():
            self._run("create_expected")
            (copy_sql,) = self._q["copy_expected"]
            with self.conn.cursor().copy(copy_sql) as copy:
                for key in expected_keys:
                    copy.write_row(key)
            self._run("analyze_expected")
            lost, unexpected = self._one("compare_expected")
            missing = (
                tuple(map(tuple, self._run("missing_expected").fetchall()))
                if with_missing and lost
                else ()
            )
            self._run("drop_expected")
        return Verification(int(rows), int(distinct), int(lost), int(unexpected), missing)

    # -- the read side (HTTP service) -------------------------------------------------

    def ping(self) -> None:
        self._one("ping")

    def topic_count(self) -> int:
        return int(self._one("topic_count")[0])

    def list_events(
        self,
        *,
        topic: str | None = None,
        since: dt.datetime | None = None,
        before: tuple[dt.datetime, str, str] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Stored events, newest first by timestamp; ``before`` is the last row of a page."""
        before_ts, before_topic, before_id = before or (None, None, None)
        cur = self._run(
            "list_events",
            {
                "topic": topic,
                "since": since,
                "before_ts": before_ts,
                "before_topic": before_topic,
                "before_id": before_id,
                "limit": limit,
            },
        )
        return [
            {
                "topic": topic_,
                "event_id": event_id,
                "timestamp": ts.isoformat().replace("+00:00", "Z"),
                "source": source,
                "payload": payload,
                "processed_at": processed_at.isoformat().replace("+00:00", "Z"),
            }
            for topic_, event_id, ts, source, payload, processed_at in cur.fetchall()
        ]

    def checkpoint(self) -> bool:
        """Run ``CHECKPOINT``; ``False`` when this role may not."""
        try:
            self._run("checkpoint")
        except psycopg.errors.InsufficientPrivilege:
            return False
        return True

    # -- fault injection --------------------------------------------------------------

    def busy_backends(self, application_name: str) -> int:
        """Connections with this application name in a statement or transaction now."""
        return int(self._one("count_busy_backends", {"application_name": application_name})[0])

    def terminate_backends(self, application_name: str) -> int:
        """``pg_terminate_backend`` every other connection with this application name."""
        return int(self._one("terminate_backends", {"application_name": application_name})[0])
