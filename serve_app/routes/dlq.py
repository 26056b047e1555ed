"""``/admin/dlq``: dead messages (attempts exhausted) listed and replayed. A tenant admin sees and replays
its own only; the platform operator every tenant's. Each route is one call to
:class:`~engine.lifecycle.DeadLetterService`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from engine.auth import PlatformPrincipal
from engine.lifecycle import AdminScope, DeadPage, ReplayRequest, ReplayResult
from serve_app.routes.deps import OR_PLATFORM, AdminOrPlatform, State, TenantCaller
from serve_app.schemas.dlq import DeadLetterQuery
from serve_app.schemas.problems import problems

router = APIRouter(tags=["dlq"])


def _scope(caller: PlatformPrincipal | TenantCaller) -> AdminScope:
    if isinstance(caller, PlatformPrincipal):
        return AdminScope.platform(caller.subject)
    return AdminScope.of_tenant(caller.tenant, caller.actor)


@router.get("/admin/dlq", response_model=DeadPage, responses=problems(401, 403, 422), openapi_extra=OR_PLATFORM)
async def list_dead_letters(
    query: Annotated[DeadLetterQuery, Query()], caller: AdminOrPlatform, state: State
) -> DeadPage:
    """Dead messages, newest dead first, with their last error and the counts of all that match, by tenant
    (the platform only; a tenant admin naming another is 403), channel, provider, error class and time of
    death."""
    return await state.lifecycle.dead_letters.list_dead(_scope(caller), query, cursor=query.cursor, limit=query.limit)


@router.post(
    "/admin/dlq/replay",
    response_model=ReplayResult,
    responses=problems(400, 401, 403, 413, 422),
    openapi_extra=OR_PLATFORM,
)
async def replay_dead_letters(body: ReplayRequest, caller: AdminOrPlatform, state: State) -> ReplayResult:
    """Replay dead messages (by `ids`, by `filter`, or `all`) through the normal pipeline with a fresh
    attempt budget; one past its TTL ends `expired`, never sent. A message already replayed is not dead
    any more, so a second replay does nothing. Every replay is an audit record (who, what, how many)."""
    return await state.lifecycle.dead_letters.replay(_scope(caller), body)
