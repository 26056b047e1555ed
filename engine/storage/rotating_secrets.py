"""Per-tenant secrets that rotate with an overlap (ingress keys, webhook signing secrets), stored sealed.

Each kind has its own table of the same columns (``tenant_id``, ``current_sealed``, ``previous_sealed``,
``previous_until``, ``rotated_at``); :class:`RotatingSecretStore` runs the same two statements over any
of them, a rotation audit-logged under the kind's own action.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

_COLUMNS = "current_sealed, previous_sealed, previous_until, rotated_at"


@dataclass(frozen=True, slots=True)
class SecretTable:
    """Where one kind of rotating secret is kept, and what its rotation is called in the audit log."""

    name: str
    audit_action: str
    audit_subject: str

    def ensure_sql(self) -> str:
        return f"""
WITH ins AS (
    INSERT INTO {self.name} (tenant_id, current_sealed) VALUES ($1, $2)
    ON CONFLICT (tenant_id) DO NOTHING
    RETURNING {_COLUMNS}
)
SELECT * FROM ins
UNION ALL
SELECT {_COLUMNS} FROM {self.name} WHERE tenant_id = $1
LIMIT 1
"""

    def rotate_sql(self) -> str:
        """$1 tenant, $2 new sealed secret, $3 until when the previous one still holds, $4 now, $5 actor."""
        return f"""
WITH rot AS (
    INSERT INTO {self.name} AS s (tenant_id, current_sealed, rotated_at) VALUES ($1, $2, $4)
    ON CONFLICT (tenant_id) DO UPDATE
    SET previous_sealed = s.current_sealed, previous_until = $3, current_sealed = EXCLUDED.current_sealed,
        rotated_at = $4
    RETURNING {_COLUMNS}
), audit AS (
    INSERT INTO audit_log (tenant_id, actor, action, subject, detail)
    SELECT $1, $5, '{self.audit_action}', '{self.audit_subject}',
           jsonb_build_object('previous_until', $3::timestamptz)
)
SELECT * FROM rot
"""


#: The keys that sign producers' messages on the ingress queue.
INGRESS_KEYS = SecretTable("ingress_keys", "ingress.key.rotate", "ingress_key")
#: The secrets that sign the events Herald sends to tenants' webhook endpoints.
WEBHOOK_SECRETS = SecretTable("webhook_secrets", "webhooks.secret.rotate", "webhook_secret")


@dataclass(frozen=True, slots=True)
class SealedSecrets:
    current: str
    previous: str | None
    previous_until: datetime | None
    rotated_at: datetime | None


def _sealed(row: asyncpg.Record) -> SealedSecrets:
    return SealedSecrets(row["current_sealed"], row["previous_sealed"], row["previous_until"], row["rotated_at"])


class RotatingSecretStore:
    """Reads, makes and rotates the sealed secrets of one :class:`SecretTable`."""

    def __init__(self, pool: asyncpg.Pool, table: SecretTable) -> None:
        self.pool = pool
        self.table = table
        self._ensure = table.ensure_sql()
        self._rotate = table.rotate_sql()

    async def ensure(self, tenant_id: uuid.UUID, sealed_new: str) -> SealedSecrets:
        """The tenant's secrets; ``sealed_new`` becomes its first when it has none."""
        row = await self.pool.fetchrow(self._ensure, tenant_id, sealed_new)
        if row is None:
            # A concurrent first call inserted it after this statement's snapshot was taken: the next
            # statement sees the committed row.
            row = await self.pool.fetchrow(self._ensure, tenant_id, sealed_new)
        if row is None:
            what = self.table.audit_subject.replace("_", " ")
            raise RuntimeError(f"no {what} could be made for tenant {tenant_id}")
        return _sealed(row)

    async def rotate(
        self, tenant_id: uuid.UUID, sealed_new: str, *, previous_until: datetime, now: datetime, actor: str
    ) -> SealedSecrets:
        row = await self.pool.fetchrow(self._rotate, tenant_id, sealed_new, previous_until, now, actor)
        assert row is not None
        return _sealed(row)
