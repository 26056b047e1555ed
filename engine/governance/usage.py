"""``GET /api/usage``: a tenant's counts, spend and what is left of its quotas and budgets, per channel, in
the current UTC minute, day and month.

Read from the reconciled tables, so it trails the replicas' own counters by one reconcile at most.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import asyncpg
from pydantic import BaseModel, Field

from engine.channels import Channel
from engine.models import Tenant
from engine.storage.usage_store import ChannelCounts, usage_rows

from .periods import Period, Window, utcnow, window_of


class PeriodWindow(BaseModel):
    start: datetime
    end: datetime


class Accepted(BaseModel):
    minute: int = 0
    day: int = 0
    month: int = 0


class QuotaUsage(BaseModel):
    limit: int
    used: int
    remaining: int
    resets_at: datetime


class BudgetUsage(BaseModel):
    monthly: float
    remaining: float = Field(description="monthly minus spend, never below 0")
    soft_cap_percent: int


class ChannelUsage(BaseModel):
    accepted: Accepted = Field(description="messages accepted in the current minute, day and month")
    quotas: dict[str, QuotaUsage] = Field(description="each quota set in limits.<channel> (per_minute, ...)")
    spend: float = Field(description="this month: reserved + spent")
    spent: float = Field(description="actual costs of the messages sent")
    reserved: float = Field(description="estimates of the accepted messages not sent yet")
    sent: int
    budget: BudgetUsage | None = Field(description="budgets.<channel>.monthly; null: none")


class UsageReport(BaseModel):
    tenant: str
    currency: str
    periods: dict[str, PeriodWindow]
    channels: dict[str, ChannelUsage]


class UsageService:
    def __init__(self, pool: asyncpg.Pool, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.pool = pool
        self.clock = clock

    async def usage(self, tenant: Tenant) -> UsageReport:
        now = self.clock()
        windows = {p: window_of(p, now) for p in Period}
        counts = await usage_rows(
            self.pool,
            tenant.id,
            windows[Period.MINUTE].start,
            windows[Period.DAY].start,
            windows[Period.MONTH].start,
            windows[Period.MONTH].start.date(),
        )
        channels = {c.value: _channel(tenant, c, counts.get(c.value), windows) for c in Channel}
        return UsageReport(
            tenant=tenant.slug,
            currency=tenant.config.budgets.currency,
            periods={p.value: PeriodWindow(start=w.start, end=w.end) for p, w in windows.items()},
            channels=channels,
        )


def _channel(
    tenant: Tenant, channel: Channel, counts: ChannelCounts | None, windows: dict[Period, Window]
) -> ChannelUsage:
    counts = counts or ChannelCounts({})
    accepted = Accepted.model_validate(counts.accepted)
    caps = tenant.config.limits.channel(channel).quota_caps()
    quotas = {}
    for period in Period:
        limit = caps.get(period.quota_key)
        if limit is not None:
            used = counts.accepted.get(period.value, 0)
            quotas[period.quota_key] = QuotaUsage(
                limit=limit, used=used, remaining=max(0, limit - used), resets_at=windows[period].end
            )
    spend = counts.reserved + counts.spent
    budget = tenant.config.budgets.channel(channel)
    return ChannelUsage(
        accepted=accepted,
        quotas=quotas,
        spend=float(spend),
        spent=float(counts.spent),
        reserved=float(counts.reserved),
        sent=counts.sent,
        budget=None
        if budget.monthly is None
        else BudgetUsage(
            monthly=float(budget.monthly),
            remaining=float(max(Decimal(0), budget.monthly - spend)),
            soft_cap_percent=budget.soft_cap_percent,
        ),
    )
