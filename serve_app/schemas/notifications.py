"""``/api/notifications``: what an accepted notification answers and what a message shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.channels import Channel, Priority
from engine.lifecycle import SearchFilters
from engine.lifecycle.search import MAX_PAGE
from engine.states import Status


class NotificationAccepted(BaseModel):
    """202: the message is stored and owned by Herald from now on."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "message_id": "msg_0190b5a7c2f37d8e9a1b2c3d4e5f6a7b",
                    "status": "queued",
                    "locale": "en-GB",
                    "template": "otp_login:v3",
                }
            ]
        }
    )

    message_id: str = Field(pattern=r"^msg_[0-9a-f]{32}$")
    status: Status
    locale: str  #: the locale the message was pinned to
    template: str  #: the template version it was pinned to (``id:vN``)


class AttemptError(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: str = Field(alias="class", description="failure class: retryable, throttled, provider_down, ...")
    code: str | None = None
    detail: str | None = None


class Attempt(BaseModel):
    attempt: int
    provider: str | None = None
    provider_message_id: str | None = None
    outcome: str
    error: AttemptError | None = None
    cost_usd: float | None = None
    started_at: datetime
    finished_at: datetime | None = None


class Event(BaseModel):
    type: str = Field(description="NotificationAccepted, NotificationSent, NotificationClicked, ...")
    at: datetime = Field(description="when Herald recorded it")
    occurred_at: datetime | None = Field(None, description="when it happened (provider time for provider events)")
    meta: dict[str, Any] | None = None


class NotificationView(BaseModel):
    """One of the caller's messages: status, pinned template and locale, attempts and events."""

    message_id: str
    status: Status
    channel: Channel
    template_id: str = Field(description="the pinned version, ``id:vN``")
    locale: str
    requested_locale: str | None = None
    priority: Priority
    provider: str | None = None
    provider_message_id: str | None = None
    attempt_count: int
    schedule_at: datetime | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None = None
    deduplicated_of: str | None = Field(
        None,
        description="status deduplicated: the earlier message with the same content to the same recipient "
        "inside the category's dedupe window (it was sent instead of this one)",
    )
    attempts: list[Attempt]
    events: list[Event]


class NotificationSearch(SearchFilters):
    """``GET /api/notifications``: every filter narrows (a recipient's history: ``recipient`` or ``user_id``
    alone); pass a page's ``next_cursor`` back as ``cursor``, with the same filters, for the next one."""

    cursor: str | None = Field(None, max_length=200, description="the previous page's next_cursor")
    limit: int = Field(50, ge=1, le=MAX_PAGE, description="messages per page")
