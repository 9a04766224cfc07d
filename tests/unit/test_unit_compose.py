"""docker-compose.yml and the Dockerfile, checked for what can be checked without Docker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg.conninfo
import pytest
import yaml

from harness.cli.main import build_parser
from harness.infra import sentinel_url

ROOT = Path(__file__).resolve().parents[2]


#: the services of the ``replicated`` profile
REPLICATED = {
    "redis-replica",
    "redis-sentinel-1",
    "redis-sentinel-2",
    "redis-sentinel-3",
    "postgres-standby",
    "aggregator-replicated",
}


def interpolated(text: str) -> str:
    """``text`` as compose reads it with POSTGRES_PASSWORD set and nothing else: a
    variable's default, ``secret`` for the one that must be set, ``$$`` a ``$``."""
    text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)
    text = re.sub(r"\$\{POSTGRES_PASSWORD:\?[^}]*\}", "secret", text)
    return text.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_stack_has_its_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "aggregator",
        "publisher",
        "harness",
        "ray-head",
        "ray-worker",
        *REPLICATED,
    }
    assert compose["services"]["postgres"]["image"].startswith("postgres:16")
    assert compose["services"]["redis"]["image"].startswith("redis:7")


@pytest.mark.parametrize("name", ["postgres", "redis", "aggregator", *sorted(REPLICATED)])
def test_long_running_services_have_healthchecks(compose: dict[str, Any], name: str) -> None:
    check = compose["services"][name]["healthcheck"]
    assert check["test"] and check["interval"] and check["retries"] >= 3


def test_health_commands_check_the_right_thing(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert "/health" in " ".join(services["aggregator"]["healthcheck"]["test"])


def test_start_order_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, needs in {
        "aggregator": {"postgres", "redis"},
        "publisher": {"aggregator"},
        "harness": {"postgres", "redis"},
        "redis-replica": {"redis"},
        "redis-sentinel-1": {"redis", "redis-replica"},
        "postgres-standby": {"postgres"},
        "aggregator-replicated": {
            "postgres",
            "postgres-standby",
            "redis-sentinel-1",
            "redis-sentinel-2",
            "redis-sentinel-3",
        },
    }.items():
        depends = services[name]["depends_on"]
        assert set(depends) == needs
        assert all(d["condition"] == "service_healthy" for d in depends.values())


def test_data_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(compose["volumes"]) == {
        "pg_data",
        "redis_data",
        "redis_replica_data",
        "pg_standby_data",
    }
    assert "pg_data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redis_data:/data" in services["redis"]["volumes"]
    assert "redis_replica_data:/data" in services["redis-replica"]["volumes"]
    assert "pg_standby_data:/var/lib/postgresql/data" in services["postgres-standby"]["volumes"]


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"


def test_only_the_api_port_is_published_on_loopback(compose: dict[str, Any]) -> None:
    published = {n: s["ports"] for n, s in compose["services"].items() if "ports" in s}
    assert list(published) == ["aggregator", "aggregator-replicated"]
    hosts = set()
    for ports in published.values():
        (port,) = ports
        assert port.startswith("127.0.0.1:") and port.endswith(":8080")
        hosts.add(interpolated(port))
    assert len(hosts) == 2  # not the same port twice: both run under the profile


def test_no_secret_is_written_in_the_files() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if re.search(r"(?i)password", line):
            # every password is an interpolated variable that must be set, never a literal
            assert "${POSTGRES_PASSWORD:?" in line, line
        # nor is any login let in without one (Redis's are reached on the compose network
        # only, as before)
        assert not re.search(r"(?i)\btrust\b|requirepass|masterauth", line), line
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=$", example, re.M)
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_the_image_runs_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}


def test_the_harness_never_shares_the_aggregators_schema(compose: dict[str, Any]) -> None:
    env = compose["services"]["harness"]["environment"]
    assert env["HARNESS_PG_SCHEMA"] != "harness" and env["HARNESS_KEY_PREFIX"] != "harness"


@pytest.mark.parametrize("name", ["aggregator", "publisher", "harness", "aggregator-replicated"])
def test_commands_are_ones_the_cli_accepts(compose: dict[str, Any], name: str) -> None:
    command = compose["services"][name]["command"]
    assert command[:3] == ["python", "-m", "harness"]
    args = build_parser().parse_args(command[3:])  # exits (SystemExit) if it does not parse
    assert args.command in {"serve", "publish", "run"}
    if name == "publisher":
        assert (args.events, args.duplicate_rate, args.topics, args.batch) == (20000, 0.3, 10, 100)


def test_the_ray_profile_is_a_head_and_workers_the_harness_can_attach_to(
    compose: dict[str, Any],
) -> None:
    head, worker = compose["services"]["ray-head"], compose["services"]["ray-worker"]
    assert head["profiles"] == worker["profiles"] == ["ray"]
    assert head["command"][:3] == ["ray", "start", "--head"]
    port = head["command"][head["command"].index("--port") + 1]
    assert port != "6379"  # Redis's port
    address = worker["command"][worker["command"].index("--address") + 1]
    assert address == f"ray-head:{port}"
    assert worker["deploy"]["replicas"] >= 2
    # both reach the same PostgreSQL and Redis as the harness
    for service in (head, worker):
        assert service["environment"]["HARNESS_PG_DSN"].startswith("postgresql://")


def test_the_replicated_profile_is_a_replica_sentinels_a_standby_and_an_aggregator(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {n for n, s in services.items() if s.get("profiles") == ["replicated"]} == REPLICATED
    for name in REPLICATED - {"aggregator-replicated"}:
        image = services[name]["image"]
        assert image == services["postgres" if "postgres" in name else "redis"]["image"]
    replica = services["redis-replica"]["command"]
    assert replica[0] == "redis-server"
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    assert replica[replica.index("--appendonly") + 1] == "yes"
    # each server announces its name: the Sentinels give clients names, not addresses
    for name in ("redis", "redis-replica"):
        command = services[name]["command"]
        assert command[command.index("--replica-announce-ip") + 1] == name


def test_each_sentinel_monitors_the_primary_by_the_name_the_url_asks_for(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    url = services["aggregator-replicated"]["environment"]["HARNESS_REDIS_URL"]
    address = sentinel_url.parse(url)
    assert address is not None and address.db == 0
    assert [host for host, _ in address.sentinels] == [
        "redis-sentinel-1",
        "redis-sentinel-2",
        "redis-sentinel-3",
    ]
    for host, port in address.sentinels:
        command = services[host]["command"]
        assert command[:2] == ["sh", "-c"]
        script = command[2]
        assert script.rstrip().endswith("--sentinel")
        config = script.split("<<'CONF'\n", 1)[1].split("\nCONF\n", 1)[0].splitlines()
        assert f"port {port}" in config
        (monitor,) = [line for line in config if line.startswith("sentinel monitor ")]
        name, host_, primary_port, quorum = monitor.split()[2:]
        assert (name, host_, primary_port) == (address.master, "redis", "6379")
        assert len(address.sentinels) // 2 < int(quorum) <= len(address.sentinels)
        # a host name in "sentinel monitor" needs resolve-hostnames, and before it
        assert config.index("sentinel resolve-hostnames yes") < config.index(monitor)
        for setting in ("down-after-milliseconds", "failover-timeout"):
            assert any(line.startswith(f"sentinel {setting} {name} ") for line in config)


def test_the_standby_is_a_base_backup_of_the_primary_that_may_stream(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    standby = services["postgres-standby"]
    script = " ".join(standby["command"])
    assert standby["command"][:2] == ["sh", "-c"]
    assert re.search(r"pg_basebackup -h postgres .*-R", script)
    assert standby["user"] == "postgres" and script.rstrip().endswith("exec postgres")
    # the primary lets a replication login in, with the password (its entrypoint runs
    # this when it creates the data folder)
    (mount,) = services["postgres"]["configs"]
    assert mount["target"].startswith("/docker-entrypoint-initdb.d/")
    hba = interpolated(compose["configs"][mount["source"]]["content"])
    assert "host replication all all scram-sha-256" in hba and "${PGDATA}/pg_hba.conf" in hba


def test_the_replicated_aggregator_finds_both_primaries_and_waits_for_the_replica(
    compose: dict[str, Any],
) -> None:
    service = compose["services"]["aggregator-replicated"]
    env = service["environment"]
    dsn = psycopg.conninfo.conninfo_to_dict(interpolated(env["HARNESS_PG_DSN"]))
    assert dsn["host"] == "postgres,postgres-standby"
    assert dsn["target_session_attrs"] == "read-write"
    assert sentinel_url.parse(env["HARNESS_REDIS_URL"]) is not None
    args = build_parser().parse_args(service["command"][3:])
    assert args.wait_replicas == 1
    # its data is its own: the aggregator beside it reads the same servers directly
    assert env["HARNESS_PG_SCHEMA"] not in {"harness", "bench"}
    assert env["HARNESS_KEY_PREFIX"] not in {"harness", "bench"}
