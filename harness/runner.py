"""Runs trials, phase by phase: set up → offer load → drain → collect → verify.

The driver only orchestrates. Actors publish and consume by themselves; the driver
polls their counters a few times a second for the live line and to inject faults, and
learns when the stream is drained from Redis. The figures come from what the actors
counted themselves, second by second (:mod:`harness.steady`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import ray
import redis
from ray.exceptions import RayActorError

from harness import broker as broker_mod
from harness import faults as faults_mod
from harness import invariants, latency
from harness import steady as steady_mod
from harness.actors import ConsumerActor, PublisherActor, ServiceActor
from harness.config import Settings
from harness.consumer import ConsumerConfig
from harness.experiment import Trial
from harness.faults import FaultPlan
from harness.generator import Generator, Workload
from harness.keys import Keys
from harness.publisher import PublishPlan
from harness.redis_server import ManagedRedis
from harness.results import TrialResult
from harness.retry import DEADLOCK_DETECTED, SERIALIZATION_FAILURE
from harness.steady import PerSecond, SteadyState, Window
from harness.store import Store, Verification

POLL_S = 0.1
#: the longest pause between polls of a trial without faults: each poll is a Ray call to
#: every actor, which costs the driver and the actors CPU the pipeline could use, and the
#: measured duration runs from the actors' own time stamps, not from the polls
POLL_MAX_S = 0.25
SAMPLE_S = 1.0
#: how long a fault waits for work in flight to hit before it lands on nothing. The
#: seed's list consumers hold events only while they apply them (a few ms in a hundred),
#: and the driver sees that only through Ray calls to each: 1 s missed about one list
#: kill in ten under --quick; the stream's pending entries are found at once
FIND_S = 3.0
#: how long a consumer armed to die after its next commit is given to commit one (under
#: load, milliseconds); one that has not died by then is killed like the others
CRASH_WAIT_S = 5.0
#: an open-loop schedule starts this long after the trial's set-up, so that every
#: publisher is running when the first event falls due
START_LEAD_NS = 500_000_000


def _first_nonzero(look: Callable[[], int]) -> int:
    """``look()`` until it finds something or :data:`FIND_S` has passed; what it found."""
    deadline = time.monotonic() + FIND_S
    while True:
        found = look()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.005)


class TrialError(RuntimeError):
    """The trial could not run to its end."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One look at a running trial."""

    elapsed_s: float
    published: int
    committed: int
    retries: int
    consumers_alive: int
    #: ``warmup``, ``window`` or ``drain`` of an open-loop trial; ``burst`` otherwise
    phase: str = "burst"

    @property
    def backlog(self) -> int:
        return max(0, self.published - self.committed)


@dataclasses.dataclass(kw_only=True)
class _TrialState:
    """What the phases of one trial share while it runs."""

    trial: Trial
    workload: Workload
    brokers: dict[str, broker_mod.Broker]
    broker: broker_mod.Broker
    redis_url: str
    #: the ingress service's URL when publishers post over HTTP
    ingress_url: str | None
    #: consumer actors by index; a killed one is replaced under its index
    alive: dict[int, Any]
    publishers: list[Any]
    #: consumer actors started ahead, to take the place of killed ones at once
    spares: list[Any]
    configs: list[ConsumerConfig]
    consumer_setup: dict[str, Any]
    fault: FaultPlan
    plans: list[PublishPlan]
    #: wall clock (ns) the trial's seconds count from
    origin_ns: int
    window: Window | None
    nodes: list[str]
    victims: random.Random
    reset_s: float
    redis_peak: float
    started: float = 0.0
    last_sample: float = 0.0
    injected: int = 0
    #: the last reports of killed consumers: what they did, as far as the driver knows
    dead_reports: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    samples: list[Sample] = dataclasses.field(default_factory=list)
    #: what each fault injected so far found in flight (0: it hit nothing)
    in_flight: list[int] = dataclasses.field(default_factory=list)


def timeseries(
    per_second: PerSecond, window: Window | None, samples: list[Sample], consumers: int
) -> list[dict[str, Any]]:
    """A row per second of the trial (see :meth:`PerSecond.series`), with the retries and
    live consumers the driver last saw by the end of that second (``consumers`` before
    its first look)."""
    rows = per_second.series(window)
    pending = sorted(samples, key=lambda x: x.elapsed_s)
    retries, alive = 0, consumers
    for row in rows:
        while pending and pending[0].elapsed_s <= row["elapsed_s"]:
            seen = pending.pop(0)
            retries, alive = seen.retries, seen.consumers_alive
        row |= {"retries": retries, "consumers_alive": alive}
    return rows


class Progress(Protocol):
    def trial_started(self, trial: Trial, position: int, total: int) -> None: ...
    def update(self, sample: Sample) -> None: ...
    def trial_finished(self, result: TrialResult) -> None: ...


class NoProgress:
    def trial_started(self, trial: Trial, position: int, total: int) -> None:
        pass

    def update(self, sample: Sample) -> None:
        pass

    def trial_finished(self, result: TrialResult) -> None:
        pass


class Runner:
    """Keeps the actors and the connections of one run."""

    def __init__(
        self,
        settings: Settings,
        *,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.progress = progress or NoProgress()
        self._clock = clock
        self.store = Store(settings.pg_dsn, schema=settings.pg_schema)
        self.store.create_schema()
        self.keys = Keys(settings.key_prefix)
        self.brokers: dict[str, broker_mod.Broker] = {
            kind: broker_mod.open_broker(kind, settings.redis_url, self.keys, role="driver")
            for kind in broker_mod.BROKERS
        }
        self._consumers: list[Any] = []
        self._publishers: list[Any] = []
        #: consumer actors started ahead of kill-consumer trials (see _set_up)
        self._spares: list[Any] = []
        self._service: Any = None
        self._service_url = ""
        self._managed: ManagedRedis | None = None
        self._managed_brokers: dict[str, broker_mod.Broker] = {}

    def close(self) -> None:
        if self._service is not None:
            ray.get(self._service.stop.remote())
            ray.kill(self._service)
            self._service = None
        for actor in [*self._consumers, *self._publishers, *self._spares]:
            ray.kill(actor)
        self._consumers.clear()
        self._publishers.clear()
        self._spares.clear()
        self.brokers["stream"].client.delete(*self.keys.all())
        for channel in self.brokers.values():
            channel.client.close()
        self.store.close()

    def _ingress_url(self) -> str:
        """The URL of this run's ingress-only HTTP service, started on first use."""
        if self._service is None:
            self._service = self._new_actor(ServiceActor)
            self._service_url = ray.get(self._service.start.remote())
        return self._service_url

    def _new_actor(self, cls: Any) -> Any:
        # SPREAD: on a cluster, actors go to as many nodes as possible.
        return cls.options(scheduling_strategy="SPREAD").remote(self.settings)

    def _actors(self, pool: list[Any], cls: Any, n: int) -> list[Any]:
        while len(pool) < n:
            pool.append(self._new_actor(cls))
        return pool[:n]

    def run(
        self, trial: Trial, *, position: int = 1, total: int = 1
    ) -> tuple[TrialResult, list[dict[str, Any]]]:
        """One trial, verified. Errors become a failed result, not an exception."""
        self.progress.trial_started(trial, position, total)
        p = trial.params
        workload = Workload(
            events=p.events,
            duplicate_rate=p.duplicate_rate,
            topics=p.topics,
            payload_bytes=p.payload_bytes,
            seed=trial.seed,
        )
        generator = Generator(workload)
        timeseries: list[dict[str, Any]] = []
        try:
            outcome = self._execute(trial, workload, timeseries)
            error = None
        except TrialError as exc:
            outcome, error = None, str(exc)
        except Exception as exc:  # recorded as the trial's error; the sweep goes on
            outcome, error = None, f"{type(exc).__name__}: {exc}".strip()[:500]
        if outcome is None:
            self._recover(p.consumers, p.publishers)
        if self._managed is not None:
            for channel in self._managed_brokers.values():
                channel.client.close()
            self._managed.stop()
            shutil.rmtree(self._managed.directory, ignore_errors=True)
            self._managed = None
        result = self._verify(trial, generator, outcome, error)
        self.progress.trial_finished(result)
        return result, timeseries

    # -- the phases of a trial ----------------------------------------------------------
    #
    # set up → offer load (warm-up, then the measured window, or a burst) → drain →
    # collect (stop the actors, gather what they counted, measure the window) → verify.

    def _execute(
        self, trial: Trial, workload: Workload, timeseries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        run = self._set_up(trial, workload)
        self._offer_load(run)
        self._drain(run)
        outcome = self._collect(run)
        timeseries.extend(outcome.pop("timeseries"))
        return outcome

    def _set_up(self, trial: Trial, workload: Workload) -> _TrialState:
        """Reset the stores, start the consumers, plan each publisher's slice."""
        p = trial.params
        brokers, redis_url = self.brokers, self.settings.redis_url
        if p.fault == "redis-restart":
            # This trial gets a redis-server of its own, persisting to an AOF, to crash.
            self._managed = ManagedRedis(
                Path(tempfile.mkdtemp(prefix="harness-redis-")), appendfsync=p.appendfsync
            )
            self._managed.start()
            redis_url = self._managed.url
            brokers = self._managed_brokers = {
                kind: broker_mod.open_broker(kind, redis_url, self.keys, role="driver")
                for kind in broker_mod.BROKERS
            }
        broker = brokers[p.broker]
        reset_from = self._clock()
        self.store.reset()
        broker.reset()
        brokers["stream"].reset()  # the consumer group exists whatever the broker
        reset_s = self._clock() - reset_from
        consumers = self._actors(self._consumers, ConsumerActor, p.consumers)
        publishers = self._actors(self._publishers, PublisherActor, p.publishers)
        # A killed consumer's successor is started now: a new actor process takes a second
        # or two to come up, which would make the faults after the first land late.
        spares = []
        if p.fault == "kill-consumer":
            spares = self._actors(self._spares, ConsumerActor, p.faults)
            self._spares = self._spares[p.faults :]
        ray.get([a.ready.remote() for a in [*consumers, *publishers, *spares]])  # slow to start
        ingress_url = self._ingress_url() if p.ingress == "http" else None
        # The trial's clock origin: an open-loop schedule starts a moment from now, when
        # every actor is running; a burst starts when its publishers do.
        origin_ns = time.time_ns() + (START_LEAD_NS if p.open_loop else 0)
        configs = [
            ConsumerConfig(
                name=f"consumer-{i}",
                batch_size=p.batch_size,
                entry_size=p.entry_size,
                claim_idle_ms=p.claim_idle_ms,
                linger_ms=p.linger_ms,
                recognise=p.redelivery == "recognised",
                shard=i,  # used by the sharded counter strategy only
                origin_ns=origin_ns,
            )
            for i in range(p.consumers)
        ]
        setup = {
            "isolation": p.isolation,
            "prefix": self.keys.prefix,
            "counter": p.counter,
            "broker": p.broker,
            "redis_url": redis_url,
        }
        nodes = ray.get(
            [c.start.remote(cfg, **setup) for c, cfg in zip(consumers, configs, strict=True)]
        )
        window = Window.of(p.warmup_s, p.duration_s) if p.open_loop else None
        # Under load, faults land at seeded times in the measured window; in a burst, at
        # seeded shares of the work committed.
        fault = FaultPlan.draw(
            p.fault, p.faults, trial.seed, (window.first, window.end) if window else None
        )
        plans = PublishPlan.split(
            workload,
            p.publishers,
            entry_size=p.entry_size,
            pipeline=p.publish_pipeline,
            max_backlog=p.max_backlog,
            ahead=p.generate == "ahead",
            rate=p.rate,
            origin_ns=origin_ns,
        )
        per_round = p.entry_size * p.publish_pipeline
        lost_rounds = fault.publisher_rounds([-(-pl.events // per_round) for pl in plans])
        lost_times = fault.publisher_times(len(plans), origin_ns)
        plans = [
            dataclasses.replace(pl, lose_replies=r, lose_replies_at_ns=t)
            for pl, r, t in zip(plans, lost_rounds, lost_times, strict=True)
        ]
        return _TrialState(
            trial=trial,
            workload=workload,
            brokers=brokers,
            broker=broker,
            redis_url=redis_url,
            ingress_url=ingress_url,
            alive=dict(enumerate(consumers)),
            publishers=publishers,
            spares=spares,
            configs=configs,
            consumer_setup=setup,
            fault=fault,
            plans=plans,
            origin_ns=origin_ns,
            window=window,
            nodes=list(nodes),
            victims=faults_mod.rng_for(trial.seed, p.fault),
            reset_s=reset_s,
            redis_peak=self._redis_used_mb(broker),
        )

    def _offer_load(self, run: _TrialState) -> None:
        """Start the publishers and watch until every one has sent its slice."""
        p = run.trial.params
        if not p.open_loop:
            run.origin_ns = time.time_ns()  # a burst's clock starts now
        run.started = self._clock()
        run.nodes += ray.get(
            [
                pub.start.remote(
                    dataclasses.replace(plan, origin_ns=run.origin_ns),
                    prefix=self.keys.prefix,
                    ingress_url=run.ingress_url,
                    broker=p.broker,
                    redis_url=run.redis_url,
                )
                for pub, plan in zip(run.publishers, run.plans, strict=True)
            ]
        )
        while any(r["running"] for r in self._poll(run)):
            pass

    def _drain(self, run: _TrialState) -> None:
        """Watch until the broker holds nothing undelivered or unacknowledged."""
        while not self._drained(run.broker):
            self._poll(run)

    def _poll(self, run: _TrialState) -> list[dict[str, Any]]:
        """Wait a little, then one look at the trial: errors, faults due, a sample.
        Returns the publishers' reports."""
        p = run.trial.params
        # Faults are injected at a poll, so trials with faults poll often throughout;
        # the others poll often at first (short trials end soon) and less later.
        elapsed = self._clock() - run.started
        time.sleep(POLL_S if run.fault.driver_side else min(POLL_MAX_S, POLL_S + elapsed / 4))
        now = self._clock()
        pubs = ray.get([pub.progress.remote() for pub in run.publishers])
        cons = self._poll_consumers(run.alive)
        for report in [*pubs, *cons.values()]:
            if report["error"]:
                raise TrialError(report["error"].strip().splitlines()[-1])
        if not run.alive:
            raise TrialError("every consumer died")
        committed = sum(r.get("received", 0) for r in [*cons.values(), *run.dead_reports])
        since_origin = (time.time_ns() - run.origin_ns) / 1e9
        due = run.fault.due(committed, run.workload.events, run.injected, since_origin)
        for _ in range(due):
            run.injected += 1
            run.in_flight.append(self._inject(p.fault, run, cons))
        sample = Sample(
            elapsed_s=since_origin,
            published=sum(r["events"] for r in pubs),
            committed=committed,
            retries=sum(sum(r["retries"].values()) for r in cons.values()),
            consumers_alive=len(run.alive),
            phase=run.window.phase(math.floor(since_origin)) if run.window else "burst",
        )
        self.progress.update(sample)
        if now - run.last_sample >= SAMPLE_S:
            run.last_sample = now
            run.redis_peak = max(run.redis_peak, self._redis_used_mb(run.broker))
            run.samples.append(sample)
        deadline = p.timeout_s + (p.duration_s if p.open_loop else 0.0)
        if now - run.started > deadline:
            raise TrialError(f"not drained after {deadline:g} s: {run.broker.backlog()}")
        return pubs

    def _collect(self, run: _TrialState) -> dict[str, Any]:
        """Stop the actors and gather what they counted: totals, per-second series, the
        latency histograms, the steady window's figures."""
        p = run.trial.params
        alive = run.alive
        reports = ray.get([alive[i].stop.remote() for i in sorted(alive)])
        self._spares.extend(run.spares)  # not needed after all: kept for the next trial
        pub_reports = ray.get([pub.stop.remote() for pub in run.publishers])
        everyone = [*reports, *run.dead_reports]  # the killed ones as last seen
        # Keep the pool in step: killed consumers were replaced during the trial, and
        # ones that died by themselves are replaced now, before the next trial.
        for i in range(p.consumers):
            self._consumers[i] = alive[i] if i in alive else self._new_actor(ConsumerActor)
        first_ns = min(
            (r["first_publish_ns"] for r in pub_reports if r["first_publish_ns"]), default=0
        )
        last_ns = max((r["last_commit_ns"] for r in reports), default=0)
        injected, in_flight = run.injected, list(run.in_flight)
        if run.fault.kind == "publisher-retry":
            # each lost reply hit the round it belonged to, by construction
            injected = sum(r.get("replies_lost", 0) for r in pub_reports)
            in_flight = [1] * injected + [0] * max(0, run.fault.count - injected)
        per_second = PerSecond.merge(pub_reports, everyone)
        steady = (
            steady_mod.measure(per_second, run.window, offered_eps=p.rate, slo_p99_ms=p.slo_p99_ms)
            if run.window
            else SteadyState()
        )
        return {
            "consumers": reports,
            "latency": per_second.histogram(per_second.latencies),
            "steady": steady,
            "timeseries": timeseries(per_second, run.window, run.samples, p.consumers),
            "published": sum(r["events"] for r in pub_reports),
            "resent": sum(r["resent"] for r in pub_reports),
            "resent_uncertain": sum(r["resent_uncertain"] for r in pub_reports),
            "elapsed_s": (last_ns - first_ns) / 1e9
            if last_ns and first_ns
            else self._clock() - run.started,
            "first_ns": first_ns,
            "last_ns": last_ns,
            "consumers_died": p.consumers - len(alive),
            "abandoned": sum(r.get("gave_up", 0) for r in everyone),
            "reset_s": run.reset_s,
            "faults_injected": injected,
            "in_flight_at_fault": sum(in_flight),
            "faults_missed": sum(1 for hit in in_flight if hit == 0),
            # each publisher's producer id, and the entries it numbered (all confirmed)
            "producers": {
                r["producer"]: r["entries_numbered"] for r in pub_reports if r.get("producer")
            },
            "pruned": sum(r.get("pruned", 0) for r in everyone),
            "nodes": len(set(run.nodes)),
            # every actor's peak plus the driver's: what the trial needed in memory
            "rss_peak_mb": sum(r.get("rss_peak_mb", 0.0) for r in [*reports, *pub_reports])
            + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "redis_peak_mb": max(run.redis_peak, self._redis_used_mb(run.broker)),
        }

    @staticmethod
    def _redis_used_mb(channel: broker_mod.Broker) -> float:
        try:
            return float(channel.client.info("memory")["used_memory"]) / 2**20
        except redis.ConnectionError:
            return 0.0

    @staticmethod
    def _drained(broker: broker_mod.Broker) -> bool:
        try:
            return broker.backlog().drained
        except redis.ConnectionError:  # the broker is restarting: not drained yet
            return False

    def _inject(self, kind: str, run: _TrialState, reports: dict[int, dict[str, Any]]) -> int:
        """One fault, now, where it hits work in flight if there is any within
        :data:`FIND_S`. Returns what it hit: entries held by the killed consumer (the
        events it had in hand, on the list broker), transactions open (pg-terminate),
        entries delivered and not yet acknowledged (redis-client-kill), entries queued
        or in flight (redis-restart); 0 when it found nothing to hit."""
        alive = run.alive
        if kind == "kill-consumer":
            # SIGKILL-like: no cleanup, mid-batch. A new actor takes the same consumer
            # name, so it finds the entries its predecessor held in its pending list.
            index, hit, reports = self._victim(run, reports)
            run.dead_reports.append(reports.get(index, {}))
            if len(run.in_flight) % 2 == 1:
                # every other kill lands at the worst moment: right after a commit, before
                # its acknowledgement, so what it committed is delivered again (and must
                # be recognised); the others land wherever the victim is
                _crash_after_next_commit(alive[index])
            ray.kill(alive[index], no_restart=True)
            replacement = run.spares.pop() if run.spares else self._new_actor(ConsumerActor)
            ray.get(replacement.start.remote(run.configs[index], **run.consumer_setup))
            alive[index] = replacement
            return hit
        if kind == "pg-terminate":
            hit = _first_nonzero(lambda: self.store.busy_backends(faults_mod.CONSUMER_APPLICATION))
            self.store.terminate_backends(faults_mod.CONSUMER_APPLICATION)
            return hit
        channel = run.brokers["stream"]
        if kind == "redis-restart":
            assert self._managed is not None
            hit = _first_nonzero(lambda: run.broker.backlog().unacknowledged)
            self._managed.restart()
            return hit
        if kind == "redis-client-kill":
            hit = _first_nonzero(lambda: self._held(run))
            channel.kill_clients(self.keys.client_name("consumer"))
            channel.kill_clients(self.keys.client_name("publisher"))
            return hit
        raise TrialError(f"fault {kind!r} is not injected by the driver")  # pragma: no cover

    def _held(self, run: _TrialState) -> int:
        """What the consumers hold now: delivered, unacknowledged entries (stream), or
        events read and not committed, as they last said (the seed's list)."""
        pending = run.broker.pending_by_consumer()
        if pending or run.trial.params.broker == "stream":
            return sum(pending.values())
        return sum(r.get("in_hand", 0) for r in self._poll_consumers(run.alive).values())

    def _victim(
        self, run: _TrialState, reports: dict[int, dict[str, Any]]
    ) -> tuple[int, int, dict[int, dict[str, Any]]]:
        """The consumer to kill: one that holds work now (seeded among those that do),
        what it holds, and the freshest reports of the consumers."""
        names = {run.configs[i].name: i for i in run.alive}
        deadline = time.monotonic() + FIND_S
        while True:
            if run.trial.params.broker == "stream":
                pending = run.broker.pending_by_consumer()
                held = {names[n]: k for n, k in pending.items() if n in names and k > 0}
            else:
                reports = self._poll_consumers(run.alive) or reports
                held = {i: r.get("in_hand", 0) for i, r in reports.items() if r.get("in_hand")}
            if held:
                index = run.victims.choice(sorted(held))
                return index, held[index], reports
            if time.monotonic() > deadline:
                return run.victims.choice(sorted(run.alive)), 0, reports
            time.sleep(0.005)

    def _recover(self, consumers: int, publishers: int) -> None:
        """After a failed trial, stop what it started; replace actors that do not answer."""
        for pool, cls, n in (
            (self._consumers, ConsumerActor, consumers),
            (self._publishers, PublisherActor, publishers),
        ):
            for i, actor in enumerate(pool[:n]):
                try:
                    ray.get(actor.stop.remote(), timeout=30)
                except Exception:  # dead, stuck, or never started: start afresh
                    ray.kill(actor)
                    pool[i] = self._new_actor(cls)

    def _poll_consumers(self, alive: dict[int, Any]) -> dict[int, dict[str, Any]]:
        refs = {i: actor.progress.remote() for i, actor in alive.items()}
        reports = {}
        for i, ref in refs.items():
            try:
                reports[i] = ray.get(ref)
            except RayActorError:
                del alive[i]  # its pending entries are reclaimed by its peers
        return reports

    def _broker_lost(self, trial: Trial, outcome: dict[str, Any], confirmed: int) -> int:
        """Events Redis confirmed to a publisher that never reached the store: those of the
        confirmed entries whose identity is not among the applied ones. Only a Redis that
        crashed can lose them (``redis-restart``, before its AOF synced), so it is counted
        there, and only while every identity is still remembered (nothing pruned)."""
        producers = outcome["producers"]
        if trial.params.fault != "redis-restart" or not producers or outcome["pruned"]:
            return 0
        _, applied = self.store.applied_entries(list(producers))
        return max(0, confirmed - applied)

    def _verify(
        self, trial: Trial, generator: Generator, outcome: dict[str, Any] | None, error: str | None
    ) -> TrialResult:
        counters = self.store.counters()
        stored = (
            self.store.verify(generator.expected_keys()) if outcome else Verification(0, 0, 0, 0)
        )
        reports = outcome["consumers"] if outcome else []
        retries: dict[str, int] = {}
        for r in reports:
            for state, n in r["retries"].items():
                retries[state] = retries.get(state, 0) + n
        published = outcome["published"] if outcome else 0
        verdict = invariants.Verdict(violations=(), anomalies=(), lost_updates=0)
        resent = outcome["resent"] if outcome else 0
        uncertain = outcome["resent_uncertain"] if outcome else 0
        rejected = sum(r["rejected"] for r in reports)
        broker_lost = 0
        if outcome:
            if published != generator.total:
                error = f"publishers sent {published} events, the workload has {generator.total}"
            broker_lost = self._broker_lost(trial, outcome, generator.total + resent - rejected)
            evidence = invariants.Evidence(
                # Rounds sent again as new after a lost reply are receipts of their own;
                # after a real connection error they keep their identities, and a copy
                # that arrived twice is recognised.
                published=generator.total + resent,
                expected_unique=generator.expected_unique,
                counters=counters,
                stored=stored,
                broker_lost=broker_lost,
                counter=trial.params.counter,
                isolation=trial.params.isolation,
                broker=trial.params.broker,
                fault=trial.params.fault,
                appendfsync=trial.params.appendfsync,
                abandoned=outcome["abandoned"],
            )
            verdict = invariants.classify(evidence)
        hist = outcome["latency"] if outcome else latency.new()
        steady = outcome["steady"] if outcome else SteadyState()
        return TrialResult(
            trial=trial,
            events_published=published,
            expected_unique=generator.expected_unique,
            received=counters.received,
            unique_processed=counters.unique_processed,
            duplicate_dropped=counters.duplicate_dropped,
            db_rows=stored.rows,
            lost=stored.lost,
            unexpected=stored.unexpected,
            double_applied=stored.rows - stored.distinct_keys,
            redelivered=counters.redelivered,
            rejected=rejected,
            elapsed_s=outcome["elapsed_s"] if outcome else 0.0,
            started_ns=outcome["first_ns"] if outcome else 0,
            ended_ns=outcome["last_ns"] if outcome else 0,
            reset_s=outcome["reset_s"] if outcome else math.nan,
            **latency.summary_ms(hist),
            steady=steady,
            retries=sum(retries.values()),
            serialization_failures=retries.get(SERIALIZATION_FAILURE, 0),
            deadlocks=retries.get(DEADLOCK_DETECTED, 0),
            connection_retries=retries.get("connection", 0),
            violations=verdict.violations,
            anomalies=verdict.anomalies,
            lost_updates=verdict.lost_updates,
            faults_injected=outcome["faults_injected"] if outcome else 0,
            in_flight_at_fault=outcome["in_flight_at_fault"] if outcome else 0,
            faults_missed=outcome["faults_missed"] if outcome else 0,
            resent=resent,
            recovered=uncertain if outcome and stored.lost == 0 else 0,
            broker_lost=broker_lost,
            nodes=outcome["nodes"] if outcome else 0,
            rss_peak_mb=outcome["rss_peak_mb"] if outcome else math.nan,
            redis_peak_mb=outcome["redis_peak_mb"] if outcome else math.nan,
            error=error,
        )


def _crash_after_next_commit(actor: Any) -> bool:
    """Arm a consumer actor to exit after its next commit, and wait until it has; ``False``
    when it had not within :data:`CRASH_WAIT_S` (nothing to commit)."""
    try:
        ray.get(actor.crash_after_next_commit.remote())
    except RayActorError:
        return True
    deadline = time.monotonic() + CRASH_WAIT_S
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ready.remote(), timeout=1)
        except (RayActorError, ray.exceptions.GetTimeoutError):
            return True
        time.sleep(0.005)
    return False
