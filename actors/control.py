"""The control actor: the cluster's small shared state, in one Ray worker process.

It hosts four parts that are each too small to be worth a process of their own (a Ray worker is about
50 MiB before it holds anything):

- the **metrics aggregator** (:class:`~engine.metrics.MetricsAggregator`): every process ships its
  counter deltas here with :meth:`ControlActor.apply`; ``/metrics`` is :meth:`ControlActor.render`;
- the **routing table** (:class:`~engine.routing.TableStore`, from HERALD_ROUTING_TABLE, reloadable):
  :meth:`ControlActor.current`, :meth:`ControlActor.reload`;
- the **provider health board** (:class:`~actors.health.ProviderHealth`, every circuit breaker, the
  health checks and the persisted monthly volumes): :meth:`ControlActor.sync`,
  :meth:`ControlActor.lease_probes`, :meth:`ControlActor.snapshot`;
- **governor shard 0** (:class:`~actors.governor.Governor`): :meth:`ControlActor.lease`,
  :meth:`ControlActor.states`. Shards 1.. (HERALD_GOVERNOR_SHARDS > 1) are actors of their own.

A restart (Ray starts it again) reads the routing table file again and the volumes from PostgreSQL; the
breakers, the token buckets of shard 0 and the aggregated metrics start from nothing (Prometheus takes
the counters' reset as one).
"""

from __future__ import annotations

import logging
import os

import ray

from actors.governor import Governor
from actors.health import ProviderHealth
from engine import redaction
from engine.governance.buckets import BucketState, Lease, LeaseRequest
from engine.metrics import MetricsAggregator, MetricsDelta
from engine.routing import BreakerKey, HealthSnapshot, RoutingTable, TableStore, Tally
from engine.runtime import RuntimeConfig

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0.05, max_restarts=-1)
class ControlActor:
    def __init__(self, config: RuntimeConfig) -> None:
        s = config.settings
        redaction.configure(s.log_level)  # breaker state changes are logged here, once
        self.aggregator = MetricsAggregator()
        self.tables = TableStore(s.routing_table_path)
        self.providers = ProviderHealth(self.tables.table, config, publish=self.aggregator.apply)
        self.governor = Governor(shards=s.governor_shards)

    # metrics aggregator

    async def apply(self, delta: MetricsDelta) -> None:
        self.aggregator.apply(delta)

    async def render(self, delta: MetricsDelta | None = None) -> bytes:
        if delta:
            self.aggregator.apply(delta)
        return self.aggregator.render()

    # routing table

    async def current(self, known: tuple[int, str] | None = None) -> RoutingTable | None:
        """The table, or None when the caller already has it (``known`` is its :attr:`RoutingTable.stamp`)."""
        return self.tables.newer_than(known)

    async def reload(self) -> RoutingTable:
        """Read the file again; its breaker thresholds apply from now on.

        Raises:
            ConfigurationError: the file is invalid (the table in use stays).
        """
        table = self.tables.reload()
        self.providers.configure(table)
        log.info("routing table %s reloaded from %s", table.label, table.source)
        return table

    # provider health

    async def sync(self, tallies: list[Tally]) -> HealthSnapshot:
        return self.providers.sync(tallies)

    async def lease_probes(self, key: BreakerKey, wanted: int) -> int:
        return self.providers.lease_probes(key, wanted)

    async def snapshot(self) -> HealthSnapshot:
        return self.providers.snapshot()

    # governor shard 0

    async def lease(self, requests: list[LeaseRequest]) -> list[Lease]:
        return self.governor.lease(requests)

    async def states(self) -> list[BucketState]:
        return self.governor.states()

    # the whole actor

    async def health(self) -> dict[str, object]:
        """``running``: the provider health loop runs (the other parts have no loop of their own)."""
        return {
            **self.providers.health(),
            **self.governor.health(),
            "pid": os.getpid(),
            "table": self.tables.table.label,
        }

    async def stop(self) -> None:
        """Persist the last volumes and release connections (the stack calls it before killing the actor)."""
        await self.providers.aclose()
