"""``python -m harness serve`` and ``dlq``: the aggregator service, and the entries it
dead-lettered."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from rich.console import Console

from harness.cli import common
from harness.infra import health as services


def add(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the aggregator HTTP service")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (8080)")
    serve.add_argument(
        "--consumers",
        type=int,
        default=2,
        help="consumer processes storing to PostgreSQL (2; 0: ingress only)",
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="HTTP worker processes on the one port (1)"
    )
    serve.add_argument("--batch-size", type=int, default=100, help="events per transaction")
    serve.add_argument(
        "--linger-ms",
        type=float,
        default=20.0,
        help="a consumer that keeps up waits this long between reads, to fill its batch (20)",
    )
    serve.add_argument("--isolation", default="read_committed", help="transaction isolation level")
    serve.add_argument(
        "--name",
        default="aggregator",
        help="consumer name prefix; keep it across restarts (aggregator)",
    )
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
    from harness.service.aggregator import ServiceConfig
    from harness.service.serve import check_address, serve

    settings = common.settings_of(args)
    try:
        config = ServiceConfig(
            host=args.host,
            port=args.port,
            consumers=args.consumers,
            workers=args.workers,
            linger_ms=args.linger_ms,
            crash_after_commits=args.crash_after_commits,
            batch_size=args.batch_size,
            isolation=Isolation.parse(args.isolation).value,
            name=args.name,
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
        f"{settings.pg_schema!r}, Redis prefix {settings.key_prefix!r}. Ctrl-C stops."
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
