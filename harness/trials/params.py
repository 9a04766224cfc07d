"""A trial's parameters: every field an experiment may set or sweep, their checks and
their types, and a trial (its parameters, repeat and seed)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
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
from harness.trials.faults import Durability

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


#: most events an open-loop trial may offer (8 bytes each in its publishers' memory)
MAX_OPEN_LOOP_EVENTS = 100_000_000


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

    @property
    def durability(self) -> Durability:
        """What these settings promise to keep, which decides what loss a fault admits."""
        return Durability(
            self.broker,
            self.appendfsync,
            self.synchronous_commit,
            self.pg_standby,
            self.redis_replica,
        )

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


def whole(key: str, raw: Any) -> int:
    """``raw`` (TOML or a ``--set`` string) as a whole number, or :class:`ExperimentError`."""
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
        return whole(key, raw)
    if kind in ("float", float):
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ExperimentError(f"{key} must be a number, got {raw!r}") from None
    if not isinstance(raw, str):
        raise ExperimentError(f"{key} must be a string, got {raw!r}")
    return raw
