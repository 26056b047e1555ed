"""Sending one batch along its routes: each message walks its ranked candidates until one takes it or
its failure class says stop (see ``engine.routing.failover``).

Messages that share their current candidate go to it in one driver call; calls to different providers
run concurrently. Moving to the next provider is free; every provider tried is a :class:`Try` (an
attempt row). A half-open provider only gets the sends it leased probe permits for; the others move on
without a try. Every call's outcome is counted into the routing feed, never reported one by one.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from engine.channels import Channel
from engine.credentials import sealed_for
from engine.delivery import Driver, OutboundMessage, SendResult
from engine.errors import ConfigurationError, DispatchError, NotAttemptedError, ProviderDownError
from engine.models import ClaimedMessage
from engine.routing import (
    BreakerState,
    Candidate,
    Move,
    Planner,
    RoutePlan,
    RoutingFeed,
    RoutingTable,
    RoutingView,
    next_move,
)
from engine.routing.query import RouteQuery, allow_list, destination, email_region
from engine.routing.static import StaticRoutes


class Ending(StrEnum):
    SENT = "sent"
    FAILED = "failed"  #: permanent: no other provider is tried
    RETRY = "retry"  #: every candidate was down, open or failing, or the policy waits: back off
    RETRY_SAME = "retry_same"  #: timed out after sending: retry later on the same provider


@dataclass(frozen=True, slots=True)
class Try:
    provider: str
    owner: str
    started_at: datetime
    error: DispatchError | None = None
    result: SendResult | None = None
    candidate: Candidate | None = None

    @property
    def attempted(self) -> bool:
        """False when the provider never saw the message: its batch stopped at an outage before it (the
        message fails over, and this is no attempt row)."""
        return not isinstance(self.error, NotAttemptedError)

    @property
    def label(self) -> str:
        return self.provider if self.attempted else f"{self.provider} (not started)"


@dataclass(slots=True)
class Journey:
    msg: ClaimedMessage
    out: OutboundMessage
    plan: RoutePlan
    table: RoutingTable | None  #: the table the plan was made with (the tenant's overrides); None: static
    queue: list[Candidate]
    tries: list[Try] = field(default_factory=list)
    ending: Ending | None = None
    #: Half-open candidates passed over for want of a probe permit.
    skipped: list[str] = field(default_factory=list)

    @property
    def last(self) -> Try | None:
        return self.tries[-1] if self.tries else None


#: The driver for one candidate of one message: the platform's, or one built from the tenant's own
#: credentials. Raises ConfigurationError when the tenant's credentials cannot be used.
DriverLookup = Callable[[ClaimedMessage, Candidate], Driver]


class RoutedSender:
    def __init__(
        self,
        driver_for: DriverLookup,
        feed: RoutingFeed | None,
        *,
        clock: Callable[[], datetime],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.driver_for = driver_for
        self.feed = feed
        self.clock = clock
        self.wall = wall

    async def send(self, journeys: list[Journey]) -> None:
        """Walk every journey until it has an ending."""
        while True:
            for j in journeys:
                if j.ending is None and not j.queue:
                    j.ending = Ending.RETRY
            pending = [j for j in journeys if j.ending is None]
            if not pending:
                return
            groups: dict[tuple[str, str], list[Journey]] = defaultdict(list)
            for j in pending:
                groups[(j.queue[0].provider, j.queue[0].owner)].append(j)
            sendable = [await self._probe_permits(g) for g in groups.values()]
            await asyncio.gather(*(self._call(g) for g in sendable if g))

    async def _probe_permits(self, group: list[Journey]) -> list[Journey]:
        """The part of a group a half-open provider takes; the rest move on without a try."""
        candidate = group[0].queue[0]
        if candidate.health is not BreakerState.HALF_OPEN or self.feed is None:
            return group
        granted = await self.feed.lease_probes(candidate.key, len(group))
        for j in group[granted:]:
            j.skipped.append(j.queue.pop(0).provider)
        return group[:granted]

    async def _call(self, group: list[Journey]) -> None:
        candidate = group[0].queue[0]
        started = self.clock()
        t0 = time.perf_counter()
        down: DispatchError | None = None
        results: list[SendResult] = []
        try:
            driver = self.driver_for(group[0].msg, candidate)
            results = await driver.send_batch([j.out for j in group])
        except ProviderDownError as err:
            down = err
        except ConfigurationError as err:
            down = ProviderDownError(str(err)[:300], provider=candidate.provider, code="credentials")
        if self.feed is not None:
            self.feed.call(candidate.key, (time.perf_counter() - t0) * 1000)
            # A provider-wide failure counts once, however many messages it stopped.
            errors = [down] if down is not None else [r.error for r in results]
            self.feed.results(candidate.key, self.wall(), errors)
        for i, j in enumerate(group):
            result = None if down is not None else results[i]
            error = down if result is None else result.error
            j.queue.pop(0)
            j.tries.append(Try(candidate.provider, candidate.owner, started, error, result, candidate))
            if error is None:
                j.ending = Ending.SENT
                continue
            move = next_move(error, immediate_failover=j.plan.rule.immediate_failover)
            if move is Move.FAIL:
                j.ending = Ending.FAILED
            elif move is Move.RETRY_SAME:
                j.ending = Ending.RETRY_SAME
            elif move is Move.WAIT:
                j.ending = Ending.RETRY


@dataclass(frozen=True, slots=True)
class _TenantRouting:
    configured: tuple[str, ...]
    allow: tuple[str, ...] | None
    email_region: str
    own_credentials: frozenset[str]
    table: RoutingTable | None
    routing_key: str


#: A tenant's own driver for a provider, when it brought its own credentials (else None).
TenantDriverLookup = Callable[[ClaimedMessage, Channel, str], Driver | None]


class Router:
    """The route step of a dispatcher: plans each message through the feed's view and sends the batch
    along the plans. Without a feed the step is skipped (configured order, no health, no prices)."""

    def __init__(
        self,
        drivers: Mapping[Channel, Sequence[Driver]],
        tenant_driver: TenantDriverLookup,
        feed: RoutingFeed | None,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.drivers = drivers
        self.tenant_driver = tenant_driver
        self.feed = feed
        self.planner = Planner()
        self.static = StaticRoutes()
        self.sender = RoutedSender(self.driver_for, feed, clock=clock)
        #: What routing reads of each tenant's config, and the plans made, for the batch in hand.
        self._tenants: dict[tuple[str, Channel], _TenantRouting] = {}
        self._plans: dict[tuple[object, ...], RoutePlan] = {}

    def view(self) -> RoutingView | None:
        """The routing state for the next batch (its messages' tenant configs are read afresh)."""
        self._tenants.clear()
        self._plans.clear()
        return self.feed.view() if self.feed is not None else None

    async def send(self, journeys: list[Journey]) -> None:
        await self.sender.send(journeys)

    def journey(self, msg: ClaimedMessage, out: OutboundMessage, view: RoutingView | None, now: float) -> Journey:
        """The message's ranked candidates: from the routing snapshot, or (no feed) the configured order."""
        tenant = self._tenant_routing(msg, view)
        configured, allow = tenant.configured, tenant.allow
        if view is None:
            plan = self.static.plan(
                msg.channel,
                configured,
                allow,
                push_platform=out.to.push_platform,
                category=out.category,
                priority=msg.priority.value,
                only=msg.pinned_provider,
            )
            return Journey(msg, out, plan, None, list(plan.usable))
        assert tenant.table is not None
        dest = destination(msg.channel, msg.to, email_region_=tenant.email_region)
        # Messages of the batch that differ in nothing routing reads share one plan.
        fast = (msg.tenant_slug, msg.channel, dest, out.category, msg.priority, out.to.push_platform)
        fast += (msg.pinned_provider, msg.sent_maybe_provider, price_category(out))
        plan = self._plans.get(fast)
        if plan is None:
            plan = self._plans[fast] = self._plan(msg, out, view, tenant, dest, now)
        return Journey(msg, out, plan, tenant.table, list(plan.usable))

    def _plan(
        self,
        msg: ClaimedMessage,
        out: OutboundMessage,
        view: RoutingView,
        tenant: _TenantRouting,
        dest: str,
        now: float,
    ) -> RoutePlan:
        assert tenant.table is not None
        query = RouteQuery(
            channel=msg.channel,
            tenant=msg.tenant_slug,
            region=msg.tenant_region,
            destination=dest,
            category=out.category,
            priority=msg.priority.value,
            configured=tenant.configured,
            allow=tenant.allow,
            push_platform=out.to.push_platform,
            own_credentials=tenant.own_credentials,
            price_category=price_category(out),
            tenant_routing=tenant.routing_key,
            pinned=msg.sent_maybe_provider,
            only=msg.pinned_provider,
        )
        return self.planner.plan(query, view, tenant.table, now=now)

    def _tenant_routing(self, msg: ClaimedMessage, view: RoutingView | None) -> _TenantRouting:
        key = (msg.tenant_slug, msg.channel)
        found = self._tenants.get(key)
        if found is None:
            config, channel = msg.tenant_config, msg.channel
            configured = tuple(d.provider for d in self.drivers.get(channel, ()))
            table, routing_key = self.planner.table_for(view.table, config) if view is not None else (None, "")
            found = self._tenants[key] = _TenantRouting(
                configured=configured,
                allow=allow_list(config, channel),
                email_region=email_region(config, msg.tenant_region),
                own_credentials=frozenset(p for p in configured if sealed_for(config, channel, p)),
                table=table,
                routing_key=routing_key,
            )
        return found

    def driver_for(self, msg: ClaimedMessage, candidate: Candidate) -> Driver:
        """The tenant's own driver for the provider, else the platform's.

        Raises:
            ConfigurationError: the tenant's credentials cannot be opened or miss a setting.
            ProviderDownError: the provider is not configured here.
        """
        own = self.tenant_driver(msg, msg.channel, candidate.provider)
        if own is not None:
            return own
        for driver in self.drivers.get(msg.channel, ()):
            if driver.provider == candidate.provider:
                return driver
        raise ProviderDownError(f"{candidate.provider} is not configured", provider=candidate.provider)

    @staticmethod
    def cost(j: Journey, result: SendResult, view: RoutingView | None) -> float | None:
        """The send's price from the routing table (the one source of prices), else what the driver said."""
        last = j.last
        if view is None or j.table is None or last is None or last.candidate is None:
            return result.cost_usd
        units = int(getattr(result, "segments", 1) or 1)
        if units == 1 and not j.out.attachments:  # the unit price the plan looked up at this month's volume
            cost = last.candidate.unit_cost_usd
        else:
            cost = j.table.cost(
                j.msg.channel,
                last.provider,
                j.plan.query.destination,
                units=units,
                category=j.plan.query.price_category,
                volume=view.health.volume(j.msg.channel.value, last.provider, last.owner),
                attachment_bytes=sum(len(a.data or b"") for a in j.out.attachments),
            )
        return result.cost_usd if cost is None else cost


def price_category(out: OutboundMessage) -> str | None:
    """WhatsApp is billed by the template's category; a free-form text is a (free) service message."""
    if out.channel is not Channel.WHATSAPP:
        return None
    template = out.extra.get("whatsapp_template") or {}
    return str(template.get("category") or "utility") if template else "service"
