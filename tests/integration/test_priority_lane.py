"""Priority isolation in a sender: while its main lane is stuck in a batch of a ``low`` backlog, a one-time
code published to ``notifications.high`` is taken by the reserved lane and sent, on both brokers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from drivers.base import OutboundMessage, SendResult
from engine.auth import Principal
from engine.broker import Envelope
from engine.broker.base import HIGH_SENDER_CONSUMER_PRIORITY
from engine.channels import Priority, priority_queue
from engine.ids import parse_message_id
from engine.models import Tenant
from engine.relay import NOTIFY_CHANNEL, Relay, RelayOptions
from engine.sender_loop import SenderLoop
from tests.broker.conftest import BrokerFactory, delete_rabbit_queues, rabbit_broker, unique_prefix
from tests.integration.lifecycle_support import ClockedDriver, Harness, otp

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_to_send")]


class GatedDriver(ClockedDriver):
    """Holds every ``low`` send until ``gate`` opens (the main lane's batch in hand)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.held = asyncio.Event()

    async def send_one(self, message: OutboundMessage) -> SendResult:
        if message.priority == "low":
            self.held.set()
            await self.gate.wait()
        return await super().send_one(message)


@pytest.fixture
async def lane_harness(
    h: Harness, target: tuple[str, str], make: BrokerFactory, database_url: str
) -> AsyncIterator[Harness]:
    """The harness on each broker (``make``: a queue namespace of the test's own, closed and deleted after)."""
    h.driver = driver = GatedDriver()
    h.dispatcher.router.drivers = {**h.dispatcher.drivers}  # the same chain, now with the gated driver
    for chain in (h.dispatcher.drivers, h.dispatcher.router.drivers):
        for channel in list(chain):
            chain[channel] = [driver]  # type: ignore[index]
    broker = await make(**({"prefetch": 20} if target[0] == "rabbitmq" else {"lease_s": 30}))
    await h.broker.close()  # the harness' own queue (its LISTEN connection goes back to the pool)
    h.broker = broker
    h.relay = Relay(h.repo, broker, RelayOptions(batch=500, envelope_max_ids=10), listen_dsn=database_url)
    yield h
    driver.gate.set()


async def test_a_one_time_code_goes_out_while_the_main_lane_is_held_by_a_low_batch(
    lane_harness: Harness, principal: Principal
) -> None:
    h = lane_harness
    driver = h.driver
    assert isinstance(driver, GatedDriver)
    low = {
        "channel": "email",
        "template_id": "security_alert:v1",
        "variables": {"device": "Firefox"},
        "priority": "low",
    }
    for i in range(40):
        await h.submit(principal, {**low, "to": {"email": f"user{i}@example.com"}})
    await h.relay.drain()
    loop = SenderLoop(h.broker, h.dispatcher, max_envelopes=20, wait_s=0.2)
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(driver.held.wait(), 10)  # the main lane holds a low batch
        code = await h.submit(principal, otp(priority="high"))
        await h.relay.drain()
        for _ in range(200):
            if code in driver.sent_at:
                break
            await asyncio.sleep(0.05)
        assert code in driver.sent_at, "the one-time code waited behind the low batch"
        assert list(driver.sent_at) == [code]  # and no low one went before it
    finally:
        driver.gate.set()
        await loop.stop(10)
        await task
    assert loop.batches >= 2


async def test_the_relay_publishes_a_one_time_code_while_its_main_pass_waits_on_a_low_batch(
    h: Harness, principal: Principal
) -> None:
    published = h.broker.publish
    gate, held = asyncio.Event(), asyncio.Event()

    async def publish(queue: str, envelopes: Sequence[Envelope]) -> None:
        if queue == priority_queue(Priority.LOW):
            held.set()
            await gate.wait()  # the broker is slow to confirm the burst's envelopes
        await published(queue, envelopes)

    h.broker.publish = publish  # type: ignore[method-assign]
    low = {"channel": "email", "template_id": "security_alert:v1", "variables": {"device": "Firefox"}}
    for i in range(30):
        await h.submit(principal, {**low, "priority": "low", "to": {"email": f"user{i}@example.com"}})
    stop = asyncio.Event()
    relay = asyncio.create_task(h.relay.run(stop))
    try:
        await asyncio.wait_for(held.wait(), 10)  # the main pass holds the low rows it took
        code = await h.submit(principal, otp(priority="high"))
        deliveries = await h.broker.get(20, 5.0, priorities=(Priority.HIGH,))
        assert [i for d in deliveries for i in d.envelope.message_ids] == [parse_message_id(code)]
        for d in deliveries:
            await d.ack()
    finally:
        gate.set()
        stop.set()
        await relay


async def test_the_main_lane_sends_a_high_envelope_on_its_own_before_the_low_ones_it_took(
    h: Harness, principal: Principal
) -> None:
    low = {"channel": "email", "template_id": "security_alert:v1", "variables": {"device": "Firefox"}}
    for i in range(30):
        await h.submit(principal, {**low, "priority": "low", "to": {"email": f"user{i}@example.com"}})
    code = await h.submit(principal, otp(priority="high"))
    await h.relay.drain()
    batches = h.driver.calls  # the message ids of each send_batch call, in order
    batches.clear()
    loop = SenderLoop(h.broker, h.dispatcher, max_envelopes=20, max_batch=10, wait_s=0.2, high_lane=False)
    task = asyncio.create_task(loop.run())
    try:
        for _ in range(200):
            if sum(map(len, batches)) >= 31:
                break
            await asyncio.sleep(0.05)
    finally:
        await loop.stop(10)
        await task
    assert batches[0] == [code]  # the one-time code alone, first
    assert sorted(map(len, batches[1:])) == [10, 10, 10]  # the low ones in slices of max_batch


async def test_the_reserved_lane_sends_a_second_code_while_the_first_one_is_still_being_recorded(
    lane_harness: Harness, principal: Principal
) -> None:
    h = lane_harness
    driver = h.driver
    assert isinstance(driver, GatedDriver)
    recorded = h.repo.record
    first_held, release = asyncio.Event(), asyncio.Event()

    async def record(outcomes):  # type: ignore[no-untyped-def]
        if not first_held.is_set():
            first_held.set()
            await release.wait()  # the first code's record waits on the burst's writes
        return await recorded(outcomes)

    h.repo.record = record  # type: ignore[method-assign]
    loop = SenderLoop(h.broker, h.dispatcher, max_envelopes=20, wait_s=0.2, main_lane=False)
    task = asyncio.create_task(loop.run())
    try:
        first = await h.submit(principal, otp("ada@example.com", priority="high"))
        await h.relay.drain()
        await asyncio.wait_for(first_held.wait(), 10)
        second = await h.submit(principal, otp("grace@example.com", priority="high"))
        await h.relay.drain()
        for _ in range(200):
            if second in driver.sent_at:
                break
            await asyncio.sleep(0.05)
        assert second in driver.sent_at, "the second code waited for the first one's record"
    finally:
        release.set()
        await loop.stop(10)
        await task
    assert {first, second} <= set(driver.sent_at)
    rows = await h.repo.pool.fetch(
        "SELECT status FROM messages WHERE id = ANY($1::uuid[])", [parse_message_id(first), parse_message_id(second)]
    )
    assert [r["status"] for r in rows] == ["sent", "sent"]  # both recorded before the loop stopped


async def test_a_high_only_sender_leaves_the_low_backlog_to_the_others(
    lane_harness: Harness, principal: Principal
) -> None:
    h = lane_harness
    driver = h.driver
    assert isinstance(driver, GatedDriver)
    low = {"channel": "email", "template_id": "security_alert:v1", "variables": {"device": "Firefox"}}
    for i in range(5):
        await h.submit(principal, {**low, "priority": "low", "to": {"email": f"user{i}@example.com"}})
    code = await h.submit(principal, otp(priority="high"))
    await h.relay.drain()
    loop = SenderLoop(h.broker, h.dispatcher, max_envelopes=20, wait_s=0.2, main_lane=False)
    task = asyncio.create_task(loop.run())
    try:
        for _ in range(200):
            if code in driver.sent_at:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        await loop.stop(10)
        await task
    assert list(driver.sent_at) == [code] and not driver.held.is_set()
    driver.gate.set()
    other = SenderLoop(h.broker, h.dispatcher, max_envelopes=20, wait_s=0.2)  # the backlog is still there
    task = asyncio.create_task(other.run())
    try:
        for _ in range(200):
            if len(driver.sent_at) == 6:
                break
            await asyncio.sleep(0.05)
    finally:
        await other.stop(10)
        await task
    assert len(driver.sent_at) == 6


async def test_rabbitmq_hands_one_time_codes_to_the_dedicated_sender_first(amqp_url: str) -> None:
    prefix = unique_prefix("p")
    shared = rabbit_broker(amqp_url, prefix, prefetch=20)
    dedicated = rabbit_broker(
        amqp_url, prefix, prefetch=20, consume=(Priority.HIGH,), consumer_priority=HIGH_SENDER_CONSUMER_PRIORITY
    )
    try:
        for b in (shared, dedicated):
            await b.connect()
            assert await b.get(1, 0.05) == []  # consumers up
        await shared.publish(priority_queue(Priority.LOW), [Envelope(Priority.LOW, (uuid.uuid4(),))])
        codes = [Envelope(Priority.HIGH, (uuid.uuid4(),)) for _ in range(10)]
        await shared.publish(priority_queue(Priority.HIGH), codes)
        taken = await dedicated.get(20, 2.0)
        for _ in range(20):
            if len(taken) == len(codes):
                break
            taken += await dedicated.get(20, 0.1)
        assert sorted(d.envelope.message_ids for d in taken) == sorted(e.message_ids for e in codes)
        left = await shared.get(20, 1.0)
        assert [d.envelope.priority for d in left] == [Priority.LOW]  # the shared consumer got no code
        for d in [*taken, *left]:
            await d.ack()
    finally:
        await dedicated.close()
        await shared.close()
        await delete_rabbit_queues(amqp_url, prefix)


async def test_a_record_that_queues_nothing_wakes_no_relay(h: Harness, database_url: str) -> None:
    listener = await asyncpg.connect(database_url)
    woken: list[str] = []
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: woken.append(args[-1]))
    tenant = await h.repo.ensure_tenant("t_relay_wake")
    message_id = uuid.uuid4()
    insert = "INSERT INTO outbox (tenant_id, message_id, queue, priority) SELECT $1, $2, 'notifications.low', 2"
    try:
        await h.repo.pool.execute(insert + " WHERE false", tenant.id, message_id)  # as a record of sent ones
        await asyncio.sleep(0.3)
        assert woken == []  # NOTIFY serializes commits: none for nothing
        await h.repo.pool.execute(insert, tenant.id, message_id)
        for _ in range(50):
            if woken:
                break
            await asyncio.sleep(0.05)
        assert woken, "a queued row did not wake the relay"
    finally:
        await listener.close()
        await h.repo.pool.execute("DELETE FROM outbox WHERE message_id = $1", message_id)


async def test_a_one_time_code_is_recorded_while_a_burst_record_of_its_tenant_is_still_open(
    h: Harness, principal: Principal, tenant: Tenant
) -> None:
    """A burst's record statement holds its tenant's counter rows (month's spend, day's rollup) until its
    commit; the code's record adds to other rows of the same counters (stripes) and does not wait."""
    low = await h.submit(principal, otp("bulk@example.com", priority="low"))
    code = await h.submit(principal, otp("ada@example.com", priority="high", variables={"code": "112233"}))
    pool = h.repo.pool
    async with pool.acquire() as conn, conn.transaction():
        h.repo.pool = conn  # type: ignore[assignment]  # the burst's batch, recorded and not committed yet
        try:
            assert (await h.dispatcher.process([parse_message_id(low)])).sent == 1
        finally:
            h.repo.pool = pool
        report = await asyncio.wait_for(h.dispatcher.process([parse_message_id(code)]), 5)
        assert report.sent == 1, "the code's record waited on the burst's counter rows"
    spend = await pool.fetchrow(
        "SELECT sum(sent) AS sent, count(*) AS stripes FROM budget_spend WHERE tenant_id = $1", tenant.id
    )
    rollup = await pool.fetchrow(
        "SELECT sum(sent) AS sent, count(*) AS stripes FROM analytics_daily WHERE tenant_id = $1", tenant.id
    )
    assert (spend["sent"], spend["stripes"]) == (2, 2)  # both counted, each in its own stripe
    assert (rollup["sent"], rollup["stripes"]) == (2, 2)
