"""PostgreSQL: the only module that runs SQL. Every statement comes from ``sql/*.sql``."""

from __future__ import annotations

import collections
import dataclasses
import enum
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import psycopg
from psycopg import sql

from harness import queries
from harness.retry import RETRYABLE_SQLSTATES, RetryPolicy

SCHEMA_VERSION = 1
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Isolation(enum.Enum):
    READ_COMMITTED = "read_committed"
    REPEATABLE_READ = "repeatable_read"
    SERIALIZABLE = "serializable"

    @classmethod
    def parse(cls, value: str | Isolation) -> Isolation:
        """Accepts ``read_committed``, ``READ COMMITTED``, ``read-committed``, ``rc``…"""
        if isinstance(value, Isolation):
            return value
        norm = re.sub(r"[\s-]+", "_", str(value).strip().lower())
        norm = {"rc": "read_committed", "rr": "repeatable_read", "ser": "serializable"}.get(
            norm, norm
        )
        try:
            return cls(norm)
        except ValueError:
            choices = ", ".join(i.value for i in cls)
            raise ValueError(
                f"unknown isolation level {value!r}; choose one of {choices}"
            ) from None

    @property
    def psycopg(self) -> psycopg.IsolationLevel:
        return psycopg.IsolationLevel[self.name]


@dataclasses.dataclass(frozen=True)
class Counters:
    received: int
    unique_processed: int
    duplicate_dropped: int


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A batch ready to insert: one entry per distinct key, sorted by (topic, event_id)."""

    received: int
    topics: list[str]
    event_ids: list[str]
    timestamps: list[str]
    sources: list[str]
    payloads: list[str]

    @property
    def distinct(self) -> int:
        return len(self.topics)


def prepare(events: Iterable[Mapping[str, Any]]) -> Prepared:
    """De-duplicate a batch by key (first copy wins) and sort it by key.

    Sorting matters under concurrency: batches that lock overlapping keys in different
    orders deadlock (40P01); batches that lock them in one global order cannot.
    """
    by_key: dict[tuple[str, str], Mapping[str, Any]] = {}
    received = 0
    for event in events:
        received += 1
        by_key.setdefault((event["topic"], event["event_id"]), event)
    ordered = sorted(by_key.items(), key=lambda item: item[0])
    return Prepared(
        received=received,
        topics=[k[0] for k, _ in ordered],
        event_ids=[k[1] for k, _ in ordered],
        timestamps=[e["timestamp"] for _, e in ordered],
        sources=[e.get("source", "") for _, e in ordered],
        payloads=[orjson.dumps(e.get("payload", {})).decode() for _, e in ordered],
    )


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    """What one committed batch did."""

    received: int
    unique: int
    duplicate: int
    attempts: int
    #: failed attempts by SQLSTATE (``"40001"``, ``"40P01"``, ``"connection"``…)
    retries: Mapping[str, int]
    #: events of attempts whose COMMIT lost its connection: they may have committed
    #: already, in which case the retry counted them a second time (as duplicates)
    uncertain: int = 0


@dataclasses.dataclass(frozen=True)
class Verification:
    rows: int
    distinct_keys: int
    lost: int
    unexpected: int


def _retry_label(exc: psycopg.OperationalError) -> str | None:
    """How to count a failed attempt, or ``None`` when retrying cannot help."""
    sqlstate = exc.sqlstate
    if sqlstate in RETRYABLE_SQLSTATES:
        return sqlstate
    # No SQLSTATE: the connection broke. 08xxx: connection exceptions; 57P01-03: the
    # server is shutting down or the backend was terminated (pg_terminate_backend).
    if sqlstate is None or sqlstate.startswith("08") or sqlstate in {"57P01", "57P02", "57P03"}:
        return "connection"
    return None


class Store:
    """One connection to PostgreSQL and every query the harness runs on it."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "harness",
        isolation: Isolation | str = Isolation.READ_COMMITTED,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        chance: Callable[[], float] = random.random,
        connect_timeout: int = 5,
    ) -> None:
        if not _IDENTIFIER.match(schema):
            raise ValueError(f"schema name {schema!r} must match {_IDENTIFIER.pattern}")
        self.dsn = dsn
        self.schema = schema
        self.isolation = Isolation.parse(isolation)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._chance = chance
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._committing = False
        self._q = queries.load()

    # -- connection -------------------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                options=f"-c search_path={self.schema}",
                application_name="harness",
            )
        return self._conn

    def connect(self) -> None:
        """Open the connection now rather than at the first query."""
        _ = self.conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, name: str, params: Mapping[str, Any] | None = None) -> psycopg.Cursor[Any]:
        cur = self.conn.cursor()
        for statement in self._q[name]:
            cur.execute(statement, params)
        return cur

    def _one(self, name: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        row = self._run(name, params).fetchone()
        assert row is not None, f"{name} returned no row"
        return tuple(row)

    # -- schema and reset -------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the schema and its tables if missing (idempotent)."""
        with self.conn.transaction():
            cur = self.conn.cursor()
            cur.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            cur.execute(queries.schema())
            self._run("set_schema_version", {"version": SCHEMA_VERSION})

    def drop_schema(self) -> None:
        self.conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
        )

    def reset(self) -> None:
        """Empty the events table and zero the counters."""
        with self.conn.transaction():
            self._run("reset")

    def schema_version(self) -> int:
        return int(self._one("schema_version")[0])

    def server_version(self) -> str:
        return str(self._one("server_version")[0])

    # -- the idempotent apply ---------------------------------------------------------

    def apply_batch(
        self,
        events: Sequence[Mapping[str, Any]],
        *,
        shard: int = 0,
        before_retry: Callable[[], None] | None = None,
    ) -> ApplyResult:
        """Store a batch exactly once per key and count it, in ONE transaction.

        Retries the whole transaction on serialization failures, deadlocks and lost
        connections, with the retry policy's backoff, calling ``before_retry`` before
        each new attempt. Raises the last error when the policy gives up; then nothing
        of the batch is committed.
        """
        batch = prepare(events)
        retries: collections.Counter[str] = collections.Counter()
        failures = uncertain = 0
        while True:
            try:
                unique = self._apply_once(batch, shard)
            except psycopg.OperationalError as exc:
                label = _retry_label(exc)
                if label is None:
                    raise
                if label == "connection":
                    if self._committing:
                        uncertain += batch.received
                    self.close()  # reconnect on the next attempt
                error: psycopg.OperationalError = exc
            else:
                return ApplyResult(
                    received=batch.received,
                    unique=unique,
                    duplicate=batch.received - unique,
                    attempts=failures + 1,
                    retries=dict(retries),
                    uncertain=uncertain,
                )
            failures += 1
            retries[label] += 1
            if not self.retry.may_retry(failures):
                raise error
            self._sleep(self.retry.delay(failures, self._chance()))
            if before_retry is not None:
                before_retry()

    def _apply_once(self, batch: Prepared, shard: int) -> int:
        conn = self.conn
        conn.isolation_level = self.isolation.psycopg
        self._committing = False
        with conn.transaction():
            cur = conn.cursor()
            (insert,) = self._q["insert_events"]
            cur.execute(
                insert,
                {
                    "topics": batch.topics,
                    "event_ids": batch.event_ids,
                    "timestamps": batch.timestamps,
                    "sources": batch.sources,
                    "payloads": batch.payloads,
                },
            )
            unique = cur.rowcount
            self._run(
                "add_counters",
                {
                    "received": batch.received,
                    "unique": unique,
                    "duplicate": batch.received - unique,
                    "shard": shard,
                },
            )
            self._committing = True  # leaving the block sends COMMIT
        return unique

    # -- reading and verifying --------------------------------------------------------

    def counters(self) -> Counters:
        received, unique, duplicate = self._one("read_counters")
        return Counters(int(received), int(unique), int(duplicate))

    def verify(self, expected_keys: Iterable[tuple[str, str]]) -> Verification:
        """Compare the stored keys with the keys that should be there."""
        rows, distinct = self._one("count_rows")
        with self.conn.transaction():
            self._run("create_expected")
            (copy_sql,) = self._q["copy_expected"]
            with self.conn.cursor().copy(copy_sql) as copy:
                for key in expected_keys:
                    copy.write_row(key)
            self._run("analyze_expected")
            lost, unexpected = self._one("compare_expected")
            self._run("drop_expected")
        return Verification(int(rows), int(distinct), int(lost), int(unexpected))
