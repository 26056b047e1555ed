"""Quotas and budgets at admission, as the intake calls them: decide in memory, refuse with 429, count
only what is accepted, and reconcile with the database in the background.

The intake calls :meth:`GovernanceAdmission.admit` after the idempotency check (a replay never counts)
and before storing; when the store then reports the key as already used, :meth:`undo` takes the counts
back. Each ingress replica runs :meth:`run`, which reconciles every ``interval_s`` and hands warnings to
``on_warnings`` (to record ``QuotaWarning`` / ``BudgetWarning`` events, metrics and webhooks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import TypeVar

import asyncpg

from engine.channels import Channel
from engine.models import Tenant
from engine.problems import ApiProblem

from .budgets import BudgetDecision, Budgets, BudgetWarning, PriceQuery
from .periods import Period, window_of
from .quotas import QuotaDecision, Quotas, QuotaWarning

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long ended windows stay in ``quota_counters`` (usage and audits of the recent past read them).
QUOTA_RETENTION: dict[Period, timedelta] = {
    Period.MINUTE: timedelta(hours=2),
    Period.DAY: timedelta(days=35),
    Period.MONTH: timedelta(days=400),
}


@dataclass(frozen=True, slots=True)
class Admitted:
    quota: QuotaDecision
    budget: BudgetDecision

    @property
    def estimate(self) -> Decimal:
        """The estimated cost to store with the message (``messages.estimated_cost``)."""
        return self.budget.estimate

    def headers(self) -> dict[str, str]:
        """``RateLimit-Policy`` / ``RateLimit`` for the 202."""
        return self.quota.headers()


@dataclass(frozen=True, slots=True)
class Warnings:
    quotas: list[QuotaWarning] = field(default_factory=list)
    budgets: list[BudgetWarning] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.quotas or self.budgets)


class GovernanceAdmission:
    def __init__(self, quotas: Quotas, budgets: Budgets) -> None:
        self.quotas = quotas
        self.budgets = budgets

    def admit(self, tenant: Tenant, channel: Channel, query: PriceQuery, n: int = 1) -> Admitted:
        """Count ``n`` messages against the channel's quotas and budget.

        Raises:
            ApiProblem: 429 naming the quota or budget that refused (nothing is counted then).
        """
        quota = self.quotas.check(tenant, channel, n)
        if not quota.allowed:
            raise quota.problem()
        estimate = self.budgets.estimate(query)
        budget = self.budgets.check(tenant, channel, query.category, estimate * n)
        if not budget.allowed:
            problem = budget.problem()
            raise ApiProblem(
                problem.status,
                problem.detail,
                errors=problem.errors,
                type_=problem.type,
                headers={**quota.headers(), **problem.headers},
                extensions=problem.extensions,
            )
        self.quotas.count(tenant, channel, n, now=quota.now)
        self.budgets.reserve(tenant, channel, estimate, n, now=budget.now)
        return Admitted(quota, budget)

    def undo(self, tenant: Tenant, channel: Channel, admitted: Admitted, n: int = 1) -> None:
        """Take back what :meth:`admit` counted for messages that were not stored after all."""
        self.quotas.refund(tenant, channel, n, at=admitted.quota.now)
        for _ in range(n):
            self.budgets.release(tenant, channel, admitted.budget.estimate, at=admitted.budget.now)

    async def reconcile(self) -> Warnings:
        """Both reconciles (two statements). Raises: asyncpg.PostgresError, OSError."""
        return Warnings(await self.quotas.reconcile(), await self.budgets.reconcile())

    async def prune(self) -> int:
        """Drop ended quota windows past :data:`QUOTA_RETENTION`; how many rows went."""
        now = self.quotas.clock()
        gone = 0
        for period, keep in QUOTA_RETENTION.items():
            gone += await self.quotas.store.prune(period.value, window_of(period, now - keep).start)
        return gone

    async def run(
        self,
        stop: asyncio.Event,
        *,
        on_warnings: Callable[[Warnings], Awaitable[None]],
        interval_s: float = 1.0,
        prune_every: int = 600,
    ) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set, then once more; a database outage only
        delays the counts (they stay pending)."""
        rounds = 0
        while True:
            stopping = stop.is_set()
            warnings = Warnings(
                await _logged(self.quotas.reconcile(), "quota", []),
                await _logged(self.budgets.reconcile(), "budget", []),
            )
            if warnings:
                await on_warnings(warnings)
            if rounds % prune_every == prune_every - 1:
                await _logged(self.prune(), "quota prune", 0)
            if stopping:
                return
            rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


async def _logged(step: Awaitable[T], what: str, otherwise: T) -> T:
    try:
        return await step
    except (asyncpg.PostgresError, OSError) as err:
        log.warning("%s reconcile failed (%s); counts kept for the next", what, type(err).__name__)
        return otherwise
