"""The seed report's design of the apply, kept to be measured against ours: ONE event per
transaction, three statements. A mixin of :class:`harness.store.postgres.Store`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
import psycopg

from harness.model.modes import Isolation


class SeedApply:
    """``apply_like_the_seed``: what the seed's consumer does for each event."""

    isolation: Isolation
    _committing: bool

    @property
    def conn(self) -> psycopg.Connection[Any]:
        raise NotImplementedError

    def _run(self, name: str, params: Mapping[str, Any] | None = None) -> psycopg.Cursor[Any]:
        raise NotImplementedError

    #: the store's retry loop (:meth:`harness.store.postgres.Store._retrying`)
    _retrying: Callable[..., tuple[Any, int, dict[str, int], int]]

    def apply_like_the_seed(self, event: Mapping[str, Any]) -> bool:
        """The seed report's design, kept to be measured: ONE event per transaction and
        three statements (received + 1 on the hot row first, the insert, then unique or
        duplicate + 1). Returns whether the event was new."""
        unique, *_ = self._retrying(lambda: self._apply_seed_once(event), 1, None)
        return unique == 1

    def _apply_seed_once(self, event: Mapping[str, Any]) -> int:
        conn = self.conn
        conn.isolation_level = psycopg.IsolationLevel[self.isolation.name]
        self._committing = False
        with conn.transaction():
            self._run("seed_add_received")
            inserted = self._run(
                "seed_insert",
                {
                    "topic": event["topic"],
                    "event_id": event["event_id"],
                    "ts": event["timestamp"],
                    "source": event.get("source", ""),
                    "payload": orjson.dumps(event.get("payload", {})).decode(),
                },
            ).rowcount
            self._run("seed_add_unique" if inserted else "seed_add_duplicate")
            self._committing = True
        return inserted
