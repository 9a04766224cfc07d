"""PostgreSQL: the only module that runs SQL. Every statement comes from ``sql/*.sql``."""

from __future__ import annotations

import dataclasses
import functools
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import generators, pq, sql

from harness.model.events import Row
from harness.model.modes import CounterStrategy, Isolation
from harness.model.retry import RETRYABLE_SQLSTATES, RetryPolicy
from harness.store import queries
from harness.store.batch import (
    ApplyResult,
    Entries,
    Prepared,
    Runs,
    copy_text,
    inside,
    prepare,
    prepare_rows,
)
from harness.store.reads import Reads
from harness.store.seed import SeedApply

SCHEMA_VERSION = 2
INSERT_METHODS = ("unnest", "copy")
#: With insert = "copy", batches of at least this many distinct events go through COPY;
#: smaller ones are cheaper as arrays in the one statement.
COPY_FROM = 64
#: A batch is prepared again without what was applied at most this many times (each
#: after a 23P01 names an entry applied meanwhile) before its error is raised
MAX_RECOGNITIONS = 10
#: how ``ApplyResult.retries`` counts those attempts
RECOGNISED = "23P01"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: the ``event_stats`` row that ``atomic`` and ``rmw`` count on; ``reset()`` recreates it
HOT_ROW = 0


_Result = TypeVar("_Result")


#: COPY data goes to libpq in pieces of at most this many bytes (as psycopg's own COPY
#: does: one very large piece can make libpq loop forever, psycopg issue #255)
_COPY_PIECE = 128 * 1024


def _raise_for(results: list[Any], encoding: str) -> None:
    """Raise the error of the first failed result of a simple-query string, if any."""
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=encoding)


def psycopg_level(isolation: Isolation) -> psycopg.IsolationLevel:
    """psycopg's name for an isolation level (the members share their names)."""
    return psycopg.IsolationLevel[isolation.name]


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


class Store(Reads, SeedApply):
    """One connection to PostgreSQL and every query the harness runs on it."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "harness",
        isolation: Isolation | str = Isolation.READ_COMMITTED,
        counter: CounterStrategy | str = CounterStrategy.ATOMIC,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        chance: Callable[[], float] = random.random,
        connect_timeout: int = 5,
        application_name: str = "harness",
        insert: str = "copy",
        connection: psycopg.Connection[Any] | None = None,
    ) -> None:
        if not _IDENTIFIER.match(schema):
            raise ValueError(f"schema name {schema!r} must match {_IDENTIFIER.pattern}")
        self.dsn = dsn
        self.schema = schema
        self.isolation = Isolation.parse(isolation)
        self.counter = CounterStrategy.parse(counter)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._chance = chance
        self._connect_timeout = connect_timeout
        #: how this connection shows in pg_stat_activity (fault injection finds it by it)
        self.application_name = application_name
        if insert not in INSERT_METHODS:
            raise ValueError(f"insert must be one of {', '.join(INSERT_METHODS)}, got {insert!r}")
        #: how a batch reaches processed_events: one INSERT from unnest()ed arrays, or COPY
        #: into a staging table and INSERT … SELECT from it
        self.insert = insert
        self._staging_for: psycopg.Connection[Any] | None = None
        #: a connection lent by a pool: used, never opened or closed here
        self._borrowed = connection is not None
        self._conn: psycopg.Connection[Any] | None = connection
        self._committing = False
        self._q = queries.load()

    # -- connection -------------------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            if self._borrowed:
                raise psycopg.OperationalError("the borrowed connection is closed")
            self._conn = psycopg.connect(
                self.dsn, connect_timeout=self._connect_timeout, **self.connection_options()
            )
        return self._conn

    def connection_options(self) -> dict[str, Any]:
        """How this store's connections are made (a pool makes them so too)."""
        return {
            "autocommit": True,
            # The isolation level of the one-statement apply, which autocommit runs as its
            # own transaction (explicit transactions set theirs in BEGIN).
            "options": (
                f"-c search_path={self.schema} -c default_transaction_isolation="
                + self.isolation.value.replace("_", "\\ ")
            ),
            "application_name": self.application_name,
        }

    def connect(self) -> None:
        """Open the connection now rather than at the first query."""
        _ = self.conn

    def close(self) -> None:
        if self._conn is not None and not self._borrowed:
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
        """Empty the events table and zero the counters.

        Leaves ``event_stats`` with row 0 only: ``atomic`` and ``rmw`` need that row,
        and ``sharded`` recreates its own rows on first use.
        """
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

        The store's counter strategy does the counting; only ``sharded`` uses ``shard``
        (give each concurrent caller its own), the others count on row 0.

        Retries the whole transaction on serialization failures, deadlocks and lost
        connections, with the retry policy's backoff, calling ``before_retry`` before
        each new attempt. Raises the last error when the policy gives up; then nothing
        of the batch is committed.
        """
        return self.apply_prepared(prepare(events), shard=shard, before_retry=before_retry)

    def apply_rows(
        self,
        rows: Iterable[Row],
        *,
        entries: Entries | None = None,
        shard: int = 0,
        before_retry: Callable[[], None] | None = None,
    ) -> ApplyResult:
        """:meth:`apply_batch` for events already validated into rows (the consumers').

        With ``entries`` (the stream entries the rows came from), an entry whose identity
        was applied before, by anyone, is recognised in the same transaction and its rows
        are skipped: they are no receipt and change no counter but ``redelivered``.

        A batch that goes by COPY is not de-duplicated here: its statement keeps the
        first copy of each key itself, which costs PostgreSQL next to nothing and saves
        the consumer a Python step per event.
        """
        return self.apply_prepared(
            self.prepare_batch(rows, entries), shard=shard, before_retry=before_retry
        )

    def refusal(self, rows: list[Row]) -> psycopg.DatabaseError | None:
        """What PostgreSQL says to storing these rows: tried in a transaction that is
        rolled back, so nothing changes. ``None`` when it would take them; the error
        when it refuses them for what they are (a constraint, say). A transient error
        (a lost connection, a serialization failure) is raised."""
        try:
            with self.conn.transaction(force_rollback=True):
                self._insert_unnest(prepare_rows(rows))
        except psycopg.OperationalError:
            raise
        except psycopg.DatabaseError as exc:
            return exc
        return None

    def prepare_batch(
        self,
        rows: Iterable[Row],
        entries: Entries | None = None,
        applied: Iterable[tuple[int, int, int]] = (),
    ) -> Prepared:
        """The batch as :meth:`apply_rows` applies it: as it is for COPY, whose statement
        keeps the first copy of a key; through :func:`prepare_rows` for the others.

        With entries: each identity once (a second copy within the batch is left out, as
        are entries inside the ``applied`` runs ``(producer, first, last)``), its rows
        and the runs of identities to record with them."""
        rows = rows if isinstance(rows, list) else list(rows)
        if entries is None:
            return Prepared(len(rows), rows) if self._copies(len(rows)) else prepare_rows(rows)
        if len(entries.of_row) != len(rows):
            raise ValueError(f"{len(entries.of_row)} entry positions for {len(rows)} rows")
        known: dict[int, list[tuple[int, int]]] = {}
        for producer, first, last in applied:
            known.setdefault(producer, []).append((first, last))
        keep, seen, skipped = [], set(), 0
        for i, identity in enumerate(zip(entries.producers, entries.seqs, strict=True)):
            if identity in seen or inside(known, *identity):
                skipped += entries.events[i]
            else:
                seen.add(identity)
                keep.append(i)
        if skipped:
            kept = {i + 1 for i in keep}
            taken = [row for row, i in zip(rows, entries.of_row, strict=True) if i in kept]
        else:
            taken = rows
        base = Prepared(len(taken), taken) if self._copies(len(taken)) else prepare_rows(taken)
        return dataclasses.replace(
            base, runs=Runs.of(entries, keep), redelivered=skipped, source=(rows, entries)
        )

    def _copies(self, rows: int) -> bool:
        """Whether a batch of this many rows goes by COPY (the others go as arrays)."""
        return (
            self.insert == "copy" and rows >= COPY_FROM and self.counter is not CounterStrategy.RMW
        )

    def apply_prepared(
        self,
        batch: Prepared,
        *,
        shard: int = 0,
        before_retry: Callable[[], None] | None = None,
    ) -> ApplyResult:
        """:meth:`apply_batch` for a batch :func:`prepare` has already made.

        A batch with entry identities goes as if none had been applied before (the common
        case, one statement). If one had (a redelivery, a publisher's retry, or another
        consumer applying it right now), ``applied_ranges`` refuses the statement (23P01,
        after the other transaction ended); the runs it overlaps are read, the batch is
        prepared again without their entries, and tried again."""
        recognitions = 0
        while True:
            try:
                (received, unique), attempts, retries, uncertain = self._retrying(
                    functools.partial(self._apply_once, batch, shard),
                    batch.received,
                    before_retry,
                )
                break
            except psycopg.errors.ExclusionViolation:
                if batch.source is None or recognitions >= MAX_RECOGNITIONS:
                    raise
                recognitions += 1
                applied = self._run("overlapping_ranges", batch.runs.params()).fetchall()
                batch = self.prepare_batch(*batch.source, applied=applied)
        if recognitions:
            retries = {**retries, RECOGNISED: recognitions}
        return ApplyResult(
            received=received,
            unique=unique,
            duplicate=received - unique,
            attempts=attempts,
            retries=retries,
            uncertain=uncertain,
            redelivered=batch.redelivered,
        )

    def _retrying(
        self,
        attempt: Callable[[], _Result],
        received: int,
        before_retry: Callable[[], None] | None,
    ) -> tuple[_Result, int, dict[str, int], int]:
        """Run ``attempt`` (one whole transaction) until it commits or the policy gives up.

        Returns its result, the attempts made, the failed attempts by cause, and how
        many events were in attempts whose COMMIT lost its connection.
        """
        uncertain = 0

        def classify(exc: Exception) -> str | None:
            nonlocal uncertain
            if not isinstance(exc, psycopg.OperationalError):
                return None
            label = _retry_label(exc)
            if label == "connection":
                if self._committing:
                    uncertain += received
                self.close()  # reconnect on the next attempt
            return label

        result, attempts, retries = self.retry.run(
            attempt, classify, sleep=self._sleep, chance=self._chance, before_retry=before_retry
        )
        return result, attempts, retries, uncertain

    def _apply_once(self, batch: Prepared, shard: int) -> tuple[int, int]:
        """One attempt at a batch; returns how many of its events were receipts (all but
        those of entries applied before) and how many of those were new."""
        if self.counter is CounterStrategy.RMW:
            return self._apply_in_transaction(batch)
        return self._apply_in_one_statement(batch, shard)

    def _apply_in_one_statement(self, batch: Prepared, shard: int) -> tuple[int, int]:
        """Insert and count in ONE statement, a data-modifying CTE. A small batch goes as
        arrays, in autocommit, so the statement is its own transaction: one round trip.
        A large one is COPYed into a staging table first, in the same transaction. The
        insert takes its key locks before the counter row's, in sorted key order, as in
        the multi-statement form."""
        conn = self.conn
        self._committing = False
        params: dict[str, Any] = {
            "received": batch.received,
            "redelivered": batch.redelivered,
            "shard": shard if self.counter is CounterStrategy.SHARDED else HOT_ROW,
        }
        if self._copies(batch.distinct):
            if self._staging_for is not conn:
                self._run("create_staging")  # in autocommit: a rollback cannot undo it
                self._staging_for = conn
            return batch.received, self._copy_and_apply(conn, batch, params)
        self._committing = True  # from here, a broken connection leaves it unknown
        row = self._run(
            "apply_unnest", {**params, **batch.columns, **batch.runs.params()}
        ).fetchone()
        assert row is not None
        return batch.received, int(row[0])

    def _copy_and_apply(
        self, conn: psycopg.Connection[Any], batch: Prepared, params: dict[str, Any]
    ) -> int:
        """COPY the batch into the staging table and apply it from there in ONE round trip.

        Both statements go as one simple-query string, which PostgreSQL runs as one
        implicit transaction (at the connection's isolation level): all or nothing, and
        the staging table empties itself at its commit. psycopg's ``copy()`` would take
        four round trips (BEGIN, COPY, the statement, COMMIT); on this kind of machine
        each costs both sides a wake-up worth more than a hundred microseconds of CPU.
        The integers go into the text as literals (the simple protocol takes no
        parameters).
        """
        pgconn = conn.pgconn
        encoding = conn.info.encoding
        (copy,) = self._q["copy_staging"]
        (apply,) = self._q["apply_staged"]
        literals = {key: str(int(value)) for key, value in params.items()}
        query = f"{copy};\n{apply % (literals | batch.runs.literals())}".encode(encoding)
        data = memoryview(copy_text(batch).encode(encoding))
        self._committing = False
        with conn.lock:
            try:
                pgconn.send_query(query)
                conn.wait(generators.send(pgconn))
                _raise_for(conn.wait(generators.fetch_many(pgconn)), encoding)
                for start in range(0, len(data), _COPY_PIECE):
                    conn.wait(generators.copy_to(pgconn, data[start : start + _COPY_PIECE]))
                while pgconn.put_copy_end(None) == 0:
                    conn.wait(generators.send(pgconn))
                # all sent: the transaction may commit now, whether or not we hear of it
                self._committing = True
                conn.wait(generators.send(pgconn))
                results = conn.wait(generators.fetch_many(pgconn))
            except psycopg.Error:
                raise
            except BaseException:
                self.close()  # perhaps halfway through a COPY: the connection cannot go on
                raise
        _raise_for(results, encoding)
        return int(results[-1].get_value(0, 0) or 0)

    def _apply_in_transaction(self, batch: Prepared) -> tuple[int, int]:
        """The multi-statement form: insert, then count, in an explicit transaction.
        Needed by ``rmw``, whose counting reads the counters before writing them. The
        batch's entry identities are recorded first."""
        conn = self.conn
        conn.isolation_level = psycopg_level(self.isolation)
        self._committing = False
        with conn.transaction():
            if batch.runs.producers:
                self._run("record_ranges", batch.runs.params())
            if batch.redelivered:
                self._run("add_redelivered", {"redelivered": batch.redelivered, "shard": HOT_ROW})
            unique = self._insert_unnest(batch) if batch.rows else 0
            self._count_rmw(batch.received, unique)
            self._committing = True  # leaving the block sends COMMIT
        return batch.received, unique

    def _insert_unnest(self, batch: Prepared) -> int:
        cur = self.conn.cursor()
        (insert,) = self._q["insert_events"]
        cur.execute(insert, batch.columns)
        return cur.rowcount

    def _count_rmw(self, received: int, unique: int) -> None:
        """``rmw``'s counting, inside the batch's transaction: read row 0, add in Python,
        write the sums back. (``atomic`` and ``sharded`` count inside the one statement.)"""
        row = self._run("read_counter_row", {"shard": HOT_ROW}).fetchone()
        if row is None:
            raise RuntimeError(f"event_stats has no row {HOT_ROW}: run Store.reset()")
        # The lost update, on purpose: between this read and the write below a
        # concurrent batch may commit its own sums, which the write overwrites.
        self._run(
            "write_counter_row",
            {
                "received": int(row[0]) + received,
                "unique": int(row[1]) + unique,
                "duplicate": int(row[2]) + received - unique,
                "shard": HOT_ROW,
            },
        )
