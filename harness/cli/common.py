"""What every command shares: exit codes, flags, settings, services, run folders and the
provenance a run folder records."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.infra import environment
from harness.infra.config import Settings

EXIT_OK, EXIT_FAILED_TRIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: exit codes by how a run ended (:func:`harness.cli.progress.conclude`)
EXITS = {
    "ok": EXIT_OK,
    "failed": EXIT_FAILED_TRIAL,
    "missed": EXIT_FAILED_TRIAL,
    "interrupted": EXIT_INTERRUPTED,
}


class UsageError(ValueError):
    """A command-line value is not valid."""


#: What must be undone on the way out (embedded servers).
CLEANUP = contextlib.ExitStack()

#: Set once this process is told to stop (Ctrl-C, SIGTERM). The signal raises
#: KeyboardInterrupt too, but a library may swallow that, or turn it into an error of its
#: own (Ray: the actors got the terminal's Ctrl-C as well, and a call to one that died
#: fails); a session checks this after every trial, so no interruption is lost.
STOP = threading.Event()


def on_stop_signal(signum: int, frame: object) -> None:
    """The handler of SIGINT and SIGTERM: remember, then raise KeyboardInterrupt."""
    STOP.set()
    raise KeyboardInterrupt


def experiments_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    here = Path("experiments")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "experiments"


def connection_flags(parser: argparse.ArgumentParser, *, ray: bool = True) -> None:
    group = parser.add_argument_group("services (flags override HARNESS_* variables)")
    group.add_argument("--pg-dsn", help="PostgreSQL DSN (HARNESS_PG_DSN)")
    group.add_argument("--redis-url", help="Redis URL (HARNESS_REDIS_URL)")
    group.add_argument("--pg-schema", help="PostgreSQL schema for the tables (HARNESS_PG_SCHEMA)")
    group.add_argument("--key-prefix", help="prefix of every Redis key (HARNESS_KEY_PREFIX)")
    if ray:
        group.add_argument("--ray-address", help="attach to this Ray cluster, not a local one")
        group.add_argument("--ray-tmpdir", help="Ray's session files and logs (HARNESS_RAY_TMPDIR)")


@dataclasses.dataclass(frozen=True)
class ConfigFlag:
    """A flag that sets one field of a configuration dataclass."""

    field: str
    #: what the flag sets; ``{default}`` stands for the field's default, which is
    #: otherwise shown at the end, in parentheses
    help: str


_FLAG_TYPES: dict[str, type] = {"int": int, "float": float, "str": str}


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_shown(v) for v in value)
    return str(value)


def config_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config: Any,
    flags: dict[str, ConfigFlag],
) -> None:
    """A flag ``--name`` for each entry of ``flags``, of its field's type, its default
    ``config``'s value (shown in the help): the default lives in the configuration
    dataclass alone. :func:`configured` applies what was given."""
    types = {f.name: str(f.type) for f in dataclasses.fields(config)}
    for name, flag in flags.items():
        default = getattr(config, flag.field)
        text = flag.help.format(default=_shown(default))
        option = "--" + name.replace("_", "-")
        if "{default}" not in flag.help and types[flag.field] != "bool":
            text += f" ({_shown(default)})"
        if types[flag.field] == "bool":
            parser.add_argument(option, dest=name, action="store_true", default=None, help=text)
        elif types[flag.field] in _FLAG_TYPES:
            parser.add_argument(option, dest=name, type=_FLAG_TYPES[types[flag.field]], help=text)
        else:  # parsed by the configuration's own rules (a list of rates, say)
            parser.add_argument(option, dest=name, help=text)


def configured(config: Any, args: argparse.Namespace, flags: dict[str, ConfigFlag]) -> Any:
    """``config`` with the fields whose flags were given; a value the configuration
    refuses is a :class:`UsageError` that names the flag."""
    for name, flag in flags.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        try:
            config = dataclasses.replace(config, **{flag.field: value})
        except ValueError as exc:
            raise UsageError(f"--{name.replace('_', '-')}: {exc}") from None
    return config


def experiment_flags(parser: argparse.ArgumentParser, *, sweeps: str) -> None:
    """The experiment to run, its overrides, and where its results go."""
    parser.add_argument("name", help="experiment name (experiments/NAME.toml) or a .toml path")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a parameter; KEY=a,b,c {sweeps} (repeatable)",
    )
    parser.add_argument("--out", help="results folder (default: results/, HARNESS_RESULTS_DIR)")
    parser.add_argument("--run-id", help="name of the run folder (default: a UTC time stamp)")
    parser.add_argument("--experiments", help="folder of experiment files (default: experiments/)")
    parser.add_argument("--quiet", action="store_true", help="no live progress line")


def settings_of(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        pg_dsn=getattr(args, "pg_dsn", None),
        redis_url=getattr(args, "redis_url", None),
        pg_schema=getattr(args, "pg_schema", None),
        key_prefix=getattr(args, "key_prefix", None),
        ray_address=getattr(args, "ray_address", None),
        ray_tmpdir=getattr(args, "ray_tmpdir", None),
        results_dir=getattr(args, "out", None),
    )


def services(
    args: argparse.Namespace, settings: Settings, console: Console
) -> tuple[Settings, dict[str, str]]:
    """The services to use: the configured ones, or embedded ones for a service the user
    did not choose and that does not answer at its default (see harness.infra.embedded).
    Embedded servers stop when the command ends (:data:`CLEANUP`)."""
    from harness.infra import embedded

    explicit = embedded.configured({"pg_dsn": args.pg_dsn, "redis_url": args.redis_url})
    return CLEANUP.enter_context(
        embedded.services_or_embedded(
            settings, explicit=explicit, say=lambda line: console.print(line, soft_wrap=True)
        )
    )


def new_run_id() -> str:
    """A run folder's default name: the UTC time, to the second."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def new_run_dir(settings: Settings, kind: str, run_id: str | None, *, hint: str = "") -> Path:
    """``results/<kind>/<run id>`` (a UTC time stamp by default), which must not exist."""
    out = settings.results_dir / kind / (run_id or new_run_id())
    if out.exists():
        raise UsageError(f"{out} exists already; choose another --run-id{hint}")
    return out


def provenance(versions: dict[str, str]) -> dict[str, Any]:
    """What every run folder records of what produced it: the servers, the machine and
    the software (:func:`harness.infra.environment.describe`), the command line."""
    return {"servers": versions, "environment": environment.describe(), "argv": sys.argv}


def draw_charts(write: Callable[[Path], list[Path]], out: Path, console: Console) -> None:
    """Draw a run's charts and say where; a chart that fails says why, and the results,
    already on disk, stay."""
    try:
        drawn = write(out)
        console.print(f"charts: {', '.join(str(c) for c in drawn)}")
    except Exception as exc:  # the results are safe on disk; say what went wrong
        console.print(f"[yellow]charts not drawn[/yellow]: {exc!r}")
