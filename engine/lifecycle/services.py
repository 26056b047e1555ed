"""The lifecycle services built together on one pool, as the API holds them (``ApiState.lifecycle``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import asyncpg

from engine.channels import Channel
from engine.storage.dlq_store import DeadLetterStore
from engine.storage.queue_store import QueueStore
from engine.storage.schedule_store import ScheduleStore
from engine.storage.search_store import SearchStore

from .dlq import DeadLetterService
from .queues import TenantQueues
from .scheduling import SchedulingService
from .search import MessageSearch


@dataclass(frozen=True, slots=True)
class Lifecycle:
    scheduling: SchedulingService
    dead_letters: DeadLetterService
    search: MessageSearch
    tenant_queues: TenantQueues

    @classmethod
    def on(cls, pool: asyncpg.Pool, *, providers: Mapping[Channel, Collection[str]]) -> Lifecycle:
        """``providers``: what each channel may send through (a DLQ replay's ``to_provider`` is one)."""
        return cls(
            scheduling=SchedulingService(ScheduleStore(pool)),
            dead_letters=DeadLetterService(DeadLetterStore(pool), providers=providers),
            search=MessageSearch(SearchStore(pool)),
            tenant_queues=TenantQueues(QueueStore(pool)),
        )
