"""The store's pure parts: batch preparation, isolation names, retry classification and the
retry loop (with the transaction replaced by a stub, so nothing connects)."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
import psycopg.errors as pge
import pytest

from harness.model.modes import Isolation
from harness.model.retry import RetryPolicy
from harness.store.batch import COLUMNS, Prepared, prepare
from harness.store.postgres import Store, _retry_label, psycopg_level

from .conftest import NetworkBlocked

DSN = "postgresql://nobody:secret@192.0.2.1:5432/none"  # TEST-NET-1: never routed


def ev_row(topic: str, event_id: str) -> tuple[str, str, str, str, str]:
    return (topic, event_id, "2025-12-17T00:00:00Z", "s", "{}")


def ev(topic: str, event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "topic": topic,
        "event_id": event_id,
        "timestamp": "2025-12-17T00:00:00Z",
        "source": "s",
        "payload": {},
        **extra,
    }


# -- prepare --------------------------------------------------------------------------


def test_prepare_keeps_the_first_copy_sorts_and_counts_everything() -> None:
    batch = [
        ev("b", "2", source="first-b2", payload={"v": 1}),
        ev("a", "9", source="first-a9"),
        ev("b", "2", source="second-b2", payload={"v": 2}),
        ev("a", "1", source="first-a1"),
        ev("a", "9", source="second-a9"),
    ]
    prepared = prepare(batch)
    assert prepared.received == len(batch)
    assert prepared.distinct == 3
    assert list(zip(prepared.columns["topics"], prepared.columns["event_ids"], strict=True)) == [
        ("a", "1"),
        ("a", "9"),
        ("b", "2"),
    ]
    assert prepared.columns["sources"] == ["first-a1", "first-a9", "first-b2"]
    assert [orjson.loads(p) for p in prepared.columns["payloads"]] == [{}, {}, {"v": 1}]


def test_prepare_keeps_the_same_event_id_on_different_topics() -> None:
    prepared = prepare([ev("x", "same"), ev("y", "same"), ev("x", "same")])
    assert prepared.received == 3
    assert list(zip(prepared.columns["topics"], prepared.columns["event_ids"], strict=True)) == [
        ("x", "same"),
        ("y", "same"),
    ]


def test_prepare_sorts_by_topic_then_event_id() -> None:
    keys = [("t2", "a"), ("t1", "z"), ("t1", "b"), ("t10", "a"), ("t2", "0")]
    prepared = prepare([ev(t, e) for t, e in keys])
    assert list(
        zip(prepared.columns["topics"], prepared.columns["event_ids"], strict=True)
    ) == sorted(keys)


def test_prepare_columns_line_up() -> None:
    batch = [ev(f"t{i % 3}", f"e{i}", timestamp=f"2025-12-17T00:00:0{i}Z") for i in range(8)]
    prepared = prepare(reversed(batch))
    by_key = {(e["topic"], e["event_id"]): e for e in batch}
    for i, key in enumerate(
        zip(prepared.columns["topics"], prepared.columns["event_ids"], strict=True)
    ):
        assert prepared.columns["timestamps"][i] == by_key[key]["timestamp"]
    lengths = {
        len(col)
        for col in (
            prepared.columns["topics"],
            prepared.columns["event_ids"],
            prepared.columns["timestamps"],
            prepared.columns["sources"],
            prepared.columns["payloads"],
        )
    }
    assert lengths == {8}


def test_prepare_defaults_source_and_payload() -> None:
    prepared = prepare([{"topic": "t", "event_id": "e", "timestamp": "2025-12-17T00:00:00Z"}])
    assert prepared.columns["sources"] == [""]
    assert prepared.columns["payloads"] == ["{}"]


def test_prepare_of_an_empty_batch() -> None:
    assert prepare([]) == Prepared(0, [])
    assert prepare([]).columns == {key: [] for key in COLUMNS}


# -- isolation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("READ COMMITTED", Isolation.READ_COMMITTED),
        ("read-committed", Isolation.READ_COMMITTED),
        ("read_committed", Isolation.READ_COMMITTED),
        ("rc", Isolation.READ_COMMITTED),
        ("  Repeatable   Read ", Isolation.REPEATABLE_READ),
        ("rr", Isolation.REPEATABLE_READ),
        ("Serializable", Isolation.SERIALIZABLE),
        ("ser", Isolation.SERIALIZABLE),
        (Isolation.SERIALIZABLE, Isolation.SERIALIZABLE),
    ],
)
def test_isolation_parse_accepts_spellings(text: str | Isolation, expected: Isolation) -> None:
    assert Isolation.parse(text) is expected


def test_isolation_parse_rejects_unknown_names_listing_choices() -> None:
    with pytest.raises(ValueError, match="chaos") as info:
        Isolation.parse("chaos")
    for level in Isolation:
        assert level.value in str(info.value)


@pytest.mark.parametrize("level", list(Isolation))
def test_isolation_maps_to_psycopg(level: Isolation) -> None:
    expected = {
        Isolation.READ_COMMITTED: psycopg.IsolationLevel.READ_COMMITTED,
        Isolation.REPEATABLE_READ: psycopg.IsolationLevel.REPEATABLE_READ,
        Isolation.SERIALIZABLE: psycopg.IsolationLevel.SERIALIZABLE,
    }
    assert psycopg_level(level) is expected[level]


# -- construction ---------------------------------------------------------------------


@pytest.mark.parametrize("schema", ["Bad-Name", "1starts_with_digit", "", "x" * 64, "a;drop"])
def test_store_rejects_bad_schema_names(schema: str) -> None:
    with pytest.raises(ValueError, match="schema name"):
        Store(DSN, schema=schema)


def test_store_constructor_does_not_connect() -> None:
    store = Store(DSN, schema="ok_name_1", isolation="serializable")
    assert store.isolation is Isolation.SERIALIZABLE
    assert store.schema == "ok_name_1"
    # only using the connection connects (and the unit tier forbids that)
    with pytest.raises(NetworkBlocked):
        _ = store.conn
    store.close()


def test_store_rejects_unknown_isolation() -> None:
    with pytest.raises(ValueError, match="isolation"):
        Store(DSN, isolation="chaos")


# -- retry classification -------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (pge.SerializationFailure, "40001"),
        (pge.DeadlockDetected, "40P01"),
        (psycopg.OperationalError, "connection"),  # no SQLSTATE: the connection broke
        (pge.ConnectionFailure, "connection"),  # 08006
        (pge.AdminShutdown, "connection"),  # 57P01: pg_terminate_backend
        (pge.CrashShutdown, "connection"),  # 57P02
        (pge.CannotConnectNow, "connection"),  # 57P03
        (pge.QueryCanceled, None),  # 57014: statement timeout, retrying won't help
        (pge.LockNotAvailable, None),  # 55P03
    ],
)
def test_retry_label(error: type[psycopg.OperationalError], label: str | None) -> None:
    exc = error()
    assert isinstance(exc, psycopg.OperationalError)
    assert _retry_label(exc) == label


def test_bare_errors_carry_their_sqlstate() -> None:
    # the classification above relies on this
    assert pge.SerializationFailure().sqlstate == "40001"
    assert pge.DeadlockDetected().sqlstate == "40P01"
    assert pge.QueryCanceled().sqlstate == "57014"
    assert psycopg.OperationalError().sqlstate is None


# -- the retry loop of apply_batch ----------------------------------------------------


class Script:
    """Stands in for Store._apply_once: raises the scripted errors, then returns."""

    def __init__(self, errors: list[Exception], unique: int | None = None) -> None:
        self.errors = list(errors)
        self.unique = unique
        self.calls: list[Prepared] = []

    def __call__(self, batch: Prepared, shard: int) -> tuple[int, int]:
        self.calls.append(batch)
        if self.errors:
            raise self.errors.pop(0)
        return batch.received, batch.distinct if self.unique is None else self.unique


def scripted_store(
    monkeypatch: pytest.MonkeyPatch, script: Script, policy: RetryPolicy
) -> tuple[Store, list[float], list[str]]:
    sleeps: list[float] = []
    closes: list[str] = []
    store = Store(DSN, retry=policy, sleep=sleeps.append, chance=lambda: 0.5)
    monkeypatch.setattr(store, "_apply_once", script)
    monkeypatch.setattr(store, "close", lambda: closes.append("close"))
    return store, sleeps, closes


def test_apply_batch_retries_retryable_failures_then_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=1.0)
    script = Script(
        [pge.SerializationFailure(), pge.DeadlockDetected(), pge.SerializationFailure()]
    )
    store, sleeps, closes = scripted_store(monkeypatch, script, policy)
    batch = [ev("t", "1"), ev("t", "2"), ev("t", "1")]
    result = store.apply_batch(batch)
    assert result.attempts == 4
    assert dict(result.retries) == {"40001": 2, "40P01": 1}
    assert (result.received, result.unique, result.duplicate) == (3, 2, 1)
    assert sleeps == [policy.delay(n, 0.5) for n in (1, 2, 3)]
    assert closes == []
    assert len(script.calls) == 4
    assert all(call == script.calls[0] for call in script.calls), "retries re-send the same batch"


def test_apply_batch_reconnects_after_a_connection_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = Script([psycopg.OperationalError("server closed the connection")])
    store, _, closes = scripted_store(monkeypatch, script, RetryPolicy(max_attempts=3))
    result = store.apply_batch([ev("t", "1")])
    assert result.retries == {"connection": 1}
    assert closes == ["close"]


def test_apply_batch_does_not_retry_other_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script([pge.QueryCanceled()])
    store, sleeps, _ = scripted_store(monkeypatch, script, RetryPolicy(max_attempts=5))
    with pytest.raises(pge.QueryCanceled):
        store.apply_batch([ev("t", "1")])
    assert len(script.calls) == 1
    assert sleeps == []


def test_apply_batch_gives_up_after_max_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[Exception] = [pge.SerializationFailure() for _ in range(10)]
    script = Script(errors)
    store, sleeps, _ = scripted_store(monkeypatch, script, RetryPolicy(max_attempts=3))
    with pytest.raises(pge.SerializationFailure) as info:
        store.apply_batch([ev("t", "1")])
    assert len(script.calls) == 3
    assert len(sleeps) == 2
    assert info.value is errors[2], "the last error is raised"


def test_apply_batch_counts_stored_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 received, 3 distinct in the batch, only 1 of them new to the table
    script = Script([], unique=1)
    store, _, _ = scripted_store(monkeypatch, script, RetryPolicy())
    result = store.apply_batch([ev("t", "1"), ev("t", "2"), ev("t", "3"), ev("t", "1")])
    assert (result.received, result.unique, result.duplicate, result.attempts) == (4, 1, 3, 1)
    assert result.retries == {}


def test_apply_batch_calls_before_retry_after_each_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = Script([pge.DeadlockDetected(), pge.DeadlockDetected()])
    store, _, _ = scripted_store(monkeypatch, script, RetryPolicy(max_attempts=5))
    log: list[str] = []
    monkeypatch.setattr(store, "_sleep", lambda s: log.append("sleep"))
    result = store.apply_batch([ev("t", "1")], before_retry=lambda: log.append("before_retry"))
    assert result.attempts == 3
    assert log == ["sleep", "before_retry"] * 2


def test_a_commit_that_lost_its_connection_is_reported_uncertain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The outcome of a COMMIT whose connection broke is unknown: it may have committed,
    and the retry then counts the batch again. The result says how many events that was."""
    store, _, _ = scripted_store(monkeypatch, Script([]), RetryPolicy(max_attempts=3))
    attempts = iter(["at commit", "fine"])

    def apply_once(batch: Prepared, shard: int) -> tuple[int, int]:
        if next(attempts) == "at commit":
            store._committing = True
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        store._committing = False
        return batch.received, batch.distinct

    monkeypatch.setattr(store, "_apply_once", apply_once)
    result = store.apply_batch([ev("t", "1"), ev("t", "2")])
    assert result.uncertain == 2
    assert result.retries == {"connection": 1}


def test_a_failure_before_commit_is_not_uncertain(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script([psycopg.OperationalError("server closed the connection")])
    store, _, _ = scripted_store(monkeypatch, script, RetryPolicy(max_attempts=3))
    assert store.apply_batch([ev("t", "1")]).uncertain == 0


def test_runs_merge_each_producers_contiguous_numbers_whatever_the_order() -> None:
    from harness.store.batch import Entries, Runs

    entries = Entries(
        producers=[7, 7, 9, 7, 7, 9],
        seqs=[3, 1, 0, 2, 5, 1],
        seen_ms=[10, 11, 12, 13, 14, 15],
        events=[1, 2, 1, 1, 4, 2],
        of_row=[],
    )
    runs = Runs.of(entries, range(6))
    # producer 7: 1–3 (one run), 5 alone; producer 9: 0–1
    assert list(zip(runs.producers, runs.first, runs.last, strict=True)) == [
        (7, 1, 3),
        (7, 5, 5),
        (9, 0, 1),
    ]
    assert runs.seen_ms == [13, 14, 15] and runs.events == [4, 4, 3]
    assert runs.literals()["run_first"] == "'{1,5,0}'"


def test_a_batch_is_prepared_without_repeated_or_applied_entries() -> None:
    from harness.store.batch import Entries

    store = Store(DSN, insert="unnest")
    rows = [ev_row("t", str(i)) for i in range(5)]
    # entries: (1, 0) rows 0–1; (1, 1) row 2; (1, 0) again row 3; (1, 2) row 4
    entries = Entries([1, 1, 1, 1], [0, 1, 0, 2], [5, 5, 6, 6], [2, 1, 1, 1], [1, 1, 2, 3, 4])
    batch = store.prepare_batch(rows, entries)
    assert (batch.received, batch.redelivered) == (4, 1)
    assert sorted(r[1] for r in batch.rows) == ["0", "1", "2", "4"]
    assert (batch.runs.first, batch.runs.last, batch.runs.events) == ([0], [2], [4])
    # after a 23P01 the store learns that (1, 1) had been applied: it goes too
    again = store.prepare_batch(rows, entries, applied=[(1, 1, 1)])
    assert (again.received, again.redelivered) == (3, 2)
    assert (again.runs.first, again.runs.last) == ([0, 2], [0, 2])
    with pytest.raises(ValueError, match="entry positions"):
        store.prepare_batch(rows[:2], entries)
