"""Delivery analytics from the daily rollups: ``GET /api/analytics`` and the rate gauges of ``/metrics``.

The rollups (``analytics_daily``) are kept up to date by the statements that record sends, provider
events, opens and clicks, one row per tenant x day x channel x template version x provider, so a query
reads at most a few rows per day and never scans events. Days are the UTC day the message was accepted:
a message's delivery, opens and clicks count on the day it was sent for, so rates stay within 0..1.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.metrics import MetricsBuffer
from engine.models import FieldError, Tenant
from engine.problems import ApiProblem, from_pydantic

#: Longest range one query may ask for.
MAX_RANGE_DAYS = 366
#: Range when none is given: the last seven days, today included.
DEFAULT_RANGE_DAYS = 7


class GroupBy(StrEnum):
    CHANNEL = "channel"
    TEMPLATE = "template"  #: template id and version
    PROVIDER = "provider"
    DAY = "day"


#: Columns each grouping selects (a fixed list: nothing from the request reaches the SQL text).
_GROUP_COLUMNS: dict[GroupBy, tuple[str, ...]] = {
    GroupBy.CHANNEL: ("channel",),
    GroupBy.TEMPLATE: ("template_id", "template_version"),
    GroupBy.PROVIDER: ("provider",),
    GroupBy.DAY: ("day",),
}


@dataclass(frozen=True, slots=True)
class Figures:
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    soft_bounced: int = 0
    complained: int = 0
    opened: int = 0  #: messages opened by a person (machine opens are kept apart)
    machine_opened: int = 0
    clicked: int = 0
    failed: int = 0
    suppressed: int = 0
    expired: int = 0
    unsubscribed: int = 0

    def rates(self) -> dict[str, float | None]:
        """Derived rates; ``None`` where the denominator is zero."""
        return {
            "delivery_rate": _ratio(self.delivered, self.sent),
            "bounce_rate": _ratio(self.bounced, self.sent),
            "complaint_rate": _ratio(self.complained, self.delivered),
            "open_rate": _ratio(self.opened, self.delivered),
            "click_rate": _ratio(self.clicked, self.delivered),
            "click_to_open_rate": _ratio(self.clicked, self.opened),
            "failure_rate": _ratio(self.failed, self.sent + self.failed),
        }

    def as_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, **self.rates()}


FIGURE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Figures))


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


class AnalyticsQuery(BaseModel):
    """The query of ``GET /api/analytics``: ``since`` and ``until`` are days (inclusive, UTC), ``group_by``
    any of channel, template, provider, day (comma-separated or repeated)."""

    model_config = ConfigDict(extra="forbid")

    since: date | None = None
    until: date | None = None
    group_by: list[GroupBy] = Field(default_factory=list)

    @field_validator("group_by", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple):
            return [v.strip() for item in value for v in str(item).split(",") if v.strip()]
        return value

    def window(self, today: date) -> tuple[date, date]:
        until = self.until or today
        return self.since or until - timedelta(days=DEFAULT_RANGE_DAYS - 1), until


@dataclass(frozen=True, slots=True)
class AnalyticsRow:
    key: dict[str, Any]
    figures: Figures

    def as_dict(self) -> dict[str, Any]:
        return {**self.key, **self.figures.as_dict()}


@dataclass(frozen=True, slots=True)
class AnalyticsReport:
    since: date
    until: date
    group_by: tuple[GroupBy, ...]
    rows: tuple[AnalyticsRow, ...]
    total: Figures

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "group_by": [g.value for g in self.group_by],
            "rows": [r.as_dict() for r in self.rows],
            "total": self.total.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class RateGauge:
    tenant: str
    template_id: str
    open_rate: float | None
    click_rate: float | None


def _sums() -> str:
    return ", ".join(f"sum({n})::bigint AS {n}" for n in FIGURE_NAMES)


def _figures(row: Mapping[str, Any]) -> Figures:
    return Figures(**{n: int(row[n] or 0) for n in FIGURE_NAMES})


class Analytics:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def query(self, tenant: Tenant, params: Mapping[str, Any], *, today: date | None = None) -> AnalyticsReport:
        """``GET /api/analytics`` for ``tenant`` from the route's query parameters.

        Raises:
            ApiProblem: 422 naming the parameter (not a date, unknown grouping, range backwards or too long).
        """
        try:
            request = AnalyticsQuery.model_validate({k: v for k, v in params.items() if v not in (None, "", [])})
        except ValidationError as err:
            errors = from_pydantic(err.errors(include_url=False), prefix="query")
            raise ApiProblem(422, "the analytics query is not valid", errors=errors) from None
        since, until = request.window(today or datetime.now(UTC).date())
        if since > until:
            raise ApiProblem(422, "since is after until", errors=[FieldError(("query", "since"), "after until")])
        if (until - since).days + 1 > MAX_RANGE_DAYS:
            raise ApiProblem(
                422, f"ask for at most {MAX_RANGE_DAYS} days", errors=[FieldError(("query", "until"), "too far")]
            )
        return await self.report(tenant.id, since, until, tuple(dict.fromkeys(request.group_by)))

    async def report(
        self, tenant_id: uuid.UUID, since: date, until: date, group_by: Sequence[GroupBy] = ()
    ) -> AnalyticsReport:
        """Figures of ``[since, until]`` (days, inclusive), one row per group plus the total."""
        columns = [c for g in group_by for c in _GROUP_COLUMNS[g]]
        select = ", ".join([*columns, _sums()])
        grouping = f"GROUP BY {', '.join(columns)} ORDER BY {', '.join(columns)}" if columns else ""
        rows = await self.pool.fetch(
            f"SELECT {select} FROM analytics_daily WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 {grouping}",
            tenant_id,
            since,
            until,
        )
        out = []
        for r in rows:
            key = {c: r[c].isoformat() if isinstance(r[c], date) else r[c] for c in columns}
            if "provider" in key and key["provider"] == "":
                key["provider"] = None
            out.append(AnalyticsRow(key, _figures(r)))
        total = _total([row.figures for row in out]) if columns else (out[0].figures if out else Figures())
        return AnalyticsReport(since, until, tuple(group_by), tuple(out) if columns else (), total)

    async def rate_gauges(self, window_days: int, *, today: date | None = None) -> list[RateGauge]:
        """Human open and click rates per tenant and template over the last ``window_days`` days."""
        since = (today or datetime.now(UTC).date()) - timedelta(days=window_days - 1)
        rows = await self.pool.fetch(
            """SELECT t.slug, a.template_id, sum(a.delivered) AS delivered, sum(a.opened) AS opened,
                      sum(a.clicked) AS clicked
               FROM analytics_daily a JOIN tenants t ON t.id = a.tenant_id
               WHERE a.day >= $1
               GROUP BY t.slug, a.template_id""",
            since,
        )
        return [
            RateGauge(
                r["slug"], r["template_id"], _ratio(r["opened"], r["delivered"]), _ratio(r["clicked"], r["delivered"])
            )
            for r in rows
        ]

    async def publish_rates(self, metrics: MetricsBuffer, window_days: int) -> int:
        """Set ``open_rate`` and ``click_rate`` in ``metrics`` (shipped to the aggregator with the rest)."""
        gauges = await self.rate_gauges(window_days)
        for g in gauges:
            if g.open_rate is not None:
                metrics.set("open_rate", g.open_rate, tenant=g.tenant, template_id=g.template_id)
            if g.click_rate is not None:
                metrics.set("click_rate", g.click_rate, tenant=g.tenant, template_id=g.template_id)
        return len(gauges)


def _total(parts: Sequence[Figures]) -> Figures:
    return Figures(**{n: sum(getattr(p, n) for p in parts) for n in FIGURE_NAMES})
