"""Reading ``audit_log``: newest first with ``(created_at, id)`` cursors, each filter on a tenant-first
index range (migration 0008) or, for the platform, the time-ordered one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from .query import Conditions

_SELECT = """
SELECT a.id, a.tenant_id, t.slug AS tenant, a.actor, a.action, a.subject, a.detail, a.created_at
FROM audit_log a LEFT JOIN tenants t ON t.id = a.tenant_id
"""


@dataclass(frozen=True, slots=True)
class AuditQuery:
    tenant_id: uuid.UUID | None = None  #: None: every tenant's records and the platform's own
    action: str | None = None
    action_prefix: str | None = None  #: ``dlq.`` finds ``dlq.replay``
    actor: str | None = None
    after: datetime | None = None  #: at or after
    before: datetime | None = None  #: before


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    tenant_id: uuid.UUID | None
    tenant: str | None
    actor: str
    action: str
    subject: str | None
    detail: Any  #: as stored: an object, or (older rows) a JSON string of one
    created_at: datetime


def page_statement(q: AuditQuery, after: tuple[datetime, int] | None, limit: int) -> tuple[str, list[Any]]:
    """The statement of one page, newest first (exposed so tests can EXPLAIN it)."""
    c = Conditions()
    if q.tenant_id is not None:
        c.where("a.tenant_id = {}", q.tenant_id)
    if q.action is not None:
        c.where("a.action = {}", q.action)
    if q.action_prefix is not None:
        c.where("starts_with(a.action, {})", q.action_prefix)
    if q.actor is not None:
        c.where("a.actor = {}", q.actor)
    if q.after is not None:
        c.where("a.created_at >= {}", q.after)
    if q.before is not None:
        c.where("a.created_at < {}", q.before)
    if after is not None:
        c.where("(a.created_at, a.id) < ({}, {})", *after)
    sql = f"{_SELECT} WHERE {c.sql()} ORDER BY a.created_at DESC, a.id DESC LIMIT {c.param(limit)}"
    return sql, c.args


class AuditStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def tenant_id(self, slug: str) -> uuid.UUID | None:
        found: uuid.UUID | None = await self.pool.fetchval("SELECT id FROM tenants WHERE slug = $1", slug)
        return found

    async def page(self, q: AuditQuery, after: tuple[datetime, int] | None, limit: int) -> list[AuditRow]:
        sql, args = page_statement(q, after, limit)
        return [AuditRow(**dict(r)) for r in await self.pool.fetch(sql, *args)]
