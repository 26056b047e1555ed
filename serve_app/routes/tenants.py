"""``/admin/tenants`` (the platform operator) and ``/api/tenant`` (a tenant admin, on its own tenant).

Every route is one call to :class:`~engine.tenant_service.TenantService`; a PATCH body is a JSON merge
patch (RFC 7396) of the tenant's view, and ``If-Match`` (the ``config_version`` as an ETag) makes it safe
against a concurrent change (412).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response

from engine.auth import PLATFORM_SUBJECT
from engine.tenant_service import SLUG_PATTERN, CreateTenantRequest, TenantPage, TenantPatch, TenantView
from serve_app.routes.deps import Platform, State, TenantAdmin
from serve_app.schemas.problems import problems

router = APIRouter(tags=["tenants"])

Slug = Annotated[str, Path(pattern=SLUG_PATTERN, examples=["t_001"])]
IfMatch = Annotated[str | None, Header(description='the `config_version` last read, as an ETag ("7")')]


def _tagged(view: TenantView, response: Response) -> TenantView:
    response.headers["ETag"] = view.etag
    return view


@router.post(
    "/admin/tenants", status_code=201, response_model=TenantView, responses=problems(400, 401, 403, 409, 413, 422)
)
async def create_tenant(body: CreateTenantRequest, _: Platform, state: State, response: Response) -> TenantView:
    """(platform) A new tenant with its config document (omitted keys take their defaults)."""
    view = await state.tenants.create(body.model_dump(exclude_unset=True), actor=PLATFORM_SUBJECT)
    return _tagged(view, response)


@router.get("/admin/tenants", response_model=TenantPage, responses=problems(401, 403, 422))
async def list_tenants(
    _: Platform,
    state: State,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TenantPage:
    """(platform) Tenants in slug order, a page at a time."""
    return await state.tenants.list(cursor=cursor, limit=limit)


@router.get("/admin/tenants/{slug}", response_model=TenantView, responses=problems(401, 403, 404, 422))
async def get_tenant(slug: Slug, _: Platform, state: State, response: Response) -> TenantView:
    """(platform) One tenant's view and config document."""
    return _tagged(await state.tenants.get(slug), response)


@router.patch("/admin/tenants/{slug}", response_model=TenantView, responses=problems(400, 401, 403, 404, 412, 413, 422))
async def patch_tenant(
    slug: Slug, body: TenantPatch, _: Platform, state: State, response: Response, if_match: IfMatch = None
) -> TenantView:
    """(platform) Merge-patch any key of a tenant; audit record with before and after."""
    patch = body.model_dump(exclude_unset=True)
    view = await state.tenants.patch(slug, patch, actor=PLATFORM_SUBJECT, if_match=if_match)
    return _tagged(view, response)


@router.get("/api/tenant", response_model=TenantView, responses=problems(401, 403, 422))
async def get_own_tenant(caller: TenantAdmin, state: State, response: Response) -> TenantView:
    """The caller's tenant, with the config keys it may change (`editable`)."""
    return _tagged(await state.tenants.get_own(caller.tenant.slug), response)


@router.patch("/api/tenant", response_model=TenantView, responses=problems(400, 401, 403, 412, 413, 422))
async def patch_own_tenant(
    body: TenantPatch, caller: TenantAdmin, state: State, response: Response, if_match: IfMatch = None
) -> TenantView:
    """Merge-patch the caller's own tenant: only the keys the platform lets tenants change (403 otherwise)."""
    patch = body.model_dump(exclude_unset=True)
    view = await state.tenants.patch_own(caller.tenant.slug, patch, actor=caller.actor, if_match=if_match)
    return _tagged(view, response)
