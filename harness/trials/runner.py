"""Runs trials, phase by phase: set up → offer load → drain → collect → verify.

The driver only orchestrates. Actors publish and consume by themselves; the driver
polls their counters a few times a second for the live line and to inject faults, and
learns when the stream is drained from Redis. The figures come from what the actors
counted themselves, second by second (:mod:`harness.model.steady`).
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from collections.abc import Callable, Container
from typing import Any

import ray
import redis
from ray.exceptions import RayActorError

from harness.delivery import broker as broker_mod
from harness.delivery.keys import Keys
from harness.infra.config import Settings
from harness.model import steady as steady_mod
from harness.model.generator import Generator, Workload
from harness.model.modes import replicas_waited_for
from harness.model.steady import PerSecond, SteadyState
from harness.pipeline.consumer import ConsumerConfig
from harness.pipeline.publisher import PublishPlan
from harness.store.postgres import Store
from harness.trials import faults as faults_mod
from harness.trials import verify
from harness.trials.actors import ConsumerActor, PublisherActor, ServiceActor
from harness.trials.faults import FaultPlan
from harness.trials.params import Trial
from harness.trials.results import TrialResult
from harness.trials.servers import TrialServers
from harness.trials.state import (
    FaultWindow,
    NoProgress,
    Outcome,
    Progress,
    Sample,
    TrialError,
    TrialState,
    timeseries,
)
from harness.trials.target import FaultTarget, continue_paused

POLL_S = 0.1
#: the longest pause between polls of a trial without faults: each poll is a Ray call to
#: every actor, which costs the driver and the actors CPU the pipeline could use, and the
#: measured duration runs from the actors' own time stamps, not from the polls
POLL_MAX_S = 0.25
SAMPLE_S = 1.0


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
        #: the servers a trial runs for itself (a fault that crashes one, a standby)
        self._own = TrialServers(self.keys, settings.pg_schema)

    def close(self) -> None:
        self._own.stop()
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
        error: str | None = None
        try:
            outcome = self._execute(trial, workload, timeseries)
        except TrialError as exc:
            outcome, error = Outcome.failed(), str(exc)
        except Exception as exc:  # recorded as the trial's error; the sweep goes on
            outcome = Outcome.failed()
            error = f"{type(exc).__name__}: {exc}".strip()[:500]
        if not outcome.ran:
            self._recover(p.consumers, p.publishers)
        try:
            result = verify.result(self._trial_store, trial, generator, outcome, error)
        finally:
            self._own.stop()
        self.progress.trial_finished(result)
        return result, timeseries

    @property
    def _trial_store(self) -> Store:
        """The store of the trial going on: its own PostgreSQL's, or the run's."""
        return self._own.store or self.store

    # -- the phases of a trial ----------------------------------------------------------
    #
    # set up → offer load (warm-up, then the measured window, or a burst) → drain →
    # collect (stop the actors, gather what they counted, measure the window) → verify.

    def _execute(
        self, trial: Trial, workload: Workload, timeseries: list[dict[str, Any]]
    ) -> Outcome:
        run = self._set_up(trial, workload)
        try:
            self._offer_load(run)
            self._drain(run)
        finally:
            self._continue_paused(run, every=True)  # never leave a consumer stopped
        outcome, series = self._collect(run)
        timeseries.extend(series)
        return outcome

    def _set_up(self, trial: Trial, workload: Workload) -> TrialState:
        """Reset the stores, start the consumers, plan each publisher's slice."""
        p = trial.params
        kind = faults_mod.fault(p.fault)
        # a fault that crashes a server gets servers of the trial's own (trials.servers)
        redis_url = self._own.start_redis(kind, p) or self.settings.redis_url
        brokers, pg_dsn = self._own.brokers or self.brokers, self._own.start_postgres(kind, p)
        broker = brokers[p.broker]
        reset_from = self._clock()
        self._trial_store.reset()
        broker.reset()
        brokers["stream"].reset()  # the consumer group exists whatever the broker
        reset_s = self._clock() - reset_from
        consumers = self._actors(self._consumers, ConsumerActor, p.consumers)
        publishers = self._actors(self._publishers, PublisherActor, p.publishers)
        spares = self._take_spares(p.faults if kind.spares else 0)
        ray.get([a.ready.remote() for a in [*consumers, *publishers, *spares]])  # slow to start
        ingress_url = self._ingress_url() if p.ingress == "http" else None
        # The trial's clock origin, and its window, are its load's (trials.roles)
        load = trial.role.load
        origin_ns = load.origin_ns(time.time_ns())
        configs = _consumer_configs(trial, origin_ns)
        setup = {
            "isolation": p.isolation,
            "prefix": self.keys.prefix,
            "counter": p.counter,
            "broker": p.broker,
            "redis_url": redis_url,
            "pg_dsn": pg_dsn,
        }
        nodes = ray.get(
            [c.start.remote(cfg, **setup) for c, cfg in zip(consumers, configs, strict=True)]
        )
        window = load.window(p)
        # faults land at seeded times in the measured window, or shares of a burst's work
        fault = FaultPlan.draw(
            p.fault, p.faults, trial.seed, (window.first, window.end) if window else None
        )
        return TrialState(
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
            fault_plan=fault,
            plans=_publish_plans(trial, workload, fault, origin_ns),
            origin_ns=origin_ns,
            window=window,
            nodes=list(nodes),
            victims=faults_mod.rng_for(trial.seed, p.fault),
            reset_s=reset_s,
            redis_peak=self._redis_used_mb(broker),
        )

    def _take_spares(self, n: int) -> list[Any]:
        """Successors for the consumers a trial kills, started now: a new actor process
        takes a second or two to come up, which would make the faults after the first
        land late."""
        if n == 0:
            return []
        spares = self._actors(self._spares, ConsumerActor, n)
        self._spares = self._spares[n:]
        return spares

    def _offer_load(self, run: TrialState) -> None:
        """Start the publishers and watch until every one has sent its slice."""
        p = run.trial.params
        if not run.trial.role.load.open_loop:
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

    def _drain(self, run: TrialState) -> None:
        """Watch until the broker holds nothing undelivered or unacknowledged."""
        while not self._drained(run.broker):
            self._poll(run)

    def _poll(self, run: TrialState) -> list[dict[str, Any]]:
        """Wait a little, then one look at the trial: errors, faults due, a sample.
        Returns the publishers' reports."""
        p = run.trial.params
        # Faults are injected at a poll, so trials with faults poll often throughout;
        # the others poll often at first (short trials end soon) and less later.
        elapsed = self._clock() - run.started
        time.sleep(POLL_S if run.fault_plan.driver_side else min(POLL_MAX_S, POLL_S + elapsed / 4))
        now = self._clock()
        self._continue_paused(run)
        pubs = ray.get([pub.progress.remote() for pub in run.publishers])
        polled = self._poll_consumers(run.alive, skip=run.paused)
        for report in [*pubs, *polled.values()]:
            if report["error"]:
                raise TrialError(report["error"].strip().splitlines()[-1])
        if not run.alive:
            raise TrialError("every consumer died")
        # a paused consumer answers nothing: it counts as it last said
        cons = {**{i: pause.report for i, pause in run.paused.items()}, **polled}
        committed = sum(r.get("received", 0) for r in [*cons.values(), *run.dead_reports])
        since_origin = run.since_origin()
        due = run.fault_plan.due(committed, run.workload.events, run.injected, since_origin)
        if due:
            self._inject(run, cons, due)
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
        deadline = run.trial.role.load.deadline_s(p)
        if now - run.started > deadline:
            raise TrialError(f"not drained after {deadline:g} s: {run.broker.backlog()}")
        return pubs

    def _inject(self, run: TrialState, reports: dict[int, dict[str, Any]], due: int) -> None:
        """Inject the faults due, each in a window of its own; one that cannot land yet
        (a pause while another goes on) waits for a later poll."""
        kind, target = run.fault_plan.fault, self._target(run, reports)
        for _ in range(due):
            if not kind.ready(target):
                return
            target.window = window = FaultWindow(run.since_origin())
            run.windows.append(window)
            run.injected += 1
            run.in_flight.append(kind.inject(target))
            if not kind.lasting:
                window.end_s = run.since_origin()

    def _continue_paused(self, run: TrialState, *, every: bool = False) -> None:
        continue_paused(
            run,
            lambda: self._poll_consumers(run.alive, skip=run.paused),
            now=self._clock(),
            every=every,
        )

    def _collect(self, run: TrialState) -> tuple[Outcome, list[dict[str, Any]]]:
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
        per_second = PerSecond.merge(pub_reports, everyone)
        steady = (
            steady_mod.measure(per_second, run.window, offered_eps=p.rate, slo_p99_ms=p.slo_p99_ms)
            if run.window
            else SteadyState()
        )
        outcome = Outcome(
            consumers=reports,
            latency=per_second.histogram(per_second.latencies),
            steady=steady,
            published=sum(r["events"] for r in pub_reports),
            resent=sum(r["resent"] for r in pub_reports),
            resent_uncertain=sum(r["resent_uncertain"] for r in pub_reports),
            elapsed_s=(last_ns - first_ns) / 1e9
            if last_ns and first_ns
            else self._clock() - run.started,
            first_ns=first_ns,
            last_ns=last_ns,
            consumers_died=p.consumers - len(alive),
            abandoned=sum(r.get("gave_up", 0) for r in everyone),
            reset_s=run.reset_s,
            **_faults_of(run, pub_reports),
            committed_keys=frozenset().union(*(r.get("committed_keys", ()) for r in reports)),
            producers={
                r["producer"]: r["entries_numbered"] for r in pub_reports if r.get("producer")
            },
            pruned=sum(r.get("pruned", 0) for r in everyone),
            nodes=len(set(run.nodes)),
            # every actor's peak plus the driver's: what the trial needed in memory
            rss_peak_mb=sum(r.get("rss_peak_mb", 0.0) for r in [*reports, *pub_reports])
            + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            redis_peak_mb=max(run.redis_peak, self._redis_used_mb(run.broker)),
        )
        return outcome, timeseries(per_second, run.window, run.samples, p.consumers)

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

    def _target(self, run: TrialState, reports: dict[int, dict[str, Any]]) -> FaultTarget:
        return FaultTarget(
            run=run,
            store=self._trial_store,
            own_postgres=self._own.postgres,
            keys=self.keys,
            managed=self._own.redis,
            new_consumer=lambda: self._new_actor(ConsumerActor),
            poll_consumers=self._poll_consumers,
            reports=reports,
        )

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

    def _poll_consumers(
        self, alive: dict[int, Any], skip: Container[int] = ()
    ) -> dict[int, dict[str, Any]]:
        """The reports of the live consumers but ``skip`` (paused ones answer nothing);
        drops the ones that died from ``alive``."""
        refs = {i: actor.progress.remote() for i, actor in alive.items() if i not in skip}
        reports = {}
        for i, ref in refs.items():
            try:
                reports[i] = ray.get(ref)
            except RayActorError:
                del alive[i]  # its pending entries are reclaimed by its peers
        return reports


def _faults_of(run: TrialState, pub_reports: list[dict[str, Any]]) -> dict[str, Any]:
    """What the trial's faults did, as :class:`Outcome` records it: how many landed,
    what they hit, which missed, when each began and ended, what each found."""
    injected, in_flight = run.injected, list(run.in_flight)
    if run.fault_plan.fault.publisher_side:
        # each lost reply hit the round it belonged to, by construction
        injected = sum(r.get("replies_lost", 0) for r in pub_reports)
        in_flight = [1] * injected
    # a planned fault that never landed (the trial ended first) hit nothing
    in_flight += [0] * max(0, run.fault_plan.count - injected)
    return {
        "faults_injected": injected,
        "in_flight_at_fault": sum(in_flight),
        "faults_missed": sum(1 for hit in in_flight if hit == 0),
        "fault_windows": ";".join(w.text() for w in run.windows),
        "fault_details": ";".join(w.detail for w in run.windows),
    }


def _consumer_configs(trial: Trial, origin_ns: int) -> list[ConsumerConfig]:
    p = trial.params
    return [
        ConsumerConfig(
            name=f"consumer-{i}",
            batch_size=p.batch_size,
            entry_size=p.entry_size,
            claim_idle_ms=p.claim_idle_ms,
            linger_ms=p.linger_ms,
            recognise=p.redelivery == "recognised",
            record_commits=faults_mod.fault(p.fault).records_commits,
            shard=i,  # used by the sharded counter strategy only
            origin_ns=origin_ns,
        )
        for i in range(p.consumers)
    ]


def _publish_plans(
    trial: Trial, workload: Workload, fault: FaultPlan, origin_ns: int
) -> list[PublishPlan]:
    """Each publisher's slice of the workload, with the replies it loses (publisher-retry)."""
    p = trial.params
    plans = PublishPlan.split(
        workload,
        p.publishers,
        entry_size=p.entry_size,
        pipeline=p.publish_pipeline,
        max_backlog=p.max_backlog,
        ahead=p.generate == "ahead",
        rate=p.rate,
        origin_ns=origin_ns,
        replicas=replicas_waited_for(p.redis_replica),
    )
    per_round = p.entry_size * p.publish_pipeline
    lost_rounds = fault.publisher_rounds([-(-pl.events // per_round) for pl in plans])
    lost_times = fault.publisher_times(len(plans), origin_ns)
    return [
        dataclasses.replace(pl, lose_replies=r, lose_replies_at_ns=t)
        for pl, r, t in zip(plans, lost_rounds, lost_times, strict=True)
    ]
