"""The open-loop schedule: when each event is due, and the rounds a pacer hands out."""

from __future__ import annotations

import bisect
import itertools

import pytest

from harness.model.schedule import NS, TICK_NS, Pacer, Round, Schedule
from tests.data.clock import FakeClock

#: a wall-clock origin of realistic size (ns since the epoch), so no test relies on small ints
T0 = 1_764_000_000 * NS + 123


def brute_due(times: list[int], now_ns: int) -> int:
    return bisect.bisect_right(times, now_ns)


# -- Schedule -------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_a_schedule_needs_a_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        Schedule(start_ns=T0, rate=rate, events=10)


def test_a_schedule_refuses_negative_events() -> None:
    with pytest.raises(ValueError, match="events must be"):
        Schedule(start_ns=T0, rate=1.0, events=-1)


def test_event_k_is_due_at_start_plus_k_over_rate() -> None:
    schedule = Schedule(start_ns=T0, rate=4.0, events=10)
    assert [schedule.intended_ns(k) - T0 for k in range(5)] == [
        0,
        NS // 4,
        NS // 2,
        3 * NS // 4,
        NS,
    ]
    assert schedule.end_ns == T0 + 9 * NS // 4


def test_end_of_an_empty_schedule_is_its_start() -> None:
    assert Schedule(start_ns=T0, rate=3.0, events=0).end_ns == T0
    assert Schedule(start_ns=T0, rate=3.0, events=1).end_ns == T0


@pytest.mark.parametrize("rate", [3, 3.0, 7 / 3, 1 / 3, 0.7, 1e6 / 7, 12_345.678])
def test_due_counts_exactly_the_events_whose_time_has_come(rate: float) -> None:
    schedule = Schedule(start_ns=T0, rate=rate, events=300)
    times = [schedule.intended_ns(k) for k in range(300)]
    assert times == sorted(times) and len(set(times)) == len(times)
    for k, t in enumerate(times):
        # intended_ns(k) <= now counts k: exact at the boundary, one nanosecond matters
        assert schedule.due(t - 1) == k
        assert schedule.due(t) == k + 1
        assert schedule.due(t + 1) == brute_due(times, t + 1)


def test_due_between_boundaries_for_an_awkward_rate() -> None:
    schedule = Schedule(start_ns=T0, rate=7 / 3, events=50)
    times = [schedule.intended_ns(k) for k in range(50)]
    step = NS // 97  # not a divisor of anything in the schedule
    for now in range(T0 - 3 * step, times[-1] + 5 * step, step):
        assert schedule.due(now) == brute_due(times, now)


def test_nothing_is_due_before_the_start_and_never_more_than_all() -> None:
    schedule = Schedule(start_ns=T0, rate=3, events=7)
    assert schedule.due(0) == 0
    assert schedule.due(T0 - 1) == 0
    assert schedule.due(T0) == 1
    assert schedule.due(schedule.end_ns) == 7
    assert schedule.due(schedule.end_ns + 3600 * NS) == 7
    assert Schedule(start_ns=T0, rate=3, events=0).due(T0 + NS) == 0


# -- Pacer: validation ----------------------------------------------------------------


def test_a_pacer_needs_room_for_one_event_a_round() -> None:
    clock = FakeClock(T0)
    with pytest.raises(ValueError, match="max_events"):
        Pacer(Schedule(start_ns=T0, rate=1, events=5), 0, clock_ns=clock, sleep=clock.sleep)


def test_no_events_no_rounds() -> None:
    clock = FakeClock(T0)
    schedule = Schedule(start_ns=T0, rate=10, events=0)
    pacer = Pacer(schedule, 5, clock_ns=clock, sleep=clock.sleep)
    assert list(pacer.rounds()) == []
    assert clock.sleeps == []


# -- Pacer: on a schedule -------------------------------------------------------------


def _paced(
    events: int, max_events: int, rate: float, clock: FakeClock, start_ns: int = T0
) -> tuple[Pacer, Schedule]:
    schedule = Schedule(start_ns=start_ns, rate=rate, events=events)
    return Pacer(schedule, max_events, clock_ns=clock, sleep=clock.sleep), schedule


def test_on_schedule_each_event_goes_out_when_due_never_before() -> None:
    clock = FakeClock(T0 - 5 * NS)  # the schedule starts in five seconds
    pacer, schedule = _paced(20, 4, 7 / 3, clock)
    sent: list[int] = []
    for round_ in pacer.rounds():
        assert clock() >= round_.intended_ns == schedule.intended_ns(round_.first)
        # a punctual pacer wakes exactly when the event is due: nothing is late
        assert clock() == round_.intended_ns and round_.lag_ns == 0
        sent.extend(range(round_.first, round_.first + round_.count))
    assert sent == list(range(20))
    # it slept first until the start, then from each event's time to the next's
    assert clock.sleeps[0] == pytest.approx(5.0)
    assert sum(clock.sleeps) == pytest.approx((schedule.end_ns - (T0 - 5 * NS)) / NS)
    assert clock() == schedule.end_ns


def test_a_slow_send_does_not_push_the_schedule_back() -> None:
    """A send that takes part of the gap shortens the next sleep, not the rate."""
    clock = FakeClock(T0)
    pacer, schedule = _paced(10, 10, 2, clock)  # one event every 500 ms
    for round_ in pacer.rounds():
        assert round_.intended_ns == clock() == schedule.intended_ns(round_.first)
        clock.now_ns += 200 * NS // 1000  # each send takes 200 ms
    assert clock.sleeps == pytest.approx([0.3] * 9)


def test_after_a_stall_overdue_events_go_out_at_once_with_their_own_times() -> None:
    clock = FakeClock(T0)
    pacer, schedule = _paced(40, 6, 10, clock)  # one event every 100 ms
    rounds: list[Round] = []
    stalled_at = None
    for round_ in pacer.rounds():
        rounds.append(round_)
        if round_.first == 3:
            stalled_at = clock()
            clock.now_ns += 2 * NS + 50_000_000  # the process stalls for 2.05 s
    assert stalled_at == T0 + 300_000_000
    # 0.35 s + 2 s later, events 4 … 23 (due by T0 + 2.35 s) are overdue: they go out in
    # rounds of at most 6, without sleeping, each stamped with its first event's time
    resumed = T0 + 2_350_000_000
    after = [r for r in rounds if r.first > 3]
    overdue = [r for r in after if r.first <= 23]
    assert [(r.first, r.count) for r in overdue] == [(4, 6), (10, 6), (16, 6), (22, 2)]
    for r in overdue:
        assert r.intended_ns == schedule.intended_ns(r.first)
    # full rounds go back to back; the last, partial one waits for the next tick
    for r in overdue[:-1]:
        assert r.lag_ns == resumed - r.intended_ns > 0
    assert overdue[-1].lag_ns == resumed + TICK_NS - overdue[-1].intended_ns
    assert overdue[0].lag_ns == 1_950_000_000
    # then back on schedule, punctual again
    assert [(r.first, r.count, r.lag_ns) for r in after[len(overdue) :]] == [
        (k, 1, 0) for k in range(24, 40)
    ]
    sent = [k for r in rounds for k in range(r.first, r.first + r.count)]
    assert sent == list(range(40))


def test_stamps_are_the_due_times_of_each_entrys_first_event() -> None:
    clock = FakeClock(T0)
    pacer, schedule = _paced(30, 9, 3, clock)
    round_ = Round(first=4, count=9, intended_ns=schedule.intended_ns(4), lag_ns=0)
    # entries of 4 events: 4-7, 8-11, 12 (a short last entry)
    assert pacer.stamps(round_, 4) == [schedule.intended_ns(k) for k in (4, 8, 12)]
    assert pacer.stamps(round_, 1) == [schedule.intended_ns(k) for k in range(4, 13)]
    assert pacer.stamps(round_, 50) == [schedule.intended_ns(4)]


def test_at_a_high_rate_rounds_are_a_tick_apart_and_carry_what_fell_due() -> None:
    clock = FakeClock(T0)
    schedule = Schedule(start_ns=T0, rate=20_000.0, events=2_000)  # one every 50 µs
    pacer = Pacer(schedule, 500, clock_ns=clock, sleep=clock.sleep)
    sent_at: list[int] = []
    rounds = []
    for round_ in pacer.rounds():
        sent_at.append(clock())
        rounds.append(round_)
    assert sum(r.count for r in rounds) == 2_000
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert min(gaps) >= TICK_NS  # never more often than once a tick
    # 100 ms of load in ~1 ms rounds: about 20 events each, not one round trip per event
    assert 90 <= len(rounds) <= 110
    # no event waits more than a tick past its due time for its round
    assert max(r.lag_ns for r in rounds) <= TICK_NS
