"""P3, end to end: batches accepted -> outbox -> relay -> RabbitMQ -> senders -> the ``sink`` provider,
every status and event recorded; beside a Celery pipeline doing the same per message, in the same run.

    python -m loadtests.e2e_bench [--n 20000] [--batch-size 5000] [--senders 2] [--database-url ...] [--amqp-url ...]

Herald: the engine objects the Ray actors wrap, without Ray, on the real RabbitMQ and PostgreSQL, in
the processes the actors get: the batch intake in this one (the ingress), the outbox relay and each of
``--senders`` sender loops in one of its own; the clock runs from the first batch until every message is
``sent``. Celery: the same messages stored in one statement,
one task each enqueued, and a Celery worker (prefork, one process per core) doing for each what a
sender does for a message (claim, render, send to ``sink``, record) with Herald's dispatcher; the clock
runs from the insert until every message is ``sent``. Rows written per message are counted from
PostgreSQL's own statistics (inserts, updates and deletes of every table, over the messages sent), and
the CPU each of Herald's parts spent per message over its run (:mod:`loadtests.cpu`): the bound of the
figure on a machine the whole pipeline shares.
Needs the ``bench`` extra (Celery) and RabbitMQ (``AMQP_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from typing import Any

import asyncpg

from drivers.sink import EmailSink
from engine.auth import Principal
from engine.batch import BatchIntake, split_items
from engine.broker.factory import make_broker
from engine.channels import Channel
from engine.dispatch import Dispatcher, DispatchOptions
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.relay import Relay, RelayOptions
from engine.retries import RetryPolicy
from engine.runtime import settle_heap
from engine.sender_loop import SenderLoop
from engine.states import PENDING, Status
from engine.storage.batch_store import BatchStore
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog
from loadtests.batch_bench import _with_database, admin_url, item
from loadtests.bench import TEMPLATES, queued
from loadtests.cpu import CpuMeter, describe, per_unit_ms

_ROW_STATS = """
SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS rows FROM pg_stat_user_tables
"""


async def row_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        with contextlib.suppress(asyncpg.PostgresError):  # PostgreSQL 15+: this session's counts now
            await conn.execute("SELECT pg_stat_force_next_flush()")
        return {r["relname"]: int(r["rows"]) for r in await conn.fetch(_ROW_STATS)}
    finally:
        await conn.close()


async def rows_per_message(dsn: str, before: dict[str, int], n: int) -> dict[str, float]:
    # A backend reports its counts at most once a second while busy, up to 10 s later once idle, and when it
    # exits: callers close the run's connections first, and the exits take a moment.
    await asyncio.sleep(1.0)
    after = await row_counts(dsn)
    moved = {t: (after.get(t, 0) - before.get(t, 0)) / n for t in after}
    return {t: round(v, 3) for t, v in sorted(moved.items()) if v >= 0.001}


#: Statuses a message waits in before its send is recorded.
_UNSENT = sorted(s.value for s in (*PENDING, Status.SENDING))
#: One index probe per status (messages_tenant_status_recent), however many messages the run has: a
#: count(*) of the sent ones walked the whole run's entries every 0.1 s, CPU taken from the run it measures.
_ANY_UNSENT = "SELECT EXISTS (SELECT 1 FROM messages WHERE tenant_id = $1 AND status = ANY($2::text[]))"


async def wait_sent(pool: asyncpg.Pool, tenant_id: uuid.UUID, n: int, timeout_s: float) -> None:
    """Wait until none of the tenant's messages waits to be sent, then check that ``n`` were sent."""
    deadline = time.monotonic() + timeout_s
    while await pool.fetchval(_ANY_UNSENT, tenant_id, _UNSENT):
        if time.monotonic() > deadline:
            raise TimeoutError(f"messages still unsent after {timeout_s:.0f}s")
        await asyncio.sleep(0.1)
    sent = await pool.fetchval("SELECT count(*) FROM messages WHERE tenant_id = $1 AND status = 'sent'", tenant_id)
    if sent < n:
        raise RuntimeError(f"only {sent} of {n} messages were sent; the others ended otherwise")


@dataclass(frozen=True)
class _Side:
    """What a relay or sender process of the run needs to know."""

    dsn: str
    amqp_url: str
    prefix: str


def _relay_process(side: _Side, ready: EventType, stop: EventType) -> None:
    """The relay actor's work, in a process of its own as the actor runs."""

    async def main() -> None:
        pool = await create_pool(side.dsn, min_size=1, max_size=3)
        broker = make_broker(side.amqp_url, side.dsn, queue_prefix=side.prefix)
        await broker.connect()
        relay = Relay(
            Repository(pool), broker, RelayOptions(batch=2000, envelope_max_ids=100, poll_s=0.05), listen_dsn=side.dsn
        )
        done = asyncio.Event()
        task = asyncio.create_task(relay.run(done))
        settle_heap()  # as the actor does
        ready.set()
        await _until(stop)
        done.set()
        await task
        await broker.close()
        await pool.close()

    asyncio.run(main())


def _sender_process(side: _Side, ready: EventType, stop: EventType) -> None:
    """A sender actor's work, in a process of its own as the actor runs."""

    async def main() -> None:
        pool = await create_pool(side.dsn, min_size=1, max_size=3, generic_plans=True)  # as the sender actor's
        broker = make_broker(side.amqp_url, side.dsn, queue_prefix=side.prefix, prefetch=50)
        await broker.connect()
        dispatcher = Dispatcher(
            Repository(pool),
            TemplateCatalog(TEMPLATES),
            {Channel.EMAIL: [EmailSink()]},
            policy=RetryPolicy(),
            metrics=MetricsBuffer(),
            options=DispatchOptions(),
        )
        loop = SenderLoop(broker, dispatcher, max_envelopes=20, wait_s=0.05)
        task = asyncio.create_task(loop.run())
        settle_heap()
        ready.set()
        await _until(stop)
        await loop.stop(5)
        await task
        await broker.close()
        await pool.close()

    asyncio.run(main())


async def _until(stop: EventType) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.05)


async def herald_e2e(dsn: str, amqp_url: str, n: int, batch_size: int, senders: int) -> dict[str, Any]:
    pool = await create_pool(dsn, min_size=2, max_size=4)
    repo = Repository(pool)
    catalog = TemplateCatalog(TEMPLATES)
    tenant = await repo.ensure_tenant(f"bench_{uuid.uuid4().hex[:8]}")
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=86400)
    batches = BatchIntake(intake, BatchStore(pool))
    side = _Side(dsn, amqp_url, f"bench-{uuid.uuid4().hex[:8]}.")
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    started: list[tuple[BaseProcess, EventType]] = []  # each process, and the event it sets once ready
    for target in [_relay_process] + [_sender_process] * senders:
        ready = ctx.Event()
        started.append((ctx.Process(target=target, args=(side, ready, stop)), ready))
    principal = Principal(tenant.slug, frozenset({"send"}))
    run = uuid.uuid4().hex[:8]
    bodies = [
        json.dumps([item(i, run) for i in range(k, min(k + batch_size, n))]).encode() for k in range(0, n, batch_size)
    ]
    try:
        for proc, _ in started:
            proc.start()
        for proc, ready in started:
            while not ready.wait(0.1):
                if not proc.is_alive():
                    raise RuntimeError(f"a {proc.name} of the run exited with {proc.exitcode} before it was ready")
        before = await row_counts(dsn)
        parts = {os.getpid(): "batch intake", started[0][0].pid: "relay"}
        parts.update({proc.pid: "senders" for proc, _ in started[1:]})
        meter = CpuMeter(parts)  # type: ignore[arg-type]
        meter.start()
        start = time.perf_counter()
        accepted = 0
        for body in bodies:
            accepted += (await batches.submit(principal, split_items(body, "application/json"))).accepted
        accepted_s = time.perf_counter() - start
        await wait_sent(pool, tenant.id, n, timeout_s=60 + n / 100)
        elapsed = time.perf_counter() - start
        cpu = per_unit_ms(meter.stop(), n)
    finally:
        stop.set()
        for proc, _ in started:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    await pool.close()  # every backend of the run gone: its row counts are all in (rows_per_message)
    rows = await rows_per_message(dsn, before, n)
    await _drop_queues(amqp_url, side.prefix)
    return {
        "msgs_per_s": n / elapsed,
        "accepted": accepted,
        "accept_s": accepted_s,
        "rows_per_message": rows,
        "cpu_ms_per_message": cpu,
    }


async def _drop_queues(amqp_url: str, prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in [f"{prefix}notifications.{p}" for p in ("high", "normal", "low")] + [
            f"{prefix}notifications.dlq.{c.value}" for c in Channel
        ]:
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)


def _celery_worker(dsn: str, amqp_url: str, queue: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HERALD_BENCH_DATABASE_URL": dsn,
        "HERALD_BENCH_AMQP_URL": amqp_url,
        "HERALD_BENCH_QUEUE": queue,
    }
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "loadtests.celery_pipeline",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(os.cpu_count() or 2),
        "--loglevel",
        "WARNING",
        "-Q",
        queue,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def celery_e2e(dsn: str, amqp_url: str, n: int) -> dict[str, Any]:
    queue = f"herald-bench-celery-{uuid.uuid4().hex[:8]}"
    os.environ["HERALD_BENCH_AMQP_URL"] = amqp_url
    os.environ["HERALD_BENCH_QUEUE"] = queue
    from loadtests.celery_pipeline import app, send

    app.conf.broker_url = amqp_url
    app.conf.task_default_queue = queue
    worker = _celery_worker(dsn, amqp_url, queue)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    repo = Repository(pool)
    tenant = await repo.ensure_tenant(f"bench_{uuid.uuid4().hex[:8]}")
    try:
        # warm the worker (its processes open their pools at the first task)
        warm = await queued(repo, tenant.id, 4)
        for mid in warm:
            send.apply_async((mid.hex,), queue=queue)
        await wait_sent(pool, tenant.id, 4, timeout_s=120)
        before = await row_counts(dsn)
        start = time.perf_counter()
        ids = await queued(repo, tenant.id, n)
        with app.producer_or_acquire() as producer:
            for mid in ids:
                send.apply_async((mid.hex,), queue=queue, producer=producer)
        await wait_sent(pool, tenant.id, n + 4, timeout_s=60 + n / 20)
        elapsed = time.perf_counter() - start
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        await pool.close()
        with contextlib.suppress(Exception):
            app.connection_for_write().default_channel.queue_delete(queue)
    rows = await rows_per_message(dsn, before, n)  # after the worker's backends closed, as for Herald
    return {"msgs_per_s": n / elapsed, "rows_per_message": rows}


async def p3(
    dsn: str,
    amqp_url: str,
    n: int,
    batch_size: int = 5000,
    senders: int = 2,
    celery_n: int | None = None,
) -> dict[str, Any]:
    """P3 figures: Herald's end-to-end msgs/s, Celery's, their ratio, the rows each writes per message and
    the CPU each of Herald's parts spends per message."""
    herald = await herald_e2e(dsn, amqp_url, n, batch_size, senders)
    celery = await celery_e2e(dsn, amqp_url, celery_n or max(1000, n // 10))
    return {
        "herald_msgs_per_s": herald["msgs_per_s"],
        "herald_accept_s": herald["accept_s"],
        "celery_msgs_per_s": celery["msgs_per_s"],
        "ratio": herald["msgs_per_s"] / celery["msgs_per_s"],
        "herald_rows_per_message": herald["rows_per_message"],
        "celery_rows_per_message": celery["rows_per_message"],
        "herald_cpu_ms_per_message": herald["cpu_ms_per_message"],
    }


def _run(admin: str, body: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    return asyncio.run(_with_database(admin, body))  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--celery-n", type=int, default=None, help="messages for the Celery run (default n/10)")
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL"))
    args = parser.parse_args()
    if not args.amqp_url:
        parser.error("P3 runs on RabbitMQ: set AMQP_URL or --amqp-url")
    figures = _run(
        admin_url(args.database_url),
        lambda url: p3(url, args.amqp_url, args.n, args.batch_size, args.senders, args.celery_n),
    )
    print(json.dumps(figures, indent=2, default=lambda v: round(v, 3)))
    herald_rows = sum(figures["herald_rows_per_message"].values())
    print(
        f"P3 end to end: Herald {figures['herald_msgs_per_s']:,.0f} msgs/s, Celery {figures['celery_msgs_per_s']:,.0f}"
        f" msgs/s: {figures['ratio']:.1f}x (goals: >= 10,000 msgs/s, >= 10x); Herald writes {herald_rows:.1f} rows"
        f" per message; {describe(figures['herald_cpu_ms_per_message'])}"
    )


if __name__ == "__main__":
    main()
