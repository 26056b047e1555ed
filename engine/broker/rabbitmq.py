"""RabbitMQ behind the broker port (aio-pika): durable queues, persistent messages, publisher confirms,
manual acks, and a consumer that serves high before normal before low.

One channel consumes the three priority queues with a prefetch each into local per-priority buffers;
``get`` always drains the high buffer first. Unacked messages return to their queue when the
connection closes, which is how a killed sender's work comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection

from engine.channels import ALL_QUEUES, PRIORITY_ORDER, Priority, priority_queue

from .base import Broker, BrokerUnavailable, Delivery, Envelope

CONNECT_TIMEOUT_S = 5.0
CONFIRM_TIMEOUT_S = 10.0
_FAILURES = (
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,
)


class AmqpDelivery(Delivery):
    def __init__(self, message: AbstractIncomingMessage, queue: str, envelope: Envelope) -> None:
        self._message = message
        self.queue = queue
        self.envelope = envelope
        self.redelivered = bool(message.redelivered)

    async def ack(self) -> None:
        try:
            await self._message.ack()
        except _FAILURES as err:  # the channel died: RabbitMQ redelivers it, the claim makes that harmless
            raise BrokerUnavailable(f"ack failed: {err}") from err

    async def nack(self, *, requeue: bool = True) -> None:
        try:
            await self._message.nack(requeue=requeue)
        except _FAILURES as err:
            raise BrokerUnavailable(f"nack failed: {err}") from err


class RabbitMQBroker(Broker):
    name = "rabbitmq"

    def __init__(self, url: str, *, prefetch: int = 20, queue_prefix: str = "") -> None:
        self.url = url
        self.prefetch = prefetch
        self.prefix = queue_prefix
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._consume_channel: AbstractRobustChannel | None = None
        self._buffers: dict[Priority, deque[AmqpDelivery]] = {p: deque() for p in PRIORITY_ORDER}
        self._arrived = asyncio.Event()
        self._consuming = False

    def _name(self, queue: str) -> str:
        return self.prefix + queue

    async def connect(self) -> None:
        if self._connection is not None:
            return
        try:
            self._connection = await asyncio.wait_for(
                aio_pika.connect_robust(self.url, timeout=CONNECT_TIMEOUT_S), CONNECT_TIMEOUT_S + 1
            )
            self._publish_channel = await self._connection.channel(publisher_confirms=True)
            for queue in ALL_QUEUES:
                await self._publish_channel.declare_queue(self._name(queue), durable=True)
        except _FAILURES as err:
            await self._drop()
            raise BrokerUnavailable(f"cannot reach RabbitMQ: {err}") from err

    async def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(*_FAILURES):
                await self._connection.close()
        self._connection = self._publish_channel = self._consume_channel = None
        self._consuming = False

    async def close(self) -> None:
        for buffer in self._buffers.values():
            buffer.clear()  # unacked: RabbitMQ puts them back when the connection closes
        await self._drop()

    async def publish(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        if not envelopes:
            return
        if self._publish_channel is None:
            await self.connect()
        channel = self._publish_channel
        assert channel is not None
        try:
            confirms = [
                channel.default_exchange.publish(
                    aio_pika.Message(
                        e.to_bytes(),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        content_type="application/json",
                        headers={
                            "tenant": e.tenant or "",
                            "priority": e.priority.value,
                            "traceparent": e.traceparent or "",
                            "envelope_version": e.version,
                        },
                    ),
                    routing_key=self._name(queue),
                    mandatory=True,
                )
                for e in envelopes
            ]
            await asyncio.wait_for(asyncio.gather(*confirms), CONFIRM_TIMEOUT_S)
        except (*_FAILURES, aio_pika.exceptions.DeliveryError) as err:
            raise BrokerUnavailable(f"publish to {queue} not confirmed: {err}") from err

    async def _start_consuming(self) -> None:
        if self._consuming:
            return
        if self._connection is None:
            await self.connect()
        assert self._connection is not None
        try:
            self._consume_channel = await self._connection.channel()
            await self._consume_channel.set_qos(prefetch_count=self.prefetch)
            for priority in PRIORITY_ORDER:
                q = await self._consume_channel.declare_queue(self._name(priority_queue(priority)), durable=True)
                await q.consume(self._on_message_for(priority))
        except _FAILURES as err:
            raise BrokerUnavailable(f"cannot consume: {err}") from err
        self._consuming = True

    def _on_message_for(self, priority: Priority):  # type: ignore[no-untyped-def]
        queue = priority_queue(priority)

        async def on_message(message: AbstractIncomingMessage) -> None:
            headers = message.headers or {}
            try:
                envelope = Envelope.from_bytes(
                    message.body,
                    tenant=str(headers.get("tenant") or "") or None,
                    traceparent=str(headers.get("traceparent") or "") or None,
                )
            except (ValueError, KeyError) as err:
                # A body we cannot read is refused, not requeued forever.
                await message.reject(requeue=False)
                raise BrokerUnavailable(f"unreadable envelope on {queue}: {err}") from err
            self._buffers[priority].append(AmqpDelivery(message, queue, envelope))
            self._arrived.set()

        return on_message

    def _take(self, limit: int) -> list[Delivery]:
        out: list[Delivery] = []
        for priority in PRIORITY_ORDER:
            buffer = self._buffers[priority]
            while buffer and len(out) < limit:
                out.append(buffer.popleft())
        if not any(self._buffers.values()):
            self._arrived.clear()
        return out

    async def get(self, max_envelopes: int, timeout_s: float) -> list[Delivery]:
        await self._start_consuming()
        taken = self._take(max_envelopes)
        if taken:
            return taken
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), timeout_s)
        return self._take(max_envelopes)

    async def depths(self) -> dict[str, int]:
        if self._publish_channel is None:
            await self.connect()
        assert self._connection is not None
        try:
            channel = await self._connection.channel()
            try:
                counts = {}
                for queue in ALL_QUEUES:
                    declared = await channel.declare_queue(self._name(queue), durable=True, passive=True)
                    counts[queue] = int(declared.declaration_result.message_count or 0)
                return counts
            finally:
                await channel.close()
        except _FAILURES as err:
            raise BrokerUnavailable(f"cannot read queue depths: {err}") from err
