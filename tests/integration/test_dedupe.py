"""Recipient dedupe on the real PostgreSQL: the same content to the same recipient inside the category's
window is sent once, whichever sender claims it, and the copy ends ``deduplicated`` pointing at the first."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from engine.channels import Channel
from engine.dedupe import RecipientDedupe
from engine.dispatch import Dispatcher, DispatchOptions
from engine.governance.periods import Period, window_of
from engine.governance.quotas import DedupeRefunds
from engine.metrics import MetricsBuffer
from engine.models import Tenant
from engine.retries import RetryPolicy
from engine.storage.dedupe_store import DedupeClaim, DedupeStore
from engine.storage.quota_store import CounterRow, QuotaStore
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog
from tests.integration.lifecycle_support import Harness, otp, uuid_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_to_send")]


async def _view(h: Harness, tenant: Tenant, public_id: str) -> dict:  # type: ignore[type-arg]
    row = await h.repo.message_view(tenant.id, uuid_of(public_id))
    assert row is not None
    return row


async def test_a_copy_inside_the_window_is_deduplicated_with_a_pointer_to_the_first(
    h: Harness, tenant: Tenant, principal
) -> None:
    first = await h.submit(principal, otp())
    await h.pump()
    copy = await h.submit(principal, otp())  # its own idempotency key: still the same send
    await h.pump()

    assert await h.status(tenant.id, first) == "sent"
    row = await _view(h, tenant, copy)
    assert row["status"] == "deduplicated"
    assert row["deduplicated_of"] == uuid_of(first)
    event = row["event_rows"][-1]
    assert event["type"] == "NotificationDeduplicated"
    assert event["meta"]["first_message_id"] == first and event["meta"]["window_seconds"] == 30
    assert row["attempt_rows"] == []  # no provider saw it
    assert list(h.driver.sent_at) == [first]


async def test_copies_in_one_batch_send_the_oldest_only(h: Harness, tenant: Tenant, principal) -> None:
    ids = [await h.submit(principal, otp()) for _ in range(3)]
    await h.pump()
    assert [await h.status(tenant.id, i) for i in ids] == ["sent", "deduplicated", "deduplicated"]
    assert list(h.driver.sent_at) == [ids[0]]


async def test_another_code_or_recipient_is_other_content(h: Harness, tenant: Tenant, principal) -> None:
    a = await h.submit(principal, otp())
    b = await h.submit(principal, otp(variables={"code": "111111"}))
    c = await h.submit(principal, otp(email="bob@example.com"))
    await h.pump()
    assert {await h.status(tenant.id, i) for i in (a, b, c)} == {"sent"}


async def test_categories_without_a_window_are_not_deduplicated(h: Harness, tenant: Tenant, principal) -> None:
    body = {
        "channel": "email",
        "template_id": "security_alert:v1",
        "to": {"email": "ada@example.com"},
        "variables": {"device": "Firefox"},
    }
    ids = [await h.submit(principal, body) for _ in range(2)]
    await h.pump()
    assert [await h.status(tenant.id, i) for i in ids] == ["sent", "sent"]


async def test_two_senders_racing_on_copies_send_one(
    h: Harness, tenant: Tenant, principal, catalog: TemplateCatalog, database_url: str
) -> None:
    """Two dispatchers on their own connection pools claim interleaved halves of ten copies at once."""
    ids = [await h.submit(principal, otp()) for _ in range(10)]
    await h.relay.drain()
    deliveries = await h.broker.get(100, 1.0)
    mids = [m for d in deliveries for m in d.envelope.message_ids]
    assert len(mids) == 10
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        other = Dispatcher(
            Repository(pool),
            catalog,
            {Channel.EMAIL: [h.driver]},
            policy=RetryPolicy(delays_s=(0.05,), jitter=0.0),
            metrics=MetricsBuffer(),
            options=DispatchOptions(lease_s=30),
        )

        # one message per batch on each side, so the two senders' claims meet in PostgreSQL many times over
        async def run(d: Dispatcher, half: list) -> None:  # type: ignore[type-arg]
            for m in half:
                await d.process([m])

        await asyncio.gather(run(h.dispatcher, mids[0::2]), run(other, mids[1::2]))
    finally:
        await pool.close()
    for d in deliveries:
        await d.ack()
    statuses = [await h.status(tenant.id, i) for i in ids]
    assert statuses.count("sent") == 1 and statuses.count("deduplicated") == 9
    (sent,) = [i for i, s in zip(ids, statuses, strict=True) if s == "sent"]
    assert list(h.driver.sent_at) == [sent]
    for i, s in zip(ids, statuses, strict=True):
        if s == "deduplicated":
            assert (await _view(h, tenant, i))["deduplicated_of"] == uuid_of(sent)


async def test_the_window_ends_and_the_claim_passes_on(h: Harness, tenant: Tenant, principal, repo: Repository) -> None:
    first = await h.submit(principal, otp())
    await h.pump()
    await repo.pool.execute("UPDATE dedupe_claims SET expires_at = now() WHERE message_id = $1", uuid_of(first))
    later = await h.submit(principal, otp())
    await h.pump()
    assert [await h.status(tenant.id, i) for i in (first, later)] == ["sent", "sent"]
    holder = await repo.pool.fetchval("SELECT message_id FROM dedupe_claims WHERE tenant_id = $1", tenant.id)
    assert holder == uuid_of(later)
    pruned = await DedupeStore(repo.pool).prune()
    assert pruned >= 0


async def test_deduplicated_messages_are_taken_back_from_the_quota(
    h: Harness, tenant: Tenant, principal, repo: Repository
) -> None:
    store = QuotaStore(repo.pool)
    h.dispatcher.dedupe = RecipientDedupe(DedupeStore(repo.pool), on_deduplicated=DedupeRefunds(store))
    ids = [await h.submit(principal, otp()) for _ in range(2)]
    created = await repo.pool.fetchval("SELECT created_at FROM messages WHERE id = $1", uuid_of(ids[1]))
    # what admission counted for the two
    counted = [(CounterRow(tenant.id, "email", p.value, window_of(p, created).start), 2, None) for p in Period]
    await store.reconcile(counted, token=uuid.uuid4())
    await h.pump()
    assert [await h.status(tenant.id, i) for i in ids] == ["sent", "deduplicated"]
    used = await repo.pool.fetch("SELECT period, used FROM quota_counters WHERE tenant_id = $1", tenant.id)
    assert {r["period"]: r["used"] for r in used} == {"minute": 1, "day": 1, "month": 1}


async def test_tracked_links_and_the_open_pixel_do_not_make_copies_differ(
    h: Harness, tenant: Tenant, principal
) -> None:
    """With tracking on, each copy's HTML carries its own signed pixel: the copy is still a copy."""
    h.dispatcher = Dispatcher(
        h.repo,
        h.dispatcher.catalog,
        {Channel.EMAIL: [h.driver]},
        policy=RetryPolicy(delays_s=(0.05,), jitter=0.0),
        metrics=MetricsBuffer(),
        options=DispatchOptions(lease_s=30, tracking=True, link_secret="s3cret", base_url="https://h.example"),
    )
    ids = [await h.submit(principal, otp(template_id="otp_login:v2")) for _ in range(2)]
    await h.pump()
    assert [await h.status(tenant.id, i) for i in ids] == ["sent", "deduplicated"]
    (sent,) = h.driver.sent
    assert "https://h.example/t/o/" in (sent.content.html or "")


async def test_a_dedupe_claim_commits_without_waiting_for_its_wal_flush(repo: Repository, tenant: Tenant) -> None:
    """Like the send's lease, a burst's WAL must not hold up a one-time code's dedupe claim."""
    claim = DedupeClaim(tenant.id, b"\x01" * 32, uuid.uuid4(), 30.0)
    async with repo.pool.acquire() as conn:
        async with conn.transaction():
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
            held = await DedupeStore(conn).claim([claim])  # type: ignore[arg-type]  # a connection, as the pool
            assert held == {(tenant.id, claim.content_hash): claim.message_id}
            assert await conn.fetchval("SHOW synchronous_commit") == "off"  # for this transaction alone
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        assert await conn.fetchval("SELECT message_id FROM dedupe_claims WHERE tenant_id = $1", tenant.id) == (
            claim.message_id
        )
