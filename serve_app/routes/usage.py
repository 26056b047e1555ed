"""``/api/usage``: a tenant's counts, spend and what is left of its quotas and budgets this period."""

from __future__ import annotations

from fastapi import APIRouter

from serve_app.routes.deps import Reader, State
from serve_app.schemas.problems import problems
from serve_app.schemas.usage import UsageReport

router = APIRouter(tags=["usage"])


@router.get("/api/usage", response_model=UsageReport, responses=problems(401, 403))
async def get_usage(caller: Reader, state: State) -> UsageReport:
    """Per channel, for the current UTC minute, day and month: messages accepted, what is left of each quota
    (`limits.<channel>.per_minute` / `per_day` / `per_month`), the month's spend (reserved for messages not
    sent yet, and spent) in `budgets.currency`, messages sent, and what is left of the budget. It trails the
    ingress replicas' own counts by a second at most."""
    return await state.usage.usage(caller.tenant)
