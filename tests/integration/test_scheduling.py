"""Scheduling, cancel and reschedule against the real PostgreSQL: a scheduled message leaves within a second
of its time however many are scheduled later (and the relay reads only due rows: shown by EXPLAIN), and
cancel and reschedule win or lose whole against the relay and the senders' claim."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.broker import Envelope
from engine.channels import Priority
from engine.ids import new_id
from engine.lifecycle.scheduling import Cancelled, SchedulingService
from engine.models import Tenant
from engine.problems import ApiProblem
from engine.states import PENDING
from engine.storage import sql
from engine.storage.repository import Repository, take_outbox
from engine.storage.schedule_store import _CANCEL, ScheduleStore
from tests.integration.lifecycle_support import Harness, clear_leftovers, otp, uuid_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_to_send")]


@pytest.fixture
def svc(repo: Repository) -> SchedulingService:
    return SchedulingService(ScheduleStore(repo.pool))


@pytest.fixture
async def later_rows(repo: Repository) -> AsyncIterator[int]:
    """20,000 outbox rows scheduled from tomorrow on (for messages that need not exist: the relay never
    reaches them), removed afterwards."""
    n = 20_000
    marker = new_id()
    await repo.pool.execute(
        """INSERT INTO outbox (tenant_id, message_id, queue, priority, available_at)
           SELECT $1, gen_random_uuid(), 'notifications.low', (g % 3)::smallint,
                  now() + interval '1 day' + g * interval '1 second'
           FROM generate_series(1, $2) g""",
        marker,
        n,
    )
    await repo.pool.execute("ANALYZE outbox")
    yield n
    await repo.pool.execute("DELETE FROM outbox WHERE tenant_id = $1", marker)


async def problem(call: Any) -> ApiProblem:
    with pytest.raises(ApiProblem) as caught:
        await call
    return caught.value


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", ()) for n in plan_nodes(child))]


# -- scheduling ----------------------------------------------------------------------------------------


async def test_scheduled_messages_leave_within_a_second_of_their_time(
    h: Harness, principal: Any, tenant: Tenant, later_rows: int
) -> None:
    await clear_leftovers(h.repo)  # other tests' pending messages would share this relay and sender
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    ids = [
        await h.submit(principal, otp(f"s{i}@example.com", schedule_at=due.isoformat(), priority=p))
        for i, p in enumerate(("high", "normal", "low"))
    ]
    assert {await h.status(tenant.id, i) for i in ids} == {"scheduled"}
    stop = asyncio.Event()
    relay = asyncio.create_task(h.relay.run(stop))  # the real loop: LISTEN/NOTIFY and its 0.5 s poll
    try:
        give_up = time.time() + 5
        while len(h.driver.sent_at) < len(ids) and time.time() < give_up:
            await h.consume(0.05)
    finally:
        stop.set()
        await relay
    late_s = {i: h.driver.sent_at[i] - due.timestamp() for i in ids}
    assert all(0 <= s < 1.0 for s in late_s.values()), late_s
    assert {await h.status(tenant.id, i) for i in ids} == {"sent"}


async def test_the_relay_reads_only_due_outbox_rows_however_many_are_scheduled(
    repo: Repository, later_rows: int
) -> None:
    marker = new_id()
    await repo.pool.execute(
        """INSERT INTO outbox (tenant_id, message_id, queue, priority, available_at)
           SELECT $1, gen_random_uuid(), 'notifications.normal', (g % 3)::smallint, now() - interval '1 second'
           FROM generate_series(1, 30) g""",
        marker,
    )
    async with repo.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            [plan] = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql.TAKE_OUTBOX, 1000, True, True)
        finally:
            await tx.rollback()
    nodes = plan_nodes(plan["Plan"])
    taken = plan["Plan"]["Actual Rows"]
    outbox_reads = [n for n in nodes if n.get("Relation Name") == "outbox" and n["Node Type"] != "ModifyTable"]
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], "a sequential scan per tick"
    due_scans = [n for n in outbox_reads if n.get("Index Name") == "outbox_due"]
    assert len(due_scans) == 3 and all(n["Node Type"] == "Index Scan" for n in due_scans)
    # Every index entry the relay read was a due row it took: none of the 20,000 later ones.
    assert 30 <= taken < 1000
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in due_scans) == taken
    await repo.pool.execute("DELETE FROM outbox WHERE tenant_id = $1", marker)


async def test_relay_serves_high_before_normal_before_low_oldest_first(repo: Repository) -> None:
    marker = new_id()
    rows = [(2, 30), (0, 10), (1, 20), (0, 40), (2, 5)]  # (priority, seconds ago)
    for rank, ago in rows:
        await repo.pool.execute(
            """INSERT INTO outbox (tenant_id, message_id, queue, priority, available_at)
               VALUES ($1, gen_random_uuid(), 'notifications.normal', $2, now() - make_interval(secs => $3))""",
            marker,
            rank,
            float(ago),
        )
    async with repo.pool.acquire() as conn, conn.transaction():
        taken = [r for r in await take_outbox(conn, 1000) if r.tenant_id == marker]
    assert [r.priority for r in taken] == [0, 0, 1, 2, 2]


# -- cancel ----------------------------------------------------------------------------------------


async def test_cancel_a_queued_message_and_a_second_cancel_answers_the_same(
    h: Harness, svc: SchedulingService, principal: Any, tenant: Tenant, repo: Repository
) -> None:
    public_id = await h.submit(principal, otp())
    first = await svc.cancel(tenant, public_id, actor="ops@t")
    assert first.status == "cancelled" and first.message_id == public_id
    assert await svc.cancel(tenant, public_id, actor="someone-else") == first
    assert await h.status(tenant.id, public_id) == "cancelled"
    events = await h.events(tenant.id, public_id)
    cancelled = [e for e in events if e["type"] == "NotificationCancelled"]
    assert len(cancelled) == 1 and cancelled[0]["meta"] == {"actor": "ops@t"}
    assert await repo.pool.fetchval("SELECT count(*) FROM outbox WHERE message_id = $1", uuid_of(public_id)) == 0
    await h.pump()
    assert public_id not in {m.message_id for m in h.driver.sent}


async def test_cancel_a_scheduled_message_it_never_leaves(
    h: Harness, svc: SchedulingService, principal: Any, tenant: Tenant
) -> None:
    due = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
    public_id = await h.submit(principal, otp(schedule_at=due))
    await svc.cancel(tenant, public_id, actor="ops")
    await asyncio.sleep(0.4)
    await h.pump()
    assert await h.status(tenant.id, public_id) == "cancelled"
    assert public_id not in {m.message_id for m in h.driver.sent}


async def test_cancel_refuses_a_message_that_was_sent_with_its_status(
    h: Harness, svc: SchedulingService, principal: Any, tenant: Tenant
) -> None:
    public_id = await h.submit(principal, otp())
    await h.pump()
    refused = await problem(svc.cancel(tenant, public_id, actor="ops"))
    assert refused.status == 409 and refused.extensions == {"current_status": "sent"}
    assert refused.body()["current_status"] == "sent" and refused.body()["status"] == 409


async def test_cancel_of_an_unknown_malformed_or_foreign_id_is_404(
    h: Harness, svc: SchedulingService, principal: Any, repo: Repository
) -> None:
    public_id = await h.submit(principal, otp())
    other = await repo.ensure_tenant(f"t_{new_id().hex[:12]}")
    for tenant_, mid in ((other, public_id), (other, "msg_nothex"), (other, "msg_" + new_id().hex)):
        assert (await problem(svc.cancel(tenant_, mid, actor="x"))).status == 404


async def test_the_claim_refuses_a_message_cancelled_after_the_relay_published_it(
    h: Harness, svc: SchedulingService, principal: Any, tenant: Tenant
) -> None:
    public_id = await h.submit(principal, otp())
    await h.relay.drain()  # its envelope is in the queue
    await svc.cancel(tenant, public_id, actor="ops")
    await h.consume()
    assert await h.status(tenant.id, public_id) == "cancelled"
    assert public_id not in {m.message_id for m in h.driver.sent}


async def test_cancel_and_claim_on_one_row_one_waits_for_the_other_and_loses(
    h: Harness, principal: Any, tenant: Tenant, repo: Repository
) -> None:
    first = uuid_of(await h.submit(principal, otp("a@example.com")))
    second = uuid_of(await h.submit(principal, otp("b@example.com")))
    pending = [s.value for s in PENDING]
    async with repo.pool.acquire() as canceller, repo.pool.acquire() as sender:
        # The cancel holds the row: the claim waits, then finds it cancelled.
        tx = canceller.transaction()
        await tx.start()
        assert await canceller.fetchval(_CANCEL, tenant.id, first, pending, new_id(), "NotificationCancelled", {})
        claim = asyncio.create_task(sender.fetch(sql.CLAIM, [first], 30.0))
        await asyncio.sleep(0.2)
        assert not claim.done()
        await tx.commit()
        assert await claim == []
        # The claim holds the row: the cancel waits, then finds it sending.
        tx = sender.transaction()
        await tx.start()
        assert len(await sender.fetch(sql.CLAIM, [second], 30.0)) == 1
        cancel = asyncio.create_task(
            canceller.fetchval(_CANCEL, tenant.id, second, pending, new_id(), "NotificationCancelled", {})
        )
        await asyncio.sleep(0.2)
        assert not cancel.done()
        await tx.commit()
        assert await cancel is None


async def test_concurrent_cancels_and_claims_each_message_is_cancelled_or_sent_never_both(
    h: Harness, svc: SchedulingService, principal: Any, tenant: Tenant
) -> None:
    ids = [await h.submit(principal, otp(f"r{i}@example.com")) for i in range(60)]
    await h.relay.drain()
    rows = [uuid_of(i) for i in ids]

    async def cancel(public_id: str) -> Cancelled | ApiProblem:
        try:
            return await svc.cancel(tenant, public_id, actor="ops")
        except ApiProblem as refused:
            return refused

    results = await asyncio.gather(
        *(cancel(i) for i in ids[::2]),
        *(h.dispatcher.process(rows[k : k + 6]) for k in range(0, 60, 6)),
        *(cancel(i) for i in ids[1::2]),
    )
    outcomes = dict(zip(ids[::2] + ids[1::2], results[:30] + results[-30:], strict=True))
    sent = {m.message_id for m in h.driver.sent}
    for public_id, outcome in outcomes.items():
        status = await h.status(tenant.id, public_id)
        if isinstance(outcome, Cancelled):
            assert status == "cancelled" and public_id not in sent
        else:
            assert outcome.status == 409 and outcome.extensions["current_status"] in ("sending", "sent")
            assert status == "sent" and public_id in sent
    assert len(sent) == len(h.driver.sent)  # nothing sent twice


async def test_cancel_waits_for_a_relay_holding_the_outbox_row_and_the_claim_then_refuses(
    h: Harness, svc: SchedulingService, principal: Any, tenant: Tenant, repo: Repository
) -> None:
    public_id = await h.submit(principal, otp())
    async with repo.pool.acquire() as relay_conn:
        tx = relay_conn.transaction()
        await tx.start()  # the relay took the row and waits for the broker's confirm
        taken = [r for r in await take_outbox(relay_conn, 1000) if r.message_id == uuid_of(public_id)]
        assert taken
        await h.broker.publish("notifications.normal", [Envelope(Priority.NORMAL, (taken[0].message_id,))])
        cancel = asyncio.create_task(svc.cancel(tenant, public_id, actor="ops"))
        await asyncio.sleep(0.2)
        await tx.commit()
    assert (await cancel).status == "cancelled"
    await h.consume()
    assert public_id not in {m.message_id for m in h.driver.sent}


# -- reschedule ------------------------------------------------------------------------------------


async def test_reschedule_moves_the_time_the_outbox_row_and_the_ttl(
    h: Harness, svc: SchedulingService, principal: Any, tenant: Tenant, repo: Repository
) -> None:
    first = datetime.now(UTC) + timedelta(hours=1)
    public_id = await h.submit(principal, otp(schedule_at=first.isoformat(), ttl_seconds=600))
    later = first + timedelta(hours=2)
    moved = await svc.reschedule(tenant, public_id, later, actor="ops")
    assert moved.status == "scheduled" and moved.schedule_at == later
    assert moved.expires_at == later + timedelta(seconds=600)
    mid = uuid_of(public_id)
    assert await repo.pool.fetchval("SELECT available_at FROM outbox WHERE message_id = $1", mid) == later
    [event] = [e for e in await h.events(tenant.id, public_id) if e["type"] == "NotificationRescheduled"]
    assert event["meta"]["actor"] == "ops"
    assert datetime.fromisoformat(event["meta"]["previous_schedule_at"]) == first


async def test_reschedule_into_the_past_sends_now(
    h: Harness, svc: SchedulingService, principal: Any, tenant: Tenant
) -> None:
    public_id = await h.submit(principal, otp(schedule_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()))
    await h.pump()
    assert await h.status(tenant.id, public_id) == "scheduled"
    await svc.reschedule(tenant, public_id, datetime(2020, 1, 1, tzinfo=UTC), actor="ops")
    await h.pump()
    assert await h.status(tenant.id, public_id) == "sent"


async def test_reschedule_refusals(h: Harness, svc: SchedulingService, principal: Any, tenant: Tenant) -> None:
    queued = await h.submit(principal, otp())
    refused = await problem(svc.reschedule(tenant, queued, datetime.now(UTC) + timedelta(hours=1), actor="ops"))
    assert refused.status == 409 and refused.extensions == {"current_status": "queued"}
    naive = await problem(svc.reschedule(tenant, queued, datetime(2030, 1, 1), actor="ops"))
    assert naive.status == 422 and [e.loc for e in naive.errors] == [("body", "schedule_at")]
    missing = await problem(svc.reschedule(tenant, "msg_" + new_id().hex, datetime.now(UTC), actor="ops"))
    assert missing.status == 404


async def test_reschedule_after_the_relay_took_it_is_refused_and_it_is_sent_once(
    h: Harness, svc: SchedulingService, principal: Any, tenant: Tenant
) -> None:
    public_id = await h.submit(principal, otp(schedule_at=(datetime.now(UTC) + timedelta(seconds=0.2)).isoformat()))
    await asyncio.sleep(0.3)
    await h.relay.drain()  # due: on its way to a sender
    refused = await problem(svc.reschedule(tenant, public_id, datetime.now(UTC) + timedelta(hours=1), actor="ops"))
    assert refused.status == 409 and refused.extensions == {"current_status": "scheduled"}
    await h.consume()
    assert await h.status(tenant.id, public_id) == "sent"
    assert [m.message_id for m in h.driver.sent].count(public_id) == 1


async def test_reschedule_waits_for_a_relay_holding_the_row_then_refuses(
    h: Harness, svc: SchedulingService, principal: Any, tenant: Tenant, repo: Repository
) -> None:
    public_id = await h.submit(principal, otp(schedule_at=(datetime.now(UTC) + timedelta(seconds=0.2)).isoformat()))
    await asyncio.sleep(0.3)
    async with repo.pool.acquire() as relay_conn:
        tx = relay_conn.transaction()
        await tx.start()
        assert [r for r in await take_outbox(relay_conn, 1000) if r.message_id == uuid_of(public_id)]
        later = datetime.now(UTC) + timedelta(hours=1)
        moving = asyncio.create_task(svc.reschedule(tenant, public_id, later, actor="ops"))
        await asyncio.sleep(0.2)
        assert not moving.done()
        await tx.commit()
    refused = await problem(moving)
    assert refused.status == 409
