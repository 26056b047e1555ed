"""A tenant's counts and spend in its current windows (``GET /api/usage``), in one statement."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import asyncpg

_USAGE = """
SELECT channel, period, used, NULL::numeric AS reserved, NULL::numeric AS spent, NULL::bigint AS sent
FROM quota_counters
WHERE tenant_id = $1
  AND ((period = 'minute' AND window_start = $2) OR (period = 'day' AND window_start = $3)
       OR (period = 'month' AND window_start = $4))
UNION ALL
SELECT channel, NULL, sum(accepted), sum(reserved), sum(spent), sum(sent)
FROM budget_spend
WHERE tenant_id = $1 AND month = $5
GROUP BY channel
"""


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    accepted: dict[str, int]  #: by period (``minute``, ``day``, ``month``)
    reserved: Decimal = Decimal(0)
    spent: Decimal = Decimal(0)
    sent: int = 0


async def usage_rows(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, minute: datetime, day: datetime, month: datetime, month_day: date
) -> dict[str, ChannelCounts]:
    """Per channel: messages accepted in the windows starting at ``minute`` / ``day`` / ``month``, and the
    month's spend."""
    accepted: dict[str, dict[str, int]] = {}
    spend: dict[str, tuple[Decimal, Decimal, int]] = {}
    for r in await pool.fetch(_USAGE, tenant_id, minute, day, month, month_day):
        if r["period"] is not None:
            accepted.setdefault(r["channel"], {})[r["period"]] = r["used"]
        else:
            spend[r["channel"]] = (r["reserved"], r["spent"], r["sent"])
    out = {}
    for channel in set(accepted) | set(spend):
        reserved, spent, sent = spend.get(channel, (Decimal(0), Decimal(0), 0))
        out[channel] = ChannelCounts(accepted.get(channel, {}), reserved, spent, sent)
    return out
