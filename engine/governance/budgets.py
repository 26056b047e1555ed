"""Budgets in money: an estimated cost for every message at admission, its actual cost once sent, against
a monthly budget per tenant and channel (``budgets.<channel>.monthly``, in ``budgets.currency``).

A month's spend is what was reserved for accepted messages not settled yet plus what sent ones cost,
counted in the UTC month the message was accepted in. Admission is decided in memory, like quotas: this
process's reservations plus every replica's totals from the last :meth:`Budgets.reconcile`, which also
returns the :class:`BudgetWarning` of each month this reconcile took past ``soft_cap_percent`` first.

A spent budget refuses with 429 (``budgets.on_exhausted: refuse``), or lets the required categories
through (``required_only``: one-time codes keep flowing while marketing stops). The price of a message
comes from a :data:`PriceFunction` handed in (the routing table's, in the tenant's currency).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from engine.channels import Channel
from engine.models import FieldError, Tenant
from engine.problems import ApiProblem
from engine.storage.budget_store import BudgetStore, Reservation, Settlement, SpendRow
from engine.tenant_config.governance import BudgetsConfig

from .periods import CalendarWindows, Period, Window, utcnow, window_of
from .tally import Tally

BUDGET_EXHAUSTED = "urn:herald:problem:budget-exhausted"
ZERO = Decimal(0)
_MICRO = Decimal("0.000001")

SpendKey = tuple[uuid.UUID, str, date]


@dataclass(frozen=True, slots=True)
class PriceQuery:
    """What a message's price depends on: its channel and, for numbers, the destination's region
    (``GB``) and how many parts it goes in (SMS segments)."""

    tenant: str
    channel: Channel
    category: str | None = None
    region: str | None = None
    units: int = 1
    allow: tuple[str, ...] | None = None  #: the tenant's allow-list for the channel (None: every provider)
    overrides: str = ""  #: the tenant's routing overrides (``routing.tenant_routing_key``: its prices)


#: The price of one message in the tenant's budget currency (the routing table provides it).
PriceFunction = Callable[[PriceQuery], Decimal]


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    channel: Channel
    estimate: Decimal
    committed: Decimal  #: the month's spend before this message (reserved + spent)
    monthly: Decimal | None
    currency: str
    month: Window
    now: datetime
    refused: bool = False
    exempt: bool = False  #: over budget, let through as a required category (``required_only``)

    @property
    def allowed(self) -> bool:
        return not self.refused

    @property
    def name(self) -> str:
        return f"budgets.{self.channel.value}.monthly"

    def problem(self) -> ApiProblem:
        """The 429 of a refused admission, naming the budget.

        Raises:
            ValueError: the admission was allowed.
        """
        if not self.refused or self.monthly is None:
            raise ValueError("an allowed admission has no problem")
        retry = max(1, math.ceil(self.month.seconds_left(self.now)))
        detail = (
            f"the {self.channel.value} budget {self.name} ({self.monthly} {self.currency} per UTC calendar month) "
            f"is spent until {self.month.end.isoformat()}"
        )
        budget = {
            "name": self.name,
            "channel": self.channel.value,
            "currency": self.currency,
            "monthly": float(self.monthly),
            "spent": float(self.committed),
            "estimate": float(self.estimate),
            "resets_at": self.month.end.isoformat(),
        }
        return ApiProblem(
            429,
            detail,
            type_=BUDGET_EXHAUSTED,
            errors=[FieldError(("body", "channel"), f"{self.name} is spent")],
            headers={"Retry-After": str(retry)},
            extensions={"budget": budget},
        )


@dataclass(frozen=True, slots=True)
class BudgetWarning:
    """A month's spend reached ``soft_cap_percent`` of its budget: record the ``BudgetWarning`` event,
    metric and webhook once."""

    tenant_id: uuid.UUID
    channel: Channel
    month: Window
    monthly: Decimal
    committed: Decimal
    soft_cap_percent: int
    currency: str

    def meta(self) -> dict[str, object]:
        return {
            "budget": f"budgets.{self.channel.value}.monthly",
            "channel": self.channel.value,
            "month": self.month.start.date().isoformat(),
            "monthly": float(self.monthly),
            "spent": float(self.committed),
            "currency": self.currency,
            "soft_cap_percent": self.soft_cap_percent,
        }


@dataclass(frozen=True, slots=True)
class _Budget:
    monthly: Decimal
    soft: Decimal
    percent: int
    currency: str


@dataclass(frozen=True, slots=True)
class _Plan:
    config: BudgetsConfig  #: the config object it was worked out from (a config change replaces it)
    minute: Window
    month: Window
    key: SpendKey


class Budgets:
    """One process's view of every tenant's monthly spend."""

    def __init__(self, store: BudgetStore, price: PriceFunction, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.price = price
        self.clock = clock
        self.spend: Tally[SpendKey, Decimal] = Tally(ZERO)
        self.accepted: dict[SpendKey, int] = {}
        self._budgets: dict[SpendKey, _Budget] = {}
        self._plans: dict[tuple[uuid.UUID, Channel], _Plan] = {}
        self._windows = CalendarWindows()

    def estimate(self, query: PriceQuery) -> Decimal:
        """The price function's figure, to the micro-unit, never negative."""
        return max(ZERO, Decimal(self.price(query)).quantize(_MICRO, rounding=ROUND_HALF_UP))

    def check(self, tenant: Tenant, channel: Channel, category: str | None, estimate: Decimal) -> BudgetDecision:
        """Whether a message of ``estimate`` fits the month's budget, reserving nothing."""
        now = self.clock()
        plan = self._plan(tenant, channel, now)
        config = plan.config
        monthly = config.channel(channel).monthly
        committed = self.spend.watched(plan.key)
        decision = BudgetDecision(channel, estimate, committed, monthly, config.currency, plan.month, now)
        if monthly is None or committed + estimate <= monthly:
            return decision
        if config.on_exhausted == "required_only" and tenant.config.preferences.is_required(category):
            return replace(decision, exempt=True)
        return replace(decision, refused=True)

    def reserve(
        self, tenant: Tenant, channel: Channel, estimate: Decimal, n: int = 1, *, now: datetime | None = None
    ) -> None:
        """Count ``n`` accepted messages of ``estimate`` each in this month's spend."""
        key = self._plan(tenant, channel, now or self.clock()).key
        self.spend.add(key, estimate * n)
        self.accepted[key] = self.accepted.get(key, 0) + n

    def _plan(self, tenant: Tenant, channel: Channel, now: datetime) -> _Plan:
        """The month's key and budget at ``now``, worked out again only when the minute or the tenant's
        budgets change (admission asks on every request)."""
        config = tenant.config.budgets
        plan = self._plans.get((tenant.id, channel))
        if plan is not None and plan.config is config and plan.minute.start <= now < plan.minute.end:
            return plan
        windows = self._windows.at(now)
        month = windows[Period.MONTH]
        key = _key(tenant, channel, month)
        budget = config.channel(channel)
        if budget.monthly is None:
            self._budgets.pop(key, None)
        else:
            soft = (budget.monthly * budget.soft_cap_percent / 100).quantize(_MICRO)
            self._budgets[key] = _Budget(budget.monthly, soft, budget.soft_cap_percent, config.currency)
        plan = self._plans[(tenant.id, channel)] = _Plan(config, windows[Period.MINUTE], month, key)
        return plan

    def admit(self, tenant: Tenant, channel: Channel, query: PriceQuery) -> BudgetDecision:
        """Estimate, check, and reserve when allowed."""
        decision = self.check(tenant, channel, query.category, self.estimate(query))
        if decision.allowed:
            self.reserve(tenant, channel, decision.estimate, now=decision.now)
        return decision

    def release(self, tenant: Tenant, channel: Channel, estimate: Decimal, *, at: datetime | None = None) -> None:
        """Take back a reservation whose message was not stored after all."""
        key = _key(tenant, channel, window_of(Period.MONTH, at or self.clock()))
        self.spend.add(key, -estimate)
        self.accepted[key] = self.accepted.get(key, 0) - 1

    async def reconcile(self) -> list[BudgetWarning]:
        """Add this process's reservations to ``budget_spend`` and take every replica's totals, in one
        statement. Raises: asyncpg.PostgresError, OSError (the reservations stay pending)."""
        batch = self.spend.begin()
        accepted, self.accepted = self.accepted, {}
        rows = []
        for key, delta in batch.items():
            budget = self._budgets.get(key)
            rows.append(Reservation(SpendRow(*key), delta, accepted.get(key, 0), budget.soft if budget else None))
        try:
            totals = await self.store.reconcile(rows, token=uuid.uuid4())
        except BaseException:
            self.spend.abort()
            for key, n in accepted.items():
                self.accepted[key] = self.accepted.get(key, 0) + n
            raise
        now = self.clock()
        self.spend.settle({t.row.key: t.committed for t in totals}, keep=lambda k: _month_end(k[2]) > now)
        warnings = []
        for t in totals:
            budget = self._budgets.get(t.row.key)
            if t.warned_now and budget is not None:
                month = window_of(Period.MONTH, _midnight(t.row.month))
                warnings.append(
                    BudgetWarning(
                        t.row.tenant_id,
                        Channel(t.row.channel),
                        month,
                        budget.monthly,
                        t.committed,
                        budget.percent,
                        budget.currency,
                    )
                )
        for key in [k for k in self._budgets if _month_end(k[2]) <= now]:
            del self._budgets[key]
        return warnings


def settlement(
    tenant_id: uuid.UUID,
    channel: Channel,
    accepted_at: datetime,
    *,
    estimated: Decimal | None,
    actual: Decimal | None,
    sent: bool,
) -> Settlement:
    """What a sender hands :meth:`BudgetStore.settle` for one message done with: sent (its attempt's
    ``cost``), or ended without a send (``actual`` None: nothing spent)."""
    month = window_of(Period.MONTH, accepted_at).start.date()
    return Settlement(tenant_id, channel.value, month, estimated or ZERO, actual or ZERO, sent)


def _key(tenant: Tenant, channel: Channel, month: Window) -> SpendKey:
    return (tenant.id, channel.value, month.start.date())


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _month_end(day: date) -> datetime:
    return window_of(Period.MONTH, _midnight(day)).end
