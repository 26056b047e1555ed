"""Routing: explain where a notification would go, and reload the routing table without a restart."""

from __future__ import annotations

from fastapi import APIRouter

from engine.models import NotificationRequest
from serve_app.routes.deps import Platform, Sender, State
from serve_app.schemas.problems import problems
from serve_app.schemas.routing import RouteExplanation, RoutingReloaded

router = APIRouter(tags=["routing"])


@router.post("/api/route/explain", response_model=RouteExplanation, responses=problems(400, 401, 403, 413, 422))
async def explain_route(body: NotificationRequest, caller: Sender, state: State) -> RouteExplanation:
    """Where a notification with this body (as for ``POST /api/notifications``; no idempotency key needed)
    would go now, and why for every candidate: cost, health, policy. Nothing is stored or sent."""
    return RouteExplanation.model_validate(await state.routing.explain(caller.principal, body))


@router.post("/admin/routing/reload", response_model=RoutingReloaded, responses=problems(401, 403, 422))
async def reload_routing(_: Platform, state: State) -> RoutingReloaded:
    """(platform) Read the routing table (``HERALD_ROUTING_TABLE``) again; senders route by it within
    about a second. An invalid file is 422 naming the key, and the table in use stays."""
    return RoutingReloaded.model_validate(await state.routing.reload())
