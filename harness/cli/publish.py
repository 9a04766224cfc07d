"""``python -m harness publish``: the seed's publisher against ``harness serve``."""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.model.generator import Generator, Workload
from harness.pipeline.http_publisher import HttpPublisher, PublishError, wait_healthy
from harness.pipeline.publisher import PublishPlan

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2


def add(sub: Any) -> None:
    pub = sub.add_parser(
        "publish", help="publish a workload to the HTTP service (the seed's publisher)"
    )
    pub.add_argument("--url", default="http://127.0.0.1:8080", help="service URL")
    pub.add_argument("--events", type=int, default=20_000, help="events to send, re-sends included")
    pub.add_argument("--duplicate-rate", type=float, default=0.3, help="share of re-sends (0.3)")
    pub.add_argument("--topics", type=int, default=10, help="topics (10)")
    pub.add_argument("--batch", type=int, default=100, help="events per request (100)")
    pub.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="requests in flight at once, each on its own connection (4; the seed's: 1)",
    )
    pub.add_argument("--payload-bytes", type=int, default=100, help="payload size (100)")
    pub.add_argument("--seed", type=int, help="workload seed (default: from the clock; printed)")
    pub.add_argument("--wait", type=float, default=30.0, help="seconds to wait for /health")
    pub.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not wait for the service to store everything and check /stats",
    )

    pub.set_defaults(handler=main)


def _stats(client: httpx.Client, url: str) -> dict[str, Any]:
    response = client.get(f"{url}/stats")
    response.raise_for_status()
    return dict(response.json())


def main(args: argparse.Namespace, console: Console) -> int:
    err = Console(stderr=True, highlight=False)
    seed = args.seed if args.seed is not None else time.time_ns() // 1000 % 2**31
    try:
        workload = _workload(args, seed)
    except ValueError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        return EXIT_USAGE
    generator = Generator(workload)
    url = args.url.rstrip("/")
    plans = PublishPlan.split(workload, args.concurrency, pipeline=args.batch)

    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0), limits=limits) as client:
        try:
            wait_healthy(client, url, args.wait)
            before = _stats(client, url)
        except (PublishError, httpx.HTTPError) as exc:
            err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
            return EXIT_USAGE
        publishers = [HttpPublisher(client, url) for _ in plans]
        started = time.monotonic()
        failure = _publish_all(publishers, plans, workload.events, console)
        duration = time.monotonic() - started
        sent = sum(p.stats.events for p in publishers)
        requests = sum(p.stats.requests for p in publishers)
        retries = sum(p.stats.retries for p in publishers)
        console.print(
            f"sent {sent:,} events ({generator.expected_unique:,} distinct, "
            f"{sent - generator.expected_unique:,} re-sends) in {duration:.2f} s = "
            f"{sent / duration if duration else 0:,.0f} events/s; {requests:,} "
            f"requests over {len(plans)} connection{'s' if len(plans) != 1 else ''}, "
            f"{retries} retried; seed {seed}"
        )
        if failure:
            err.print(f"[bold red]error:[/bold red] {failure[0]}", soft_wrap=True)
            return EXIT_MISMATCH
        if not args.verify:
            return EXIT_OK
        return _verify(
            client,
            url,
            before,
            sent,
            generator.expected_unique,
            retries * args.batch,
            console,
            err,
            started,
        )


def _workload(args: argparse.Namespace, seed: int) -> Workload:
    """The workload the flags ask for, or :class:`ValueError` naming the bad one."""
    if args.batch < 1:
        raise ValueError(f"--batch must be ≥ 1, got {args.batch}")
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be ≥ 1, got {args.concurrency}")
    return Workload(
        events=args.events,
        duplicate_rate=args.duplicate_rate,
        topics=args.topics,
        payload_bytes=args.payload_bytes,
        seed=seed,
    )


def _publish_all(
    publishers: list[HttpPublisher], plans: list[PublishPlan], events: int, console: Console
) -> list[BaseException]:
    """Run each publisher on its plan in a thread of its own, with a progress bar; what
    failed."""
    failure: list[BaseException] = []
    threads = [
        threading.Thread(target=_guard, args=(failure, p.run, plan), daemon=True)
        for p, plan in zip(publishers, plans, strict=True)
    ]
    started = time.monotonic()
    with Progress(
        TextColumn("publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8,.0f} events/s  retries {task.fields[retries]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("publish", total=events, rate=0.0, retries=0)
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.2)
            elapsed = time.monotonic() - started
            sent = sum(p.stats.events for p in publishers)
            bar.update(
                task,
                completed=sent,
                rate=sent / elapsed if elapsed else 0.0,
                retries=sum(p.stats.retries for p in publishers),
            )
    return failure


def _guard(failure: list[BaseException], fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except BaseException as exc:
        failure.append(exc)


def _verify(
    client: httpx.Client,
    url: str,
    before: dict[str, Any],
    sent: int,
    distinct: int,
    maybe_resent: int,
    console: Console,
    err: Console,
    started: float,
) -> int:
    """Wait until the service has stored everything, then compare /stats with the truth
    (``started``: when the first request went, for the rate stored)."""
    deadline = time.monotonic() + 120
    with console.status("waiting for the service to store everything…"):
        while True:
            after = _stats(client, url)
            received = after["received"] - before["received"]
            if after["pending"] == 0 and received >= sent:
                stored_s = time.monotonic() - started
                break
            if time.monotonic() > deadline:
                err.print(f"[bold red]error:[/bold red] not stored after 120 s: {after}")
                return EXIT_MISMATCH
            time.sleep(0.2)
    unique = after["unique_processed"] - before["unique_processed"]
    duplicate = after["duplicate_dropped"] - before["duplicate_dropped"]
    console.print(
        f"service counted: received {received:,}, unique_processed {unique:,}, "
        f"duplicate_dropped {duplicate:,} (this run's share of /stats); all stored "
        f"{stored_s:.2f} s after the first request = {received / stored_s:,.0f} events/s stored"
    )
    problems = []
    if not sent <= received <= sent + maybe_resent:
        problems.append(f"received {received:,} but {sent:,} were sent")
    if unique != distinct:
        problems.append(f"unique_processed {unique:,} but {distinct:,} distinct events were sent")
    if duplicate != received - unique:
        problems.append(f"duplicate_dropped {duplicate:,} != received − unique")
    if problems:
        err.print("[bold red]mismatch:[/bold red] " + "; ".join(problems), soft_wrap=True)
        return EXIT_MISMATCH
    console.print("[green]every event stored exactly once[/green]")
    return EXIT_OK
