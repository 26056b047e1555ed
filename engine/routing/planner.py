"""Choosing providers for a message: filter the candidates, rank them by the message's policy rule, and
say why for each one.

Filters, in order: configured on this deployment, the tenant's allow-list, the provider a DLQ replay
named (``messages.pinned_provider``: only it), the push token's platform, the tenant's region (for
providers tagged with regions), then health (an open breaker, or the platform account's breaker that
its health checks keep while it is not closed). The ones before health never change for a
message, so a message none of them lets through has no route at all (``no_route``); one whose candidates
are only unhealthy waits for them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from engine.channels import Channel

from .breaker import BreakerState
from .health import ACCOUNT_REGION, PLATFORM, BreakerKey, HealthSnapshot, KeyHealth
from .policy import Criterion, PolicyRule
from .query import RouteQuery
from .table import RoutingTable

#: Each observed send weighs as much as one of this many seeded ones in the learned reliability.
SEED_WEIGHT = 100.0
#: The sink takes any push token (benchmarks); every other push provider only its own platform's.
ANY_PLATFORM = frozenset({"sink"})


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: str
    owner: str
    key: BreakerKey
    usable: bool
    health: BreakerState
    reliability: float
    latency_ms: float
    unit_cost_usd: float | None
    reason: str
    rank: int | None = None
    #: Filtered for good (not configured, not allowed, wrong platform or region), not for health.
    excluded: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "owner": self.owner,
            "rank": self.rank,
            "usable": self.usable,
            "health": self.health.value,
            "unit_cost_usd": self.unit_cost_usd,
            "reliability": round(self.reliability, 4),
            "latency_ms": round(self.latency_ms, 1),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RoutePlan:
    query: RouteQuery
    rule: PolicyRule
    candidates: tuple[Candidate, ...]  #: usable ones in rank order, then the filtered ones
    table_label: str
    health_version: int

    @property
    def usable(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.usable)

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.usable), None)

    @property
    def no_route(self) -> bool:
        """No provider could ever take this message (nothing configured or allowed for it)."""
        return all(c.excluded for c in self.candidates)

    @functools.cached_property
    def summary(self) -> dict[str, Any]:
        """What a send records on its events, compact (computed once per plan and shared by every
        message it routes): the policy rule, the choice, the table version, and each candidate as
        ``[provider, rank, health, unit_cost_usd, reliability]`` (plus a note when it was pinned or
        probed) or, filtered out, ``[provider, null, health, why]``. ``explain`` words it all out."""
        chosen = self.chosen
        return {
            "policy": self.rule.name,
            "chosen": chosen.provider if chosen else None,
            "table": self.table_label,
            "candidates": [_brief(c) for c in self.candidates],
        }

    def explain(self) -> dict[str, Any]:
        chosen = self.chosen
        q = self.query
        return {
            "channel": q.channel.value,
            "destination": q.destination,
            "category": q.category,
            "priority": q.priority,
            "tenant_region": q.region,
            "policy": self.rule.name,
            "rank_by": [c.value for c in self.rule.rank_by],
            "failover": "immediate" if self.rule.immediate_failover else "backoff",
            "chosen": chosen.provider if chosen else None,
            "no_route": self.no_route,
            "routing_table_version": self.table_label,
            "health_version": self.health_version,
            "candidates": [c.as_dict() for c in self.candidates],
        }


def _brief(c: Candidate) -> list[Any]:
    if not c.usable:
        return [c.provider, None, c.health.value, c.reason]
    brief: list[Any] = [c.provider, c.rank, c.health.value, c.unit_cost_usd, round(c.reliability, 4)]
    if c.reason.startswith("pinned") or c.health is BreakerState.HALF_OPEN:
        brief.append(c.reason)
    return brief


def learned_reliability(seed: float, health: KeyHealth | None) -> float:
    if health is None:
        return seed
    seen = health.recent_ok + health.recent_failed
    return (seed * SEED_WEIGHT + health.recent_ok) / (SEED_WEIGHT + seen)


def _excluded(query: RouteQuery, table: RoutingTable) -> dict[str, str]:
    """Providers filtered for good, with the reason."""
    out: dict[str, str] = {}
    allowed = query.allow
    for name in query.configured:
        if allowed is not None and name not in allowed:
            out[name] = "not in the tenant's allow-list"
    for name in allowed or ():
        if name not in query.configured:
            out[name] = f"not configured for {query.channel.value} on this deployment"
    for name in _order(query):
        if name in out:
            continue
        if query.only is not None and name != query.only:
            out[name] = f"the DLQ replay named {query.only}"
            continue
        if query.channel is Channel.PUSH and name not in ANY_PLATFORM and name != (query.push_platform or "fcm"):
            out[name] = f"the device token is for {query.push_platform or 'fcm'}"
            continue
        route = table.route(query.channel, name)
        if route is not None and route.regions and query.region not in route.regions:
            out[name] = f"serves regions {', '.join(sorted(route.regions))}, not the tenant's {query.region}"
    return out


def _order(query: RouteQuery) -> tuple[str, ...]:
    """Candidates in the tenant's (allow-list) or the deployment's order."""
    if query.allow is None:
        return query.configured
    return tuple(n for n in query.allow if n in query.configured)


def plan_route(query: RouteQuery, table: RoutingTable, snapshot: HealthSnapshot, *, now: float) -> RoutePlan:
    excluded = _excluded(query, table)
    order = _order(query)
    position = {name: i for i, name in enumerate(order)}
    usable: list[Candidate] = []
    filtered: list[Candidate] = []
    for name in dict.fromkeys((*order, *query.configured, *(query.allow or ()))):
        candidate = _candidate(query, table, snapshot, name, now, excluded.get(name))
        (usable if candidate.usable else filtered).append(candidate)
    rule = table.rule_for(query.category, query.priority)
    usable.sort(key=lambda c: (*(_score(c, k, position) for k in rule.rank_by), position.get(c.provider, 0)))
    if query.pinned and any(c.provider == query.pinned for c in usable):
        usable.sort(key=lambda c: c.provider != query.pinned)
    ranked = [_ranked(c, i, usable[i - 1] if i else None, rule, query) for i, c in enumerate(usable)]
    return RoutePlan(query, rule, (*ranked, *filtered), table.label, snapshot.version)


def _candidate(
    query: RouteQuery, table: RoutingTable, snapshot: HealthSnapshot, name: str, now: float, excluded: str | None
) -> Candidate:
    owner = query.tenant if name in query.own_credentials else PLATFORM
    key = BreakerKey(name, query.channel.value, query.region, owner)
    health = snapshot.get(key)
    route = table.route(query.channel, name)
    seed_reliability = route.reliability if route and route.reliability is not None else table.reliability
    seed_latency = route.latency_ms if route and route.latency_ms is not None else table.latency_ms
    state = health.state if health else BreakerState.CLOSED
    if state is BreakerState.OPEN and health is not None and health.retry_at is not None and now >= health.retry_at:
        state = BreakerState.HALF_OPEN  # the cool-down is over: probes may go (the board leases them)
    reason = excluded or ""
    if not reason and state is BreakerState.OPEN:
        reason = f"breaker open ({health.last_error if health and health.last_error else 'failing'})"
    account = snapshot.get(BreakerKey(name, query.channel.value, ACCOUNT_REGION, owner)) if owner == PLATFORM else None
    if account is not None and account.state is not BreakerState.CLOSED:
        state = BreakerState.OPEN  # until a health check succeeds (half-open: the next check is the probe)
        reason = reason or f"breaker open ({account.last_error or 'health check failing'})"
    volume = snapshot.volume(query.channel.value, name, owner)
    return Candidate(
        provider=name,
        owner=owner,
        key=key,
        usable=not reason,
        health=state,
        reliability=learned_reliability(seed_reliability, health),
        latency_ms=health.latency_ms if health and health.latency_ms is not None else seed_latency,
        unit_cost_usd=table.unit_price(
            query.channel, name, query.destination, category=query.price_category, volume=volume
        ),
        reason=reason,
        excluded=excluded is not None,
    )


def _score(c: Candidate, criterion: Criterion, position: dict[str, int]) -> float:
    if criterion is Criterion.RELIABILITY:
        return -c.reliability
    if criterion is Criterion.LATENCY:
        return c.latency_ms
    if criterion is Criterion.COST:
        return math.inf if c.unit_cost_usd is None else c.unit_cost_usd
    return float(position.get(c.provider, 0))


_LABELS = {
    Criterion.RELIABILITY: "reliability",
    Criterion.LATENCY: "latency",
    Criterion.COST: "cost",
    Criterion.ORDER: "order",
}


def _value(c: Candidate, criterion: Criterion) -> str:
    if criterion is Criterion.RELIABILITY:
        return f"{c.reliability:.4f}"
    if criterion is Criterion.LATENCY:
        return f"{c.latency_ms:.0f} ms"
    if criterion is Criterion.COST:
        return "unpriced" if c.unit_cost_usd is None else f"${c.unit_cost_usd:.6f}"
    return "later in the allow-list or configured order"


def _ranked(c: Candidate, index: int, previous: Candidate | None, rule: PolicyRule, query: RouteQuery) -> Candidate:
    probe = " (half-open: sent as a probe)" if c.health is BreakerState.HALF_OPEN else ""
    if index == 0:
        if query.pinned == c.provider:
            why = "pinned: its last attempt timed out after sending, so it is retried here"
        elif query.only == c.provider:
            why = "pinned: the DLQ replay named it"
        else:
            criteria = ", ".join(f"{_LABELS[k]} {_value(c, k)}" for k in rule.rank_by if k is not Criterion.ORDER)
            why = f"chosen by policy {rule.name!r}" + (f": {criteria}" if criteria else ": first in order")
    else:
        assert previous is not None
        why = f"rank {index + 1}: " + _behind(c, previous, rule)
    return Candidate(
        provider=c.provider,
        owner=c.owner,
        key=c.key,
        usable=True,
        health=c.health,
        reliability=c.reliability,
        latency_ms=c.latency_ms,
        unit_cost_usd=c.unit_cost_usd,
        reason=why + probe,
        rank=index + 1,
    )


def _behind(c: Candidate, previous: Candidate, rule: PolicyRule) -> str:
    for criterion in rule.rank_by:
        if criterion is Criterion.ORDER:
            break
        mine, theirs = _value(c, criterion), _value(previous, criterion)
        if mine != theirs:
            return f"{_LABELS[criterion]} {mine} vs {theirs} for {previous.provider}"
    return f"after {previous.provider} in the allow-list or configured order"
