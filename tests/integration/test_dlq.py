"""The DLQ against the real PostgreSQL: exhausted -> dead -> listed -> replayed -> sent; a second (or a
concurrent) replay sends nothing twice (counted at the driver); a replay past the TTL ends expired, never
sent; the TTL is checked before every attempt; scopes, filters, counts, cursors and the audit record."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.auth import Principal
from engine.channels import Channel
from engine.errors import RetryableError
from engine.lifecycle.dlq import DeadLetterService
from engine.lifecycle.scope import AdminScope
from engine.models import Tenant
from engine.problems import ApiProblem
from engine.storage.dlq_store import DeadLetterStore
from engine.storage.repository import Repository
from engine.templating import TemplateCatalog
from tests.integration.lifecycle_support import Harness, otp, uuid_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_to_send")]

PROVIDERS = {Channel.EMAIL: {"fake", "backup"}, Channel.SMS: {"twilio"}}


@pytest.fixture
def dlq(repo: Repository) -> DeadLetterService:
    return DeadLetterService(DeadLetterStore(repo.pool), providers=PROVIDERS)


async def problem(call: Any) -> ApiProblem:
    with pytest.raises(ApiProblem) as caught:
        await call
    return caught.value


async def dead_letters(h: Harness, principal: Principal, tenant: Tenant, n: int = 1, **extra: Any) -> list[str]:
    """``n`` messages that exhaust their attempts (a first one and three retries, 50 ms apart); their
    addresses work again afterwards."""
    addresses = [f"dead{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(n)]
    for address in addresses:
        h.driver.failing[address] = RetryableError("503 from provider", code="503")
    ids = [await h.submit(principal, otp(address, **extra)) for address in addresses]
    try:
        for _ in range(20):
            await h.pump()
            if {await h.status(tenant.id, i) for i in ids} == {"dead"}:
                return ids
            await asyncio.sleep(0.06)
        raise AssertionError("the messages did not die")
    finally:
        for address in addresses:
            h.driver.failing.pop(address)


def times_sent(h: Harness, public_id: str) -> int:
    return [m.message_id for m in h.driver.sent].count(public_id)


async def test_exhausted_dead_replayed_queued_then_sent_once_even_when_replayed_twice(
    h: Harness, dlq: DeadLetterService, principal: Principal, tenant: Tenant, repo: Repository
) -> None:
    [public_id] = await dead_letters(h, principal, tenant)
    scope = AdminScope.of_tenant(tenant, actor="ops@t")
    page = await dlq.list_dead(scope)
    [item] = [i for i in page.items if i.message_id == public_id]
    assert item.error is not None and item.error.error_class == "retryable" and item.error.code == "503"
    assert item.attempts == 4 and item.provider == "fake" and item.channel == "email"

    rollup = (
        "SELECT coalesce(sum(failed), 0) AS failed, coalesce(sum(sent), 0) AS sent"
        " FROM analytics_daily WHERE tenant_id = $1"
    )
    dead_counted = await repo.pool.fetchrow(rollup, tenant.id)
    first = await dlq.replay(scope, {"ids": [public_id]})
    assert (first.matched, first.replayed, first.expired) == (1, 1, 0)
    assert await h.status(tenant.id, public_id) == "queued"
    attempts = await repo.pool.fetchval("SELECT attempts FROM messages WHERE id = $1", uuid_of(public_id))
    assert attempts == 0  # a fresh budget
    second = await dlq.replay(scope, {"ids": [public_id]})
    assert (second.matched, second.replayed) == (0, 0)
    await h.pump(rounds=2)
    assert await h.status(tenant.id, public_id) == "sent" and times_sent(h, public_id) == 1
    sent_counted = await repo.pool.fetchrow(rollup, tenant.id)
    # analytics count it once, as sent: no longer failed as well
    assert (sent_counted["failed"], sent_counted["sent"]) == (dead_counted["failed"] - 1, dead_counted["sent"] + 1)
    types = [e["type"] for e in await h.events(tenant.id, public_id)]
    assert types.count("NotificationReplayed") == 1 and types[-1] == "NotificationSent"
    view = await repo.message_view(tenant.id, uuid_of(public_id))
    assert view is not None  # attempts in the order they were made, the replay's numbered from 1 again
    assert [(a["attempt_no"], a["outcome"]) for a in view["attempt_rows"]] == [
        (1, "queued"),
        (2, "queued"),
        (3, "queued"),
        (4, "dead"),
        (1, "sent"),
    ]
    assert public_id not in [i.message_id for i in (await dlq.list_dead(scope)).items]


async def test_concurrent_replays_replay_each_message_once(
    h: Harness, dlq: DeadLetterService, principal: Principal, tenant: Tenant
) -> None:
    ids = await dead_letters(h, principal, tenant, n=4)
    scope = AdminScope.of_tenant(tenant, actor="ops")
    results = await asyncio.gather(*(dlq.replay(scope, {"all": True}) for _ in range(4)))
    assert sum(r.replayed for r in results) == 4
    await h.pump(rounds=2)
    assert [times_sent(h, i) for i in ids] == [1, 1, 1, 1]


async def test_replay_writes_one_audit_record_with_who_what_and_how_many(
    h: Harness, dlq: DeadLetterService, principal: Principal, tenant: Tenant, repo: Repository
) -> None:
    await dead_letters(h, principal, tenant, n=2)
    scope = AdminScope.of_tenant(tenant, actor="alice@t")
    await dlq.replay(scope, {"filter": {"channel": "email", "error_class": "retryable"}, "to_provider": "backup"})
    await dlq.replay(scope, {"all": True})  # nothing left: still recorded
    rows = await repo.pool.fetch(
        "SELECT actor, subject, detail FROM audit_log WHERE tenant_id = $1 AND action = 'dlq.replay' ORDER BY id",
        tenant.id,
    )
    assert [r["actor"] for r in rows] == ["alice@t", "alice@t"]
    first, second = (r["detail"] for r in rows)
    assert first["selector"] == {"filter": {"channel": "email", "error_class": "retryable"}}
    assert (first["matched"], first["replayed"], first["to_provider"], rows[0]["subject"]) == (2, 2, "backup", "backup")
    assert second["selector"] == {"all": True} and second["matched"] == 0


async def test_replay_to_a_named_provider_pins_it_and_refuses_unknown_ones(
    h: Harness, dlq: DeadLetterService, principal: Principal, tenant: Tenant, repo: Repository
) -> None:
    [public_id] = await dead_letters(h, principal, tenant)
    scope = AdminScope.of_tenant(tenant, actor="ops")
    unknown = await problem(dlq.replay(scope, {"ids": [public_id], "to_provider": "sendgird"}))
    assert unknown.status == 422 and [e.loc for e in unknown.errors] == [("body", "to_provider")]
    wrong_channel = await problem(dlq.replay(scope, {"filter": {"channel": "sms"}, "to_provider": "backup"}))
    assert wrong_channel.status == 422
    sms_only = await dlq.replay(scope, {"ids": [public_id], "to_provider": "twilio"})
    assert (sms_only.matched, sms_only.skipped, sms_only.replayed) == (1, 1, 0)  # an email stays dead
    result = await dlq.replay(scope, {"ids": [public_id], "to_provider": "backup"})
    assert result.replayed == 1
    pinned = await repo.pool.fetchval("SELECT pinned_provider FROM messages WHERE id = $1", uuid_of(public_id))
    assert pinned == "backup"


async def test_replay_to_a_provider_the_tenant_does_not_allow_leaves_it_dead(
    h: Harness, dlq: DeadLetterService, principal: Principal, tenant: Tenant, repo: Repository
) -> None:
    [public_id] = await dead_letters(h, principal, tenant)
    await repo.pool.execute(
        "UPDATE tenants SET config = config || $2::jsonb WHERE id = $1",
        tenant.id,
        {"providers": {"email": {"allow": ["fake"]}}},
    )
    scope = AdminScope.of_tenant(tenant, actor="ops")
    try:
        refused = await dlq.replay(scope, {"ids": [public_id], "to_provider": "backup"})
        # Requeued, it would end failed (no route: backup is not in the allow-list), out of the DLQ for good.
        assert (refused.matched, refused.replayed, refused.skipped) == (1, 0, 1)
        assert await h.status(tenant.id, public_id) == "dead"
        allowed = await dlq.replay(scope, {"ids": [public_id], "to_provider": "fake"})
        assert (allowed.matched, allowed.replayed, allowed.skipped) == (1, 1, 0)
    finally:
        await repo.pool.execute("UPDATE tenants SET config = config - 'providers' WHERE id = $1", tenant.id)
    await h.pump()
    assert await h.status(tenant.id, public_id) == "sent"


async def test_replay_past_the_ttl_ends_expired_and_is_never_sent(
    h: Harness, dlq: DeadLetterService, principal: Principal, tenant: Tenant, repo: Repository
) -> None:
    accepted = time.monotonic()
    [public_id] = await dead_letters(h, principal, tenant, ttl_seconds=3)  # room to die first on a busy box
    await asyncio.sleep(max(0.0, accepted + 3.1 - time.monotonic()))
    result = await dlq.replay(AdminScope.of_tenant(tenant, actor="ops"), {"ids": [public_id]})
    assert (result.replayed, result.expired) == (0, 1)
    assert await h.status(tenant.id, public_id) == "expired"
    to_send = "SELECT count(*) FROM outbox WHERE message_id = $1 AND queue NOT LIKE 'notifications.dlq.%'"
    assert await repo.pool.fetchval(to_send, uuid_of(public_id)) == 0
    await h.pump()
    assert times_sent(h, public_id) == 0


async def test_a_replayed_message_whose_ttl_passes_before_its_attempt_expires_at_the_claim(
    h: Harness, dlq: DeadLetterService, principal: Principal, tenant: Tenant
) -> None:
    [public_id] = await dead_letters(h, principal, tenant, ttl_seconds=2)
    result = await dlq.replay(AdminScope.of_tenant(tenant, actor="ops"), {"ids": [public_id]})
    assert result.replayed == 1 and await h.status(tenant.id, public_id) == "queued"
    await asyncio.sleep(2.1)  # queued, not yet attempted, when its TTL runs out
    await h.pump()
    assert await h.status(tenant.id, public_id) == "expired" and times_sent(h, public_id) == 0


async def test_a_retry_due_after_the_ttl_is_never_sent(
    repo: Repository, catalog: TemplateCatalog, database_url: str, principal: Principal, tenant: Tenant
) -> None:
    h = Harness(repo, catalog, database_url, retry_delays_s=(1.5, 1.5, 1.5))
    await h.broker.connect()
    try:
        h.driver.failing["late@example.com"] = RetryableError("timeout")
        public_id = await h.submit(principal, otp("late@example.com", ttl_seconds=1))
        await h.pump()
        h.driver.failing.clear()
        assert await h.status(tenant.id, public_id) == "queued"  # a retry, 1.5 s away: beyond its TTL
        await asyncio.sleep(1.6)
        await h.pump()
        assert await h.status(tenant.id, public_id) == "expired" and times_sent(h, public_id) == 0
    finally:
        await h.broker.close()


async def test_a_scheduled_message_expires_ttl_seconds_after_its_time(
    h: Harness, principal: Principal, tenant: Tenant
) -> None:
    due = datetime.now(UTC) + timedelta(seconds=0.3)
    public_id = await h.submit(principal, otp(schedule_at=due.isoformat(), ttl_seconds=1))
    await asyncio.sleep(1.0)  # past acceptance + ttl, not past schedule_at + ttl: still sendable
    await h.pump()
    assert await h.status(tenant.id, public_id) == "sent"


async def test_scopes_a_tenant_admin_sees_and_replays_only_its_own(
    h: Harness, dlq: DeadLetterService, principal: Principal, tenant: Tenant, repo: Repository
) -> None:
    other = await repo.ensure_tenant(f"t_{uuid.uuid4().hex[:12]}")
    other_principal = Principal(tenant=other.slug, scopes=frozenset({"send"}))
    mine = await dead_letters(h, principal, tenant)
    theirs = await dead_letters(h, other_principal, other)
    scope = AdminScope.of_tenant(tenant, actor="ops")
    seen = {i.message_id for i in (await dlq.list_dead(scope)).items}
    assert set(mine) <= seen and not set(theirs) & seen
    refused = await problem(dlq.list_dead(scope, {"tenant": other.slug}))
    assert refused.status == 403 and [e.loc for e in refused.errors] == [("query", "tenant")]
    assert (await dlq.replay(scope, {"ids": theirs})).matched == 0
    assert (await dlq.replay(scope, {"all": True})).matched == 1
    assert await h.status(other.id, theirs[0]) == "dead"

    platform = AdminScope.platform(actor="root")
    only_theirs = await dlq.list_dead(platform, {"tenant": other.slug})
    assert [i.message_id for i in only_theirs.items] == theirs and only_theirs.items[0].tenant == other.slug
    assert (await dlq.list_dead(platform, {"tenant": "t_nobody"})).counts.total == 0
    assert (await dlq.replay(platform, {"ids": theirs})).replayed == 1


async def test_filters_counts_and_cursor_pages(
    h: Harness, dlq: DeadLetterService, principal: Principal, tenant: Tenant
) -> None:
    ids = await dead_letters(h, principal, tenant, n=5)
    scope = AdminScope.of_tenant(tenant, actor="ops")
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        page = await dlq.list_dead(scope, {"channel": "email"}, cursor=cursor, limit=2)
        assert page.counts.total == 5 and page.counts.by_channel == {"email": 5}
        assert page.counts.by_error_class == {"retryable": 5}
        seen += [i.message_id for i in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    dead_ats = [i.dead_at for i in (await dlq.list_dead(scope, limit=200)).items]
    assert dead_ats == sorted(dead_ats, reverse=True)
    assert (await dlq.list_dead(scope, {"error_class": "permanent"})).counts.total == 0
    assert (await dlq.list_dead(scope, {"provider": "backup"})).counts.total == 0
    future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert (await dlq.list_dead(scope, {"dead_after": future})).counts.total == 0
    assert (await dlq.list_dead(scope, {"dead_before": future})).counts.total == 5


async def test_bad_input_is_422_naming_the_field(dlq: DeadLetterService, tenant: Tenant) -> None:
    scope = AdminScope.of_tenant(tenant, actor="ops")
    cases = [
        (dlq.list_dead(scope, {"channel": "fax"}), ("query", "channel")),
        (dlq.list_dead(scope, {"dead_after": "2025-01-01T00:00:00"}), ("query", "dead_after")),
        (dlq.list_dead(scope, cursor="bogus"), ("query", "cursor")),
        (dlq.list_dead(scope, limit=0), ("query", "limit")),
        (dlq.replay(scope, {"ids": ["msg_123"]}), ("body", "ids", 0)),
        (dlq.replay(scope, {"ids": []}), ("body", "ids")),
        (dlq.replay(scope, {"all": True, "extra": 1}), ("body", "extra")),
    ]
    for call, loc in cases:
        refused = await problem(call)
        assert refused.status == 422 and loc in [e.loc for e in refused.errors], (loc, refused.errors)
    neither = await problem(dlq.replay(scope, {}))
    assert neither.status == 422 and "exactly one" in neither.errors[0].msg
