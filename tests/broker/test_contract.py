"""The broker contract (engine/broker/base.py), run against both adapters: RabbitMQ and the Postgres
queue table. Each test uses its own queue prefix, so runs and tests never see each other's messages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import pytest

from engine.broker import Broker, BrokerUnavailable, Envelope
from engine.broker.pgqueue import PgQueueBroker
from engine.broker.rabbitmq import RabbitMQBroker
from engine.channels import ALL_QUEUES, Priority, dlq_queue, priority_queue
from engine.channels import Channel as Ch
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

BrokerFactory = Callable[[], Awaitable[Broker]]


def envelope(priority: Priority = Priority.NORMAL, n: int = 1, tenant: str | None = "t_1") -> Envelope:
    return Envelope(priority, tuple(uuid.uuid4() for _ in range(n)), tenant=tenant)


async def _delete_rabbit_queues(url: str, prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in ALL_QUEUES:
            await channel.queue_delete(prefix + queue)


@pytest.fixture(params=["postgres", "rabbitmq"])
def target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Which adapter, and its server (resolved outside any event loop)."""
    fixture = "database_url" if request.param == "postgres" else "amqp_url"
    return request.param, request.getfixturevalue(fixture)


@pytest.fixture
async def make(target: tuple[str, str]) -> AsyncIterator[BrokerFactory]:
    """A factory of connected brokers sharing one fresh queue namespace."""
    kind, url = target
    prefix = f"c{uuid.uuid4().hex[:8]}."
    made: list[Broker] = []
    if kind == "postgres":
        dsn = url

        async def factory() -> Broker:
            broker: Broker = PgQueueBroker(dsn=dsn, queue_prefix=prefix, lease_s=1.0, poll_s=0.05)
            await broker.connect()
            made.append(broker)
            return broker
    else:

        async def factory() -> Broker:
            broker = RabbitMQBroker(url, prefetch=50, queue_prefix=prefix)
            await broker.connect()
            made.append(broker)
            return broker

    yield factory
    for broker in made:
        await broker.close()
    if kind == "rabbitmq":
        await _delete_rabbit_queues(url, prefix)


async def drain(broker: Broker, want: int, timeout_s: float = 5.0) -> list:  # type: ignore[type-arg]
    got: list = []  # type: ignore[type-arg]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(got) < want and asyncio.get_running_loop().time() < deadline:
        got += await broker.get(want - len(got), 0.2)
    return got


async def test_roundtrip_keeps_ids_priority_and_tenant(make: BrokerFactory) -> None:
    broker = await make()
    sent = envelope(Priority.HIGH, n=3, tenant="t_42")
    await broker.publish(priority_queue(Priority.HIGH), [sent])
    [delivery] = await drain(broker, 1)
    assert delivery.envelope == sent and delivery.queue == "notifications.high"
    assert not delivery.redelivered
    await delivery.ack()
    assert await broker.get(1, 0.3) == []


async def test_nack_requeues_as_redelivered(make: BrokerFactory) -> None:
    broker = await make()
    sent = envelope()
    await broker.publish(priority_queue(Priority.NORMAL), [sent])
    [first] = await drain(broker, 1)
    await first.nack(requeue=True)
    [again] = await drain(broker, 1)
    assert again.envelope.message_ids == sent.message_ids and again.redelivered
    await again.ack()


async def test_unacked_delivery_comes_back_to_another_consumer(make: BrokerFactory) -> None:
    crashed, survivor = await make(), await make()
    sent = envelope()
    await crashed.publish(priority_queue(Priority.NORMAL), [sent])
    [held] = await drain(crashed, 1)
    assert held.envelope == sent
    await crashed.close()  # dies without acking (Postgres queue: its 1 s lease runs out)
    [back] = await drain(survivor, 1, timeout_s=10)
    assert back.envelope.message_ids == sent.message_ids and back.redelivered
    await back.ack()


async def test_high_before_normal_before_low(make: BrokerFactory) -> None:
    broker = await make()
    low = [envelope(Priority.LOW) for _ in range(50)]
    normal = [envelope(Priority.NORMAL) for _ in range(50)]
    high = envelope(Priority.HIGH)
    await broker.publish(priority_queue(Priority.LOW), low)
    await broker.publish(priority_queue(Priority.NORMAL), normal)
    await broker.publish(priority_queue(Priority.HIGH), [high])
    await asyncio.sleep(0.3)  # everything is available before the first get
    got = await drain(broker, 101)
    order = [d.envelope.priority for d in got]
    assert order[0] is Priority.HIGH
    assert order == sorted(order, key=lambda p: p.rank), "a lower priority was served before a higher one"
    for d in got:
        await d.ack()


async def test_published_messages_survive_the_publisher(make: BrokerFactory) -> None:
    publisher = await make()
    sent = envelope(Priority.LOW)
    await publisher.publish(priority_queue(Priority.LOW), [sent])
    await publisher.close()
    consumer = await make()
    [delivery] = await drain(consumer, 1)
    assert delivery.envelope == sent
    await delivery.ack()


async def test_batch_publish_and_depths(make: BrokerFactory) -> None:
    broker = await make()
    await broker.publish(priority_queue(Priority.LOW), [envelope(Priority.LOW, n=100) for _ in range(1000)])
    await broker.publish(dlq_queue(Ch.EMAIL), [envelope(Priority.NORMAL)])
    depths = await broker.depths()
    assert depths["notifications.low"] == 1000
    assert depths["notifications.dlq.email"] == 1
    assert depths["notifications.high"] == 0


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    creds = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{creds}127.0.0.1:{port}"))


async def test_rabbitmq_unreachable_then_recovers(amqp_url: str) -> None:
    target = urlsplit(amqp_url)
    proxy = TcpProxy()
    port = proxy.start(target.hostname or "127.0.0.1", target.port or 5672)
    prefix = f"o{uuid.uuid4().hex[:8]}."
    try:
        proxy.cut()
        with pytest.raises(BrokerUnavailable):
            await RabbitMQBroker(_via(amqp_url, port), queue_prefix=prefix).connect()
        proxy.restore()
        broker = RabbitMQBroker(_via(amqp_url, port), queue_prefix=prefix)
        await broker.connect()
        proxy.cut()  # the connection drops under a live broker object
        with pytest.raises(BrokerUnavailable):
            await broker.publish(priority_queue(Priority.HIGH), [envelope(Priority.HIGH)])
        proxy.restore()
        sent = envelope(Priority.HIGH)
        for _ in range(50):  # the robust connection comes back by itself
            try:
                await broker.publish(priority_queue(Priority.HIGH), [sent])
                break
            except BrokerUnavailable:
                await asyncio.sleep(0.2)
        [delivery] = await drain(broker, 1)
        assert delivery.envelope == sent
        await delivery.ack()
        await broker.close()
    finally:
        proxy.stop()
        await _delete_rabbit_queues(amqp_url, prefix)
