"""Finding a tenant's messages (``GET /api/notifications``): filters by status, channel, template,
recipient (address or ``user_id``), tag, category and time of acceptance, newest first, cursor-paged.
A recipient's whole history is one call: ``recipient=`` (an email address or E.164 number) or ``user_id=``.
Every filter is an index range that starts with the tenant (migration 0007)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.channels import Channel
from engine.ids import format_message_id
from engine.lifecycle.cursor import Position, decode_cursor, encode_cursor
from engine.models import E164, TEMPLATE_REF, FieldError, Tenant
from engine.problems import ApiProblem, from_pydantic
from engine.states import Status
from engine.storage.search_store import MessageQuery, MessageRow, SearchStore
from engine.timestamps import Instant

MAX_PAGE = 200
_CURSOR_KIND = "msg"


class SearchFilters(BaseModel):
    """Every field narrows (omitted: any)."""

    model_config = ConfigDict(extra="forbid")

    status: Status | None = None
    channel: Channel | None = None
    template_id: str | None = Field(None, max_length=110, description="otp_login (any version) or otp_login:v3")
    recipient: str | None = Field(None, max_length=320, description="an email address or an E.164 phone number")
    user_id: str | None = Field(None, min_length=1, max_length=255, description="to.user_id")
    tag: str | None = Field(None, min_length=1, max_length=128, description="one of metadata.tags")
    category: str | None = Field(None, min_length=1, max_length=64)
    created_after: Instant | None = Field(None, description="accepted at or after (inclusive)")
    created_before: Instant | None = Field(None, description="accepted before (exclusive)")

    @field_validator("template_id")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and not TEMPLATE_REF.match(value):
            raise ValueError("must look like 'otp_login' or 'otp_login:v3'")
        return value

    @field_validator("recipient")
    @classmethod
    def _recipient(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "@" in value:
            local, _, domain = value.strip().rpartition("@")
            if not local or "." not in domain:
                raise ValueError("not an email address")
            return value.strip().lower()
        compact = re.sub(r"[\s().-]", "", value)
        if value.startswith(" ") and E164.match("+" + compact):
            raise ValueError("the + reached us as a space: send it as %2B in a query string")
        if not E164.match(compact):
            raise ValueError("an email address or an E.164 number such as +447700900123 (user ids: user_id)")
        return compact


class MessageSummary(BaseModel):
    message_id: str
    status: str
    channel: str
    template_id: str
    locale: str
    priority: str
    to: dict[str, Any]
    category: str | None
    tags: list[str]
    provider: str | None
    attempt_count: int
    schedule_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


class MessagePage(BaseModel):
    """Newest first; pass ``next_cursor`` back as ``cursor`` (with the same filters) for the next page."""

    items: list[MessageSummary]
    next_cursor: str | None = None


class MessageSearch:
    def __init__(self, store: SearchStore) -> None:
        self.store = store

    async def search(
        self,
        tenant: Tenant,
        filters: SearchFilters | Mapping[str, Any] | None = None,
        *,
        cursor: str | None = None,
        limit: int = 50,
    ) -> MessagePage:
        """Raises: ApiProblem 422 naming the query parameter at fault."""
        if not 1 <= limit <= MAX_PAGE:
            raise ApiProblem(422, "limit out of range", errors=[FieldError(("query", "limit"), f"1 to {MAX_PAGE}")])
        f = _filters(filters)
        after = decode_cursor(_CURSOR_KIND, cursor)
        template_id, _, version = (f.template_id or "").partition(":v")
        is_email = f.recipient is not None and "@" in f.recipient
        query = MessageQuery(
            tenant_id=tenant.id,
            status=f.status.value if f.status else None,
            channel=f.channel.value if f.channel else None,
            template_id=template_id or None,
            template_version=int(version) if version else None,
            email=f.recipient if is_email else None,
            phone=f.recipient if f.recipient is not None and not is_email else None,
            user_id=f.user_id,
            tag=f.tag,
            category=f.category,
            created_after=f.created_after,
            created_before=f.created_before,
        )
        rows = await self.store.page(query, (after.at, after.id) if after else None, limit + 1)
        last = rows[limit - 1] if len(rows) > limit else None
        return MessagePage(
            items=[_summary(r) for r in rows[:limit]],
            next_cursor=encode_cursor(_CURSOR_KIND, Position(last.created_at, last.id)) if last else None,
        )


def _filters(value: SearchFilters | Mapping[str, Any] | None) -> SearchFilters:
    if isinstance(value, SearchFilters):
        return value
    try:
        return SearchFilters.model_validate(dict(value or {}))
    except ValidationError as err:
        errors = from_pydantic(err.errors(include_url=False), prefix="query")
        raise ApiProblem(422, "the search is not valid", errors=errors) from None


def _summary(r: MessageRow) -> MessageSummary:
    tags = r.tags if isinstance(r.tags, list) else []
    return MessageSummary(
        message_id=format_message_id(r.id),
        status=r.status,
        channel=r.channel,
        template_id=f"{r.template_id}:v{r.template_version}",
        locale=r.locale,
        priority=r.priority,
        to=r.to,
        category=r.category,
        tags=[str(t) for t in tags],
        provider=r.provider,
        attempt_count=r.attempts,
        schedule_at=r.schedule_at,
        created_at=r.created_at,
        updated_at=r.updated_at,
        sent_at=r.sent_at,
    )
