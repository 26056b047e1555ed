"""The relay's backlog cap, on both brokers: a burst waits in the outbox while its queue holds the cap, a
one-time code still goes at once, and as the senders take envelopes the relay tops the queue up until every
row is published, each exactly once."""

from __future__ import annotations

import uuid

import pytest

from engine.channels import Priority, priority_queue
from engine.ids import new_id
from engine.relay import Relay, RelayOptions
from engine.storage.repository import Repository
from tests.broker.conftest import BrokerFactory

pytestmark = pytest.mark.integration

HIGH, LOW = priority_queue(Priority.HIGH), priority_queue(Priority.LOW)
BURST, CAP, BATCH, PER_ENVELOPE = 3000, 4, 500, 100


async def _add_rows(repo: Repository, tenant: uuid.UUID, n: int, rank: int) -> list[uuid.UUID]:
    queue = priority_queue([Priority.HIGH, Priority.NORMAL, Priority.LOW][rank])
    rows = await repo.pool.fetch(
        """INSERT INTO outbox (tenant_id, message_id, queue, priority, available_at)
           SELECT $1, gen_random_uuid(), $2, $3::smallint, now() - interval '1 second'
           FROM generate_series(1, $4) RETURNING message_id""",
        tenant,
        queue,
        rank,
        n,
    )
    return [r["message_id"] for r in rows]


async def test_a_burst_waits_in_the_outbox_while_its_queue_holds_the_cap(
    repo: Repository, make: BrokerFactory, database_url: str
) -> None:
    broker = await make()
    tenant = new_id()
    burst = await _add_rows(repo, tenant, BURST, rank=2)
    options = RelayOptions(batch=BATCH, envelope_max_ids=PER_ENVELOPE, backlog_cap=CAP, backlog_recheck_s=0.0)
    relay = Relay(repo, broker, options, listen_dsn=database_url)
    try:
        await relay.drain()
        ready = (await broker.ready([LOW]))[LOW]
        assert CAP <= ready <= CAP + BATCH // PER_ENVELOPE  # at most one pass beyond the cap
        left = await repo.pool.fetchval("SELECT count(*) FROM outbox WHERE tenant_id = $1", tenant)
        assert left == BURST - ready * PER_ENVELOPE

        [code] = await _add_rows(repo, tenant, 1, rank=0)
        await relay.drain()
        assert (await broker.ready([HIGH]))[HIGH] == 1  # never held back

        published: list[uuid.UUID] = []
        for _ in range(200):
            deliveries = await broker.get(2, 1.0)  # the senders take two envelopes at a time
            for d in deliveries:
                published.extend(d.envelope.message_ids)
                await d.ack()
            await relay.drain()
            if len(published) == BURST + 1:
                break
            depth = (await broker.ready([LOW]))[LOW]
            assert depth <= CAP + BATCH // PER_ENVELOPE
        assert sorted(published) == sorted([*burst, code])  # each exactly once
    finally:
        await repo.pool.execute("DELETE FROM outbox WHERE tenant_id = $1", tenant)
