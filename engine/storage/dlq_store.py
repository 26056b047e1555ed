"""The dead-letter queue in PostgreSQL: dead messages (``status = 'dead'``), read newest-dead first through
the partial indexes of migration 0007, and replayed back into the normal pipeline.

A dead message's time of death is its ``updated_at`` (nothing else moves a dead row), and its last error
is its newest attempt row's (``attempts.id`` is time-ordered).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.channels import Channel, Priority, priority_queue
from engine.ids import new_id
from engine.states import EventType, Status

from .query import Conditions


@dataclass(frozen=True, slots=True)
class DeadQuery:
    """Which dead messages: every field narrows (None: any). ``tenant_id`` is the caller's scope or the
    platform's tenant filter; ``ids`` a replay's explicit selection."""

    tenant_id: uuid.UUID | None = None
    channel: Channel | None = None
    provider: str | None = None
    error_class: str | None = None
    dead_after: datetime | None = None
    dead_before: datetime | None = None
    ids: tuple[uuid.UUID, ...] | None = None


@dataclass(frozen=True, slots=True)
class DeadRow:
    id: uuid.UUID
    tenant: str
    channel: str
    template_id: str
    template_version: int
    priority: str
    provider: str | None
    attempts: int
    error_class: str | None
    error_code: str | None
    error_detail: str | None
    created_at: datetime
    dead_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeadCount:
    channel: str
    error_class: str | None
    n: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """A dead message locked for a replay."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    channel: Channel
    priority: Priority
    expired: bool  #: its TTL has passed: a replay ends it ``expired``, it is never sent
    providers: Any = None  #: its tenant's ``providers`` config (the allow-lists), as stored


@dataclass(frozen=True, slots=True)
class Replay:
    """What a replay writes: the messages it requeues and expires (the rest of those it locked stay dead),
    and its audit record, whose detail gets the counts added."""

    requeue: Sequence[Candidate]
    expire: Sequence[Candidate]
    skipped: int
    pinned_provider: str | None
    actor: str
    audit_tenant_id: uuid.UUID | None
    audit_detail: dict[str, Any]

    @property
    def matched(self) -> int:
        return len(self.requeue) + len(self.expire) + self.skipped

    def audit(self) -> dict[str, Any]:
        counts = {"matched": self.matched, "replayed": len(self.requeue), "expired": len(self.expire)}
        return {**self.audit_detail, **counts, "skipped": self.skipped, "to_provider": self.pinned_provider}


_FROM = """
FROM messages m
JOIN tenants t ON t.id = m.tenant_id
LEFT JOIN LATERAL (
    SELECT a.error_class, a.error_code, a.error_detail FROM attempts a
    WHERE a.tenant_id = m.tenant_id AND a.message_id = m.id
    ORDER BY a.id DESC LIMIT 1
) last ON TRUE
"""

_ROW = """
SELECT m.id, t.slug AS tenant, m.channel, m.template_id, m.template_version, m.priority, m.provider, m.attempts,
       last.error_class, last.error_code, last.error_detail, m.created_at, m.updated_at AS dead_at, m.expires_at
"""

_APPLY = """
WITH u AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::smallint[], $6::uuid[], $7::text[])
        AS u(id, tenant_id, status, queue, priority, event_id, event)
), upd AS (
    UPDATE messages m
    SET status = u.status, attempts = 0, claimed_until = NULL, pinned_provider = $8,
        version = m.version + 1, updated_at = now()
    FROM u
    WHERE m.id = u.id AND m.status = 'dead'
    RETURNING m.id, m.tenant_id, m.channel, m.template_id, m.template_version, m.provider, m.created_at, m.status
), roll AS (
    -- the rollups counted the message failed when it died: it is not (yet) any more, and one that
    -- expires here is counted expired, so a replayed message that is then sent counts once, as sent
    INSERT INTO analytics_daily AS r
        (tenant_id, day, channel, template_id, template_version, provider, stripe, sent, failed, suppressed,
         expired)
    SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, channel, template_id, template_version,
           coalesce(provider, ''), 0, 0, -count(*), 0, count(*) FILTER (WHERE status = 'expired')
    FROM upd
    GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 2, 3, 4, 5, 6  -- one lock order for every writer of the rollups
    ON CONFLICT (tenant_id, day, channel, template_id, template_version, provider, stripe) DO UPDATE
    SET failed = r.failed + EXCLUDED.failed, expired = r.expired + EXCLUDED.expired
), ob AS (
    INSERT INTO outbox (tenant_id, message_id, queue, priority)
    SELECT u.tenant_id, u.id, u.queue, u.priority FROM u JOIN upd ON upd.id = u.id WHERE u.queue IS NOT NULL
), ev AS (
    INSERT INTO notification_events (id, tenant_id, message_id, type, meta)
    SELECT u.event_id, u.tenant_id, u.id, u.event, $9::jsonb FROM u JOIN upd ON upd.id = u.id
), audit AS (
    INSERT INTO audit_log (tenant_id, actor, action, subject, detail) VALUES ($10, $11, 'dlq.replay', $8, $12)
)
SELECT count(*) FROM upd
"""


def _conditions(q: DeadQuery) -> Conditions:
    c = Conditions()
    c.where("m.status = 'dead'")
    if q.tenant_id is not None:
        c.where("m.tenant_id = {}", q.tenant_id)
    if q.ids is not None:
        c.where("m.id = ANY({}::uuid[])", list(q.ids))
    if q.channel is not None:
        c.where("m.channel = {}", q.channel.value)
    if q.provider is not None:
        c.where("m.provider = {}", q.provider)
    if q.error_class is not None:
        c.where("last.error_class = {}", q.error_class)
    if q.dead_after is not None:
        c.where("m.updated_at >= {}", q.dead_after)
    if q.dead_before is not None:
        c.where("m.updated_at < {}", q.dead_before)
    return c


def page_statement(q: DeadQuery, after: tuple[datetime, uuid.UUID] | None, limit: int) -> tuple[str, list[Any]]:
    """The statement of one page, newest dead first (exposed so tests can EXPLAIN it)."""
    c = _conditions(q)
    if after is not None:
        c.where("(m.updated_at, m.id) < ({}, {})", *after)
    sql = f"{_ROW} {_FROM} WHERE {c.sql()} ORDER BY m.updated_at DESC, m.id DESC LIMIT {c.param(limit)}"
    return sql, c.args


class DeadLetterStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def tenant_id(self, slug: str) -> uuid.UUID | None:
        found: uuid.UUID | None = await self.pool.fetchval("SELECT id FROM tenants WHERE slug = $1", slug)
        return found

    async def page(self, q: DeadQuery, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[DeadRow]:
        sql, args = page_statement(q, after, limit)
        return [DeadRow(**dict(r)) for r in await self.pool.fetch(sql, *args)]

    async def counts(self, q: DeadQuery) -> list[DeadCount]:
        c = _conditions(q)
        sql = f"SELECT m.channel, last.error_class, count(*) AS n {_FROM} WHERE {c.sql()} GROUP BY 1, 2"
        return [DeadCount(r["channel"], r["error_class"], r["n"]) for r in await self.pool.fetch(sql, *c.args)]

    async def replay(self, q: DeadQuery, decide: Callable[[list[Candidate]], Replay]) -> Replay:
        """Lock the dead messages ``q`` selects (skipping any a concurrent replay holds), let ``decide``
        turn them into a :class:`Replay`, and write it: statuses, attempt budgets, outbox rows, events and
        the audit record, in one transaction. Returns what was written."""
        c = _conditions(q)
        lock = (
            "SELECT m.id, m.tenant_id, m.channel, m.priority, coalesce(m.expires_at <= now(), false) AS expired,"
            " t.config -> 'providers' AS providers"
            f" {_FROM} WHERE {c.sql()} ORDER BY m.id FOR UPDATE OF m SKIP LOCKED"
        )
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(lock, *c.args)
            found = [
                Candidate(
                    r["id"],
                    r["tenant_id"],
                    Channel(r["channel"]),
                    Priority(r["priority"]),
                    r["expired"],
                    providers=r["providers"],
                )
                for r in rows
            ]
            plan = decide(found)
            moved = await self._apply(conn, plan)
            if moved != len(plan.requeue) + len(plan.expire):  # locked since read: cannot happen, never half
                raise RuntimeError(f"replay moved {moved} of {len(plan.requeue) + len(plan.expire)} locked rows")
        return plan

    async def _apply(self, conn: asyncpg.Connection, plan: Replay) -> int:
        moves = [(m, Status.QUEUED, EventType.REPLAYED) for m in plan.requeue]
        moves += [(m, Status.EXPIRED, EventType.EXPIRED) for m in plan.expire]
        moved: int = await conn.fetchval(
            _APPLY,
            [m.id for m, _, _ in moves],
            [m.tenant_id for m, _, _ in moves],
            [s.value for _, s, _ in moves],
            [priority_queue(m.priority) if s is Status.QUEUED else None for m, s, _ in moves],
            [m.priority.rank for m, _, _ in moves],
            [new_id() for _ in moves],
            [e.value for _, _, e in moves],
            plan.pinned_provider,
            {"actor": plan.actor, "replay": True, "to_provider": plan.pinned_provider},
            plan.audit_tenant_id,
            plan.actor,
            plan.audit(),
        )
        return moved
