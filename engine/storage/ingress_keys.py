"""Per-tenant keys that sign producers' messages on the ingress queue, stored sealed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

_COLUMNS = "current_sealed, previous_sealed, previous_until, rotated_at"

_ENSURE = f"""
WITH ins AS (
    INSERT INTO ingress_keys (tenant_id, current_sealed) VALUES ($1, $2)
    ON CONFLICT (tenant_id) DO NOTHING
    RETURNING {_COLUMNS}
)
SELECT * FROM ins
UNION ALL
SELECT {_COLUMNS} FROM ingress_keys WHERE tenant_id = $1
LIMIT 1
"""

# $1 tenant, $2 new sealed key, $3 until when the previous one still verifies, $4 now, $5 actor.
_ROTATE = f"""
WITH rot AS (
    INSERT INTO ingress_keys AS k (tenant_id, current_sealed, rotated_at) VALUES ($1, $2, $4)
    ON CONFLICT (tenant_id) DO UPDATE
    SET previous_sealed = k.current_sealed, previous_until = $3, current_sealed = EXCLUDED.current_sealed,
        rotated_at = $4
    RETURNING {_COLUMNS}
), audit AS (
    INSERT INTO audit_log (tenant_id, actor, action, subject, detail)
    SELECT $1, $5, 'ingress.key.rotate', 'ingress_key', jsonb_build_object('previous_until', $3::timestamptz)
)
SELECT * FROM rot
"""


@dataclass(frozen=True, slots=True)
class SealedKeys:
    current: str
    previous: str | None
    previous_until: datetime | None
    rotated_at: datetime | None


def _sealed(row: asyncpg.Record) -> SealedKeys:
    return SealedKeys(row["current_sealed"], row["previous_sealed"], row["previous_until"], row["rotated_at"])


class IngressKeyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def ensure(self, tenant_id: uuid.UUID, sealed_new: str) -> SealedKeys:
        """The tenant's keys; ``sealed_new`` becomes its first when it has none."""
        row = await self.pool.fetchrow(_ENSURE, tenant_id, sealed_new)
        if row is None:  # a concurrent first call committed after this statement's snapshot
            row = await self.pool.fetchrow(_ENSURE, tenant_id, sealed_new)
        if row is None:
            raise RuntimeError(f"no ingress key could be made for tenant {tenant_id}")
        return _sealed(row)

    async def rotate(
        self, tenant_id: uuid.UUID, sealed_new: str, *, previous_until: datetime, now: datetime, actor: str
    ) -> SealedKeys:
        row = await self.pool.fetchrow(_ROTATE, tenant_id, sealed_new, previous_until, now, actor)
        assert row is not None
        return _sealed(row)
