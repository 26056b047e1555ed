"""What the queues view reads from PostgreSQL: the outbox backlog, and one tenant's messages by status
and its oldest waiting message. Every statement is bounded by an index range (migration 0007)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

# One probe of the outbox_due index (priority, available_at, id) per priority and question.
_OUTBOX = """
SELECT
    (SELECT count(*) FROM outbox WHERE priority = ANY('{0,1,2}'::smallint[]) AND available_at <= now()) AS due,
    least((SELECT min(available_at) FROM outbox WHERE priority = 0),
          (SELECT min(available_at) FROM outbox WHERE priority = 1),
          (SELECT min(available_at) FROM outbox WHERE priority = 2)) AS earliest,
    least((SELECT min(available_at) FROM outbox WHERE priority = 0 AND available_at > now()),
          (SELECT min(available_at) FROM outbox WHERE priority = 1 AND available_at > now()),
          (SELECT min(available_at) FROM outbox WHERE priority = 2 AND available_at > now())) AS next_due,
    now() AS at
"""

_BY_STATUS = """
SELECT status, count(*) AS n FROM messages
WHERE tenant_id = $1 AND created_at >= now() - make_interval(secs => $2)
GROUP BY status
"""

# Waiting: accepted or retried and not yet being sent, or scheduled and due. Since when: the time it was
# due (schedule_at), else its acceptance.
_WAITING = """
SELECT count(*) AS n, min(since) AS since, now() AS at FROM (
    SELECT coalesce(schedule_at, created_at) AS since FROM messages WHERE tenant_id = $1 AND status = 'queued'
    UNION ALL
    SELECT coalesce(schedule_at, created_at) FROM messages WHERE tenant_id = $1 AND status = 'throttled'
    UNION ALL
    SELECT schedule_at FROM messages WHERE tenant_id = $1 AND status = 'scheduled' AND schedule_at <= now()
) w
"""


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    due: int  #: rows due and not yet published
    oldest_due_age_s: float | None
    next_due_at: datetime | None  #: the earliest row scheduled for later


@dataclass(frozen=True, slots=True)
class Waiting:
    count: int
    oldest_age_s: float | None


class QueueStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def outbox(self) -> OutboxBacklog:
        r = await self.pool.fetchrow(_OUTBOX)
        assert r is not None
        earliest: datetime | None = r["earliest"]
        due_age = (r["at"] - earliest).total_seconds() if earliest is not None and earliest <= r["at"] else None
        return OutboxBacklog(r["due"], due_age, r["next_due"])

    async def by_status(self, tenant_id: uuid.UUID, window_s: float) -> dict[str, int]:
        return {r["status"]: r["n"] for r in await self.pool.fetch(_BY_STATUS, tenant_id, window_s)}

    async def waiting(self, tenant_id: uuid.UUID) -> Waiting:
        r = await self.pool.fetchrow(_WAITING, tenant_id)
        assert r is not None
        since: datetime | None = r["since"]
        return Waiting(r["n"], max((r["at"] - since).total_seconds(), 0.0) if since is not None else None)
