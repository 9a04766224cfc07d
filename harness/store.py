"""PostgreSQL: the only module that runs SQL. Every statement comes from ``sql/*.sql``."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import functools
import operator
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import generators, pq, sql

from harness import queries
from harness.events import Row
from harness.retry import RETRYABLE_SQLSTATES, RetryPolicy

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


_Choice = TypeVar("_Choice", bound=enum.Enum)
_Result = TypeVar("_Result")


def _parse_choice(
    cls: type[_Choice], value: object, aliases: Mapping[str, str], what: str
) -> _Choice:
    """A member from its value in any case, with spaces or dashes for underscores."""
    if isinstance(value, cls):
        return value
    norm = re.sub(r"[\s-]+", "_", str(value).strip().lower())
    try:
        return cls(aliases.get(norm, norm))
    except ValueError:
        choices = ", ".join(str(member.value) for member in cls)
        raise ValueError(f"unknown {what} {value!r}; choose one of {choices}") from None


class Isolation(enum.Enum):
    READ_COMMITTED = "read_committed"
    REPEATABLE_READ = "repeatable_read"
    SERIALIZABLE = "serializable"

    @classmethod
    def parse(cls, value: str | Isolation) -> Isolation:
        """Accepts ``read_committed``, ``READ COMMITTED``, ``read-committed``, ``rc``…"""
        aliases = {"rc": "read_committed", "rr": "repeatable_read", "ser": "serializable"}
        return _parse_choice(cls, value, aliases, "isolation level")

    @property
    def psycopg(self) -> psycopg.IsolationLevel:
        return psycopg.IsolationLevel[self.name]


class CounterStrategy(enum.Enum):
    """How ``apply_batch`` adds a batch to the counters, in the batch's own transaction.

    - ``atomic``: ``x = x + n`` on the one row ``shard = 0``. Concurrent batches queue
      on that row's lock; at REPEATABLE READ and SERIALIZABLE the losers get 40001.
    - ``rmw``: read the row, add in Python, write the sums back: the seed report's
      "WRONG" example, kept to measure it. At READ COMMITTED a batch that read the row
      before a concurrent batch committed overwrites that batch's counts (a lost
      update); at REPEATABLE READ and SERIALIZABLE the same conflict is a 40001.
    - ``sharded``: ``x = x + n`` on the caller's own row ``shard = <shard>``, so
      consumers with distinct shards never touch the same row; readers sum the rows.
    """

    ATOMIC = "atomic"
    RMW = "rmw"
    SHARDED = "sharded"

    @classmethod
    def parse(cls, value: str | CounterStrategy) -> CounterStrategy:
        """Accepts ``atomic``, ``rmw`` (or ``read-modify-write``), ``sharded``, any case."""
        return _parse_choice(cls, value, {"read_modify_write": "rmw"}, "counter strategy")

    @property
    def safe_isolations(self) -> frozenset[Isolation]:
        """The isolation levels at which this strategy is expected to count exactly."""
        if self is CounterStrategy.RMW:
            # Hermitage: lost update (P4) is possible at READ COMMITTED only.
            return frozenset({Isolation.REPEATABLE_READ, Isolation.SERIALIZABLE})
        return frozenset(Isolation)

    def safe_at(self, isolation: Isolation | str) -> bool:
        """Whether exact counters are expected at ``isolation``; where they are not, a
        shortfall is the strategy's known anomaly rather than a bug."""
        return Isolation.parse(isolation) in self.safe_isolations


@dataclasses.dataclass(frozen=True)
class Counters:
    received: int
    unique_processed: int
    duplicate_dropped: int
    #: deliveries recognised as applied before and skipped (not receipts)
    redelivered: int = 0


@dataclasses.dataclass(frozen=True)
class Entries:
    """The stream entries a batch's rows came from: their identities ``(producer, seq)``,
    when the broker took each (``seen_ms``), how many events each holds, and for each row
    of the batch, in order, the position of its entry in these lists (1-based)."""

    producers: list[int]
    seqs: list[int]
    seen_ms: list[int]
    events: list[int]
    of_row: list[int]


@dataclasses.dataclass(frozen=True)
class Runs:
    """Entry identities as runs: per producer, contiguous sequence numbers, each run with
    the latest ``seen_ms`` and the events of its entries (a row of ``applied_ranges``)."""

    producers: list[int]
    first: list[int]
    last: list[int]
    seen_ms: list[int]
    events: list[int]

    @classmethod
    def of(cls, entries: Entries, positions: Iterable[int]) -> Runs:
        """The runs of these entries (0-based positions; distinct identities)."""
        runs = cls([], [], [], [], [])
        order = sorted(positions, key=lambda i: (entries.producers[i], entries.seqs[i]))
        for i in order:
            producer, seq = entries.producers[i], entries.seqs[i]
            if runs.producers and runs.producers[-1] == producer and runs.last[-1] == seq - 1:
                runs.last[-1] = seq
                runs.seen_ms[-1] = max(runs.seen_ms[-1], entries.seen_ms[i])
                runs.events[-1] += entries.events[i]
            else:
                runs.producers.append(producer)
                runs.first.append(seq)
                runs.last.append(seq)
                runs.seen_ms.append(entries.seen_ms[i])
                runs.events.append(entries.events[i])
        return runs

    def params(self) -> dict[str, list[int]]:
        return {
            "run_producers": self.producers,
            "run_first": self.first,
            "run_last": self.last,
            "run_seen_ms": self.seen_ms,
            "run_events": self.events,
        }

    def literals(self) -> dict[str, str]:
        """:meth:`params` as SQL array literals (integers only: nothing to escape)."""
        return {k: "'{" + ",".join(map(str, v)) + "}'" for k, v in self.params().items()}


NO_RUNS = Runs([], [], [], [], [])


def _inside(ranges: Mapping[int, list[tuple[int, int]]], producer: int, seq: int) -> bool:
    return any(first <= seq <= last for first, last in ranges.get(producer, ()))


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A batch ready to insert: how many events it had, and its rows in no particular
    order: one per distinct key (the batch's first copy of it) from :func:`prepare_rows`,
    or, for a batch that goes by COPY, all of them in arrival order (the statement keeps
    the first copy of a key itself).

    The COPY path's statement sorts the rows by key itself, in SQL; the array path takes
    :attr:`columns`, sorted here. Either way keys are locked in one global order.
    """

    received: int
    rows: list[Row]
    #: the identities of the entries the rows came from, to record with them
    runs: Runs = NO_RUNS
    #: events of entries left out as applied before (or repeated within the batch)
    redelivered: int = 0
    #: the batch as it came (rows and their entries), to prepare again without what
    #: turns out to have been applied (see :meth:`Store.apply_prepared`)
    source: tuple[list[Row], Entries] | None = None

    @property
    def distinct(self) -> int:
        """Rows to insert: the distinct keys, after :func:`prepare_rows`."""
        return len(self.rows)

    @functools.cached_property
    def columns(self) -> dict[str, list[str]]:
        """The rows sorted by (topic, event_id), as five parallel lists named as the
        array statement's parameters (``topics``, ``event_ids``, ``timestamps``,
        ``sources``, ``payloads``)."""
        ordered = sorted(self.rows, key=_KEY)
        lists: list[list[str]] = [list(c) for c in zip(*ordered, strict=True)] or [
            [] for _ in COLUMNS
        ]
        return dict(zip(COLUMNS, lists, strict=True))


COLUMNS = ("topics", "event_ids", "timestamps", "sources", "payloads")
_KEY = operator.itemgetter(0, 1)


def prepare(events: Iterable[Mapping[str, Any]]) -> Prepared:
    """:func:`prepare_rows` for events given as dicts."""
    return prepare_rows(
        (
            e["topic"],
            e["event_id"],
            e["timestamp"],
            e.get("source", ""),
            orjson.dumps(e.get("payload", {})).decode(),
        )
        for e in events
    )


def _copy_text(batch: Prepared) -> str:
    """The batch in COPY's text format.

    Built in bulk: rows are joined with tabs and newlines first and escaped after.
    Backslashes and carriage returns can only come from the values, so escaping the whole
    text at once is the same as escaping each value. A tab or newline inside a value
    would be taken for a separator, which the counts below catch: then each value is
    escaped on its own.
    """
    n = len(batch.rows)
    text = "\n".join(map("\t".join, batch.rows))
    if text.count("\t") != 4 * n or text.count("\n") != n - 1:
        return "".join("\t".join(map(_copy_escape, row)) + "\n" for row in batch.rows)
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "\r" in text:
        text = text.replace("\r", "\\r")
    return text + "\n"


def _copy_escape(value: str) -> str:
    """One value in COPY's text format."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


#: COPY data goes to libpq in pieces of at most this many bytes (as psycopg's own COPY
#: does: one very large piece can make libpq loop forever, psycopg issue #255)
_COPY_PIECE = 128 * 1024


def _raise_for(results: list[Any], encoding: str) -> None:
    """Raise the error of the first failed result of a simple-query string, if any."""
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=encoding)


def prepare_rows(rows: Iterable[Row]) -> Prepared:
    """De-duplicate a batch by key; the first copy of a key wins.

    Sorting by key matters under concurrency: batches that lock overlapping keys in
    different orders deadlock (40P01); batches that lock them in one global order cannot.
    The statements see to it (see :class:`Prepared`).
    """
    rows = rows if isinstance(rows, list) else list(rows)
    # the first copy wins: the map is built from the last row to the first
    by_key = {(row[0], row[1]): row for row in reversed(rows)}
    return Prepared(len(rows), list(by_key.values()))


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
    #: events in entries recognised as applied before, and skipped
    redelivered: int = 0


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
        counter: CounterStrategy | str = CounterStrategy.ATOMIC,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        chance: Callable[[], float] = random.random,
        connect_timeout: int = 5,
        application_name: str = "harness",
        insert: str = "copy",
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
                # The isolation level of the one-statement apply, which autocommit runs
                # as its own transaction (explicit transactions set theirs in BEGIN).
                options=(
                    f"-c search_path={self.schema} -c default_transaction_isolation="
                    + self.isolation.value.replace("_", "\\ ")
                ),
                application_name=self.application_name,
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
            if identity in seen or _inside(known, *identity):
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

    def apply_like_the_seed(self, event: Mapping[str, Any]) -> bool:
        """The seed report's design, kept to be measured: ONE event per transaction and
        three statements (received + 1 on the hot row first, the insert, then unique or
        duplicate + 1). Returns whether the event was new."""
        unique, *_ = self._retrying(lambda: self._apply_seed_once(event), 1, None)
        return unique == 1

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
        retries: collections.Counter[str] = collections.Counter()
        failures = uncertain = 0
        while True:
            try:
                result = attempt()
            except psycopg.OperationalError as exc:
                label = _retry_label(exc)
                if label is None:
                    raise
                if label == "connection":
                    if self._committing:
                        uncertain += received
                    self.close()  # reconnect on the next attempt
                error: psycopg.OperationalError = exc
            else:
                return result, failures + 1, dict(retries), uncertain
            failures += 1
            retries[label] += 1
            if not self.retry.may_retry(failures):
                raise error
            self._sleep(self.retry.delay(failures, self._chance()))
            if before_retry is not None:
                before_retry()

    def _apply_seed_once(self, event: Mapping[str, Any]) -> int:
        conn = self.conn
        conn.isolation_level = self.isolation.psycopg
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
        data = memoryview(_copy_text(batch).encode(encoding))
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
        conn.isolation_level = self.isolation.psycopg
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
