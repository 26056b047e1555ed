"""The Postgres queue table behind the broker port (the one-machine default, no RabbitMQ).

- ``publish`` is one ``INSERT ... SELECT FROM unnest(...)`` per call: atomic and durable on return.
- ``get`` is one statement that leases due rows (``FOR UPDATE SKIP LOCKED``) queue by queue in priority
  order, oldest-available first within a queue, through the ``(queue, visible_at, id)`` index, so it stays
  fast under a deep backlog. It waits for the first row on ``LISTEN herald_queue`` with a short poll as
  the fallback.
- A leased row is invisible for ``lease_s``; a consumer that dies without settling leaves it to come back
  when the lease runs out (``redelivered`` = delivered more than once).
- Acks are batched: ``ack()`` marks the row done and the row is deleted by the next ``get`` statement, by
  a flush ``ack_flush_s`` later, by :meth:`PgQueueBroker.flush_acks` / :meth:`PgQueueBroker.ack_many`, or
  at ``close``. Until then the row stays leased; if the process dies first the row comes back after its
  lease, which the senders' claim statement makes harmless (at-least-once, as with RabbitMQ).
- ``nack(requeue=False)`` drops the row: the message's state lives in Postgres, and the retry policy,
  not the queue, decides about dead letters.
- A publish to a ``notifications.dlq.<channel>`` queue deletes, in the same statement, the oldest rows
  beyond ``dlq_max_length`` (RabbitMQ's ``x-max-length`` with ``drop-head``).
- A broker that consumes announces itself in ``queue_consumers`` every ``CONSUMER_BEAT_S`` while it calls
  ``get``; ``stats`` counts those seen in the last ``CONSUMER_ALIVE_S`` as the priority queues' consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime

import asyncpg

from engine.channels import ALL_QUEUES, DLQ_QUEUES, PRIORITY_ORDER, Priority, priority_queue
from engine.ids import new_id

from .base import DLQ_MAX_LENGTH, Broker, BrokerUnavailable, Delivery, Envelope, QueueStats

log = logging.getLogger(__name__)

#: The channel the ``queue_items`` insert trigger notifies (engine/storage/migrations/0001_init.sql).
NOTIFY_CHANNEL = "herald_queue"

_PUBLISH = """
INSERT INTO queue_items (queue, priority, body, headers)
SELECT $1, p, b, h::jsonb FROM unnest($2::smallint[], $3::bytea[], $4::text[]) AS u(p, b, h)
"""

# One round trip per get: delete the rows acked since the last statement, then lease due rows queue by
# queue ($1 is in serving order), each queue read in index order. Rows being deleted are never leased.
_GET = """
WITH acked AS (DELETE FROM queue_items WHERE id = ANY($4::bigint[]))
UPDATE queue_items
SET visible_at = now() + make_interval(secs => $3), delivery_count = delivery_count + 1
WHERE id IN (
    SELECT due.id
    FROM unnest($1::text[]) WITH ORDINALITY AS q(name, rank)
    CROSS JOIN LATERAL (
        SELECT id FROM queue_items
        WHERE queue = q.name AND visible_at <= now() AND id <> ALL($4::bigint[])
        ORDER BY visible_at, id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) due
    ORDER BY q.rank
    LIMIT $2
)
RETURNING id, queue, body, headers::text AS headers, delivery_count
"""

# The same insert, keeping the queue at its cap: the rows it would push past the cap go, oldest first (the
# delete does not see the rows this statement inserts, so it keeps cap - len(batch) of the older ones).
_PUBLISH_CAPPED = """
WITH ins AS (
    INSERT INTO queue_items (queue, priority, body, headers)
    SELECT $1, p, b, h::jsonb FROM unnest($2::smallint[], $3::bytea[], $4::text[]) AS u(p, b, h)
)
DELETE FROM queue_items WHERE id IN (
    SELECT id FROM queue_items WHERE queue = $1 ORDER BY visible_at DESC, id DESC OFFSET $5
)
"""

_DELETE = "DELETE FROM queue_items WHERE id = ANY($1::bigint[])"

_STATS = """
SELECT q.name AS queue, i.depth, i.oldest, now() AS at,
       (SELECT count(*) FROM queue_consumers c
        WHERE q.name = ANY(c.queues) AND c.last_seen > now() - make_interval(secs => $2)) AS consumers
FROM unnest($1::text[]) AS q(name)
CROSS JOIN LATERAL (
    SELECT count(*) AS depth, min(created_at) AS oldest FROM queue_items
    WHERE queue = q.name AND visible_at <= now()
) i
"""

_BEAT = """
INSERT INTO queue_consumers (id, queues) VALUES ($1, $2)
ON CONFLICT (id) DO UPDATE SET last_seen = now()
"""
_GONE = "DELETE FROM queue_consumers WHERE id = $1 OR last_seen < now() - interval '1 hour'"

#: How often a consuming broker announces itself, and how long an announcement counts.
CONSUMER_BEAT_S = 5.0
CONSUMER_ALIVE_S = 3 * CONSUMER_BEAT_S

# Only the holder of the current lease may hand the row back early.
_REQUEUE = "UPDATE queue_items SET visible_at = now() WHERE id = $1 AND delivery_count = $2"

_DEPTHS = """
SELECT queue, count(*) AS n FROM queue_items
WHERE queue = ANY($1::text[]) AND visible_at <= now()
GROUP BY queue
"""

#: How often ``get`` tries to LISTEN again after losing its listener (it polls meanwhile).
RELISTEN_EVERY_S = 5.0

_FAILURES = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """The one place Postgres failures become :class:`BrokerUnavailable`."""
    try:
        yield
    except _FAILURES as err:
        raise BrokerUnavailable(f"postgres queue: {what} failed: {err}") from err


def _check_queue(queue: str) -> None:
    if queue not in ALL_QUEUES:
        raise ValueError(f"unknown queue {queue!r}: queues are named in engine.channels.ALL_QUEUES")


class PgDelivery(Delivery):
    """One leased ``queue_items`` row."""

    def __init__(self, broker: PgQueueBroker, row_id: int, delivery_count: int, queue: str, envelope: Envelope) -> None:
        self._broker = broker
        self.row_id = row_id
        self.delivery_count = delivery_count
        self.queue = queue
        self.envelope = envelope
        self.redelivered = delivery_count > 1
        self.settled = False

    def _settle(self) -> None:
        if self.settled:
            raise RuntimeError(f"delivery {self.row_id} on {self.queue} was already settled")
        self.settled = True

    async def ack(self) -> None:
        """Mark done; the row is deleted with the next batch (see the module docstring)."""
        self._settle()
        self._broker._defer_delete(self.row_id)

    async def nack(self, *, requeue: bool = True) -> None:
        """``requeue=True``: visible again at once. ``requeue=False``: dropped.

        Raises:
            BrokerUnavailable: the requeue could not be written (the lease still brings the row back).
        """
        self._settle()
        if requeue:
            await self._broker._requeue(self)
        else:
            self._broker._defer_delete(self.row_id)


class PgQueueBroker(Broker):
    """The broker port on the ``queue_items`` table (see the module docstring for the semantics).

    Pass an existing asyncpg ``pool`` (borrowed, not closed here) or a ``dsn`` (a pool of its own).
    ``queue_prefix`` namespaces every queue name stored in the ``queue`` column.
    """

    name = "postgres-queue"

    def __init__(
        self,
        pool: asyncpg.Pool | None = None,
        *,
        dsn: str | None = None,
        queue_prefix: str = "",
        lease_s: float = 30.0,
        poll_s: float = 0.25,
        ack_flush_s: float = 0.05,
        connect_timeout_s: float = 5.0,
        dlq_max_length: int = DLQ_MAX_LENGTH,
    ) -> None:
        if pool is None and dsn is None:
            raise ValueError("PgQueueBroker needs a pool or a dsn")
        self._pool = pool
        self._dsn = dsn
        self._owns_pool = pool is None
        self.prefix = queue_prefix
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.ack_flush_s = ack_flush_s
        self.connect_timeout_s = connect_timeout_s
        self._priority_queues = [queue_prefix + priority_queue(p) for p in PRIORITY_ORDER]
        self._all_queues = [queue_prefix + q for q in ALL_QUEUES]
        #: One event per waiting ``get``: a NOTIFY wakes them all.
        self._wakes: set[asyncio.Event] = set()
        self._listener: asyncpg.Connection | None = None
        self._pending_deletes: list[int] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._relisten_at = 0.0
        self.dlq_max_length = dlq_max_length
        self._consumer_id = new_id()
        self._beat_at: float | None = None  #: when this broker last announced itself as a consumer

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise BrokerUnavailable("postgres queue: not connected")
        return self._pool

    def _on_notify(self, *_: object) -> None:
        for wake in self._wakes:
            wake.set()

    async def connect(self) -> None:
        with _unavailable("connect"):
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=1, max_size=5, timeout=self.connect_timeout_s
                )
            await self.pool.execute("SELECT 1 FROM queue_items LIMIT 0", timeout=self.connect_timeout_s)
        await self._ensure_listener()

    async def _ensure_listener(self) -> None:
        """LISTEN on one pooled connection; without it ``get`` still polls every ``poll_s``."""
        if self._listener_alive():
            return
        await self._drop_listener()
        try:
            conn: asyncpg.Connection = await self.pool.acquire(timeout=min(self.connect_timeout_s, 1.0))
        except _FAILURES as err:
            log.warning("postgres queue: LISTEN connection unavailable (%s); polling every %.2fs", err, self.poll_s)
            return
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except _FAILURES as err:
            log.warning("postgres queue: LISTEN failed (%s); polling every %.2fs", err, self.poll_s)
            await self.pool.release(conn)
            return
        self._listener = conn

    async def _relisten_now_and_then(self, now: float) -> None:
        """After an outage, LISTEN again; tried at most every ``RELISTEN_EVERY_S`` so ``get`` stays cheap."""
        if self._listener_alive() or now < self._relisten_at:
            return
        self._relisten_at = now + RELISTEN_EVERY_S
        await self._ensure_listener()

    def _listener_alive(self) -> bool:
        if self._listener is None:
            return False
        try:
            return not self._listener.is_closed()
        except asyncpg.InterfaceError:  # it broke and the pool has taken it back already
            return False

    async def _drop_listener(self) -> None:
        alive = self._listener_alive()
        conn, self._listener = self._listener, None
        if conn is None or self._pool is None:
            return
        if not alive:
            with _unavailable("release the lost LISTEN connection"):
                await self._pool.release(conn)
            return
        try:
            with _unavailable("UNLISTEN"):
                await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
        finally:
            await self._pool.release(conn)

    async def close(self) -> None:
        if self._pool is None:
            return
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._flush_task is not None:
            await self._flush_task
        try:
            await self.flush_acks()
        except BrokerUnavailable as err:
            # Rows whose ack is lost come back when their lease ends; the claim makes that harmless.
            log.warning("postgres queue: closing with %d acks not flushed: %s", len(self._pending_deletes), err)
            self._pending_deletes.clear()
        try:
            await self._drop_listener()
            if self._beat_at is not None:
                with _unavailable("leave the consumers"):
                    await self._pool.execute(_GONE, self._consumer_id)
        except BrokerUnavailable as err:
            log.warning("postgres queue: closing: %s", err)
        if self._owns_pool:
            await self._pool.close()
            self._pool = None

    async def publish(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        _check_queue(queue)
        if not envelopes:
            return
        headers = [
            json.dumps({k: v for k, v in (("tenant", e.tenant), ("traceparent", e.traceparent)) if v})
            for e in envelopes
        ]
        capped = queue in DLQ_QUEUES
        if capped:
            envelopes, headers = envelopes[-self.dlq_max_length :], headers[-self.dlq_max_length :]
        args = [self.prefix + queue, [e.priority.rank for e in envelopes], [e.to_bytes() for e in envelopes], headers]
        with _unavailable(f"publish to {queue}"):
            if capped:
                await self.pool.execute(_PUBLISH_CAPPED, *args, max(self.dlq_max_length - len(envelopes), 0))
            else:
                await self.pool.execute(_PUBLISH, *args)

    async def get(
        self, max_envelopes: int, timeout_s: float, *, priorities: Sequence[Priority] | None = None
    ) -> list[Delivery]:
        queues = [self.prefix + priority_queue(p) for p in PRIORITY_ORDER if priorities is None or p in priorities]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        await self._announce(loop.time())
        wake = asyncio.Event()
        self._wakes.add(wake)
        try:
            while True:
                wake.clear()
                deliveries = await self._take(max_envelopes, queues)
                remaining = deadline - loop.time()
                if deliveries or remaining <= 0:
                    return deliveries
                await self._relisten_now_and_then(loop.time())
                with contextlib.suppress(TimeoutError):  # the poll fallback: look again even without a NOTIFY
                    await asyncio.wait_for(wake.wait(), min(self.poll_s, remaining))
        finally:
            self._wakes.discard(wake)

    async def _announce(self, now: float) -> None:
        if self._beat_at is not None and now - self._beat_at < CONSUMER_BEAT_S:
            return
        with _unavailable("announce the consumer"):
            await self.pool.execute(_BEAT, self._consumer_id, self._priority_queues)
        self._beat_at = now

    async def _take(self, limit: int, queues: list[str]) -> list[Delivery]:
        acked, self._pending_deletes = self._pending_deletes, []
        try:
            with _unavailable("get"):
                rows = await self.pool.fetch(_GET, queues, limit, self.lease_s, acked)
        except BrokerUnavailable:
            self._pending_deletes[:0] = acked
            raise
        rank = {q: i for i, q in enumerate(self._priority_queues)}
        out: list[Delivery] = []
        for r in sorted(rows, key=lambda r: (rank[r["queue"]], r["id"])):
            delivery = self._delivery(r)
            if delivery is not None:
                out.append(delivery)
        return out

    def _delivery(self, row: asyncpg.Record) -> PgDelivery | None:
        headers = json.loads(row["headers"])
        try:
            envelope = Envelope.from_bytes(
                row["body"], tenant=headers.get("tenant"), traceparent=headers.get("traceparent")
            )
        except (ValueError, KeyError) as err:
            # Refused, not redelivered forever: nothing this version can do with it.
            log.error("postgres queue: dropping unreadable row %s on %s: %s", row["id"], row["queue"], err)
            self._defer_delete(row["id"])
            return None
        queue = row["queue"][len(self.prefix) :]
        return PgDelivery(self, row["id"], row["delivery_count"], queue, envelope)

    def _defer_delete(self, row_id: int) -> None:
        self._pending_deletes.append(row_id)
        self._arm_flush()

    def _arm_flush(self) -> None:
        if self._flush_timer is None and self._flush_task is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self.ack_flush_s, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_timer = None
        self._flush_task = asyncio.get_running_loop().create_task(self._background_flush())

    async def _background_flush(self) -> None:
        try:
            await self.flush_acks()
        except BrokerUnavailable as err:
            # Not re-armed: the next get carries them (and reports the outage), or their lease ends.
            log.warning("postgres queue: acks kept for the next get or flush: %s", err)
            return
        finally:
            self._flush_task = None
        if self._pending_deletes:  # acked while this flush ran
            self._arm_flush()

    async def flush_acks(self) -> None:
        """Delete every row acked so far; durable on return.

        Raises:
            BrokerUnavailable: not deleted (they stay pending and are tried again).
        """
        ids, self._pending_deletes = self._pending_deletes, []
        if not ids:
            return
        try:
            with _unavailable("ack"):
                await self.pool.execute(_DELETE, ids)
        except BrokerUnavailable:
            self._pending_deletes[:0] = ids
            raise

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack a batch in one statement; durable on return.

        Raises:
            BrokerUnavailable: not deleted (the rows stay pending, or come back after their lease).
        """
        for d in deliveries:
            if not isinstance(d, PgDelivery) or d._broker is not self:
                raise TypeError(f"{d!r} was not delivered by this broker")
            d._settle()
            self._pending_deletes.append(d.row_id)
        await self.flush_acks()

    async def _requeue(self, delivery: PgDelivery) -> None:
        with _unavailable("nack"):
            await self.pool.execute(_REQUEUE, delivery.row_id, delivery.delivery_count)
        self._on_notify()  # wake this broker's waiting gets at once

    async def ready(self, queues: Sequence[str]) -> dict[str, int]:
        with _unavailable("depths"):
            rows = await self.pool.fetch(_DEPTHS, [self.prefix + q for q in queues])
        counts = dict.fromkeys(queues, 0)
        for r in rows:
            counts[r["queue"][len(self.prefix) :]] = r["n"]
        return counts

    async def stats(self) -> dict[str, QueueStats]:
        with _unavailable("stats"):
            rows = await self.pool.fetch(_STATS, self._all_queues, CONSUMER_ALIVE_S)
        out = {}
        for r in rows:
            queue = r["queue"][len(self.prefix) :]
            oldest: datetime | None = r["oldest"]
            age = max((r["at"] - oldest).total_seconds(), 0.0) if oldest is not None else None
            out[queue] = QueueStats(queue, r["depth"], r["consumers"], age)
        return out
