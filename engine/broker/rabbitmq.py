"""RabbitMQ behind the broker port (aio-pika): durable queues, persistent messages, publisher confirms,
manual acks, and a consumer that serves high before normal before low.

- ``publish`` sends a whole batch at once on a confirming channel and returns when every message is
  confirmed; a failure, a returned (unroutable) message or ``confirm_timeout_s`` raises
  :class:`BrokerUnavailable`. Each message carries the headers ``tenant``, ``priority`` and ``traceparent``
  and the body :meth:`Envelope.to_bytes` (``application/json``).
- One consumer channel (``basic.qos`` prefetch per consumer, so each priority queue has its own window)
  consumes the three priority queues (or the ones ``consume`` names) into local per-priority buffers;
  ``get`` drains the high buffer first (or only the buffers of the priorities it asks for).
- ``consumer_priority`` is the consumers' ``x-priority``: RabbitMQ hands a queue's messages to its
  highest-priority consumers while they have room in their window, and to the others only beyond that
  (a dedicated high-priority sender takes every one-time code, the other senders only what it cannot).
- Unacked messages go back to their queue when the connection closes (``close`` never acks), which is
  how a killed sender's work comes back. After a reconnect, deliveries buffered from the lost channel are
  discarded (RabbitMQ delivers them again, ``redelivered=True``).
- The connection is robust: it reconnects by itself every ``reconnect_interval_s``; meanwhile
  ``publish``, ``get`` and ``depths`` raise :class:`BrokerUnavailable` at once instead of waiting.
- ``notifications.dlq.<channel>`` queues are declared with ``x-max-length`` (``dlq_max_length``) and
  ``x-overflow: drop-head``. A queue that already exists without them keeps its arguments (RabbitMQ refuses
  to change them); a warning names the policy that caps it instead.
- Every message carries a ``published_ms`` header. ``stats`` reads depth and consumers from a passive
  declare, and the age of the oldest ready message by fetching the head message and returning it at once
  (``basic.get`` + ``nack(requeue=True)``: it keeps its place, and is marked redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, ChannelPreconditionFailed

from engine.channels import ALL_QUEUES, DLQ_QUEUES, PRIORITY_ORDER, Priority, priority_queue

from .base import DLQ_MAX_LENGTH, Broker, BrokerUnavailable, Delivery, Envelope, QueueStats

log = logging.getLogger(__name__)

# RuntimeError: aio-pika's "channel/connection closed" states (ChannelInvalidStateError and plain ones).
_FAILURES = (AMQPError, ConnectionError, OSError, TimeoutError, RuntimeError)


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """The one place AMQP and socket failures become :class:`BrokerUnavailable`."""
    try:
        yield
    except _FAILURES as err:
        raise BrokerUnavailable(f"rabbitmq: {what} failed: {err!r}") from err


async def _close_logged(closing: Awaitable[object], what: str) -> None:
    """Closing something already broken may fail too; that is worth a log line, not an error."""
    try:
        with _unavailable(what):
            await closing
    except BrokerUnavailable as err:
        log.warning("%s", err)


def _header(headers: dict[str, Any], key: str) -> str | None:
    value = headers.get(key)
    if isinstance(value, bytes):
        value = value.decode()
    return str(value) if value else None


class AmqpDelivery(Delivery):
    """One AMQP message held unacked by this consumer; ack/nack settle it on its channel."""

    def __init__(self, message: AbstractIncomingMessage, queue: str, envelope: Envelope) -> None:
        self._message = message
        self.queue = queue
        self.envelope = envelope
        self.redelivered = bool(message.redelivered)

    @property
    def stale(self) -> bool:
        """The channel it came on is gone: it can no longer be settled, RabbitMQ delivers it again."""
        try:
            self._message.channel  # noqa: B018 -- the property raises once the channel is closed
        except ChannelInvalidStateError:
            return True
        return False

    def _check_unsettled(self) -> None:
        if self._message.processed:
            raise RuntimeError(f"delivery {self._message.delivery_tag} on {self.queue} was already settled")

    async def ack(self) -> None:
        """Raises: BrokerUnavailable: the channel died (RabbitMQ redelivers it; the claim makes that harmless)."""
        self._check_unsettled()
        with _unavailable("ack"):
            await self._message.ack()

    async def nack(self, *, requeue: bool = True) -> None:
        """``requeue=False`` drops the message (no dead-letter exchange: the retry policy owns the DLQ)."""
        self._check_unsettled()
        with _unavailable("nack"):
            await self._message.nack(requeue=requeue)


class RabbitMQBroker(Broker):
    """The broker port on RabbitMQ (see the module docstring for the semantics).

    ``prefetch`` is the unacked window of each priority queue's consumer; ``queue_prefix`` namespaces
    every queue name (empty in production, unique per test session).
    """

    name = "rabbitmq"

    def __init__(
        self,
        url: str,
        *,
        prefetch: int = 20,
        queue_prefix: str = "",
        connect_timeout_s: float = 5.0,
        confirm_timeout_s: float = 10.0,
        reconnect_interval_s: float = 2.0,
        dlq_max_length: int = DLQ_MAX_LENGTH,
        consume: Sequence[Priority] = PRIORITY_ORDER,
        consumer_priority: int = 0,
    ) -> None:
        self.url = url
        self.consume = tuple(p for p in PRIORITY_ORDER if p in consume)
        self.consumer_priority = consumer_priority
        self.dlq_max_length = dlq_max_length
        self.prefetch = prefetch
        self.prefix = queue_prefix
        self.connect_timeout_s = connect_timeout_s
        self.confirm_timeout_s = confirm_timeout_s
        self.reconnect_interval_s = reconnect_interval_s
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._consume_channel: AbstractRobustChannel | None = None
        self._ready_channel: AbstractRobustChannel | None = None  #: for :meth:`ready`'s passive declares
        self._buffers: dict[Priority, deque[AmqpDelivery]] = {p: deque() for p in PRIORITY_ORDER}
        #: Each waiting ``get`` has its event here under every priority it takes (woken when one arrives).
        self._waiters: dict[Priority, set[asyncio.Event]] = {p: set() for p in PRIORITY_ORDER}
        self._closed = False
        self._connect_lock = asyncio.Lock()
        self._consume_lock = asyncio.Lock()

    def _name(self, queue: str) -> str:
        return self.prefix + queue

    async def connect(self) -> None:
        self._closed = False
        async with self._connect_lock:  # publish and get may both (re)connect at once: one connection
            if self._connection is None:
                await self._open()

    async def _open(self) -> None:
        with _unavailable("connect"):
            # Bounded by `timeout`; when the first attempt fails no reconnect loop is left behind.
            self._connection = await aio_pika.connect_robust(
                self.url, timeout=self.connect_timeout_s, reconnect_interval=self.reconnect_interval_s
            )
        try:
            with _unavailable("declare queues"):
                await asyncio.wait_for(self._declare(self._connection), self.connect_timeout_s)
        except BrokerUnavailable:
            await self._drop()
            raise

    async def _declare(self, connection: AbstractRobustConnection) -> None:
        # Declared on the publishing (robust) channel, so a reconnect declares them again.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._publish_channel = channel
        for queue in ALL_QUEUES:
            name = self._name(queue)
            if queue not in DLQ_QUEUES:
                await channel.declare_queue(name, durable=True)
            elif await self._declare_capped(connection, name):
                await channel.declare_queue(name, durable=True, arguments=self._dlq_arguments)
            else:
                await channel.declare_queue(name, durable=True, passive=True)  # keep it as it is

    @property
    def _dlq_arguments(self) -> dict[str, Any]:
        return {"x-max-length": self.dlq_max_length, "x-overflow": "drop-head"}

    async def _declare_capped(self, connection: AbstractRobustConnection, name: str) -> bool:
        """Declare a DLQ queue with its cap; False when it exists with other arguments (left alone, with a
        warning naming the policy that caps it)."""
        # Its own channel: a declare whose arguments differ from the existing queue's closes its channel.
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, durable=True, arguments=self._dlq_arguments)
        except ChannelPreconditionFailed:
            log.warning(
                "rabbitmq: %s exists with other arguments than a cap of %d; cap it with a policy: rabbitmqctl "
                'set_policy herald-dlq \'^%s\' \'{"max-length": %d, "overflow": "drop-head"}\' --apply-to queues',
                name,
                self.dlq_max_length,
                name.replace(".", "\\."),
                self.dlq_max_length,
            )
            return False
        finally:
            if not channel.is_closed:
                await channel.close()
        return True

    async def _connected(self) -> AbstractRobustConnection:
        """The live connection.

        Raises:
            BrokerUnavailable: it is down (the robust connection keeps reconnecting by itself).
        """
        if self._connection is None:
            if self._closed:
                raise BrokerUnavailable("rabbitmq: broker closed")
            await self.connect()  # a first connect that failed is retried by the next call
        assert self._connection is not None
        if not self._connection.connected.is_set():
            raise BrokerUnavailable("rabbitmq: connection lost, reconnecting")
        return self._connection

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._publish_channel = self._consume_channel = self._ready_channel = None
        for buffer in self._buffers.values():
            buffer.clear()  # never acked: RabbitMQ requeues them when the connection closes
        if connection is not None:
            await _close_logged(connection.close(), "close connection")

    async def close(self) -> None:
        self._closed = True  # a get still waiting must not reconnect behind the caller's back
        await self._drop()

    def _message(self, envelope: Envelope) -> aio_pika.Message:
        headers: dict[str, Any] = {
            "priority": envelope.priority.value,
            "envelope_version": envelope.version,
            "published_ms": int(time.time() * 1000),
        }
        if envelope.tenant:
            headers["tenant"] = envelope.tenant
        if envelope.traceparent:
            headers["traceparent"] = envelope.traceparent
        return aio_pika.Message(
            envelope.to_bytes(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            headers=headers,
        )

    async def publish(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        if queue not in ALL_QUEUES:  # RabbitMQ would return it unroutable: say what is wrong instead
            raise ValueError(f"unknown queue {queue!r}: queues are named in engine.channels.ALL_QUEUES")
        if not envelopes:
            return
        await self._connected()
        channel = self._publish_channel
        assert channel is not None
        routing_key = self._name(queue)
        with _unavailable(f"publish to {queue}"):
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        channel.default_exchange.publish(self._message(e), routing_key=routing_key, mandatory=True)
                        for e in envelopes
                    ),
                    return_exceptions=True,
                ),
                self.confirm_timeout_s,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _start_consuming(self) -> None:
        async with self._consume_lock:
            if self._consume_channel is None:
                await self._consume(await self._connected())

    async def _consume(self, connection: AbstractRobustConnection) -> None:
        channel: AbstractRobustChannel | None = None
        try:
            with _unavailable("start consuming"):
                channel = await asyncio.wait_for(connection.channel(), self.connect_timeout_s)
                await channel.set_qos(prefetch_count=self.prefetch)
                arguments = {"x-priority": self.consumer_priority} if self.consumer_priority else None
                for priority in self.consume:
                    queue = await channel.declare_queue(self._name(priority_queue(priority)), durable=True)
                    await queue.consume(self._receiver(priority), arguments=arguments)
        except BrokerUnavailable:
            if channel is not None:
                await _close_logged(channel.close(), "close consumer channel")
            raise
        channel.reopen_callbacks.add(self._purge_stale)
        self._consume_channel = channel

    def _purge_stale(self, *_: object) -> None:
        for priority, buffer in self._buffers.items():
            self._buffers[priority] = deque(d for d in buffer if not d.stale)

    def _receiver(self, priority: Priority) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        queue = priority_queue(priority)

        async def on_message(message: AbstractIncomingMessage) -> None:
            headers = dict(message.headers or {})
            try:
                envelope = Envelope.from_bytes(
                    message.body, tenant=_header(headers, "tenant"), traceparent=_header(headers, "traceparent")
                )
            except (ValueError, KeyError, TypeError) as err:
                # Refused, not requeued forever: nothing this version can do with it.
                log.error("rabbitmq: dropping unreadable message on %s: %s", queue, err)
                await message.reject(requeue=False)
                return
            self._buffers[priority].append(AmqpDelivery(message, queue, envelope))
            for waiter in self._waiters[priority]:
                waiter.set()

        return on_message

    def _take(self, limit: int, priorities: Sequence[Priority]) -> list[Delivery]:
        out: list[Delivery] = []
        for priority in priorities:
            buffer = self._buffers[priority]
            while buffer and len(out) < limit:
                delivery = buffer.popleft()
                if not delivery.stale:
                    out.append(delivery)
        return out

    async def get(
        self, max_envelopes: int, timeout_s: float, *, priorities: Sequence[Priority] | None = None
    ) -> list[Delivery]:
        """Raises: BrokerUnavailable: the connection is down and nothing usable is buffered."""
        await self._start_consuming()
        wanted = [p for p in PRIORITY_ORDER if priorities is None or p in priorities]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        arrived = asyncio.Event()
        for p in wanted:
            self._waiters[p].add(arrived)
        try:
            while True:
                arrived.clear()
                taken = self._take(max_envelopes, wanted)
                remaining = deadline - loop.time()
                if taken or remaining <= 0:
                    return taken
                await self._connected()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), remaining)
        finally:
            for p in wanted:
                self._waiters[p].discard(arrived)

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack a batch (acks are one-way frames: no round trip each).

        Raises:
            BrokerUnavailable: the channel died before all were acked (the rest are redelivered).
        """
        for d in deliveries:
            await d.ack()

    async def ready(self, queues: Sequence[str]) -> dict[str, int]:
        connection = await self._connected()
        counts: dict[str, int] = {}
        with _unavailable("read queue depths"):
            # A channel of its own: a passive declare of a missing queue closes the channel it runs on.
            if self._ready_channel is None or self._ready_channel.is_closed:
                self._ready_channel = await asyncio.wait_for(connection.channel(), self.connect_timeout_s)
            for queue in queues:
                # Not robust: a robust channel answers a passive declare of a queue it knows from its cache.
                declared = await self._ready_channel.declare_queue(
                    self._name(queue), durable=True, passive=True, robust=False, timeout=self.connect_timeout_s
                )
                counts[queue] = int(declared.declaration_result.message_count or 0)
        return counts

    async def stats(self) -> dict[str, QueueStats]:
        connection = await self._connected()
        out: dict[str, QueueStats] = {}
        with _unavailable("read queue stats"):
            channel = await asyncio.wait_for(connection.channel(), self.connect_timeout_s)
            try:
                for queue in ALL_QUEUES:
                    declared = await channel.declare_queue(
                        self._name(queue), durable=True, passive=True, timeout=self.connect_timeout_s
                    )
                    result = declared.declaration_result
                    depth = int(result.message_count or 0)
                    age = await self._head_age_s(declared) if depth else None
                    out[queue] = QueueStats(queue, depth, int(result.consumer_count or 0), age)
            finally:
                await channel.close()
        return out

    async def _head_age_s(self, queue: aio_pika.abc.AbstractQueue) -> float | None:
        """The age of the queue's head message, which is handed straight back (it keeps its place)."""
        head = await queue.get(no_ack=False, fail=False, timeout=self.connect_timeout_s)
        if head is None:
            return None
        try:
            published = (head.headers or {}).get("published_ms")
            if isinstance(published, int):
                return max(time.time() - published / 1000, 0.0)
            if head.timestamp is not None:
                return max(time.time() - head.timestamp.timestamp(), 0.0)
            return None
        finally:
            await head.nack(requeue=True)
