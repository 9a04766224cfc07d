"""Starting or attaching to Ray quietly."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from harness.infra.config import Settings

#: Logical CPUs of a local Ray: actors ask for a fraction of one, so this bounds nothing
#: but lets Ray place many light actors on a small machine.
LOCAL_NUM_CPUS = 2


def _quiet_environment(settings: Settings) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token warning, no ~/.ray file
    os.environ.setdefault("RAY_worker_maximum_startup_concurrency", "32")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_TMPDIR", settings.ray_tmpdir)
    # Ray runs its workers at nice 15, below everything else. Our actors are the workload
    # (a publisher is a client, a consumer a service process), so they compete for the CPU
    # as PostgreSQL and Redis do: at 15 they wait behind both, and the wait shows as
    # latency that a real deployment would not have.
    os.environ.setdefault("RAY_worker_niceness", "0")


def init(settings: Settings) -> dict[str, Any]:
    """Start a local Ray, or attach to ``settings.ray_address``. Returns cluster facts."""
    _quiet_environment(settings)
    import ray

    kwargs: dict[str, Any] = {
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "configure_logging": True,
    }
    if settings.ray_address:
        # Ship this package to the cluster's workers; its dependencies must be installed
        # on every node (pip install -e . there, or a container image with them).
        package = str(Path(__file__).resolve().parents[1])
        ray.init(address=settings.ray_address, runtime_env={"py_modules": [package]}, **kwargs)
    else:
        os.makedirs(settings.ray_tmpdir, exist_ok=True)
        ray.init(
            num_cpus=LOCAL_NUM_CPUS,
            include_dashboard=False,
            _temp_dir=settings.ray_tmpdir,
            **kwargs,
        )
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {
        "ray_address": settings.ray_address or "local",
        "ray_nodes": len(nodes),
        "ray_cpus": ray.cluster_resources().get("CPU", 0),
    }


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
