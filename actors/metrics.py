"""The metrics aggregator: every process ships its counter deltas here; ``/metrics`` renders it."""

from __future__ import annotations

import ray

from engine.metrics import MetricsAggregator, MetricsDelta


@ray.remote(num_cpus=0.05, max_restarts=-1)
class MetricsActor:
    def __init__(self) -> None:
        self.aggregator = MetricsAggregator()

    def apply(self, delta: MetricsDelta) -> None:
        self.aggregator.apply(delta)

    def render(self, delta: MetricsDelta | None = None) -> bytes:
        if delta:
            self.aggregator.apply(delta)
        return self.aggregator.render()
