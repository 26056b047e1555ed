"""``/api/webhooks/...``: where a tenant receives Herald's events (Standard Webhooks), and its signing secret.

Every route is one call to :class:`~engine.feedback.endpoints.WebhookEndpoints` or
:class:`~engine.feedback.signing_keys.WebhookSecrets`, for the caller's own tenant (a tenant admin).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from engine.feedback.endpoints import DeliveryReplayRequest, EndpointCreate
from engine.feedback.schemas import (
    DeliveryList,
    DeliveryOut,
    EndpointList,
    EndpointOut,
    QueuedTestEventOut,
    ReplayOut,
    SecretOut,
)
from serve_app.routes.deps import State, TenantAdmin
from serve_app.schemas.problems import problems

router = APIRouter(tags=["webhook endpoints"])

EndpointId = Annotated[str, Path(max_length=64, examples=["ep_0190b5a7c2f37d8e9a1b2c3d4e5f6a7b"])]


@router.post(
    "/api/webhooks/endpoints",
    status_code=201,
    response_model=EndpointOut,
    responses=problems(400, 401, 403, 413, 422),
)
async def create_webhook_endpoint(body: EndpointCreate, caller: TenantAdmin, state: State) -> EndpointOut:
    """A URL that receives the tenant's events (all types, or those named in ``event_types``), signed with
    the tenant's secret. The URL must be https and public (422 naming ``url``)."""
    endpoint = await state.endpoints.create(caller.tenant, body.model_dump(exclude_unset=True))
    return EndpointOut.model_validate(endpoint.as_dict())


@router.get("/api/webhooks/endpoints", response_model=EndpointList, responses=problems(401, 403))
async def list_webhook_endpoints(caller: TenantAdmin, state: State) -> EndpointList:
    """The tenant's endpoints, with whether each is enabled or failing."""
    endpoints = await state.endpoints.list(caller.tenant)
    return EndpointList.model_validate({"endpoints": [e.as_dict() for e in endpoints]})


@router.get("/api/webhooks/endpoints/{endpoint_id}", response_model=EndpointOut, responses=problems(401, 403, 404, 422))
async def get_webhook_endpoint(endpoint_id: EndpointId, caller: TenantAdmin, state: State) -> EndpointOut:
    """One endpoint; another tenant's or a malformed id is 404."""
    return EndpointOut.model_validate((await state.endpoints.get(caller.tenant, endpoint_id)).as_dict())


@router.delete(
    "/api/webhooks/endpoints/{endpoint_id}",
    status_code=204,
    response_class=Response,
    responses=problems(401, 403, 404, 422),
)
async def delete_webhook_endpoint(endpoint_id: EndpointId, caller: TenantAdmin, state: State) -> Response:
    """Delete the endpoint; what was still queued for it is dropped."""
    await state.endpoints.delete(caller.tenant, endpoint_id)
    return Response(status_code=204)


@router.post(
    "/api/webhooks/endpoints/{endpoint_id}/enable",
    response_model=EndpointOut,
    responses=problems(401, 403, 404, 422),
)
async def enable_webhook_endpoint(endpoint_id: EndpointId, caller: TenantAdmin, state: State) -> EndpointOut:
    """Enable an endpoint again after it was disabled for failing; its failure clock starts over."""
    return EndpointOut.model_validate((await state.endpoints.enable(caller.tenant, endpoint_id)).as_dict())


@router.post(
    "/api/webhooks/endpoints/{endpoint_id}/test",
    status_code=202,
    response_model=QueuedTestEventOut,
    responses=problems(401, 403, 404, 422),
)
async def test_webhook_endpoint(endpoint_id: EndpointId, caller: TenantAdmin, state: State) -> QueuedTestEventOut:
    """Queue a ``WebhookEndpointTest`` event for this endpoint only, delivered and logged like any other."""
    return QueuedTestEventOut.model_validate(await state.endpoints.send_test(caller.tenant, endpoint_id))


@router.get(
    "/api/webhooks/endpoints/{endpoint_id}/deliveries",
    response_model=DeliveryList,
    responses=problems(401, 403, 404, 422),
)
async def list_webhook_deliveries(
    endpoint_id: EndpointId,
    caller: TenantAdmin,
    state: State,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="a delivery id: page on from it")] = None,
) -> DeliveryList:
    """The endpoint's deliveries, newest first, each with every attempt (status code, error, duration)."""
    entries = await state.endpoints.deliveries(caller.tenant, endpoint_id, limit=limit, before=before)
    return DeliveryList(deliveries=[DeliveryOut.model_validate(e.as_dict()) for e in entries])


@router.post(
    "/api/webhooks/endpoints/{endpoint_id}/replay",
    status_code=202,
    response_model=ReplayOut,
    responses=problems(400, 401, 403, 404, 409, 413, 422),
)
async def replay_webhook_events(
    endpoint_id: EndpointId, body: DeliveryReplayRequest, caller: TenantAdmin, state: State
) -> ReplayOut:
    """Queue the tenant's events recorded in ``[since, until)`` again for this endpoint (its event-type
    filter applies), at most 31 days and 10,000 events per call."""
    queued = await state.endpoints.replay(caller.tenant, endpoint_id, body.model_dump(exclude_unset=True))
    return ReplayOut(queued=queued)


@router.get("/api/webhooks/secret", response_model=SecretOut, responses=problems(401, 403))
async def get_webhook_secret(caller: TenantAdmin, state: State) -> SecretOut:
    """The tenant's signing secret (``whsec_…``), made on first use; during a rotation, until when the
    previous one still signs."""
    return SecretOut.model_validate(await state.webhook_secrets.show(caller.tenant.id))


@router.post("/api/webhooks/secret/rotate", response_model=SecretOut, responses=problems(401, 403))
async def rotate_webhook_secret(caller: TenantAdmin, state: State) -> SecretOut:
    """A new signing secret; the previous one keeps signing beside it for 24 h (both signatures on every
    delivery), so receivers can switch at their own pace."""
    return SecretOut.model_validate(await state.webhook_secrets.rotate_and_show(caller.tenant.id, actor=caller.actor))
