"""Recipients' preferences (``recipient_preferences``) and the tenant's suppression list (``suppressions``).

A suppression row is an address of a kind (``email``, ``phone``, ``device_token``) and a category: NULL
stops every category, a category name only that one, and ``*non_required`` every category the tenant does
not require (what a STOP reply asks for). Additions and removals write an audit record with the
address masked; so does a change of a recipient's preferences (before and after, in one transaction).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.ids import new_id
from engine.redaction import redact

_PUT_PREFERENCES = """
INSERT INTO recipient_preferences (tenant_id, user_id, categories) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, user_id) DO UPDATE SET categories = EXCLUDED.categories, updated_at = now()
RETURNING categories, updated_at
"""
_GET_PREFERENCES = "SELECT categories, updated_at FROM recipient_preferences WHERE tenant_id = $1 AND user_id = $2"
_LOCK_PREFERENCES = _GET_PREFERENCES + " FOR UPDATE"
_BATCH_PREFERENCES = """
SELECT p.tenant_id, p.user_id, p.categories
FROM recipient_preferences p
JOIN unnest($1::uuid[], $2::text[]) AS r(tenant_id, user_id) ON p.tenant_id = r.tenant_id AND p.user_id = r.user_id
"""

_SUPPRESSION = "id, kind, address, category, reason, created_at"
_ADD = f"""
WITH ins AS (
    INSERT INTO suppressions (id, tenant_id, kind, address, category, reason) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (tenant_id, kind, address, category) DO NOTHING
    RETURNING {_SUPPRESSION}, true AS added
)
SELECT * FROM ins
UNION ALL
SELECT {_SUPPRESSION}, false FROM suppressions
WHERE tenant_id = $2 AND kind = $3 AND address = $4 AND category IS NOT DISTINCT FROM $5
  AND NOT EXISTS (SELECT 1 FROM ins)
"""
_PAGE = f"""
SELECT {_SUPPRESSION} FROM suppressions
WHERE tenant_id = $1
  AND ($2::text IS NULL OR kind = $2)
  AND ($3::text IS NULL OR address = $3)
  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
ORDER BY created_at DESC, id DESC
LIMIT $6
"""
_REMOVE = f"DELETE FROM suppressions WHERE tenant_id = $1 AND id = $2 RETURNING {_SUPPRESSION}"
_REMOVE_ADDRESS = f"""
DELETE FROM suppressions WHERE tenant_id = $1 AND kind = $2 AND address = $3 AND category IS NOT DISTINCT FROM $4
RETURNING {_SUPPRESSION}
"""
#: For the senders' claim (``RETURNING ..., <this> AS suppression_categories`` over ``messages m``): the
#: categories of every suppression entry of the message's address (NULL for an every-category entry), so
#: the sender decides with the tenant's required categories (``recipients.suppressed_by``). It replaces the
#: claim's ``EXISTS (...) AS suppressed``, which cannot know them and so stops one-time codes after STOP.
CLAIM_SUPPRESSION_CATEGORIES = """
(SELECT coalesce(array_agg(s.category), '{}') FROM suppressions s
 WHERE s.tenant_id = m.tenant_id
   AND ((s.kind = 'email' AND s.address = lower(m."to"->>'email'))
        OR (s.kind = 'phone' AND s.address = m."to"->>'phone')
        OR (s.kind = 'device_token' AND s.address = coalesce(m."to"->'push'->>'token', m."to"->>'device_token'))))
"""

#: The tenants that sent to a number lately, most recent first (each probe is the tenant-first phone index).
_SENDERS_TO = """
SELECT t.slug FROM tenants t
CROSS JOIN LATERAL (
    SELECT m.created_at FROM messages m
    WHERE m.tenant_id = t.id AND m."to" ? 'phone' AND m."to"->>'phone' = $1
      AND m.created_at > now() - make_interval(days => $2)
    ORDER BY m.created_at DESC LIMIT 1
) last
ORDER BY last.created_at DESC
LIMIT $3
"""

_AUDIT = "INSERT INTO audit_log (tenant_id, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)"


@dataclass(frozen=True, slots=True)
class SuppressionRow:
    id: uuid.UUID
    kind: str
    address: str
    category: str | None
    reason: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SuppressionQuery:
    tenant_id: uuid.UUID
    kind: str | None = None
    address: str | None = None


def _row(r: asyncpg.Record) -> SuppressionRow:
    return SuppressionRow(r["id"], r["kind"], r["address"], r["category"], r["reason"], r["created_at"])


def _audit(row: SuppressionRow) -> dict[str, Any]:
    return {"kind": row.kind, "address": redact(row.address), "category": row.category, "reason": row.reason}


class RecipientStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- preferences -------------------------------------------------------------------------------

    async def put_preferences(
        self, tenant_id: uuid.UUID, user_id: str, categories: dict[str, dict[str, bool]], *, actor: str
    ) -> datetime:
        """Store them; a change is audited as ``preferences.set`` with what they were and what they are."""
        async with self.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchrow(_LOCK_PREFERENCES, tenant_id, user_id)
            row = await conn.fetchrow(_PUT_PREFERENCES, tenant_id, user_id, categories)
            assert row is not None
            was = before["categories"] if before else {}
            if was != categories:
                detail = {"before": was, "after": categories}
                await conn.execute(_AUDIT, tenant_id, actor, "preferences.set", redact(user_id), detail)
        updated: datetime = row["updated_at"]
        return updated

    async def preferences(
        self, tenant_id: uuid.UUID, user_id: str
    ) -> tuple[dict[str, dict[str, bool]], datetime] | None:
        row = await self.pool.fetchrow(_GET_PREFERENCES, tenant_id, user_id)
        return (row["categories"], row["updated_at"]) if row else None

    async def preferences_of(
        self, recipients: Sequence[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], dict[str, dict[str, bool]]]:
        """The preferences of many recipients (of any tenants) in one statement; absent ones have none."""
        if not recipients:
            return {}
        rows = await self.pool.fetch(_BATCH_PREFERENCES, [t for t, _ in recipients], [u for _, u in recipients])
        return {(r["tenant_id"], r["user_id"]): r["categories"] for r in rows}

    # -- suppressions ------------------------------------------------------------------------------

    async def add_suppression(
        self, tenant_id: uuid.UUID, kind: str, address: str, category: str | None, reason: str, *, actor: str
    ) -> tuple[SuppressionRow, bool]:
        """``(row, added)``: the new entry, or the one already there (``added`` False, no audit record)."""
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchrow(_ADD, new_id(), tenant_id, kind, address, category, reason)
            if found is None:  # a concurrent add committed after this statement's snapshot: read it now
                found = await conn.fetchrow(_ADD, new_id(), tenant_id, kind, address, category, reason)
            assert found is not None
            row = _row(found)
            if found["added"]:
                await conn.execute(_AUDIT, tenant_id, actor, "suppression.add", f"sup_{row.id.hex}", _audit(row))
        return row, bool(found["added"])

    async def page(
        self, query: SuppressionQuery, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[SuppressionRow]:
        at, last = after if after else (None, None)
        rows = await self.pool.fetch(_PAGE, query.tenant_id, query.kind, query.address, at, last, limit)
        return [_row(r) for r in rows]

    async def remove(self, tenant_id: uuid.UUID, suppression_id: uuid.UUID, *, actor: str) -> SuppressionRow | None:
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchrow(_REMOVE, tenant_id, suppression_id)
            if found is None:
                return None
            row = _row(found)
            await conn.execute(_AUDIT, tenant_id, actor, "suppression.remove", f"sup_{row.id.hex}", _audit(row))
        return row

    async def remove_address(
        self, tenant_id: uuid.UUID, kind: str, address: str, category: str | None, *, actor: str
    ) -> SuppressionRow | None:
        """Remove the one entry for exactly this address and category (a START lifts a STOP only)."""
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchrow(_REMOVE_ADDRESS, tenant_id, kind, address, category)
            if found is None:
                return None
            row = _row(found)
            await conn.execute(_AUDIT, tenant_id, actor, "suppression.remove", f"sup_{row.id.hex}", _audit(row))
        return row

    async def tenants_sending_to(self, number: str, *, days: int = 30, limit: int = 100) -> list[str]:
        """Slugs of the tenants that sent to ``number`` (E.164) in the last ``days``, most recent first."""
        rows = await self.pool.fetch(_SENDERS_TO, number, days, limit)
        return [r["slug"] for r in rows]
