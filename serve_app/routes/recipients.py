"""``/api/recipients/{user_id}/preferences`` and ``/api/suppressions``: what a tenant's recipients asked for,
and the addresses it must not send to (by category)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from serve_app.routes.deps import Reader, Sender, State, TenantAdmin
from serve_app.schemas.governance import (
    PreferencesBody,
    PreferencesView,
    SuppressionEntry,
    SuppressionPage,
    SuppressionQuery,
    SuppressionView,
)
from serve_app.schemas.problems import problems

router = APIRouter(tags=["recipients"])

UserId = Annotated[str, Path(min_length=1, max_length=255, examples=["user_42"])]
SuppressionId = Annotated[str, Path(max_length=64, examples=["sup_0190b5a7c2f37d8e9a1b2c3d4e5f6a7b"])]


@router.put(
    "/api/recipients/{user_id}/preferences",
    response_model=PreferencesView,
    responses=problems(400, 401, 403, 413, 422),
)
async def put_preferences(user_id: UserId, body: PreferencesBody, caller: Sender, state: State) -> PreferencesView:
    """Replace the preferences of the recipient ``to.user_id``: per category and channel, ``false`` opts out
    (later messages end ``suppressed`` with the reason). A required category cannot be opted out of (422
    naming it). A change is an audit record (``preferences.set``, before and after)."""
    return await state.recipients.put_preferences(caller.tenant, user_id, body, actor=caller.actor)


@router.get(
    "/api/recipients/{user_id}/preferences", response_model=PreferencesView, responses=problems(400, 401, 403, 422)
)
async def get_preferences(user_id: UserId, caller: Reader, state: State) -> PreferencesView:
    """The recipient's preferences (none stored: everything allowed) and the tenant's required categories."""
    return await state.recipients.get_preferences(caller.tenant, user_id)


@router.get("/api/suppressions", response_model=SuppressionPage, responses=problems(400, 401, 403, 422))
async def list_suppressions(
    query: Annotated[SuppressionQuery, Query()], caller: Reader, state: State
) -> SuppressionPage:
    """The tenant's suppression list, newest first (by ``channel``, and ``address`` with it)."""
    return await state.recipients.list_suppressions(
        caller.tenant, channel=query.channel, address=query.address, cursor=query.cursor, limit=query.limit
    )


@router.post(
    "/api/suppressions",
    status_code=201,
    response_model=SuppressionView,
    responses={
        200: {"description": "The same entry was already on the list", "model": SuppressionView},
        **problems(400, 401, 403, 413, 422),
    },
)
async def add_suppression(body: SuppressionEntry, caller: TenantAdmin, state: State) -> JSONResponse:
    """Stop sending to an address: in one ``category``, or every category when none is named (a required
    category only so: 422 naming ``category``). The same entry twice is stored once (200)."""
    view, created = await state.recipients.add_suppression(caller.tenant, body, actor=caller.actor)
    return JSONResponse(view.model_dump(mode="json"), status_code=201 if created else 200)


@router.delete(
    "/api/suppressions/{suppression_id}", response_model=SuppressionView, responses=problems(401, 403, 404, 422)
)
async def remove_suppression(suppression_id: SuppressionId, caller: TenantAdmin, state: State) -> SuppressionView:
    """Take an entry off the list; another tenant's or an unknown id is 404."""
    return await state.recipients.remove_suppression(caller.tenant, suppression_id, actor=caller.actor)
