"""Budgets, admission and usage on the real PostgreSQL: refuse and required_only, two replicas sharing
budget_spend, sent costs folded in, one warning per month, the usage report."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from engine.channels import Channel
from engine.governance.admission import GovernanceAdmission, Warnings
from engine.governance.budgets import BUDGET_EXHAUSTED, Budgets, PriceQuery, settlement
from engine.governance.quotas import QUOTA_EXCEEDED, Quotas
from engine.governance.usage import UsageService
from engine.models import Tenant
from engine.problems import ApiProblem
from engine.storage.budget_store import BudgetStore
from engine.storage.quota_store import QuotaStore
from engine.storage.repository import Repository
from engine.tenant_config import validate_config

pytestmark = pytest.mark.integration

SMS = Channel.SMS
PRICES = {Channel.SMS: Decimal("0.40"), Channel.EMAIL: Decimal("0.001")}


def price(query: PriceQuery) -> Decimal:
    return PRICES.get(query.channel, Decimal(0)) * query.units


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def configured(tenant: Tenant, config: dict[str, Any]) -> Tenant:
    return dataclasses.replace(tenant, config=validate_config(config))


def sms(tenant: Tenant, category: str | None = None) -> PriceQuery:
    return PriceQuery(tenant.slug, SMS, category)


async def test_a_spent_budget_refuses_with_a_429_naming_it(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2032, 2, 29, 23, 0, tzinfo=UTC))
    t = configured(tenant, {"budgets": {"sms": {"monthly": 1.0}}})
    budgets = Budgets(BudgetStore(repo.pool), price, clock=clock)
    assert budgets.admit(t, SMS, sms(t)).allowed
    assert budgets.admit(t, SMS, sms(t)).allowed
    refused = budgets.admit(t, SMS, sms(t))  # 0.80 spent, 0.40 more would pass 1.00
    problem = refused.problem()
    assert problem.status == 429 and problem.type == BUDGET_EXHAUSTED
    assert problem.headers["Retry-After"] == "3600"  # the next UTC month
    assert problem.body()["budget"] == {
        "name": "budgets.sms.monthly",
        "channel": "sms",
        "currency": "USD",
        "monthly": 1.0,
        "spent": 0.8,
        "estimate": 0.4,
        "resets_at": "2032-03-01T00:00:00+00:00",
    }


async def test_required_only_lets_one_time_codes_through_and_stops_marketing(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2032, 3, 10, tzinfo=UTC))
    t = configured(tenant, {"budgets": {"on_exhausted": "required_only", "sms": {"monthly": 0.5}}})
    budgets = Budgets(BudgetStore(repo.pool), price, clock=clock)
    assert budgets.admit(t, SMS, sms(t, "marketing")).allowed
    assert not budgets.admit(t, SMS, sms(t, "marketing")).allowed
    assert not budgets.admit(t, SMS, sms(t)).allowed  # no category: not a required one
    otp = budgets.admit(t, SMS, sms(t, "auth"))
    assert otp.allowed and otp.exempt
    assert budgets.admit(t, SMS, sms(t, "transactional")).allowed
    assert budgets.spend.value((t.id, "sms", datetime(2032, 3, 1).date())) == Decimal("1.2")  # still counted


async def test_two_replicas_share_the_month_and_sent_costs_are_folded_in(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2032, 4, 5, tzinfo=UTC))
    t = configured(tenant, {"budgets": {"sms": {"monthly": 2.0}}})
    store = BudgetStore(repo.pool)
    a, b = Budgets(store, price, clock=clock), Budgets(store, price, clock=clock)
    for _ in range(2):
        a.admit(t, SMS, sms(t))
        b.admit(t, SMS, sms(t))
    await a.reconcile()
    await b.reconcile()
    await a.reconcile()
    assert a.check(t, SMS, None, Decimal("0.40")).committed == Decimal("1.6")
    # the four were sent; the provider charged 0.30 each (and one ended without a send)
    done = [settlement(t.id, SMS, clock.at, estimated=Decimal("0.40"), actual=Decimal("0.30"), sent=True)] * 3
    done.append(settlement(t.id, SMS, clock.at, estimated=Decimal("0.40"), actual=None, sent=False))
    await store.settle(done)
    await a.reconcile()
    assert a.check(t, SMS, None, Decimal("0.40")).committed == Decimal("0.9")
    row = await repo.pool.fetchrow(
        """SELECT sum(reserved) AS reserved, sum(spent) AS spent, sum(sent) AS sent, sum(accepted) AS accepted
           FROM budget_spend WHERE tenant_id = $1""",
        t.id,
    )
    assert (row["reserved"], row["spent"], row["sent"], row["accepted"]) == (0, Decimal("0.9"), 3, 4)


async def test_a_settlement_before_the_reservation_arrives_adds_up(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2032, 5, 5, tzinfo=UTC))
    store = BudgetStore(repo.pool)
    early = settlement(tenant.id, SMS, clock.at, estimated=Decimal("0.40"), actual=Decimal("0.5"), sent=True)
    await store.settle([early])
    budgets = Budgets(store, price, clock=clock)
    budgets.admit(tenant, SMS, sms(tenant))
    await budgets.reconcile()
    assert budgets.check(tenant, SMS, None, Decimal(0)).committed == Decimal("0.5")


async def test_the_soft_cap_warns_once_per_month(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2032, 6, 5, tzinfo=UTC))
    t = configured(tenant, {"budgets": {"currency": "EUR", "sms": {"monthly": 1.5, "soft_cap_percent": 50}}})
    a = Budgets(BudgetStore(repo.pool), price, clock=clock)
    b = Budgets(BudgetStore(repo.pool), price, clock=clock)
    a.admit(t, SMS, sms(t))
    b.admit(t, SMS, sms(t))
    assert await a.reconcile() == []  # 0.40 of 1.50: under the soft cap of 0.75
    (warning,) = await b.reconcile()  # 0.80: b's reconcile took the month past it
    assert warning.meta() == {
        "budget": "budgets.sms.monthly",
        "channel": "sms",
        "month": "2032-06-01",
        "monthly": 1.5,
        "spent": 0.8,
        "currency": "EUR",
        "soft_cap_percent": 50,
    }
    a.admit(t, SMS, sms(t))
    assert await a.reconcile() == [] and await b.reconcile() == []


async def test_the_soft_cap_counts_what_the_senders_settled_above_the_estimates(
    repo: Repository, tenant: Tenant
) -> None:
    """Senders settle into stripes of the month's row of their own; the replicas' reconcile, which warns,
    adds them to its own stripe's reservations."""
    clock = Clock(datetime(2032, 7, 5, tzinfo=UTC))
    t = configured(tenant, {"budgets": {"sms": {"monthly": 1.5, "soft_cap_percent": 50}}})
    store = BudgetStore(repo.pool)
    budgets = Budgets(store, price, clock=clock)
    budgets.admit(t, SMS, sms(t))
    assert await budgets.reconcile() == []  # 0.40 reserved, under the soft cap of 0.75
    # the provider charged 0.70 for it: 0.70 committed, still under the cap
    await store.settle([settlement(t.id, SMS, clock.at, estimated=Decimal("0.40"), actual=Decimal("0.70"), sent=True)])
    budgets.admit(t, SMS, sms(t))
    (warning,) = await budgets.reconcile()  # 0.70 spent + 0.40 reserved: past 0.75
    assert warning.meta()["spent"] == 1.1
    stripes = await repo.pool.fetchval("SELECT count(*) FROM budget_spend WHERE tenant_id = $1", t.id)
    assert stripes == 2


async def test_admission_counts_nothing_when_either_refuses(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2032, 7, 7, 7, 7, tzinfo=UTC))
    t = configured(tenant, {"limits": {"sms": {"per_day": 3}}, "budgets": {"sms": {"monthly": 1.0}}})
    gate = GovernanceAdmission(
        Quotas(QuotaStore(repo.pool), clock=clock), Budgets(BudgetStore(repo.pool), price, clock=clock)
    )
    first = gate.admit(t, SMS, sms(t))
    assert first.estimate == Decimal("0.400000") and "RateLimit" in first.headers()
    gate.admit(t, SMS, sms(t))
    with pytest.raises(ApiProblem) as refused:
        gate.admit(t, SMS, sms(t))  # the budget refuses: 0.80 + 0.40 > 1.00
    assert refused.value.type == BUDGET_EXHAUSTED and "RateLimit-Policy" in refused.value.headers
    assert gate.quotas.check(t, SMS).standings[0].used == 2  # the refused one did not count
    gate.undo(t, SMS, first)  # its accept found the key used after all
    gate.admit(t, SMS, sms(t))
    cheap = configured(tenant, {"limits": {"sms": {"per_day": 2}}})
    with pytest.raises(ApiProblem) as over:
        gate.admit(cheap, SMS, sms(cheap))
    assert over.value.type == QUOTA_EXCEEDED


async def test_usage_shows_counts_spend_and_what_is_left(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2032, 8, 8, 8, 8, 8, tzinfo=UTC))
    limits = {"sms": {"per_minute": 10, "per_month": 100}}
    t = configured(tenant, {"limits": limits, "budgets": {"sms": {"monthly": 5}}})
    gate = GovernanceAdmission(
        Quotas(QuotaStore(repo.pool), clock=clock), Budgets(BudgetStore(repo.pool), price, clock=clock)
    )
    for _ in range(3):
        gate.admit(t, SMS, sms(t))
    gate.admit(t, Channel.EMAIL, PriceQuery(t.slug, Channel.EMAIL))
    await gate.reconcile()
    await BudgetStore(repo.pool).settle(
        [settlement(t.id, SMS, clock.at, estimated=Decimal("0.4"), actual=Decimal("0.35"), sent=True)]
    )
    report = await UsageService(repo.pool, clock=clock).usage(t)
    assert report.tenant == t.slug and report.currency == "USD"
    assert report.periods["month"].start == datetime(2032, 8, 1, tzinfo=UTC)
    sms_usage = report.channels["sms"]
    assert sms_usage.accepted.model_dump() == {"minute": 3, "day": 3, "month": 3}
    assert sms_usage.quotas["per_minute"].remaining == 7 and sms_usage.quotas["per_month"].remaining == 97
    assert "per_day" not in sms_usage.quotas
    assert sms_usage.spend == pytest.approx(1.15) and sms_usage.spent == pytest.approx(0.35) and sms_usage.sent == 1
    assert sms_usage.budget is not None and sms_usage.budget.remaining == pytest.approx(3.85)
    assert report.channels["email"].accepted.month == 1 and report.channels["email"].budget is None
    assert report.channels["push"].accepted.month == 0


async def test_the_reconcile_loop_hands_over_warnings_and_outlives_an_outage(repo: Repository, tenant: Tenant) -> None:
    t = configured(tenant, {"limits": {"sms": {"per_day": 2}}, "budgets": {"sms": {"monthly": 0.5}}})
    quotas = Quotas(QuotaStore(repo.pool))
    budgets = Budgets(BudgetStore(repo.pool), price)
    gate = GovernanceAdmission(quotas, budgets)
    seen: list[Warnings] = []

    async def record(warnings: Warnings) -> None:
        seen.append(warnings)

    class Down(QuotaStore):
        async def reconcile(self, rows, *, token):  # type: ignore[no-untyped-def,override]
            raise OSError("database gone")

    quotas.store = Down(repo.pool)
    gate.admit(t, SMS, sms(t))  # 1 of 2 (soft cap 80 %: 2), 0.40 of 0.50 (soft cap 0.40)
    gate.admit(t, SMS, PriceQuery(t.slug, SMS, units=0))
    stop = asyncio.Event()
    task = asyncio.create_task(gate.run(stop, on_warnings=record, interval_s=0.05))
    await asyncio.sleep(0.2)
    assert [w.budgets and not w.quotas for w in seen] == [True]  # the budget's warning, despite the quota outage
    quotas.store = QuotaStore(repo.pool)
    await asyncio.sleep(0.2)
    stop.set()
    await task
    assert [bool(w.quotas) for w in seen] == [False, True]  # the counts kept during the outage got there
    used = await repo.pool.fetchval(
        "SELECT used FROM quota_counters WHERE tenant_id = $1 AND period = 'day'", tenant.id
    )
    assert used == 2
