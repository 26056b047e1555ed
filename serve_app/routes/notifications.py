"""``/api/notifications``: accept a notification, find the caller's messages, show, cancel or reschedule one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse

from engine.ids import parse_message_id
from engine.lifecycle import Cancelled, MessagePage, Rescheduled, RescheduleRequest
from engine.models import NotificationRequest
from engine.problems import ApiProblem
from engine.views import message_view
from serve_app.routes.deps import Reader, Sender, State
from serve_app.schemas.notifications import NotificationAccepted, NotificationSearch, NotificationView
from serve_app.schemas.problems import problems, state_conflict

router = APIRouter(tags=["notifications"])

MessageId = Annotated[str, Path(max_length=64, examples=["msg_0190b5a7c2f37d8e9a1b2c3d4e5f6a7b"])]

_ACCEPTED = {
    202: {
        "description": "Accepted (or the original answer, replayed, for a key already used with this body)",
        "headers": {
            "Idempotent-Replayed": {
                "description": "`true` when this answer replays an earlier request with the same key",
                "schema": {"type": "string", "enum": ["true"]},
            },
            "RateLimit-Policy": {
                "description": "the channel's quotas (IETF draft-ietf-httpapi-ratelimit-headers), when it has any",
                "schema": {"type": "string"},
            },
            "RateLimit": {"description": "what is left of each quota and when it resets", "schema": {"type": "string"}},
        },
    }
}


@router.post(
    "/api/notifications",
    status_code=202,
    response_model=NotificationAccepted,
    responses={**_ACCEPTED, **problems(400, 401, 403, 409, 413, 422, 429)},
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
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else dict(accepted.headers)
    return JSONResponse(accepted.body, status_code=accepted.status_code, headers=headers)


@router.get("/api/notifications/{message_id}", response_model=NotificationView, responses=problems(401, 403, 404, 422))
async def get_notification(message_id: MessageId, caller: Reader, state: State) -> NotificationView:
    """Status, attempts and events of one of the caller's messages; another tenant's is 404."""
    parsed = parse_message_id(message_id)
    row = await state.repo.message_view(caller.tenant.id, parsed) if parsed else None
    if row is None:
        raise ApiProblem(404, f"no notification {message_id!r}")
    return NotificationView.model_validate(message_view(row))


@router.get("/api/notifications", response_model=MessagePage, responses=problems(401, 403, 422))
async def search_notifications(
    query: Annotated[NotificationSearch, Query()], caller: Reader, state: State
) -> MessagePage:
    """The caller's messages, newest first, by status, channel, template, recipient (an email address or
    E.164 number, or `user_id`), tag, category and time of acceptance; a recipient's history in one call."""
    return await state.lifecycle.search.search(caller.tenant, query, cursor=query.cursor, limit=query.limit)


@router.delete(
    "/api/notifications/{message_id}",
    response_model=Cancelled,
    responses={**problems(401, 403, 404, 422), **state_conflict()},
)
async def cancel_notification(message_id: MessageId, caller: Sender, state: State) -> Cancelled:
    """Cancel a message that has not started sending (scheduled, queued or waiting for a retry): it is
    never sent. A second cancel answers the same; once sending has started, 409 with `current_status`."""
    return await state.lifecycle.scheduling.cancel(caller.tenant, message_id, actor=caller.actor)


@router.patch(
    "/api/notifications/{message_id}",
    response_model=Rescheduled,
    responses={**problems(400, 401, 403, 404, 413, 422), **state_conflict()},
)
async def reschedule_notification(
    message_id: MessageId, body: RescheduleRequest, caller: Sender, state: State
) -> Rescheduled:
    """Move a scheduled message's `schedule_at` (its TTL moves with it; a time in the past means now).
    One that is not scheduled, or already on its way to a sender, is 409 with `current_status`."""
    return await state.lifecycle.scheduling.reschedule(caller.tenant, message_id, body.schedule_at, actor=caller.actor)
