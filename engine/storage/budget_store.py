"""``budget_spend``: each tenant's spend per channel and UTC calendar month of admission.

Ingress replicas add the estimates of the messages they accept (``reserved``) to the row's stripe 0 in
one statement per reconcile, which answers the totals (every stripe's) and marks the one reconcile that
first took a month past its soft cap (``warn_token``, as for quotas). Senders settle sent messages in
their record statement, into stripes of their own (so no two writers wait on one row): the estimate
leaves ``reserved`` and the actual cost joins ``spent``; a settlement may arrive before the replica's
reservation does, so both are upserts that only ever add.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import asyncpg

from engine.storage.soft_caps import warn_on_conflict, warn_on_insert, warned_now

_TOKEN = "$7::uuid"


def _settled(row: str) -> str:
    """What the senders' stripes of the month of ``row`` add up to (reserved + spent; migration 0014)."""
    return f"""(SELECT coalesce(sum(s.reserved + s.spent), 0) FROM budget_spend s
     WHERE s.tenant_id = {row}.tenant_id AND s.channel = {row}.channel AND s.month = {row}.month
       AND s.stripe > 0)"""


_RECONCILE = f"""
WITH d AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::date[], $4::numeric[], $5::bigint[], $6::numeric[])
        AS d(tenant_id, channel, month, reserved, accepted, soft_cap)
)
INSERT INTO budget_spend AS b (tenant_id, channel, month, reserved, accepted, soft_cap, warn_token, warned_at)
SELECT tenant_id, channel, month, reserved, accepted, soft_cap,
       {warn_on_insert(f"reserved + {_settled('d')}", token=_TOKEN)}
FROM d
ORDER BY tenant_id, channel, month
ON CONFLICT (tenant_id, channel, month, stripe) DO UPDATE
SET reserved = b.reserved + EXCLUDED.reserved,
    accepted = b.accepted + EXCLUDED.accepted,
    soft_cap = EXCLUDED.soft_cap,
    {warn_on_conflict("b", f"b.reserved + EXCLUDED.reserved + b.spent + {_settled('b')}", token=_TOKEN)},
    updated_at = now()
RETURNING tenant_id, channel, month, reserved + spent + {_settled("b")} AS committed,
          {warned_now(_TOKEN)}
"""

# Into a stripe of the connection's (as the senders' record statement does), never the replicas' stripe 0.
_SETTLE = """
WITH s AS (
    SELECT tenant_id, channel, month, sum(estimated) AS estimated, sum(actual) AS actual,
           count(*) FILTER (WHERE sent) AS sent
    FROM unnest($1::uuid[], $2::text[], $3::date[], $4::numeric[], $5::numeric[], $6::bool[])
        AS s(tenant_id, channel, month, estimated, actual, sent)
    GROUP BY 1, 2, 3
)
INSERT INTO budget_spend AS b (tenant_id, channel, month, stripe, reserved, spent, sent)
SELECT tenant_id, channel, month, 1 + pg_backend_pid() % 8, -estimated, actual, sent FROM s
ORDER BY tenant_id, channel, month
ON CONFLICT (tenant_id, channel, month, stripe) DO UPDATE
SET reserved = b.reserved + EXCLUDED.reserved, spent = b.spent + EXCLUDED.spent, sent = b.sent + EXCLUDED.sent,
    updated_at = now()
"""


@dataclass(frozen=True, slots=True)
class SpendRow:
    tenant_id: uuid.UUID
    channel: str
    month: date

    @property
    def key(self) -> tuple[uuid.UUID, str, date]:
        return (self.tenant_id, self.channel, self.month)


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one replica adds to a month in a reconcile."""

    row: SpendRow
    reserved: Decimal
    accepted: int
    soft_cap: Decimal | None


@dataclass(frozen=True, slots=True)
class SpendTotal:
    row: SpendRow
    committed: Decimal  #: reserved + spent, across every replica and sender
    warned_now: bool


@dataclass(frozen=True, slots=True)
class Settlement:
    """One message done with: its estimate leaves the reservation, its actual cost (0 when it was never
    sent) joins the spend. ``month`` is the UTC month the message was accepted in."""

    tenant_id: uuid.UUID
    channel: str
    month: date
    estimated: Decimal
    actual: Decimal
    sent: bool


class BudgetStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def reconcile(self, rows: Sequence[Reservation], *, token: uuid.UUID) -> list[SpendTotal]:
        if not rows:
            return []
        found = await self.pool.fetch(
            _RECONCILE,
            [r.row.tenant_id for r in rows],
            [r.row.channel for r in rows],
            [r.row.month for r in rows],
            [r.reserved for r in rows],
            [r.accepted for r in rows],
            [r.soft_cap for r in rows],
            token,
        )
        return [
            SpendTotal(SpendRow(f["tenant_id"], f["channel"], f["month"]), f["committed"], f["warned_now"])
            for f in found
        ]

    async def settle(self, items: Sequence[Settlement], conn: asyncpg.Connection | None = None) -> None:
        """Fold sent (and unsent) messages into their month's spend, in one statement; ``conn`` puts it in
        the caller's transaction (the sender's record of the batch)."""
        if not items:
            return
        await (conn or self.pool).execute(
            _SETTLE,
            [i.tenant_id for i in items],
            [i.channel for i in items],
            [i.month for i in items],
            [i.estimated for i in items],
            [i.actual for i in items],
            [i.sent for i in items],
        )
