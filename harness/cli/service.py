"""``python -m harness serve`` and ``dlq``: the aggregator service, and the entries it
dead-lettered."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from typing import Any

from rich.console import Console

from harness.cli import common
from harness.cli.common import ConfigFlag
from harness.infra import health as services
from harness.service.aggregator import ServiceConfig

#: ``serve``'s flags, each a field of :class:`ServiceConfig` (the defaults are its)
SERVE_FLAGS = {
    "host": ConfigFlag("host", "address to listen on"),
    "port": ConfigFlag("port", "port"),
    "consumers": ConfigFlag(
        "consumers", "consumer processes storing to PostgreSQL ({default}; 0: ingress only)"
    ),
    "workers": ConfigFlag("workers", "HTTP worker processes on the one port"),
    "batch_size": ConfigFlag("batch_size", "events per transaction"),
    "linger_ms": ConfigFlag(
        "linger_ms", "a consumer that keeps up waits this long between reads, to fill its batch"
    ),
    "isolation": ConfigFlag("isolation", "transaction isolation level"),
    "name": ConfigFlag("name", "consumer name prefix; keep it across restarts"),
    "wait_replicas": ConfigFlag(
        "wait_replicas",
        "Redis replicas that must have a request's events before its 202 (WAIT); "
        "1 keeps them through a Sentinel failover",
    ),
}


def add(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the aggregator HTTP service")
    common.config_flags(serve, ServiceConfig(), SERVE_FLAGS)
    serve.add_argument("--access-log", action="store_true", help="log every request")
    # fault injection for the tests: a consumer process dies right after N commits
    serve.add_argument("--crash-after-commits", type=int, help=argparse.SUPPRESS)
    common.connection_flags(serve, ray=False)

    serve.set_defaults(handler=serve_main)
    dlq = sub.add_parser("dlq", help="list dead-lettered entries and why")
    dlq.add_argument("--count", type=int, default=50, help="how many, oldest first (50)")
    common.connection_flags(dlq, ray=False)

    dlq.set_defaults(handler=dlq_main)


def serve_main(args: argparse.Namespace, console: Console) -> int:
    from harness.model.modes import Isolation
    from harness.service.serve import check_address, serve

    settings = common.settings_of(args)
    config = common.configured(ServiceConfig(), args, SERVE_FLAGS)
    try:
        config = dataclasses.replace(
            config,
            isolation=Isolation.parse(config.isolation).value,
            crash_after_commits=args.crash_after_commits,
        )
        check_address(config.host, config.port)
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    settings, _ = common.services(args, settings, console)
    plural = "es" if config.consumers != 1 else ""
    console.print(
        f"serving on http://{config.host}:{config.port} (API docs at /docs): "
        f"{config.workers} HTTP worker{'s' if config.workers != 1 else ''}, "
        f"{config.consumers} consumer process{plural}; PostgreSQL schema "
        f"{settings.pg_schema!r}, Redis prefix {settings.key_prefix!r}"
        + (
            f"; a 202 once {config.wait_replicas} Redis replica"
            f"{'s have' if config.wait_replicas != 1 else ' has'} the events"
            if config.wait_replicas
            else ""
        )
        + ". Ctrl-C stops."
    )
    serve(settings, config, access_log=args.access_log)
    return common.EXIT_OK


def dlq_main(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from harness.delivery import broker as broker_mod
    from harness.delivery.keys import Keys

    settings = common.settings_of(args)
    services.check_redis(settings.redis_url)
    channel = broker_mod.StreamBroker(
        broker_mod.connect(settings.redis_url), Keys(settings.key_prefix)
    )
    total = channel.dead_letter_count()
    table = Table(title=f"{channel.keys.dead_letter}: {total} dead-lettered entries")
    for column in ("dead-lettered at", "entry", "consumer", "reason", "events"):
        table.add_column(column, overflow="fold")
    for letter_id, fields in channel.dead_letters(args.count):
        at = dt.datetime.fromtimestamp(int(letter_id.split(b"-")[0]) / 1000, dt.UTC)
        table.add_row(
            at.isoformat(timespec="seconds"),
            fields.get(b"entry_id", b"").decode(errors="replace"),
            fields.get(b"consumer", b"").decode(errors="replace"),
            fields.get(b"reason", b"").decode(errors="replace"),
            fields.get(b"e", b"").decode(errors="replace")[:200],
        )
    console.print(table)
    channel.client.close()
    return common.EXIT_OK
