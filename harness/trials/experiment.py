"""Experiments as TOML files: base parameters, sweep axes, repetitions, a seed.

``experiments/NAME.toml``::

    description = "one line for `harness list`"
    seed = 42
    repeat = 1

    [params]          # any TrialParams field; the rest keep their defaults
    consumers = 4

    [sweep]           # the cartesian product of these axes, in this order
    isolation = ["read_committed", "serializable"]
    consumers = [1, 2, 4]

    [[cases]]         # optional: settings that go together, each crossed with the sweep
    fault = "pg-failover"
    pg_standby = "sync"
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.model.modes import (
    APPENDFSYNC,
    BROKERS,
    GENERATE,
    PG_STANDBY,
    REDIS_REPLICA,
    SYNCHRONOUS_COMMIT,
    CounterStrategy,
    Isolation,
)
from harness.trials import faults, roles

#: Values each categorical axis accepts today; later axes extend these sets.
#: How consumers treat a second delivery of an entry (:attr:`TrialParams.redelivery`).
REDELIVERY = ("recognised", "counted")

CHOICES: dict[str, tuple[str, ...]] = {
    "isolation": tuple(i.value for i in Isolation),
    "counter": tuple(c.value for c in CounterStrategy),
    "broker": BROKERS,
    "ingress": ("redis", "http"),
    "fault": faults.KINDS,
    "appendfsync": APPENDFSYNC,
    "synchronous_commit": SYNCHRONOUS_COMMIT,
    "pg_standby": PG_STANDBY,
    "redis_replica": REDIS_REPLICA,
    "generate": GENERATE,
    "redelivery": REDELIVERY,
}


#: The figures a ``[reference]`` may give, by the trials.csv column they compare with.
REFERENCE_METRICS = {
    "steady_eps": "events/s committed",
    "steady_p50_ms": "latency p50 (ms)",
    "steady_p95_ms": "latency p95 (ms)",
    "steady_p99_ms": "latency p99 (ms)",
    "offered_eps": "events/s offered",
}


#: most events an open-loop trial may offer (8 bytes each in its publishers' memory)
MAX_OPEN_LOOP_EVENTS = 100_000_000
#: the shortest load ``--quick`` leaves an open-loop trial: 2 s measured after 1 s warm-up
QUICK_LOAD_S = 3.0
#: the most events ``--quick`` lets an open-loop trial offer: a few seconds' work here
QUICK_MAX_EVENTS = 30_000


class ExperimentError(ValueError):
    """The experiment file or an override is not valid."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrialParams:
    """Everything that defines one trial. Every field can be swept or ``--set``."""

    publishers: int = 2
    consumers: int = 4
    events: int = 20_000
    duplicate_rate: float = 0.3
    topics: int = 10
    payload_bytes: int = 100
    #: events per consumer transaction
    batch_size: int = 100
    #: events per stream entry
    entry_size: int = 1
    isolation: str = "read_committed"
    counter: str = "atomic"
    broker: str = "stream"
    ingress: str = "redis"
    fault: str = "none"
    #: how many times the fault is injected in a trial
    faults: int = 3
    #: Redis AOF fsync policy of the harness's own redis-server (fault = redis-restart)
    appendfsync: str = "everysec"
    #: synchronous_commit of the harness's own PostgreSQL (fault = pg-crash): ``off``
    #: acknowledges a commit before its WAL is flushed, and a crash may take it back
    synchronous_commit: str = "on"
    #: a streaming standby of the harness's own PostgreSQL: ``none``, ``async`` or
    #: ``sync`` (fault = pg-failover promotes it; with any other fault the trial runs on
    #: the pair, and shows what replication costs)
    pg_standby: str = "none"
    #: a replica of the trial's own Redis, watched by three Sentinels: ``none``,
    #: ``async``, or ``wait`` (publishers count a round sent once ``WAIT`` says the replica
    #: has it). fault = redis-failover crashes the primary and the Sentinels promote it;
    #: with any other fault the trial runs on the pair, and shows what replication costs
    redis_replica: str = "none"
    #: stream entries per pipelined XADD round trip (ingress = redis), or events per
    #: POST /publish request (ingress = http)
    publish_pipeline: int = 100
    #: publishers pause while the stream holds more entries than this (0: never)
    max_backlog: int = 0
    #: a consumer's entries idle this long are taken over by its peers
    claim_idle_ms: int = 2000
    #: a consumer that keeps up reads at most once per this many ms (see
    #: ``ConsumerConfig.linger_ms``); 0: at once
    linger_ms: float = 0.0
    #: a trial not drained by then fails
    timeout_s: float = 300.0
    #: ``recognised``: the consumers record each applied entry's identity in its
    #: transaction and skip a second delivery of it; ``counted``: they do not, and a
    #: redelivery is applied again and counted as a receipt (the design before it, kept
    #: to measure what recognising costs: ``bench`` (e) against (f))
    redelivery: str = "recognised"
    #: when publishers make their events: ``inline``, round by round as they publish, or
    #: ``ahead``, their whole slice before their first send, which is when the clock
    #: starts (the trial then times the pipeline, not the load generator; ``bench`` runs
    #: its pipeline so, as its store ceiling is fed batches made before its clock starts)
    generate: str = "inline"
    #: events/s offered by all publishers together, on an open-loop schedule; 0: each
    #: publisher sends its slice as fast as it can (a burst)
    rate: float = 0.0
    #: with a rate: how long the load is offered (``events`` follows: rate × duration)
    duration_s: float = 10.0
    #: with a rate: the first seconds, left out of the measured window
    warmup_s: float = 2.0
    #: with a rate: the window is *sustained* only if its p99 latency is within this
    slo_p99_ms: float = 100.0

    def __post_init__(self) -> None:
        for name in (
            "publishers",
            "consumers",
            "batch_size",
            "entry_size",
            "topics",
            "publish_pipeline",
        ):
            if getattr(self, name) < 1:
                raise ExperimentError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("events", "payload_bytes", "max_backlog", "claim_idle_ms", "faults"):
            if getattr(self, name) < 0:
                raise ExperimentError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not 0 <= self.linger_ms <= 1000:
            raise ExperimentError(f"linger_ms must be in [0, 1000], got {self.linger_ms}")
        if not 0 <= self.duplicate_rate < 1:
            raise ExperimentError(f"duplicate_rate must be in [0, 1), got {self.duplicate_rate}")
        if self.timeout_s <= 0:
            raise ExperimentError(f"timeout_s must be > 0, got {self.timeout_s}")
        self._check_load()
        try:
            object.__setattr__(self, "isolation", Isolation.parse(self.isolation).value)
            object.__setattr__(self, "counter", CounterStrategy.parse(self.counter).value)
        except ValueError as exc:
            raise ExperimentError(str(exc)) from None
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ExperimentError(
                    f"{name} = {getattr(self, name)!r} is not supported; choose one of "
                    + ", ".join(allowed)
                )
        if self.ingress == "http" and self.broker != "stream":
            raise ExperimentError("ingress = http writes to the stream: it needs broker = stream")
        kind = faults.fault(self.fault)
        if self.ingress == "http" and (kind.own_redis or self.redis_replica != "none"):
            raise ExperimentError(
                f"fault = {self.fault}, redis_replica = {self.redis_replica} runs a Redis of "
                "the trial's own: use ingress = redis"
            )
        if kind.needs_standby and self.pg_standby == "none":
            raise ExperimentError(
                f"fault = {self.fault} promotes a standby: set pg_standby = async or sync"
            )
        if kind.needs_replica and self.redis_replica == "none":
            raise ExperimentError(
                f"fault = {self.fault} promotes a replica: set redis_replica = async or wait"
            )
        if kind.own_redis and self.redis_replica != "none":
            raise ExperimentError(
                f"fault = {self.fault} restarts a single redis-server: set redis_replica = none"
            )

    def _check_load(self) -> None:
        """The open-loop parameters; with a rate, ``events`` is set from it."""
        for name in ("rate", "duration_s", "warmup_s", "slo_p99_ms"):
            if not math.isfinite(getattr(self, name)):
                raise ExperimentError(f"{name} must be a finite number, got {getattr(self, name)}")
        for name in ("rate", "warmup_s"):
            if not getattr(self, name) >= 0:
                raise ExperimentError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        for name in ("duration_s", "slo_p99_ms"):
            if not getattr(self, name) > 0:
                raise ExperimentError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.rate:
            return
        if math.floor(self.duration_s) - math.ceil(self.warmup_s) < 1:
            raise ExperimentError(
                f"duration_s ({self.duration_s:g}) must exceed warmup_s ({self.warmup_s:g}) by "
                "at least one whole second: the measured window"
            )
        if self.generate != "inline":
            raise ExperimentError(
                "generate = ahead times a burst; with a rate, events are made as they fall due"
            )
        offered = self.rate * self.duration_s
        if offered > MAX_OPEN_LOOP_EVENTS:
            raise ExperimentError(
                f"rate × duration_s is {offered:,.0f} events, more than "
                f"{MAX_OPEN_LOOP_EVENTS:,}: an open-loop publisher holds its slice's ordinals "
                "in memory"
            )
        events = round(offered)
        if events < 1:
            raise ExperimentError(f"rate × duration_s is {events} events: nothing to send")
        object.__setattr__(self, "events", events)

    @property
    def open_loop(self) -> bool:
        return self.rate > 0

    def digest(self, seed: int) -> str:
        """A short stable hash of the resolved parameters and seed (identifies a trial)."""
        blob = json.dumps({**dataclasses.asdict(self), "seed": seed}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


FIELDS = {f.name: f for f in dataclasses.fields(TrialParams)}


@dataclasses.dataclass(frozen=True)
class Trial:
    index: int
    repeat: int
    seed: int
    params: TrialParams
    #: what the trial is run for, when not a sweep's (:mod:`harness.trials.roles`)
    purpose: roles.Role | None = None

    def __post_init__(self) -> None:
        if self.purpose is not None:
            self.purpose.check(self.params)

    @property
    def role(self) -> roles.Role:
        """The trial's role: its purpose, or a sweep's burst or open-loop trial."""
        return self.purpose or roles.of_params(self.params)

    @property
    def trial_id(self) -> str:
        return self.params.digest(self.seed)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
    name: str
    description: str = ""
    seed: int = 0
    repeat: int = 1
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sweep: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    #: settings that only make sense together (a fault and the setting that makes it safe
    #: or not), each a table of parameters: every case is crossed with the sweep
    #: (``[[cases]]`` in the file; none: the sweep alone)
    cases: Sequence[Mapping[str, Any]] = ()
    #: figures someone else published for the same set-up, to be set beside ours in the
    #: report: ``label`` (whose they are), optional ``source``, and any of
    #: :data:`REFERENCE_METRICS` (``[reference]`` in the file)
    reference: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.reference.items():
            if key in ("label", "source"):
                if not isinstance(value, str):
                    raise ExperimentError(f"reference {key} must be text, got {value!r}")
            elif key not in REFERENCE_METRICS:
                raise ExperimentError(
                    f"unknown reference figure {key!r}; known: label, source, "
                    + ", ".join(REFERENCE_METRICS)
                )
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ExperimentError(f"reference {key} must be a number, got {value!r}")
        if self.reference and "label" not in self.reference:
            raise ExperimentError("a [reference] needs a label: whose figures they are")
        if self.repeat < 1:
            raise ExperimentError(f"repeat must be ≥ 1, got {self.repeat}")
        if self.seed < 0:
            raise ExperimentError(f"seed must be ≥ 0, got {self.seed}")
        self._check_cases()
        for key in [*self.params, *self.sweep, *(k for case in self.cases for k in case)]:
            if key not in FIELDS:
                raise ExperimentError(
                    f"unknown parameter {key!r}; known: {', '.join(sorted(FIELDS))}"
                )
        for key, values in self.sweep.items():
            if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
                raise ExperimentError(f"sweep axis {key!r} must be a non-empty list")
        list(self.trials())  # validate every combination now, not mid-run

    def _check_cases(self) -> None:
        for i, case in enumerate(self.cases, 1):
            if not isinstance(case, Mapping) or not case:
                raise ExperimentError(f"case {i} must be a non-empty table of key = value lines")
            both = sorted(set(case) & set(self.sweep))
            if both:
                raise ExperimentError(f"{both[0]!r} is both a sweep axis and set by case {i}")
        object.__setattr__(self, "cases", tuple(dict(case) for case in self.cases))

    @property
    def axes(self) -> list[str]:
        """What varies from trial to trial: the cases' settings, then the sweep's axes."""
        return list(dict.fromkeys([*(k for case in self.cases for k in case), *self.sweep]))

    def trials(self) -> Iterator[Trial]:
        """Each case crossed with the cartesian product of the sweep axes, each repeated
        ``repeat`` times."""
        axes = list(self.sweep.items())
        index = 0
        for case in self.cases or ({},):
            for combo in itertools.product(*(values for _, values in axes)):
                values = {
                    **self.params,
                    **case,
                    **dict(zip((k for k, _ in axes), combo, strict=True)),
                }
                params = TrialParams(**{k: coerce(k, v) for k, v in values.items()})
                for r in range(self.repeat):
                    yield Trial(index=index, repeat=r, seed=self.seed + r, params=params)
                    index += 1

    def with_overrides(self, assignments: Sequence[str]) -> Experiment:
        """Apply ``key=value`` overrides; ``key=a,b,c`` makes ``key`` a sweep axis. Either
        replaces what the cases set of ``key`` (cases left the same are run once)."""
        params, sweep = dict(self.params), dict(self.sweep)
        cases = [dict(case) for case in self.cases]
        top: dict[str, Any] = {}
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ExperimentError(f"--set needs key=value, got {assignment!r}")
            if key in ("seed", "repeat"):
                top[key] = _int(key, raw)
            elif key not in FIELDS:
                raise ExperimentError(
                    f"unknown parameter {key!r}; known: seed, repeat, {', '.join(sorted(FIELDS))}"
                )
            elif "," in raw:
                sweep[key] = [coerce(key, v.strip()) for v in raw.split(",") if v.strip()]
                params.pop(key, None)
            else:
                params[key] = coerce(key, raw.strip())
                sweep.pop(key, None)
            if key in FIELDS:
                cases = [{k: v for k, v in case.items() if k != key} for case in cases]
        unique = list({tuple(case.items()): case for case in cases if case}.values())
        return dataclasses.replace(self, params=params, sweep=sweep, cases=unique, **top)

    def quick(self, factor: int = 10, floor: int = 1000) -> Experiment:
        """The same sweep, once (no repetitions), with ``factor`` times fewer events (at
        least ``floor``); open-loop trials offer their rates for ``factor`` times less time
        (at least :data:`QUICK_LOAD_S`, with at most 1 s of warm-up), and where that still
        offers more than :data:`QUICK_MAX_EVENTS` events in a trial, every rate of the
        experiment is scaled down by the same factor (a saturated trial's drain would
        otherwise take longer than its load)."""
        params, sweep = dict(self.params), dict(self.sweep)
        cases = [dict(case) for case in self.cases]

        def each(name: str, change: Callable[[Any], Any]) -> None:
            """Change the swept values of ``name``, or its one value (default included),
            and the cases' values."""
            if name in sweep:
                sweep[name] = [change(v) for v in sweep[name]]
            else:
                params[name] = change(params.get(name, FIELDS[name].default))
            for case in cases:
                if name in case:
                    case[name] = change(case[name])

        def values(name: str) -> list[float]:
            return [float(v) for v in _values(params, sweep, cases, name)]

        each("events", lambda e: max(floor, int(coerce("events", e)) // factor))
        # Open-loop trials are as long as their load: shorten the load, keep the rates
        # unless a trial would still offer too many events.
        each("duration_s", lambda d: min(float(d), max(self._quick_floor_s(), float(d) / factor)))
        each("warmup_s", lambda w: min(float(w), 1.0))
        most = max(values("rate")) * max(values("duration_s"))
        if most > QUICK_MAX_EVENTS:
            each("rate", lambda r: round(float(r) * QUICK_MAX_EVENTS / most))
        return dataclasses.replace(self, params=params, sweep=sweep, cases=cases, repeat=1)

    def _quick_floor_s(self) -> float:
        """The shortest load ``--quick`` leaves: :data:`QUICK_LOAD_S`, or for faults that
        take a while (a pause, a failover), a warm-up second and twice each one's span,
        so that they land one after the other inside the load."""

        def every(name: str) -> list[Any]:
            return _values(self.params, self.sweep, self.cases, name)

        def largest(name: str) -> Any:
            return max(every(name), key=lambda v: coerce(name, v))

        kinds = [faults.fault(k) for k in every("fault")]
        idle = int(coerce("claim_idle_ms", largest("claim_idle_ms")))
        span = max(k.span_s(idle) for k in kinds)
        if not span:
            return QUICK_LOAD_S
        return max(QUICK_LOAD_S, 1.0 + 2 * int(coerce("faults", largest("faults"))) * span)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "repeat": self.repeat,
            "params": dict(self.params),
            "sweep": {k: list(v) for k, v in self.sweep.items()},
            "cases": [dict(case) for case in self.cases],
            "reference": dict(self.reference),
        }


def _values(
    params: Mapping[str, Any],
    sweep: Mapping[str, Sequence[Any]],
    cases: Sequence[Mapping[str, Any]],
    name: str,
) -> list[Any]:
    """Every value ``name`` takes in some trial: swept, or the one value (default
    included), and what the cases set."""
    one = params.get(name, FIELDS[name].default)
    return [*sweep.get(name, [one]), *(case[name] for case in cases if name in case)]


def _int(key: str, raw: Any) -> int:
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ExperimentError(f"{key} must be a whole number, got {raw!r}")
    try:
        return int(str(raw).strip().replace("_", ""))
    except ValueError:
        raise ExperimentError(f"{key} must be a whole number, got {raw!r}") from None


def coerce(key: str, raw: Any) -> Any:
    """A parameter value of the field's type, from TOML or from a ``--set`` string."""
    kind = FIELDS[key].type
    if kind in ("int", int):
        return _int(key, raw)
    if kind in ("float", float):
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ExperimentError(f"{key} must be a number, got {raw!r}") from None
    if not isinstance(raw, str):
        raise ExperimentError(f"{key} must be a string, got {raw!r}")
    return raw


def load(path: Path) -> Experiment:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ExperimentError(f"no experiment file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {
        "description", "seed", "repeat", "params", "sweep", "cases", "reference"
    }  # fmt: skip
    if unknown:
        raise ExperimentError(f"{path}: unknown top-level keys {sorted(unknown)}")
    for table in ("params", "sweep", "reference"):
        if not isinstance(data.get(table, {}), dict):
            raise ExperimentError(f"{path}: [{table}] must be a table of key = value lines")
    try:
        return Experiment(
            name=path.stem,
            description=str(data.get("description", "")),
            seed=_int("seed", data.get("seed", 0)),
            repeat=_int("repeat", data.get("repeat", 1)),
            params=data.get("params", {}),
            sweep=data.get("sweep", {}),
            cases=_cases(data.get("cases", [])),
            reference=data.get("reference", {}),
        )
    except ExperimentError as exc:
        raise ExperimentError(f"{path}: {exc}") from None


def _cases(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(case, dict) for case in raw):
        raise ExperimentError("cases must be [[cases]] tables of key = value lines")
    return raw


def find(name: str, directory: Path) -> Path:
    """``NAME`` in ``directory``, or a path given directly."""
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.exists():
        return candidate
    path = directory / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.toml"))) or "none"
        raise ExperimentError(f"no experiment named {name!r} in {directory}/ (known: {known})")
    return path


def available(directory: Path) -> list[Experiment]:
    return [load(p) for p in sorted(directory.glob("*.toml"))]
