"""``/api/inbox``: a recipient's in-app messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from serve_app.routes.deps import Reader, State
from serve_app.schemas.inbox import Inbox
from serve_app.schemas.problems import problems

router = APIRouter(tags=["inbox"])


@router.get("/api/inbox/{user_id}", response_model=Inbox, responses=problems(401, 403, 422))
async def inbox(
    user_id: Annotated[str, Path(min_length=1, max_length=255, description="the recipient's id (`to.user_id`)")],
    caller: Reader,
    state: State,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Inbox:
    """The recipient's in-app messages, newest first (expired ones hidden)."""
    items = await state.repo.inbox(caller.tenant.id, user_id, limit)
    return Inbox.model_validate({"user_id": user_id, "items": items})
