"""``/api/keys``: a tenant admin's API keys (create, list with last use, revoke)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from serve_app.routes.deps import State, TenantAdmin
from serve_app.schemas.governance import CreatedKey, CreateKeyRequest, KeyPage, KeyView, PageQuery
from serve_app.schemas.problems import problems

router = APIRouter(tags=["api keys"])

KeyId = Annotated[str, Path(max_length=64, examples=["hk_live_0123456789abcdef"])]


@router.post("/api/keys", status_code=201, response_model=CreatedKey, responses=problems(400, 401, 403, 413, 422))
async def create_key(body: CreateKeyRequest, caller: TenantAdmin, state: State) -> CreatedKey:
    """A new key for the tenant, with the scopes named (``admin`` includes the others); the whole key is in
    this answer only. ``test_mode``: its messages go to the sink provider and are marked ``test_mode``."""
    return await state.keys.create(caller.tenant, body, actor=caller.actor)


@router.get("/api/keys", response_model=KeyPage, responses=problems(400, 401, 403, 422))
async def list_keys(query: Annotated[PageQuery, Query()], caller: TenantAdmin, state: State) -> KeyPage:
    """The tenant's keys, newest first, revoked ones included, with last use (recorded every few seconds)."""
    return await state.keys.list(caller.tenant, cursor=query.cursor, limit=query.limit)


@router.delete("/api/keys/{key_id}", response_model=KeyView, responses=problems(401, 403, 404, 422))
async def revoke_key(key_id: KeyId, caller: TenantAdmin, state: State) -> KeyView:
    """Revoke one of the tenant's keys: refused on every replica within a second. Another tenant's or an
    unknown id is 404; revoking again answers the same."""
    return await state.keys.revoke(caller.tenant, key_id, actor=caller.actor)
