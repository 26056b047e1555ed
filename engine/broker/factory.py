"""Which broker adapter backs the port: RabbitMQ when AMQP_URL is set, else the Postgres queue."""

from __future__ import annotations

from engine.channels import Priority

from .base import DLQ_MAX_LENGTH, HIGH_SENDER_CONSUMER_PRIORITY, Broker


def make_broker(
    amqp_url: str | None,
    pg_dsn: str,
    *,
    queue_prefix: str = "",
    prefetch: int = 20,
    lease_s: float = 30.0,
    dlq_max_length: int = DLQ_MAX_LENGTH,
    high_only: bool = False,
) -> Broker:
    """An unconnected broker: :class:`~engine.broker.rabbitmq.RabbitMQBroker` on ``amqp_url`` when it is
    set, else :class:`~engine.broker.pgqueue.PgQueueBroker` on ``pg_dsn`` (its own small pool).

    ``prefetch``: each RabbitMQ priority consumer's unacked window. ``lease_s``: how long an unacked
    Postgres-queue delivery stays invisible (RabbitMQ needs none: it redelivers when the consumer's
    connection drops). ``dlq_max_length``: the cap of each ``notifications.dlq.<channel>`` queue.
    ``high_only``: a dedicated high-priority sender's broker: RabbitMQ consumes ``notifications.high``
    alone, at ``HIGH_SENDER_CONSUMER_PRIORITY`` (the Postgres queue is polled by ``get`` alone: nothing to
    do). Adapters are imported lazily so neither client library is needed for the other.
    """
    if amqp_url:
        from .rabbitmq import RabbitMQBroker

        return RabbitMQBroker(
            amqp_url,
            prefetch=prefetch,
            queue_prefix=queue_prefix,
            dlq_max_length=dlq_max_length,
            **({"consume": (Priority.HIGH,), "consumer_priority": HIGH_SENDER_CONSUMER_PRIORITY} if high_only else {}),
        )
    from .pgqueue import PgQueueBroker

    return PgQueueBroker(dsn=pg_dsn, queue_prefix=queue_prefix, lease_s=lease_s, dlq_max_length=dlq_max_length)
