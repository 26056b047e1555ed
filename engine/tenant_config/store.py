"""Postgres persistence of tenants: create, read, page, and changes written with their audit record.

A change is read-modify-write under the row's lock (``SELECT ... FOR UPDATE``), so concurrent patches
apply one after the other and none is lost; the new row, its bumped ``config_version`` and the audit
record (before, after, actor) commit together or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.ids import new_id

_COLUMNS = "id, slug, name, region, config, config_version, templates_version, created_at, updated_at"
_CREATE = f"""
INSERT INTO tenants (id, slug, name, region, config) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (slug) DO NOTHING
RETURNING {_COLUMNS}
"""
_GET = f"SELECT {_COLUMNS} FROM tenants WHERE slug = $1"
_LOCK = f"SELECT {_COLUMNS} FROM tenants WHERE slug = $1 FOR UPDATE"
_PAGE = f"SELECT {_COLUMNS} FROM tenants WHERE $1::text IS NULL OR slug > $1 ORDER BY slug LIMIT $2"
_UPDATE = f"""
UPDATE tenants SET name = $2, region = $3, config = $4, config_version = config_version + 1, updated_at = now()
WHERE id = $1
RETURNING {_COLUMNS}
"""
_AUDIT = "INSERT INTO audit_log (tenant_id, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)"


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """A ``tenants`` row as stored (``config`` is the raw document)."""

    id: uuid.UUID
    slug: str
    name: str
    region: str
    config: dict[str, Any]
    config_version: int
    templates_version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TenantChange:
    """What a change writes: the new row's values and the audit record's detail."""

    name: str
    region: str
    config: dict[str, Any]
    audit: dict[str, Any]


def _record(row: asyncpg.Record) -> TenantRecord:
    return TenantRecord(**dict(row))


class TenantStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(
        self, slug: str, name: str, region: str, config: dict[str, Any], *, actor: str, audit: dict[str, Any]
    ) -> TenantRecord | None:
        """The new tenant, or None when the slug is taken."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_CREATE, new_id(), slug, name, region, config)
            if row is None:
                return None
            await conn.execute(_AUDIT, row["id"], actor, "tenant.create", slug, audit)
        return _record(row)

    async def get(self, slug: str) -> TenantRecord | None:
        row = await self.pool.fetchrow(_GET, slug)
        return _record(row) if row else None

    async def page(self, after: str | None, limit: int) -> list[TenantRecord]:
        """Tenants in slug order, after the slug ``after`` (exclusive)."""
        return [_record(r) for r in await self.pool.fetch(_PAGE, after, limit)]

    async def change(
        self, slug: str, decide: Callable[[TenantRecord], TenantChange | None], *, actor: str
    ) -> TenantRecord | None:
        """Apply ``decide`` to the locked current row and write what it returns, with an audit record
        (action ``tenant.config``), in one transaction. ``decide`` may raise to abort (nothing is written)
        or return None when there is nothing to change. Returns the row as it is afterwards, or None when
        there is no such tenant."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK, slug)
            if row is None:
                return None
            current = _record(row)
            change = decide(current)
            if change is None:
                return current
            updated = await conn.fetchrow(_UPDATE, current.id, change.name, change.region, change.config)
            assert updated is not None
            audit = {**change.audit, "version": updated["config_version"]}
            await conn.execute(_AUDIT, current.id, actor, "tenant.config", slug, audit)
        return _record(updated)
