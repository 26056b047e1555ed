"""Routing policy as data: which rule a message falls under, and what that rule ranks providers by.

The rules live in the routing table (``policy:``), first match wins, and the last one must match
everything. A rule names the criteria candidates are sorted by, in order (``reliability`` highest first,
``latency`` and ``cost`` lowest first, ``order`` the tenant's allow-list or the configured failover
order), and whether a retryable failure moves the message to the next provider at once
(``failover: immediate``) or waits with backoff on a later round (``failover: backoff``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Criterion(StrEnum):
    RELIABILITY = "reliability"
    LATENCY = "latency"
    COST = "cost"
    ORDER = "order"


@dataclass(frozen=True, slots=True)
class PolicyRule:
    name: str
    rank_by: tuple[Criterion, ...]
    categories: frozenset[str] = frozenset()  #: empty: any category
    priorities: frozenset[str] = frozenset()  #: empty: any priority
    immediate_failover: bool = False

    def matches(self, category: str | None, priority: str) -> bool:
        if self.categories and (category or "") not in self.categories:
            return False
        return not self.priorities or priority in self.priorities

    @property
    def catch_all(self) -> bool:
        return not self.categories and not self.priorities


def choose_rule(rules: Sequence[PolicyRule], category: str | None, priority: str) -> PolicyRule:
    for rule in rules:
        if rule.matches(category, priority):
            return rule
    return rules[-1]  # validated to be a catch-all when the table is loaded


#: What a table without a ``policy`` block uses (the shipped table spells the same rules out).
DEFAULT_RULES: tuple[PolicyRule, ...] = (
    PolicyRule(
        "reliable",
        (Criterion.RELIABILITY, Criterion.LATENCY, Criterion.COST),
        categories=frozenset({"auth", "transactional"}),
        immediate_failover=True,
    ),
    PolicyRule(
        "urgent",
        (Criterion.RELIABILITY, Criterion.LATENCY, Criterion.COST),
        priorities=frozenset({"high"}),
        immediate_failover=True,
    ),
    PolicyRule("cheapest", (Criterion.COST, Criterion.RELIABILITY), categories=frozenset({"marketing"})),
    PolicyRule("default", (Criterion.ORDER,)),
)
