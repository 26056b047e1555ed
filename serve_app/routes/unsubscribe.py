"""``/u/{token}``: one-click unsubscribe (RFC 8058) from the links Herald puts in emails, and the rotation of
the tenant's key that signs them."""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from engine.problems import ApiProblem
from serve_app.routes.deps import OPEN, State, TenantAdmin
from serve_app.schemas.governance import RotatedUnsubscribeKey
from serve_app.schemas.problems import FRONT_DOOR_400, problems

router = APIRouter(tags=["links"])

Token = Annotated[str, Path(max_length=4096, description="a signed unsubscribe token")]
_PAGE = {200: {"description": "An HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}}


_PAGE_RESPONSES = {**_PAGE, **problems(404, 422), **FRONT_DOOR_400}


@router.post("/u/{token}", response_class=HTMLResponse, responses=_PAGE_RESPONSES, openapi_extra=OPEN)
async def unsubscribe(token: Token, state: State) -> HTMLResponse:
    """RFC 8058 one-click unsubscribe: the address joins the tenant's suppression list."""
    if not await state.tracking.unsubscribe(token):
        raise ApiProblem(404, "unknown unsubscribe link")
    return HTMLResponse("<p>You are unsubscribed. You will not receive these messages any more.</p>")


@router.get("/u/{token}", response_class=HTMLResponse, responses=_PAGE_RESPONSES, openapi_extra=OPEN)
async def unsubscribe_page(token: Token, state: State) -> HTMLResponse:
    """A confirmation page (mail scanners follow GET links, so only the POST unsubscribes)."""
    if await state.tracking.verify_unsubscribe(token) is None:
        raise ApiProblem(404, "unknown unsubscribe link")
    form = f'<form method="post" action="/u/{html.escape(token)}"><button>Unsubscribe</button></form>'
    return HTMLResponse(f"<p>Stop receiving these messages?</p>{form}")


@router.post("/api/unsubscribe/key/rotate", response_model=RotatedUnsubscribeKey, responses=problems(401, 403))
async def rotate_unsubscribe_key(caller: TenantAdmin, state: State) -> RotatedUnsubscribeKey:
    """Sign the tenant's unsubscribe links with a new key (senders use it from their next batch); links
    signed with the previous key keep working for ``HERALD_UNSUBSCRIBE_KEY_GRACE_SECONDS``, older ones stop."""
    rotated = await state.tracking.rotate_unsubscribe_key(caller.tenant, actor=caller.actor)
    return RotatedUnsubscribeKey(generation=rotated.generation, previous_expires_at=rotated.previous_expires_at)
