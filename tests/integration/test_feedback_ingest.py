"""Provider events in, against the real PostgreSQL: status moves through the state machine, dedupe,
orphans, suppressions with categories, raw payload retention, and the statement count of a batch."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from drivers.email.sendgrid_webhooks import parse_events
from engine.channels import Channel
from engine.feedback.events import DeliveryEvent, EventType, RejectReason
from engine.feedback.ingest import FeedbackIngest
from engine.feedback.plan import plan_batch
from engine.governance.recipients import suppressed_by
from engine.metrics import MetricsBuffer
from engine.models import Tenant
from engine.storage.repository import Repository, create_pool
from tests.integration.feedback_support import Sent, body, sendgrid_event, sent_messages

pytestmark = pytest.mark.integration


@pytest.fixture
def ingest(repo: Repository) -> FeedbackIngest:
    return FeedbackIngest(repo.pool, metrics=MetricsBuffer())


async def _status(repo: Repository, sent: Sent) -> str:
    return str(await repo.pool.fetchval("SELECT status FROM messages WHERE id = $1", sent.id))


async def _events(repo: Repository, sent: Sent) -> list[tuple[str, dict]]:
    rows = await repo.pool.fetch(
        "SELECT type, meta FROM notification_events WHERE message_id = $1 ORDER BY occurred_at, recorded_at", sent.id
    )
    return [(r["type"], r["meta"]) for r in rows]


async def _rollup(repo: Repository, tenant: Tenant) -> dict[str, int]:
    row = await repo.pool.fetchrow(
        """SELECT sum(delivered) AS delivered, sum(bounced) AS bounced, sum(soft_bounced) AS soft_bounced,
                  sum(complained) AS complained, sum(opened) AS opened, sum(machine_opened) AS machine_opened,
                  sum(clicked) AS clicked, sum(failed) AS failed
           FROM analytics_daily WHERE tenant_id = $1""",
        tenant.id,
    )
    return {k: int(v or 0) for k, v in dict(row or {}).items()}


async def test_delivered_moves_sent_to_delivered(repo, ingest, tenant) -> None:
    (msg,) = await sent_messages(repo.pool, tenant, 1)
    events = parse_events(body([sendgrid_event(msg, "delivered", response="250 OK")]))
    report = await ingest.ingest("sendgrid", Channel.EMAIL, events)
    assert (report.recorded, report.moved, report.orphans, report.duplicates) == (1, 1, 0, 0)
    assert await _status(repo, msg) == "delivered"
    [(kind, meta)] = await _events(repo, msg)
    assert kind == "NotificationDelivered" and meta["status"] == "delivered" and meta["provider"] == "sendgrid"
    raw = await repo.pool.fetchval(
        "SELECT payload FROM provider_event_payloads p JOIN notification_events e ON e.id = p.event_id "
        "WHERE e.message_id = $1",
        msg.id,
    )
    assert raw["event"] == "delivered" and raw["response"] == "250 OK"
    assert (await _rollup(repo, tenant))["delivered"] == 1
    counted = ingest.metrics.drain().counters if ingest.metrics else {}
    assert (
        counted[
            ("notifications_delivered_total", (("channel", "email"), ("provider", "sendgrid"), ("tenant", tenant.slug)))
        ]
        == 1
    )


async def test_hard_bounce_after_delivered_is_bounced_and_suppresses_every_category(repo, ingest, tenant) -> None:
    (msg,) = await sent_messages(repo.pool, tenant, 1)
    await ingest.ingest("sendgrid", Channel.EMAIL, parse_events(body([sendgrid_event(msg, "delivered")])))
    bounce = sendgrid_event(msg, "bounce", type="bounce", status="5.1.1", reason=f"550 5.1.1 <{msg.address}> unknown")
    report = await ingest.ingest("sendgrid", Channel.EMAIL, parse_events(body([bounce])))
    assert report.moved == 1 and report.suppressed == 1
    assert await _status(repo, msg) == "bounced"
    kinds = [k for k, _ in await _events(repo, msg)]
    assert kinds == ["NotificationDelivered", "NotificationBounced"]
    meta = (await _events(repo, msg))[1][1]
    assert meta["bounce_kind"] == "hard" and msg.address not in meta["description"]  # masked
    rows = await repo.pool.fetch("SELECT kind, address, category FROM suppressions WHERE tenant_id = $1", tenant.id)
    assert [(r["kind"], r["address"], r["category"]) for r in rows] == [("email", msg.address, None)]
    figures = await _rollup(repo, tenant)
    assert (figures["delivered"], figures["bounced"]) == (1, 1)


async def test_a_late_delivered_never_moves_a_bounce_back(repo, ingest, tenant) -> None:
    (msg,) = await sent_messages(repo.pool, tenant, 1)
    late = sendgrid_event(msg, "delivered", timestamp=1_700_000_000)
    bounce = sendgrid_event(msg, "bounce", type="bounce", timestamp=1_700_000_100)
    await ingest.ingest("sendgrid", Channel.EMAIL, parse_events(body([bounce])))
    report = await ingest.ingest("sendgrid", Channel.EMAIL, parse_events(body([late])))
    assert await _status(repo, msg) == "bounced"
    assert report.refused == 1 and report.recorded == 1 and report.moved == 0


async def test_soft_bounce_is_an_event_only(repo, ingest, tenant) -> None:
    (msg,) = await sent_messages(repo.pool, tenant, 1)
    soft = sendgrid_event(msg, "bounce", type="blocked", reason="421 try again later")
    report = await ingest.ingest("sendgrid", Channel.EMAIL, parse_events(body([soft])))
    assert (report.recorded, report.moved, report.suppressed) == (1, 0, 0)
    assert await _status(repo, msg) == "sent"
    [(kind, meta)] = await _events(repo, msg)
    assert kind == "NotificationBounced" and meta["bounce_kind"] == "soft" and "status" not in meta
    assert (await _rollup(repo, tenant))["soft_bounced"] == 1


async def test_the_same_provider_event_twice_is_recorded_once(repo, ingest, tenant) -> None:
    (msg,) = await sent_messages(repo.pool, tenant, 1)
    batch = body([sendgrid_event(msg, "delivered"), sendgrid_event(msg, "open", useragent="Mozilla/5.0 (iPhone)")])
    first = await ingest.ingest("sendgrid", Channel.EMAIL, parse_events(batch))
    again = await ingest.ingest("sendgrid", Channel.EMAIL, parse_events(batch))
    assert (first.recorded, first.duplicates) == (2, 0)
    assert (again.recorded, again.duplicates, again.moved) == (0, 2, 0)
    assert len(await _events(repo, msg)) == 2
    payloads = await repo.pool.fetchval("SELECT count(*) FROM provider_event_payloads WHERE tenant_id = $1", tenant.id)
    assert payloads == 2
    engagement = await repo.pool.fetchrow(
        "SELECT count, human_count FROM message_engagement WHERE message_id = $1", msg.id
    )
    assert (engagement["count"], engagement["human_count"]) == (1, 1)
    figures = await _rollup(repo, tenant)
    assert (figures["delivered"], figures["opened"]) == (1, 1)


async def test_unknown_ids_are_kept_as_orphans_and_adopted_once_known(repo, ingest, tenant) -> None:
    ghost = Sent(uuid.uuid4(), uuid.uuid4().hex[:22], "ghost@example.com")
    events = parse_events(body([sendgrid_event(ghost, "delivered")]))
    report = await ingest.ingest("sendgrid", Channel.EMAIL, events)
    assert (report.orphans, report.recorded) == (1, 0)
    row = await repo.pool.fetchrow(
        "SELECT reason, payload FROM orphan_events WHERE dedupe_key = $1", events[0].dedupe_key
    )
    assert row["reason"] == "unknown" and row["payload"]["sg_message_id"].startswith(ghost.pmid)
    again = await ingest.ingest("sendgrid", Channel.EMAIL, events)
    assert again.orphans == 1
    assert (
        await repo.pool.fetchval("SELECT count(*) FROM orphan_events WHERE dedupe_key = $1", events[0].dedupe_key) == 1
    )
    # The send is recorded after all (the webhook overtook it): the orphan finds its message.
    (known,) = await sent_messages(repo.pool, tenant, 1)
    await repo.pool.execute("UPDATE attempts SET provider_message_id = $1 WHERE message_id = $2", ghost.pmid, known.id)
    assert await ingest.adopt_orphans() >= 1
    assert await _status(repo, known) == "delivered"
    assert (
        await repo.pool.fetchval("SELECT count(*) FROM orphan_events WHERE dedupe_key = $1", events[0].dedupe_key) == 0
    )


async def test_an_event_for_a_message_still_being_sent_waits_as_an_early_orphan(repo, ingest, tenant) -> None:
    (msg,) = await sent_messages(repo.pool, tenant, 1, status="sending")
    events = parse_events(body([sendgrid_event(msg, "delivered", message_id=msg.public_id)]))
    report = await ingest.ingest("sendgrid", Channel.EMAIL, events)
    assert report.orphans == 1 and await _status(repo, msg) == "sending"
    assert (
        await repo.pool.fetchval("SELECT reason FROM orphan_events WHERE dedupe_key = $1", events[0].dedupe_key)
        == "early"
    )
    await repo.pool.execute("UPDATE messages SET status = 'sent' WHERE id = $1", msg.id)
    await ingest.adopt_orphans()
    assert await _status(repo, msg) == "delivered"


async def test_a_concurrent_writer_makes_the_batch_read_the_message_again(repo, ingest, tenant) -> None:
    (msg,) = await sent_messages(repo.pool, tenant, 1)
    events = parse_events(body([sendgrid_event(msg, "delivered")]))
    found = await ingest._resolve("sendgrid", events, None)
    await repo.pool.execute("UPDATE messages SET version = version + 1 WHERE id = $1", msg.id)
    done, retry = await ingest._write(plan_batch(events, found))
    assert retry == {msg.id} and done.recorded == 0 and await _events(repo, msg) == []
    report = await ingest.ingest("sendgrid", Channel.EMAIL, events)
    assert report.moved == 1 and await _status(repo, msg) == "delivered"


async def test_an_unsubscribe_suppresses_its_category_in_the_claim(repo, ingest, tenant) -> None:
    (news,) = await sent_messages(repo.pool, tenant, 1, category="marketing")
    await ingest.ingest("sendgrid", Channel.EMAIL, parse_events(body([sendgrid_event(news, "unsubscribe")])))
    row = await repo.pool.fetchrow("SELECT category FROM suppressions WHERE tenant_id = $1", tenant.id)
    assert row["category"] == "marketing"
    later = await sent_messages(repo.pool, tenant, 2, status="queued", category="marketing")
    other = await sent_messages(repo.pool, tenant, 1, status="queued", category="transactional")
    await repo.pool.execute(
        """UPDATE messages SET "to" = jsonb_build_object('email', $1::text) WHERE id = ANY($2::uuid[])""",
        news.address,
        [later[0].id, other[0].id],
    )
    claimed = await repo.claim([later[0].id, later[1].id, other[0].id], 30)
    stopped = {c.id: suppressed_by(c.suppression_categories, c.category, ("auth", "transactional")) for c in claimed}
    assert stopped == {later[0].id: True, later[1].id: False, other[0].id: False}


async def test_an_unregistered_push_token_is_suppressed_for_every_category(repo, ingest, tenant) -> None:
    (push,) = await sent_messages(repo.pool, tenant, 1, provider="fcm", channel="push")
    await repo.pool.execute(
        """UPDATE messages SET "to" = '{"push": {"platform": "fcm", "token": "tok-123"}}' WHERE id = $1""", push.id
    )
    event = DeliveryEvent(
        type=EventType.FAILED,
        provider="fcm",
        channel=Channel.PUSH,
        occurred_at=datetime.now(UTC),
        dedupe_key=f"fcm:{uuid.uuid4().hex}",
        provider_message_id=push.pmid,
        reject_reason=RejectReason.UNREGISTERED,
    )
    report = await ingest.ingest("fcm", Channel.PUSH, [event])
    assert report.moved == 1 and report.suppressed == 1 and await _status(repo, push) == "failed"
    row = await repo.pool.fetchrow("SELECT kind, address, category FROM suppressions WHERE tenant_id = $1", tenant.id)
    assert (row["kind"], row["address"], row["category"]) == ("device_token", "tok-123", None)
    (again,) = await sent_messages(repo.pool, tenant, 1, provider="fcm", channel="push", status="queued")
    await repo.pool.execute(
        """UPDATE messages SET "to" = '{"push": {"platform": "fcm", "token": "tok-123"}}' WHERE id = $1""", again.id
    )
    [claimed] = await repo.claim([again.id], 30)
    assert claimed.suppression_categories == (None,)  # every category: one-time codes too
    assert suppressed_by(claimed.suppression_categories, "auth", ("auth",))


async def test_a_sendgrid_batch_of_1000_is_two_statements(repo, tenant, database_url) -> None:
    messages = await sent_messages(repo.pool, tenant, 1000)
    warm = await sent_messages(repo.pool, tenant, 10)
    kinds = ("delivered", "open", "click", "bounce", "deferred")
    batch = [
        sendgrid_event(m, kinds[i % len(kinds)], useragent="Mozilla/5.0 (Windows NT 10.0) Chrome/120")
        for i, m in enumerate(messages)
    ]
    statements: list[str] = []
    pool = await create_pool(database_url, min_size=1, max_size=1, query_logger=lambda r: statements.append(r.query))
    try:
        counted = FeedbackIngest(pool)
        await counted.ingest(
            "sendgrid", Channel.EMAIL, parse_events(body([sendgrid_event(m, "delivered") for m in warm]))
        )
        statements.clear()
        report = await counted.ingest("sendgrid", Channel.EMAIL, parse_events(body(batch)))
    finally:
        await pool.close()
    assert report.recorded == 1000 and report.orphans == 0
    assert len(statements) == 2, [s[:60] for s in statements]  # resolve + one write
    figures = await _rollup(repo, tenant)
    assert figures["delivered"] == 200 + 10 and figures["bounced"] == 200 and figures["opened"] == 200
    assert figures["clicked"] == 200


async def test_raw_payloads_and_orphans_are_dropped_after_the_retention(repo, ingest, tenant) -> None:
    old, fresh = await sent_messages(repo.pool, tenant, 2)
    ghost = Sent(uuid.uuid4(), uuid.uuid4().hex[:22], "ghost@example.com")
    batch = [sendgrid_event(old, "delivered"), sendgrid_event(fresh, "delivered"), sendgrid_event(ghost, "open")]
    await ingest.ingest("sendgrid", Channel.EMAIL, parse_events(body(batch)))
    await repo.pool.execute(
        "UPDATE provider_event_payloads p SET received_at = now() - interval '31 days' "
        "FROM notification_events e WHERE e.id = p.event_id AND e.message_id = $1",
        old.id,
    )
    await repo.pool.execute(
        "UPDATE orphan_events SET received_at = now() - interval '31 days' WHERE payload->>'sg_message_id' LIKE $1",
        ghost.pmid + "%",
    )
    report = await ingest.purge(30)
    assert report.payloads >= 1 and report.orphans >= 1
    kept = await repo.pool.fetch(
        "SELECT e.message_id FROM provider_event_payloads p JOIN notification_events e ON e.id = p.event_id "
        "WHERE e.tenant_id = $1",
        tenant.id,
    )
    assert [r["message_id"] for r in kept] == [fresh.id]
    assert len(await _events(repo, old)) == 1  # the normalized event stays; only the raw payload goes
