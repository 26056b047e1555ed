"""API keys on the real PostgreSQL: create, list with last use, revoke on every replica within a second,
test mode, tenant isolation, JWTs still working."""

from __future__ import annotations

import asyncio
import typing
from datetime import UTC, datetime, timedelta

import pytest

from engine.auth import SCOPES, AuthError, PlatformPrincipal, Principal, issue_platform_token, issue_token
from engine.governance.keys import (
    ApiKeyService,
    ApiKeyVerifier,
    Authenticator,
    Scope,
    key_hash,
    new_key,
    pepper_from,
)
from engine.models import Tenant
from engine.problems import ApiProblem
from engine.storage.keys_store import ApiKeyStore
from engine.storage.repository import Repository

pytestmark = pytest.mark.integration

PEPPER = pepper_from("test-secret")
JWT_SECRET = "jwt-secret-0123456789-0123456789-abc"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def replica(repo: Repository, clock: Clock | None = None) -> tuple[ApiKeyService, ApiKeyVerifier]:
    store = ApiKeyStore(repo.pool)
    verifier = ApiKeyVerifier(store, pepper=PEPPER, clock=clock or Clock())
    return ApiKeyService(store, pepper=PEPPER, verifier=verifier), verifier


async def test_a_key_verifies_to_the_tenant_principal_a_jwt_would_give(repo: Repository, tenant: Tenant) -> None:
    service, verifier = replica(repo)
    created = await service.create(tenant, {"name": "billing", "scopes": ["send", "read"]}, actor="t_admin")
    assert created.key.startswith(created.id + "_") and created.id.startswith("hk_live_")
    principal = await verifier.verify(created.key)
    assert principal == Principal(tenant.slug, frozenset({"send", "read"}), test=False, key_id=created.id)
    stored = await repo.pool.fetchrow("SELECT secret_hash FROM api_keys WHERE prefix = $1", created.id)
    assert bytes(stored["secret_hash"]) == key_hash(PEPPER, created.key)  # only the keyed hash is kept
    assert created.key.split("_")[-1] not in str(dict(stored))
    audit = await repo.pool.fetchrow("SELECT actor, detail FROM audit_log WHERE subject = $1", created.id)
    assert audit["actor"] == "t_admin" and audit["detail"]["scopes"] == ["send", "read"]


async def test_wrong_secrets_and_malformed_keys_are_refused(repo: Repository, tenant: Tenant) -> None:
    service, verifier = replica(repo)
    created = await service.create(tenant, {"name": "x", "scopes": ["send"]}, actor="a")
    forged = created.key[:-4] + ("AAAA" if not created.key.endswith("AAAA") else "BBBB")
    for token in (forged, "hk_live_nothing", new_key(test_mode=False)[1]):
        with pytest.raises(AuthError) as refused:
            await verifier.verify(token)
        assert token not in str(refused.value)


async def test_a_revocation_reaches_every_replica_within_a_second(repo: Repository, tenant: Tenant) -> None:
    clock_a, clock_b = Clock(), Clock()
    service_a, verifier_a = replica(repo, clock_a)
    _, verifier_b = replica(repo, clock_b)
    created = await service_a.create(tenant, {"name": "ci", "scopes": ["send"]}, actor="a")
    assert (await verifier_b.verify(created.key)).tenant == tenant.slug  # b has it cached now
    await service_a.revoke(tenant, created.id, actor="a")
    with pytest.raises(AuthError, match="revoked"):
        await verifier_a.verify(created.key)  # the revoking replica at once
    await verifier_b.verify(created.key)  # b's snapshot is under a second old: still the cached row
    clock_b.now += 1.01
    with pytest.raises(AuthError, match="revoked"):
        await verifier_b.verify(created.key)  # its snapshot was stale: read again, the revocation is there
    _, fresh = replica(repo)
    with pytest.raises(AuthError, match="revoked"):
        await fresh.verify(created.key)  # a replica starting later reads the revoked row itself


async def test_a_background_refresh_keeps_the_snapshot_within_its_period(repo: Repository, tenant: Tenant) -> None:
    service, _ = replica(repo)
    store = ApiKeyStore(repo.pool)
    verifier = ApiKeyVerifier(store, pepper=PEPPER)  # the real clock
    created = await service.create(tenant, {"name": "bg", "scopes": ["send"]}, actor="a")
    await verifier.verify(created.key)
    stop = asyncio.Event()
    task = asyncio.create_task(verifier.run(stop, refresh_s=0.1))
    before = verifier.version
    await service.revoke(tenant, created.id, actor="a")
    for _ in range(50):
        await asyncio.sleep(0.05)
        if verifier.version > before:
            break
    stop.set()
    await task
    assert verifier.version > before and created.id in {r.prefix for r in await store.page(tenant.id, None, 50)}
    with pytest.raises(AuthError, match="revoked"):
        await verifier.verify(created.key)


async def test_keys_are_listed_newest_first_with_last_use_written_in_one_batch(
    repo: Repository, tenant: Tenant
) -> None:
    service, verifier = replica(repo)
    keys = [await service.create(tenant, {"name": f"k{i}", "scopes": ["read"]}, actor="a") for i in range(3)]
    for created in keys[:2]:
        for _ in range(5):
            await verifier.verify(created.key)
    statements: list[str] = []
    async with repo.pool.acquire() as conn:
        conn.add_query_logger(lambda q: statements.append(q.query))
        verifier.store = ApiKeyStore(_Single(conn))  # type: ignore[arg-type]
        assert await verifier.flush_last_used() == 2
    assert len([q for q in statements if "api_keys" in q]) == 1  # asyncpg's own type lookups aside
    page = await service.list(tenant, limit=2)
    assert [k.name for k in page.items] == ["k2", "k1"] and page.next_cursor
    rest = await service.list(tenant, cursor=page.next_cursor, limit=2)
    assert [k.name for k in rest.items] == ["k0"] and rest.next_cursor is None
    used = {k.name: k.last_used_at for k in page.items + rest.items}
    assert used["k2"] is None and used["k1"] is not None and used["k0"] is not None
    assert all("key" not in k.model_dump() for k in page.items)  # the secret is never listed


async def test_test_mode_keys_give_test_principals(repo: Repository, tenant: Tenant) -> None:
    service, verifier = replica(repo)
    created = await service.create(tenant, {"name": "sandbox", "scopes": ["send"], "test_mode": True}, actor="a")
    assert created.id.startswith("hk_test_")
    assert (await verifier.verify(created.key)).test is True


async def test_expired_keys_are_refused(repo: Repository, tenant: Tenant) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=60)
    store = ApiKeyStore(repo.pool)
    service = ApiKeyService(store, pepper=PEPPER)
    created = await service.create(tenant, {"name": "t", "scopes": ["send"], "expires_at": soon}, actor="a")
    later = ApiKeyVerifier(store, pepper=PEPPER, wall=lambda: soon + timedelta(seconds=1))
    with pytest.raises(AuthError, match="expired"):
        await later.verify(created.key)
    with pytest.raises(ApiProblem) as past:
        await service.create(tenant, {"name": "t", "scopes": ["send"], "expires_at": "2001-01-01T00:00:00Z"}, actor="a")
    assert past.value.status == 422 and past.value.errors[0].loc == ("body", "expires_at")


async def test_another_tenants_key_is_a_404_and_revoking_twice_answers_the_same(
    repo: Repository, tenant: Tenant
) -> None:
    other = await repo.ensure_tenant(tenant.slug + "_other")
    service, _ = replica(repo)
    created = await service.create(tenant, {"name": "mine", "scopes": ["send"]}, actor="a")
    for key_id in (created.id, "hk_live_zz", "msg_1"):
        with pytest.raises(ApiProblem) as missing:
            await service.revoke(other, key_id, actor="b")
        assert missing.value.status == 404
    first = await service.revoke(tenant, created.id, actor="a")
    version = await repo.pool.fetchval("SELECT version FROM api_key_state")
    again = await service.revoke(tenant, created.id, actor="a")
    assert again.revoked_at == first.revoked_at is not None
    assert await repo.pool.fetchval("SELECT version FROM api_key_state") == version  # nothing new revoked
    assert (await service.list(other)).items == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": "", "scopes": ["send"]}, ("body", "name")),
        ({"name": "x", "scopes": []}, ("body", "scopes")),
        ({"name": "x", "scopes": ["platform"]}, ("body", "scopes", 0)),
        ({"name": "x", "scopes": ["send", "send"]}, ("body", "scopes")),
        ({"name": "x", "scopes": ["send"], "tenant": "t_2"}, ("body", "tenant")),
    ],
)
async def test_bad_requests_are_422_naming_the_field(
    repo: Repository, tenant: Tenant, body: dict[str, object], loc: tuple[object, ...]
) -> None:
    service, _ = replica(repo)
    with pytest.raises(ApiProblem) as bad:
        await service.create(tenant, body, actor="a")
    assert bad.value.status == 422 and loc in [e.loc for e in bad.value.errors]


async def test_the_authenticator_takes_keys_and_jwts(repo: Repository, tenant: Tenant) -> None:
    service, verifier = replica(repo)
    created = await service.create(tenant, {"name": "both", "scopes": ["admin"]}, actor="a")
    auth = Authenticator(JWT_SECRET, verifier)
    assert (await auth.authenticate(f"Bearer {created.key}")).tenant == tenant.slug  # type: ignore[union-attr]
    jwt_principal = await auth.authenticate("Bearer " + issue_token(JWT_SECRET, tenant.slug, scopes=("send",)))
    assert jwt_principal == Principal(tenant.slug, frozenset({"send"}))
    assert isinstance(await auth.authenticate("Bearer " + issue_platform_token(JWT_SECRET)), PlatformPrincipal)
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(AuthError):
            await auth.authenticate(header)


def test_the_scopes_a_key_may_carry_are_the_tenant_scopes() -> None:
    assert set(typing.get_args(Scope)) == set(SCOPES)


class _Single:
    """A pool of one connection, so the test can count the statements a flush sends."""

    def __init__(self, conn: object) -> None:
        self.conn = conn

    async def execute(self, *args: object) -> object:
        return await self.conn.execute(*args)  # type: ignore[attr-defined]
