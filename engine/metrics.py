"""Metrics with the spec's names, counted wherever the work happens and aggregated in one place.

Each process keeps a :class:`MetricsBuffer` (plain counters, no locks on the hot path) and ships its
:class:`MetricsDelta` to the aggregator, which owns the Prometheus registry that ``/metrics`` renders.
A counter counted in one process is therefore never a 0 read in another.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: name -> label names, for every counter.
COUNTERS: dict[str, tuple[str, ...]] = {
    "notifications_enqueued_total": ("channel", "tenant"),
    "notifications_sent_total": ("channel", "provider", "tenant"),
    "notifications_failed_total": ("reason", "provider"),
    "notifications_retried_total": ("reason", "provider"),
    "notifications_dead_lettered_total": ("channel",),
    "notifications_expired_total": ("channel",),
    "notifications_deduplicated_total": ("channel",),
    "notifications_delivered_total": ("channel", "provider", "tenant"),
    "notifications_bounced_total": ("channel", "provider", "tenant"),
    "webhook_deliveries_total": ("outcome",),
    "ingress_messages_total": ("outcome",),
    "ingress_dead_lettered_total": ("reason",),
    #: Every provider call's outcome per message, failovers included (a message may touch several).
    "provider_sent_total": ("channel", "provider"),
    "provider_failed_total": ("channel", "provider", "reason"),
    #: Messages a sender put back for later: over the tenant's limits.<channel>.rate_per_second.
    "notifications_throttled_total": ("channel", "tenant"),
    #: Refused at admission with 429 (``kind``: quota or budget).
    "notifications_refused_total": ("channel", "tenant", "kind"),
    #: A quota window or a budget month that reached its soft cap (one across replicas).
    "quota_warnings_total": ("channel", "tenant", "period"),
    "budget_warnings_total": ("channel", "tenant"),
}

HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "delivery_latency_ms": ("channel", "priority"),
}

GAUGES: dict[str, tuple[str, ...]] = {
    #: 1 while the platform's breaker for the provider on the channel is open or probing (the control actor).
    "provider_circuit_open": ("provider", "channel"),
    "queue_depth": ("queue",),
    # Human opens and clicks per delivered message over the analytics window (from the rollups).
    "open_rate": ("tenant", "template_id"),
    "click_rate": ("tenant", "template_id"),
    "queue_oldest_age_seconds": ("queue",),
}

LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class MetricsDelta:
    counters: dict[tuple[str, Labels], float] = field(default_factory=dict)
    observations: dict[tuple[str, Labels], list[float]] = field(default_factory=dict)
    gauges: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.counters or self.observations or self.gauges)


class MetricsBuffer:
    """Per-process accumulation between flushes."""

    def __init__(self) -> None:
        self._counters: defaultdict[tuple[str, Labels], float] = defaultdict(float)
        self._observations: defaultdict[tuple[str, Labels], list[float]] = defaultdict(list)
        self._gauges: dict[tuple[str, Labels], float] = {}

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self._counters[(name, _labels(name, COUNTERS, labels))] += value

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._observations[(name, _labels(name, HISTOGRAMS, labels))].append(value)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._gauges[(name, _labels(name, GAUGES, labels))] = value

    def drain(self) -> MetricsDelta:
        delta = MetricsDelta(dict(self._counters), dict(self._observations), dict(self._gauges))
        self._counters.clear()
        self._observations.clear()
        self._gauges.clear()
        return delta


def _labels(name: str, table: dict[str, tuple[str, ...]], labels: dict[str, str]) -> Labels:
    expected = table[name]
    if set(labels) != set(expected):
        raise ValueError(f"{name} takes labels {expected}, got {tuple(labels)}")
    return tuple((k, str(labels[k])) for k in expected)


class MetricsAggregator:
    """Owns the registry; applies deltas from every process; renders the exposition text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._counters = {
            n: Counter(n, n.replace("_", " "), lbl, registry=self.registry) for n, lbl in COUNTERS.items()
        }
        self._histograms = {
            n: Histogram(n, n.replace("_", " "), lbl, buckets=LATENCY_BUCKETS_MS, registry=self.registry)
            for n, lbl in HISTOGRAMS.items()
        }
        self._gauges = {n: Gauge(n, n.replace("_", " "), lbl, registry=self.registry) for n, lbl in GAUGES.items()}

    def apply(self, delta: MetricsDelta) -> None:
        for (name, labels), value in delta.counters.items():
            self._counters[name].labels(**dict(labels)).inc(value)
        for (name, labels), values in delta.observations.items():
            histogram = self._histograms[name].labels(**dict(labels))
            for value in values:
                histogram.observe(value)
        for (name, labels), value in delta.gauges.items():
            self._gauges[name].labels(**dict(labels)).set(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
