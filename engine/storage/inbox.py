"""The Postgres adapter of the in-app driver's :class:`~engine.delivery.InboxStore` port, and the inbox
reads of the API. The composition root builds it and hands it to the in-app driver.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from engine.delivery import InboxItem
from engine.ids import new_id

_PUT = """
INSERT INTO inbox_items (id, tenant_id, user_id, message_id, title, body, data, category, template_id,
                         locale, created_at, expires_at)
SELECT u.id, t.id, u.user_id, u.message_id, u.title, u.body, u.data::jsonb, u.category, u.template_id,
       u.locale, u.created_at, u.expires_at
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[])
     AS u(id, tenant, user_id, message_id, title, body, data, category, template_id, locale, created_at, expires_at)
JOIN tenants t ON t.slug = u.tenant
ON CONFLICT (tenant_id, message_id) DO NOTHING
"""

_LIST = """
SELECT message_id, title, body, data, category, template_id, locale, created_at, expires_at, read_at
FROM inbox_items
WHERE tenant_id = $1 AND user_id = $2 AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at DESC
LIMIT $3
"""


class PostgresInboxStore:
    """One INSERT per batch; a message already stored is ignored (redeliveries show nothing twice)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
        return self._pool

    async def put(self, items: Sequence[InboxItem]) -> None:
        """Raises: OSError, TimeoutError when the database cannot be reached (the port's contract)."""
        if not items:
            return
        try:
            pool = await self._get_pool()
            await pool.execute(
                _PUT,
                [new_id() for _ in items],
                [i.tenant for i in items],
                [i.user_id for i in items],
                [i.message_id for i in items],
                [i.title for i in items],
                [i.body for i in items],
                [json.dumps(dict(i.data)) for i in items],
                [i.category for i in items],
                [i.template_id for i in items],
                [i.locale for i in items],
                [i.created_at for i in items],
                [i.expires_at for i in items],
            )
        except (asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as err:
            raise ConnectionRefusedError(f"inbox database refused the connection ({type(err).__name__})") from err
        except asyncpg.ConnectionDoesNotExistError as err:
            raise ConnectionResetError("inbox database connection lost") from err

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()


async def list_inbox(pool: asyncpg.Pool, tenant_id: uuid.UUID, user_id: str, limit: int = 50) -> list[dict[str, Any]]:
    rows = await pool.fetch(_LIST, tenant_id, user_id, limit)
    return [
        {
            "message_id": r["message_id"],
            "title": r["title"],
            "body": r["body"],
            "data": r["data"],
            "category": r["category"],
            "template_id": r["template_id"],
            "locale": r["locale"],
            "created_at": r["created_at"].isoformat(),
            "expires_at": r["expires_at"].isoformat() if r["expires_at"] else None,
            "read": r["read_at"] is not None,
        }
        for r in rows
    ]
