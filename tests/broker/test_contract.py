"""The broker contract (engine/broker/base.py), run against both adapters: RabbitMQ and the Postgres
queue table (fixtures in tests/broker/conftest.py), plus each adapter's outage behaviour through a
cuttable TCP proxy."""

from __future__ import annotations

import asyncio
import socket
import uuid
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest

from engine.broker import Broker, BrokerUnavailable, Delivery, Envelope
from engine.broker.pgqueue import PgQueueBroker
from engine.broker.rabbitmq import RabbitMQBroker
from engine.channels import ALL_QUEUES, Priority, dlq_queue, priority_queue
from engine.channels import Channel as Ch
from tests.broker.conftest import (
    PG_LEASE_S,
    BrokerFactory,
    delete_rabbit_queues,
    pg_broker,
    rabbit_broker,
    unique_prefix,
)
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration

HIGH, NORMAL, LOW = (priority_queue(p) for p in (Priority.HIGH, Priority.NORMAL, Priority.LOW))
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def envelope(priority: Priority = Priority.NORMAL, n: int = 1, tenant: str | None = "t_1") -> Envelope:
    return Envelope(priority, tuple(uuid.uuid4() for _ in range(n)), tenant=tenant)


async def drain(broker: Broker, want: int, timeout_s: float = 5.0) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(got) < want and asyncio.get_running_loop().time() < deadline:
        got += await broker.get(want - len(got), 0.2)
    return got


# -- the contract, on both adapters ------------------------------------------------------------------


async def test_roundtrip_keeps_ids_priority_tenant_and_trace(make: BrokerFactory) -> None:
    broker = await make()
    sent = Envelope(Priority.HIGH, (uuid.uuid4(), uuid.uuid4(), uuid.uuid4()), tenant="t_42", traceparent=TRACEPARENT)
    anonymous = envelope(Priority.HIGH, tenant=None)
    await broker.publish(HIGH, [sent, anonymous])
    first, second = await drain(broker, 2)
    assert (first.envelope, second.envelope) == (sent, anonymous)
    assert first.queue == "notifications.high" and not first.redelivered
    await first.ack()
    await second.ack()
    assert await broker.get(1, 0.2) == []


async def test_ack_removes_for_good(make: BrokerFactory) -> None:
    consumer = await make()
    await consumer.publish(NORMAL, [envelope()])
    [delivery] = await drain(consumer, 1)
    await delivery.ack()
    with pytest.raises(RuntimeError):
        await delivery.ack()  # settled once, exactly
    await consumer.close()
    other = await make()
    assert await other.get(1, PG_LEASE_S + 0.3) == []  # past the Postgres lease: not merely hidden
    assert (await other.depths())["notifications.normal"] == 0


async def test_nack_requeues_as_redelivered(make: BrokerFactory) -> None:
    broker = await make()
    sent = envelope()
    await broker.publish(NORMAL, [sent])
    [first] = await drain(broker, 1)
    await first.nack(requeue=True)
    [again] = await drain(broker, 1, timeout_s=2)
    assert again.envelope == sent and again.redelivered
    await again.ack()


async def test_nack_without_requeue_drops(make: BrokerFactory) -> None:
    broker = await make()
    await broker.publish(NORMAL, [envelope()])
    [delivery] = await drain(broker, 1)
    await delivery.nack(requeue=False)
    assert await broker.get(1, PG_LEASE_S + 0.3) == []


async def test_unacked_delivery_comes_back_to_another_consumer(make: BrokerFactory) -> None:
    crashed, survivor = await make(), await make()
    sent = envelope()
    await crashed.publish(NORMAL, [sent])
    [held] = await drain(crashed, 1)
    assert held.envelope == sent
    await crashed.close()  # dies without acking (Postgres queue: its 1 s lease runs out)
    [back] = await drain(survivor, 1, timeout_s=10)
    assert back.envelope == sent and back.redelivered
    await back.ack()


async def test_high_before_normal_before_low(make: BrokerFactory) -> None:
    broker = await make()
    low = [envelope(Priority.LOW) for _ in range(50)]
    normal = [envelope(Priority.NORMAL) for _ in range(50)]
    high = envelope(Priority.HIGH)
    await broker.publish(LOW, low)
    await broker.publish(NORMAL, normal)
    await broker.publish(HIGH, [high])
    await asyncio.sleep(0.2)  # everything is available before the first get
    got = await drain(broker, 101)
    assert got[0].envelope == high
    order = [d.envelope.priority for d in got]
    assert order == sorted(order, key=lambda p: p.rank), "a lower priority was served before a higher one"
    assert [d.envelope for d in got[1:51]] == normal and [d.envelope for d in got[51:]] == low  # FIFO within
    for d in got:
        await d.ack()


async def test_high_overtakes_a_waiting_low_backlog(make: BrokerFactory) -> None:
    broker = await make()
    await broker.publish(LOW, [envelope(Priority.LOW) for _ in range(30)])
    [first_low] = await drain(broker, 1)  # the consumer is live (RabbitMQ: the lows are prefetched)
    urgent = envelope(Priority.HIGH)
    await broker.publish(HIGH, [urgent])
    await asyncio.sleep(0.2)
    batch = await broker.get(5, 1.0)
    assert batch[0].envelope == urgent and all(d.envelope.priority is Priority.LOW for d in batch[1:])
    for d in [first_low, *batch]:
        await d.ack()


async def test_published_messages_survive_the_publisher(make: BrokerFactory) -> None:
    publisher = await make()
    sent = envelope(Priority.LOW)
    await publisher.publish(LOW, [sent])
    await publisher.close()
    consumer = await make()
    [delivery] = await drain(consumer, 1)
    assert delivery.envelope == sent
    await delivery.ack()


async def test_batch_publish_and_depths(make: BrokerFactory) -> None:
    broker = await make()
    await broker.publish(LOW, [envelope(Priority.LOW, n=100) for _ in range(1000)])
    await broker.publish(dlq_queue(Ch.EMAIL), [envelope(Priority.NORMAL)])
    depths = await broker.depths()
    assert set(depths) == set(ALL_QUEUES)
    assert depths["notifications.low"] == 1000
    assert depths["notifications.dlq.email"] == 1
    assert depths["notifications.high"] == depths["notifications.dlq.sms"] == 0
    assert await broker.health()


async def test_ready_counts_the_queues_asked_for_as_they_change(make: BrokerFactory) -> None:
    broker = await make()
    await broker.publish(LOW, [envelope(Priority.LOW) for _ in range(7)])
    assert await broker.ready([LOW, NORMAL]) == {LOW: 7, NORMAL: 0}
    await broker.publish(LOW, [envelope(Priority.LOW) for _ in range(2)])
    assert await broker.ready([LOW]) == {LOW: 9}  # read again, not a cached answer


async def test_publish_to_an_unknown_queue_is_a_programming_error(make: BrokerFactory) -> None:
    broker = await make()
    with pytest.raises(ValueError, match="unknown queue"):
        await broker.publish("notifications.urgent", [envelope()])


async def test_get_waits_for_the_first_and_wakes_on_publish(make: BrokerFactory, target: tuple[str, str]) -> None:
    # The Postgres consumer polls only every 5 s here, so a prompt wake-up proves LISTEN/NOTIFY works.
    consumer = await make(**({"poll_s": 5.0} if target[0] == "postgres" else {}))
    publisher = await make()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await consumer.get(1, 0.3) == []
    assert 0.25 <= loop.time() - started < 1.5
    waiting = asyncio.create_task(consumer.get(10, 4.0))
    await asyncio.sleep(0.2)
    sent = envelope()
    published = loop.time()
    await publisher.publish(NORMAL, [sent])
    [delivery] = await asyncio.wait_for(waiting, 5)
    assert delivery.envelope == sent and loop.time() - published < 1.0
    await delivery.ack()


async def test_competing_consumers_share_without_duplicates(make: BrokerFactory) -> None:
    a, b = await make(), await make()
    sent = [envelope() for _ in range(200)]
    await a.publish(NORMAL, sent)
    seen: list[uuid.UUID] = []
    deadline = asyncio.get_running_loop().time() + 10

    async def consume(broker: Broker) -> None:
        while len(seen) < len(sent) and asyncio.get_running_loop().time() < deadline:
            for d in await broker.get(20, 0.1):
                seen.extend(d.envelope.message_ids)
                await d.ack()

    await asyncio.gather(consume(a), consume(b))
    assert sorted(seen) == sorted(e.message_ids[0] for e in sent)


async def test_ack_many_settles_a_batch(make: BrokerFactory) -> None:
    broker = await make()
    assert isinstance(broker, PgQueueBroker | RabbitMQBroker)
    await broker.publish(NORMAL, [envelope() for _ in range(30)])
    got = await drain(broker, 30)
    await broker.ack_many(got)
    await broker.close()
    other = await make()
    assert await other.get(1, PG_LEASE_S + 0.3) == []


async def test_an_unreadable_message_is_dropped_not_redelivered(make: BrokerFactory, target: tuple[str, str]) -> None:
    kind, url = target
    broker = await make()
    assert isinstance(broker, PgQueueBroker | RabbitMQBroker)
    queue = broker.prefix + NORMAL
    if kind == "postgres":
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("INSERT INTO queue_items (queue, priority, body) VALUES ($1, 1, $2)", queue, b"{")
        finally:
            await conn.close()
    else:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(aio_pika.Message(b'{"v": 99}'), routing_key=queue)
    good = envelope()
    await broker.publish(NORMAL, [good])
    [delivery] = await drain(broker, 1)
    assert delivery.envelope == good
    await delivery.ack()
    assert await broker.get(1, PG_LEASE_S + 0.3) == []


# -- outages, per adapter ----------------------------------------------------------------------------


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    creds = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{creds}127.0.0.1:{port}"))


async def _until_published(broker: Broker, queue: str, sent: Envelope, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await broker.publish(queue, [sent])
            return
        except BrokerUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_rabbitmq_connect_times_out_on_a_silent_server(amqp_url: str) -> None:
    with socket.socket() as silent:  # accepts TCP (the kernel does) but never speaks AMQP
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = _via(amqp_url, silent.getsockname()[1])
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BrokerUnavailable):
            await RabbitMQBroker(url, connect_timeout_s=0.5).connect()
        assert loop.time() - started < 3


async def test_rabbitmq_outage_then_recovery(amqp_url: str) -> None:
    target = urlsplit(amqp_url)
    prefix = unique_prefix("o")
    loop = asyncio.get_running_loop()
    with TcpProxy() as proxy:
        via = _via(amqp_url, proxy.start(target.hostname or "127.0.0.1", target.port or 5672))
        try:
            proxy.cut()
            started = loop.time()
            with pytest.raises(BrokerUnavailable):
                await rabbit_broker(via, prefix).connect()
            assert loop.time() - started < 2
            proxy.restore()
            broker = rabbit_broker(via, prefix)
            await broker.connect()
            held = envelope(Priority.HIGH)
            await broker.publish(HIGH, [held])
            [unacked] = await drain(broker, 1)

            proxy.cut()  # the connection drops under a live broker object holding an unacked delivery
            with pytest.raises(BrokerUnavailable):
                await broker.publish(HIGH, [envelope(Priority.HIGH)])
            with pytest.raises(BrokerUnavailable):
                await broker.get(1, 0.1)
            with pytest.raises(BrokerUnavailable):
                await unacked.ack()

            proxy.restore()  # the robust connection comes back by itself
            sent = envelope(Priority.HIGH)
            await _until_published(broker, HIGH, sent)
            got = await drain(broker, 2)
            assert {d.envelope for d in got} == {held, sent}
            assert [d.redelivered for d in got if d.envelope == held] == [True]
            for d in got:
                await d.ack()
            await broker.close()
        finally:
            await delete_rabbit_queues(amqp_url, prefix)


async def test_postgres_queue_outage_then_recovery(database_url: str) -> None:
    target = urlsplit(database_url)
    if not target.hostname or target.hostname.startswith("/"):
        pytest.skip("the embedded PostgreSQL listens on a unix socket only; no TCP to cut")
    with TcpProxy() as proxy:
        via = _via(database_url, proxy.start(target.hostname, target.port or 5432))
        proxy.cut()
        with pytest.raises(BrokerUnavailable):
            await pg_broker(via, unique_prefix("o")).connect()
        proxy.restore()
        broker = pg_broker(via, unique_prefix("o"), poll_s=5.0)
        await broker.connect()
        try:
            proxy.cut()
            with pytest.raises(BrokerUnavailable):
                await broker.publish(NORMAL, [envelope()])
            with pytest.raises(BrokerUnavailable):
                await broker.get(1, 0.1)
            proxy.restore()
            await _until_published(broker, NORMAL, envelope())
            [first] = await drain(broker, 1)
            await first.ack()
            # LISTEN came back too: with a 5 s poll, only a NOTIFY wakes this get in time.
            waiting = asyncio.create_task(broker.get(1, 4.0))
            await asyncio.sleep(0.2)
            sent = envelope()
            await broker.publish(NORMAL, [sent])
            [delivery] = await asyncio.wait_for(waiting, 1.5)
            assert delivery.envelope == sent
            await delivery.ack()
        finally:
            await broker.close()


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4) == b""
    except ConnectionResetError:
        return True


def test_tcpproxy_from_sync_code() -> None:
    """The proxy is plain blocking API: usable outside any event loop (and from other test modules)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        with TcpProxy() as proxy:
            port = proxy.start(*server.getsockname())
            client = socket.create_connection(("127.0.0.1", port), timeout=2)
            upstream, _ = server.accept()
            client.sendall(b"ping")
            assert upstream.recv(4) == b"ping"
            assert proxy.connections == 1
            proxy.cut()
            assert _closed(client)  # dropped
            refused = socket.create_connection(("127.0.0.1", port), timeout=2)
            assert _closed(refused)  # accepted, then closed at once
            proxy.restore()
            again = socket.create_connection(("127.0.0.1", port), timeout=2)
            upstream2, _ = server.accept()
            upstream2.sendall(b"pong")
            assert again.recv(4) == b"pong"
            for s in (client, upstream, refused, again, upstream2):
                s.close()
