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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.feedback.agents import classify_agent
from engine.ids import new_id, parse_message_id
from engine.models import Tenant
from engine.states import EventType
from engine.storage.feedback_sql import TRACK
from engine.templating.links import (
    UnsubscribeTarget,
    click_url,
    sign_link,
    unsubscribe_signer,
    verify_link,
    verify_open,
    verify_unsubscribe,
)
from engine.templating.pixel import TRANSPARENT_GIF

log = logging.getLogger(__name__)

SHORTLINK_PREFIX = "sl_"

_UNSUBSCRIBE = """
INSERT INTO suppressions (id, tenant_id, kind, address, category, reason)
SELECT $1, t.id, $2, $3, $5, 'unsubscribed' FROM tenants t WHERE t.slug = $4
ON CONFLICT (tenant_id, kind, address, category) DO NOTHING
"""

_UNSUBSCRIBE_GENERATIONS = """
SELECT unsubscribe_generation AS current, coalesce(unsubscribe_previous_until > now(), false) AS previous
FROM tenants WHERE slug = $1
"""
_ROTATE = """
WITH t AS (
    UPDATE tenants SET unsubscribe_generation = unsubscribe_generation + 1,
                       unsubscribe_previous_until = now() + make_interval(secs => $2)
    WHERE id = $1
    RETURNING id, unsubscribe_generation, unsubscribe_previous_until
), a AS (
    INSERT INTO audit_log (tenant_id, actor, action, subject, detail)
    SELECT t.id, $3, 'unsubscribe_key.rotate', NULL, jsonb_build_object('generation', t.unsubscribe_generation)
    FROM t
)
SELECT unsubscribe_generation, unsubscribe_previous_until FROM t
"""
#: The suppression category of an unsubscribe from a required category's message: everything else.
_NON_REQUIRED = "*non_required"

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


@dataclass(frozen=True, slots=True)
class RotatedKey:
    generation: int
    previous_expires_at: datetime


class Tracking:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        secret: str,
        base_url: str,
        tenants: Callable[[str], Awaitable[Tenant | None]] | None = None,
        unsubscribe_grace_s: float = 90 * 24 * 3600,
    ) -> None:
        """``tenants``: the tenant lookup (its required categories); ``unsubscribe_grace_s``: how long links
        signed with a tenant's previous unsubscribe key keep working after a rotation."""
        self.pool = pool
        self.secret = secret
        self.base_url = base_url
        self.tenants = tenants
        self.unsubscribe_grace_s = unsubscribe_grace_s

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

    async def verify_unsubscribe(self, token: str) -> UnsubscribeTarget | None:
        """The target of a genuine unsubscribe token signed with its tenant's current key, or the previous
        one inside the grace period after a rotation; None otherwise."""
        signer = unsubscribe_signer(token)
        if signer is None:
            return None
        row = await self.pool.fetchrow(_UNSUBSCRIBE_GENERATIONS, signer[0])
        if row is None:
            return None
        accepted = {row["current"], row["current"] - 1} if row["previous"] else {row["current"]}
        return verify_unsubscribe(self.secret, token, generations=accepted)

    async def unsubscribe(self, token: str) -> bool:
        """Put the token's address on its tenant's suppression list (RFC 8058 one-click) for the category
        the message was sent in (every category for tokens that name none; every category the tenant does
        not require for a message of a required one, which keeps flowing); False if invalid."""
        target = await self.verify_unsubscribe(token)
        if target is None:
            return False
        kind = "email" if "@" in target.address else "phone"
        address = target.address.lower() if kind == "email" else target.address
        category = target.category
        tenant = await self.tenants(target.tenant) if self.tenants is not None else None
        if tenant is not None and tenant.config.preferences.is_required(category):
            category = _NON_REQUIRED
        result = await self.pool.execute(_UNSUBSCRIBE, new_id(), kind, address, target.tenant, category)
        return result.endswith(" 1") or result.endswith(" 0")

    async def rotate_unsubscribe_key(self, tenant: Tenant, *, actor: str) -> RotatedKey:
        """Sign the tenant's unsubscribe links with a new key from now on (senders on their next batch);
        links signed with the previous one keep working for the grace period, older ones stop."""
        row = await self.pool.fetchrow(_ROTATE, tenant.id, float(self.unsubscribe_grace_s), actor)
        assert row is not None
        return RotatedKey(row["unsubscribe_generation"], row["unsubscribe_previous_until"])

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
