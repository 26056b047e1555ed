"""Finding messages against the real PostgreSQL: every filter, cursor pages, a recipient's history in one
call, tags and categories pinned at admission, the tenant's queues view, and EXPLAIN showing each search
(and the DLQ's pages) served by a tenant-first index over a few thousand rows, never a sequential scan."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.auth import Principal
from engine.channels import Channel
from engine.lifecycle.queues import TenantQueues
from engine.lifecycle.search import MessageSearch, SearchFilters
from engine.models import Tenant
from engine.problems import ApiProblem
from engine.storage.dlq_store import DeadQuery
from engine.storage.dlq_store import page_statement as dead_page
from engine.storage.queue_store import QueueStore
from engine.storage.repository import Repository
from engine.storage.search_store import MessageQuery, SearchStore, search_statement
from engine.templating import TemplateCatalog
from tests.integration.lifecycle_support import Harness, otp

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_to_send")]

STATUSES = ("queued", "sent", "delivered", "failed", "dead", "scheduled", "cancelled", "expired")


@pytest.fixture
def search(repo: Repository) -> MessageSearch:
    return MessageSearch(SearchStore(repo.pool))


@pytest.fixture
async def seeded(repo: Repository) -> AsyncIterator[list[uuid.UUID]]:
    """The tenants :func:`seed` made; their messages go afterwards."""
    made: list[uuid.UUID] = []
    yield made
    await repo.pool.execute("DELETE FROM messages WHERE tenant_id = ANY($1::uuid[])", made)


async def seed(repo: Repository, made: list[uuid.UUID], tenants: int = 8, per_tenant: int = 500) -> list[uuid.UUID]:
    """``tenants`` x ``per_tenant`` messages written as admission writes them (with their tags), spread
    over statuses, channels, templates, recipients and the last 30 days."""
    ids = [(await repo.ensure_tenant(f"t_seed_{uuid.uuid4().hex[:8]}")).id for _ in range(tenants)]
    made += ids
    await repo.pool.execute(
        """
        WITH m AS (
            INSERT INTO messages (id, tenant_id, channel, template_id, template_version, locale, "to", metadata,
                                  priority, status, category, created_at, updated_at)
            SELECT gen_random_uuid(), t.id,
                   (ARRAY['email','sms','push'])[1 + g % 3],
                   (ARRAY['otp_login','magic_link_login','security_alert','receipt','digest'])[1 + g % 5], 1, 'en',
                   CASE g % 3 WHEN 0 THEN jsonb_build_object('email', 'user' || g || '@example.com')
                              WHEN 1 THEN jsonb_build_object('phone', '+4477009' || lpad(g::text, 5, '0'))
                              ELSE jsonb_build_object('user_id', 'u_' || g) END,
                   jsonb_build_object('tags', jsonb_build_array('tag' || (g % 40), 'all')),
                   'normal', ($3::text[])[1 + g % 8], (ARRAY['auth','marketing','transactional'])[1 + g % 3],
                   now() - g * interval '1 hour' / 17, now() - g * interval '1 hour' / 17
            FROM unnest($1::uuid[]) AS t(id), generate_series(1, $2) AS g
            RETURNING id, tenant_id, metadata, created_at
        )
        INSERT INTO message_tags (tenant_id, tag, created_at, message_id)
        SELECT m.tenant_id, tag, m.created_at, m.id FROM m, jsonb_array_elements_text(m.metadata->'tags') tag
        """,
        ids,
        per_tenant,
        list(STATUSES),
    )
    await repo.pool.execute("ANALYZE messages")
    await repo.pool.execute("ANALYZE message_tags")
    return ids


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", ()) for n in nodes(child))]


def scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in nodes(node) if "Relation Name" in n]


async def plan_of(repo: Repository, sql: str, args: list[Any]) -> list[dict[str, Any]]:
    [plan] = await repo.pool.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    return nodes(plan["Plan"])


def first_scan(plan: list[dict[str, Any]], relation: str) -> dict[str, Any]:
    return next(n for n in plan if n.get("Relation Name") == relation)


# -- EXPLAIN: index-backed, tenant first -------------------------------------------------------------


async def test_every_search_is_an_ordered_tenant_first_index_range(repo: Repository, seeded: list[uuid.UUID]) -> None:
    tenant_id = (await seed(repo, seeded))[3]
    since = datetime.now(UTC) - timedelta(days=3)
    cases = {
        "messages_tenant_recent": MessageQuery(tenant_id, created_after=since),
        "messages_tenant_status_recent": MessageQuery(tenant_id, status="failed"),
        "messages_tenant_channel_recent": MessageQuery(tenant_id, channel="sms"),
        "messages_tenant_template_recent": MessageQuery(tenant_id, template_id="receipt"),
        "messages_tenant_email_recent": MessageQuery(tenant_id, email="user3@example.com"),
        "messages_tenant_phone_recent": MessageQuery(tenant_id, phone="+447700900004"),
        "messages_tenant_user_recent": MessageQuery(tenant_id, user_id="u_5"),
        "messages_tenant_category_recent": MessageQuery(tenant_id, category="auth"),
        "message_tags_pkey": MessageQuery(tenant_id, tag="tag7"),
    }
    cursor = (datetime.now(UTC) - timedelta(days=1), uuid.UUID(int=2**127))
    for index, query in cases.items():
        for after in (None, cursor):
            plan = await plan_of(repo, *search_statement(query, after, 51))
            types = {n["Node Type"] for n in plan}
            assert "Seq Scan" not in types and "Sort" not in types, (index, types)
            driver = first_scan(plan, "message_tags" if index == "message_tags_pkey" else "messages")
            assert driver.get("Index Name") == index, (index, driver)
            assert "tenant_id" in driver["Index Cond"], driver


async def test_dlq_pages_are_index_ranges_for_a_tenant_and_for_the_platform(
    repo: Repository, seeded: list[uuid.UUID]
) -> None:
    tenant_id = (await seed(repo, seeded, tenants=2, per_tenant=1500))[0]
    for query, index in ((DeadQuery(tenant_id=tenant_id), "messages_dead_tenant"), (DeadQuery(), "messages_dead")):
        plan = await plan_of(repo, *dead_page(query, None, 51))
        assert first_scan(plan, "messages").get("Index Name") == index
        scanned = [n.get("Relation Name") for n in plan if n["Node Type"] == "Seq Scan"]
        assert "messages" not in scanned, scanned  # (a planner may scan a table of a few rows whole)
        # The only sort is of one message's own attempts (its last error), never of the dead messages.
        sorted_relations = {s.get("Relation Name") for n in plan if n["Node Type"] == "Sort" for s in nodes(n)}
        assert "messages" not in sorted_relations


# -- behaviour ---------------------------------------------------------------------------------------


async def test_filters_find_what_admission_pinned(
    h: Harness, search: MessageSearch, principal: Principal, tenant: Tenant, catalog: TemplateCatalog
) -> None:
    manifest = catalog.resolve("otp_login:v3", locale="en-GB", channel=Channel.EMAIL, tenant=tenant.slug).manifest
    tagged = await h.submit(principal, otp(metadata={"category": "security", "tags": ["otp", "login"]}))
    plain = await h.submit(principal, otp("Grace@Example.com"))
    sms = await h.submit(principal, {**otp(), "channel": "sms", "to": {"phone": "+44 7911 123456", "user_id": "u_42"}})

    async def found(**filters: Any) -> list[str]:
        return [i.message_id for i in (await search.search(tenant, filters)).items]

    assert await found() == [sms, plain, tagged]  # newest first
    assert await found(tag="otp") == [tagged] and await found(tag="nope") == []
    assert await found(category="security") == [tagged]
    assert await found(category=manifest.category) == [sms, plain]  # the manifest's, pinned at admission
    assert await found(recipient="grace@example.COM") == [plain]
    assert await found(recipient="+447911123456") == [sms] and await found(user_id="u_42") == [sms]
    assert await found(channel="sms") == [sms]
    assert await found(status="queued") == [sms, plain, tagged] and await found(status="sent") == []
    assert await found(template_id="otp_login:v3", channel="email") == [plain, tagged]
    assert await found(template_id="otp_login:v2") == []
    future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert await found(created_after=future) == [] and len(await found(created_before=future)) == 3
    [item] = (await search.search(tenant, {"tag": "otp"})).items
    assert item.tags == ["otp", "login"] and item.category == "security" and item.to == {"email": "ada@example.com"}


async def test_a_recipients_history_in_pages(
    h: Harness, search: MessageSearch, principal: Principal, tenant: Tenant
) -> None:
    ids = [await h.submit(principal, otp("hist@example.com")) for _ in range(7)]
    await h.submit(principal, otp("someone@example.com"))
    seen: list[str] = []
    cursor = None
    while True:
        page = await search.search(tenant, SearchFilters(recipient="hist@example.com"), cursor=cursor, limit=3)
        seen += [i.message_id for i in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids[::-1]


async def test_another_tenants_messages_are_never_found(
    h: Harness, search: MessageSearch, principal: Principal, repo: Repository
) -> None:
    await h.submit(principal, otp("mine@example.com"))
    other = await repo.ensure_tenant(f"t_{uuid.uuid4().hex[:12]}")
    assert (await search.search(other, {"recipient": "mine@example.com"})).items == []


async def test_bad_filters_are_422_naming_the_parameter(search: MessageSearch, tenant: Tenant) -> None:
    cases = [
        ({"status": "lost"}, ("query", "status")),
        ({"recipient": "not an address"}, ("query", "recipient")),
        ({"template_id": "Bad Template"}, ("query", "template_id")),
        ({"created_after": "2025-01-01T00:00:00"}, ("query", "created_after")),
        ({"colour": "red"}, ("query", "colour")),
    ]
    for filters, loc in cases:
        with pytest.raises(ApiProblem) as caught:
            await search.search(tenant, filters)
        assert caught.value.status == 422 and loc in [e.loc for e in caught.value.errors], (loc, caught.value.errors)
    for kwargs in ({"cursor": "nope"}, {"limit": 0}, {"limit": 201}):
        with pytest.raises(ApiProblem) as caught:
            await search.search(tenant, {}, **kwargs)
        assert caught.value.status == 422


async def test_a_tag_longer_than_128_characters_is_refused_at_admission(h: Harness, principal: Principal) -> None:
    with pytest.raises(ApiProblem) as caught:
        await h.submit(principal, otp(metadata={"tags": ["x" * 129]}))
    assert caught.value.status == 422 and ("body", "metadata", "tags", 0) in [e.loc for e in caught.value.errors]


# -- the tenant's queues view ------------------------------------------------------------------------


async def test_tenant_queues_counts_by_status_and_the_oldest_waiting(
    h: Harness, principal: Principal, tenant: Tenant, repo: Repository
) -> None:
    view = TenantQueues(QueueStore(repo.pool))
    empty = await view.view(tenant)
    assert (empty.by_status, empty.waiting, empty.oldest_waiting_age_s) == ({}, 0, None)
    await h.submit(principal, otp("a@example.com"))
    await h.pump()
    waiting = [await h.submit(principal, otp(f"w{i}@example.com")) for i in range(2)]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    await h.submit(principal, otp("later@example.com", schedule_at=later))
    await repo.pool.execute(
        "UPDATE messages SET created_at = now() - interval '90 seconds' WHERE id = $1",
        uuid.UUID(hex=waiting[0].removeprefix("msg_")),
    )
    seen = await view.view(tenant)
    assert seen.tenant == tenant.slug and seen.by_status == {"sent": 1, "queued": 2, "scheduled": 1}
    assert seen.waiting == 2 and seen.oldest_waiting_age_s is not None and 89 <= seen.oldest_waiting_age_s < 120
    # Over the last minute only: the one accepted 90 s ago is outside.
    assert (await view.view(tenant, window_s=60)).by_status == {"sent": 1, "queued": 1, "scheduled": 1}
    with pytest.raises(ApiProblem) as caught:
        await view.view(tenant, window_s=0)
    assert caught.value.errors[0].loc == ("query", "window_s")
