"""Fixtures of the broker contract suite: one connected-broker factory per adapter.

Each test gets a fresh queue namespace (``queue_prefix``), so runs and tests never see each other's
messages; RabbitMQ queues of the namespace are deleted at teardown.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import pytest

from engine.broker import Broker
from engine.broker.pgqueue import PgQueueBroker
from engine.broker.rabbitmq import RabbitMQBroker
from engine.channels import ALL_QUEUES

#: A short Postgres lease, so "the consumer died" tests take a second, not thirty.
PG_LEASE_S = 1.0

BrokerFactory = Callable[..., Awaitable[Broker]]


async def delete_rabbit_queues(url: str, prefix: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in ALL_QUEUES:
            await channel.queue_delete(prefix + queue)


def unique_prefix(tag: str = "c") -> str:
    return f"{tag}{uuid.uuid4().hex[:8]}."


def pg_broker(dsn: str, prefix: str, **options: Any) -> PgQueueBroker:
    return PgQueueBroker(dsn=dsn, queue_prefix=prefix, **{"lease_s": PG_LEASE_S, "poll_s": 0.05, **options})


def rabbit_broker(url: str, prefix: str, **options: Any) -> RabbitMQBroker:
    return RabbitMQBroker(url, queue_prefix=prefix, **{"prefetch": 50, "reconnect_interval_s": 0.2, **options})


@pytest.fixture(params=["postgres", "rabbitmq"])
def target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Which adapter, and its server's URL (resolved outside any event loop; RabbitMQ may skip)."""
    fixture = "database_url" if request.param == "postgres" else "amqp_url"
    return request.param, request.getfixturevalue(fixture)


@pytest.fixture
async def make(target: tuple[str, str]) -> AsyncIterator[BrokerFactory]:
    """``await make(**options)``: a connected broker of the adapter under test, in this test's namespace.

    Every broker made is closed at teardown (closing twice is harmless).
    """
    kind, url = target
    prefix = unique_prefix()
    made: list[Broker] = []

    async def factory(**options: Any) -> Broker:
        broker: Broker = (
            pg_broker(url, prefix, **options) if kind == "postgres" else rabbit_broker(url, prefix, **options)
        )
        await broker.connect()
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        await broker.close()
    if kind == "rabbitmq":
        await delete_rabbit_queues(url, prefix)
