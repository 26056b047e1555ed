"""``GET /api/usage``: the engine's usage report (engine.governance.usage) is the response body."""

from __future__ import annotations

from engine.governance.usage import Accepted, BudgetUsage, ChannelUsage, PeriodWindow, QuotaUsage, UsageReport

__all__ = ["Accepted", "BudgetUsage", "ChannelUsage", "PeriodWindow", "QuotaUsage", "UsageReport"]
