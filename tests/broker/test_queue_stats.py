"""Queue statistics, DLQ caps and the queues view on both adapters (RabbitMQ and the Postgres queue), against
a known backlog: depth, consumers, age of the oldest, rates over a window, and the gauges through the
metrics aggregation."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest

from engine.broker import Broker, Envelope
from engine.broker.pgqueue import PgQueueBroker
from engine.broker.rabbitmq import RabbitMQBroker
from engine.channels import ALL_QUEUES, DLQ_QUEUES, Priority, dlq_queue, priority_queue
from engine.channels import Channel as Ch
from engine.lifecycle.queues import QueueMonitor
from engine.metrics import MetricsAggregator, MetricsBuffer
from engine.storage.queue_store import QueueStore
from engine.storage.repository import create_pool
from tests.broker.conftest import BrokerFactory, delete_rabbit_queues, rabbit_broker, unique_prefix

pytestmark = pytest.mark.integration

NORMAL, HIGH = priority_queue(Priority.NORMAL), priority_queue(Priority.HIGH)
DLQ_EMAIL = dlq_queue(Ch.EMAIL)


def envelopes(n: int, priority: Priority = Priority.NORMAL) -> list[Envelope]:
    return [Envelope(priority, (uuid.uuid4(),), tenant="t_1") for _ in range(n)]


def consumer_options(kind: str) -> dict[str, int]:
    """A consumer that holds at most 10 unacked envelopes of a queue (RabbitMQ prefetches up to its window)."""
    return {"prefetch": 10} if kind == "rabbitmq" else {}


async def settle(kind: str) -> None:
    if kind == "rabbitmq":
        await asyncio.sleep(0.3)  # RabbitMQ's message_count follows deliveries a moment later


@pytest.fixture
async def queue_store(database_url: str) -> AsyncIterator[QueueStore]:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    yield QueueStore(pool)
    await pool.close()


async def dlq_contents(broker: Broker, target: tuple[str, str]) -> list[uuid.UUID]:
    kind, url = target
    assert isinstance(broker, PgQueueBroker | RabbitMQBroker)
    name = broker.prefix + DLQ_EMAIL
    if kind == "postgres":
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT body FROM queue_items WHERE queue = $1 ORDER BY id", name)
            bodies = [r["body"] for r in rows]
        finally:
            await conn.close()
    else:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            bodies = []
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                bodies.append(message.body)
    return [Envelope.from_bytes(b).message_ids[0] for b in bodies]


async def test_stats_of_a_known_backlog(make: BrokerFactory, target: tuple[str, str]) -> None:
    broker = await make()
    await broker.publish(NORMAL, envelopes(5))
    await broker.publish(DLQ_EMAIL, envelopes(2))
    await asyncio.sleep(1.2)
    await broker.publish(NORMAL, envelopes(3))
    await settle(target[0])
    stats = await broker.stats()
    assert set(stats) == set(ALL_QUEUES)
    normal = stats[NORMAL]
    assert (normal.depth, normal.consumers) == (8, 0)
    assert normal.oldest_age_s is not None and 1.1 <= normal.oldest_age_s < 10
    assert stats[DLQ_EMAIL].depth == 2 and stats[DLQ_EMAIL].oldest_age_s is not None
    assert (stats[HIGH].depth, stats[HIGH].oldest_age_s) == (0, None)


async def test_looking_at_the_head_loses_and_reorders_nothing(make: BrokerFactory) -> None:
    broker = await make()
    sent = envelopes(20)
    await broker.publish(NORMAL, sent)
    await broker.stats()
    await broker.stats()
    got: list[Envelope] = []
    for _ in range(50):
        got += [d.envelope for d in await broker.get(20, 0.2)]
        if len(got) >= 20:
            break
    assert [e.message_ids for e in got] == [e.message_ids for e in sent]


async def test_consumers_are_counted_while_they_consume(make: BrokerFactory, target: tuple[str, str]) -> None:
    observer = await make()
    assert {s.consumers for s in (await observer.stats()).values()} == {0}
    consumer = await make()
    await consumer.get(1, 0.1)
    await settle(target[0])
    stats = await observer.stats()
    assert {q: stats[q].consumers for q in ALL_QUEUES if q not in DLQ_QUEUES} == dict.fromkeys(
        (priority_queue(p) for p in Priority), 1
    )
    assert {stats[q].consumers for q in DLQ_QUEUES} == {0}
    await consumer.close()
    await settle(target[0])
    assert {s.consumers for s in (await observer.stats()).values()} == {0}


async def test_a_dlq_queue_keeps_only_the_newest_up_to_its_cap(make: BrokerFactory, target: tuple[str, str]) -> None:
    broker = await make(dlq_max_length=5)
    first, second = envelopes(3), envelopes(5)
    await broker.publish(DLQ_EMAIL, first)
    await broker.publish(DLQ_EMAIL, second)
    await broker.publish(NORMAL, envelopes(8))  # the priority queues have no cap
    await settle(target[0])
    depths = await broker.depths()
    assert (depths[DLQ_EMAIL], depths[NORMAL]) == (5, 8)
    assert await dlq_contents(broker, target) == [e.message_ids[0] for e in second]


async def test_queue_view_and_gauges_against_a_known_backlog(
    make: BrokerFactory, target: tuple[str, str], queue_store: QueueStore
) -> None:
    kind = target[0]
    publisher = await make()
    published: Counter[str] = Counter()
    now = [1000.0]
    monitor = QueueMonitor(publisher, lambda: published, queue_store, clock=lambda: now[0])

    async def publish(n: int) -> None:
        await publisher.publish(NORMAL, envelopes(n))
        published[NORMAL] += n  # what the relay counts as it publishes

    await publish(20)
    await settle(kind)
    base = await monitor.refresh()
    assert base.window_s is None and all(q.rate_in_per_s is None for q in base.queues)
    await asyncio.sleep(1.0)
    await publish(20)
    consumer = await make(**consumer_options(kind))
    held = []
    while len(held) < 10:  # 10 taken and held unacked: they have left the ready queue
        held += await consumer.get(10 - len(held), 0.5)
    await settle(kind)
    now[0] += 30.0
    snapshot = await monitor.refresh()
    normal = next(q for q in snapshot.queues if q.queue == NORMAL)
    assert snapshot.window_s == 30.0 and snapshot.broker == publisher.name
    assert normal.depth == 30 and normal.consumers == 1
    assert normal.rate_in_per_s == round(20 / 30, 3)  # 20 in over 30 s
    assert normal.rate_out_per_s == round(10 / 30, 3)  # 10 out: the depth grew by 10 of the 20
    assert normal.oldest_age_s is not None and normal.oldest_age_s >= 0.9

    buffer = MetricsBuffer()
    monitor.gauges(buffer)
    aggregator = MetricsAggregator()
    aggregator.apply(buffer.drain())
    text = aggregator.render().decode()
    assert 'queue_depth{queue="notifications.normal"} 30.0' in text
    assert 'queue_depth{queue="notifications.high"} 0.0' in text
    age = 'queue_oldest_age_seconds{queue="notifications.normal"}'
    assert float(next(line for line in text.splitlines() if line.startswith(age)).split()[-1]) >= 0.9
    for d in held:
        await d.ack()


async def test_rabbitmq_keeps_an_existing_uncapped_dlq_and_says_how_to_cap_it(
    amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix("u")
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(prefix + DLQ_EMAIL, durable=True)  # declared by an older version
    broker = rabbit_broker(amqp_url, prefix)
    try:
        await broker.connect()
        await broker.publish(DLQ_EMAIL, envelopes(1))
        assert (await broker.depths())[DLQ_EMAIL] == 1
        assert any("set_policy" in r.getMessage() and DLQ_EMAIL in r.getMessage() for r in caplog.records)
    finally:
        await broker.close()
        await delete_rabbit_queues(amqp_url, prefix)
