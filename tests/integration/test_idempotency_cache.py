"""The Redis fast path in front of Postgres: in-flight duplicates, replays, and Redis being down."""

from __future__ import annotations

import uuid

import pytest

from engine.cache import RedisIdempotencyCache
from engine.intake import Intake
from engine.problems import ApiProblem
from tests.integration.test_pipeline import otp

pytestmark = pytest.mark.integration


async def test_in_flight_duplicate_is_409_and_replay_comes_from_redis(
    repo, catalog, metrics, principal, redis_url: str
) -> None:
    cache = RedisIdempotencyCache.from_url(redis_url)
    intake = Intake(repo, catalog, metrics=metrics, idempotency_ttl_s=3600, cache=cache)
    key = f"k-{uuid.uuid4().hex}"
    # Another replica owns the key and has not finished yet.
    owned, _ = await cache.claim(principal.tenant, key, "some-hash", 3600)
    assert owned
    with pytest.raises(ApiProblem) as err:
        await intake.submit(principal, otp(), key)
    assert err.value.status == 422  # in flight with a different body
    await cache.release(principal.tenant, key)

    first = await intake.submit(principal, otp(), key)
    assert not first.replayed
    replay = await intake.submit(principal, otp(), key)
    assert replay.replayed and replay.body == first.body
    await cache.aclose()


async def test_same_body_in_flight_is_409(repo, catalog, metrics, principal, redis_url: str) -> None:
    from engine.idempotency import request_hash
    from engine.models import NotificationRequest

    cache = RedisIdempotencyCache.from_url(redis_url)
    intake = Intake(repo, catalog, metrics=metrics, idempotency_ttl_s=3600, cache=cache)
    key = f"k-{uuid.uuid4().hex}"
    canonical = NotificationRequest.model_validate(otp()).model_dump(mode="json", exclude_none=True)
    canonical["tenant_id"] = principal.tenant
    await cache.claim(principal.tenant, key, request_hash(canonical), 3600)
    with pytest.raises(ApiProblem) as err:
        await intake.submit(principal, otp(), key)
    assert err.value.status == 409
    await cache.aclose()


async def test_redis_down_falls_back_to_postgres(repo, catalog, metrics, principal) -> None:
    cache = RedisIdempotencyCache.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    intake = Intake(repo, catalog, metrics=metrics, idempotency_ttl_s=3600, cache=cache)
    first = await intake.submit(principal, otp(), "k-redis-down")
    again = await intake.submit(principal, otp(), "k-redis-down")
    assert first.status_code == 202 and again.replayed and again.body == first.body
    await cache.aclose()
