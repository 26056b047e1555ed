"""Estimated prices at admission, from the routing table: what a message will most likely cost before a
sender has picked its provider.

The estimate is the dearest unit price among the channel's configured providers that the tenant's
allow-list lets through, for the message's destination and at the tenant's own prices where its routing
overrides set them (a budget is not passed by a failover to a dearer provider), times its units. The table is a
snapshot the process keeps fresh in the background (:meth:`TablePrices.use`); no call per request, and
each distinct query is priced once per table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from engine.channels import Channel
from engine.errors import ConfigurationError
from engine.routing import RoutingTable
from engine.routing.table import TenantRoutingDoc

from .budgets import ZERO, PriceQuery

#: Distinct queries priced per table before the prices worked out are forgotten (a bound on memory).
MAX_PRICED = 10_000


class TablePrices:
    """A :data:`~engine.governance.budgets.PriceFunction` over the routing table in use."""

    def __init__(self, providers: Mapping[Channel, Sequence[str]], table: RoutingTable | None = None) -> None:
        self.providers = {c: tuple(p) for c, p in providers.items()}
        self.table = table
        self._priced: dict[PriceQuery, Decimal] = {}
        self._tenant_tables: dict[str, RoutingTable] = {}

    def use(self, table: RoutingTable) -> None:
        self.table = table
        self._priced = {}
        self._tenant_tables = {}

    def __call__(self, query: PriceQuery) -> Decimal:
        priced = self._priced.get(query)
        if priced is None:
            priced = self._price(query)
            if len(self._priced) >= MAX_PRICED:
                self._priced = {}
            self._priced[query] = priced
        return priced

    def _price(self, query: PriceQuery) -> Decimal:
        table = self._table_for(query.overrides)
        if table is None:
            return ZERO
        destination = query.region or "*"
        providers = self.providers.get(query.channel, ())
        if query.allow is not None:
            providers = tuple(p for p in providers if p in query.allow)
        prices = [table.unit_price(query.channel, p, destination, category=query.category) for p in providers]
        known = [p for p in prices if p is not None]
        return Decimal(str(max(known))) * query.units if known else ZERO

    def _table_for(self, overrides: str) -> RoutingTable | None:
        """The table with a tenant's price overrides applied (malformed ones are ignored, as routing does)."""
        table = self.table
        if table is None or not overrides:
            return table
        found = self._tenant_tables.get(overrides)
        if found is None:
            try:
                found = table.for_tenant(TenantRoutingDoc.model_validate_json(overrides))
            except (ValueError, ConfigurationError):
                found = table
            if len(self._tenant_tables) >= MAX_PRICED:
                self._tenant_tables = {}
            self._tenant_tables[overrides] = found
        return found
