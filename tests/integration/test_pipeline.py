"""The engine's path of a message against the real PostgreSQL: intake -> outbox -> relay -> broker ->
dispatcher -> record, with a scripted driver. No Ray: the actors only wrap these objects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from drivers.fake import FakeDriver
from engine.auth import Principal
from engine.broker.pgqueue import PgQueueBroker
from engine.channels import Channel
from engine.dispatch import Dispatcher, DispatchOptions
from engine.errors import BadRecipientError, ProviderDownError, RetryableError, ThrottledError
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.problems import ApiProblem
from engine.relay import Relay, RelayOptions
from engine.retries import RetryPolicy
from engine.storage import sql
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog

pytestmark = pytest.mark.integration


def otp(email: str = "ada@example.com", **extra: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login:v3",
        "locale": "en-GB",
        "to": {"email": email},
        "variables": {"code": "384921"},
        **extra,
    }


class Pipeline:
    def __init__(self, repo: Repository, catalog: TemplateCatalog, database_url: str, *chain: FakeDriver) -> None:
        self.repo = repo
        self.metrics = MetricsBuffer()
        self.intake = Intake(repo, catalog, metrics=self.metrics, idempotency_ttl_s=3600)
        self.broker = PgQueueBroker(repo.pool, queue_prefix=f"p{uuid.uuid4().hex[:8]}.", lease_s=30)
        self.relay = Relay(repo, self.broker, RelayOptions(batch=500), listen_dsn=database_url)
        self.drivers = list(chain) or [FakeDriver()]
        self.dispatcher = Dispatcher(
            repo,
            catalog,
            {Channel.EMAIL: self.drivers},
            policy=RetryPolicy(delays_s=(0.05, 0.05, 0.05), jitter=0.0),
            metrics=self.metrics,
            options=DispatchOptions(lease_s=30),
        )

    async def submit(self, principal: Principal, body: dict[str, Any], key: str | None = None) -> str:
        accepted = await self.intake.submit(principal, body, key or uuid.uuid4().hex)
        return str(accepted.body["message_id"])

    async def pump(self, rounds: int = 1) -> int:
        """Relay due outbox rows, then send whatever the broker hands out; returns messages sent.

        The relay takes every due row of the database, other tests' too: assert on statuses."""
        sent = 0
        for _ in range(rounds):
            await self.relay.drain()
            deliveries = await self.broker.get(100, 0.2)
            ids = [i for d in deliveries for i in d.envelope.message_ids]
            if ids:
                sent += (await self.dispatcher.process(ids)).sent
            for d in deliveries:
                await d.ack()
        return sent

    async def status(self, tenant_id: uuid.UUID, public_id: str) -> dict[str, Any]:
        mid = parse_message_id(public_id)
        assert mid is not None
        row = await self.repo.message_view(tenant_id, mid)
        assert row is not None
        return row


@pytest.fixture
async def pipe(repo: Repository, catalog: TemplateCatalog, database_url: str) -> AsyncIterator[Pipeline]:
    p = Pipeline(repo, catalog, database_url)
    await p.broker.connect()
    yield p
    await p.broker.close()


async def test_accepted_message_is_sent_with_events_and_attempt(pipe: Pipeline, principal, tenant) -> None:
    public_id = await pipe.submit(principal, otp())
    assert (await pipe.status(tenant.id, public_id))["status"] == "queued"
    await pipe.pump()
    row = await pipe.status(tenant.id, public_id)
    assert row["status"] == "sent" and row["provider"] == "fake"
    assert [e["type"] for e in row["event_rows"]] == ["NotificationAccepted", "NotificationSent"]
    assert [(a["attempt_no"], a["outcome"]) for a in row["attempt_rows"]] == [(1, "sent")]
    sent = pipe.drivers[0].sent[0]
    assert sent.to.email == "ada@example.com" and "384921" in (sent.content.text or "")
    assert sent.locale == "en-GB" and sent.template_id == "otp_login:v3"


async def test_batch_of_100_costs_two_statements(pipe: Pipeline, principal, catalog, database_url) -> None:
    ids = [parse_message_id(await pipe.submit(principal, otp(f"u{i}@example.com"))) for i in range(200)]
    statements: list[str] = []
    counted = await create_pool(
        database_url, min_size=1, max_size=1, query_logger=lambda record: statements.append(record.query)
    )
    try:
        dispatcher = Dispatcher(
            Repository(counted),
            catalog,
            {Channel.EMAIL: [FakeDriver()]},
            policy=RetryPolicy(),
            metrics=MetricsBuffer(),
            options=DispatchOptions(),
        )
        warm = await dispatcher.process([i for i in ids[:100] if i is not None])  # type introspection, once
        statements.clear()
        report = await dispatcher.process([i for i in ids[100:] if i is not None])
    finally:
        await counted.close()
    assert warm.sent == report.sent == 100
    # claim + the batch's dedupe claims (one-time codes: the auth category has a window) + record
    assert len(statements) == 3, statements
    assert "dedupe_claims" in statements[1]


async def test_concurrent_duplicates_make_one_message(pipe: Pipeline, principal, tenant, repo) -> None:
    results = await asyncio.gather(
        *(pipe.intake.submit(principal, otp(), "same-key") for _ in range(20)), return_exceptions=True
    )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    assert all(not isinstance(r, BaseException) or (isinstance(r, ApiProblem) and r.status == 409) for r in results)
    assert len({a.body["message_id"] for a in accepted}) == 1
    assert sum(not a.replayed for a in accepted) == 1
    count = await repo.pool.fetchval(
        "SELECT count(*) FROM messages WHERE tenant_id = $1 AND idempotency_key = 'same-key'", tenant.id
    )
    assert count == 1
    await pipe.pump()
    assert len(pipe.drivers[0].sent) == 1


async def test_same_key_different_body_is_refused(pipe: Pipeline, principal) -> None:
    await pipe.intake.submit(principal, otp(), "k-1")
    replay = await pipe.intake.submit(principal, otp(trace_id="other-trace"), "k-1")
    assert replay.replayed and replay.status_code == 202
    with pytest.raises(ApiProblem) as err:
        await pipe.intake.submit(principal, otp("someone-else@example.com"), "k-1")
    assert err.value.status == 422 and err.value.errors[0].loc == ("header", "Idempotency-Key")


async def test_retries_then_dead_letter(repo, catalog, database_url, principal, tenant) -> None:
    flaky = FakeDriver()
    flaky.fail_next(RetryableError("503 from provider", code="503"), times=10)
    pipe = Pipeline(repo, catalog, database_url, flaky)
    await pipe.broker.connect()
    public_id = await pipe.submit(principal, otp())
    for _ in range(12):
        await pipe.pump()
        if (await pipe.status(tenant.id, public_id))["status"] == "dead":
            break
        await asyncio.sleep(0.06)
    row = await pipe.status(tenant.id, public_id)
    assert row["status"] == "dead"
    types = [e["type"] for e in row["event_rows"]]
    assert types.count("NotificationRetryScheduled") == 3 and types[-1] == "NotificationDeadLettered"
    assert [a["outcome"] for a in row["attempt_rows"]] == ["queued", "queued", "queued", "dead"]
    await pipe.relay.drain()
    depths = await pipe.broker.depths()
    assert any(q.endswith("notifications.dlq.email") and n >= 1 for q, n in depths.items())
    await pipe.broker.close()


async def test_provider_down_fails_over_to_next(repo, catalog, database_url, principal, tenant) -> None:
    down, backup = FakeDriver("primary"), FakeDriver("backup")
    down.down = ProviderDownError("account paused", code="AccountSendingPausedException")
    pipe = Pipeline(repo, catalog, database_url, down, backup)
    await pipe.broker.connect()
    public_id = await pipe.submit(principal, otp())
    await pipe.pump()
    row = await pipe.status(tenant.id, public_id)
    assert row["status"] == "sent" and row["provider"] == "backup"
    await pipe.broker.close()


async def test_throttled_waits_retry_after(repo, catalog, database_url, principal, tenant) -> None:
    throttled = FakeDriver()
    throttled.fail_next(ThrottledError("429", retry_after_s=30))
    pipe = Pipeline(repo, catalog, database_url, throttled)
    await pipe.broker.connect()
    public_id = await pipe.submit(principal, otp())
    await pipe.pump()
    row = await pipe.status(tenant.id, public_id)
    assert row["status"] == "throttled"
    mid = parse_message_id(public_id)
    due = await repo.pool.fetchval("SELECT available_at FROM outbox WHERE message_id = $1", mid)
    assert due - datetime.now(UTC) > timedelta(seconds=25)
    await pipe.broker.close()


async def test_bad_recipient_fails_without_retry(repo, catalog, database_url, principal, tenant) -> None:
    driver = FakeDriver()
    driver.fail_for("bounce@example.com", BadRecipientError("mailbox does not exist", code="550"))
    pipe = Pipeline(repo, catalog, database_url, driver)
    await pipe.broker.connect()
    public_id = await pipe.submit(principal, otp("bounce@example.com"))
    await pipe.pump()
    row = await pipe.status(tenant.id, public_id)
    assert row["status"] == "failed"
    assert row["attempt_rows"][0]["error_class"] == "bad_recipient"
    await pipe.broker.close()


async def test_ttl_expired_is_not_sent(pipe: Pipeline, principal, tenant) -> None:
    public_id = await pipe.submit(principal, otp(ttl_seconds=1))
    await asyncio.sleep(1.1)
    await pipe.pump()
    row = await pipe.status(tenant.id, public_id)
    assert row["status"] == "expired" and not pipe.drivers[0].sent


async def test_scheduled_waits_until_due(pipe: Pipeline, principal, tenant) -> None:
    due = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    public_id = await pipe.submit(principal, otp(schedule_at=due))
    assert (await pipe.status(tenant.id, public_id))["status"] == "scheduled"
    await pipe.pump()
    assert (await pipe.status(tenant.id, public_id))["status"] == "scheduled"
    await asyncio.sleep(1.6)
    await pipe.pump()
    assert (await pipe.status(tenant.id, public_id))["status"] == "sent"


async def test_expired_lease_is_reclaimed_and_late_writes_do_not_go_backwards(pipe, principal, tenant, repo) -> None:
    public_id = await pipe.submit(principal, otp())
    mid = parse_message_id(public_id)
    assert mid is not None
    await pipe.relay.drain()
    claimed = await repo.claim([mid], lease_s=0.05)  # a sender that dies after claiming
    assert len(claimed) == 1
    assert await repo.claim([mid], lease_s=30) == []  # leased: a redelivery cannot take it
    await asyncio.sleep(0.1)
    assert await repo.reclaim_expired_leases() == 1
    assert (await pipe.status(tenant.id, public_id))["status"] == "queued"
    await pipe.pump(rounds=2)
    assert (await pipe.status(tenant.id, public_id))["status"] == "sent"
    assert (await pipe.dispatcher.process([mid])).claimed == 0  # a redelivered envelope sends nothing twice


async def test_mid_batch_outage_fails_over_only_what_was_not_sent(
    repo, catalog, database_url, principal, tenant
) -> None:
    primary, backup = FakeDriver("primary"), FakeDriver("backup")
    primary.down_after(3, ProviderDownError("account paused", code="AccountSendingPausedException"))
    pipe = Pipeline(repo, catalog, database_url, primary, backup)
    await pipe.broker.connect()
    ours = [await pipe.submit(principal, otp(f"outage{i}@example.com")) for i in range(6)]
    await pipe.pump()
    by_provider = {d.name: {m.message_id for m in d.sent} & set(ours) for d in (primary, backup)}
    assert len(by_provider["primary"]) == 3 and len(by_provider["backup"]) == 3
    assert not by_provider["primary"] & by_provider["backup"]  # nothing the primary accepted went again
    # the backup was handed only the ones the primary never sent: the one refused and the two never started
    assert [set(call) & set(ours) for call in backup.calls if set(call) & set(ours)] == [by_provider["backup"]]
    outcomes = []
    for public_id in ours:
        row = await pipe.status(tenant.id, public_id)
        assert row["status"] == "sent"
        assert public_id in by_provider[row["provider"]]
        outcomes.append([(a["provider"], a["outcome"]) for a in row["attempt_rows"]])
    await pipe.broker.close()
    # an attempt row for every provider that saw the message: the one refused was tried at the primary,
    # the two never started were not
    assert sorted(outcomes) == sorted(
        [[("primary", "sent")]] * 3 + [[("primary", "failover"), ("backup", "sent")]] + [[("backup", "sent")]] * 2
    )


async def test_a_claim_commits_without_waiting_for_its_wal_flush(pipe: Pipeline, principal, repo: Repository) -> None:
    """The lease is the write a burst made a one-time code wait on; the record stays durable."""
    message_id = parse_message_id(await pipe.submit(principal, otp()))
    async with repo.pool.acquire() as conn:
        async with conn.transaction():
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
            assert len(await conn.fetch(sql.CLAIM, [message_id], 30.0)) == 1
            assert await conn.fetchval("SHOW synchronous_commit") == "off"  # for this transaction alone
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
    await pipe.pump()  # the relay's row; the lease is live, so nothing is sent twice
    await repo.pool.execute("UPDATE messages SET status = 'sent', claimed_until = NULL WHERE id = $1", message_id)


async def test_a_senders_pool_plans_the_claim_once(database_url: str, pipe: Pipeline, principal) -> None:
    """Left to choose, PostgreSQL planned the claim anew on every call once ``messages`` had statistics of
    some size (a custom plan for the batch's ids always looked cheaper); a sender's connections keep one
    generic plan whatever the statistics."""
    ids = [parse_message_id(await pipe.submit(principal, otp(f"plan{i}@example.com"))) for i in range(8)]

    async def plans(generic: bool) -> tuple[int, int]:
        pool = await create_pool(database_url, min_size=1, max_size=1, generic_plans=generic)
        try:
            async with pool.acquire() as conn:
                for mid in ids:
                    await conn.fetch(sql.CLAIM, [mid], 30.0)
                    await conn.execute("UPDATE messages SET status = 'queued', claimed_until = NULL WHERE id = $1", mid)
                row = await conn.fetchrow(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", sql.CLAIM
                )
                assert row is not None
                return row["generic_plans"], row["custom_plans"]
        finally:
            await pool.close()

    assert await plans(generic=True) == (8, 0)
    assert (await plans(generic=False))[1] >= 5  # left to choose: at least the first five are custom
    await repo_cancel(pipe, ids)


async def repo_cancel(pipe: Pipeline, ids: list[Any]) -> None:
    await pipe.repo.pool.execute("DELETE FROM outbox WHERE message_id = ANY($1::uuid[])", ids)
    await pipe.repo.pool.execute("UPDATE messages SET status = 'cancelled' WHERE id = ANY($1::uuid[])", ids)
