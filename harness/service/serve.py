"""``harness serve``: the HTTP service and its consumers, each in its own process.

The consumers do not share an interpreter (and its GIL) with the HTTP process: each
runs in its own process (:func:`harness.service.aggregator.run_consumer`), watched and restarted
should it die. The HTTP side is uvicorn with ``workers`` processes on one socket, each
running :func:`harness.service.app.create_app` without consumers. Metrics add up across all
of them through ``prometheus_client``'s multiprocess mode (a directory of this run's
own, removed at the end).

Every child goes when the parent goes, even by ``SIGKILL`` (Linux's parent-death
signal): none is left holding the port or reading the stream. A consumer stops after
the batch in hand; what it read and did not commit stays pending and is taken up by its
successor of the same name.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson
import psutil

from harness.infra.config import Settings
from harness.service.aggregator import METRICS_ENV, ServiceConfig

#: the service's configuration, for the HTTP worker processes (JSON)
CONFIG_ENV = "HARNESS_SERVICE_CONFIG"
#: a run's metrics directory: this, its process id, a random part
METRICS_PREFIX = "harness-metrics-"
#: how long a stopping consumer may take to finish its batch
STOP_WAIT_S = 30.0
_PR_SET_PDEATHSIG = 1


def serve(settings: Settings, config: Any, *, access_log: bool = False) -> None:
    """Run the service until interrupted: ``config.consumers`` consumer processes and
    ``config.workers`` HTTP processes (a :class:`harness.service.aggregator.ServiceConfig`)."""
    import uvicorn

    config = dataclasses.replace(config, consumers_in_process=False)
    _sweep_metrics_dirs()
    metrics_dir = tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-")
    os.environ[METRICS_ENV] = metrics_dir
    os.environ[CONFIG_ENV] = orjson.dumps(dataclasses.asdict(config)).decode()
    for field in ("pg_dsn", "redis_url", "pg_schema", "key_prefix"):
        os.environ[f"HARNESS_{field.upper()}"] = str(getattr(settings, field))
    consumers = Consumers(settings, config)
    try:
        consumers.start()
        uvicorn.run(
            "harness.service.serve:app",
            factory=True,
            host=config.host,
            port=config.port,
            workers=config.workers,
            log_level="warning",
            access_log=access_log,
        )
    finally:
        consumers.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _sweep_metrics_dirs() -> None:
    """Remove the metrics directories of services that are gone (a ``SIGKILL`` leaves its
    directory behind)."""
    for path in Path(tempfile.gettempdir()).glob(f"{METRICS_PREFIX}*-*"):
        pid = path.name[len(METRICS_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def check_address(host: str, port: int) -> None:
    """``ValueError`` saying why the service cannot listen on ``host:port``, before any
    process is started (uvicorn would only say so after the consumers had started)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def app() -> Any:
    """The app of one HTTP worker process (uvicorn's factory), configured by
    :func:`serve` through the environment."""
    from harness.service.app import create_app

    if multiprocessing.parent_process() is not None:
        die_with_parent()
    config = ServiceConfig(**orjson.loads(os.environ[CONFIG_ENV]))
    return create_app(Settings.from_env(), config)


class Consumers:
    """The consumer processes: started, restarted should one die, stopped together."""

    def __init__(self, settings: Settings, config: Any) -> None:
        self.settings = settings
        self.config = config
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._procs: dict[int, multiprocessing.process.BaseProcess] = {}
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="consumers", daemon=True)

    def start(self) -> None:
        for index in range(self.config.consumers):
            self._spawn(index)
        self._watcher.start()

    def _spawn(self, index: int) -> None:
        config = self.config
        if index in self._procs:  # a fault injected once is not injected again
            config = dataclasses.replace(config, crash_after_commits=None)
        proc = self._context.Process(
            target=_consumer_main,
            args=(self.settings, config, index, self._stop, os.getpid()),
            name=f"{self.config.name}-{index}",
            daemon=True,
        )
        proc.start()
        self._procs[index] = proc

    def _watch(self) -> None:
        while not self._done.wait(1.0):
            for index, proc in list(self._procs.items()):
                if not proc.is_alive() and not self._done.is_set():
                    print(
                        f"consumer {proc.name} exited ({proc.exitcode}); starting it again",
                        file=sys.stderr,
                    )
                    self._spawn(index)

    def stop(self) -> None:
        self._done.set()
        self._stop.set()
        for proc in self._procs.values():
            proc.join(STOP_WAIT_S)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def _consumer_main(
    settings: Settings,
    config: Any,
    index: int,
    stop: multiprocessing.synchronize.Event,
    parent: int,
) -> None:
    """A consumer process: runs until the parent says stop, or goes away."""
    from harness.service.aggregator import ConsumerMetrics, run_consumer

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    die_with_parent(parent)

    def relay() -> None:  # the parent's stop, as the threading.Event run_consumer takes
        stop.wait()
        done.set()

    threading.Thread(target=relay, daemon=True).start()
    run_consumer(settings, config, index, done, ConsumerMetrics(None))


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux), and
    exit at once if it already has."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent is not None and os.getppid() != parent:
        os._exit(0)  # the parent went before the signal was armed
