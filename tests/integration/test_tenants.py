"""Tenants against the real PostgreSQL: create/read/page, merge patches with their version and audit record
in one transaction, no lost update under concurrent patches, the tenant admin's allow-list, and a change
reaching the admission cache and the claim path within seconds."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from typing import Any

import asyncpg
import pytest

from drivers.fake import FakeDriver
from engine.auth import Principal
from engine.channels import Channel
from engine.dispatch import Dispatcher, DispatchOptions
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.problems import ApiProblem
from engine.retries import RetryPolicy
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog
from engine.tenant_config import EditPolicy
from engine.tenant_config.store import TenantStore
from engine.tenant_service import TenantService

pytestmark = pytest.mark.integration

KNOWN = {Channel.EMAIL: {"console", "ses", "sendgrid", "fake", "backup"}, Channel.SMS: {"console", "twilio", "sns"}}


def slug() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def service(repo: Repository) -> TenantService:
    return TenantService(TenantStore(repo.pool), known_providers=KNOWN)


async def problem(call: Any) -> ApiProblem:
    with pytest.raises(ApiProblem) as caught:
        await call
    return caught.value


def locs(p: ApiProblem) -> list[list[str | int]]:
    return [list(e.loc) for e in p.errors]


async def audit_rows(pool: asyncpg.Pool, tenant_slug: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT actor, action, detail FROM audit_log WHERE subject = $1 ORDER BY id", tenant_slug)


# -- create, read, page -------------------------------------------------------------------------------


async def test_create_and_get(service: TenantService, repo: Repository) -> None:
    s = slug()
    view = await service.create(
        {"slug": s, "name": "Acme", "region": "us", "config": {"providers": {"sms": {"allow": ["twilio"]}}}},
        actor="platform",
    )
    assert (view.slug, view.name, view.config.region, view.config_version) == (s, "Acme", "us", 1)
    assert view.config.providers.allowed(Channel.SMS) == ("twilio",)
    assert view.editable == ["default_locale", "unsubscribe", "providers"] and view.etag == '"1"'
    assert await service.get(s) == view
    assert (await repo.get_tenant(s)).region == "us"  # type: ignore[union-attr]
    [row] = await audit_rows(repo.pool, s)
    assert (row["actor"], row["action"]) == ("platform", "tenant.create")
    assert row["detail"]["after"]["config"]["providers"]["sms"] == {"allow": ["twilio"]}
    stored = await repo.pool.fetchval("SELECT config FROM tenants WHERE slug = $1", s)
    assert stored == {"providers": {"sms": {"allow": ["twilio"]}}}  # defaults and region are not copied in


async def test_create_refuses_bad_input_naming_the_field(service: TenantService) -> None:
    s = slug()
    await service.create({"slug": s}, actor="platform")
    assert (await problem(service.create({"slug": s}, actor="platform"))).status == 409
    bad_slug = await problem(service.create({"slug": "Not A Slug"}, actor="platform"))
    assert bad_slug.status == 422 and locs(bad_slug) == [["body", "slug"]]
    bad = await problem(
        service.create({"slug": slug(), "config": {"providers": {"email": {"allow": ["sendgird"]}}}}, actor="p")
    )
    assert bad.status == 422 and locs(bad) == [["body", "config", "providers", "email", "allow", 0]]
    assert "providers.email.allow.0" in bad.detail and "sendgird" in bad.errors[0].msg
    legacy = await problem(service.create({"slug": slug(), "config": {"providers": {"email": ["ses"]}}}, actor="p"))
    assert locs(legacy) == [["body", "config", "providers", "email"]] and "allow" in legacy.errors[0].msg
    sealed = await problem(service.create({"slug": slug(), "config": {"credentials": {}}}, actor="p"))
    assert sealed.status == 422 and locs(sealed) == [["body", "config", "credentials"]]
    clash = await problem(service.create({"slug": slug(), "region": "us", "config": {"region": "eu"}}, actor="p"))
    assert locs(clash) == [["body", "region"]]
    assert (await problem(service.get(slug()))).status == 404


async def test_list_pages_with_a_cursor(service: TenantService) -> None:
    mine = sorted([slug() for _ in range(5)])
    for s in mine:
        await service.create({"slug": s}, actor="platform")
    seen: list[str] = []
    cursor = None
    while True:
        page = await service.list(cursor=cursor, limit=2)
        assert len(page.items) <= 2
        seen += [t.slug for t in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert set(mine) <= set(seen)
    assert locs(await problem(service.list(cursor="!!not-ours"))) == [["query", "cursor"]]
    assert locs(await problem(service.list(limit=0))) == [["query", "limit"]]


# -- merge patches ------------------------------------------------------------------------------------


async def test_patch_merges_bumps_the_version_and_audits_before_and_after(
    service: TenantService, repo: Repository
) -> None:
    s = slug()
    await service.create(
        {
            "slug": s,
            "config": {
                "unsubscribe": True,
                "providers": {"email": {"allow": ["ses", "sendgrid"]}, "sms": {"allow": ["twilio"]}},
            },
        },
        actor="platform",
    )
    view = await service.patch(
        s,
        {"config": {"unsubscribe": None, "default_locale": "fr_FR", "providers": {"email": {"allow": ["sendgrid"]}}}},
        actor="ops@platform",
    )
    assert view.config_version == 2
    assert view.config.unsubscribe is False  # null resets to the default
    assert view.config.default_locale == "fr-FR"
    assert view.config.providers.allowed(Channel.EMAIL) == ("sendgrid",)  # arrays replace
    assert view.config.providers.allowed(Channel.SMS) == ("twilio",)  # nested objects merge
    _, change = await audit_rows(repo.pool, s)
    assert (change["actor"], change["action"], change["detail"]["version"]) == ("ops@platform", "tenant.config", 2)
    before, after = change["detail"]["before"]["config"], change["detail"]["after"]["config"]
    assert before["unsubscribe"] is True and after["unsubscribe"] is False
    assert before["providers"]["email"]["allow"] == ["ses", "sendgrid"] and after["default_locale"] == "fr-FR"
    assert change["detail"]["patch"]["config"]["unsubscribe"] is None
    same = await service.patch(s, {"config": {"default_locale": "fr-FR"}}, actor="ops@platform")
    assert same.config_version == 2 and len(await audit_rows(repo.pool, s)) == 2  # nothing changed, nothing written
    renamed = await service.patch(s, {"name": "Acme Ltd"}, actor="ops@platform")
    assert renamed.name == "Acme Ltd" and renamed.config_version == 3


async def test_patch_refusals(service: TenantService) -> None:
    s = slug()
    await service.create({"slug": s}, actor="platform")
    bad = await problem(service.patch(s, {"config": {"unsubscribe": "yes", "colour": "red"}}, actor="p"))
    assert bad.status == 422
    assert sorted(locs(bad)) == [["body", "config", "colour"], ["body", "config", "unsubscribe"]]
    assert locs(await problem(service.patch(s, {"slug": "other"}, actor="p"))) == [["body", "slug"]]
    assert locs(await problem(service.patch(s, {"config": None}, actor="p"))) == [["body", "config"]]
    assert locs(await problem(service.patch(s, [1, 2], actor="p"))) == [["body"]]
    assert (await problem(service.patch(slug(), {"name": "x"}, actor="p"))).status == 404
    assert (await service.get(s)).config_version == 1


async def test_a_failed_audit_write_leaves_the_tenant_unchanged(service: TenantService, repo: Repository) -> None:
    s = slug()
    await service.create({"slug": s}, actor="platform")
    trigger = f"refuse_audit_{uuid.uuid4().hex[:8]}"
    await repo.pool.execute(
        f"CREATE TRIGGER {trigger} BEFORE INSERT ON audit_log FOR EACH ROW WHEN (NEW.subject = '{s}') "
        "EXECUTE FUNCTION herald_audit_append_only()"
    )
    try:
        with pytest.raises(asyncpg.RaiseError):
            await service.patch(s, {"config": {"unsubscribe": True}}, actor="platform")
    finally:
        await repo.pool.execute(f"DROP TRIGGER {trigger} ON audit_log")
    view = await service.get(s)
    assert view.config_version == 1 and view.config.unsubscribe is False


async def test_concurrent_patches_lose_no_update(database_url: str, repo: Repository) -> None:
    pool = await create_pool(database_url, min_size=5, max_size=5)
    try:
        service = TenantService(TenantStore(pool))
        s = slug()
        await service.create({"slug": s}, actor="platform")
        patches = [
            {"config": {"default_locale": "de"}},
            {"config": {"unsubscribe": True}},
            {"config": {"providers": {"email": {"allow": ["ses"]}}}},
            {"config": {"providers": {"sms": {"allow": ["twilio"]}}}},
            {"config": {"region": "us"}},
            {"name": "Renamed"},
        ]
        await asyncio.gather(*(service.patch(s, p, actor=f"a{i}") for i, p in enumerate(patches)))
        final = await service.get(s)
    finally:
        await pool.close()
    assert final.config_version == 1 + len(patches)
    c = final.config
    assert (c.default_locale, c.unsubscribe, c.region, final.name) == ("de", True, "us", "Renamed")
    assert c.providers.allowed(Channel.EMAIL) == ("ses",) and c.providers.allowed(Channel.SMS) == ("twilio",)
    changes = (await audit_rows(repo.pool, s))[1:]
    assert [r["detail"]["version"] for r in changes] == list(range(2, 2 + len(patches)))
    for earlier, later in itertools.pairwise(changes):
        assert later["detail"]["before"] == earlier["detail"]["after"]  # each saw the one before it


async def test_if_match_is_an_optimistic_lock(service: TenantService) -> None:
    s = slug()
    await service.create({"slug": s}, actor="platform")
    first, second = await asyncio.gather(
        service.patch(s, {"config": {"unsubscribe": True}}, actor="a", if_match='"1"'),
        service.patch(s, {"config": {"default_locale": "de"}}, actor="b", if_match='W/"1"'),
        return_exceptions=True,
    )
    outcomes = sorted([type(first).__name__, type(second).__name__])
    assert outcomes == ["ApiProblem", "TenantView"]
    lost = first if isinstance(first, ApiProblem) else second
    assert isinstance(lost, ApiProblem) and lost.status == 412
    assert (await service.patch(s, {"name": "x"}, actor="a", if_match="*")).config_version == 3
    assert locs(await problem(service.patch(s, {"name": "y"}, actor="a", if_match="v3"))) == [["header", "If-Match"]]


# -- tenant admins ------------------------------------------------------------------------------------


async def test_tenant_admin_changes_only_the_allowed_keys(service: TenantService) -> None:
    s = slug()
    await service.create({"slug": s, "region": "eu"}, actor="platform")
    mine = await service.patch_own(
        s, {"config": {"unsubscribe": True, "providers": {"email": {"allow": ["ses"]}}}}, actor=s
    )
    assert mine.config.unsubscribe is True and mine.config_version == 2
    refused = await problem(service.patch_own(s, {"config": {"region": "us", "unsubscribe": False}}, actor=s))
    assert refused.status == 403 and locs(refused) == [["body", "config", "region"]]
    assert "default_locale, unsubscribe, providers" in refused.detail
    renamed = await problem(service.patch_own(s, {"name": "Mine"}, actor=s))
    assert renamed.status == 403 and locs(renamed) == [["body", "name"]]
    unchanged = await service.patch_own(s, {"config": {"region": "eu"}}, actor=s)  # the value it already has
    assert unchanged.config_version == 2
    assert (await service.get_own(s)).config.unsubscribe is True
    assert (await problem(service.get_own(slug()))).status == 401
    assert (await problem(service.patch_own(slug(), {"config": {"unsubscribe": True}}, actor="x"))).status == 401
    narrow = TenantService(service.store, policy=EditPolicy(("providers.email",)))
    assert (
        await narrow.patch_own(s, {"config": {"providers": {"email": {"allow": None}}}}, actor=s)
    ).config_version == 3
    denied = await problem(narrow.patch_own(s, {"config": {"providers": {"sms": {"allow": ["twilio"]}}}}, actor=s))
    assert denied.status == 403 and locs(denied) == [["body", "config", "providers", "sms", "allow"]]
    assert (await service.get(s)).config_version == 3


# -- storage: migration 0005 and the version trigger ---------------------------------------------------


async def test_migration_0005_rewrites_bare_lists(pg_server_url: str) -> None:
    from engine.storage.dsn import with_database
    from engine.storage.migrate import available_migrations, migrate

    name = f"herald_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(with_database(pg_server_url, name))
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in available_migrations():
            if m.version < 5:
                await conn.execute(m.sql)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", m.version, m.name)
        rows = {
            "old": '{"providers": {"email": ["sendgrid", "ses"], "sms": [], "push": {"allow": ["fcm"]}}, "x": 1}',
            "new": '{"providers": {"email": {"allow": ["ses"]}}}',
            "none": "{}",
        }
        for s, config in rows.items():
            await conn.execute(
                "INSERT INTO tenants (id, slug, name, config) VALUES ($1, $2, $2, $3::jsonb)", uuid.uuid4(), s, config
            )
        applied = await migrate(conn)
        assert [m.version for m in applied if m.version == 5] == [5]
        got = {
            r["slug"]: (r["config"], r["config_version"])
            for r in await conn.fetch("SELECT slug, config::text AS config, config_version FROM tenants")
        }
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
    assert json.loads(got["old"][0]) == {
        "providers": {"email": {"allow": ["sendgrid", "ses"]}, "push": {"allow": ["fcm"]}},
        "x": 1,
    }
    assert got["old"][1] == 2  # rewritten rows move their version, so caches reload them
    assert json.loads(got["new"][0]) == {"providers": {"email": {"allow": ["ses"]}}} and got["new"][1] == 1
    assert got["none"] == ("{}", 1)


async def test_any_write_of_the_config_moves_its_version(repo: Repository, tenant: Any) -> None:
    v = await repo.pool.fetchval("SELECT config_version FROM tenants WHERE id = $1", tenant.id)
    await repo.pool.execute(
        "UPDATE tenants SET config = config || '{\"unsubscribe\": true}'::jsonb WHERE id = $1", tenant.id
    )
    await repo.pool.execute("UPDATE tenants SET name = 'renamed' WHERE id = $1", tenant.id)  # not config
    await repo.pool.execute("UPDATE tenants SET config = config WHERE id = $1", tenant.id)  # no change
    assert await repo.pool.fetchval("SELECT config_version FROM tenants WHERE id = $1", tenant.id) == v + 1


# -- propagation --------------------------------------------------------------------------------------


def otp(**extra: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login:v3",
        "to": {"email": "ada@example.com"},
        "variables": {"code": "384921"},
        **extra,
    }


async def test_a_change_reaches_admission_within_its_ttl(
    database_url: str, repo: Repository, catalog: TemplateCatalog
) -> None:
    """The ingress replica (its own pool and caches) sees a change another process made, without a restart."""
    s = slug()
    platform = TenantService(TenantStore(repo.pool))
    await platform.create({"slug": s, "config": {"default_locale": "en-US"}}, actor="platform")
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        intake = Intake(Repository(pool), catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600, tenant_ttl_s=0.5)
        principal = Principal(tenant=s, scopes=frozenset({"send"}))
        first = await intake.submit(principal, otp(), "k1")
        assert first.body["locale"] == "en"  # en-US falls back to en
        await platform.patch(s, {"config": {"default_locale": "en-GB"}}, actor="platform")
        changed_at = time.monotonic()
        while (await intake.tenant(s)).default_locale != "en-GB":  # type: ignore[union-attr]
            assert time.monotonic() - changed_at < 3.0, "the change did not reach admission"
            await asyncio.sleep(0.05)
        seen_after = time.monotonic() - changed_at
        second = await intake.submit(principal, otp(), "k2")
    finally:
        await pool.close()
    assert second.body["locale"] == "en-GB" and seen_after < 1.5


async def test_a_change_reaches_the_next_claim(database_url: str, repo: Repository, catalog: TemplateCatalog) -> None:
    """A sender (its own pool and config cache) routes by the new allow-list on its next batch, and reads the
    tenant row again only when the version it claims moved."""
    s = slug()
    platform = TenantService(TenantStore(repo.pool), known_providers=KNOWN)
    await platform.create({"slug": s, "config": {"providers": {"email": {"allow": ["backup"]}}}}, actor="platform")
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
    principal = Principal(tenant=s, scopes=frozenset({"send"}))
    statements: list[str] = []
    pool = await create_pool(database_url, min_size=1, max_size=1, query_logger=lambda r: statements.append(r.query))
    fake, backup = FakeDriver("fake"), FakeDriver("backup")
    dispatcher = Dispatcher(
        Repository(pool),
        catalog,
        {Channel.EMAIL: [fake, backup]},
        policy=RetryPolicy(),
        metrics=MetricsBuffer(),
        options=DispatchOptions(),
    )

    async def send_one(key: str) -> str:
        # a code of its own: the same code to the same address would be deduplicated
        body = otp(variables={"code": f"{ord(key):06d}"})
        mid = parse_message_id(str((await intake.submit(principal, body, key)).body["message_id"]))
        assert mid is not None
        statements.clear()
        assert (await dispatcher.process([mid])).sent == 1
        return next(d.provider for d in (fake, backup) if any(m.message_id.endswith(mid.hex) for m in d.sent))

    try:
        assert await send_one("a") == "backup"
        assert await send_one("b") == "backup"
        assert not any("FROM tenants WHERE id = ANY" in q for q in statements)  # version unchanged: no reload
        await platform.patch(s, {"config": {"providers": {"email": {"allow": ["fake", "backup"]}}}}, actor="platform")
        assert await send_one("c") == "fake"
        assert sum("FROM tenants WHERE id = ANY" in q for q in statements) == 1
    finally:
        await pool.close()
