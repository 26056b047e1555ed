"""``/api/analytics``: a tenant's delivery figures over a range of days, from the daily rollups."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from engine.feedback.schemas import AnalyticsOut
from serve_app.routes.deps import Reader, State
from serve_app.schemas.problems import problems

router = APIRouter(tags=["analytics"])


@router.get("/api/analytics", response_model=AnalyticsOut, responses=problems(401, 403, 422))
async def analytics(
    caller: Reader,
    state: State,
    since: Annotated[
        date | None, Query(description="first day (UTC), inclusive; default: six days before until")
    ] = None,
    until: Annotated[date | None, Query(description="last day (UTC), inclusive; default: today")] = None,
    group_by: Annotated[
        str | None,
        Query(max_length=64, description="any of channel, template, provider, day; comma-separated", examples=["day"]),
    ] = None,
) -> AnalyticsOut:
    """Sent, delivered, bounced, complained, opened (people, not machines), clicked, failed and the rates
    derived from them, in total and per group, for messages accepted on those days (at most 366)."""
    report = await state.analytics.query(caller.tenant, {"since": since, "until": until, "group_by": group_by})
    return AnalyticsOut.model_validate(report.as_dict())
