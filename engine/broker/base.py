"""Broker port.

An :class:`Envelope` carries one or more message ids of one priority (Postgres holds the payload). Two
adapters implement :class:`Broker`: RabbitMQ (aio-pika) for production, and a Postgres queue table
(``FOR UPDATE SKIP LOCKED``) for the one-machine default. One contract suite runs against both.

Semantics both adapters guarantee:

- ``publish`` returns only when every envelope is durably stored (publisher confirms / commit); it raises
  :class:`BrokerUnavailable` when it cannot, and then nothing may be assumed published.
- ``get`` returns deliveries from the priority queues, high before normal before low: a high envelope
  that is available is always returned before any normal or low one still waiting in the broker. A
  ``get`` limited to some priorities returns only theirs, while others wait on the same broker.
- A delivery not acked is delivered again (``redelivered=True``) after ``nack(requeue=True)``, after the
  consumer's connection is lost, or (Postgres queue) after its visibility lease runs out.
- The ``notifications.dlq.<channel>`` queues hold at most ``dlq_max_length`` envelopes: publishing more
  drops the oldest (nobody inside Herald consumes them; PostgreSQL is the DLQ's truth).
- ``stats`` reports each queue's ready depth, its consumers and the age of its oldest ready envelope.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from engine.channels import ALL_QUEUES, Priority

ENVELOPE_VERSION = 1
#: Default cap of each ``notifications.dlq.<channel>`` queue (HERALD_DLQ_MAX_LENGTH).
DLQ_MAX_LENGTH = 10_000
#: The RabbitMQ ``x-priority`` of a dedicated high-priority sender's consumer: one-time codes go to it
#: first, to the other senders only when its window is full or it is down.
HIGH_SENDER_CONSUMER_PRIORITY = 10


class BrokerUnavailable(Exception):
    """The broker cannot be reached or did not confirm; the caller keeps the outbox rows and retries."""


@dataclass(frozen=True, slots=True)
class Envelope:
    priority: Priority
    message_ids: tuple[uuid.UUID, ...]
    tenant: str | None = None  #: set when every id belongs to one tenant
    traceparent: str | None = None
    version: int = ENVELOPE_VERSION

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"v": self.version, "priority": self.priority.value, "ids": [i.hex for i in self.message_ids]},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, body: bytes, *, tenant: str | None = None, traceparent: str | None = None) -> Envelope:
        doc = json.loads(body)
        if doc.get("v") != ENVELOPE_VERSION:
            raise ValueError(f"unsupported envelope version {doc.get('v')!r}")
        return cls(
            priority=Priority(doc["priority"]),
            message_ids=tuple(uuid.UUID(hex=h) for h in doc["ids"]),
            tenant=tenant,
            traceparent=traceparent,
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue as the broker sees it now."""

    queue: str
    depth: int  #: envelopes ready to be delivered (not those a consumer holds unacked)
    consumers: int
    oldest_age_s: float | None  #: how long the oldest ready envelope has waited; None when there is none


class Delivery(ABC):
    """One envelope handed to a consumer; settle it exactly once with ack or nack."""

    envelope: Envelope
    queue: str
    redelivered: bool

    @abstractmethod
    async def ack(self) -> None: ...

    @abstractmethod
    async def nack(self, *, requeue: bool = True) -> None: ...


class Broker(ABC):
    """Queues named in :mod:`engine.channels` (``notifications.high`` ... and ``notifications.dlq.*``)."""

    name: str

    @abstractmethod
    async def connect(self) -> None:
        """Open connections and declare every queue (idempotent).

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """

    @abstractmethod
    async def close(self) -> None:
        """Close connections; unacked deliveries go back to their queues."""

    @abstractmethod
    async def publish(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        """Store envelopes durably on ``queue``; returns after every one is confirmed.

        Raises:
            BrokerUnavailable: not confirmed; nothing may be assumed published.
        """

    @abstractmethod
    async def get(
        self, max_envelopes: int, timeout_s: float, *, priorities: Sequence[Priority] | None = None
    ) -> list[Delivery]:
        """Up to ``max_envelopes`` deliveries from the priority queues, highest priority first.

        ``priorities`` limits it to those queues (a sender's reserved high-priority lane); several ``get``
        calls may wait at once on one broker. Waits at most ``timeout_s`` for the first one; returns ``[]``
        when nothing came.
        """

    async def depths(self) -> dict[str, int]:
        """Messages ready in each queue of :data:`~engine.channels.ALL_QUEUES` (for ``/admin/queues``)."""
        return await self.ready(ALL_QUEUES)

    @abstractmethod
    async def ready(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages ready in each of ``queues`` (the relay's backlog cap asks it during bursts).

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """

    @abstractmethod
    async def stats(self) -> dict[str, QueueStats]:
        """Every queue of :data:`~engine.channels.ALL_QUEUES`: depth, consumers, age of the oldest.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """

    async def health(self) -> bool:
        try:
            await self.depths()
        except BrokerUnavailable:
            return False
        return True
