"""``/admin/audit`` (the platform: every tenant's records) and ``/api/audit`` (a tenant admin: its own)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from engine.lifecycle import AdminScope
from serve_app.routes.deps import Platform, State, TenantAdmin
from serve_app.schemas.governance import AuditPage, AuditQuery
from serve_app.schemas.problems import problems

router = APIRouter(tags=["audit"])


@router.get("/admin/audit", response_model=AuditPage, responses=problems(400, 401, 403, 422))
async def platform_audit(query: Annotated[AuditQuery, Query()], caller: Platform, state: State) -> AuditPage:
    """Audit records of every tenant and the platform, newest first: by ``tenant``, ``action`` (exact, or a
    prefix ending in ``*``: ``dlq.*``), ``actor``, ``after`` / ``before``; ``cursor`` and ``limit``."""
    scope = AdminScope.platform(caller.subject)
    return await state.audit.list(scope, query.filters(), cursor=query.cursor, limit=query.limit)


@router.get("/api/audit", response_model=AuditPage, responses=problems(400, 401, 403, 422))
async def tenant_audit(query: Annotated[AuditQuery, Query()], caller: TenantAdmin, state: State) -> AuditPage:
    """The tenant's own audit records, filtered as ``GET /admin/audit`` (naming another tenant is 403)."""
    scope = AdminScope.of_tenant(caller.tenant, caller.actor)
    return await state.audit.list(scope, query.filters(), cursor=query.cursor, limit=query.limit)
