"""Recording provider events: what a verified webhook request's events do to messages, in two statements.

``ingest(provider, channel, events)`` finds each event's message (through the provider's message id on
``attempts``, or Herald's own id where the provider echoes it), then writes the whole batch in one
statement: status moves (forward only, optimistic on the row's version), event rows deduplicated by
the provider's event id, the raw payloads, orphans, suppressions, engagement counters and analytics
rollups. The event rows' trigger queues them for the tenant's endpoints and the message's callback URL.

A message whose version changed between the two statements (a concurrent writer) is read and planned
again, up to :data:`MAX_ROUNDS` times; after that its events are kept as early orphans and matched again
by :meth:`FeedbackIngest.adopt_orphans`, so nothing a provider reported is lost.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from engine.channels import Channel
from engine.feedback.events import DeliveryEvent
from engine.feedback.plan import (
    COUNTED_STATUSES,
    MessageRef,
    Plan,
    PlannedEvent,
    event_doc,
    event_from_doc,
    lookup_key,
    plan_batch,
    unique_events,
)
from engine.metrics import MetricsBuffer
from engine.states import EventType, Status
from engine.storage import feedback_sql as sql

log = logging.getLogger(__name__)

#: Rounds of read-plan-write for messages another writer changed in between.
MAX_ROUNDS = 3
#: How long orphans are matched again before they are left to the retention purge.
ADOPT_WITHIN_S = 3600.0
PURGE_CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one call recorded. ``duplicates`` were known already (the same provider event again);
    ``refused`` asked for a status move the state machine does not allow (recorded, status kept)."""

    received: int
    recorded: int = 0
    duplicates: int = 0
    orphans: int = 0
    moved: int = 0
    suppressed: int = 0
    refused: int = 0

    def plus(self, other: IngestReport) -> IngestReport:
        return IngestReport(
            received=self.received,
            recorded=self.recorded + other.recorded,
            duplicates=self.duplicates + other.duplicates,
            orphans=self.orphans + other.orphans,
            moved=self.moved + other.moved,
            suppressed=self.suppressed + other.suppressed,
            refused=self.refused + other.refused,
        )


@dataclass(frozen=True, slots=True)
class PurgeReport:
    payloads: int
    orphans: int


def _ref(row: asyncpg.Record) -> MessageRef:
    return MessageRef(
        id=row["id"],
        tenant_id=row["tenant_id"],
        tenant_slug=row["slug"],
        status=Status(row["status"]),
        version=row["version"],
        channel=Channel(row["channel"]),
        to=row["to"] or {},
        category=row["category"],
        template_id=row["template_id"],
        template_version=row["template_version"],
        provider=row["provider"] or "",
        created_at=row["created_at"],
    )


def _event_args(events: Sequence[PlannedEvent]) -> list[list[Any]]:
    def col(fn: Any) -> list[Any]:
        return [fn(p) for p in events]

    def msg(fn: Any) -> list[Any]:
        return [fn(p.message) if p.message is not None else None for p in events]

    return [
        col(lambda p: p.id),
        msg(lambda m: m.tenant_id),
        msg(lambda m: m.id),
        col(lambda p: p.name.value),
        col(lambda p: json.dumps(p.meta)),
        col(lambda p: p.event.dedupe_key),
        col(lambda p: p.event.occurred_at),
        col(lambda p: p.event.provider),
        col(lambda p: json.dumps(dict(p.event.raw), default=str)),
        col(lambda p: p.engagement),
        col(lambda p: p.human),
        col(lambda p: p.agent.agent.value if p.agent else None),
        col(lambda p: p.moves),
        col(lambda p: p.suppress[0] if p.suppress else None),
        col(lambda p: p.suppress[1] if p.suppress else None),
        col(lambda p: p.suppress[2] if p.suppress else None),
        col(lambda p: (p.event.reject_reason or p.event.type).value if p.suppress else None),
        col(lambda p: int(p.soft_bounce)),
        col(lambda p: int(p.name is EventType.COMPLAINED)),
        col(lambda p: int(p.name is EventType.UNSUBSCRIBED)),
        msg(lambda m: m.day),
        [p.message.channel.value if p.message else p.event.channel.value for p in events],
        msg(lambda m: m.template_id),
        msg(lambda m: m.template_version),
        msg(lambda m: m.provider),
        col(lambda p: p.orphan_reason),
        col(lambda p: event_doc(p.event) if p.message is None else None),
    ]


def _move_args(plan: Plan) -> list[list[Any]]:
    moves = plan.moves
    return [
        [m.message.id for m in moves],
        [m.message.version for m in moves],
        [m.status.value for m in moves],
        *([int(s in m.reached) for m in moves] for s in COUNTED_STATUSES),
        [m.message.tenant_id for m in moves],
        [m.message.day for m in moves],
        [m.message.channel.value for m in moves],
        [m.message.template_id for m in moves],
        [m.message.template_version for m in moves],
        [m.message.provider for m in moves],
    ]


class FeedbackIngest:
    """Records verified provider events. ``metrics`` gets delivered/bounced counters per message moved."""

    def __init__(self, pool: asyncpg.Pool, *, metrics: MetricsBuffer | None = None) -> None:
        self.pool = pool
        self.metrics = metrics

    async def ingest(
        self,
        provider: str,
        channel: Channel,
        events: Sequence[DeliveryEvent],
        *,
        tenant_id: uuid.UUID | None = None,
    ) -> IngestReport:
        """Record one request's events (two statements for a batch of any size when nothing races).

        ``tenant_id`` is the tenant whose own provider credentials verified the request: its events
        then only ever match that tenant's messages. ``channel`` is the channel of the route; it is
        what orphans are filed under.
        """
        report, _ = await self._record(provider, channel, events, tenant_id)
        return report

    async def _record(
        self, provider: str, channel: Channel, events: Sequence[DeliveryEvent], tenant_id: uuid.UUID | None
    ) -> tuple[IngestReport, set[str]]:
        """Record ``events``; also returns the dedupe keys of those left as orphans."""
        pending = [e if e.channel is channel else replace(e, channel=channel) for e in unique_events(events)]
        report = IngestReport(received=len(events))
        orphaned: set[str] = set()
        for _ in range(MAX_ROUNDS):
            plan = plan_batch(pending, await self._resolve(provider, pending, tenant_id))
            done, retry = await self._write(plan)
            report = report.plus(done)
            orphaned |= {p.event.dedupe_key for p in plan.orphans}
            if not retry:
                return report, orphaned
            pending = [p.event for p in plan.events if p.message is not None and p.message.id in retry]
            log.info("%d messages changed while recording %s events; reading them again", len(retry), provider)
        # Messages that kept changing under us: their events wait as early orphans for the next adoption.
        late = Plan(events=[_as_orphan(p) for p in plan.events if p.message is not None and p.message.id in retry])
        done, _ = await self._write(late)
        orphaned |= {p.event.dedupe_key for p in late.events}
        return report.plus(done), orphaned

    async def _resolve(
        self, provider: str, events: Sequence[DeliveryEvent], tenant_id: uuid.UUID | None
    ) -> dict[tuple[str | None, uuid.UUID | None], MessageRef]:
        keys: dict[tuple[str | None, uuid.UUID | None], None] = {}
        for event in events:
            keys[lookup_key(event)] = None
            if event.message_id and event.provider_message_id:
                keys[(event.provider_message_id, None)] = None  # when the echoed id is not ours
        keys.pop((None, None), None)
        if not keys:
            return {}
        rows = await self.pool.fetch(sql.RESOLVE, provider, [k[0] for k in keys], [k[1] for k in keys], tenant_id)
        return {(r["pmid"], r["mid"]): _ref(r) for r in rows}

    async def _write(self, plan: Plan) -> tuple[IngestReport, set[uuid.UUID]]:
        if not plan.events:
            return IngestReport(received=0, refused=plan.refused), set()
        row = await self.pool.fetchrow(sql.INGEST, *_event_args(plan.events), *_move_args(plan))
        assert row is not None
        moved = set(row["moved"])
        retry = {m.message.id for m in plan.moves if m.message.id not in moved}
        matched = sum(1 for p in plan.events if p.message is not None and p.message.id not in retry)
        self._count(plan, moved)
        return (
            IngestReport(
                received=0,
                recorded=row["recorded"],
                duplicates=matched - row["recorded"],
                orphans=len(plan.orphans),
                moved=len(moved),
                suppressed=row["suppressed"],
                refused=plan.refused,
            ),
            retry,
        )

    def _count(self, plan: Plan, moved: set[uuid.UUID]) -> None:
        if self.metrics is None:
            return
        counts: Counter[tuple[str, str, str, str]] = Counter()
        for move in plan.moves:
            if move.message.id not in moved:
                continue
            m = move.message
            for status, name in ((Status.DELIVERED, "delivered"), (Status.BOUNCED, "bounced")):
                if status in move.reached:
                    counts[(f"notifications_{name}_total", m.channel.value, m.provider or "none", m.tenant_slug)] += 1
        for (name, channel, provider, tenant), n in counts.items():
            self.metrics.inc(name, n, channel=channel, provider=provider, tenant=tenant)

    # -- orphans and retention ------------------------------------------------------------------------

    async def adopt_orphans(self, *, within_s: float = ADOPT_WITHIN_S, limit: int = 500) -> int:
        """Match recent orphans again (events that arrived before their send was recorded, or while it was
        still being sent); returns how many found their message."""
        rows = await self.pool.fetch(sql.RECENT_ORPHANS, within_s, limit)
        grouped: dict[tuple[str, Channel], list[DeliveryEvent]] = defaultdict(list)
        for r in rows:
            try:
                grouped[(r["provider"], Channel(r["channel"]))].append(event_from_doc(r["event"], r["payload"]))
            except ValueError as err:
                log.warning("orphan event %s cannot be read back: %s", r["id"], err)
        adopted = 0
        for (provider, channel), events in grouped.items():
            _, orphaned = await self._record(provider, channel, events, None)
            keys = [e.dedupe_key for e in events if e.dedupe_key not in orphaned]
            if keys:
                await self.pool.execute(sql.DELETE_ORPHANS, provider, keys)
                adopted += len(keys)
        return adopted

    async def purge(self, retention_days: int) -> PurgeReport:
        """Drop raw payloads and orphans older than ``retention_days`` (in chunks, so a long backlog never
        holds one huge delete)."""
        totals = []
        for statement in (sql.PURGE_PAYLOADS, sql.PURGE_ORPHANS):
            total = 0
            while True:
                result = await self.pool.execute(statement, retention_days, PURGE_CHUNK)
                n = int(result.rsplit(" ", 1)[-1])
                total += n
                if n < PURGE_CHUNK:
                    break
            totals.append(total)
        return PurgeReport(payloads=totals[0], orphans=totals[1])


def _as_orphan(p: PlannedEvent) -> PlannedEvent:
    return replace(p, message=None, orphan_reason="early", moves=False, suppress=None, engagement=None, agent=None)
