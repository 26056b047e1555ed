"""Finding a tenant's messages: one ordered index range per filter (migration 0007), newest first, with
``(created_at, id)`` as the cursor. A tag search walks ``message_tags`` and joins the messages; every other
search walks ``messages`` through the index of its most selective filter (the planner's choice)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from .query import Conditions


@dataclass(frozen=True, slots=True)
class MessageQuery:
    tenant_id: uuid.UUID
    status: str | None = None
    channel: str | None = None
    template_id: str | None = None
    template_version: int | None = None
    email: str | None = None  #: lower-cased
    phone: str | None = None  #: E.164
    user_id: str | None = None
    tag: str | None = None
    category: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: uuid.UUID
    status: str
    channel: str
    template_id: str
    template_version: int
    locale: str
    priority: str
    to: dict[str, Any]
    category: str | None
    tags: list[str] | None
    provider: str | None
    attempts: int
    schedule_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


_COLUMNS = """m.id, m.status, m.channel, m.template_id, m.template_version, m.locale, m.priority, m."to" AS to,
coalesce(m.category, m.metadata->>'category') AS category, m.metadata->'tags' AS tags, m.provider, m.attempts,
m.schedule_at, m.created_at, m.updated_at, m.sent_at"""


def _message_conditions(c: Conditions, q: MessageQuery) -> None:
    """The filters on the message row itself (all but tenant, time and tag, which the driving index takes)."""
    if q.status is not None:
        c.where("m.status = {}", q.status)
    if q.channel is not None:
        c.where("m.channel = {}", q.channel)
    if q.template_id is not None:
        c.where("m.template_id = {}", q.template_id)
    if q.template_version is not None:
        c.where("m.template_version = {}", q.template_version)
    if q.email is not None:
        c.where("m.\"to\" ? 'email' AND lower(m.\"to\"->>'email') = {}", q.email)
    if q.phone is not None:
        c.where("m.\"to\" ? 'phone' AND m.\"to\"->>'phone' = {}", q.phone)
    if q.user_id is not None:
        c.where("m.\"to\" ? 'user_id' AND m.\"to\"->>'user_id' = {}", q.user_id)
    if q.category is not None:
        c.where("coalesce(m.category, m.metadata->>'category') = {}", q.category)


def search_statement(q: MessageQuery, after: tuple[datetime, uuid.UUID] | None, limit: int) -> tuple[str, list[Any]]:
    """The statement of one page, newest first (exposed so tests can EXPLAIN it)."""
    c = Conditions()
    # The driving rows: their tenant, time range and cursor are the index range.
    by_tag = q.tag is not None
    at, key = ("t.created_at", "t.message_id") if by_tag else ("m.created_at", "m.id")
    if by_tag:
        c.where("t.tenant_id = {} AND t.tag = {}", q.tenant_id, q.tag)
        c.where("m.tenant_id = t.tenant_id")
    else:
        c.where("m.tenant_id = {}", q.tenant_id)
    if q.created_after is not None:
        c.where(f"{at} >= {{}}", q.created_after)
    if q.created_before is not None:
        c.where(f"{at} < {{}}", q.created_before)
    if after is not None:
        c.where(f"({at}, {key}) < ({{}}, {{}})", *after)
    _message_conditions(c, q)
    source = "message_tags t JOIN messages m ON m.id = t.message_id" if by_tag else "messages m"
    sql = f"SELECT {_COLUMNS} FROM {source} WHERE {c.sql()} ORDER BY {at} DESC, {key} DESC LIMIT {c.param(limit)}"
    return sql, c.args


class SearchStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def page(self, q: MessageQuery, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[MessageRow]:
        sql, args = search_statement(q, after, limit)
        return [MessageRow(**dict(r)) for r in await self.pool.fetch(sql, *args)]
