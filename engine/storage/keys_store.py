"""``api_keys``: tenants' API keys (the secret only as a keyed hash), and the revocation version.

A revocation bumps ``api_key_state.version`` and stamps the key with it in one transaction; the state
row's lock orders revocations, so a replica that has read version N has seen every revocation up to N
and needs only ``revoked_version > N`` to catch up (one statement, usually returning no key).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

_COLUMNS = """k.id, k.tenant_id, t.slug AS tenant, k.prefix, k.secret_hash, k.name, k.scopes, k.test_mode,
    k.created_by, k.created_at, k.expires_at, k.last_used_at, k.revoked_at"""
_INSERT = """
INSERT INTO api_keys (id, tenant_id, prefix, secret_hash, name, scopes, test_mode, created_by, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
_BY_PREFIX = f"SELECT {_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.prefix = $1"
_PAGE = f"""
SELECT {_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
WHERE k.tenant_id = $1 AND ($2::timestamptz IS NULL OR (k.created_at, k.id) < ($2, $3))
ORDER BY k.created_at DESC, k.id DESC
LIMIT $4
"""
_NEXT_VERSION = "UPDATE api_key_state SET version = version + 1 WHERE id = 1 RETURNING version"
_REVOKE = f"""
WITH k AS (
    UPDATE api_keys SET revoked_at = now(), revoked_version = $3
    WHERE tenant_id = $1 AND prefix = $2 AND revoked_at IS NULL
    RETURNING *
)
SELECT {_COLUMNS} FROM k JOIN tenants t ON t.id = k.tenant_id
"""
_OWN = f"""
SELECT {_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.tenant_id = $1 AND k.prefix = $2
"""
_SNAPSHOT = """
SELECT s.version,
       coalesce((SELECT array_agg(k.id) FROM api_keys k WHERE $1 >= 0 AND k.revoked_version > $1), '{}') AS revoked
FROM api_key_state s WHERE s.id = 1
"""
_TOUCH = """
UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, u.at)
FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
WHERE k.id = u.id
"""
_AUDIT = "INSERT INTO audit_log (tenant_id, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: uuid.UUID
    tenant_id: uuid.UUID
    tenant: str  #: the tenant's slug
    prefix: str
    secret_hash: bytes
    name: str
    scopes: tuple[str, ...]
    test_mode: bool
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewKey:
    id: uuid.UUID
    tenant_id: uuid.UUID
    prefix: str
    secret_hash: bytes
    name: str
    scopes: tuple[str, ...]
    test_mode: bool
    created_by: str
    expires_at: datetime | None


def _record(row: asyncpg.Record) -> KeyRecord:
    values = dict(row)
    values["scopes"] = tuple(values["scopes"])
    values["secret_hash"] = bytes(values["secret_hash"])
    return KeyRecord(**values)


class ApiKeyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, key: NewKey, audit: dict[str, object]) -> KeyRecord:
        """Store the key and its audit record (``api_key.create``) together."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _INSERT,
                key.id,
                key.tenant_id,
                key.prefix,
                key.secret_hash,
                key.name,
                list(key.scopes),
                key.test_mode,
                key.created_by,
                key.expires_at,
            )
            await conn.execute(_AUDIT, key.tenant_id, key.created_by, "api_key.create", key.prefix, audit)
            row = await conn.fetchrow(_BY_PREFIX, key.prefix)
        assert row is not None
        return _record(row)

    async def by_prefix(self, prefix: str) -> KeyRecord | None:
        row = await self.pool.fetchrow(_BY_PREFIX, prefix)
        return _record(row) if row else None

    async def page(self, tenant_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[KeyRecord]:
        """Newest first, after the position ``after`` (exclusive)."""
        at, last = after if after else (None, None)
        return [_record(r) for r in await self.pool.fetch(_PAGE, tenant_id, at, last, limit)]

    async def revoke(self, tenant_id: uuid.UUID, prefix: str, *, actor: str) -> tuple[KeyRecord | None, bool]:
        """``(key, revoked_now)``: the tenant's key after revoking it (stamped with the next revocation
        version, with an ``api_key.revoke`` audit record), or as it was when it had been revoked already;
        ``(None, False)`` when the tenant has no such key."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                version = await conn.fetchval(_NEXT_VERSION)
                row = await conn.fetchrow(_REVOKE, tenant_id, prefix, version)
                if row is None:
                    raise _NothingRevoked  # rolls back: the version moves only with a revocation
                await conn.execute(_AUDIT, tenant_id, actor, "api_key.revoke", prefix, {"version": version})
        except _NothingRevoked:
            found = await self.pool.fetchrow(_OWN, tenant_id, prefix)
            return (_record(found) if found else None), False
        return _record(row), True

    async def snapshot(self, after_version: int) -> tuple[int, frozenset[uuid.UUID]]:
        """The revocation version now, and the keys revoked after ``after_version`` (none for -1: a process
        starting reads only the version, as every key row it reads later shows its own revocation)."""
        row = await self.pool.fetchrow(_SNAPSHOT, after_version)
        assert row is not None
        return row["version"], frozenset(row["revoked"])

    async def touch(self, used: Sequence[tuple[uuid.UUID, datetime]]) -> None:
        """Record last use of many keys in one statement."""
        if used:
            await self.pool.execute(_TOUCH, [k for k, _ in used], [at for _, at in used])


class _NothingRevoked(Exception):
    """Raised inside the revoking transaction to roll it back."""
