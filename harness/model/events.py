"""The log event, its limits and its wire format.

An event is ``{topic, event_id, timestamp, source, payload}`` as in the seed report.
Its identity is ``(topic, event_id)``: two deliveries with the same key are the same
event, whatever else they carry, and the store keeps the first one it commits.

Limits (checked by :func:`validate`, documented in docs/design.md):

- ``topic``, ``event_id``: non-empty strings of at most 255 characters, no NUL;
- ``source``: a string of at most 255 characters, no NUL (may be empty);
- ``timestamp``: ISO 8601 with a time zone (``2025-12-17T10:30:45.123Z``);
- ``payload``: a JSON object whose compact encoding is at most 64 KiB and holds no NUL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, cast

import msgspec
import numpy as np
import orjson

MAX_KEY_CHARS = 255
MAX_SOURCE_CHARS = 255
MAX_PAYLOAD_BYTES = 64 * 1024

FIELDS = ("topic", "event_id", "timestamp", "source", "payload")


class InvalidEvent(ValueError):
    """The event breaks the model's rules."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One validated log event."""

    topic: str
    event_id: str
    timestamp: str
    source: str
    payload: Mapping[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.topic, self.event_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "event_id": self.event_id,
            "timestamp": self.timestamp,
            "source": self.source,
            "payload": dict(self.payload),
        }


def _check_text(raw: Mapping[str, Any], field: str, limit: int, *, allow_empty: bool) -> str:
    value = raw.get(field)
    if not isinstance(value, str):
        raise InvalidEvent(field, "missing" if value is None else "must be a string")
    if not value and not allow_empty:
        raise InvalidEvent(field, "must not be empty")
    if len(value) > limit:
        raise InvalidEvent(field, f"longer than {limit} characters ({len(value)})")
    if "\x00" in value:
        raise InvalidEvent(field, "contains a NUL character")
    return value


# The calendar-date form both Python and PostgreSQL read the same way; Python alone also
# takes week dates and ordinal dates, which PostgreSQL would refuse at insert time.
_TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}(:?\d{2})?)$"
)
#: PostgreSQL accepts UTC offsets up to 15:59.
_MAX_OFFSET = dt.timedelta(hours=16)


def parse_timestamp(value: object) -> dt.datetime:
    """An aware datetime from an ISO 8601 string, or :class:`InvalidEvent`."""
    if not isinstance(value, str):
        raise InvalidEvent("timestamp", "missing" if value is None else "must be a string")
    if not _TIMESTAMP.match(value):
        if _TIMESTAMP.match(value + "Z"):
            raise InvalidEvent("timestamp", "has no time zone (add Z or +00:00)")
        raise InvalidEvent(
            "timestamp",
            "not an ISO 8601 date, time and time zone "
            f"(YYYY-MM-DDTHH:MM:SS[.fff]Z or ±HH:MM): {value[:40]!r}",
        )
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidEvent("timestamp", f"not a valid date and time: {exc}") from None
    offset = parsed.utcoffset()
    if offset is None:
        raise InvalidEvent("timestamp", "has no time zone (add Z or +00:00)")
    if abs(offset) >= _MAX_OFFSET:
        raise InvalidEvent("timestamp", "time zone offset must be under 16 hours")
    return parsed


#: An event as the store takes it: topic, event_id, timestamp, source, payload as JSON.
Row = tuple[str, str, str, str, str]

# orjson writes NUL as \u0000; an even run of backslashes before it means an escape of
# its own, while a literal backslash followed by "u0000" is written \\u0000.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def validate_row(raw: object) -> Row:
    """The event as a :data:`Row`, or :class:`InvalidEvent` naming the field.

    The consumers' path: no objects built, and the payload encoded once, here.
    """
    if not isinstance(raw, Mapping):
        raise InvalidEvent("event", "must be a JSON object")
    topic = _check_text(raw, "topic", MAX_KEY_CHARS, allow_empty=False)
    event_id = _check_text(raw, "event_id", MAX_KEY_CHARS, allow_empty=False)
    source = _check_text(raw, "source", MAX_SOURCE_CHARS, allow_empty=True)
    timestamp = raw.get("timestamp")
    parse_timestamp(timestamp)
    payload = raw.get("payload", {})
    if not isinstance(payload, Mapping):
        raise InvalidEvent("payload", "must be a JSON object")
    try:
        encoded = orjson.dumps(payload)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidEvent("payload", f"not encodable as JSON: {exc}") from None
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise InvalidEvent("payload", f"larger than {MAX_PAYLOAD_BYTES} bytes ({len(encoded)})")
    if b"\\u0000" in encoded and _NUL_ESCAPE.search(encoded):
        raise InvalidEvent("payload", "contains a NUL character")
    return (topic, event_id, str(timestamp), source, encoded.decode())


def validate(raw: object) -> Event:
    """An :class:`Event` from a decoded JSON value, or :class:`InvalidEvent` naming the field."""
    topic, event_id, timestamp, source, _ = validate_row(raw)
    payload = cast(Mapping[str, Any], raw).get("payload", {})
    return Event(topic, event_id, timestamp, source, payload)


def encode_many(events: Iterable[Mapping[str, Any]]) -> bytes:
    """The wire form of several events: one compact JSON array."""
    return orjson.dumps(list(events))


def encode_rows(rows: Iterable[Row]) -> bytes:
    """Rows back in the wire form: one JSON array of events."""
    return orjson.dumps(
        [
            {"topic": t, "event_id": e, "timestamp": ts, "source": src, "payload": orjson.loads(p)}
            for t, e, ts, src, p in rows
        ]
    )


class _WireEvent(msgspec.Struct, gc=False):
    """An event as a stream entry carries it, decoded and length-checked in C."""

    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_CHARS)]
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_CHARS)]
    timestamp: str
    source: Annotated[str, msgspec.Meta(max_length=MAX_SOURCE_CHARS)]
    payload: msgspec.Raw = msgspec.Raw(b"{}")


_ENTRY = msgspec.json.Decoder(list[_WireEvent])
_ONE = msgspec.json.Decoder(_WireEvent)

# A stricter form of _TIMESTAMP (month, day, hour, minute, second and offset in range;
# no year 0000 and no lowercase "z", which Python's fromisoformat refuses), matched
# against all of an entry's timestamps at once, one per line. Only days 29–31 then need
# the calendar.
_STRICT_TIMESTAMP = (
    r"(?!0000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[T ](?:[01]\d|2[0-3]):[0-5]\d"
    r"(?::[0-5]\d(?:\.\d{1,9})?)?(?:Z|[+-](?:0\d|1[0-5])(?::?[0-5]\d)?)"
)
_STRICT_TIMESTAMPS = re.compile(rf"{_STRICT_TIMESTAMP}(?:\n{_STRICT_TIMESTAMP})*")
_STRICT_ONE = re.compile(_STRICT_TIMESTAMP)
#: From this many timestamps on, :func:`strict_timestamps` checks them as one numpy array.
VECTOR_FROM = 32


def strict_timestamps(stamps: list[str], lines: str) -> bool:
    """Whether every timestamp matches the strict pattern; ``lines`` is them joined by
    newlines.

    Many at once (an entry of a thousand events, say) are checked as one array: when
    all have the shape of the first (its length, its non-digit characters in the same
    places) each is that same match of the pattern as the first, provided its digits
    are digits and its two-digit fields are in range, which numpy checks for all of them
    together. Anything else goes to the regular expression.
    """
    if lines.count("\n") != len(stamps) - 1:
        return False  # a newline inside a timestamp
    if len(stamps) >= VECTOR_FROM and lines.isascii():
        verdict = _same_shape_in_range(stamps[0], lines.encode("ascii"), len(stamps))
        if verdict is not None:
            return verdict
    return _STRICT_TIMESTAMPS.fullmatch(lines) is not None


def _same_shape_in_range(first: str, data: bytes, n: int) -> bool | None:
    """The vector check of :func:`strict_timestamps`; ``None`` when the timestamps do not
    all have the first one's shape (the regular expression decides then)."""
    if _STRICT_ONE.fullmatch(first) is None:
        return False
    width = len(first)
    if len(data) + 1 != n * (width + 1):
        return None
    grid = np.frombuffer(data + b"\n", dtype=np.uint8).reshape(n, width + 1)[:, :width]
    template = grid[0]
    digit = (template >= 48) & (template <= 57)
    if not (grid[:, ~digit] == template[~digit]).all():
        return None
    if ((grid[:, digit] - 48) > 9).any():  # uint8: below "0" wraps round to above 9
        return None
    if not (grid[:, :4] != 48).any(axis=1).all():
        return False  # year 0000, which Python refuses
    fields = [(5, 1, 12), (8, 1, 31), (11, 0, 23), (14, 0, 59)]  # month, day, hour, minute
    if width > 16 and first[16] == ":":
        fields.append((17, 0, 59))  # seconds
    sign = max(first.rfind("+"), first.rfind("-", 10))
    if sign > 0:  # an offset: hours, and minutes after an optional colon
        fields.append((sign + 1, 0, 15))
        if width > sign + 3:
            fields.append((width - 2, 0, 59))
    starts, lows, highs = (np.array(column) for column in zip(*fields, strict=True))
    values = (grid[:, starts] - 48).astype(np.int16) * 10 + (grid[:, starts + 1] - 48)
    return bool((values >= lows).all() and (values <= highs).all())


#: Days some months lack; only timestamps with one need a look at the calendar.
_LATE_DAY = re.compile(r"-(?:29|3[01])[T ]")


def decode_rows(data: bytes) -> list[Row]:
    """A stream entry's events as validated :data:`Row` s, or :class:`InvalidEvent`.

    The consumers' hot path. An entry every event of which is plainly valid is decoded
    and checked in bulk (msgspec, one regular expression for all its timestamps), and
    its payloads are stored as sent. Anything else (an error, or merely something the
    bulk checks cannot vouch for) goes through :func:`validate_row` event by event,
    which decides, and names the field at fault.
    """
    rows = bulk_rows(data)
    if rows is None:
        rows = [validate_row(item) for item in decode_many(data)]
    return rows


def bulk_rows(data: bytes) -> list[Row] | None:
    """The rows of an entry (a JSON array of events), when every check passes in bulk;
    ``None`` to let :func:`validate_row` decide.

    Accepts nothing :func:`validate_row` refuses, except payloads it cannot re-encode
    (numbers beyond a double), which PostgreSQL's ``jsonb`` stores exactly as sent.
    """
    try:
        return _checked(_ENTRY.decode(data), data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def bulk_row(data: bytes) -> Row | None:
    """:func:`bulk_rows` for one event (a JSON object, on its own)."""
    try:
        rows = _checked([_ONE.decode(data)], data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return rows[0] if rows else None


def _checked(wire: list[_WireEvent], data: bytes) -> list[Row] | None:
    """The rows of decoded events (``data``: their JSON), or ``None`` when a check needs
    :func:`validate_row`."""
    # A NUL can only arrive escaped: JSON has no raw control characters, and msgspec
    # refuses them. No backslash at all (the usual case) rules out every escape.
    if b"\\" in data and b"\\u0000" in data:
        return None  # perhaps a NUL somewhere: the slow path finds out
    try:
        stamps = [w.timestamp for w in wire]
        lines = "\n".join(stamps)
        if stamps and not strict_timestamps(stamps, lines):
            return None
        if _LATE_DAY.search(lines):  # the pattern took day 31 for every month
            for stamp in stamps:
                dt.datetime.fromisoformat(stamp)  # a real date (no 31 April)
        payloads = [str(w.payload, "utf-8") for w in wire]
        # in C for the whole entry; a payload perhaps too long (4 bytes a character at
        # most) or not an object is then looked at on its own
        suspect = payloads and (
            max(map(len, payloads)) * 4 > MAX_PAYLOAD_BYTES
            or not all(map(str.startswith, payloads, itertools.repeat("{")))
        )
        if suspect and any(p[:1] != "{" or len(p.encode()) > MAX_PAYLOAD_BYTES for p in payloads):
            return None
        return [
            (w.topic, w.event_id, w.timestamp, w.source, p)
            for w, p in zip(wire, payloads, strict=True)
        ]
    except ValueError:
        return None  # a date that does not exist, a payload not UTF-8


def decode_many(data: bytes | str) -> list[Any]:
    """The decoded JSON array of a stream entry (items still to be validated)."""
    value = orjson.loads(data)
    if not isinstance(value, list):
        raise InvalidEvent("entry", "must be a JSON array of events")
    return value
