"""Rate limits in the dispatcher and quotas and budgets in the intake, on the real database (no Ray: a
governor in this process)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest

from drivers.fake import FakeDriver
from engine.auth import Principal
from engine.batch import BatchIntake
from engine.channels import Channel
from engine.dispatch import Dispatcher, DispatchOptions
from engine.governance.admission import GovernanceAdmission
from engine.governance.buckets import TokenBuckets
from engine.governance.budgets import Budgets
from engine.governance.leases import LeaseClient, LocalLeaseSource
from engine.governance.prices import TablePrices
from engine.governance.quotas import Quotas
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.models import Tenant
from engine.problems import ApiProblem
from engine.retries import RetryPolicy
from engine.routing import SHIPPED_TABLE, load_table
from engine.storage.batch_store import BatchStore
from engine.storage.budget_store import BudgetStore
from engine.storage.quota_store import QuotaStore
from engine.storage.repository import Repository
from engine.templating import TemplateCatalog

pytestmark = pytest.mark.integration


def email(i: int) -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login",
        "to": {"email": f"g{i}@example.com"},
        "variables": {"code": "1"},
    }


async def configure(repo: Repository, tenant: Tenant, config: dict[str, Any]) -> None:
    await repo.pool.execute("UPDATE tenants SET config = $2::jsonb WHERE id = $1", tenant.id, config)


def dispatcher(repo: Repository, catalog: TemplateCatalog, leases: LeaseClient | None = None) -> Dispatcher:
    return Dispatcher(
        repo,
        catalog,
        {Channel.EMAIL: [FakeDriver()]},
        policy=RetryPolicy(),
        metrics=MetricsBuffer(),
        options=DispatchOptions(),
        leases=leases,
    )


async def test_messages_over_the_rate_are_throttled_spread_over_the_tokens_to_come(
    repo: Repository, catalog: TemplateCatalog, tenant: Tenant, principal: Principal
) -> None:
    await configure(repo, tenant, {"limits": {"email": {"rate_per_second": 2, "burst": 2}}})
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
    ids = []
    for i in range(6):
        accepted = await intake.submit(principal, email(i), uuid.uuid4().hex)
        ids.append(parse_message_id(accepted.body["message_id"]))
    source = LocalLeaseSource(TokenBuckets())
    report = await dispatcher(repo, catalog, LeaseClient([source])).process(ids)
    assert (report.sent, report.retried, report.failed) == (2, 4, 0)
    assert source.calls == 1
    rows = await repo.pool.fetch(
        """SELECT m.status, m.attempts, o.available_at - m.updated_at AS wait,
                  (SELECT e.meta FROM notification_events e WHERE e.message_id = m.id
                   ORDER BY e.recorded_at DESC LIMIT 1) AS meta
           FROM messages m
           JOIN LATERAL (SELECT available_at FROM outbox WHERE message_id = m.id
                         ORDER BY available_at DESC LIMIT 1) o ON true
           WHERE m.tenant_id = $1 AND m.status = 'throttled' ORDER BY o.available_at""",
        tenant.id,
    )
    assert [r["status"] for r in rows] == ["throttled"] * 4
    assert [r["attempts"] for r in rows] == [0] * 4  # the claim's attempt was given back
    assert rows[0]["meta"]["reason"] == "rate_limited" and rows[0]["meta"]["limit"] == "limits.email.rate_per_second"
    waits = [r["wait"].total_seconds() for r in rows]
    assert waits == sorted(waits) and waits[-1] - waits[0] == pytest.approx(1.5, abs=0.05)  # 0.5 s apart at 2/s
    await repo.pool.execute("DELETE FROM outbox WHERE tenant_id = $1", tenant.id)


async def test_a_throttled_message_past_its_ttl_expires_instead_of_waiting_for_a_token(
    repo: Repository, catalog: TemplateCatalog, tenant: Tenant, principal: Principal
) -> None:
    await configure(repo, tenant, {"limits": {"email": {"rate_per_second": 0.2, "burst": 1}}})
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
    ids = []
    for i in range(3):
        accepted = await intake.submit(principal, {**email(i), "ttl_seconds": 1}, uuid.uuid4().hex)
        ids.append(parse_message_id(accepted.body["message_id"]))
    send = dispatcher(repo, catalog, LeaseClient([LocalLeaseSource(TokenBuckets())]))
    first = await send.process(ids)
    assert (first.sent, first.retried) == (1, 2)
    due = await repo.pool.fetch(
        "SELECT max(o.available_at) AS available_at, m.expires_at FROM outbox o JOIN messages m ON m.id = o.message_id "
        "WHERE m.tenant_id = $1 AND m.status = 'throttled' GROUP BY m.id",
        tenant.id,
    )
    assert len(due) == 2 and all(r["available_at"] <= r["expires_at"] for r in due)  # back by its TTL
    await asyncio.sleep(1.1)
    # Its TTL has passed and the next token is seconds away: it ends expired now, not throttled again.
    later = await send.process(ids[1:])
    assert (later.sent, later.retried, later.failed) == (0, 0, 2)
    statuses = await repo.pool.fetch(
        "SELECT status, (SELECT count(*) FROM notification_events e WHERE e.message_id = m.id "
        "AND e.type = 'NotificationRetryScheduled') AS retries FROM messages m WHERE m.id = ANY($1::uuid[])",
        ids[1:],
    )
    assert [(r["status"], r["retries"]) for r in statuses] == [("expired", 1), ("expired", 1)]
    await repo.pool.execute("DELETE FROM outbox WHERE tenant_id = $1", tenant.id)


async def test_quotas_refuse_at_the_cap_replays_count_nothing_and_budgets_settle_with_the_record(
    repo: Repository, catalog: TemplateCatalog, tenant: Tenant, principal: Principal
) -> None:
    await configure(repo, tenant, {"limits": {"email": {"per_day": 2}}, "budgets": {"email": {"monthly": 1}}})
    quotas = Quotas(QuotaStore(repo.pool))
    gate = GovernanceAdmission(quotas, Budgets(BudgetStore(repo.pool), lambda q: Decimal("0.25")))
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600, governance=gate)
    first = await intake.submit(principal, email(1), "k-1")
    assert first.headers["RateLimit-Policy"] == '"email.per_day";q=2;w=86400'
    assert first.headers["RateLimit"].startswith('"email.per_day";r=1;')
    replay = await intake.submit(principal, email(1), "k-1")
    assert replay.replayed
    second = await intake.submit(principal, email(2), "k-2")
    with pytest.raises(ApiProblem) as refused:
        await intake.submit(principal, email(3), "k-3")
    assert refused.value.status == 429 and refused.value.extensions["limit"]["name"] == "limits.email.per_day"
    assert refused.value.headers["RateLimit"].startswith('"email.per_day";r=0;')
    at_the_cap = await intake.submit(principal, email(1), "k-1")  # a used key still replays at the cap
    assert at_the_cap.replayed and at_the_cap.body["message_id"] == first.body["message_id"]
    await gate.reconcile()
    used = await repo.pool.fetchval(
        "SELECT used FROM quota_counters WHERE tenant_id = $1 AND period = 'day'", tenant.id
    )
    assert used == 2  # the replay and the refusal counted nothing
    ids = [parse_message_id(a.body["message_id"]) for a in (first, second)]
    estimates = await repo.pool.fetch("SELECT estimated_cost FROM messages WHERE id = ANY($1::uuid[])", ids)
    assert [r["estimated_cost"] for r in estimates] == [Decimal("0.25")] * 2
    await dispatcher(repo, catalog).process(ids)
    spend = await repo.pool.fetchrow(
        "SELECT sum(reserved) AS reserved, sum(sent) AS sent FROM budget_spend WHERE tenant_id = $1", tenant.id
    )
    assert spend["reserved"] == 0 and spend["sent"] == 2  # the estimates left the reservation, once
    left = await repo.pool.fetch("SELECT estimated_cost FROM messages WHERE id = ANY($1::uuid[])", ids)
    assert [r["estimated_cost"] for r in left] == [None, None]
    await repo.pool.execute("DELETE FROM outbox WHERE tenant_id = $1", tenant.id)


async def test_batch_items_count_against_the_quota_one_by_one(
    repo: Repository, catalog: TemplateCatalog, tenant: Tenant, principal: Principal
) -> None:
    await configure(repo, tenant, {"limits": {"email": {"per_day": 3}}})
    gate = GovernanceAdmission(Quotas(QuotaStore(repo.pool)), Budgets(BudgetStore(repo.pool), lambda q: Decimal("0.1")))
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600, governance=gate)
    batches = BatchIntake(intake, BatchStore(repo.pool))
    await intake.submit(principal, email(0), "b-0")  # one of the day's three, by the single route
    items = [{**email(i), "idempotency_key": f"b-{i}"} for i in range(4)]  # b-0 again: a replay
    items.append({**email(1), "idempotency_key": "b-1"})  # the same item twice in the batch
    result = await batches.submit(principal, items)
    codes = [r.code for r in result.items]
    assert codes == [202, 202, 202, 429, 202], codes  # b-0 replayed, b-1 and b-2 counted, b-3 over the cap
    assert result.items[0].replayed and result.items[4].replayed
    refused = result.items[3]
    assert refused.errors and refused.errors[0].loc == ("body", 3) and "per_day" in refused.errors[0].msg
    again = await batches.submit(principal, items[:3])  # the client retries: replays, never 429
    assert [(r.code, r.replayed) for r in again.items] == [(202, True)] * 3
    await gate.reconcile()
    day = "SELECT used FROM quota_counters WHERE tenant_id = $1 AND period = 'day'"
    assert await repo.pool.fetchval(day, tenant.id) == 3  # replays and the refusal counted nothing
    costs = await repo.pool.fetch("SELECT estimated_cost FROM messages WHERE tenant_id = $1", tenant.id)
    assert sorted(r["estimated_cost"] for r in costs) == [Decimal("0.1")] * 3
    await repo.pool.execute("DELETE FROM outbox WHERE tenant_id = $1", tenant.id)


async def test_the_estimate_prices_only_the_providers_the_tenant_allows_at_its_own_prices(
    repo: Repository, catalog: TemplateCatalog, tenant: Tenant, principal: Principal
) -> None:
    prices = TablePrices({Channel.EMAIL: ("ses", "sendgrid")}, load_table(SHIPPED_TABLE))
    gate = GovernanceAdmission(Quotas(QuotaStore(repo.pool)), Budgets(BudgetStore(repo.pool), prices))
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600, governance=gate, tenant_ttl_s=0)

    async def estimate(key: str) -> Decimal:
        accepted = await intake.submit(principal, email(int(key[-1])), key)
        found: Decimal = await repo.pool.fetchval(
            "SELECT estimated_cost FROM messages WHERE id = $1", parse_message_id(accepted.body["message_id"])
        )
        return found

    budget = {"budgets": {"email": {"monthly": 100}}}
    await configure(repo, tenant, budget)
    assert await estimate("p-1") == Decimal("0.000399")  # SendGrid, the dearer of the two
    await configure(repo, tenant, {**budget, "providers": {"email": {"allow": ["ses"]}}})
    assert await estimate("p-2") == Decimal("0.0001")  # SES only
    own = {"routing": {"channels": {"email": {"ses": {"prices": {"*": 0.00005}}}}}}
    await configure(repo, tenant, {**budget, "providers": {"email": {"allow": ["ses"]}}, **own})
    assert await estimate("p-3") == Decimal("0.00005")  # the tenant's own price for SES
    await repo.pool.execute("DELETE FROM outbox WHERE tenant_id = $1", tenant.id)
