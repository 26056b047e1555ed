"""Quotas on the real PostgreSQL: two replicas sharing quota_counters, one warning per window, refunds."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from engine.channels import Channel
from engine.governance.periods import Period, window_of
from engine.governance.quotas import QUOTA_EXCEEDED, Quotas
from engine.models import Tenant
from engine.storage.quota_store import CounterRow, QuotaStore
from engine.storage.repository import Repository
from engine.tenant_config import validate_config

pytestmark = pytest.mark.integration

SMS = Channel.SMS


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def limited(tenant: Tenant, **limits: int) -> Tenant:
    return dataclasses.replace(tenant, config=validate_config({"limits": {"sms": limits}}))


async def test_two_replicas_sharing_the_table_see_each_others_counts(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2031, 5, 17, 10, 30, 5, tzinfo=UTC))
    t = limited(tenant, per_day=10)
    a, b = Quotas(QuotaStore(repo.pool), clock=clock), Quotas(QuotaStore(repo.pool), clock=clock)
    for _ in range(6):
        assert a.admit(t, SMS).allowed
    for _ in range(3):
        assert b.admit(t, SMS).allowed
    await a.reconcile()
    await b.reconcile()
    await a.reconcile()  # a learns b's counts
    assert a.check(t, SMS).standings[0].used == 9 and b.check(t, SMS).standings[0].used == 9
    assert a.admit(t, SMS).allowed
    await a.reconcile()
    await b.reconcile()
    refused = b.admit(t, SMS)
    assert not refused.allowed and refused.exceeded is not None and refused.exceeded.name == "limits.sms.per_day"
    row = await repo.pool.fetchrow(
        "SELECT used FROM quota_counters WHERE tenant_id = $1 AND channel = 'sms' AND period = 'day'", tenant.id
    )
    assert row["used"] == 10


async def test_a_replica_that_only_checked_learns_the_others_counts_with_its_next_reconcile(
    repo: Repository, tenant: Tenant
) -> None:
    clock = Clock(datetime(2031, 5, 17, 11, 30, 5, tzinfo=UTC))
    t = limited(tenant, per_day=2)
    a, b = Quotas(QuotaStore(repo.pool), clock=clock), Quotas(QuotaStore(repo.pool), clock=clock)
    assert a.admit(t, SMS).allowed and a.admit(t, SMS).allowed
    await a.reconcile()
    assert b.check(t, SMS).allowed  # b has not seen the tenant: it cannot know yet
    await b.reconcile()
    assert not b.check(t, SMS).allowed


async def test_a_refused_admission_is_a_429_with_the_headers_and_a_problem_naming_the_limit(
    repo: Repository, tenant: Tenant
) -> None:
    clock = Clock(datetime(2031, 5, 17, 23, 59, 30, tzinfo=UTC))
    t = limited(tenant, per_minute=100, per_day=2)
    quotas = Quotas(QuotaStore(repo.pool), clock=clock)
    ok = quotas.admit(t, SMS)
    assert ok.headers() == {
        "RateLimit-Policy": '"sms.per_minute";q=100;w=60, "sms.per_day";q=2;w=86400',
        "RateLimit": '"sms.per_minute";r=99;t=30, "sms.per_day";r=1;t=30',
    }
    quotas.admit(t, SMS)
    refused = quotas.admit(t, SMS)
    problem = refused.problem()
    assert problem.status == 429 and problem.type == QUOTA_EXCEEDED
    assert problem.headers["Retry-After"] == "30"
    assert problem.headers["RateLimit"] == '"sms.per_minute";r=98;t=30, "sms.per_day";r=0;t=30'
    body = problem.body()
    assert body["limit"]["name"] == "limits.sms.per_day" and body["limit"]["quota"] == 2
    assert "limits.sms.per_day" in body["detail"]
    assert body["errors"][0]["loc"] == ["body", "channel"]
    clock.at += timedelta(seconds=31)  # a new UTC day: the day's quota starts again
    assert quotas.admit(t, SMS).allowed


async def test_the_soft_cap_warns_once_per_window_across_replicas(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2031, 6, 1, 8, 0, tzinfo=UTC))
    t = dataclasses.replace(
        tenant, config=validate_config({"limits": {"sms": {"per_month": 10}}, "quotas": {"soft_cap_percent": 50}})
    )
    a, b = Quotas(QuotaStore(repo.pool), clock=clock), Quotas(QuotaStore(repo.pool), clock=clock)
    for _ in range(3):
        a.admit(t, SMS)
        b.admit(t, SMS)
    warned_a = await a.reconcile()  # 3 of 10: under the soft cap
    warned_b = await b.reconcile()  # 6 of 10: past 5, b's reconcile took it there
    assert warned_a == []
    assert [(w.period, w.limit, w.used, w.soft_cap_percent) for w in warned_b] == [(Period.MONTH, 10, 6, 50)]
    assert warned_b[0].meta()["limit"] == "limits.sms.per_month"
    a.admit(t, SMS)
    b.admit(t, SMS)
    assert await a.reconcile() == [] and await b.reconcile() == []  # never twice in the window
    clock.at = datetime(2031, 7, 1, 0, 0, tzinfo=UTC)  # the next month is a new window
    for _ in range(5):
        a.admit(t, SMS)
    assert [w.window.start for w in await a.reconcile()] == [datetime(2031, 7, 1, tzinfo=UTC)]


async def test_counts_pending_when_a_reconcile_fails_go_with_the_next(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2031, 8, 3, 12, 0, tzinfo=UTC))
    t = limited(tenant, per_day=100)

    class Broken(QuotaStore):
        async def reconcile(self, rows, *, token):  # type: ignore[no-untyped-def,override]
            raise OSError("database gone")

    quotas = Quotas(Broken(repo.pool), clock=clock)
    for _ in range(4):
        quotas.admit(t, SMS)
    with pytest.raises(OSError):
        await quotas.reconcile()
    assert quotas.check(t, SMS).standings[0].used == 4  # still counted here
    quotas.store = QuotaStore(repo.pool)
    await quotas.reconcile()
    used = await repo.pool.fetchval(
        "SELECT used FROM quota_counters WHERE tenant_id = $1 AND period = 'day'", tenant.id
    )
    assert used == 4


async def test_refunds_take_back_what_was_counted(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2031, 9, 9, 9, 9, tzinfo=UTC))
    t = limited(tenant, per_day=5)
    quotas = Quotas(QuotaStore(repo.pool), clock=clock)
    for _ in range(5):
        quotas.admit(t, SMS)
    quotas.refund(t, SMS)  # the accept found a duplicate after all
    assert quotas.admit(t, SMS).allowed
    await quotas.reconcile()
    day = window_of(Period.DAY, clock.at).start
    # a deduplicated message, taken back by the sender's side straight from the table
    await QuotaStore(repo.pool).refund([(CounterRow(tenant.id, "sms", "day", day), 2)])
    await quotas.reconcile()
    assert quotas.check(t, SMS).standings[0].used == 3


async def test_old_windows_are_pruned(repo: Repository, tenant: Tenant) -> None:
    clock = Clock(datetime(2031, 10, 1, 0, 0, 30, tzinfo=UTC))
    quotas = Quotas(QuotaStore(repo.pool), clock=clock)
    quotas.admit(limited(tenant), SMS)
    await quotas.reconcile()
    store = QuotaStore(repo.pool)
    assert await store.prune("minute", datetime(2031, 10, 1, 0, 1, tzinfo=UTC)) >= 1
    left = await repo.pool.fetch("SELECT period FROM quota_counters WHERE tenant_id = $1", tenant.id)
    assert sorted(r["period"] for r in left) == ["day", "month"]
