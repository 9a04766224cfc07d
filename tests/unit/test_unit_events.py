"""The event model's limits and its wire format."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from harness.model.events import (
    MAX_KEY_CHARS,
    MAX_PAYLOAD_BYTES,
    Event,
    InvalidEvent,
    decode_many,
    encode_many,
    validate,
)


def good(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "topic": "order.created",
        "event_id": "evt-0001",
        "timestamp": "2025-12-17T10:30:45.123+00:00",
        "source": "service-1",
        "payload": {"seq": 1, "msg": "hello"},
    }
    event.update(changes)
    return event


def without(field: str) -> dict[str, Any]:
    event = good()
    del event[field]
    return event


def rejected_field(raw: object) -> str:
    with pytest.raises(InvalidEvent) as info:
        validate(raw)
    assert str(info.value).startswith(f"{info.value.field}: ")
    return info.value.field


def test_a_good_event_is_accepted_as_is() -> None:
    raw = good()
    event = validate(raw)
    assert isinstance(event, Event)
    assert event.key == ("order.created", "evt-0001")
    assert event.to_dict() == raw


def test_z_suffix_is_accepted() -> None:
    assert validate(good(timestamp="2025-12-17T10:30:45.123Z")).timestamp.endswith("Z")


def test_keys_of_the_maximum_length_are_accepted() -> None:
    assert MAX_KEY_CHARS == 255
    long = "k" * MAX_KEY_CHARS
    assert validate(good(topic=long, event_id=long)).key == (long, long)


@pytest.mark.parametrize("field", ["topic", "event_id"])
@pytest.mark.parametrize(
    "value",
    [None, "", "k" * (MAX_KEY_CHARS + 1), 42, ["a"], "a\x00b"],
    ids=["none", "empty", "too-long", "int", "list", "nul"],
)
def test_bad_keys_are_rejected_with_their_field(field: str, value: object) -> None:
    assert rejected_field(good(**{field: value})) == field


@pytest.mark.parametrize("field", ["topic", "event_id"])
def test_missing_keys_are_rejected_with_their_field(field: str) -> None:
    assert rejected_field(without(field)) == field


def test_over_long_key_says_how_long() -> None:
    with pytest.raises(InvalidEvent, match=str(MAX_KEY_CHARS + 1)):
        validate(good(topic="t" * (MAX_KEY_CHARS + 1)))


@pytest.mark.parametrize(
    "timestamp",
    ["2025-12-17T10:30:45", "2025-12-17T10:30:45.123", "2025-12-17"],
    ids=["no-zone", "no-zone-millis", "date-only"],
)
def test_timestamp_without_timezone_is_rejected(timestamp: str) -> None:
    with pytest.raises(InvalidEvent, match="time zone") as info:
        validate(good(timestamp=timestamp))
    assert info.value.field == "timestamp"


@pytest.mark.parametrize("timestamp", ["yesterday", "17/12/2025 10:30", "", 1734431445, None])
def test_non_iso_timestamp_is_rejected(timestamp: object) -> None:
    assert rejected_field(good(timestamp=timestamp)) == "timestamp"


def test_missing_timestamp_is_rejected() -> None:
    assert rejected_field(without("timestamp")) == "timestamp"


@pytest.mark.parametrize("payload", [[1, 2], "text", 3, None], ids=["list", "str", "int", "null"])
def test_non_object_payload_is_rejected(payload: object) -> None:
    assert rejected_field(good(payload=payload)) == "payload"


def test_payload_size_limit_is_inclusive() -> None:
    overhead = len(orjson.dumps({"m": ""}))
    at_limit = {"m": "x" * (MAX_PAYLOAD_BYTES - overhead)}
    assert len(orjson.dumps(at_limit)) == MAX_PAYLOAD_BYTES
    validate(good(payload=at_limit))
    over = {"m": "x" * (MAX_PAYLOAD_BYTES - overhead + 1)}
    assert rejected_field(good(payload=over)) == "payload"


@pytest.mark.parametrize(
    "payload",
    [{"m": "a\u0000b"}, {"nested": {"list": ["ok", "\u0000"]}}, {"k\u0000": 1}],
    ids=["value", "nested", "key"],
)
def test_payload_with_nul_is_rejected(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent, match="NUL") as info:
        validate(good(payload=payload))
    assert info.value.field == "payload"


def test_payload_with_literal_backslash_u0000_text_is_accepted() -> None:
    payload = {"path": "C:\\u0000\\file"}  # backslash, 'u', '0', '0', '0', '0': no NUL
    assert "\x00" not in payload["path"]
    validate(good(payload=payload))


def test_payload_that_is_not_json_encodable_is_rejected() -> None:
    assert rejected_field(good(payload={"when": object()})) == "payload"


@pytest.mark.parametrize("raw", [None, [good()], "event", 7])
def test_non_object_event_is_rejected(raw: object) -> None:
    assert rejected_field(raw) == "event"


def test_source_may_be_empty_but_not_too_long() -> None:
    assert validate(good(source="")).source == ""
    assert rejected_field(good(source="s" * 256)) == "source"


def test_missing_payload_means_empty_object() -> None:
    assert validate(without("payload")).to_dict()["payload"] == {}


def test_encode_many_decode_many_round_trip() -> None:
    batch = [good(event_id=f"e{i}", payload={"i": i, "text": "ünïcödé"}) for i in range(5)]
    data = encode_many(batch)
    assert isinstance(data, bytes)
    assert decode_many(data) == batch
    assert decode_many(data.decode()) == batch
    assert [validate(item).to_dict() for item in decode_many(data)] == batch
    assert decode_many(encode_many([])) == []


@pytest.mark.parametrize("data", [b"{}", b'{"topic": "t"}', b"3", b'"text"', b"null"])
def test_decode_many_of_a_non_array_is_invalid(data: bytes) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_many(data)
    assert info.value.field == "entry"


def test_decode_many_of_broken_json_is_a_value_error() -> None:
    # the consumer dead-letters on ValueError, which covers orjson's decode error
    with pytest.raises(ValueError):
        decode_many(b"[{")
