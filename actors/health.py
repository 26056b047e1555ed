"""The provider health actor: the cluster's one health board (every circuit breaker).

Senders call :meth:`HealthActor.sync` about once a second with the tallies they counted and get the
board's snapshot back; a half-open breaker's probe permits are leased with :meth:`lease_probes`. The
``provider_circuit_open`` gauges go to the metrics aggregator whenever they change.
"""

from __future__ import annotations

import logging

import ray

from actors import METRICS_ACTOR, NAMESPACE, ROUTING_ACTOR
from engine import redaction
from engine.metrics import MetricsBuffer
from engine.routing import BreakerKey, HealthBoard, HealthSnapshot, RoutingTable, Tally

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0.05, max_restarts=-1)
class HealthActor:
    def __init__(self, table: RoutingTable, log_level: str = "INFO") -> None:
        redaction.install()
        logging.basicConfig(level=log_level.upper())  # breaker state changes are logged here, once
        self.board = HealthBoard(_current_table(table).breaker_policy)
        self.metrics = MetricsBuffer()
        self.metrics_actor = ray.get_actor(METRICS_ACTOR, namespace=NAMESPACE)
        self._gauges: dict[tuple[str, str], float] = {}

    def sync(self, tallies: list[Tally]) -> HealthSnapshot:
        """Count a sender's tallies; the snapshot it routes from until its next sync."""
        self.board.apply(tallies)
        return self._snapshot()

    def lease_probes(self, key: BreakerKey, wanted: int) -> int:
        granted = self.board.lease_probes(key, wanted)
        self._snapshot()
        return granted

    def snapshot(self) -> HealthSnapshot:
        return self._snapshot()

    def configure(self, table: RoutingTable) -> None:
        """The routing table was reloaded: its breaker thresholds apply from now on."""
        self.board.configure(table.breaker_policy)

    def health(self) -> dict[str, object]:
        return {"running": True, "version": self.board.version}

    def _snapshot(self) -> HealthSnapshot:
        snap = self.board.snapshot()
        gauges = snap.circuit_gauges()
        if gauges != self._gauges:
            for (provider, channel), value in gauges.items():
                self.metrics.set("provider_circuit_open", value, provider=provider, channel=channel)
            self._gauges = gauges
            self.metrics_actor.apply.remote(self.metrics.drain())
        return snap


def _current_table(start_up: RoutingTable) -> RoutingTable:
    """The table the routing table actor holds now (this actor was restarted after a reload), else the
    one it was started with."""
    try:
        tables = ray.get_actor(ROUTING_ACTOR, namespace=NAMESPACE)
        current: RoutingTable | None = ray.get(tables.current.remote(None), timeout=5)
    except (ValueError, ray.exceptions.RayError):
        return start_up
    return current or start_up
