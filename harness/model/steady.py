"""The steady-state window of an open-loop trial, and the trial's second-by-second series.

A trial's clock starts at its origin, when the publishers' schedules start. The load
runs ``duration_s``; the first ``warmup_s`` are thrown away (connections, caches, the
first batches), and what is measured is the *window*: the whole seconds from
``warmup_s`` to ``duration_s``. After it the publishers stop and the backlog drains; the
invariants are checked over the whole trial, drain included, but the figures below
come from the window alone:

- **committed events/s**: events the consumers committed in the window's seconds;
- **latency** p50 … max of the events *due* in the window, from when each was due (not
  when it was sent) to its commit, so a stall cannot hide (coordinated omission);
- **backlog growth**: how fast published − committed grew across the window;
- **sustained**: the publishers held the rate, the backlog stayed bounded and p99 met
  the trial's ``slo_p99_ms``.

Everything is computed from what the actors counted per second (sends by send time,
commits by commit time, latencies by due time), not from the driver's polls, so it does
not depend on how often the driver looked.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

from harness.model import latency


def second_of(t_ns: int, origin_ns: int) -> int:
    """The whole second since the trial's origin that wall-clock ``t_ns`` falls in (0 for
    anything before it: clocks of different nodes may disagree a little)."""
    return max(0, (t_ns - origin_ns) // 1_000_000_000)


#: the publishers held the rate when they sent at least this share of it in the window
RATE_HELD_SHARE = 0.95
#: the backlog is bounded when it grew by less than this share of the offered rate
BACKLOG_GROWTH_SHARE = 0.05
#: the kinds of reason :func:`measure` gives for a window not sustained, by how its text
#: begins (the figure that follows is the trial's own)
REASON_KINDS = {
    "publishers sent": "rate not held",
    "backlog grew": "backlog grew",
    "p99": "p99 over the objective",
}


@dataclasses.dataclass(frozen=True)
class Window:
    """The measured seconds of a trial: ``first ≤ s < end`` (seconds since the origin)."""

    first: int
    end: int

    @classmethod
    def of(cls, warmup_s: float, duration_s: float) -> Window:
        """The whole seconds inside ``[warmup_s, duration_s)``."""
        first, end = math.ceil(warmup_s), math.floor(duration_s)
        if end <= first:
            raise ValueError(
                f"no whole second between warm-up {warmup_s:g} s and duration {duration_s:g} s"
            )
        return cls(first, end)

    @property
    def seconds(self) -> int:
        return self.end - self.first

    def __contains__(self, second: object) -> bool:
        return isinstance(second, int) and self.first <= second < self.end

    def phase(self, second: int) -> str:
        if second < self.first:
            return "warmup"
        return "window" if second < self.end else "drain"


@dataclasses.dataclass(frozen=True)
class PerSecond:
    """What the actors counted, second by second since the trial's origin, all merged."""

    sent: Mapping[int, int]
    committed: Mapping[int, int]
    #: latency histograms (encoded) by second the events were due in, one list per second
    latencies: Mapping[int, tuple[str, ...]]
    #: the most any publisher was behind its schedule, by second (ms)
    lag_ms: Mapping[int, float]

    @classmethod
    def merge(
        cls, publishers: Iterable[Mapping[str, Any]], consumers: Iterable[Mapping[str, Any]]
    ) -> PerSecond:
        """From the actors' reports: ``sent_by_second``/``lag_by_second`` of publishers,
        ``committed_by_second``/``latencies`` of consumers (keys may be strings)."""
        sent: collections.Counter[int] = collections.Counter()
        lag: dict[int, float] = {}
        for report in publishers:
            for s, n in report.get("sent_by_second", {}).items():
                sent[int(s)] += int(n)
            for s, ms in report.get("lag_by_second", {}).items():
                lag[int(s)] = max(lag.get(int(s), 0.0), float(ms))
        committed: collections.Counter[int] = collections.Counter()
        hists: dict[int, list[str]] = collections.defaultdict(list)
        for report in consumers:
            for s, n in report.get("committed_by_second", {}).items():
                committed[int(s)] += int(n)
            for s, encoded in report.get("latencies", {}).items():
                hists[int(s)].append(encoded)
        return cls(sent, committed, {s: tuple(h) for s, h in hists.items()}, lag)

    @property
    def last(self) -> int:
        """The last second anything happened in."""
        return max([*self.sent, *self.committed, *self.latencies, -1])

    def backlog_at(self, second: int) -> int:
        """Published − committed at the start of ``second``."""
        sent = sum(n for s, n in self.sent.items() if s < second)
        return sent - sum(n for s, n in self.committed.items() if s < second)

    @functools.cached_property
    def _by_second(self) -> dict[int, Any]:
        """Each second's histograms decoded and merged, once: the window, the whole trial
        and the series all read them."""
        return {
            s: latency.merge(encoded, latency.PER_SECOND_DIGITS)
            for s, encoded in self.latencies.items()
        }

    def histogram(self, seconds: Iterable[int]) -> Any:
        """The latencies of the events due in these seconds, in one histogram."""
        total = latency.new(latency.PER_SECOND_DIGITS)
        for s in seconds:
            if s in self._by_second:
                total.add(self._by_second[s])
        return total

    def series(self, window: Window | None) -> list[dict[str, Any]]:
        """A row per second: cumulative published and committed, backlog, that second's
        p99 latency (of the events due in it) and its phase."""
        rows, published, committed = [], 0, 0
        for second in range(self.last + 1):
            published += self.sent.get(second, 0)
            committed += self.committed.get(second, 0)
            hist = self._by_second.get(second)
            rows.append(
                {
                    "second": second,
                    "elapsed_s": float(second + 1),
                    "published": published,
                    "committed": committed,
                    "backlog": max(0, published - committed),
                    "latency_p99_ms": math.nan
                    if hist is None
                    else latency.percentile_ms(hist, 99.0),
                    "phase": window.phase(second) if window else "burst",
                }
            )
        return rows


@dataclasses.dataclass(frozen=True, kw_only=True)
class SteadyState:
    """The window's figures (NaN for a burst, which has no window)."""

    window_s: float = math.nan
    offered_eps: float = math.nan
    achieved_publish_eps: float = math.nan
    steady_eps: float = math.nan
    steady_p50_ms: float = math.nan
    steady_p95_ms: float = math.nan
    steady_p99_ms: float = math.nan
    steady_p999_ms: float = math.nan
    steady_max_ms: float = math.nan
    backlog_growth_eps: float = math.nan
    publish_lag_max_ms: float = math.nan
    rate_held: bool | None = None
    sustained: bool | None = None
    #: why the window was not sustained, one clause each; empty when it was
    not_sustained: tuple[str, ...] = ()

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float):
                value = round(value, 3)
            elif field.name == "not_sustained":
                value = "; ".join(value)
            elif value is None:
                value = ""
            out[field.name] = value
        return out


def measure(
    data: PerSecond, window: Window, *, offered_eps: float, slo_p99_ms: float
) -> SteadyState:
    """The window's figures and verdicts."""
    seconds = range(window.first, window.end)
    n = window.seconds
    published = sum(data.sent.get(s, 0) for s in seconds) / n
    committed = sum(data.committed.get(s, 0) for s in seconds) / n
    hist = data.histogram(seconds)
    summary = latency.summary_ms(hist, "steady", ("p50", "p95", "p99", "p999"))
    growth = (data.backlog_at(window.end) - data.backlog_at(window.first)) / n
    lag = max((data.lag_ms.get(s, 0.0) for s in seconds), default=0.0)
    held = published >= RATE_HELD_SHARE * offered_eps
    why = []
    if not held:
        why.append(f"publishers sent {published:,.0f} of {offered_eps:,.0f} events/s")
    if growth > BACKLOG_GROWTH_SHARE * offered_eps:
        why.append(f"backlog grew {growth:,.0f} events/s")
    p99 = summary["steady_p99_ms"]
    if not p99 <= slo_p99_ms:  # NaN (nothing committed) is not within the SLO either
        why.append(f"p99 {p99:,.1f} ms over the {slo_p99_ms:g} ms objective")
    return SteadyState(
        window_s=float(n),
        offered_eps=offered_eps,
        achieved_publish_eps=published,
        steady_eps=committed,
        backlog_growth_eps=growth,
        publish_lag_max_ms=lag,
        rate_held=held,
        sustained=not why,
        not_sustained=tuple(why),
        **summary,
    )


def reason_kind(reason: str) -> str:
    """The kind of one of :func:`measure`'s reasons (:data:`REASON_KINDS`); an unknown
    text is its own kind."""
    return next((kind for start, kind in REASON_KINDS.items() if reason.startswith(start)), reason)
