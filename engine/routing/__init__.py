"""Smart routing: circuit breakers, the health board, the routing table (prices, seeds, region tags,
breaker thresholds), policy rules as data, candidate filtering and ranking, and why.

Pure Python: the actors in ``actors/`` hold a :class:`HealthBoard` and a :class:`TableStore`; senders
read them through a :class:`RoutingFeed` snapshot. ``engine.routing.service`` (explain, the providers
page, reloads) is imported by the API on its own, to keep this package free of the intake.
"""

from .breaker import BreakerPolicy, BreakerState, CircuitBreaker
from .failover import Move, next_move, outcome_unknown
from .feed import LocalFeed, Planner, RoutingFeed, RoutingView
from .health import (
    ACCOUNT_REGION,
    PLATFORM,
    BreakerKey,
    CheckResult,
    HealthBoard,
    HealthSnapshot,
    KeyHealth,
    Tally,
    TallyBuffer,
)
from .planner import Candidate, RoutePlan, plan_route
from .policy import Criterion, PolicyRule
from .query import RouteQuery, allow_list, destination, email_region
from .table import SHIPPED_TABLE, RoutingTable, TableStore, load_table, parse_table

__all__ = [
    "ACCOUNT_REGION",
    "PLATFORM",
    "SHIPPED_TABLE",
    "BreakerKey",
    "BreakerPolicy",
    "BreakerState",
    "Candidate",
    "CheckResult",
    "CircuitBreaker",
    "Criterion",
    "HealthBoard",
    "HealthSnapshot",
    "KeyHealth",
    "LocalFeed",
    "Move",
    "Planner",
    "PolicyRule",
    "RoutePlan",
    "RouteQuery",
    "RoutingFeed",
    "RoutingTable",
    "RoutingView",
    "TableStore",
    "Tally",
    "TallyBuffer",
    "allow_list",
    "destination",
    "email_region",
    "load_table",
    "next_move",
    "outcome_unknown",
    "parse_table",
    "plan_route",
]
