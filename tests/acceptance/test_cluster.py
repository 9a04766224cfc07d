"""The same trial on a Ray cluster of two nodes (ray.cluster_utils.Cluster, in-process)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from harness.infra.config import Settings
from harness.trials import cluster as cluster_mod
from harness.trials.experiment import Trial, TrialParams
from harness.trials.runner import Runner

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]


@pytest.fixture
def two_nodes(settings: Settings) -> Iterator[Settings]:
    ray_cluster_utils = pytest.importorskip("ray.cluster_utils")
    cluster = ray_cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield dataclasses.replace(settings, ray_address=cluster.address)
    finally:
        cluster_mod.shutdown()
        cluster.shutdown()


def test_actors_spread_over_nodes_and_invariants_hold(two_nodes: Settings) -> None:
    facts: dict[str, Any] = cluster_mod.init(two_nodes)
    assert facts["ray_nodes"] == 2
    runner = Runner(two_nodes)
    try:
        params = TrialParams(publishers=2, consumers=4, events=5000)
        result, _ = runner.run(Trial(index=0, repeat=0, seed=1, params=params))
    finally:
        runner.close()
    assert result.invariant_ok, (result.error, result.violations)
    assert result.nodes == 2  # SPREAD put actors on both nodes
    assert result.received == 5000 and result.lost == 0 and result.double_applied == 0
    assert result.unique_processed == result.expected_unique == result.db_rows
