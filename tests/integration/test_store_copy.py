"""The COPY path's text, built in bulk, stores every value exactly, awkward characters included."""

from __future__ import annotations

import orjson
import pytest

from harness.model.events import Row
from harness.store.batch import copy_text, prepare_rows
from harness.store.postgres import COPY_FROM, Store

pytestmark = pytest.mark.integration

SORTED = orjson.OPT_SORT_KEYS

AWKWARD = ["plain", "back\\slash", "tab\there", "new\nline", "carriage\rreturn", "\\N", "\\.", ""]


def rows(values: list[str]) -> list[Row]:
    out = []
    for i in range(COPY_FROM + 10):
        value = values[i % len(values)]
        payload = orjson.dumps({"v": value, "i": i}).decode()
        out.append((f"t{i % 3}{value}", f"id-{i}{value}", "2025-12-17T10:00:00Z", value, payload))
    return out


@pytest.mark.parametrize("values", [["plain"], AWKWARD, ["back\\slash", "\\N", "x\ry"]])
def test_copy_stores_every_value_as_given(store: Store, values: list[str]) -> None:
    batch = rows(values)
    prepared = prepare_rows(batch)
    # one line a row, four tabs a line, whatever the values hold (escaped value by value
    # when a tab or newline is among them)
    lines = copy_text(prepared).split("\n")
    assert lines.pop() == "" and len(lines) == len(prepared.rows)
    assert all(line.count("\t") == 4 for line in lines)
    result = store.apply_rows(batch)
    assert (result.received, result.unique) == (len(batch), len(batch))
    stored = {
        (e["topic"], e["event_id"], e["source"], orjson.dumps(e["payload"], option=SORTED))
        for e in store.list_events(limit=1000)
    }
    assert stored == {
        (r[0], r[1], r[3], orjson.dumps(orjson.loads(r[4]), option=SORTED)) for r in batch
    }


def test_checkpoint_runs_for_a_role_that_may(store: Store) -> None:
    # the test database's role is a superuser; a role without pg_checkpoint gets False
    assert store.checkpoint() is True
    assert store.conn.execute("SELECT 1").fetchone() == (1,)  # the connection goes on


def test_copy_keeps_the_first_copy_of_a_key_the_batch_holds_twice(store: Store) -> None:
    batch = rows(["plain"])
    first = batch[5]
    again = (first[0], first[1], first[2], "later", orjson.dumps({"copy": 2}).decode())
    batch.insert(20, again)  # a later copy of the same key, in the same batch
    result = store.apply_rows(batch)  # by COPY: not de-duplicated before the statement
    assert (result.received, result.unique, result.duplicate) == (len(batch), len(batch) - 1, 1)
    (stored,) = [e for e in store.list_events(limit=1000) if e["event_id"] == first[1]]
    assert stored["source"] == first[3]
