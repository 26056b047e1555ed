"""Redis adapter of the idempotency fast path (:class:`engine.idempotency.IdempotencyCache`)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.idempotency import IN_FLIGHT_PREFIX, CacheUnavailable, StoredResponse, encode_response

T = TypeVar("T")

#: How long an in-flight marker lives if its owner dies before completing.
IN_FLIGHT_TTL_S = 30


class RedisIdempotencyCache:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str) -> RedisIdempotencyCache:
        return cls(aioredis.from_url(url, decode_responses=True, socket_timeout=1.0, socket_connect_timeout=1.0))

    @staticmethod
    def _key(tenant: str, key: str) -> str:
        return f"herald:idem:{tenant}:{key}"

    @staticmethod
    async def _call(call: Awaitable[T]) -> T:
        """The one place Redis's errors become the port's."""
        try:
            return await call
        except (RedisError, OSError) as err:
            raise CacheUnavailable(str(err) or type(err).__name__) from err

    async def claim(self, tenant: str, key: str, req_hash: str, ttl_s: int) -> tuple[bool, str | None]:
        name = self._key(tenant, key)
        owned = await self._call(self.client.set(name, IN_FLIGHT_PREFIX + req_hash, nx=True, ex=IN_FLIGHT_TTL_S))
        if owned:
            return True, None
        value = await self._call(self.client.get(name))
        if value is None:  # expired between SET and GET: let Postgres decide
            return True, None
        return False, str(value)

    async def complete(self, tenant: str, key: str, response: StoredResponse, ttl_s: int) -> None:
        await self._call(self.client.set(self._key(tenant, key), encode_response(response), ex=ttl_s))

    async def release(self, tenant: str, key: str) -> None:
        await self._call(self.client.delete(self._key(tenant, key)))

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def aclose(self) -> None:
        await self.client.aclose()
