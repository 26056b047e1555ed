"""The queues view (``GET /admin/queues``) and the ``queue_depth`` / ``queue_oldest_age_seconds`` gauges.

The platform's view is made where the relay runs (:class:`QueueMonitor`): the relay is the one publisher
of every queue, so its count of envelopes published per queue is each queue's inflow, and what left a
queue over a window is what came in minus how much the depth grew. Depth, consumers and the oldest
envelope's age come from the broker (:meth:`~engine.broker.Broker.stats`), on either adapter. Rates are
envelopes per second (an envelope holds up to ``HERALD_ENVELOPE_MAX_IDS`` message ids) over the last
minute, or over the time since the relay started when that is shorter.

A tenant admin gets its own messages instead (:class:`TenantQueues`): counts by status over a recent
window, and how many are waiting with the age of the oldest.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from engine.broker import Broker, QueueStats
from engine.channels import ALL_QUEUES
from engine.metrics import MetricsBuffer
from engine.models import FieldError, Tenant
from engine.problems import ApiProblem
from engine.storage.queue_store import QueueStore

#: The window the rates are measured over.
RATE_WINDOW_S = 60.0
#: The default window of a tenant's counts by status, and the longest one allowed.
TENANT_WINDOW_S = 24 * 3600
MAX_TENANT_WINDOW_S = 31 * 24 * 3600


class QueueView(BaseModel):
    queue: str
    depth: int = Field(description="envelopes ready (not those consumers hold unacked)")
    consumers: int
    oldest_age_s: float | None = Field(description="how long the oldest ready envelope has waited")
    rate_in_per_s: float | None = Field(description="envelopes published per second; null until two samples")
    rate_out_per_s: float | None = Field(description="envelopes that left per second (delivered or capped)")


class OutboxView(BaseModel):
    due: int = Field(description="rows due and not yet published")
    oldest_due_age_s: float | None
    next_due_at: datetime | None = Field(description="the earliest row scheduled for later")


class QueuesSnapshot(BaseModel):
    broker: str
    at: datetime
    window_s: float | None = Field(description="what the rates were measured over")
    queues: list[QueueView]
    outbox: OutboxView


class TenantQueuesView(BaseModel):
    tenant: str
    window_s: float = Field(description="by_status counts the messages accepted in this many seconds")
    by_status: dict[str, int]
    waiting: int = Field(description="accepted or retried, not yet being sent (and due scheduled ones)")
    oldest_waiting_age_s: float | None


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    depth: dict[str, int]
    published: dict[str, int]


class QueueMonitor:
    """Samples the broker and the relay's publish counts; keeps the latest snapshot for the view."""

    def __init__(
        self,
        broker: Broker,
        published: Callable[[], Mapping[str, int]],
        store: QueueStore,
        *,
        window_s: float = RATE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``published``: cumulative envelopes published per queue by this process's relay."""
        self.broker = broker
        self.published = published
        self.store = store
        self.window_s = window_s
        self.clock = clock
        self.latest: QueuesSnapshot | None = None
        self._samples: deque[_Sample] = deque()

    async def refresh(self) -> QueuesSnapshot:
        """Raises: BrokerUnavailable; asyncpg errors (the outbox could not be read)."""
        stats = await self.broker.stats()
        outbox = await self.store.outbox()
        now = self.clock()
        published = dict(self.published())
        sample = _Sample(now, {q: s.depth for q, s in stats.items()}, {q: published.get(q, 0) for q in ALL_QUEUES})
        base = self._remember(sample)
        window = now - base.at if base is not None else None
        self.latest = QueuesSnapshot(
            broker=self.broker.name,
            at=datetime.now(UTC),
            window_s=round(window, 3) if window else None,
            queues=[_view(stats[q], sample, base) for q in ALL_QUEUES if q in stats],
            outbox=OutboxView(due=outbox.due, oldest_due_age_s=outbox.oldest_due_age_s, next_due_at=outbox.next_due_at),
        )
        return self.latest

    def gauges(self, metrics: MetricsBuffer) -> None:
        """Set ``queue_depth{queue}`` and ``queue_oldest_age_seconds{queue}`` from the latest snapshot."""
        if self.latest is None:
            return
        for q in self.latest.queues:
            metrics.set("queue_depth", q.depth, queue=q.queue)
            metrics.set("queue_oldest_age_seconds", q.oldest_age_s or 0.0, queue=q.queue)

    def _remember(self, sample: _Sample) -> _Sample | None:
        """Keep the samples of the window and the newest one before it (the base the rates start from)."""
        self._samples.append(sample)
        while len(self._samples) > 2 and self._samples[1].at <= sample.at - self.window_s:
            self._samples.popleft()
        base = self._samples[0]
        return base if base is not sample else None


def _view(stats: QueueStats, now: _Sample, base: _Sample | None) -> QueueView:
    rate_in = rate_out = None
    if base is not None and now.at > base.at:
        elapsed = now.at - base.at
        came = now.published[stats.queue] - base.published.get(stats.queue, 0)
        grew = now.depth.get(stats.queue, 0) - base.depth.get(stats.queue, 0)
        rate_in = round(came / elapsed, 3)
        rate_out = round(max(came - grew, 0) / elapsed, 3)
    return QueueView(
        queue=stats.queue,
        depth=stats.depth,
        consumers=stats.consumers,
        oldest_age_s=round(stats.oldest_age_s, 3) if stats.oldest_age_s is not None else None,
        rate_in_per_s=rate_in,
        rate_out_per_s=rate_out,
    )


class TenantQueues:
    """A tenant admin's view: its own messages only, never platform-wide figures."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store

    async def view(self, tenant: Tenant, *, window_s: float = TENANT_WINDOW_S) -> TenantQueuesView:
        """Raises: ApiProblem 422 naming ``query.window_s`` out of 1 s .. 31 days."""
        if not 1 <= window_s <= MAX_TENANT_WINDOW_S:
            msg = f"1 to {MAX_TENANT_WINDOW_S} seconds"
            raise ApiProblem(422, "window_s out of range", errors=[FieldError(("query", "window_s"), msg)])
        counts = await self.store.by_status(tenant.id, window_s)
        waiting = await self.store.waiting(tenant.id)
        return TenantQueuesView(
            tenant=tenant.slug,
            window_s=window_s,
            by_status=counts,
            waiting=waiting.count,
            oldest_waiting_age_s=round(waiting.oldest_age_s, 3) if waiting.oldest_age_s is not None else None,
        )
