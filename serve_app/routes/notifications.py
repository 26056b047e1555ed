"""``/api/notifications``: accept a notification, show one of the caller's messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse

from engine.ids import parse_message_id
from engine.models import NotificationRequest
from engine.problems import ApiProblem
from engine.views import message_view
from serve_app.routes.deps import Reader, Sender, State
from serve_app.schemas.notifications import NotificationAccepted, NotificationView
from serve_app.schemas.problems import problems

router = APIRouter(tags=["notifications"])

_ACCEPTED = {
    202: {
        "description": "Accepted (or the original answer, replayed, for a key already used with this body)",
        "headers": {
            "Idempotent-Replayed": {
                "description": "`true` when this answer replays an earlier request with the same key",
                "schema": {"type": "string", "enum": ["true"]},
            }
        },
    }
}


@router.post(
    "/api/notifications",
    status_code=202,
    response_model=NotificationAccepted,
    responses={**_ACCEPTED, **problems(400, 401, 403, 409, 413, 422)},
)
async def create_notification(
    body: NotificationRequest,
    caller: Sender,
    state: State,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="required here or as the body's `idempotency_key` (1-255 characters)",
        ),
    ] = None,
) -> JSONResponse:
    """Accept one notification (202); a replay of an idempotency key answers the original response."""
    accepted = await state.intake.submit(caller.principal, body, idempotency_key)
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else {}
    return JSONResponse(accepted.body, status_code=accepted.status_code, headers=headers)


@router.get("/api/notifications/{message_id}", response_model=NotificationView, responses=problems(401, 403, 404, 422))
async def get_notification(
    message_id: Annotated[str, Path(max_length=64, examples=["msg_0190b5a7c2f37d8e9a1b2c3d4e5f6a7b"])],
    caller: Reader,
    state: State,
) -> NotificationView:
    """Status, attempts and events of one of the caller's messages; another tenant's is 404."""
    parsed = parse_message_id(message_id)
    row = await state.repo.message_view(caller.tenant.id, parsed) if parsed else None
    if row is None:
        raise ApiProblem(404, f"no notification {message_id!r}")
    return NotificationView.model_validate(message_view(row))
