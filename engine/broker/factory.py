"""Which broker adapter backs the port: RabbitMQ when AMQP_URL is set, else the Postgres queue."""

from __future__ import annotations

from .base import Broker


def make_broker(
    amqp_url: str | None, pg_dsn: str, *, queue_prefix: str = "", prefetch: int = 20, lease_s: float = 30.0
) -> Broker:
    """``lease_s``: how long an unacked Postgres-queue delivery stays invisible (RabbitMQ needs none:
    it redelivers when the consumer's connection drops)."""
    if amqp_url:
        from .rabbitmq import RabbitMQBroker

        return RabbitMQBroker(amqp_url, prefetch=prefetch, queue_prefix=queue_prefix)
    from .pgqueue import PgQueueBroker

    return PgQueueBroker(dsn=pg_dsn, queue_prefix=queue_prefix, lease_s=lease_s)
