"""A batch on its way to PostgreSQL, and what applying it did: the pure part of the store.

A batch is de-duplicated by key and sorted (:func:`prepare_rows`), carries the stream
entries its rows came from (:class:`Entries`, :class:`Runs`), and becomes COPY text or
arrays for one statement. Nothing here talks to a server.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from harness.model.events import Row


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


def inside(ranges: Mapping[int, list[tuple[int, int]]], producer: int, seq: int) -> bool:
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


def copy_text(batch: Prepared) -> str:
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
        return "".join("\t".join(map(copy_escape, row)) + "\n" for row in batch.rows)
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "\r" in text:
        text = text.replace("\r", "\\r")
    return text + "\n"


def copy_escape(value: str) -> str:
    """One value in COPY's text format."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


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
    #: the lost keys ``(topic, event_id)``, when asked for
    missing: tuple[tuple[str, str], ...] = ()
