"""What a soft cap reached raises, once per window across replicas: a ``QuotaWarning`` or ``BudgetWarning``
webhook to each of the tenant's endpoints that takes it, an audit record (``quota.warning`` /
``budget.warning``, the tenant's event log of its own limits) and a metric.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import asyncpg

from engine.ids import new_id
from engine.metrics import MetricsBuffer

from .admission import Warnings
from .periods import utcnow

QUOTA_WARNING = "QuotaWarning"
BUDGET_WARNING = "BudgetWarning"

# $1 tenant, $2 audit action, $3 subject (the limit's config key), $4 meta, $5 webhook id, $6 type, $7 payload.
_RAISE = """
WITH a AS (
    INSERT INTO audit_log (tenant_id, actor, action, subject, detail) VALUES ($1, 'herald', $2, $3, $4::jsonb)
), d AS (
    INSERT INTO webhook_deliveries (tenant_id, endpoint_id, url, webhook_id, event_type, payload)
    SELECT w.tenant_id, w.id, w.url, $5, $6, $7::jsonb FROM webhook_endpoints w
    WHERE w.tenant_id = $1 AND w.enabled AND (w.event_types IS NULL OR $6 = ANY (w.event_types))
)
SELECT slug FROM tenants WHERE id = $1
"""


class WarningSink:
    """``on_warnings`` of :meth:`GovernanceAdmission.run`."""

    def __init__(self, pool: asyncpg.Pool, metrics: MetricsBuffer, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.pool = pool
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, warnings: Warnings) -> None:
        for q in warnings.quotas:
            meta = q.meta()
            slug = await self._raise(q.tenant_id, QUOTA_WARNING, "quota.warning", str(meta["limit"]), meta)
            self.metrics.inc("quota_warnings_total", channel=q.channel.value, tenant=slug, period=q.period.value)
        for b in warnings.budgets:
            meta = b.meta()
            slug = await self._raise(b.tenant_id, BUDGET_WARNING, "budget.warning", str(meta["budget"]), meta)
            self.metrics.inc("budget_warnings_total", channel=b.channel.value, tenant=slug)

    async def _raise(self, tenant_id: uuid.UUID, kind: str, action: str, subject: str, meta: dict[str, object]) -> str:
        webhook_id = "evt_" + new_id().hex
        payload = {"type": kind, "timestamp": self.clock().isoformat(), "data": meta}
        slug = await self.pool.fetchval(_RAISE, tenant_id, action, subject, meta, webhook_id, kind, payload)
        return str(slug or tenant_id)
