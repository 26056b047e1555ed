"""``/admin``: health, the platform's providers, a tenant's own credentials, queue figures."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from engine.auth import PlatformPrincipal
from engine.channels import Channel
from engine.errors import ConfigurationError
from engine.models import FieldError
from engine.problems import ApiProblem
from serve_app.routes.deps import OPEN, OR_PLATFORM, AdminOrPlatform, Platform, State, TenantAdmin
from serve_app.schemas.admin import (
    CredentialsRequest,
    CredentialsStored,
    Health,
    PlatformQueues,
    QueueReport,
    TenantQueues,
)
from serve_app.schemas.problems import problems
from serve_app.schemas.routing import ProvidersPage

router = APIRouter(tags=["admin"])


@router.get(
    "/admin/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Some part is not ready; `checks` says which"}},
    openapi_extra=OPEN,
)
async def healthz(state: State) -> JSONResponse:
    """200 only when the database, the relay (and its broker), the provider health and routing table
    actors and every sender are ready."""
    checks = await state.ops.health_checks()
    ok = all(v == "ok" for v in checks.values())
    health = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(health.model_dump(), status_code=200 if ok else 503)


@router.get("/admin/providers", response_model=ProvidersPage, responses=problems(401, 403))
async def providers(_: Platform, state: State) -> ProvidersPage:
    """(platform) Every provider per channel: enabled and its failover rank, configured or what it misses,
    and its live state: breakers (closed, open, half-open) per region and account, error rate, latency,
    last error, this month's volume; the routing table in use."""
    return ProvidersPage.model_validate(await state.routing.providers(await state.ops.provider_report()))


@router.put(
    "/admin/credentials/{channel}/{provider}",
    response_model=CredentialsStored,
    responses=problems(400, 401, 403, 413, 422),
)
async def set_credentials(
    channel: Channel,
    provider: Annotated[str, Path(pattern=r"^[a-z0-9_]{1,32}$", examples=["sendgrid"])],
    body: CredentialsRequest,
    caller: TenantAdmin,
    state: State,
) -> CredentialsStored:
    """(tenant admin) The tenant's own account for a provider: checked by building the driver with the
    settings, stored encrypted; only the names are ever shown."""
    try:
        names = await state.credentials.put(caller.tenant.id, channel, provider, body.root, caller.actor)
    except ConfigurationError as err:
        raise ApiProblem(422, str(err), errors=[FieldError(("path", "provider"), str(err))]) from None
    state.intake.forget_tenant(caller.tenant.slug)  # this replica's webhooks and explain use them at once
    return CredentialsStored(channel=channel, provider=provider, names=names)


@router.get("/admin/queues", response_model=QueueReport, responses=problems(401, 403, 503), openapi_extra=OR_PLATFORM)
async def queues(caller: AdminOrPlatform, state: State) -> PlatformQueues | TenantQueues:
    """The platform: per broker queue its depth, consumers, the age of its oldest envelope and the rates in
    and out over the last minute, and the outbox. A tenant admin: its own messages by status (last 24 h)
    and how many wait, with the age of the oldest."""
    if isinstance(caller, PlatformPrincipal):
        return PlatformQueues.model_validate(await state.ops.queues(), from_attributes=True)
    view = await state.lifecycle.tenant_queues.view(caller.tenant)
    return TenantQueues.model_validate(view, from_attributes=True)
