"""harness.bench.cpu: which part of the system a process is, and CPU seconds over a window."""

from __future__ import annotations

import pytest

from harness.bench import cpu


@pytest.mark.parametrize(
    ("name", "cmdline", "role"),
    [
        ("postgres", ["postgres: 15/main: postgres postgres 127.0.0.1(4242) INSERT"], "postgres"),
        ("redis-server", ["redis-server 127.0.0.1:6379"], "redis"),
        ("ray::ConsumerAc", ["ray::ConsumerActor"], "consumers"),
        ("ray::ConsumerAc", ["ray::ConsumerActor.run"], "consumers"),
        ("ray::PublisherA", ["ray::PublisherActor"], "publishers"),
        ("ray::BenchWorke", ["ray::BenchWorker.apply_batches"], "store workers"),
        ("ray::IDLE", ["ray::IDLE"], "ray"),
        ("raylet", ["/x/site-packages/ray/core/src/ray/raylet/raylet", "--flag"], "ray"),
        ("python", ["python", "-u", "/x/site-packages/ray/dashboard/agent.py"], "ray"),
        ("beam.smp", ["/usr/lib/erlang/erts/bin/beam.smp", "-W", "w"], None),
        ("bash", ["bash"], None),
    ],
)
def test_processes_are_told_apart_by_name_and_command_line(
    name: str, cmdline: list[str], role: str | None
) -> None:
    assert cpu.role_of(name, cmdline) == role


def test_the_driver_is_the_driver_whatever_it_runs() -> None:
    assert cpu.role_of("python", ["python", "-m", "harness"], driver=True) == "driver"


def test_a_series_interpolates_between_samples_and_holds_at_its_ends() -> None:
    series = cpu._Series("consumers")
    series.add(1_000, 2.0)
    series.add(3_000, 4.0)
    assert series.at(2_000) == pytest.approx(3.0)
    assert series.at(0) == 2.0  # before the first sample: nothing counted yet
    assert series.at(9_000) == 4.0  # after the last (a process that ended)


def test_per_event_microseconds() -> None:
    assert cpu.per_event_us({"postgres": 2.0, "redis": 0.5}, 100_000) == {
        "postgres": pytest.approx(20.0),
        "redis": pytest.approx(5.0),
    }
    assert cpu.per_event_us({"postgres": 2.0}, 0) == {}
