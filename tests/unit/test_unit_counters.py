"""Counter strategies without a database: names, the expected-safety table, the statements
each strategy runs (on a recording stand-in connection) and how the invariants classify a
broken counter."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from harness.model.modes import CounterStrategy, Isolation
from harness.store import queries
from harness.store.batch import Counters, Verification
from harness.store.postgres import HOT_ROW, Store
from harness.trials.invariants import Evidence, Verdict, check, classify

DSN = "postgresql://nobody:secret@192.0.2.1:5432/none"  # TEST-NET-1: never routed

# -- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("atomic", CounterStrategy.ATOMIC),
        ("ATOMIC", CounterStrategy.ATOMIC),
        ("rmw", CounterStrategy.RMW),
        (" RMW ", CounterStrategy.RMW),
        ("read-modify-write", CounterStrategy.RMW),
        ("read modify write", CounterStrategy.RMW),
        ("sharded", CounterStrategy.SHARDED),
        (CounterStrategy.SHARDED, CounterStrategy.SHARDED),
    ],
)
def test_counter_parse_accepts_spellings(
    text: str | CounterStrategy, expected: CounterStrategy
) -> None:
    assert CounterStrategy.parse(text) is expected


def test_counter_parse_rejects_unknown_names_listing_choices() -> None:
    with pytest.raises(ValueError, match="counter strategy 'optimistic'") as info:
        CounterStrategy.parse("optimistic")
    assert "atomic, rmw, sharded" in str(info.value)


# -- expected safety ------------------------------------------------------------------

SAFE = {
    (CounterStrategy.ATOMIC, Isolation.READ_COMMITTED): True,
    (CounterStrategy.ATOMIC, Isolation.REPEATABLE_READ): True,
    (CounterStrategy.ATOMIC, Isolation.SERIALIZABLE): True,
    (CounterStrategy.RMW, Isolation.READ_COMMITTED): False,  # the lost update
    (CounterStrategy.RMW, Isolation.REPEATABLE_READ): True,  # conflicts become 40001
    (CounterStrategy.RMW, Isolation.SERIALIZABLE): True,
    (CounterStrategy.SHARDED, Isolation.READ_COMMITTED): True,
    (CounterStrategy.SHARDED, Isolation.REPEATABLE_READ): True,
    (CounterStrategy.SHARDED, Isolation.SERIALIZABLE): True,
}


@pytest.mark.parametrize(("counter", "isolation"), list(SAFE))
def test_expected_safety(counter: CounterStrategy, isolation: Isolation) -> None:
    assert counter.safe_at(isolation) is SAFE[counter, isolation]
    assert (isolation in counter.safe_isolations) is SAFE[counter, isolation]


def test_safe_at_takes_isolation_names() -> None:
    assert not CounterStrategy.RMW.safe_at("rc")
    assert CounterStrategy.RMW.safe_at("REPEATABLE READ")
    with pytest.raises(ValueError, match="isolation"):
        CounterStrategy.ATOMIC.safe_at("chaos")


# -- the store's choice ---------------------------------------------------------------


def test_store_counts_atomically_by_default() -> None:
    assert Store(DSN).counter is CounterStrategy.ATOMIC


def test_store_takes_a_counter_strategy_by_name() -> None:
    assert Store(DSN, counter="sharded").counter is CounterStrategy.SHARDED
    assert Store(DSN, counter=CounterStrategy.RMW).counter is CounterStrategy.RMW


def test_store_rejects_unknown_counter_strategy_listing_choices() -> None:
    with pytest.raises(ValueError, match="choose one of atomic, rmw, sharded"):
        Store(DSN, counter="optimistic")


def test_the_rmw_read_takes_no_lock() -> None:
    # The lost update is the point of "rmw": FOR UPDATE would quietly make it safe.
    (read,) = queries.load()["read_counter_row"]
    assert "for update" not in read.lower()
    assert "for share" not in read.lower()


class RecordingConnection:
    """Stands in for a psycopg connection: records each statement by its block name."""

    closed = False
    isolation_level: Any = None

    def __init__(self, inserted: int, hot_row: tuple[int, int, int] = (100, 60, 40)) -> None:
        self.inserted = inserted
        self.hot_row = hot_row
        self.names = {stmt: name for name, stmts in queries.load().items() for stmt in stmts}
        self.log: list[tuple[str, Mapping[str, Any] | None]] = []

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.log.append(("BEGIN", None))
        yield
        self.log.append(("COMMIT", None))

    def cursor(self) -> RecordingCursor:
        return RecordingCursor(self)


class RecordingCursor:
    def __init__(self, conn: RecordingConnection) -> None:
        self.conn = conn
        self.rowcount = -1
        self.rows: list[tuple[int, ...]] = []

    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> None:
        name = self.conn.names[statement]
        self.conn.log.append((name, params))
        self.rowcount = self.conn.inserted if name == "insert_events" else 1
        self.rows = {
            "read_counter_row": [self.conn.hot_row],
            "apply_unnest": [(self.conn.inserted,)],
        }.get(name, [])

    def fetchone(self) -> tuple[int, ...] | None:
        return self.rows[0] if self.rows else None


def applied(counter: str, *, shard: int, inserted: int) -> list[tuple[str, Any]]:
    """What one apply_batch of 5 events (4 distinct keys) sends, by block name."""
    store = Store(DSN, counter=counter, insert="unnest")  # the stub records statements
    conn = RecordingConnection(inserted)
    store._conn = conn  # type: ignore[assignment]
    batch = [
        {"topic": "t", "event_id": e, "timestamp": "2025-12-17T00:00:00Z"}
        for e in ("a", "b", "c", "d", "a")
    ]
    result = store.apply_batch(batch, shard=shard)
    assert (result.received, result.unique, result.duplicate) == (5, inserted, 5 - inserted)
    return [(name, params) for name, params in conn.log if name != "insert_events"]


def one_statement(log: list[tuple[str, Any]]) -> tuple[str, int, int, list[str]]:
    ((name, params),) = log  # no BEGIN/COMMIT: autocommit makes it its own transaction
    return name, params["received"], params["shard"], params["event_ids"]


def test_atomic_inserts_and_counts_on_row_0_in_one_statement() -> None:
    log = applied("atomic", shard=7, inserted=3)
    assert one_statement(log) == ("apply_unnest", 5, HOT_ROW, ["a", "b", "c", "d"])


def test_sharded_inserts_and_counts_on_the_callers_shard_in_one_statement() -> None:
    log = applied("sharded", shard=7, inserted=3)
    assert one_statement(log) == ("apply_unnest", 5, 7, ["a", "b", "c", "d"])


def test_rmw_reads_row_0_and_writes_back_sums_from_python() -> None:
    # row 0 held (100, 60, 40) when read
    assert applied("rmw", shard=7, inserted=3) == [
        ("BEGIN", None),
        ("read_counter_row", {"shard": HOT_ROW}),
        ("write_counter_row", {"received": 105, "unique": 63, "duplicate": 42, "shard": 0}),
        ("COMMIT", None),
    ]


# -- classifying a broken counter -----------------------------------------------------

PUBLISHED, UNIQUE = 1_000, 700


def evidence(
    counter: str = "rmw",
    isolation: str = "read_committed",
    received: int = PUBLISHED,
    unique: int = UNIQUE,
    duplicate: int | None = None,
    rows: int = UNIQUE,
    lost: int = 0,
    unexpected: int = 0,
) -> Evidence:
    """Consistent evidence unless a keyword says otherwise; rmw at READ COMMITTED."""
    return Evidence(
        published=PUBLISHED,
        expected_unique=UNIQUE,
        counters=Counters(received, unique, received - unique if duplicate is None else duplicate),
        stored=Verification(rows, rows, lost, unexpected),
        counter=counter,
        isolation=isolation,
    )


def lost_update(**kwargs: Any) -> Evidence:
    """What rmw at READ COMMITTED leaves: batches of 10 (7 new) missing from the counters,
    the counters consistent with each other, every row stored."""
    return evidence(received=PUBLISHED - 30, unique=UNIQUE - 21, **kwargs)


def test_consistent_evidence_gives_a_clean_verdict() -> None:
    assert classify(evidence()) == Verdict(violations=(), anomalies=(), lost_updates=0)


def test_a_lost_update_under_rmw_at_read_committed_is_an_anomaly() -> None:
    verdict = classify(lost_update())
    assert verdict.violations == ()
    assert verdict.ok
    assert verdict.lost_updates == 30
    assert len(verdict.anomalies) == 3, verdict.anomalies
    assert f"received {PUBLISHED - 30} != events published" in verdict.anomalies[0]
    assert f"!= expected unique {UNIQUE}" in verdict.anomalies[1]
    assert f"!= rows stored {UNIQUE}" in verdict.anomalies[2]
    assert check(lost_update()) == []


@pytest.mark.parametrize(
    ("counter", "isolation"), [(c, i) for (c, i), safe in SAFE.items() if safe]
)
def test_the_same_shortfall_under_a_safe_strategy_is_a_violation(
    counter: CounterStrategy, isolation: Isolation
) -> None:
    ev = lost_update(counter=counter.value, isolation=isolation.value)
    verdict = classify(ev)
    assert verdict.anomalies == ()
    assert len(verdict.violations) == 3, verdict.violations
    assert verdict.lost_updates == 30
    assert check(ev) == list(verdict.violations)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lost": 4, "rows": UNIQUE - 4}, "4 expected events are missing"),
        ({"unexpected": 2, "rows": UNIQUE + 2}, "2 stored events were never published"),
        ({"rows": UNIQUE - 1}, f"rows stored {UNIQUE - 1} != expected unique {UNIQUE}"),
    ],
    ids=["lost", "unexpected", "rows"],
)
def test_data_breaks_are_violations_even_under_rmw_at_read_committed(
    change: dict[str, int], message: str
) -> None:
    verdict = classify(lost_update(**change))
    assert any(message in line for line in verdict.violations), verdict.violations
    assert verdict.lost_updates == 30
    assert verdict.anomalies, "the counter shortfall is still reported, as an anomaly"


def test_rows_stored_twice_are_a_violation_under_rmw() -> None:
    ev = dataclasses.replace(lost_update(), stored=Verification(UNIQUE + 2, UNIQUE, 0, 0))
    verdict = classify(ev)
    assert any("2 events are stored more than once" in line for line in verdict.violations)


@pytest.mark.parametrize(
    "change",
    [
        {"received": PUBLISHED + 1, "unique": UNIQUE},  # counted an event twice
        {"unique": UNIQUE + 1},  # counted more new events than were stored
        {"duplicate": PUBLISHED - UNIQUE - 1},  # counters inconsistent with each other
    ],
    ids=["received-high", "unique-high", "duplicate-mismatch"],
)
def test_breaks_a_lost_update_cannot_cause_are_violations_under_rmw(
    change: dict[str, int],
) -> None:
    verdict = classify(evidence(**change))
    assert len(verdict.violations) >= 1, verdict
    assert verdict.lost_updates == 0


def test_a_lost_update_is_a_shortfall_an_overshoot_is_never_excused() -> None:
    # redeliveries are recognised, so received is exact: above published is a bug even
    # for rmw at READ COMMITTED, below it is the lost update, measured
    over = classify(evidence(received=PUBLISHED + 3, unique=UNIQUE))
    assert any("received" in line for line in over.violations)
    short = classify(evidence(received=PUBLISHED - 8, unique=UNIQUE - 2))
    assert short.violations == ()
    assert short.lost_updates == 8
    assert f"received {PUBLISHED - 8} != events published" in short.anomalies[0]


def test_evidence_defaults_to_atomic_at_read_committed() -> None:
    ev = Evidence(
        published=10,
        expected_unique=10,
        counters=Counters(9, 9, 0),
        stored=Verification(10, 10, 0, 0),
    )
    assert (ev.counter, ev.isolation) == ("atomic", "read_committed")
    assert len(check(ev)) == 3  # a shortfall under atomic is a bug


def test_evidence_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="counter strategy"):
        evidence(counter="optimistic")
    with pytest.raises(ValueError, match="isolation"):
        evidence(isolation="chaos")


def test_verdict_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        classify(evidence()).lost_updates = 1  # type: ignore[misc]
