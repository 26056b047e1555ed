"""Routed dispatch against the real PostgreSQL: failover by failure class, attempt rows per provider,
terminal states in bounded time, breakers that stop traffic and probes that bring it back. Scripted
in-process drivers, an in-process routing feed, short retry delays (the real drivers and the Ray
actors are exercised end to end in tests/e2e/test_routing.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from drivers.fake import FakeDriver
from engine.auth import Principal
from engine.channels import Channel
from engine.delivery import OutboundMessage, SendResult
from engine.dispatch import Dispatcher, DispatchOptions
from engine.errors import PermanentError, ProviderDownError, RetryableError
from engine.lifecycle.dlq import DeadLetterService
from engine.lifecycle.scope import AdminScope
from engine.metrics import MetricsBuffer
from engine.retries import RetryPolicy
from engine.routing import LocalFeed, parse_table
from engine.storage.dlq_store import DeadLetterStore
from engine.storage.repository import Repository
from engine.templating import TemplateCatalog
from tests.integration.test_pipeline import Pipeline, otp

pytestmark = pytest.mark.integration

TABLE = """
version: it
defaults: {breaker: {consecutive_failures: 3, min_requests: 1000, cooldown_s: 0.4, probes: 1}}
channels:
  email:
    primary: {prices: {"*": 0.001}, reliability: 0.999, latency_ms: 100}
    backup: {prices: {"*": 0.002}, reliability: 0.99, latency_ms: 100}
"""


class CountingDriver(FakeDriver):
    """A FakeDriver that also counts the messages it was handed (sent or not)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.handed: list[str] = []

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        self.handed.extend(m.message_id for m in messages)
        return await super().send_batch(messages)


class Routed(Pipeline):
    def __init__(self, repo: Repository, catalog: TemplateCatalog, database_url: str, *chain: FakeDriver) -> None:
        super().__init__(repo, catalog, database_url, *chain)
        self.feed = LocalFeed(parse_table(TABLE, source="test"))
        self.mine: set[uuid.UUID] = set()
        self.dispatcher = Dispatcher(
            repo,
            catalog,
            {Channel.EMAIL: self.drivers},
            policy=RetryPolicy(delays_s=(0.05, 0.05, 0.05), jitter=0.0),
            metrics=self.metrics,
            options=DispatchOptions(lease_s=30),
            feed=self.feed,
        )

    async def submit(self, principal: Principal, body: dict[str, Any], key: str | None = None) -> str:
        public_id = await super().submit(principal, body, key)
        self.mine.add(uuid.UUID(hex=public_id.removeprefix("msg_")))
        return public_id

    async def pump(self, rounds: int = 1) -> int:
        """Like Pipeline.pump, but only this test's messages are sent (earlier tests' retries that come
        due are left alone, so they cannot take a scripted failure meant for this one)."""
        sent = 0
        for _ in range(rounds):
            await self.relay.drain()
            deliveries = await self.broker.get(100, 0.2)
            ids = [i for d in deliveries for i in d.envelope.message_ids if i in self.mine]
            if ids:
                sent += (await self.dispatcher.process(ids)).sent
            for d in deliveries:
                await d.ack()
        return sent

    async def until(self, tenant_id: uuid.UUID, public_id: str, statuses: set[str], timeout_s: float = 10) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await self.pump()
            row = await self.status(tenant_id, public_id)
            if row["status"] in statuses:
                return row
            await asyncio.sleep(0.03)
        raise AssertionError(f"{public_id} stuck at {row['status']}")


@pytest.fixture
async def drivers() -> tuple[CountingDriver, CountingDriver]:
    return CountingDriver("primary"), CountingDriver("backup")


@pytest.fixture
async def routed(repo, catalog, database_url, drivers) -> AsyncIterator[Routed]:
    p = Routed(repo, catalog, database_url, *drivers)
    await p.broker.connect()
    yield p
    await p.broker.close()


def attempts(row: dict[str, Any]) -> list[tuple[int, str, str, str | None]]:
    return [(a["attempt_no"], a["provider"], a["outcome"], a["error_code"]) for a in row["attempt_rows"]]


async def test_transactional_5xx_fails_over_at_once_with_an_attempt_row_per_provider(
    routed: Routed, drivers, principal: Principal, tenant
) -> None:
    primary, _ = drivers
    primary.fail_next(RetryableError("Internal Server Error", code="500", status_code=500))
    public_id = await routed.submit(principal, otp())
    await routed.pump()
    row = await routed.status(tenant.id, public_id)
    assert row["status"] == "sent" and row["provider"] == "backup" and row["attempts"] == 1
    assert sorted(attempts(row)) == [(1, "backup", "sent", None), (1, "primary", "failover", "500")]
    sent = next(e for e in row["event_rows"] if e["type"] == "NotificationSent")
    assert sent["meta"]["route"]["chosen"] == "primary" and sent["meta"]["tried"] == ["primary", "backup"]
    assert [c[0] for c in sent["meta"]["route"]["candidates"]] == ["primary", "backup"]
    cost = next(a["cost_usd"] for a in row["attempt_rows"] if a["provider"] == "backup")
    assert float(cost) == pytest.approx(0.002)  # the routing table's price, not the driver's


async def test_marketing_5xx_waits_with_backoff_on_a_later_round(
    routed: Routed, drivers, principal: Principal, tenant
) -> None:
    primary, backup = drivers
    primary.fail_next(RetryableError("Service Unavailable", code="503"))
    public_id = await routed.submit(principal, otp(metadata={"category": "marketing"}))
    await routed.pump()
    row = await routed.status(tenant.id, public_id)
    assert row["status"] == "queued" and backup.handed == []
    row = await routed.until(tenant.id, public_id, {"sent"})
    assert row["provider"] == "primary"
    assert attempts(row) == [(1, "primary", "queued", "503"), (2, "primary", "sent", None)]


async def test_provider_down_fails_over_marketing_too(routed: Routed, drivers, principal: Principal, tenant) -> None:
    primary, _ = drivers
    primary.down = ProviderDownError("connection refused", code="connect")
    public_id = await routed.submit(principal, otp(metadata={"category": "marketing"}))
    await routed.pump()
    row = await routed.status(tenant.id, public_id)
    assert row["status"] == "sent" and row["provider"] == "backup"
    assert sorted(attempts(row)) == [(1, "backup", "sent", None), (1, "primary", "failover", "connect")]


async def test_permanent_never_fails_over(routed: Routed, drivers, principal: Principal, tenant) -> None:
    primary, backup = drivers
    primary.fail_next(PermanentError("content rejected", code="MessageRejected"))
    public_id = await routed.submit(principal, otp())
    await routed.pump()
    row = await routed.status(tenant.id, public_id)
    assert row["status"] == "failed" and backup.handed == []
    assert attempts(row) == [(1, "primary", "failed", "MessageRejected")]


async def test_a_route_that_stays_down_ends_dead_one_attempt_per_round(
    routed: Routed, drivers, principal: Principal, tenant
) -> None:
    for d in drivers:
        d.down = ProviderDownError("refused", code="connect")
    public_id = await routed.submit(principal, otp(metadata={"category": "marketing"}))
    started = time.monotonic()
    row = await routed.until(tenant.id, public_id, {"dead"})
    assert time.monotonic() - started < 10
    assert row["attempts"] == 4  # a first attempt and three retries: every round used one
    rounds = sorted({a["attempt_no"] for a in row["attempt_rows"]})
    assert rounds == [1, 2, 3, 4]
    assert all(a["error_code"] in ("connect", "circuit_open") for a in row["attempt_rows"])
    assert [e["type"] for e in row["event_rows"]][-1] == "NotificationDeadLettered"


async def test_no_route_fails_at_once_with_the_reason(
    routed: Routed, principal: Principal, tenant, repo: Repository
) -> None:
    await repo.pool.execute(
        "UPDATE tenants SET config = $2 WHERE id = $1", tenant.id, {"providers": {"email": {"allow": ["mailgun"]}}}
    )
    public_id = await routed.submit(principal, otp())
    await routed.pump()
    row = await routed.status(tenant.id, public_id)
    assert row["status"] == "failed" and row["attempt_rows"] == []
    failed = row["event_rows"][-1]
    assert failed["type"] == "NotificationFailed" and failed["meta"]["reason"] == "no_route"
    assert "mailgun: not configured for email" in failed["meta"]["detail"]


async def test_a_timeout_after_sending_is_retried_on_the_same_provider(
    routed: Routed, drivers, principal: Principal, tenant
) -> None:
    primary, backup = drivers
    primary.fail_next(RetryableError("read timeout", code="timeout", sent_maybe=True))
    public_id = await routed.submit(principal, otp())
    await routed.pump()
    row = await routed.status(tenant.id, public_id)
    assert row["status"] == "queued" and backup.handed == []  # not failed over at once
    assert attempts(row) == [(1, "primary", "unknown", "timeout")]
    # The failure lowered primary's learned reliability below backup's; the pin still sends it there.
    row = await routed.until(tenant.id, public_id, {"sent"})
    assert row["provider"] == "primary" and backup.handed == []
    sent = next(e for e in row["event_rows"] if e["type"] == "NotificationSent")
    assert sent["meta"]["route"]["candidates"][0][5].startswith("pinned")


async def test_breaker_opens_stops_traffic_then_a_probe_closes_it(
    routed: Routed, drivers, principal: Principal, tenant
) -> None:
    primary, _ = drivers
    primary.down = ProviderDownError("refused", code="connect")
    notice = {"category": "notice"}  # the default rule: the configured order, whatever was learned
    first = []
    for i in range(3):  # three calls fail: consecutive_failures = 3
        first.append(await routed.submit(principal, otp(f"a{i}@example.com", metadata=notice)))
        await routed.pump()
    assert {(await routed.status(tenant.id, m))["provider"] for m in first} == {"backup"}
    handed = len(primary.handed)
    later = [await routed.submit(principal, otp(f"b{i}@example.com", metadata=notice)) for i in range(5)]
    await routed.pump()
    assert len(primary.handed) == handed  # open: no traffic
    for m in later:
        row = await routed.status(tenant.id, m)
        assert row["provider"] == "backup" and [a["provider"] for a in row["attempt_rows"]] == ["backup"]
        route = next(e for e in row["event_rows"] if e["type"] == "NotificationSent")["meta"]["route"]
        assert route["candidates"][1][3].startswith("breaker open (provider_down connect")
    primary.down = None
    await asyncio.sleep(0.45)  # the cool-down
    probes = [await routed.submit(principal, otp(f"c{i}@example.com", metadata=notice)) for i in range(4)]
    await routed.pump()
    assert len(primary.handed) == handed + 1  # one probe permit; the rest went to backup
    await routed.pump()
    back = [await routed.submit(principal, otp(f"d{i}@example.com", metadata=notice)) for i in range(3)]
    await routed.pump()
    providers = [(await routed.status(tenant.id, m))["provider"] for m in back]
    assert providers == ["primary"] * 3  # closed again: traffic is back
    assert [(await routed.status(tenant.id, m))["status"] for m in probes] == ["sent"] * 4


async def test_all_open_round_uses_one_attempt_without_calling_anyone(
    repo, catalog, database_url, principal: Principal, tenant
) -> None:
    only = CountingDriver("primary")
    p = Routed(repo, catalog, database_url, only)
    await p.broker.connect()
    try:
        only.down = ProviderDownError("refused", code="connect")
        for i in range(3):
            await p.submit(principal, otp(f"o{i}@example.com", metadata={"category": "marketing"}))
            await p.pump()
        handed = len(only.handed)
        public_id = await p.submit(principal, otp("late@example.com", metadata={"category": "marketing"}))
        await p.pump()
        row = await p.status(tenant.id, public_id)
        assert len(only.handed) == handed and row["status"] == "queued" and row["attempts"] == 1
        assert attempts(row) == [(1, None, "queued", "circuit_open")]
    finally:
        await p.broker.close()


async def test_a_dlq_replay_to_a_named_provider_is_sent_only_there(
    routed: Routed, drivers, principal: Principal, tenant, repo: Repository
) -> None:
    """The provider a replay names (``messages.pinned_provider``) is the only candidate, though the
    policy ranks another first (a one-time code: reliability, and primary is the more reliable)."""
    primary, backup = drivers
    public_id = await routed.submit(principal, otp())
    mid = uuid.UUID(hex=public_id.removeprefix("msg_"))
    await repo.pool.execute("DELETE FROM outbox WHERE message_id = $1", mid)  # as if it died on its route
    await repo.pool.execute("UPDATE messages SET status = 'dead' WHERE id = $1", mid)
    dlq = DeadLetterService(DeadLetterStore(repo.pool), providers={Channel.EMAIL: {"primary", "backup"}})
    done = await dlq.replay(AdminScope.of_tenant(tenant, actor="ops"), {"ids": [public_id], "to_provider": "backup"})
    assert done.replayed == 1
    row = await routed.until(tenant.id, public_id, {"sent"})
    assert row["provider"] == "backup" and primary.handed == [] and backup.handed == [public_id]
    route = next(e for e in row["event_rows"] if e["type"] == "NotificationSent")["meta"]["route"]
    assert (
        route["chosen"] == "backup"
        and ["primary", None, "closed", "the DLQ replay named backup"] in route["candidates"]
    )
    # a replay without a provider routes normally again
    await repo.pool.execute("UPDATE messages SET status = 'dead' WHERE id = $1", mid)
    await dlq.replay(AdminScope.of_tenant(tenant, actor="ops"), {"ids": [public_id]})
    row = await routed.until(tenant.id, public_id, {"sent"})
    assert row["provider"] == "primary"


async def test_the_tenants_retry_delays_replace_the_platforms(
    routed: Routed, drivers, principal: Principal, tenant, repo: Repository
) -> None:
    """``retries.<channel>.delays_s`` (else ``retries.delays_s``) are the backoff steps; ``[]`` means the
    first failure is the last. The platform's steps here are 0.05 s."""
    primary, _ = drivers
    marketing = {"category": "marketing"}  # waits with backoff instead of failing over
    config = {"retries": {"delays_s": [], "email": {"delays_s": [7]}}}
    await repo.pool.execute("UPDATE tenants SET config = $2 WHERE id = $1", tenant.id, config)
    primary.fail_next(RetryableError("Service Unavailable", code="503"))
    public_id = await routed.submit(principal, otp(metadata=marketing))
    await routed.pump()
    row = await routed.status(tenant.id, public_id)
    retry = next(e for e in row["event_rows"] if e["type"] == "NotificationRetryScheduled")
    assert row["status"] == "queued" and retry["meta"]["retry_in_s"] == pytest.approx(7.0, rel=0.21)
    await repo.pool.execute("UPDATE tenants SET config = $2 WHERE id = $1", tenant.id, {"retries": {"delays_s": []}})
    primary.fail_next(RetryableError("Service Unavailable", code="503"))
    public_id = await routed.submit(principal, otp("again@example.com", metadata=marketing))
    await routed.pump()
    row = await routed.status(tenant.id, public_id)
    assert row["status"] == "dead" and attempts(row) == [(1, "primary", "dead", "503")]


async def test_metrics_count_every_provider_try(routed: Routed, drivers, principal: Principal, tenant) -> None:
    primary, _ = drivers
    primary.fail_next(RetryableError("500", code="500"))
    await routed.until(tenant.id, await routed.submit(principal, otp()), {"sent"})
    counters = routed.metrics.drain().counters
    assert counters[("provider_failed_total", (("channel", "email"), ("provider", "primary"), ("reason", "retryable")))]
    assert counters[("provider_sent_total", (("channel", "email"), ("provider", "backup")))] >= 1


def test_fake_metrics_buffer_is_isolated() -> None:
    assert not MetricsBuffer().drain()
