"""The CPU sampler against a real busy loop: it burns CPU and times it, so it is not a
unit test (the unit tier measures neither CPU nor wall time)."""

from __future__ import annotations

import hashlib
import time

import pytest

from harness.bench import cpu

pytestmark = pytest.mark.integration


def test_the_sampler_sees_the_driver_burn_cpu_within_the_window() -> None:
    with cpu.CpuSampler(interval_s=0.05) as sampler:
        time.sleep(0.2)
        start = time.time_ns()
        digest = b"x"
        while time.time_ns() - start < 400_000_000:
            digest = hashlib.sha256(digest).digest()
        end = time.time_ns()
        time.sleep(0.2)
    window = sampler.window(start, end)
    assert set(window) == {*cpu.ROLES, *cpu.MACHINE}
    # 0.4 s of a busy loop: most of it is the driver's, none of it PostgreSQL's
    assert 0.1 < window["driver"] < 0.6
    assert window["busy"] >= window["driver"] * 0.9
    # outside the busy loop the driver sleeps
    assert sampler.window(end + 60_000_000, end + 180_000_000)["driver"] < 0.05
