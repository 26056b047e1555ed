"""``/api/inbox``: a recipient's in-app messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class InboxItem(BaseModel):
    message_id: str
    title: str | None = None
    body: str
    data: dict[str, Any]
    category: str | None = None
    template_id: str | None = None
    locale: str | None = None
    created_at: datetime
    expires_at: datetime | None = None
    read: bool


class Inbox(BaseModel):
    user_id: str
    items: list[InboxItem]
