"""Priority isolation, measured: one-time codes while a ``low`` burst drains, beside the same stream quiet.

    python -m loadtests.priority_bench [--burst 100000] [--samples 1000] [--rate 50] [--senders 1]
                                       [--high-senders 1] [--broker rabbitmq|postgres] [--no-high-lane]
                                       [--backlog-cap 50] [--no-handoff] [--bulk-nice 10]

On a fresh database of ``DATABASE_URL``'s server (and RabbitMQ at ``AMQP_URL`` in a queue namespace of its
own, or the Postgres queue): the relay, ``--senders`` sender loops (claim, render, dedupe, record) and
``--high-senders`` ones for ``notifications.high`` alone (``HERALD_HIGH_SENDERS``) each in a process of its
own, as the actors run, sending to the ``sink`` provider; this process accepts the one-time codes through
the intake. Two phases, same run:

1. quiet: ``--samples`` one-time codes (``otp_login``, priority ``high``) through the intake at ``--rate``
   per second, each timed from its 202 (``Intake.submit`` returned) to the provider call;
2. burst: ``--burst`` ``low`` messages written at once (messages and outbox rows, one statement), then the
   same stream while the burst drains through the relay and the senders.

Prints p50/p99 of both and the low messages still waiting when the burst phase's last sample was taken
(the burst must still be draining for the figure to mean anything). ``--no-high-lane`` turns the senders'
reserved lane for ``notifications.high`` off, ``--high-senders 0`` the dedicated senders, and
``--backlog-cap 0`` the relay's cap on what it moves into the broker ahead of the senders, and
``--no-handoff`` the intake's hand-off of one-time codes to RabbitMQ (the relay publishes them), and
``--bulk-nice 0`` the lower CPU priority of the relay and the senders beside the dedicated ones
(``HERALD_BULK_NICE``), for comparison.
Goal: burst p99 <= 250 ms and <= 2x quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import signal
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

from drivers.sink import EmailSink
from engine.auth import Principal
from engine.broker import Broker
from engine.broker.base import HIGH_SENDER_CONSUMER_PRIORITY
from engine.broker.pgqueue import PgQueueBroker
from engine.broker.rabbitmq import RabbitMQBroker
from engine.channels import ALL_QUEUES, Channel, Priority
from engine.delivery import OutboundMessage, SendResult
from engine.dispatch import Dispatcher, DispatchOptions
from engine.handoff import Handoff
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.relay import Relay, RelayOptions
from engine.retries import RetryPolicy
from engine.runtime import settle_heap, yield_cpu
from engine.sender_loop import SenderLoop
from engine.settings import Settings
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog
from loadtests.bench import drop, prepare

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


class TimedSink(EmailSink):
    """The sink provider, telling the benchmark when each high-priority message reached it."""

    def __init__(self, reached: mp.Queue) -> None:  # type: ignore[type-arg]
        super().__init__()
        self.reached = reached

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        now = time.time()
        for m in messages:
            if m.priority == "high":
                self.reached.put((m.message_id, now))
        return await super().send_batch(messages)


@dataclass(frozen=True)
class Side:
    """What a relay or sender process needs to know."""

    url: str
    broker: str
    amqp_url: str | None
    prefix: str
    high_lane: bool
    batch: int
    backlog_cap: int
    #: what the senders beside the dedicated ones and the relay lower their CPU priority by, as the actors
    sender_nice: int
    relay_nice: int


def make_broker(side: Side, *, high_only: bool = False) -> Broker:
    if side.broker == "rabbitmq":
        assert side.amqp_url
        if high_only:  # as a dedicated high-priority sender's broker (actors.sender)
            return RabbitMQBroker(
                side.amqp_url,
                queue_prefix=side.prefix,
                prefetch=20,
                consume=(Priority.HIGH,),
                consumer_priority=HIGH_SENDER_CONSUMER_PRIORITY,
            )
        return RabbitMQBroker(side.amqp_url, queue_prefix=side.prefix, prefetch=20)
    return PgQueueBroker(dsn=side.url, queue_prefix=side.prefix, lease_s=30, poll_s=0.05)


def relay_process(side: Side, stop: EventType) -> None:
    yield_cpu(side.relay_nice)

    async def main() -> None:
        pool = await create_pool(side.url, min_size=1, max_size=3)
        broker = make_broker(side)
        await broker.connect()
        done = asyncio.Event()
        relay = Relay(Repository(pool), broker, RelayOptions(backlog_cap=side.backlog_cap), listen_dsn=side.url)
        task = asyncio.create_task(relay.run(done))
        settle_heap()  # as the actors do
        while not stop.is_set():
            await asyncio.sleep(0.1)
        done.set()
        await task
        await broker.close()
        await pool.close()

    asyncio.run(main())


def sender_process(side: Side, stop: EventType, reached: mp.Queue, sent: Any, high_only: bool) -> None:  # type: ignore[type-arg]
    if not high_only:
        yield_cpu(side.sender_nice)

    async def main() -> None:
        pool = await create_pool(side.url, min_size=1, max_size=3, generic_plans=True)  # as the sender actor's
        broker = make_broker(side, high_only=high_only)
        await broker.connect()
        sink = TimedSink(reached)
        dispatcher = Dispatcher(
            Repository(pool),
            TemplateCatalog(TEMPLATES),
            {Channel.EMAIL: [sink]},
            policy=RetryPolicy(),
            metrics=MetricsBuffer(),
            options=DispatchOptions(),
        )
        loop = SenderLoop(
            broker,
            dispatcher,
            max_envelopes=20,
            max_batch=side.batch,
            high_lane=side.high_lane or high_only,
            main_lane=not high_only,
        )
        task = asyncio.create_task(loop.run())
        settle_heap()
        while not stop.is_set():
            await asyncio.sleep(0.1)
            with sent.get_lock():
                sent.value += sink.accepted
            sink.accepted = 0
        await loop.stop(10)
        await task
        await broker.close()
        await pool.close()

    asyncio.run(main())


async def seed_burst(repo: Repository, tenant_id: uuid.UUID, n: int) -> None:
    """``n`` low messages and their outbox rows in one statement (as if accepted a moment ago)."""
    await repo.pool.execute(
        """WITH m AS (
               INSERT INTO messages (id, tenant_id, channel, template_id, template_version, locale, "to",
                                     variables, metadata, priority, status, category)
               SELECT gen_random_uuid(), $1, 'email', 'security_alert', 1, 'en',
                      jsonb_build_object('email', 'bulk' || k || '@example.com'),
                      jsonb_build_object('device', 'Firefox'), '{"category": "transactional"}', 'low', 'queued',
                      'transactional'
               FROM generate_series(1, $2) AS k
               RETURNING id
           )
           INSERT INTO outbox (tenant_id, message_id, queue, priority) SELECT $1, id, 'notifications.low', 2 FROM m""",
        tenant_id,
        n,
    )


async def low_waiting(repo: Repository, tenant_id: uuid.UUID) -> int:
    return int(
        await repo.pool.fetchval(
            """SELECT count(*) FROM messages
               WHERE tenant_id = $1 AND priority = 'low' AND status IN ('queued', 'sending')""",
            tenant_id,
        )
    )


class Reached:
    """When each one-time code reached the provider, as the sender processes report it."""

    def __init__(self, queue: mp.Queue) -> None:  # type: ignore[type-arg]
        self.queue = queue
        self.at: dict[str, float] = {}

    def collect(self) -> None:
        while True:
            try:
                mid, at = self.queue.get_nowait()
            except queue.Empty:
                return
            self.at[mid] = at


async def stream(
    intake: Intake, principal: Principal, reached: Reached, samples: int, rate: float, tag: str
) -> list[float]:
    """``samples`` one-time codes at ``rate``/s; their accept -> provider latencies in ms."""
    accepted: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(samples):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        body = {
            "channel": "email",
            "template_id": "otp_login:v3",
            "locale": "en-GB",
            "priority": "high",
            "to": {"email": f"{tag}{i}@example.com"},
            "variables": {"code": f"{i:06d}"},
        }
        result = await intake.submit(principal, body, f"{tag}-{i}")
        accepted[str(result.body["message_id"])] = time.time()
        reached.collect()
    deadline = time.perf_counter() + 60
    while any(mid not in reached.at for mid in accepted) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
        reached.collect()
    missing = [mid for mid in accepted if mid not in reached.at]
    if missing:
        raise SystemExit(f"{len(missing)} one-time codes never reached the provider")
    return [(reached.at[mid] - at) * 1000 for mid, at in accepted.items()]


def percentiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1), "max_ms": round(max(values), 1), "n": len(values)}


async def run(url: str, args: argparse.Namespace) -> dict[str, object]:
    pool = await create_pool(url, min_size=2, max_size=10)
    repo = Repository(pool)
    catalog = TemplateCatalog(TEMPLATES)
    tenant = await repo.ensure_tenant("t_bench")
    principal = Principal(tenant=tenant.slug, scopes=frozenset({"send"}))
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    handing_off = args.broker == "rabbitmq" and not args.no_handoff
    side = Side(
        url,
        args.broker,
        args.amqp_url,
        prefix,
        not args.no_high_lane,
        args.batch,
        args.backlog_cap,
        sender_nice=args.bulk_nice if args.high_senders > 0 else 0,  # as actors.sender
        relay_nice=args.bulk_nice if handing_off else 0,  # as actors.relay: codes come its way otherwise
    )
    # as the API replica hands one-time codes to RabbitMQ itself (HERALD_HANDOFF, engine.runtime.open_handoff)
    handoff = Handoff(repo, make_broker(side)) if handing_off else None
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600, handoff=handoff)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    reached_q = ctx.Queue()
    sent = ctx.Value("q", 0)
    procs = [ctx.Process(target=relay_process, args=(side, stop))]
    procs += [
        ctx.Process(target=sender_process, args=(side, stop, reached_q, sent, i >= args.senders))
        for i in range(args.senders + args.high_senders)
    ]
    for p in procs:
        p.start()
    reached = Reached(reached_q)
    try:
        await stream(intake, principal, reached, 50, args.rate, "warm")  # processes up, statements prepared
        quiet = await stream(intake, principal, reached, args.samples, args.rate, "quiet")
        t0 = time.perf_counter()
        await seed_burst(repo, tenant.id, args.burst)
        seeded_s = time.perf_counter() - t0
        sent_before = sent.value
        burst = await stream(intake, principal, reached, args.samples, args.rate, "burst")
        left = await low_waiting(repo, tenant.id)
        burst_s = time.perf_counter() - t0
        low_sent = sent.value - sent_before - args.samples
    finally:
        if handoff is not None:
            await handoff.aclose()
            await handoff.broker.close()
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
                p.join()
        if args.broker == "rabbitmq":
            await delete_queues(args.amqp_url, side.prefix)
        await pool.close()
    return {
        "broker": args.broker,
        "senders": args.senders,
        "high_senders": args.high_senders,
        "high_lane": not args.no_high_lane,
        "handoff": handoff is not None,
        "handed_off": handoff.published if handoff else 0,
        "backlog_cap": args.backlog_cap,
        "sender_nice": side.sender_nice,
        "relay_nice": side.relay_nice,
        "batch": args.batch,
        "rate_per_s": args.rate,
        "burst": args.burst,
        "burst_seeded_s": round(seeded_s, 1),
        "low_sent_during_burst_phase": low_sent,
        "low_per_s_during_burst_phase": round(low_sent / burst_s),
        "low_still_waiting_at_last_sample": left,
        "quiet": percentiles(quiet),
        "during_burst": percentiles(burst),
    }


async def delete_queues(url: str, prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in ALL_QUEUES:
            await channel.queue_delete(prefix + queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=100_000, help="low messages in the burst")
    parser.add_argument("--samples", type=int, default=1000, help="one-time codes timed per phase")
    parser.add_argument("--rate", type=float, default=50.0, help="one-time codes per second")
    parser.add_argument(
        "--senders", type=int, default=Settings.model_fields["senders"].default, help="bulk senders (HERALD_SENDERS)"
    )
    parser.add_argument(
        "--high-senders",
        type=int,
        default=Settings.model_fields["high_senders"].default,
        help="dedicated senders for notifications.high (HERALD_HIGH_SENDERS)",
    )
    parser.add_argument(
        "--broker", choices=("rabbitmq", "postgres"), default="rabbitmq" if os.environ.get("AMQP_URL") else "postgres"
    )
    parser.add_argument("--batch", type=int, default=100, help="messages per claim/record (HERALD_SENDER_BATCH)")
    parser.add_argument("--no-high-lane", action="store_true", help="senders without the reserved high lane")
    parser.add_argument(
        "--bulk-nice",
        type=int,
        default=Settings.model_fields["bulk_nice"].default,
        help="what the relay and the senders beside the dedicated ones lower their CPU priority by (HERALD_BULK_NICE)",
    )
    parser.add_argument(
        "--no-handoff", action="store_true", help="the relay publishes the one-time codes too (HERALD_HANDOFF=false)"
    )
    parser.add_argument(
        "--backlog-cap",
        type=int,
        default=RelayOptions().backlog_cap,
        help="ready envelopes per queue beyond which the relay leaves normal and low rows in the outbox (0: no cap)",
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL"))
    args = parser.parse_args()
    if not args.database_url:
        raise SystemExit("set DATABASE_URL (or --database-url): the server the benchmark makes its database on")
    url = asyncio.run(prepare(args.database_url))
    try:
        figures = asyncio.run(run(url, args))
    finally:
        asyncio.run(drop(args.database_url, url))
    print(json.dumps(figures, indent=2))
    quiet, burst = figures["quiet"], figures["during_burst"]
    assert isinstance(quiet, dict) and isinstance(burst, dict)
    ratio = burst["p99_ms"] / max(quiet["p99_ms"], 0.1)
    print(
        f"accept -> provider, one-time codes: quiet p50 {quiet['p50_ms']} ms p99 {quiet['p99_ms']} ms | "
        f"during a {figures['burst']:,} low burst p50 {burst['p50_ms']} ms p99 {burst['p99_ms']} ms "
        f"({ratio:.2f}x quiet p99; goal <= 250 ms and <= 2x)"
    )


if __name__ == "__main__":
    main()
