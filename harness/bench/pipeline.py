"""``python -m harness bench``: three measurements in one run, so their ratios are fair.

(a) the store's ceiling — pre-generated, pre-prepared batches applied straight into
    PostgreSQL by several Ray actors, the fastest idempotent path we have (COPY into a
    staging table, one INSERT … SELECT … ON CONFLICT, one counter update per batch);
(b) the seed report's design — one transaction per event, three statements, 4 workers,
    READ COMMITTED;
(c) our whole pipeline — Ray publishers → Redis → Ray consumers → PostgreSQL, verified
    like every trial.

All three use the same schema and indexes, and 30% duplicates with ~100-byte payloads.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Mapping
from typing import Any

import ray

from harness.bench import cpu as cpu_mod
from harness.bench.shape import Shape
from harness.infra.config import Settings
from harness.model.generator import Generator, Workload
from harness.pipeline.publisher import PublishPlan
from harness.store.batch import prepare
from harness.store.postgres import Store
from harness.trials.actors import ACTOR_CPUS
from harness.trials.params import Trial, TrialParams
from harness.trials.results import TrialResult
from harness.trials.runner import Runner


@dataclasses.dataclass(frozen=True)
class Measurement:
    key: str  # "a", "b", "c" or "d"
    name: str
    events: int
    seconds: float
    verified: bool
    detail: str = ""
    #: which round of the run (``BenchConfig.repeat``) it belongs to
    round: int = 0
    #: wall clock (ns since the epoch) of the timed span's start and end
    started_ns: int = 0
    ended_ns: int = 0
    #: CPU seconds each part of the system used in the timed span (see harness.bench.cpu)
    cpu: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_us(self) -> dict[str, float]:
        """:attr:`cpu` as microseconds of CPU per event."""
        return cpu_mod.per_event_us(self.cpu, self.events)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchConfig(Shape):
    #: events for (a) and (c); (b) is ~100× slower, so it gets fewer
    events: int = 400_000
    seed_events: int = 20_000
    #: events for (e) and (f), one event per stream entry and batches of 100: the shape
    #: of the experiments' trials, where every event carries its own identity
    entry_events: int = 100_000
    store_workers: int = 4
    seed_workers: int = 4
    #: (c) at its best settings: an entry per batch (:attr:`Shape.entry_size`), so that a
    #: consumer's read brings one batch; one publisher, which keeps ahead of the
    #: consumers on its own; and three consumers, which keep PostgreSQL as busy as four
    #: with one process fewer (each Ray actor costs about 1% of a core even when idle;
    #: docs/performance.md has the bench runs with four)
    publishers: int = 1
    consumers: int = 3
    #: run (a) and (c) once, at a quarter of the size, before the rounds, and discard
    #: them: the first pipeline trial of a run pays for Redis and the actors growing
    #: their memory, and comes out slower than the ones after it
    warmup: bool = True

    def quick(self) -> BenchConfig:
        return dataclasses.replace(
            self,
            events=20_000,
            seed_events=2_000,
            entry_events=5_000,
            repeat=1,
            warmup=False,
        )


@ray.remote(num_cpus=ACTOR_CPUS)
class BenchWorker:
    """Applies its share of a workload, timed; the work is prepared before the clock runs."""

    def __init__(self, settings: Settings) -> None:
        # sharded counters, as the pipeline in (c): each worker adds to its own row
        self.store = Store(settings.pg_dsn, schema=settings.pg_schema, counter="sharded")
        self.store.connect()
        self.batches: list[Any] = []
        self.events: list[dict[str, Any]] = []

    def prepare_batches(self, workload: Workload, start: int, stop: int, batch: int) -> int:
        events = list(Generator(workload).events(start, stop))
        self.batches = [prepare(events[i : i + batch]) for i in range(0, len(events), batch)]
        return len(events)

    def prepare_events(self, workload: Workload, start: int, stop: int) -> int:
        self.events = list(Generator(workload).events(start, stop))
        return len(self.events)

    def apply_batches(self, shard: int) -> tuple[int, int]:
        began = time.time_ns()
        for batch in self.batches:
            self.store.apply_prepared(batch, shard=shard)
        return began, time.time_ns()

    def apply_one_by_one(self) -> tuple[int, int]:
        began = time.time_ns()
        for event in self.events:
            self.store.apply_like_the_seed(event)
        return began, time.time_ns()

    def close(self) -> None:
        self.store.close()


def _clean_slate(store: Store) -> None:
    """An empty table, and a ``CHECKPOINT`` (when the role may run one): no part pays for
    the dirty buffers the one before it left."""
    store.reset()
    store.checkpoint()


def _workers(settings: Settings, n: int) -> list[Any]:
    worker: Any = BenchWorker  # Ray's decorator hides .options() from mypy
    return [worker.options(scheduling_strategy="SPREAD").remote(settings) for _ in range(n)]


def _span(stamps: list[tuple[int, int]]) -> tuple[int, int]:
    """From the first start to the last end (wall clock ns)."""
    return min(start for start, _ in stamps), max(end for _, end in stamps)


def _check(store: Store, generator: Generator) -> tuple[bool, str]:
    counters = store.counters()
    stored = store.verify(generator.expected_keys())
    ok = (
        counters.received == generator.total
        and counters.unique_processed == generator.expected_unique == stored.rows
        and stored.lost == 0
        and stored.unexpected == 0
    )
    return ok, (
        f"received {counters.received:,}, unique {counters.unique_processed:,} "
        f"(expected {generator.expected_unique:,}), rows {stored.rows:,}, lost {stored.lost}"
    )


def _direct(
    settings: Settings, store: Store, cfg: BenchConfig, *, events: int, workers: int, batch: int
) -> tuple[tuple[int, int], tuple[bool, str]]:
    """Actors apply a workload straight to the store: ``batch`` events per transaction
    (prepared before the clock runs), or, with batch 0, the seed's one-by-one design.
    Returns the span from the first start to the last finish, and the check."""
    workload = cfg.workload(events)
    _clean_slate(store)
    actors = _workers(settings, workers)
    plans = PublishPlan.split(workload, workers)
    ray.get(
        [
            a.prepare_batches.remote(workload, pl.start, pl.stop, batch)
            if batch
            else a.prepare_events.remote(workload, pl.start, pl.stop)
            for a, pl in zip(actors, plans, strict=True)
        ]
    )
    # In batches each actor counts on its own shard: (a) measures the inserts, not a hot
    # counter row. One by one is the seed's design, hot row included.
    stamps = ray.get(
        [
            a.apply_batches.remote(i) if batch else a.apply_one_by_one.remote()
            for i, a in enumerate(actors)
        ]
    )
    ray.get([a.close.remote() for a in actors])
    for a in actors:
        ray.kill(a)
    return _span(stamps), _check(store, Generator(workload))


def store_ceiling(settings: Settings, store: Store, cfg: BenchConfig) -> Measurement:
    """(a): the database alone, fed prepared batches by several actors at once."""
    span, (ok, detail) = _direct(
        settings, store, cfg, events=cfg.events, workers=cfg.store_workers, batch=cfg.batch_size
    )
    return _timed("a", "store ceiling", cfg.events, span, ok, detail)


def seed_design(settings: Settings, store: Store, cfg: BenchConfig) -> Measurement:
    """(b): one transaction per event, three statements, as the seed report's aggregator."""
    span, (ok, detail) = _direct(
        settings, store, cfg, events=cfg.seed_events, workers=cfg.seed_workers, batch=0
    )
    return _timed("b", "the seed's design", cfg.seed_events, span, ok, detail)


def _timed(
    key: str, name: str, events: int, span: tuple[int, int], ok: bool, detail: str
) -> Measurement:
    start, end = span
    return Measurement(
        key, name, events, (end - start) / 1e9, ok, detail, started_ns=start, ended_ns=end
    )


#: The pipeline's parts: name, and what each changes of (c)'s trial.
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "c": ("the pipeline", {}),
    "d": ("the pipeline, batch 1", {"batch_size": 1, "entry_size": 1, "publish_pipeline": 100}),
    "e": (
        "one event per entry, batch 100",
        {"batch_size": 100, "entry_size": 1, "publish_pipeline": 100},
    ),
    "f": (
        "one event per entry, batch 100, redeliveries counted",
        {"batch_size": 100, "entry_size": 1, "publish_pipeline": 100, "redelivery": "counted"},
    ),
}


def pipeline(
    settings: Settings, cfg: BenchConfig, key: str = "c"
) -> tuple[Measurement, TrialResult]:
    """(c): the whole pipeline through Ray, Redis and PostgreSQL, verified as any trial;
    (d), (e), (f): the same in another shape (:data:`SHAPES`)."""
    name, shape = SHAPES[key]
    events = {"c": cfg.events, "d": cfg.seed_events}.get(key, cfg.entry_events)
    params = TrialParams(
        publishers=cfg.publishers,
        consumers=cfg.consumers,
        events=events,
        duplicate_rate=cfg.duplicate_rate,
        payload_bytes=cfg.payload_bytes,
        batch_size=cfg.batch_size,
        entry_size=cfg.entry_size,
        publish_pipeline=10,
        counter="sharded",
        # as (a)'s batches, the events are made before the clock starts
        generate="ahead",
    )
    params = dataclasses.replace(params, **shape)
    runner = Runner(settings)
    try:
        result, _ = runner.run(Trial(index=0, repeat=0, seed=cfg.seed, params=params))
    finally:
        runner.close()
    detail = (
        f"p50 {result.latency_p50_ms:,.0f} ms, p99 {result.latency_p99_ms:,.0f} ms"
        if result.invariant_ok
        else (result.error or "; ".join(result.violations))
    )
    return (
        Measurement(
            key,
            name,
            result.events_published,
            result.elapsed_s,
            result.invariant_ok,
            detail,
            started_ns=result.started_ns,
            ended_ns=result.ended_ns,
        ),
        result,
    )


def run_all(settings: Settings, cfg: BenchConfig, progress: Any = None) -> list[Measurement]:
    """``cfg.repeat`` rounds of (a), (b), (c), and (d) the pipeline with one event per
    transaction, in that order, so that the parts of a round are measured close in time.

    Each starts on an empty table after a ``CHECKPOINT`` (when the role may run one), so
    that none pays for the dirty buffers the one before it left.
    """
    say = progress or (lambda _message: None)
    out: list[Measurement] = []
    with (
        cpu_mod.CpuSampler() as sampler,
        Store(settings.pg_dsn, schema=settings.pg_schema) as store,
    ):
        store.create_schema()
        if cfg.warmup:
            small = dataclasses.replace(cfg, events=max(cfg.events // 4, 1_000))
            say(f"warm-up: (a) and (c) with {small.events:,} events, not counted")
            store_ceiling(settings, store, small)
            _clean_slate(store)
            pipeline(settings, small)
        for r in range(cfg.repeat):
            tag = f"round {r + 1}/{cfg.repeat}: " if cfg.repeat > 1 else ""
            say(f"{tag}(a) store ceiling: {cfg.events:,} events, {cfg.store_workers} actors")
            out.append(dataclasses.replace(store_ceiling(settings, store, cfg), round=r))
            say(
                f"{tag}(b) the seed's design: {cfg.seed_events:,} events, "
                f"{cfg.seed_workers} workers"
            )
            out.append(dataclasses.replace(seed_design(settings, store, cfg), round=r))
            say(f"{tag}(c) the pipeline: {cfg.events:,} events, batch {cfg.batch_size}")
            _clean_slate(store)
            out.append(dataclasses.replace(pipeline(settings, cfg)[0], round=r))
            say(f"{tag}(d) the pipeline with batch 1: {cfg.seed_events:,} events")
            _clean_slate(store)
            out.append(dataclasses.replace(pipeline(settings, cfg, "d")[0], round=r))
            # (e) and (f) take turns going first: neither always pays for the other
            for key in ("e", "f") if r % 2 == 0 else ("f", "e"):
                say(f"{tag}({key}) {SHAPES[key][0]}: {cfg.entry_events:,} events")
                _clean_slate(store)
                out.append(dataclasses.replace(pipeline(settings, cfg, key)[0], round=r))
    return [
        dataclasses.replace(m, cpu=sampler.window(m.started_ns, m.ended_ns))
        if m.ended_ns > m.started_ns
        else m
        for m in out
    ]


RATIOS = (("c", "a"), ("c", "b"), ("d", "b"), ("e", "f"))


def cpu_medians(measurements: list[Measurement]) -> dict[str, dict[str, float]]:
    """Each part's median CPU µs per event over the rounds, by part of the system."""
    by_part: dict[str, dict[str, list[float]]] = {}
    for m in measurements:
        for role, us in m.cpu_us.items():
            by_part.setdefault(m.key, {}).setdefault(role, []).append(us)
    return {
        key: {role: statistics.median(values) for role, values in roles.items()}
        for key, roles in by_part.items()
    }


def medians(measurements: list[Measurement]) -> dict[str, float]:
    """Each part's median events/s over the rounds."""
    rates: dict[str, list[float]] = {}
    for m in measurements:
        rates.setdefault(m.key, []).append(m.events_per_s)
    return {key: statistics.median(values) for key, values in rates.items()}


def ratios(measurements: list[Measurement]) -> dict[str, float]:
    """c/a (the pipeline against the database alone), c/b and d/b (against the seed),
    of the parts' medians over the rounds."""
    rate = medians(measurements)
    nan = float("nan")
    return {f"{x}/{y}": rate[x] / rate[y] if x in rate and y in rate else nan for x, y in RATIOS}


@dataclasses.dataclass(frozen=True)
class Target:
    """One of the issue's targets for this machine, and whether the medians meet it."""

    name: str
    value: float
    bar: float
    #: ``False`` when another target stands in for this one (see :func:`targets`)
    applies: bool = True

    @property
    def met(self) -> bool:
        return self.value >= self.bar

    @property
    def claim(self) -> str:
        """``c/a 0.86 ≥ 0.8``, ``(c) events/s 125,014 ≥ 100,000``."""
        return f"{self.name} {_figure(self.value)} ≥ {_figure(self.bar)}"

    @property
    def verdict(self) -> str:
        if not self.applies:
            return "does not apply"
        return "met" if self.met else "NOT met"


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:,.2f}".rstrip("0").rstrip(".")


#: (c) events/s that (c) must reach, unless (a) itself does not (then c/a is the bar)
PIPELINE_EPS = 100_000.0
#: the ratio targets: the pipeline against the database alone and against the seed
#: e/f: what recognising redeliveries costs where every event is its own entry (at most 10%)
RATIO_BARS = {"c/a": 0.8, "c/b": 60.0, "d/b": 1.5, "e/f": 0.9}


def targets(measurements: list[Measurement]) -> list[Target]:
    """The targets of the medians: c/a ≥ 0.8, c/b ≥ 60, d/b ≥ 1.5 and (c) ≥ 100,000
    events/s, the last only where the database alone reaches it (when (a) stays below
    it, c/a is the bar). Parts not measured are left out."""
    rate = medians(measurements)
    out = [
        Target(name, value, RATIO_BARS[name])
        for name, value in ratios(measurements).items()
        if name in RATIO_BARS and value == value  # not NaN
    ]
    if "c" in rate and "a" in rate:
        out.append(Target("(c) events/s", rate["c"], PIPELINE_EPS, rate["a"] >= PIPELINE_EPS))
    return out


def measurements_of(data: Mapping[str, Any]) -> list[Measurement]:
    """The measurements of a parsed ``bench.json``, older ones included (before rounds
    and CPU figures were recorded: one round, no CPU)."""
    names = {f.name for f in dataclasses.fields(Measurement)}
    return [Measurement(**{k: v for k, v in m.items() if k in names}) for m in data["measurements"]]


def round_ratios(measurements: list[Measurement]) -> list[dict[str, float]]:
    """:func:`ratios` within each round."""
    rounds = sorted({m.round for m in measurements})
    return [ratios([m for m in measurements if m.round == r]) for r in rounds]
