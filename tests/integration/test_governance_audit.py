"""The audit listing on the real PostgreSQL: scopes, filters, cursors, and details stored either way."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from engine.governance.audit import AuditLog, detail_of
from engine.lifecycle.scope import AdminScope
from engine.models import Tenant
from engine.problems import ApiProblem
from engine.storage.audit_store import AuditQuery, AuditStore, page_statement
from engine.storage.repository import Repository

pytestmark = pytest.mark.integration

T0 = datetime(2033, 1, 1, tzinfo=UTC)


async def record(repo: Repository, tenant: Tenant | None, action: str, minutes: int, detail: object, **kw: str) -> None:
    await repo.pool.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, subject, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        tenant.id if tenant else None,
        kw.get("actor", "t_admin"),
        action,
        kw.get("subject"),
        detail,
        T0 + timedelta(minutes=minutes),
    )


@pytest.fixture
async def records(repo: Repository, tenant: Tenant) -> Tenant:
    other = await repo.ensure_tenant(tenant.slug + "_x")
    await record(repo, tenant, "template.publish", 1, {"version": 3}, subject="otp_login:v3")
    await record(repo, tenant, "tenant.config", 2, {"patch": {"unsubscribe": True}}, actor="platform")
    await record(repo, tenant, "dlq.replay", 3, {"selector": {"all": True}})
    await record(repo, tenant, "api_key.create", 4, {"name": "ci"})
    await record(repo, other, "dlq.replay", 5, {"selector": {"ids": ["msg_1"]}})
    await record(repo, None, "tenant.create", 6, {"slug": other.slug}, actor="platform")
    # an older writer encoded the detail twice: jsonb holding a JSON string of the object
    await repo.pool.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, detail, created_at) VALUES ($1, 'old', 'tenant.credentials', "
        "to_jsonb($2::text), $3)",
        tenant.id,
        json.dumps({"names": ["HERALD_SES_REGION"]}),
        T0 + timedelta(minutes=7),
    )
    return other


async def test_a_tenant_admin_sees_its_own_records_newest_first_with_cursors(
    repo: Repository, tenant: Tenant, records: Tenant
) -> None:
    log = AuditLog(AuditStore(repo.pool))
    scope = AdminScope.of_tenant(tenant, tenant.slug)
    first = await log.list(scope, {"after": T0.isoformat()}, limit=3)
    assert [e.action for e in first.items] == ["tenant.credentials", "api_key.create", "dlq.replay"]
    assert first.items[0].detail == {"names": ["HERALD_SES_REGION"]}  # the twice-encoded detail, read as the object
    rest = await log.list(scope, {"after": T0.isoformat()}, cursor=first.next_cursor, limit=3)
    assert [e.action for e in rest.items] == ["tenant.config", "template.publish"] and rest.next_cursor is None
    assert {e.tenant for e in first.items + rest.items} == {tenant.slug}


async def test_filters_narrow_by_action_prefix_actor_and_time(
    repo: Repository, tenant: Tenant, records: Tenant
) -> None:
    log = AuditLog(AuditStore(repo.pool))
    scope = AdminScope.of_tenant(tenant, tenant.slug)
    by_prefix = await log.list(scope, {"action": "tenant.*", "after": T0.isoformat()})
    assert [e.action for e in by_prefix.items] == ["tenant.credentials", "tenant.config"]
    exact = await log.list(scope, {"action": "dlq.replay"})
    assert [e.detail for e in exact.items] == [{"selector": {"all": True}}]
    assert [e.action for e in (await log.list(scope, {"actor": "platform"})).items] == ["tenant.config"]
    window = {"after": (T0 + timedelta(minutes=2)).isoformat(), "before": (T0 + timedelta(minutes=4)).isoformat()}
    assert [e.action for e in (await log.list(scope, window)).items] == ["dlq.replay", "tenant.config"]


async def test_the_platform_sees_every_tenant_and_may_name_one(
    repo: Repository, tenant: Tenant, records: Tenant
) -> None:
    log = AuditLog(AuditStore(repo.pool))
    platform = AdminScope.platform("platform")
    window = {"after": T0.isoformat(), "before": (T0 + timedelta(minutes=8)).isoformat(), "action": "dlq.*"}
    everyone = await log.list(platform, window)
    assert {e.tenant for e in everyone.items} >= {tenant.slug, records.slug}
    own = await log.list(platform, {"tenant": records.slug, "after": T0.isoformat()})
    assert [e.action for e in own.items] == ["dlq.replay"]
    created = await log.list(platform, {"action": "tenant.create", "actor": "platform", "after": T0.isoformat()})
    assert any(e.tenant is None and e.detail == {"slug": records.slug} for e in created.items)
    assert (await log.list(platform, {"tenant": "t_nobody_has_this"})).items == []


async def test_a_tenant_admin_naming_another_tenant_is_403(repo: Repository, tenant: Tenant, records: Tenant) -> None:
    log = AuditLog(AuditStore(repo.pool))
    with pytest.raises(ApiProblem) as refused:
        await log.list(AdminScope.of_tenant(tenant, tenant.slug), {"tenant": records.slug})
    assert refused.value.status == 403 and refused.value.errors[0].loc == ("query", "tenant")
    mine = await log.list(AdminScope.of_tenant(tenant, tenant.slug), {"tenant": tenant.slug})
    assert mine.items


@pytest.mark.parametrize(
    ("filters", "cursor", "loc"),
    [
        ({"action": "Tenant.Config"}, None, ("query", "action")),
        ({"after": "2033-01-01T00:00:00"}, None, ("query", "after")),  # no zone
        ({"after": "2033-01-02T00:00:00Z", "before": "2033-01-01T00:00:00Z"}, None, ("query",)),
        ({"colour": "red"}, None, ("query", "colour")),
        ({}, "bm90LWEtY3Vyc29y", ("query", "cursor")),
    ],
)
async def test_bad_filters_are_422_naming_the_field(
    repo: Repository, tenant: Tenant, filters: dict[str, str], cursor: str | None, loc: tuple[str, ...]
) -> None:
    log = AuditLog(AuditStore(repo.pool))
    with pytest.raises(ApiProblem) as bad:
        await log.list(AdminScope.platform("platform"), filters, cursor=cursor)
    assert bad.value.status == 422 and loc in [e.loc for e in bad.value.errors], bad.value.errors


async def test_a_tenants_listing_walks_its_index_in_order(repo: Repository, tenant: Tenant) -> None:
    sql, args = page_statement(AuditQuery(tenant_id=tenant.id, action="dlq.replay"), None, 50)
    async with repo.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
    assert "audit_tenant_action_recent" in plan and "Sort" not in plan


@pytest.mark.parametrize(
    ("stored", "read"),
    [
        ({"a": 1}, {"a": 1}),
        ('{"a": 1}', {"a": 1}),
        ("[1, 2]", {"value": [1, 2]}),
        ("not json", {"value": "not json"}),
        (None, {}),
        ([1], {"value": [1]}),
    ],
)
def test_detail_reads_as_an_object_whichever_way_it_was_stored(stored: object, read: dict[str, object]) -> None:
    assert detail_of(stored) == read
