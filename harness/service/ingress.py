"""What ``POST /publish`` takes: a request body checked and turned into one stream entry.

A body is one event or ``{"events": [...]}``; the request is all or nothing. Its events
become **one** stream entry (a JSON array, as the consumers read it), whatever their
number: one XADD per request, and one identity for the consumers to recognise should
the entry come round again.

The usual body is checked in bulk, in C, by the consumers' own check
(:func:`harness.model.events.decode_rows`' fast path), and its events go into the entry as
sent: nothing is built per event. Anything the bulk check cannot vouch for (an invalid
event, a NUL escape, an odd shape) is decided event by event by
:func:`harness.model.events.validate_row`, which names each bad event's index, field and
reason. Both paths accept the same bodies; the slow one only costs more.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import orjson

from harness.model import events

#: the key of a batch body
_EVENTS = b'"events"'


class Refused(ValueError):
    """The request is refused whole: ``status`` (400, 413 or 422), a message, and for a
    422 over events, each bad event's ``{index, field, reason}``."""

    def __init__(
        self,
        status: int,
        message: str,
        problems: list[dict[str, Any]] | None = None,
        *,
        events: int = 0,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []
        #: events the request carried, when some were refused (0 otherwise)
        self.events = events


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """A request's events as one stream entry: their JSON array, and how many."""

    data: bytes
    count: int


class _Batch(msgspec.Struct, gc=False):
    events: msgspec.Raw


_BATCH = msgspec.json.Decoder(_Batch)


def parse(body: bytes, *, max_events: int) -> Entry:
    """The body as one entry, or :class:`Refused` saying why not."""
    entry = _fast(body)
    if entry is None:
        entry = _slow(body)
    if entry.count > max_events:
        raise Refused(413, f"more than {max_events} events in one request")
    return entry


def _fast(body: bytes) -> Entry | None:
    """The entry when the bulk check vouches for every event; ``None`` otherwise."""
    if _EVENTS not in body:  # one event (the key may also sit in a payload: slow path)
        if events.bulk_row(body) is None:  # also refuses anything but one JSON object
            return None
        return Entry(b"[" + body + b"]", 1)
    try:
        data = bytes(_BATCH.decode(body).events)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    rows = events.bulk_rows(data)
    if not rows:  # refused, undecided, or no events at all: the slow path says which
        return None
    return Entry(data, len(rows))


def _slow(body: bytes) -> Entry:
    """Event by event, naming what is wrong with each bad one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"body is not JSON: {exc}") from None
    if isinstance(value, dict) and "events" in value:
        items = value["events"]
        if not isinstance(items, list):
            raise Refused(422, "'events' must be a list of events")
    elif isinstance(value, dict):
        items = [value]
    else:
        raise Refused(422, 'body must be an event object or {"events": [...]}')
    if not items:
        raise Refused(422, "'events' is empty")
    kept, problems = [], []
    for index, item in enumerate(items):
        try:
            row = events.validate_row(item)
        except events.InvalidEvent as exc:
            problems.append({"index": index, "field": exc.field, "reason": exc.reason})
        else:  # the event's normal form: its five fields, nothing else
            kept.append(
                {
                    **dict(zip(events.FIELDS[:4], row[:4], strict=True)),
                    "payload": item.get("payload", {}),
                }
            )
    if problems:
        raise Refused(
            422,
            f"{len(problems)} of {len(items)} events are invalid; none was queued",
            problems,
            events=len(items),
        )
    return Entry(orjson.dumps(kept), len(kept))
