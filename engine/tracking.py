"""Our own tracking: opens (the pixel), clicks on links inside messages, a tenant's shortlinks, and
one-click unsubscribes.

Tokens are signed and stateless (made while rendering, no write per render). An open or a click is one
statement: the message's engagement counters (first and last time, count, how many looked human), a
``NotificationOpened`` / ``NotificationClicked`` event (every click; the first human and the first
machine open) and the analytics rollups. Machine opens and clicks (Apple's privacy proxy, link scanners)
are flagged and kept out of the human rates (see :mod:`engine.feedback.agents`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.feedback.agents import classify_agent
from engine.ids import new_id, parse_message_id
from engine.models import Tenant
from engine.states import EventType
from engine.storage.feedback_sql import TRACK
from engine.templating.links import click_url, sign_link, verify_link, verify_open, verify_unsubscribe
from engine.templating.pixel import TRANSPARENT_GIF

log = logging.getLogger(__name__)

SHORTLINK_PREFIX = "sl_"

_UNSUBSCRIBE = """
INSERT INTO suppressions (id, tenant_id, kind, address, category, reason)
SELECT $1, t.id, $2, $3, $5, 'unsubscribed' FROM tenants t WHERE t.slug = $4
ON CONFLICT (tenant_id, kind, address, category) DO NOTHING
"""

_SHORTLINK_CLICK = """
UPDATE shortlinks s SET clicks = s.clicks + 1
FROM tenants t
WHERE s.id = $1 AND t.id = s.tenant_id AND t.slug = $2
"""


@dataclass(frozen=True, slots=True)
class Shortlink:
    id: uuid.UUID
    url: str
    short_url: str
    clicks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": SHORTLINK_PREFIX + self.id.hex,
            "url": self.url,
            "short_url": self.short_url,
            "clicks": self.clicks,
        }


class Tracking:
    def __init__(self, pool: asyncpg.Pool, *, secret: str, base_url: str) -> None:
        self.pool = pool
        self.secret = secret
        self.base_url = base_url

    async def create_shortlink(self, tenant: Tenant, url: str) -> Shortlink:
        link_id = new_id()
        await self.pool.execute(
            "INSERT INTO shortlinks (id, tenant_id, url) VALUES ($1, $2, $3)", link_id, tenant.id, url
        )
        token = sign_link(self.secret, tenant.slug, SHORTLINK_PREFIX + link_id.hex, url)
        return Shortlink(link_id, url, click_url(self.base_url, token))

    async def shortlink(self, tenant: Tenant, public_id: str) -> Shortlink | None:
        try:
            link_id = uuid.UUID(hex=public_id.removeprefix(SHORTLINK_PREFIX))
        except ValueError:
            return None
        row = await self.pool.fetchrow(
            "SELECT url, clicks FROM shortlinks WHERE id = $1 AND tenant_id = $2", link_id, tenant.id
        )
        if row is None:
            return None
        token = sign_link(self.secret, tenant.slug, SHORTLINK_PREFIX + link_id.hex, row["url"])
        return Shortlink(link_id, row["url"], click_url(self.base_url, token), row["clicks"])

    async def unsubscribe(self, token: str) -> bool:
        """Put the token's address on its tenant's suppression list (RFC 8058 one-click) for the category
        the message was sent in (every category for tokens that name none); False if invalid."""
        target = verify_unsubscribe(self.secret, token)
        if target is None:
            return False
        kind = "email" if "@" in target.address else "phone"
        address = target.address.lower() if kind == "email" else target.address
        result = await self.pool.execute(_UNSUBSCRIBE, new_id(), kind, address, target.tenant, target.category)
        return result.endswith(" 1") or result.endswith(" 0")

    async def open(self, token: str, *, user_agent: str | None = None, ip: str | None = None) -> bool:
        """Record an open of the pixel's message; False for a tampered or unknown token (the route serves
        the same image either way)."""
        target = verify_open(self.secret, token)
        message_id = parse_message_id(target.message_id) if target else None
        if target is None or message_id is None:
            return False
        return await self._track(message_id, target.tenant, "open", user_agent, ip, {})

    async def pixel(self, token: str, *, user_agent: str | None = None, ip: str | None = None) -> bytes:
        """``GET /t/o/<token>.gif``: record the open when the token is genuine, and the image in every case
        (a tampered token, or a database that cannot be reached, still gets the pixel: a broken image in
        a reader's mail is worse than an open not counted)."""
        try:
            await self.open(token, user_agent=user_agent, ip=ip)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            log.warning("an open was not recorded: %s", type(err).__name__)
        return TRANSPARENT_GIF

    async def _track(
        self,
        message_id: uuid.UUID,
        tenant: str,
        kind: str,
        user_agent: str | None,
        ip: str | None,
        meta: dict[str, Any],
    ) -> bool:
        verdict = classify_agent(user_agent, ip)
        event = EventType.OPENED if kind == "open" else EventType.CLICKED
        meta = {**meta, "source": "herald", "agent": verdict.agent.value, "machine": verdict.machine}
        found = await self.pool.fetchval(
            TRACK,
            message_id,
            tenant,
            kind,
            not verdict.machine,
            verdict.agent.value,
            new_id(),
            event.value,
            meta,  # the pool's jsonb codec encodes it
            kind == "click",
        )
        return bool(found)

    async def click(self, token: str, *, user_agent: str | None = None, ip: str | None = None) -> str | None:
        """Record the click; the URL to redirect to, or None for a tampered or unknown token."""
        target = verify_link(self.secret, token)
        if target is None:
            return None
        if target.message_id.startswith(SHORTLINK_PREFIX):
            try:
                link_id = uuid.UUID(hex=target.message_id.removeprefix(SHORTLINK_PREFIX))
            except ValueError:
                return None
            result = await self.pool.execute(_SHORTLINK_CLICK, link_id, target.tenant)
        else:
            message_id = parse_message_id(target.message_id)
            if message_id is None:
                return None
            meta = {"url": target.url, "link_index": target.index}
            found = await self._track(message_id, target.tenant, "click", user_agent, ip, meta)
            return target.url if found else None
        return target.url if result.endswith(" 1") else None
