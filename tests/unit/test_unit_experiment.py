"""Experiments: sweep expansion, trial ids, overrides, TOML files."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from harness.trials import experiment, faults
from harness.trials.experiment import FIELDS, Experiment, ExperimentError, TrialParams

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


def make(**kwargs: object) -> Experiment:
    return Experiment(name="t", **kwargs)  # type: ignore[arg-type]


# -- expansion ------------------------------------------------------------------------


def test_sweep_is_the_cartesian_product_in_axis_order_times_repeat() -> None:
    sweep = {"isolation": ["read_committed", "serializable"], "consumers": [1, 2, 3]}
    exp = make(seed=7, repeat=2, params={"events": 500}, sweep=sweep)
    trials = list(exp.trials())
    expected = [
        (iso, cons, r, 7 + r)
        for iso, cons in itertools.product(sweep["isolation"], sweep["consumers"])
        for r in range(2)
    ]
    assert [(t.params.isolation, t.params.consumers, t.repeat, t.seed) for t in trials] == expected
    assert [t.index for t in trials] == list(range(len(expected)))
    assert all(t.params.events == 500 for t in trials)
    # the other parameters keep their defaults
    assert all(t.params.publishers == TrialParams().publishers for t in trials)


def test_no_sweep_gives_repeat_trials_of_the_base_params() -> None:
    trials = list(make(seed=3, repeat=3, params={"consumers": 5}).trials())
    assert [(t.index, t.repeat, t.seed) for t in trials] == [(0, 0, 3), (1, 1, 4), (2, 2, 5)]
    assert {t.params for t in trials} == {TrialParams(consumers=5)}


def test_sweep_axis_overrides_a_base_param() -> None:
    trials = list(make(params={"consumers": 9}, sweep={"consumers": [1, 2]}).trials())
    assert [t.params.consumers for t in trials] == [1, 2]


# -- trial ids ------------------------------------------------------------------------


def test_trial_id_is_stable_and_depends_on_params_and_seed() -> None:
    a = next(make(seed=1, params={"consumers": 2}).trials())
    again = next(make(seed=1, params={"consumers": 2}).trials())
    other_param = next(make(seed=1, params={"consumers": 3}).trials())
    other_seed = next(make(seed=2, params={"consumers": 2}).trials())
    assert a.trial_id == again.trial_id
    assert len({a.trial_id, other_param.trial_id, other_seed.trial_id}) == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("events", 1),
        ("duplicate_rate", 0.5),
        ("isolation", "serializable"),
        ("batch_size", 7),
        ("timeout_s", 1.5),
    ],
)
def test_trial_id_changes_with_any_param(name: str, value: object) -> None:
    base = TrialParams()
    assert getattr(base, name) != value
    changed = dataclasses.replace(base, **{name: value})
    assert changed.digest(0) != base.digest(0)


def test_trial_id_sees_the_normalised_isolation() -> None:
    assert TrialParams(isolation="rc").digest(0) == TrialParams().digest(0)
    assert TrialParams(isolation="READ COMMITTED").isolation == "read_committed"


# -- overrides ------------------------------------------------------------------------


def test_with_overrides_sets_params() -> None:
    exp = make(params={"consumers": 2}).with_overrides(["consumers=8", "duplicate_rate=0.1"])
    (trial,) = exp.trials()
    assert trial.params.consumers == 8
    assert trial.params.duplicate_rate == 0.1


def test_with_overrides_comma_makes_a_sweep_axis() -> None:
    exp = make(params={"consumers": 2}).with_overrides(["consumers=1, 2,4"])
    assert "consumers" not in exp.params
    assert list(exp.sweep["consumers"]) == [1, 2, 4]
    assert [t.params.consumers for t in exp.trials()] == [1, 2, 4]
    # a single value afterwards replaces the axis again
    back = exp.with_overrides(["consumers=3"])
    assert "consumers" not in back.sweep
    assert [t.params.consumers for t in back.trials()] == [3]


def test_with_overrides_string_axis() -> None:
    exp = make().with_overrides(["isolation=rc,serializable"])
    assert [t.params.isolation for t in exp.trials()] == ["read_committed", "serializable"]


def test_with_overrides_seed_and_repeat_are_top_level() -> None:
    exp = make(seed=1, repeat=1).with_overrides(["seed=40", "repeat=3"])
    assert (exp.seed, exp.repeat) == (40, 3)
    assert "seed" not in exp.params and "repeat" not in exp.params
    assert [t.seed for t in exp.trials()] == [40, 41, 42]


def test_with_overrides_leaves_the_original_alone() -> None:
    original = make(params={"consumers": 2})
    original.with_overrides(["consumers=5", "seed=9"])
    assert original.params == {"consumers": 2}
    assert original.seed == 0


def test_unknown_override_names_the_known_keys() -> None:
    with pytest.raises(ExperimentError, match="'consumerz'") as info:
        make().with_overrides(["consumerz=3"])
    message = str(info.value)
    for known in ("seed", "repeat", *FIELDS):
        assert known in message


@pytest.mark.parametrize("assignment", ["consumers", "=3", "consumers 3"])
def test_override_without_key_value_is_rejected(assignment: str) -> None:
    with pytest.raises(ExperimentError):
        make().with_overrides([assignment])


@pytest.mark.parametrize(
    "assignment",
    [
        "consumers=abc",
        "consumers=1.5",
        "consumers=",
        "duplicate_rate=lots",
        "seed=x",
        "repeat=1.5",
        "consumers=1,abc",
    ],
)
def test_override_of_the_wrong_type_is_rejected(assignment: str) -> None:
    with pytest.raises(ExperimentError):
        make().with_overrides([assignment])


@pytest.mark.parametrize(
    "assignment",
    [
        "consumers=0",
        "publishers=-1",
        "events=-5",
        "duplicate_rate=1.0",
        "isolation=chaos",
        "counter=optimistic",
        "broker=kafka",
        "timeout_s=0",
        "repeat=0",
        "seed=-1",
        "consumers=1,0",
        "consumers=,",
    ],
)
def test_override_with_an_invalid_value_is_rejected(assignment: str) -> None:
    with pytest.raises(ExperimentError):
        make().with_overrides([assignment])


def test_invalid_isolation_lists_the_choices() -> None:
    with pytest.raises(ExperimentError, match="serializable"):
        make().with_overrides(["isolation=chaos"])


def test_override_accepts_underscored_integers() -> None:
    (trial,) = make().with_overrides(["events=1_000"]).trials()
    assert trial.params.events == 1000


# -- direct construction --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"params": {"nope": 1}},
        {"sweep": {"nope": [1]}},
        {"sweep": {"consumers": []}},
        {"sweep": {"consumers": 3}},
        {"sweep": {"isolation": "serializable"}},
        {"params": {"consumers": True}},
        {"params": {"consumers": 2.5}},
        {"params": {"isolation": 3}},
        {"repeat": 0},
        {"seed": -1},
    ],
)
def test_invalid_experiments_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ExperimentError):
        make(**kwargs)


def test_integral_floats_from_toml_are_whole_numbers() -> None:
    (trial,) = make(params={"consumers": 3.0}).trials()
    assert trial.params.consumers == 3
    assert isinstance(trial.params.consumers, int)


def test_to_dict_round_trips() -> None:
    exp = make(description="d", seed=4, repeat=2, params={"events": 9}, sweep={"consumers": [1, 2]})
    data = exp.to_dict()
    assert Experiment(**data) == exp


# -- files ----------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "exp") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, "utf-8")
    return path


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'description = "d"\nseed = 5\nrepeat = 2\n[params]\nevents = 1_000\n'
        '[sweep]\nconsumers = [1, 2]\nisolation = ["rc", "serializable"]\n',
    )
    exp = experiment.load(path)
    assert (exp.name, exp.description, exp.seed, exp.repeat) == ("exp", "d", 5, 2)
    trials = list(exp.trials())
    assert len(trials) == 2 * 2 * 2
    assert {t.params.events for t in trials} == {1000}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("sede = 3\n", "unknown top-level"),
        ("seed = [\n", "not valid TOML"),
        ("[params]\nconsumerz = 3\n", "consumerz"),
        ("[params]\nconsumers = 0\n", "consumers"),
        ('[params]\nconsumers = "abc"\n', "whole number"),
        ('[sweep]\ncounter = ["atomic", "optimistic"]\n', "optimistic"),
        ('seed = "x"\n', "seed"),
    ],
)
def test_load_errors_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ExperimentError, match=match) as info:
        experiment.load(path)
    assert str(path) in str(info.value)


def test_load_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="no experiment file"):
        experiment.load(tmp_path / "missing.toml")


def test_load_of_a_non_table_params_is_an_experiment_error(tmp_path: Path) -> None:
    path = write(tmp_path, "params = 3\n")
    with pytest.raises(ExperimentError, match="params"):
        experiment.load(path)


@pytest.mark.parametrize("text", ["repeat = 2.7\n", "seed = 1.5\n"])
def test_load_rejects_fractional_seed_and_repeat(tmp_path: Path, text: str) -> None:
    with pytest.raises(ExperimentError, match="whole number"):
        experiment.load(write(tmp_path, text))


def test_find_by_name_and_by_path(tmp_path: Path) -> None:
    path = write(tmp_path, "seed = 1\n", name="alpha")
    assert experiment.find("alpha", tmp_path) == path
    assert experiment.find(str(path), tmp_path / "elsewhere") == path


def test_find_lists_known_experiments(tmp_path: Path) -> None:
    write(tmp_path, "", name="beta")
    write(tmp_path, "", name="alpha")
    with pytest.raises(ExperimentError, match=r"'gamma'.*known: alpha, beta"):
        experiment.find("gamma", tmp_path)


def test_find_in_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="known: none"):
        experiment.find("anything", tmp_path)


def test_shipped_experiments_load_and_expand() -> None:
    files = sorted(EXPERIMENTS_DIR.glob("*.toml"))
    assert files, f"no experiments in {EXPERIMENTS_DIR}"
    loaded = experiment.available(EXPERIMENTS_DIR)
    assert [e.name for e in loaded] == [p.stem for p in files]
    for exp in loaded:
        trials = list(exp.trials())
        axes = [len(v) for v in exp.sweep.values()]
        n = exp.repeat * max(1, len(exp.cases))
        for size in axes:
            n *= size
        assert len(trials) == n, exp.name
        assert exp.description, exp.name
        assert len({t.trial_id for t in trials}) == len(trials), exp.name


def test_shipped_experiments_repeat_each_configuration_three_times_for_an_interval() -> None:
    for exp in experiment.available(EXPERIMENTS_DIR):
        assert exp.repeat >= 3, exp.name


def test_smoke_experiment_is_the_seed_workload() -> None:
    exp = experiment.load(experiment.find("smoke", EXPERIMENTS_DIR))
    trial, *again = exp.trials()
    assert len(again) == 2
    assert (trial.params.publishers, trial.params.consumers) == (2, 4)
    assert (trial.params.events, trial.params.duplicate_rate) == (20_000, 0.3)


def test_quick_divides_events_by_ten_with_a_floor_and_keeps_the_sweep() -> None:
    exp = experiment.Experiment(
        name="q", params={"events": 40_000}, sweep={"consumers": [1, 2]}
    ).quick()
    assert [t.params.events for t in exp.trials()] == [4000, 4000]
    assert [t.params.consumers for t in exp.trials()] == [1, 2]
    swept = experiment.Experiment(name="q", sweep={"events": [5000, 50_000]}).quick()
    assert [t.params.events for t in swept.trials()] == [1000, 5000]
    default = experiment.Experiment(name="q").quick()
    assert [t.params.events for t in default.trials()] == [experiment.TrialParams.events // 10]


def test_quick_runs_each_configuration_once() -> None:
    exp = experiment.Experiment(name="q", repeat=3, sweep={"consumers": [1, 2]})
    assert len(list(exp.trials())) == 6
    assert [t.params.consumers for t in exp.quick().trials()] == [1, 2]


def test_http_ingress_needs_the_stream_broker() -> None:
    with pytest.raises(ExperimentError, match="needs broker = stream"):
        experiment.TrialParams(ingress="http", broker="list")
    assert experiment.TrialParams(ingress="http", broker="stream").ingress == "http"


def test_fault_and_broker_axes_accept_their_kinds() -> None:
    params = experiment.TrialParams(fault="kill-consumer", broker="list", faults=5)
    assert (params.fault, params.broker, params.faults) == ("kill-consumer", "list", 5)
    with pytest.raises(ExperimentError, match="faults must be"):
        experiment.TrialParams(faults=-1)


def test_quick_keeps_the_load_a_lasting_fault_needs() -> None:
    """--quick shortens open-loop loads to 3 s, but pauses land one after another inside
    the load: a second of warm-up and twice each pause (2 s at claim_idle_ms 500)."""
    params = {"rate": 2000, "duration_s": 20, "warmup_s": 2, "claim_idle_ms": 500}
    paused = experiment.Experiment(
        name="q", params={**params, "fault": "pause-consumer", "faults": 2}
    ).quick()
    (trial,) = paused.trials()
    assert trial.params.duration_s == 1.0 + 2 * 2 * 2.0
    plain = experiment.Experiment(name="q", params={**params, "fault": "kill-consumer"}).quick()
    assert next(plain.trials()).params.duration_s == experiment.QUICK_LOAD_S


def test_a_failover_needs_a_standby_to_promote() -> None:
    with pytest.raises(ExperimentError, match="set pg_standby = async or sync"):
        experiment.TrialParams(fault="pg-failover")
    assert experiment.TrialParams(fault="pg-failover", pg_standby="sync").pg_standby == "sync"
    with pytest.raises(ExperimentError, match="pg_standby = 'hot' is not supported"):
        experiment.TrialParams(pg_standby="hot")


def test_a_redis_failover_needs_a_replica_and_no_single_server_fault_has_one() -> None:
    with pytest.raises(ExperimentError, match="set redis_replica = async or wait"):
        experiment.TrialParams(fault="redis-failover")
    assert experiment.TrialParams(fault="redis-failover", redis_replica="wait").redis_replica == (
        "wait"
    )
    with pytest.raises(ExperimentError, match="set redis_replica = none"):
        experiment.TrialParams(fault="redis-restart", redis_replica="async")
    with pytest.raises(ExperimentError, match="use ingress = redis"):
        experiment.TrialParams(ingress="http", redis_replica="async")
    with pytest.raises(ExperimentError, match="redis_replica = 'sentinel' is not supported"):
        experiment.TrialParams(redis_replica="sentinel")


# -- cases ----------------------------------------------------------------------------


def test_each_case_is_crossed_with_the_sweep(tmp_path: Path) -> None:
    """Settings that go together (a fault and what makes it safe) as cases, each crossed
    with the sweep and repeated; they are axes, listed first."""
    exp = experiment.load(
        write(
            tmp_path,
            """
            repeat = 2
            [params]
            faults = 2
            [sweep]
            isolation = ["read_committed", "serializable"]
            [[cases]]
            fault = "pg-failover"
            pg_standby = "sync"
            [[cases]]
            fault = "redis-failover"
            redis_replica = "wait"
            """,
        )
    )
    trials = list(exp.trials())
    assert len(trials) == 2 * 2 * 2
    combos = [(t.params.fault, t.params.isolation, t.repeat) for t in trials]
    assert combos[:4] == [
        ("pg-failover", "read_committed", 0),
        ("pg-failover", "read_committed", 1),
        ("pg-failover", "serializable", 0),
        ("pg-failover", "serializable", 1),
    ]
    assert {t.params.redis_replica for t in trials if t.params.fault == "redis-failover"} == {
        "wait"
    }
    assert {t.params.pg_standby for t in trials if t.params.fault == "redis-failover"} == {"none"}
    assert exp.axes == ["fault", "pg_standby", "redis_replica", "isolation"]
    assert Experiment(**exp.to_dict()) == exp


def test_a_set_replaces_what_the_cases_set_and_runs_cases_made_alike_once() -> None:
    exp = make(
        params={"faults": 2},
        cases=[
            {"fault": "pg-crash", "synchronous_commit": "on"},
            {"fault": "pg-crash", "synchronous_commit": "off"},
        ],
    )
    assert len(list(exp.trials())) == 2
    same = exp.with_overrides(["synchronous_commit=on"])
    assert same.cases == ({"fault": "pg-crash"},)
    assert [t.params.synchronous_commit for t in same.trials()] == ["on"]
    swept = exp.with_overrides(["synchronous_commit=on,off", "faults=1"])
    assert len(list(swept.trials())) == 2 and swept.cases == ({"fault": "pg-crash"},)


def test_quick_shortens_what_the_cases_set_and_waits_for_their_faults() -> None:
    exp = make(
        params={"rate": 2000, "duration_s": 60, "warmup_s": 2, "faults": 2},
        cases=[
            {"fault": "kill-consumer"},
            {"fault": "redis-failover", "redis_replica": "wait", "duration_s": 80},
        ],
    ).quick()
    # the longest fault of any case sets the floor, a warm-up second and two failovers,
    # and the case's own load is shortened to it as the base one is
    assert {t.params.duration_s for t in exp.trials()} == {1.0 + 2 * 2 * faults.REDIS_FAILOVER_S}


@pytest.mark.parametrize(
    ("cases", "message"),
    [
        ([{}], "case 1 must be a non-empty table"),
        ([{"isolation": "serializable"}], "'isolation' is both a sweep axis and set by case 1"),
        ([{"faultz": "none"}], "unknown parameter 'faultz'"),
        ([{"fault": "redis-failover"}], "set redis_replica = async or wait"),
    ],
)
def test_a_bad_case_is_refused(cases: list[dict[str, str]], message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        make(sweep={"isolation": ["read_committed"]}, cases=cases)


def test_cases_that_are_not_tables_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="cases must be"):
        experiment.load(write(tmp_path, 'cases = ["pg-crash"]\n'))
