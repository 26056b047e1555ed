"""How a sender reads routing state and reports what happened, without a round trip per message.

:class:`RoutingFeed` is the port: ``view()`` is the sender's local copy of the routing table and the
health snapshot (refreshed in the background, about a second old at most), ``result``/``call`` count
outcomes locally, and only ``lease_probes`` (for a half-open breaker, once per batch) may cross a process
boundary. The Ray implementation lives in ``actors/``; :class:`LocalFeed` keeps the board and the table
in this process (tests, benchmarks, a single process).

:class:`Planner` turns a query into a plan through that view, caching plans while the view is unchanged
(a batch of a hundred similar messages is planned once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import ConfigurationError, DispatchError

from .health import EMPTY_SNAPSHOT, BreakerKey, HealthBoard, HealthSnapshot, TallyBuffer
from .planner import RoutePlan, plan_route
from .query import RouteQuery
from .table import RoutingTable, TableStore, parse_tenant_routing, tenant_routing_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RoutingView:
    table: RoutingTable
    health: HealthSnapshot


class RoutingFeed(Protocol):
    def view(self) -> RoutingView:
        """The local copy; no I/O."""
        ...

    def results(self, key: BreakerKey, at: float, errors: Sequence[DispatchError | None]) -> None:
        """The outcomes of one provider call's messages (counted locally, reported in a batch)."""
        ...

    def call(self, key: BreakerKey, latency_ms: float) -> None:
        """One provider call and its duration."""
        ...

    async def lease_probes(self, key: BreakerKey, wanted: int) -> int:
        """How many of ``wanted`` sends may go to a half-open provider now."""
        ...


class LocalFeed:
    """Board and table in this process. ``refresh_s`` > 0 plays a remote feed's snapshot age."""

    def __init__(
        self,
        table: TableStore | RoutingTable,
        board: HealthBoard | None = None,
        *,
        refresh_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = table if isinstance(table, TableStore) else None
        self._table = table.table if isinstance(table, TableStore) else table
        self.board = board or HealthBoard(self._table.breaker_policy, clock)
        self.refresh_s = refresh_s
        self.clock = clock
        self._buffer = TallyBuffer()
        self._view = RoutingView(self._table, EMPTY_SNAPSHOT)
        self._refreshed = -1.0

    def view(self) -> RoutingView:
        now = self.clock()
        if now - self._refreshed >= self.refresh_s:
            self._refreshed = now
            self.board.apply(self._buffer.drain())
            table = self._store.table if self._store is not None else self._table
            if table is not self._view.table:
                self.board.configure(table.breaker_policy)
            self._view = RoutingView(table, self.board.snapshot())
        return self._view

    def results(self, key: BreakerKey, at: float, errors: Sequence[DispatchError | None]) -> None:
        self._buffer.results(key, at, errors)

    def call(self, key: BreakerKey, latency_ms: float) -> None:
        self._buffer.call(key, latency_ms)

    async def lease_probes(self, key: BreakerKey, wanted: int) -> int:
        self.board.apply(self._buffer.drain())
        return self.board.lease_probes(key, wanted)


class Planner:
    """Plans through a feed's view, cached per (query, view)."""

    def __init__(self, max_cached: int = 4096) -> None:
        self.max_cached = max_cached
        self._stamp: tuple[object, ...] = ()
        self._plans: dict[RouteQuery, RoutePlan] = {}
        self._tenant_tables: dict[tuple[int, str, str], RoutingTable] = {}
        self._bad_configs: set[str] = set()

    def table_for(self, table: RoutingTable, tenant_config: Any) -> tuple[RoutingTable, str]:
        """The table with the tenant's overrides applied, and the key of those overrides. ``tenant_config``
        is the typed ``TenantConfig`` (its ``routing`` section) or a stored document."""
        key = tenant_routing_key(tenant_config)
        if not key:
            return table, ""
        cache_key = (table.revision, table.digest, key)
        found = self._tenant_tables.get(cache_key)
        if found is None:
            try:
                doc = parse_tenant_routing(tenant_config)
            except ConfigurationError as err:
                if key not in self._bad_configs:
                    self._bad_configs.add(key)
                    log.warning("ignoring a tenant's routing overrides: %s", err)
                return table, ""
            if len(self._tenant_tables) > 1024:
                self._tenant_tables.clear()
            found = self._tenant_tables[cache_key] = table.for_tenant(doc) if doc else table
        return found, key

    def plan(self, query: RouteQuery, view: RoutingView, table: RoutingTable, *, now: float) -> RoutePlan:
        """``table`` is ``view.table`` or its tenant-overridden form (see :meth:`table_for`)."""
        stamp = (view.table.revision, view.table.digest, view.health.version, view.health.taken_at)
        if stamp != self._stamp or len(self._plans) >= self.max_cached:
            self._stamp = stamp
            self._plans.clear()
        found = self._plans.get(query)
        if found is None:
            found = self._plans[query] = plan_route(query, table, view.health, now=now)
        return found
