"""Tracked links: a tenant's shortlinks, and the redirect every tracked link goes through."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response

from engine.problems import ApiProblem
from engine.templating.pixel import PIXEL_HEADERS
from serve_app.routes.deps import OPEN, Reader, Sender, State
from serve_app.schemas.links import Shortlink, ShortlinkRequest
from serve_app.schemas.problems import FRONT_DOOR_400, problems

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
        **FRONT_DOOR_400,
    },
    openapi_extra=OPEN,
)
async def follow_link(token: Token, request: Request, state: State) -> RedirectResponse:
    """302 to the link's URL, recording the click (with the user agent and address that tell a person
    from a link scanner); a tampered or unknown token is 404."""
    url = await state.tracking.click(token, user_agent=request.headers.get("user-agent"), ip=client_ip(request))
    if url is None:
        raise ApiProblem(404, "unknown link")
    return RedirectResponse(url, status_code=302)


@router.get(
    "/t/o/{token}.gif",
    response_class=Response,
    responses={
        200: {"description": "A 1x1 transparent GIF, never cached", "content": {"image/gif": {}}},
        **problems(422),
        **FRONT_DOOR_400,
    },
    openapi_extra=OPEN,
)
async def open_pixel(token: Token, request: Request, state: State) -> Response:
    """The open pixel of tracked HTML email: records the open (first/last time, count, whether a person
    or a machine such as Apple's privacy proxy fetched it) and always answers the image."""
    image = await state.tracking.pixel(token, user_agent=request.headers.get("user-agent"), ip=client_ip(request))
    return Response(image, media_type="image/gif", headers=PIXEL_HEADERS)


def client_ip(request: Request) -> str | None:
    """Where the request came from: the first ``X-Forwarded-For`` hop behind a proxy, else the peer. Only
    used to tell machine opens and clicks from people's, never to authenticate."""
    forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
    return forwarded or (request.client.host if request.client else None)
