"""Tracked links: a tenant's shortlinks, and the redirect every tracked link goes through."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import RedirectResponse

from engine.problems import ApiProblem
from serve_app.routes.deps import OPEN, Reader, Sender, State
from serve_app.schemas.links import Shortlink, ShortlinkRequest
from serve_app.schemas.problems import problems

router = APIRouter(tags=["links"])

Token = Annotated[str, Path(max_length=4096, description="a signed link token")]


@router.post("/api/shortlinks", status_code=201, response_model=Shortlink, responses=problems(400, 401, 403, 413, 422))
async def create_shortlink(body: ShortlinkRequest, caller: Sender, state: State) -> Shortlink:
    """A tracked link of the tenant's (not tied to a message), with its own click count."""
    link = await state.tracking.create_shortlink(caller.tenant, body.url)
    return Shortlink.model_validate(link.as_dict())


@router.get("/api/shortlinks/{link_id}", response_model=Shortlink, responses=problems(401, 403, 404, 422))
async def get_shortlink(
    link_id: Annotated[str, Path(max_length=64, examples=["sl_0190b5a7c2f37d8e9a1b2c3d4e5f6a7b"])],
    caller: Reader,
    state: State,
) -> Shortlink:
    """One of the tenant's shortlinks with its click count."""
    link = await state.tracking.shortlink(caller.tenant, link_id)
    if link is None:
        raise ApiProblem(404, f"no shortlink {link_id!r}")
    return Shortlink.model_validate(link.as_dict())


@router.get(
    "/l/{token}",
    response_class=RedirectResponse,
    status_code=302,
    responses={
        302: {"description": "To the link's URL", "headers": {"Location": {"schema": {"type": "string"}}}},
        **problems(404, 422),
    },
    openapi_extra=OPEN,
)
async def follow_link(token: Token, state: State) -> RedirectResponse:
    """302 to the link's URL, recording the click; a tampered or unknown token is 404."""
    url = await state.tracking.click(token)
    if url is None:
        raise ApiProblem(404, "unknown link")
    return RedirectResponse(url, status_code=302)
