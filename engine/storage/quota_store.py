"""``quota_counters``: messages accepted per tenant, channel and UTC calendar window, added to by every
ingress replica in one statement per reconcile.

The statement adds each replica's counts and returns the totals; ``warn_token`` marks the one reconcile
that first took a window to its soft cap, so across replicas exactly one ``QuotaWarning`` is raised per
window. Rows are written in one key order, so two replicas reconciling at once never deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from engine.storage.soft_caps import warn_on_conflict, warn_on_insert, warned_now

_TOKEN = "$7::uuid"
_RECONCILE = f"""
WITH d AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[], $6::bigint[])
        AS d(tenant_id, channel, period, window_start, delta, soft_cap)
)
INSERT INTO quota_counters AS c (tenant_id, channel, period, window_start, used, soft_cap, warn_token, warned_at)
SELECT tenant_id, channel, period, window_start, delta, soft_cap,
       {warn_on_insert("delta", token=_TOKEN)}
FROM d
ORDER BY tenant_id, channel, period, window_start
ON CONFLICT (tenant_id, channel, period, window_start) DO UPDATE
SET used = c.used + EXCLUDED.used,
    soft_cap = EXCLUDED.soft_cap,
    {warn_on_conflict("c", "c.used + EXCLUDED.used", token=_TOKEN)},
    updated_at = now()
RETURNING tenant_id, channel, period, window_start, used, {warned_now(_TOKEN)}
"""

# Refunds (deduplicated messages, an accept that did not store) take from the window they were counted in.
_REFUND = """
WITH r AS (
    SELECT tenant_id, channel, period, window_start, sum(n) AS n
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[])
        AS r(tenant_id, channel, period, window_start, n)
    GROUP BY 1, 2, 3, 4
)
UPDATE quota_counters c SET used = greatest(0, c.used - r.n), updated_at = now()
FROM r
WHERE c.tenant_id = r.tenant_id AND c.channel = r.channel AND c.period = r.period
  AND c.window_start = r.window_start
"""

_PRUNE = "DELETE FROM quota_counters WHERE period = $1 AND window_start < $2"

_CURRENT = """
SELECT channel, period, used FROM quota_counters
WHERE tenant_id = $1 AND (period, window_start) IN (SELECT * FROM unnest($2::text[], $3::timestamptz[]))
"""


@dataclass(frozen=True, slots=True)
class CounterRow:
    """One window's count, as a reconcile sends it (``delta``) and the table answers (``used``)."""

    tenant_id: uuid.UUID
    channel: str
    period: str
    window_start: datetime

    @property
    def key(self) -> tuple[uuid.UUID, str, str, datetime]:
        return (self.tenant_id, self.channel, self.period, self.window_start)


@dataclass(frozen=True, slots=True)
class CounterTotal:
    row: CounterRow
    used: int
    warned_now: bool  #: this reconcile took the window to its soft cap first


class QuotaStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def reconcile(
        self, rows: Sequence[tuple[CounterRow, int, int | None]], *, token: uuid.UUID
    ) -> list[CounterTotal]:
        """Add each ``(row, delta, soft_cap)`` in one statement; the totals across every replica."""
        if not rows:
            return []
        found = await self.pool.fetch(
            _RECONCILE,
            [r.tenant_id for r, _, _ in rows],
            [r.channel for r, _, _ in rows],
            [r.period for r, _, _ in rows],
            [r.window_start for r, _, _ in rows],
            [delta for _, delta, _ in rows],
            [soft for _, _, soft in rows],
            token,
        )
        return [
            CounterTotal(
                CounterRow(f["tenant_id"], f["channel"], f["period"], f["window_start"]), f["used"], f["warned_now"]
            )
            for f in found
        ]

    async def refund(self, rows: Sequence[tuple[CounterRow, int]]) -> None:
        if not rows:
            return
        await self.pool.execute(
            _REFUND,
            [r.tenant_id for r, _ in rows],
            [r.channel for r, _ in rows],
            [r.period for r, _ in rows],
            [r.window_start for r, _ in rows],
            [n for _, n in rows],
        )

    async def prune(self, period: str, before: datetime) -> int:
        """Drop the ``period`` windows that started before ``before``; how many went."""
        status = await self.pool.execute(_PRUNE, period, before)
        return int(status.split()[-1])

    async def current(
        self, tenant_id: uuid.UUID, windows: Sequence[tuple[str, datetime]]
    ) -> dict[tuple[str, str], int]:
        """``{(channel, period): used}`` of the tenant in the given windows (one per period)."""
        rows = await self.pool.fetch(_CURRENT, tenant_id, [p for p, _ in windows], [w for _, w in windows])
        return {(r["channel"], r["period"]): r["used"] for r in rows}
