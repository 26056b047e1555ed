"""Quotas at admission: messages per tenant and channel per UTC calendar minute, day and month
(``limits.<channel>.per_minute`` / ``per_day`` / ``per_month``).

Admission counts in memory (no database or actor call per request); :meth:`Quotas.reconcile` adds this
process's counts to ``quota_counters`` and learns every replica's totals in one statement, and returns
the :class:`QuotaWarning` of each window that this reconcile took to its soft cap first
(``quotas.soft_cap_percent``, 80 % by default), so across replicas there is one warning per window.

Counting happens only for messages that are stored: call :meth:`Quotas.admit` after the idempotency
check has ruled out a replay, and :meth:`Quotas.refund` when the store then finds a duplicate;
deduplicated messages are taken back from the table by :meth:`QuotaStore.refund` (the sender's side).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from engine.channels import Channel
from engine.models import ClaimedMessage, FieldError, Tenant
from engine.problems import ApiProblem
from engine.storage.quota_store import CounterRow, QuotaStore
from engine.tenant_config.governance import ChannelLimits

from .periods import CalendarWindows, Period, Window, utcnow, window_of
from .tally import Tally

QUOTA_EXCEEDED = "urn:herald:problem:quota-exceeded"
_UNITS = {Period.MINUTE: "UTC minute", Period.DAY: "UTC day", Period.MONTH: "UTC calendar month"}

QuotaKey = tuple[uuid.UUID, str, str, datetime]


@dataclass(frozen=True, slots=True)
class QuotaStanding:
    """One quota in its current window: ``used`` before the admission in question."""

    channel: Channel
    period: Period
    limit: int
    used: int
    window: Window
    policy: str  #: its name in ``RateLimit-Policy`` and ``RateLimit`` (``sms.per_day``)

    @property
    def name(self) -> str:
        """The config key that sets it (``limits.sms.per_day``)."""
        return f"limits.{self.policy}"


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    """Whether ``n`` more messages fit every quota of the channel, and the headers that say how it stands."""

    channel: Channel
    standings: tuple[QuotaStanding, ...]
    exceeded: QuotaStanding | None  #: the exhausted quota that frees up last, when refused
    now: datetime
    policy: str  #: the ``RateLimit-Policy`` header, worked out with the standings' windows
    n: int = 1

    @property
    def allowed(self) -> bool:
        return self.exceeded is None

    @property
    def retry_after_s(self) -> int | None:
        if self.exceeded is None:
            return None
        return max(1, math.ceil(self.exceeded.window.seconds_left(self.now)))

    def headers(self) -> dict[str, str]:
        """IETF ``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers), and
        ``Retry-After`` when refused; none when the channel has no quota."""
        if not self.standings:
            return {}
        taken = self.n if self.allowed else 0
        out = {
            "RateLimit-Policy": self.policy,
            "RateLimit": ", ".join(
                f'"{s.policy}";r={max(0, s.limit - s.used - taken)};t={math.ceil(s.window.seconds_left(self.now))}'
                for s in self.standings
            ),
        }
        if self.retry_after_s is not None:
            out["Retry-After"] = str(self.retry_after_s)
        return out

    def problem(self) -> ApiProblem:
        """The 429 of a refused admission, naming the limit.

        Raises:
            ValueError: the admission was allowed.
        """
        s = self.exceeded
        if s is None:
            raise ValueError("an allowed admission has no problem")
        detail = (
            f"the {s.channel.value} quota {s.name} ({s.limit} messages per {_UNITS[s.period]}) is used up "
            f"until {s.window.end.isoformat()}"
        )
        limit = {
            "name": s.name,
            "channel": s.channel.value,
            "period": s.period.value,
            "quota": s.limit,
            "used": s.used,
            "resets_at": s.window.end.isoformat(),
        }
        return ApiProblem(
            429,
            detail,
            type_=QUOTA_EXCEEDED,
            errors=[FieldError(("body", "channel"), f"{s.name} is used up")],
            headers=self.headers(),
            extensions={"limit": limit},
        )


@dataclass(frozen=True, slots=True)
class QuotaWarning:
    """A window reached ``soft_cap_percent`` of its quota: record the ``QuotaWarning`` event, metric and
    webhook once."""

    tenant_id: uuid.UUID
    channel: Channel
    period: Period
    window: Window
    limit: int
    used: int
    soft_cap_percent: int

    def meta(self) -> dict[str, object]:
        return {
            "limit": f"limits.{self.channel.value}.{self.period.quota_key}",
            "channel": self.channel.value,
            "period": self.period.value,
            "window_start": self.window.start.isoformat(),
            "window_end": self.window.end.isoformat(),
            "quota": self.limit,
            "used": self.used,
            "soft_cap_percent": self.soft_cap_percent,
        }


@dataclass(frozen=True, slots=True)
class _Cap:
    limit: int
    soft: int
    percent: int


@dataclass(frozen=True, slots=True)
class _Slot:
    period: Period
    window: Window
    key: QuotaKey
    limit: int | None
    policy: str  #: its name in ``RateLimit-Policy`` and ``RateLimit``


@dataclass(frozen=True, slots=True)
class _Plan:
    limits: ChannelLimits  #: the config object it was worked out from (a config change replaces it)
    percent: int
    minute: Window
    slots: tuple[_Slot, ...]  #: every period's (usage counts them all)
    capped: tuple[_Slot, ...]  #: the periods with a quota
    policy: str  #: the ``RateLimit-Policy`` header


class Quotas:
    """One process's quota counters (every channel of every tenant it admits for)."""

    def __init__(self, store: QuotaStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock
        self.tally: Tally[QuotaKey, int] = Tally(0)
        self._caps: dict[QuotaKey, _Cap] = {}
        self._plans: dict[tuple[uuid.UUID, Channel], _Plan] = {}
        self._windows = CalendarWindows()

    def check(self, tenant: Tenant, channel: Channel, n: int = 1, *, now: datetime | None = None) -> QuotaDecision:
        """Whether ``n`` more messages fit, counting nothing."""
        now = now or self.clock()
        plan = self._plan(tenant, channel, now)
        standings = tuple(
            QuotaStanding(channel, slot.period, slot.limit, self.tally.watched(slot.key), slot.window, slot.policy)
            for slot in plan.capped
        )
        exceeded = [s for s in standings if s.used + n > s.limit]
        worst = max(exceeded, key=lambda s: s.window.end) if exceeded else None
        return QuotaDecision(channel, standings, worst, now, plan.policy, n)

    def count(self, tenant: Tenant, channel: Channel, n: int = 1, *, now: datetime | None = None) -> None:
        """Count ``n`` accepted messages in every period (quota or not: usage shows them all)."""
        for slot in self._plan(tenant, channel, now or self.clock()).slots:
            self.tally.add(slot.key, n)

    def _plan(self, tenant: Tenant, channel: Channel, now: datetime) -> _Plan:
        """The channel's windows, keys and caps at ``now``, worked out again only when the minute or the
        tenant's limits change (admission asks on every request)."""
        limits = tenant.config.limits.channel(channel)
        percent = tenant.config.quotas.soft_cap_percent
        plan = self._plans.get((tenant.id, channel))
        if (
            plan is not None
            and plan.limits is limits
            and plan.percent == percent
            and plan.minute.start <= now < plan.minute.end
        ):
            return plan
        windows = self._windows.at(now)
        caps = limits.quota_caps()
        slots = []
        for period, window in windows.items():
            key = (tenant.id, channel.value, period.value, window.start)
            limit = caps.get(period.quota_key)
            slots.append(_Slot(period, window, key, limit, f"{channel.value}.{period.quota_key}"))
            if limit is None:
                self._caps.pop(key, None)
            else:
                self._caps[key] = _Cap(limit, math.ceil(limit * percent / 100), percent)
        capped = tuple(s for s in slots if s.limit is not None)
        policy = ", ".join(f'"{s.policy}";q={s.limit};w={s.window.seconds}' for s in capped)
        plan = _Plan(limits, percent, windows[Period.MINUTE], tuple(slots), capped, policy)
        self._plans[(tenant.id, channel)] = plan
        return plan

    def admit(self, tenant: Tenant, channel: Channel, n: int = 1) -> QuotaDecision:
        """Check, and count when allowed. A refused decision's :meth:`QuotaDecision.problem` is the 429."""
        decision = self.check(tenant, channel, n)
        if decision.allowed:
            self.count(tenant, channel, n, now=decision.now)
        return decision

    def refund(self, tenant: Tenant, channel: Channel, n: int = 1, *, at: datetime | None = None) -> None:
        """Take back ``n`` messages counted at ``at`` (now) that were not stored after all."""
        when = at or self.clock()
        for period in Period:
            self.tally.add((tenant.id, channel.value, period.value, window_of(period, when).start), -n)

    async def reconcile(self) -> list[QuotaWarning]:
        """Add this process's counts to the table and take every replica's totals, in one statement.

        Raises:
            asyncpg.PostgresError, OSError: the database could not be reached (the counts stay pending
            and go with the next reconcile).
        """
        batch = self.tally.begin()
        rows = []
        for key, delta in batch.items():
            cap = self._caps.get(key)
            rows.append((CounterRow(*key), delta, cap.soft if cap else None))
        try:
            totals = await self.store.reconcile(rows, token=uuid.uuid4())
        except BaseException:
            self.tally.abort()
            raise
        now = self.clock()
        self.tally.settle({t.row.key: t.used for t in totals}, keep=lambda k: _window(k).end > now)
        warnings = []
        for t in totals:
            cap = self._caps.get(t.row.key)
            if t.warned_now and cap is not None:
                period = Period(t.row.period)
                warnings.append(
                    QuotaWarning(
                        t.row.tenant_id,
                        Channel(t.row.channel),
                        period,
                        window_of(period, t.row.window_start),
                        cap.limit,
                        t.used,
                        cap.percent,
                    )
                )
        for key in [k for k in self._caps if _window(k).end <= now]:
            del self._caps[key]
        return warnings


def _window(key: QuotaKey) -> Window:
    return window_of(Period(key[2]), key[3])


class DedupeRefunds:
    """The senders' hook (:class:`engine.dedupe.DeduplicatedHook`) that keeps deduplicated messages out of
    the quotas: each was counted at admission and is never sent, so it is taken back from the windows of
    its acceptance in ``quota_counters`` (one statement per batch). Pass it to the dispatcher as
    ``RecipientDedupe(store, on_deduplicated=DedupeRefunds(QuotaStore(pool)))`` once admission counts."""

    def __init__(self, store: QuotaStore) -> None:
        self.store = store

    async def deduplicated(self, messages: Sequence[ClaimedMessage]) -> None:
        rows = [
            (CounterRow(m.tenant_id, m.channel.value, p.value, window_of(p, m.created_at).start), 1)
            for m in messages
            for p in Period
        ]
        await self.store.refund(rows)
