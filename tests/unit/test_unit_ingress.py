"""POST /publish's body check: one entry per request, the fast path and the slow one agree."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.model import events
from harness.service import ingress


def event(n: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "topic": "user.login",
        "event_id": f"evt-{n}",
        "timestamp": "2025-12-17T10:30:45.123Z",
        "source": "tests",
        "payload": {"n": n},
        **fields,
    }


def test_one_event_is_one_entry_as_sent() -> None:
    body = orjson.dumps(event(1))
    entry = ingress.parse(body, max_events=10)
    assert entry == ingress.Entry(b"[" + body + b"]", 1)


def test_a_batch_is_one_entry() -> None:
    body = orjson.dumps({"events": [event(i) for i in range(5)]})
    entry = ingress.parse(body, max_events=10)
    assert entry.count == 5
    assert [row[1] for row in events.decode_rows(entry.data)] == [f"evt-{i}" for i in range(5)]


def test_two_objects_side_by_side_are_not_two_events() -> None:
    """The fast path wraps one event in brackets: it must not turn two into an array."""
    body = orjson.dumps(event(1)) + b"," + orjson.dumps(event(2))
    with pytest.raises(ingress.Refused) as refused:
        ingress.parse(body, max_events=10)
    assert refused.value.status == 400


def test_a_payload_with_an_events_key_is_one_event() -> None:
    body = orjson.dumps(event(1, payload={"events": [1, 2]}))
    entry = ingress.parse(body, max_events=10)
    assert entry.count == 1
    assert orjson.loads(events.decode_rows(entry.data)[0][4]) == {"events": [1, 2]}


def test_bad_events_are_each_named_and_counted() -> None:
    body = orjson.dumps({"events": [event(1), event(2, topic=""), event(3, timestamp="now")]})
    with pytest.raises(ingress.Refused) as refused:
        ingress.parse(body, max_events=10)
    assert refused.value.status == 422
    assert [(p["index"], p["field"]) for p in refused.value.problems] == [
        (1, "topic"),
        (2, "timestamp"),
    ]
    assert refused.value.events == 3


def test_too_many_events() -> None:
    body = orjson.dumps({"events": [event(i) for i in range(4)]})
    with pytest.raises(ingress.Refused) as refused:
        ingress.parse(body, max_events=3)
    assert refused.value.status == 413


_text = st.text(st.characters(codec="utf-8"), max_size=6)
_field = st.one_of(_text, st.integers(-(2**63), 2**63 - 1), st.none())
_stamp = st.sampled_from(
    [
        "2025-12-17T10:30:45.123Z",
        "2025-12-17T10:30:45+07:00",
        "2025-02-31T10:30:45Z",
        "2025-12-17T10:30:45",
        "2025-W51-3T10:00Z",
        "now",
    ]
)
_payload = st.one_of(
    st.dictionaries(
        _text, st.one_of(_text, st.integers(-(2**63), 2**63 - 1), st.booleans()), max_size=3
    ),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2),
    _text,
)
_event = st.fixed_dictionaries(
    {"topic": _field, "event_id": _field, "timestamp": _stamp, "source": _field},
    optional={"payload": _payload, "extra": _text},
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_event, min_size=1, max_size=5), st.booleans())
def test_accepted_exactly_when_every_event_is_valid(items: list[Any], batch: bool) -> None:
    """Whichever path decides, a body is taken iff each event passes validate_row, and the
    entry then holds exactly the rows validate_row makes of them."""
    if not batch:
        items = items[:1]
    body = orjson.dumps({"events": items} if batch else items[0])
    try:
        expected = [events.validate_row(item) for item in items]
    except events.InvalidEvent:
        expected = None
    try:
        entry = ingress.parse(body, max_events=10)
    except ingress.Refused as refused:
        assert expected is None, refused.message
        assert refused.status == 422
        return
    assert expected is not None
    assert entry.count == len(items)
    rows = events.decode_rows(entry.data)
    assert [row[:4] for row in rows] == [row[:4] for row in expected]
    assert [orjson.loads(row[4]) for row in rows] == [orjson.loads(row[4]) for row in expected]
