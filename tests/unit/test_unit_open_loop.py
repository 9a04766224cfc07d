"""Open-loop load: a publisher on its schedule, the rate shared between publishers, and the
trial and experiment parameters that set it up."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from harness.delivery.protocol import NotReplicated, Producer
from harness.model.generator import Generator, Workload
from harness.model.schedule import NS, Schedule
from harness.pipeline.publisher import Publisher, PublishPlan
from harness.trials import experiment
from harness.trials.experiment import Experiment, ExperimentError, TrialParams
from tests.data.clock import FakeClock

T0 = 1_764_000_000 * NS


class RecordingBroker:
    """Keeps each ``publish`` call: when it came, its entries and their stamps. Each call
    takes ``cost_ns`` on the fake clock, and a call listed in ``stalls`` that long (ns)
    more: Redis stalled."""

    def __init__(
        self, clock: FakeClock, stalls: dict[int, int] | None = None, cost_ns: int = 0
    ) -> None:
        self.clock = clock
        self.stalls = stalls or {}
        self.cost_ns = cost_ns
        self.calls: list[tuple[int, list[tuple[bytes, int]], list[int]]] = []
        self.producer = Producer(1)
        #: the identities of each call's entries
        self.ids: list[list[tuple[int, int]]] = []

    def publish(
        self,
        entries: Sequence[tuple[bytes, int]],
        *,
        created_ns: int | Sequence[int] | None = None,
        ids: Sequence[tuple[int, int]] | None = None,
        replicas: int = 0,
    ) -> int:
        assert isinstance(created_ns, list) and len(created_ns) == len(entries)
        assert ids is not None and len(ids) == len(entries)
        self.ids.append(list(ids))
        self.calls.append((self.clock(), list(entries), list(created_ns)))
        self.clock.now_ns += self.cost_ns + self.stalls.get(len(self.calls) - 1, 0)
        return len(entries)

    def seqs(self) -> list[int]:
        """The fresh ordinal (``payload.seq``) of every event sent, in send order."""
        return [
            event["payload"]["seq"]
            for _, entries, _ in self.calls
            for payload, _ in entries
            for event in orjson.loads(payload)
        ]


WORKLOAD = Workload(events=120, duplicate_rate=0.3, topics=4, seed=5)


def run(
    plan: PublishPlan,
    clock: FakeClock,
    broker: RecordingBroker,
    stop: threading.Event | None = None,
) -> Any:
    return Publisher(broker, clock_ns=clock, sleep=clock.sleep).run(plan, stop)  # type: ignore[arg-type]


def entry_firsts(broker: RecordingBroker) -> list[int]:
    """The slice index of each entry's first event, from the counts of the entries sent."""
    firsts, k = [], 0
    for _, entries, _ in broker.calls:
        for _, count in entries:
            firsts.append(k)
            k += count
    return firsts


# -- a publisher on its schedule ------------------------------------------------------


def test_open_loop_sends_every_event_once_in_order_each_stamped_when_due() -> None:
    clock = FakeClock(T0)
    broker = RecordingBroker(clock)
    origin = T0 + NS // 2  # the trial's origin, half a second from now
    plan = PublishPlan(
        workload=WORKLOAD,
        start=30,
        stop=100,
        entry_size=3,
        pipeline=4,
        rate=70 / 3,
        origin_ns=origin,
    )
    stats = run(plan, clock, broker)
    schedule = Schedule(origin, plan.rate, plan.events)

    assert broker.seqs() == Generator(WORKLOAD).ordinals(30, 100).tolist()
    stamps = [s for _, _, call_stamps in broker.calls for s in call_stamps]
    assert stamps == [schedule.intended_ns(k) for k in entry_firsts(broker)]
    for sent_at, _, call_stamps in broker.calls:
        assert sent_at >= call_stamps[0]  # never before its first event is due
    assert stats.events == 70 and stats.entries == len(stamps)
    assert stats.first_publish_ns == origin
    # punctual: never behind its schedule
    assert set(stats.lag_by_second.values()) == {0.0}
    assert sum(stats.sent_by_second.values()) == 70
    assert clock() == schedule.end_ns


def test_sends_slower_than_the_rate_batch_what_fell_due_into_entries() -> None:
    """Each send takes 100 ms while an event falls due every 30 ms: the publisher sends
    what is due each time, in entries of up to 3, each stamped when its first was due."""
    clock = FakeClock(T0)
    broker = RecordingBroker(clock, cost_ns=100_000_000)
    plan = PublishPlan(
        workload=WORKLOAD, start=0, stop=120, entry_size=3, pipeline=2, rate=100 / 3, origin_ns=T0
    )
    stats = run(plan, clock, broker)
    schedule = Schedule(T0, plan.rate, plan.events)

    assert broker.seqs() == Generator(WORKLOAD).ordinals(0, 120).tolist()
    firsts = entry_firsts(broker)
    stamps = [s for _, _, call_stamps in broker.calls for s in call_stamps]
    assert stamps == [schedule.intended_ns(k) for k in firsts]
    sizes = [n for _, entries, _ in broker.calls for _, n in entries]
    assert max(sizes) == 3 and all(len(e) <= 2 for _, e, _ in broker.calls)
    k = 0
    for sent_at, entries, _ in broker.calls:
        # a round holds only events already due, and all that were due, up to 6
        count = sum(n for _, n in entries)
        assert schedule.intended_ns(k + count - 1) <= sent_at
        assert count == 6 or k + count == 120 or schedule.intended_ns(k + count) > sent_at
        k += count
    # sends at 100 ms for 3.33 events every 100 ms: it keeps up, a round behind at most
    assert 0 < max(stats.lag_by_second.values()) <= 100.0
    assert sum(stats.sent_by_second.values()) == 120


def test_open_loop_sends_are_counted_by_second_since_the_origin() -> None:
    clock = FakeClock(T0)
    broker = RecordingBroker(clock)
    plan = PublishPlan(workload=WORKLOAD, start=0, stop=40, rate=10.0, origin_ns=T0)
    stats = run(plan, clock, broker)
    assert dict(stats.sent_by_second) == {0: 10, 1: 10, 2: 10, 3: 10}
    assert [t - T0 for t, _, _ in broker.calls] == [k * NS // 10 for k in range(40)]


def test_without_an_origin_the_schedule_starts_at_the_first_send() -> None:
    clock = FakeClock(T0 + 777)
    broker = RecordingBroker(clock)
    plan = PublishPlan(workload=WORKLOAD, start=0, stop=5, rate=2.0)
    stats = run(plan, clock, broker)
    assert [stamps for _, _, stamps in broker.calls] == [[T0 + 777 + k * NS // 2] for k in range(5)]
    assert dict(stats.sent_by_second) == {0: 2, 1: 2, 2: 1}


def test_after_a_stall_overdue_events_go_out_at_once_with_their_due_times() -> None:
    clock = FakeClock(T0)
    # the 6th send (event 5, due at 0.5 s) hangs for 3 s: events 6 … 35 fall due meanwhile
    broker = RecordingBroker(clock, stalls={5: 3 * NS})
    plan = PublishPlan(
        workload=WORKLOAD, start=0, stop=60, entry_size=2, pipeline=5, rate=10.0, origin_ns=T0
    )
    stats = run(plan, clock, broker)
    schedule = Schedule(T0, 10.0, 60)

    assert broker.seqs() == Generator(WORKLOAD).ordinals(0, 60).tolist()
    stamps = [s for _, _, call_stamps in broker.calls for s in call_stamps]
    assert stamps == [schedule.intended_ns(k) for k in entry_firsts(broker)]
    resumed = T0 + 3_500_000_000
    overdue = [(t, e, s) for t, e, s in broker.calls if t == resumed]
    # 30 overdue events (6 … 35), in rounds of at most 5 entries of 2, sent without a pause
    assert [sum(n for _, n in entries) for _, entries, _ in overdue] == [10, 10, 10]
    assert [s[0] for _, _, s in overdue] == [schedule.intended_ns(k) for k in (6, 16, 26)]
    # then on schedule again
    after = [t for t, _, _ in broker.calls if t > resumed]
    assert after == [schedule.intended_ns(k) for k in range(36, 60)]
    # the lag is reported in the second the overdue rounds went out: 3.5 s − 0.6 s
    assert stats.lag_by_second[3] == pytest.approx(2900.0)
    assert max(stats.lag_by_second.values()) == pytest.approx(2900.0)
    assert sum(stats.sent_by_second.values()) == 60


def test_a_lost_reply_resends_the_round_with_the_same_stamps() -> None:
    clock = FakeClock(T0)
    broker = RecordingBroker(clock)
    plan = PublishPlan(
        workload=WORKLOAD, start=0, stop=6, rate=5.0, origin_ns=T0, lose_replies=(2,)
    )
    stats = run(plan, clock, broker)
    assert len(broker.calls) == 7
    assert broker.calls[2][1:] == broker.calls[3][1:]
    assert stats.resent == 1 and stats.events == 6
    # sent again on purpose as a new receipt: new identities, numbered on
    assert broker.ids[2] == [(1, 2)] and broker.ids[3] == [(1, 3)]
    assert [ids[0][1] for ids in broker.ids] == list(range(7))
    assert (stats.producer, stats.entries_numbered) == (1, 7)


def test_a_round_sent_again_after_a_connection_error_keeps_its_identities() -> None:
    clock = FakeClock(T0)

    class FlakyBroker(RecordingBroker):
        def publish(self, entries: Sequence[tuple[bytes, int]], **kwargs: Any) -> int:
            sent = super().publish(entries, **kwargs)
            if len(self.calls) == 2:  # Redis took the second round; the reply was lost
                raise redis.ConnectionError("connection reset")
            return sent

    broker = FlakyBroker(clock)
    plan = PublishPlan(workload=WORKLOAD, start=0, stop=3, rate=5.0, origin_ns=T0)
    stats = run(plan, clock, broker)
    assert [ids[0][1] for ids in broker.ids] == [0, 1, 1, 2]
    assert (stats.resent_uncertain, stats.resent, stats.events) == (1, 0, 3)
    assert stats.entries_numbered == 3


def test_a_round_its_replicas_did_not_confirm_goes_again_with_its_identities() -> None:
    """With ``replicas``, each round asks for them (WAIT); one that WAIT did not see
    replicated in time is uncertain, as after a connection error."""
    clock = FakeClock(T0)

    asked: list[int] = []

    class LaggingReplica(RecordingBroker):
        def publish(self, entries: Sequence[tuple[bytes, int]], **kwargs: Any) -> int:
            asked.append(kwargs["replicas"])
            sent = super().publish(entries, **kwargs)
            if len(self.calls) == 2:
                raise NotReplicated("WAIT: 0 of 1 replicas within 1000 ms")
            return sent

    broker = LaggingReplica(clock)
    plan = PublishPlan(workload=WORKLOAD, start=0, stop=3, rate=5.0, origin_ns=T0, replicas=1)
    stats = run(plan, clock, broker)
    assert asked == [1, 1, 1, 1]
    assert [ids[0][1] for ids in broker.ids] == [0, 1, 1, 2]
    assert (stats.resent_uncertain, stats.resent, stats.events) == (1, 0, 3)


def test_a_reply_lost_by_time_is_that_of_the_first_round_at_or_after_it() -> None:
    clock = FakeClock(T0)
    broker = RecordingBroker(clock)
    # events due every 200 ms; replies lost from 0.5 s and from 0.9 s on
    plan = PublishPlan(
        workload=WORKLOAD,
        start=0,
        stop=6,
        rate=5.0,
        origin_ns=T0,
        lose_replies_at_ns=(T0 + 500_000_000, T0 + 900_000_000),
    )
    stats = run(plan, clock, broker)
    # rounds at 0, 0.2, 0.4, 0.6 (lost: sent again), 0.8, 1.0 (lost: sent again)
    sent_at = [(at - T0) // 1_000_000 for at, _, _ in broker.calls]
    assert sent_at == [0, 200, 400, 600, 600, 800, 1000, 1000]
    assert broker.calls[3][1:] == broker.calls[4][1:]
    assert (stats.replies_lost, stats.resent, stats.events) == (2, 2, 6)


def test_a_stop_ends_the_schedule_early() -> None:
    clock = FakeClock(T0)
    stop = threading.Event()

    class StoppingBroker(RecordingBroker):
        def publish(self, entries: Sequence[tuple[bytes, int]], **kwargs: Any) -> int:
            if len(self.calls) == 2:
                stop.set()
            return super().publish(entries, **kwargs)

    broker = StoppingBroker(clock)
    plan = PublishPlan(workload=WORKLOAD, start=0, stop=50, rate=10.0, origin_ns=T0)
    stats = run(plan, clock, broker, stop)
    assert len(broker.calls) == 3 and stats.events == 3


def test_a_publish_plan_checks_its_rate() -> None:
    with pytest.raises(ValueError, match="rate must be"):
        PublishPlan(workload=WORKLOAD, start=0, stop=10, rate=-1.0)
    with pytest.raises(ValueError, match="as they fall due"):
        PublishPlan(workload=WORKLOAD, start=0, stop=10, rate=10.0, ahead=True)


# -- the rate shared between publishers ----------------------------------------------


def test_split_shares_the_rate_in_proportion_to_the_slices() -> None:
    workload = Workload(events=10, duplicate_rate=0.0, topics=1)
    plans = PublishPlan.split(workload, 3, rate=100.0, origin_ns=T0, entry_size=2)
    assert [(p.start, p.stop) for p in plans] == [(0, 3), (3, 6), (6, 10)]
    assert [p.rate for p in plans] == pytest.approx([30.0, 30.0, 40.0])
    assert sum(p.rate for p in plans) == pytest.approx(100.0)
    assert all(p.origin_ns == T0 and p.entry_size == 2 for p in plans)
    # so every publisher's schedule spans the same time: events / rate = 0.1 s
    spans = [Schedule(T0, p.rate, p.events).intended_ns(p.events) - T0 for p in plans]
    assert spans == [NS // 10] * 3


def test_split_without_a_rate_is_a_burst_and_an_empty_workload_has_none() -> None:
    assert {p.rate for p in PublishPlan.split(WORKLOAD, 4)} == {0.0}
    empty = Workload(events=0, duplicate_rate=0.0, topics=1)
    assert [p.rate for p in PublishPlan.split(empty, 2, rate=50.0)] == [0.0, 0.0]


def test_two_publishers_together_offer_the_trial_rate() -> None:
    clock = FakeClock(T0)
    workload = Workload(events=90, duplicate_rate=0.2, topics=3, seed=1)
    seqs: list[int] = []
    per_second: dict[int, int] = {}
    for plan in PublishPlan.split(workload, 2, rate=30.0, origin_ns=T0):
        clock.now_ns = T0
        broker = RecordingBroker(clock)
        stats = run(plan, clock, broker)
        seqs.extend(broker.seqs())
        for second, n in stats.sent_by_second.items():
            per_second[second] = per_second.get(second, 0) + n
    assert seqs == Generator(workload).ordinals().tolist()
    assert per_second == {0: 30, 1: 30, 2: 30}


# -- trial parameters -----------------------------------------------------------------


def test_a_rate_sets_events_from_the_duration() -> None:
    params = TrialParams(rate=333.3, duration_s=7, warmup_s=2, events=5)
    assert params.open_loop and params.events == round(333.3 * 7) == 2333
    assert TrialParams(rate=1000, duration_s=6).events == 6000
    burst = TrialParams(events=5)
    assert not burst.open_loop and burst.events == 5


def test_open_loop_defaults() -> None:
    params = TrialParams()
    assert (params.rate, params.duration_s, params.warmup_s, params.slo_p99_ms) == (
        0.0,
        10.0,
        2.0,
        100.0,
    )


@pytest.mark.parametrize(
    ("duration_s", "warmup_s"),
    [(2.0, 2.0), (2.9, 2.0), (3.5, 2.5), (1.0, 0.5), (3.0, 5.0)],
)
def test_duration_must_exceed_warmup_by_a_whole_second(duration_s: float, warmup_s: float) -> None:
    with pytest.raises(ExperimentError, match="at least one whole second"):
        TrialParams(rate=100.0, duration_s=duration_s, warmup_s=warmup_s)
    # a burst has no window, so the same times are not checked
    assert TrialParams(duration_s=duration_s, warmup_s=warmup_s).events == 20_000


@pytest.mark.parametrize(("duration_s", "warmup_s"), [(3.0, 2.0), (1.0, 0.0), (3.5, 1.5)])
def test_one_whole_second_of_window_is_enough(duration_s: float, warmup_s: float) -> None:
    assert TrialParams(rate=10.0, duration_s=duration_s, warmup_s=warmup_s).open_loop


def test_generate_ahead_is_for_bursts_only() -> None:
    with pytest.raises(ExperimentError, match="generate = ahead"):
        TrialParams(rate=100.0, generate="ahead")
    assert TrialParams(generate="ahead").generate == "ahead"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rate", -1.0, "rate must be ≥ 0"),
        ("warmup_s", -0.5, "warmup_s must be ≥ 0"),
        ("duration_s", 0.0, "duration_s must be > 0"),
        ("duration_s", -3.0, "duration_s must be > 0"),
        ("slo_p99_ms", 0.0, "slo_p99_ms must be > 0"),
        ("slo_p99_ms", -1.0, "slo_p99_ms must be > 0"),
        ("rate", float("nan"), "rate must be a finite number"),
    ],
)
def test_negative_and_empty_load_parameters_are_refused(
    field: str, value: float, message: str
) -> None:
    with pytest.raises(ExperimentError, match=message):
        TrialParams(**{field: value})  # type: ignore[arg-type]


def test_a_rate_too_low_to_send_anything_is_refused() -> None:
    with pytest.raises(ExperimentError, match="nothing to send"):
        TrialParams(rate=0.01, duration_s=10)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 1e308},
        {"rate": float("nan")},
        {"rate": float("inf")},
        {"rate": 10.0, "duration_s": float("inf")},
        {"rate": 10.0, "warmup_s": float("inf")},
    ],
)
def test_an_infinite_load_parameter_is_an_experiment_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ExperimentError):
        TrialParams(**kwargs)  # type: ignore[arg-type]


def test_load_parameters_can_be_set_from_the_command_line() -> None:
    exp = Experiment(name="o").with_overrides(
        ["rate=250", "duration_s=8", "warmup_s=1.5", "slo_p99_ms=50"]
    )
    (trial,) = exp.trials()
    p = trial.params
    assert (p.rate, p.duration_s, p.warmup_s, p.slo_p99_ms, p.events) == (
        250.0,
        8.0,
        1.5,
        50.0,
        2000,
    )


# -- Experiment.quick -----------------------------------------------------------------


def test_quick_shortens_the_load_and_keeps_the_rate() -> None:
    exp = Experiment(name="o", params={"rate": 1000, "duration_s": 60, "warmup_s": 5}).quick()
    (trial,) = exp.trials()
    p = trial.params
    assert (p.rate, p.duration_s, p.warmup_s, p.events) == (1000.0, 6.0, 1.0, 6000)


@pytest.mark.parametrize(
    ("duration_s", "warmup_s", "quick_duration", "quick_warmup"),
    [
        (10, 2, 3.0, 1.0),  # a tenth is below the 3 s floor
        (6, 2, 3.0, 1.0),
        (100, 0.5, 10.0, 0.5),  # a warm-up under a second is kept
        (2, 1, 2.0, 1.0),  # never longer than it was
        (4, 0, 3.0, 0.0),
    ],
)
def test_quick_duration_is_a_tenth_at_least_three_seconds_and_warmup_at_most_one(
    duration_s: float, warmup_s: float, quick_duration: float, quick_warmup: float
) -> None:
    params = {"rate": 100, "duration_s": duration_s, "warmup_s": warmup_s}
    (trial,) = Experiment(name="o", params=params).quick().trials()
    assert (trial.params.duration_s, trial.params.warmup_s) == (quick_duration, quick_warmup)
    assert trial.params.events == round(100 * quick_duration)


def test_quick_shortens_swept_durations_each() -> None:
    exp = Experiment(
        name="o",
        params={"rate": 100},
        sweep={"duration_s": [20, 100, 3], "warmup_s": [0, 2]},
    ).quick()
    got = [(t.params.duration_s, t.params.warmup_s) for t in exp.trials()]
    assert got == [(3.0, 0.0), (3.0, 1.0), (10.0, 0.0), (10.0, 1.0), (3.0, 0.0), (3.0, 1.0)]


def test_quick_keeps_a_valid_open_loop_experiment_valid() -> None:
    for duration_s in (2, 3.5, 4, 5, 7.5, 12, 45, 300):
        for warmup_s in (0, 0.5, 1, 2, 3.2, 10):
            params = {"rate": 50, "duration_s": duration_s, "warmup_s": warmup_s}
            try:
                exp = Experiment(name="o", params=params)
            except ExperimentError:
                continue
            (trial,) = exp.quick().trials()  # raises if quick broke it
            assert trial.params.duration_s <= duration_s
            assert trial.params.warmup_s <= min(1, warmup_s)


def test_the_shipped_capacity_experiment_runs_quick() -> None:
    path = experiment.find("capacity", Path(__file__).resolve().parents[2] / "experiments")
    exp = experiment.load(path).quick()
    assert {(t.params.duration_s, t.params.warmup_s) for t in exp.trials()} == {(3.0, 1.0)}


# -- the [reference] table ------------------------------------------------------------


def test_a_reference_with_a_label_and_known_figures_is_kept() -> None:
    reference = {
        "label": "the seed report",
        "source": "../shared/seed/report.pdf",
        "steady_eps": 1200,
        "steady_p99_ms": 85.5,
        "offered_eps": 1500.0,
    }
    exp = Experiment(name="r", reference=reference)
    assert exp.reference == reference
    assert exp.to_dict()["reference"] == reference
    assert Experiment(name="r").to_dict()["reference"] == {}


def test_a_reference_needs_a_label() -> None:
    with pytest.raises(ExperimentError, match="needs a label"):
        Experiment(name="r", reference={"steady_eps": 1200})
    with pytest.raises(ExperimentError, match="needs a label"):
        Experiment(name="r", reference={"source": "somewhere"})


def test_a_reference_refuses_unknown_figures() -> None:
    with pytest.raises(ExperimentError, match="unknown reference figure 'throughput'"):
        Experiment(name="r", reference={"label": "x", "throughput": 5})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("steady_eps", "1200"),
        ("steady_p50_ms", True),
        ("steady_p95_ms", None),
        ("steady_p99_ms", [85]),
        ("label", 3),
        ("source", False),
    ],
)
def test_reference_figures_are_numbers_and_its_label_text(key: str, value: Any) -> None:
    reference = {"label": "x", key: value}
    with pytest.raises(ExperimentError, match=f"reference {key} must be"):
        Experiment(name="r", reference=reference)


def test_a_reference_table_is_read_from_the_experiment_file(tmp_path: Path) -> None:
    path = tmp_path / "withref.toml"
    path.write_text(
        'description = "d"\n[params]\nrate = 100\nduration_s = 4\nwarmup_s = 1\n'
        '[reference]\nlabel = "someone"\nsteady_p99_ms = 12.5\n'
    )
    exp = experiment.load(path)
    assert exp.reference == {"label": "someone", "steady_p99_ms": 12.5}
    path.write_text('[reference]\nlabel = "someone"\nsteady_p99_ms = "fast"\n')
    with pytest.raises(ExperimentError, match=r"withref\.toml: reference steady_p99_ms"):
        experiment.load(path)
    path.write_text("reference = 5\n")
    with pytest.raises(ExperimentError, match=r"\[reference\] must be a table"):
        experiment.load(path)


def test_quick_scales_every_rate_down_together_when_a_trial_would_offer_too_much() -> None:
    # 20,000 events/s for 3 s would be 60,000 events: every rate is halved, the sweep's
    # shape kept
    exp = Experiment(
        name="o", params={"duration_s": 10, "warmup_s": 2}, sweep={"rate": [2000, 20000]}
    ).quick()
    assert [t.params.rate for t in exp.trials()] == [1000.0, 10000.0]
    assert max(t.params.events for t in exp.trials()) == experiment.QUICK_MAX_EVENTS
    fixed = Experiment(name="o", params={"rate": 40000, "duration_s": 4}).quick()
    assert [t.params.rate for t in fixed.trials()] == [10000.0]
    light = Experiment(name="o", params={"rate": 4000, "duration_s": 8}).quick()
    assert [t.params.rate for t in light.trials()] == [4000.0]  # 12,000 events: kept
