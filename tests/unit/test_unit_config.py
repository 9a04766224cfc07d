"""Settings: defaults < HARNESS_* environment < explicit overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.infra.config import DEFAULT_PG_DSN, DEFAULT_REDIS_URL, Settings


def test_defaults_with_an_empty_environment() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.pg_dsn, s.redis_url) == (DEFAULT_PG_DSN, DEFAULT_REDIS_URL)
    assert s.ray_address is None
    assert isinstance(s.results_dir, Path)


def test_environment_overrides_defaults() -> None:
    env = {
        "HARNESS_PG_DSN": "postgresql://env@db/x",
        "HARNESS_REDIS_URL": "redis://env:6379/1",
        "HARNESS_PG_SCHEMA": "env_schema",
        "HARNESS_KEY_PREFIX": "env-prefix",
        "HARNESS_RAY_ADDRESS": "10.0.0.1:6379",
        "HARNESS_RAY_TMPDIR": "/tmp/env-ray",
        "HARNESS_RESULTS_DIR": "/tmp/env-results",
        "UNRELATED": "ignored",
    }
    s = Settings.from_env(env)
    assert s.pg_dsn == "postgresql://env@db/x"
    assert s.redis_url == "redis://env:6379/1"
    assert s.pg_schema == "env_schema"
    assert s.key_prefix == "env-prefix"
    assert s.ray_address == "10.0.0.1:6379"
    assert s.ray_tmpdir == "/tmp/env-ray"
    assert s.results_dir == Path("/tmp/env-results")


def test_overrides_beat_the_environment_and_none_is_ignored() -> None:
    env = {"HARNESS_PG_DSN": "postgresql://env@db/x", "HARNESS_KEY_PREFIX": "env-prefix"}
    s = Settings.from_env(env, pg_dsn="postgresql://flag@db/y", key_prefix=None, redis_url=None)
    assert s.pg_dsn == "postgresql://flag@db/y"
    assert s.key_prefix == "env-prefix"  # None does not erase the environment
    assert s.redis_url == DEFAULT_REDIS_URL  # nor the default


def test_results_dir_becomes_a_path() -> None:
    from_flag = Settings.from_env({}, results_dir="/tmp/flag-results")
    assert from_flag.results_dir == Path("/tmp/flag-results")
    assert isinstance(from_flag.results_dir, Path)
    from_env = Settings.from_env({"HARNESS_RESULTS_DIR": "rel/dir"})
    assert from_env.results_dir == Path("rel/dir")
    assert isinstance(from_env.results_dir, Path)


def test_without_an_explicit_environment_os_environ_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARNESS_PG_SCHEMA", "from_os_environ")
    assert Settings.from_env().pg_schema == "from_os_environ"
    assert Settings.from_env({}).pg_schema == "harness"
