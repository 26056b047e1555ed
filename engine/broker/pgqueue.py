"""The Postgres queue table behind the broker port (the one-machine default, no RabbitMQ).

``get`` leases rows with ``FOR UPDATE SKIP LOCKED`` in priority order; an unacked row becomes visible
again when its lease runs out, which is how a dead consumer's deliveries come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence

import asyncpg

from engine.channels import ALL_QUEUES, PRIORITY_ORDER

from .base import Broker, BrokerUnavailable, Delivery, Envelope

NOTIFY_CHANNEL = "herald_queue"

_PUBLISH = """
INSERT INTO queue_items (queue, priority, body, headers)
SELECT $1, p, b, h::jsonb FROM unnest($2::smallint[], $3::bytea[], $4::text[]) AS u(p, b, h)
"""

_GET = """
UPDATE queue_items q
SET visible_at = now() + make_interval(secs => $3), delivery_count = q.delivery_count + 1
FROM (
    SELECT id FROM queue_items
    WHERE queue = ANY($1::text[]) AND visible_at <= now()
    ORDER BY priority, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
) due
WHERE q.id = due.id
RETURNING q.id, q.queue, q.body, q.headers::text AS headers, q.delivery_count
"""


class PgDelivery(Delivery):
    def __init__(self, broker: PgQueueBroker, row_id: int, queue: str, envelope: Envelope, redelivered: bool) -> None:
        self._broker = broker
        self.row_id = row_id
        self.queue = queue
        self.envelope = envelope
        self.redelivered = redelivered

    async def ack(self) -> None:
        await self._broker._run("DELETE FROM queue_items WHERE id = $1", self.row_id)

    async def nack(self, *, requeue: bool = True) -> None:
        if requeue:
            await self._broker._run("UPDATE queue_items SET visible_at = now() WHERE id = $1", self.row_id)
        else:  # refused for good: dropped (the message's state lives in Postgres, not here)
            await self._broker._run("DELETE FROM queue_items WHERE id = $1", self.row_id)


class PgQueueBroker(Broker):
    name = "postgres-queue"

    def __init__(
        self,
        pool: asyncpg.Pool | None = None,
        *,
        dsn: str | None = None,
        queue_prefix: str = "",
        lease_s: float = 30.0,
        poll_s: float = 0.25,
    ) -> None:
        if pool is None and dsn is None:
            raise ValueError("PgQueueBroker needs a pool or a dsn")
        self._pool = pool
        self._dsn = dsn
        self._owns_pool = pool is None
        self.prefix = queue_prefix
        self.lease_s = lease_s
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._on_notify = lambda *_: self._wake.set()
        self._listener: asyncpg.Connection | None = None
        self._priority_queues = [self.prefix + f"notifications.{p.value}" for p in PRIORITY_ORDER]

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise BrokerUnavailable("not connected")
        return self._pool

    async def connect(self) -> None:
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4)
            conn = await self.pool.acquire()
        except (OSError, asyncpg.PostgresError) as err:
            raise BrokerUnavailable(f"postgres queue unreachable: {err}") from err
        await self.pool.release(conn)
        if self._listener is None:
            self._listener = await self._listen()

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            conn: asyncpg.Connection = await self.pool.acquire()
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            return conn
        except (OSError, asyncpg.PostgresError):
            return None  # polling alone still works

    async def close(self) -> None:
        if self._pool is None:
            return
        if self._listener is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._listener.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            await self.pool.release(self._listener)
            self._listener = None
        if self._owns_pool:
            await self._pool.close()
            self._pool = None

    async def _run(self, query: str, *args: object) -> None:
        try:
            await self.pool.execute(query, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise BrokerUnavailable(str(err)) from err

    async def publish(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        if not envelopes:
            return
        try:
            await self.pool.execute(
                _PUBLISH,
                self.prefix + queue,
                [e.priority.rank for e in envelopes],
                [e.to_bytes() for e in envelopes],
                [json.dumps({"tenant": e.tenant, "traceparent": e.traceparent}) for e in envelopes],
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise BrokerUnavailable(f"publish failed: {err}") from err

    async def get(self, max_envelopes: int, timeout_s: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            self._wake.clear()
            deliveries = await self._take(max_envelopes)
            remaining = deadline - loop.time()
            if deliveries or remaining <= 0:
                return deliveries
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(self.poll_s, remaining))

    async def _take(self, limit: int) -> list[Delivery]:
        try:
            rows = await self.pool.fetch(_GET, self._priority_queues, limit, self.lease_s)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise BrokerUnavailable(f"get failed: {err}") from err
        out: list[Delivery] = []
        for r in sorted(rows, key=lambda r: (self._priority_queues.index(r["queue"]), r["id"])):
            headers = json.loads(r["headers"])
            env = Envelope.from_bytes(r["body"], tenant=headers.get("tenant"), traceparent=headers.get("traceparent"))
            out.append(PgDelivery(self, r["id"], r["queue"][len(self.prefix) :], env, r["delivery_count"] > 1))
        return out

    async def depths(self) -> dict[str, int]:
        try:
            rows = await self.pool.fetch(
                "SELECT queue, count(*) AS n FROM queue_items WHERE queue LIKE $1 || '%' GROUP BY queue",
                self.prefix,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise BrokerUnavailable(str(err)) from err
        counts = {q: 0 for q in ALL_QUEUES}
        for r in rows:
            name = r["queue"][len(self.prefix) :]
            if name in counts:
                counts[name] = r["n"]
        return counts
