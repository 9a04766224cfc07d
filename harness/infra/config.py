"""Where the harness finds its services: defaults, overridden by environment, then by flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Connection and placement settings shared by the CLI, the actors and the tests.

    Every field has an environment variable named ``HARNESS_<FIELD>`` (upper case);
    command-line flags override the environment.
    """

    pg_dsn: str = DEFAULT_PG_DSN
    redis_url: str = DEFAULT_REDIS_URL
    #: PostgreSQL schema holding the tables; tests give each test its own.
    pg_schema: str = "harness"
    #: Prefix of every Redis key the harness touches; tests give each test its own.
    key_prefix: str = "harness"
    #: ``None`` starts a local Ray; an address (``ray://…`` or ``host:port``) attaches.
    ray_address: str | None = None
    #: Ray's session files and logs (kept short: Ray puts Unix sockets under it).
    ray_tmpdir: str = "/tmp/harness-ray"
    results_dir: Path = Path("results")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``HARNESS_*`` variables, then ``overrides`` that are not ``None``."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(f"HARNESS_{field.name.upper()}")
            if raw:
                values[field.name] = Path(raw) if field.name == "results_dir" else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "results_dir" in values:
            values["results_dir"] = Path(str(values["results_dir"]))
        return cls(**values)  # type: ignore[arg-type]
