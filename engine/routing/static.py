"""Routes with the routing step skipped: the allow-list (else the configured) order and the push token's
platform, no health, no prices. What a dispatcher without a routing feed uses (tests of other parts,
and the benchmark's baseline)."""

from __future__ import annotations

from engine.channels import Channel

from .breaker import BreakerState
from .health import EMPTY_SNAPSHOT, PLATFORM, BreakerKey
from .planner import ANY_PLATFORM, Candidate, RoutePlan
from .policy import DEFAULT_RULES, choose_rule
from .query import RouteQuery

_LABEL = "static"


class StaticRoutes:
    def __init__(self) -> None:
        self._plans: dict[tuple[object, ...], RoutePlan] = {}

    def plan(
        self,
        channel: Channel,
        configured: tuple[str, ...],
        allow: tuple[str, ...] | None,
        *,
        push_platform: str | None,
        category: str | None,
        priority: str,
        only: str | None = None,
    ) -> RoutePlan:
        """``only``: the provider a DLQ replay named (no other is used)."""
        key = (channel, configured, allow, push_platform, category, priority, only)
        found = self._plans.get(key)
        if found is None:
            found = self._plans[key] = self._build(channel, configured, allow, push_platform, category, priority, only)
        return found

    @staticmethod
    def _build(
        channel: Channel,
        configured: tuple[str, ...],
        allow: tuple[str, ...] | None,
        push_platform: str | None,
        category: str | None,
        priority: str,
        only: str | None,
    ) -> RoutePlan:
        chain = [p for p in allow if p in configured] if allow else list(configured)
        if only is not None:
            chain = [p for p in chain if p == only]
        if channel is Channel.PUSH:
            chain = [p for p in chain if p == (push_platform or "fcm") or p in ANY_PLATFORM]
        candidates = tuple(
            Candidate(
                provider=name,
                owner=PLATFORM,
                key=BreakerKey(name, channel.value, "", PLATFORM),
                usable=True,
                health=BreakerState.CLOSED,
                reliability=1.0,
                latency_ms=0.0,
                unit_cost_usd=None,
                reason="configured order",
                rank=i + 1,
            )
            for i, name in enumerate(chain)
        )
        query = RouteQuery(channel, "", "", "*", category, priority, configured, allow, push_platform, only=only)
        rule = choose_rule(DEFAULT_RULES, category, priority)
        return RoutePlan(query, rule, candidates, _LABEL, EMPTY_SNAPSHOT.version)
