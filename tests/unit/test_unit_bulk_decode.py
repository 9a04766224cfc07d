"""The consumers' bulk decoding of stream entries agrees with the event-by-event rules."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.model import events
from harness.model.events import InvalidEvent, decode_rows, validate_row
from harness.model.generator import Generator, Workload


def event(**overrides: Any) -> dict[str, Any]:
    base = {
        "topic": "orders",
        "event_id": "e-1",
        "timestamp": "2025-12-17T10:30:45.123Z",
        "source": "svc",
        "payload": {"k": 1, "s": 'a\tb\\c"d'},
    }
    return {**base, **overrides}


def slow(data: bytes) -> list[events.Row]:
    return [validate_row(item) for item in events.decode_many(data)]


def same_rows(fast: list[events.Row], reference: list[events.Row]) -> None:
    """Equal, except that the fast path keeps each payload as sent (same JSON value)."""
    assert [r[:4] for r in fast] == [r[:4] for r in reference]
    assert [orjson.loads(r[4]) for r in fast] == [orjson.loads(r[4]) for r in reference]


def test_generated_entries_take_the_bulk_path_and_match() -> None:
    gen = Generator(Workload(events=5000, duplicate_rate=0.3, topics=7, seed=3))
    ords = gen.ordinals()
    for i in range(0, len(ords), 250):
        entry = gen.encoded_entry(ords[i : i + 250])
        bulk = events.bulk_rows(entry)
        assert bulk is not None
        assert bulk == slow(entry)  # the generator writes compact JSON: byte-identical


@pytest.mark.parametrize(
    "item",
    [
        event(),
        event(source=""),
        event(timestamp="2025-12-17 10:30+05:30"),
        event(timestamp="2024-02-29T23:59:59.999999999-15:59"),
        event(topic="é" * 255, event_id="ü" * 255),
        {k: v for k, v in event().items() if k != "payload"},
        {**event(), "extra": [1, 2]},
    ],
)
def test_valid_events_take_the_bulk_path(item: dict[str, Any]) -> None:
    data = orjson.dumps([item, item])
    bulk = events.bulk_rows(data)
    assert bulk is not None
    same_rows(bulk, slow(data))


@pytest.mark.parametrize(
    "item",
    [
        event(topic=""),
        event(event_id="x" * 256),
        event(source="s" * 256),
        event(topic=None),
        event(source=None),
        event(event_id="a\x00b"),
        event(payload={"msg": "a\x00b"}),
        event(payload=[1]),
        event(payload=None),
        event(payload="{}"),
        event(timestamp="2025-12-17T10:30:45"),  # no time zone
        event(timestamp="2025-02-30T10:30:45Z"),  # no such day
        event(timestamp="2025-13-01T10:30:45Z"),
        event(timestamp="2025-12-17T24:00:00Z"),
        event(timestamp="2025-12-17T10:30:45+16:00"),  # PostgreSQL refuses
        event(timestamp="2025-W51-3T10:30:45Z"),  # Python takes it, PostgreSQL does not
        event(timestamp="20251217T103045Z"),
        event(timestamp="2025-12-17T10:30:45Z\n2025-12-17T10:30:45Z"),
        event(timestamp=1_700_000_000),
        event(payload={"big": "x" * (events.MAX_PAYLOAD_BYTES + 1)}),
    ],
)
def test_what_the_rules_refuse_is_left_to_them_and_refused(item: dict[str, Any]) -> None:
    data = orjson.dumps([event(), item])
    assert events.bulk_rows(data) is None
    with pytest.raises(InvalidEvent) as bulk_error:
        decode_rows(data)
    with pytest.raises(InvalidEvent) as reference:
        slow(data)
    assert str(bulk_error.value) == str(reference.value)


@pytest.mark.parametrize(
    "data",
    [
        b'{"topic": "t"}',  # not an array
        b"[1, 2]",
        b"not json",
        b"[" + orjson.dumps(event()) + b",",
        b'[{"topic":"t","event_id":"e","timestamp":"2025-12-17T10:00:00Z","source":"s",'
        b'"payload":{"x":"\xff"}}]',  # not UTF-8
    ],
)
def test_malformed_entries_are_refused(data: bytes) -> None:
    with pytest.raises((InvalidEvent, ValueError)):
        decode_rows(data)


def test_a_literal_backslash_u0000_is_no_nul_and_is_kept() -> None:
    # "\\u0000" in JSON is a backslash followed by "u0000": no NUL. The bulk path steps
    # aside (it cannot tell cheaply); the event-by-event rules accept it.
    data = orjson.dumps([event(payload={"m": "\\u0000"})])
    assert events.bulk_rows(data) is None
    (row,) = decode_rows(data)
    assert orjson.loads(row[4]) == {"m": "\\u0000"}


def test_pretty_printed_payloads_are_stored_as_sent() -> None:
    item = orjson.dumps(event()).replace(b'"payload":{', b'"payload":  {\n  ')
    (row,) = decode_rows(b"[" + item + b"]")
    assert row[4].startswith("{\n  ")
    assert orjson.loads(row[4]) == event()["payload"]


def test_an_empty_entry_has_no_rows() -> None:
    assert decode_rows(b"[]") == []


text = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
    st.text(alphabet="ab", min_size=254, max_size=257),  # around the 255 limit
)
numbers = st.integers(-(2**63), 2**64 - 1)
stamps = st.one_of(
    st.sampled_from(
        [
            "2025-12-17T10:30:45Z",
            "2025-12-17T10:30:45.1+01:00",
            "2025-12-17 10:30z",
            "2025-02-29T10:30:45Z",
            "2024-02-29T10:30:45-0530",
            "2025-12-17T10:30:45",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00+15:00",
        ]
    ),
    st.text(alphabet="0123456789-:TZ+. z", max_size=30),
)
payloads = st.one_of(
    st.dictionaries(st.text(max_size=5), st.one_of(numbers, text, st.none()), max_size=3),
    st.lists(numbers, max_size=2),
    st.none(),
    text,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"topic": text, "event_id": text, "timestamp": stamps, "source": text},
            optional={"payload": payloads},
        ),
        max_size=4,
    )
)
def test_bulk_decoding_never_accepts_what_the_rules_refuse(items: list[dict[str, Any]]) -> None:
    data = orjson.dumps(items)
    try:
        reference = slow(data)
    except InvalidEvent:
        assert events.bulk_rows(data) is None
        return
    bulk = events.bulk_rows(data)
    if bulk is not None:
        same_rows(bulk, reference)
    same_rows(decode_rows(data), reference)


# -- many timestamps at once: the numpy check agrees with the regular expression ------

SHAPES = [
    "dddd-dd-ddTdd:dd:dd.dddZ",
    "dddd-dd-dd dd:ddZ",
    "dddd-dd-ddTdd:dd:dd+dd:dd",
    "dddd-dd-ddTdd:dd-dddd",
    "dddd-dd-ddTdd:dd:dd.d+dd",
    "dddd-dd-ddTdd:dd:dd.dddddddddZ",
]


def _filled(shape: str, values: list[int]) -> str:
    """The shape with its two-digit fields (month, day, hour, minute, seconds, offset)
    and other digits taken from ``values`` in turn."""
    digits = iter("".join(f"{v:02d}" for v in values) + "7" * 40)
    return "".join(next(digits) if c == "d" else c for c in shape)


@st.composite
def stamp_lists(draw: st.DrawFn) -> list[str]:
    """Timestamps of one shape, now and then one with a digit changed, one of another
    shape or plain noise: what an entry of many events carries."""
    shape = draw(st.sampled_from(SHAPES))
    n = draw(st.integers(events.VECTOR_FROM, events.VECTOR_FROM + 8))
    out = []
    for _ in range(n):
        # year, month, day, hour, minute, second, fraction…, offset, in range
        values = [draw(st.sampled_from([0, 20])), draw(st.sampled_from([0, 1, 25]))] + [
            draw(st.integers(low, high))
            for low, high in ((1, 12), (1, 28), (0, 23), (0, 59), (0, 59), (0, 15), (0, 59))
        ]
        stamp = _filled(shape, values)
        kind = draw(st.integers(0, 4 * n))
        if kind == 0:
            stamp = draw(st.text(alphabet="0123456789-:TZ+. z", max_size=30))
        elif kind == 1:
            stamp = _filled(draw(st.sampled_from(SHAPES)), values)
        elif kind == 2:
            at = draw(st.integers(0, len(stamp) - 1))
            stamp = stamp[:at] + draw(st.sampled_from("0123456789:")) + stamp[at + 1 :]
        out.append(stamp)
    return out


@settings(max_examples=300, deadline=None)
@given(stamp_lists())
def test_many_timestamps_are_checked_as_the_pattern_checks_each(stamps: list[str]) -> None:
    lines = "\n".join(stamps)
    expected = all(events._STRICT_ONE.fullmatch(s) for s in stamps)
    assert events.strict_timestamps(stamps, lines) == expected


def test_an_entry_of_many_valid_timestamps_passes_and_one_bad_month_fails_it() -> None:
    stamps = [f"2025-12-17T10:{i % 60:02d}:00.000Z" for i in range(100)]
    assert events.strict_timestamps(stamps, "\n".join(stamps))
    stamps[57] = "2025-13-17T10:00:00.000Z"
    assert not events.strict_timestamps(stamps, "\n".join(stamps))


def test_year_zero_is_refused_in_bulk_as_by_the_rules() -> None:
    stamps = ["2025-12-17T10:00:00Z"] * 40 + ["0000-01-01T00:00:00Z"]
    assert not events.strict_timestamps(stamps, "\n".join(stamps))
    entry = orjson.dumps([event() | {"timestamp": "0000-01-01T00:00:00Z"}])
    assert events.bulk_rows(entry) is None
    with pytest.raises(InvalidEvent, match="timestamp"):
        decode_rows(entry)
