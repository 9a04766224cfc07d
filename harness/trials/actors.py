"""Ray actors that run publishers and consumers where Ray places them.

Each actor talks to Redis and PostgreSQL itself and runs its loop on a thread of its
own, so that the driver can poll ``progress()`` (a few calls a second, never one per
event) while the work goes on. Actors are kept across the trials of a run.
"""

from __future__ import annotations

import gc
import os
import resource
import threading
import time
import traceback
from typing import Any

import httpx
import ray
import uvicorn

from harness.delivery import broker as broker_mod
from harness.delivery.keys import Keys
from harness.infra.config import Settings
from harness.infra.processes import free_port
from harness.pipeline.consumer import Consumer, ConsumerConfig
from harness.pipeline.http_publisher import HttpPublisher
from harness.pipeline.publisher import Publisher, PublishPlan
from harness.store.postgres import Store
from harness.trials.faults import CONSUMER_APPLICATION

#: Fraction of a CPU each actor asks Ray for: 20 actors per logical CPU. The work is
#: mostly waiting on Redis and PostgreSQL, and Ray never caps real CPU use.
ACTOR_CPUS = 0.05


def _rss_peak_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Runner:
    """A loop on a thread, with its error kept for the driver."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: str | None = None

    def start(self, target: Any) -> None:
        self._stop = threading.Event()
        self.error = None
        # Everything alive now (Ray, the libraries, the connections) lives as long as
        # the actor: out of the collector's sight, so that the loop's full collections
        # do not walk it again and again. Collect first, so no garbage is frozen with it.
        gc.collect()
        gc.freeze()

        def guarded() -> None:
            try:
                target(self._stop)
            except BaseException:
                self.error = traceback.format_exc(limit=8)

        self._thread = threading.Thread(target=guarded, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


@ray.remote(num_cpus=ACTOR_CPUS, max_restarts=0)
class ConsumerActor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runner = _Runner()
        self.consumer: Consumer | None = None

    def ready(self) -> str:
        """Answers once the actor's process is up; returns the node it runs on."""
        return str(ray.get_runtime_context().get_node_id())

    def start(
        self,
        config: ConsumerConfig,
        *,
        isolation: str,
        prefix: str,
        counter: str = "atomic",
        broker: str = "stream",
        redis_url: str | None = None,
        pg_dsn: str | None = None,
    ) -> str:
        """Connect, then consume on a thread. Returns the node it runs on. ``redis_url``,
        ``pg_dsn``: a trial's own servers, instead of the run's."""
        store = Store(
            pg_dsn or self.settings.pg_dsn,
            schema=self.settings.pg_schema,
            isolation=isolation,
            counter=counter,
            application_name=CONSUMER_APPLICATION,
        )
        store.connect()  # now, so the trial starts with every consumer ready
        channel = broker_mod.open_broker(
            broker, redis_url or self.settings.redis_url, Keys(prefix), role="consumer"
        )
        channel.client.ping()
        self.consumer = Consumer(channel, store, config)
        self.runner.start(self.consumer.run)
        return str(ray.get_runtime_context().get_node_id())

    def crash_after_next_commit(self) -> None:
        """Fault injection: this actor's process exits right after its next commit, before
        the acknowledgement (see :meth:`Consumer.crash_after_next_commit`)."""
        assert self.consumer is not None
        self.consumer.crash_after_next_commit()

    def pause_after_next_commit(self, within_s: float | None = None) -> None:
        """Fault injection: this actor's process stops itself right after its next commit,
        before the acknowledgement (see :meth:`Consumer.pause_after_next_commit`). The
        reply may never come before the process is continued: it can stop before this
        call has answered, so the caller must not wait for it."""
        assert self.consumer is not None
        self.consumer.pause_after_next_commit(within_s)

    def pid(self) -> int:
        """The actor's process, for a fault that stops and continues it."""
        return os.getpid()

    def progress(self) -> dict[str, Any]:
        assert self.consumer is not None
        return {
            **self.consumer.stats.snapshot(),
            "rss_peak_mb": _rss_peak_mb(),
            "running": self.runner.running,
            "error": self.runner.error,
        }

    def stop(self) -> dict[str, Any]:
        """Finish the batch in hand, disconnect, and report (with the latency histograms)."""
        self.runner.stop()
        if self.consumer is None:
            return {}
        self.consumer.store.close()
        self.consumer.broker.client.close()
        stats = self.consumer.stats
        return {
            **self.progress(),
            "latencies": stats.encoded_latencies(),
            "committed_keys": stats.committed_keys,
        }


@ray.remote(num_cpus=ACTOR_CPUS, max_restarts=0)
class PublisherActor:
    """Publishes its slice of the workload: straight to Redis, or over HTTP to a service."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runner = _Runner()
        self.publisher: Publisher | HttpPublisher | None = None
        self._close: Any = None

    def ready(self) -> str:
        """Answers once the actor's process is up; returns the node it runs on."""
        return str(ray.get_runtime_context().get_node_id())

    def start(
        self,
        plan: PublishPlan,
        *,
        prefix: str,
        ingress_url: str | None = None,
        broker: str = "stream",
        redis_url: str | None = None,
    ) -> str:
        publisher: Publisher | HttpPublisher
        if ingress_url:
            http = httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))
            publisher, self._close = HttpPublisher(http, ingress_url), http.close
        else:
            channel = broker_mod.open_broker(
                broker, redis_url or self.settings.redis_url, Keys(prefix), role="publisher"
            )
            channel.client.ping()
            publisher = Publisher(channel)
            self._close = channel.client.close
        self.publisher = publisher
        self.runner.start(lambda stop: publisher.run(plan, stop))
        return str(ray.get_runtime_context().get_node_id())

    def progress(self) -> dict[str, Any]:
        assert self.publisher is not None
        stats = self.publisher.stats
        return {
            "events": stats.events,
            "entries": stats.entries,
            "backpressure_s": stats.backpressure_s,
            "first_publish_ns": stats.first_publish_ns,
            "http_retries": getattr(stats, "retries", 0),
            "resent": stats.resent,
            "replies_lost": stats.replies_lost,
            "resent_uncertain": stats.resent_uncertain,
            "producer": stats.producer,
            "entries_numbered": stats.entries_numbered,
            **stats.per_second(),
            "rss_peak_mb": _rss_peak_mb(),
            "running": self.runner.running,
            "error": self.runner.error,
        }

    def stop(self) -> dict[str, Any]:
        self.runner.stop()
        if self.publisher is None:
            return {}
        self._close()
        return self.progress()


@ray.remote(num_cpus=ACTOR_CPUS, max_restarts=0)
class ServiceActor:
    """The HTTP service, ingress only (no consumers), for ``ingress = http`` trials."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> str:
        """Serve on a free port of this node; returns the URL publishers should use."""
        from harness.service.aggregator import ServiceConfig
        from harness.service.app import create_app

        host = ray.util.get_node_ip_address()
        port = free_port(host)
        app = create_app(self.settings, ServiceConfig(host=host, port=port, consumers=0))
        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        url = f"http://{host}:{port}"
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP service did not start on {url}")
            time.sleep(0.05)
        return url

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(30)
