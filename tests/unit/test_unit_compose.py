"""docker-compose.yml and the Dockerfile, checked for what can be checked without Docker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


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
    }
    assert compose["services"]["postgres"]["image"].startswith("postgres:16")
    assert compose["services"]["redis"]["image"].startswith("redis:7")


@pytest.mark.parametrize("name", ["postgres", "redis", "aggregator"])
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
    }.items():
        depends = services[name]["depends_on"]
        assert set(depends) == needs
        assert all(d["condition"] == "service_healthy" for d in depends.values())


def test_data_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    assert set(compose["volumes"]) == {"pg_data", "redis_data"}
    assert "pg_data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    assert "redis_data:/data" in compose["services"]["redis"]["volumes"]


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"


def test_only_the_api_port_is_published_on_loopback(compose: dict[str, Any]) -> None:
    published = {n: s["ports"] for n, s in compose["services"].items() if "ports" in s}
    assert list(published) == ["aggregator"]
    (port,) = published["aggregator"]
    assert port.startswith("127.0.0.1:") and port.endswith(":8080")


def test_no_secret_is_written_in_the_files() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"(?i)password", line) and not line.lstrip().startswith("#"):
            # every password is an interpolated variable that must be set, never a literal
            assert "${POSTGRES_PASSWORD:?" in line, line
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


@pytest.mark.parametrize("name", ["aggregator", "publisher", "harness"])
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
