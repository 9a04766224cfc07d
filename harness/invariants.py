"""What must hold after every trial, checked against ground truth and the database itself."""

from __future__ import annotations

import dataclasses

from harness.store import Counters, Verification


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evidence:
    """Everything the checks look at."""

    published: int  # events the publishers sent (ground truth)
    expected_unique: int  # distinct keys among them (ground truth)
    counters: Counters  # what the consumers counted, in PostgreSQL
    stored: Verification  # what is in processed_events
    #: events the consumers got again from the pending list. A redelivery whose first
    #: delivery had committed is rightly counted twice in ``received`` (at-least-once
    #: delivery); that is the only way ``received`` may exceed ``published``.
    redelivered: int = 0

    @property
    def double_applied(self) -> int:
        return self.stored.rows - self.stored.distinct_keys


def check(ev: Evidence) -> list[str]:
    """Broken invariants, each as one readable line; empty when everything holds."""
    c, s = ev.counters, ev.stored
    broken = []
    if ev.redelivered == 0 and c.received != ev.published:
        broken.append(f"received {c.received} != events published {ev.published}")
    elif not ev.published <= c.received <= ev.published + ev.redelivered:
        broken.append(
            f"received {c.received} outside [published {ev.published}, published + "
            f"redelivered {ev.published + ev.redelivered}]"
        )
    if c.unique_processed != ev.expected_unique:
        broken.append(
            f"unique_processed {c.unique_processed} != expected unique {ev.expected_unique}"
        )
    if c.unique_processed != s.rows:
        broken.append(f"unique_processed {c.unique_processed} != rows stored {s.rows}")
    if c.duplicate_dropped != c.received - c.unique_processed:
        broken.append(
            f"duplicate_dropped {c.duplicate_dropped} != received - unique "
            f"{c.received - c.unique_processed}"
        )
    if s.lost:
        broken.append(f"{s.lost} expected events are missing (lost)")
    if s.unexpected:
        broken.append(f"{s.unexpected} stored events were never published")
    if ev.double_applied:
        broken.append(f"{ev.double_applied} events are stored more than once")
    return broken
