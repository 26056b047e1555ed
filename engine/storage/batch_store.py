"""Storage of batches: a whole batch of new messages in a handful of statements, and its progress.

Accepting a batch is one transaction of four statements whatever its size: the batch's rows are
``COPY``-ed (binary) into a session-local staging table, then one ``INSERT ... SELECT`` with
data-modifying CTEs claims each idempotency key (``ON CONFLICT``: a live key makes its item a replay)
and writes the message, its outbox row, its first event (and tags and attachments) only for the keys it
claimed; a last read fetches the earlier answers of the keys it did not claim. The JSON columns travel
as text and are cast by the server, so the pool's json/jsonb codecs (text, shared by every statement)
are left as they are.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.idempotency import StoredResponse
from engine.ids import new_id
from engine.models import NewMessage
from engine.states import PENDING, EventType, Status
from engine.storage.sql import KEY_CLAIMED_UNLESS_LIVE

STAGE = "herald_batch_stage"
_dumps = json.JSONEncoder(separators=(",", ":")).encode

_STAGE_COLUMNS = (
    "key",
    "request_hash",
    "message_id",
    "channel",
    "template_id",
    "template_version",
    "locale",
    "requested_locale",
    "doc",
    "priority",
    "schedule_at",
    "ttl_seconds",
    "expires_at",
    "callback_url",
    "trace_id",
    "status",
    "category",
    "rank",
    "event_id",
    "event_type",
    "estimated_cost",
)

# Session-local (the pool keeps sessions: see repository._keep_session) and emptied at each commit.
_CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS {STAGE} (
    key text, request_hash text, message_id uuid, channel text, template_id text, template_version integer,
    locale text, requested_locale text, doc text, priority text, schedule_at timestamptz, ttl_seconds integer,
    expires_at timestamptz, callback_url text, trace_id text, status text, category text, rank smallint,
    event_id uuid, event_type text, estimated_cost numeric
) ON COMMIT DELETE ROWS
"""

_INSERT_BATCH = """
INSERT INTO batches (id, tenant_id, items, accepted, replayed, rejected) VALUES ($1, $2, $3, 0, 0, $4)
"""

_ACCEPT = f"""
WITH idem AS (
    INSERT INTO idempotency_keys AS k
        (tenant_id, key, request_hash, message_id, status_code, response, expires_at)
    SELECT $1, s.key, s.request_hash, s.message_id, 202,
           -- what Intake.new_message answers
           jsonb_build_object('message_id', 'msg_' || replace(s.message_id::text, '-', ''), 'status', s.status,
                              'locale', s.locale, 'template', s.template_id || ':v' || s.template_version),
           now() + make_interval(secs => $3)
    FROM {STAGE} s
    {KEY_CLAIMED_UNLESS_LIVE}
    RETURNING k.message_id
), new AS (
    SELECT s.*, s.doc::jsonb AS j FROM {STAGE} s JOIN idem ON idem.message_id = s.message_id
), msg AS (
    INSERT INTO messages (id, tenant_id, channel, template_id, template_version, locale, requested_locale,
                          "to", variables, metadata, priority, schedule_at, ttl_seconds, expires_at,
                          idempotency_key, callback_url, trace_id, status, category, batch_id, estimated_cost)
    SELECT message_id, $1, channel, template_id, template_version, locale, requested_locale, j -> 0, j -> 1,
           j -> 2, priority, schedule_at, ttl_seconds, expires_at, key, callback_url,
           trace_id, status, category, $2, estimated_cost
    FROM new
    RETURNING id, created_at
), ob AS (
    INSERT INTO outbox (tenant_id, message_id, queue, priority, available_at)
    SELECT $1, message_id, 'notifications.' || priority, rank, greatest(coalesce(schedule_at, now()), now())
    FROM new
), ev AS (
    INSERT INTO notification_events (id, tenant_id, message_id, type, meta)
    SELECT event_id, $1, message_id, event_type,
           jsonb_build_object('locale', locale, 'template', template_id || ':v' || template_version)
    FROM new
), tags AS (
    INSERT INTO message_tags (tenant_id, tag, created_at, message_id)
    SELECT $1, t.tag, msg.created_at, msg.id
    FROM unnest($4::uuid[], $5::text[]) AS t(message_id, tag) JOIN msg ON msg.id = t.message_id
), att AS (
    INSERT INTO attachments (id, tenant_id, message_id, storage, filename, content_type)
    SELECT a.id, $1, a.message_id, a.storage, a.filename, a.content_type
    FROM unnest($6::uuid[], $7::uuid[], $8::text[], $9::text[], $10::text[])
         AS a(id, message_id, storage, filename, content_type)
    JOIN msg ON msg.id = a.message_id
), counted AS (
    UPDATE batches SET accepted = (SELECT count(*) FROM idem) WHERE id = $2
)
SELECT message_id FROM idem
"""

_EARLIER = """
SELECT key, request_hash, status_code, response FROM idempotency_keys
WHERE tenant_id = $1 AND key = ANY($2::text[]) AND expires_at >= now()
"""

_SET_REPLAYED = "UPDATE batches SET replayed = $2, rejected = rejected + $3 WHERE id = $1"

_PROGRESS = """
SELECT b.id, b.items, b.accepted, b.replayed, b.rejected, b.created_at, b.cancelled_at, now() AS now,
       (SELECT max(m.updated_at) FROM messages m
        WHERE m.batch_id = b.id AND m.status <> ALL($3::text[])) AS last_done_at,
       (SELECT max(m.schedule_at) FROM messages m
        WHERE m.batch_id = b.id AND m.status = 'scheduled') AS last_scheduled_at,
       (SELECT coalesce(json_object_agg(c.status, c.n), '{}'::json) FROM (
            SELECT m.status, count(*) AS n FROM messages m WHERE m.batch_id = b.id GROUP BY m.status) c)
        AS counts
FROM batches b
WHERE b.tenant_id = $1 AND b.id = $2
"""

_CANCEL = """
WITH b AS (
    UPDATE batches SET cancelled_at = coalesce(cancelled_at, now())
    WHERE tenant_id = $1 AND id = $2
    RETURNING id, tenant_id
), m AS (
    UPDATE messages m
    SET status = 'cancelled', claimed_until = NULL, version = m.version + 1, updated_at = now()
    FROM b
    WHERE m.batch_id = b.id AND m.tenant_id = b.tenant_id AND m.status = ANY($3::text[])
    RETURNING m.id, m.tenant_id
), ob AS (
    DELETE FROM outbox o USING m WHERE o.message_id = m.id AND o.tenant_id = m.tenant_id
), ev AS (
    INSERT INTO notification_events (id, tenant_id, message_id, type, meta)
    SELECT gen_random_uuid(), tenant_id, id, $4, $5::jsonb FROM m
)
SELECT (SELECT count(*) FROM b) AS found, (SELECT count(*) FROM m) AS cancelled
"""


@dataclass(frozen=True, slots=True)
class StagedMessage:
    """One item of a batch, checked and ready to store."""

    message: NewMessage
    status: Status
    response: dict[str, Any]
    checked: Any = None  #: the intake's checked request, for admission (not stored)


@dataclass(frozen=True, slots=True)
class StoredBatch:
    created: frozenset[uuid.UUID]  #: message ids this batch created
    earlier: dict[str, StoredResponse]  #: for the keys it did not claim: their live stored answer


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: uuid.UUID
    items: int
    accepted: int
    replayed: int
    rejected: int
    created_at: datetime
    cancelled_at: datetime | None
    now: datetime
    last_done_at: datetime | None
    counts: dict[str, int]
    last_scheduled_at: datetime | None = None  #: the latest schedule_at of its messages still scheduled


def _stage_record(item: StagedMessage) -> tuple[Any, ...]:
    msg = item.message
    event = EventType.SCHEDULED if item.status is Status.SCHEDULED else EventType.ACCEPTED
    return (
        msg.idempotency_key,
        msg.request_hash,
        msg.id,
        msg.channel.value,
        msg.template_id,
        msg.template_version,
        msg.locale,
        msg.requested_locale,
        _dumps([msg.to, msg.variables, msg.metadata]),  # one encode per item: "to", variables, metadata
        msg.priority.value,
        msg.schedule_at,
        msg.ttl_seconds,
        msg.expires_at,
        msg.callback_url,
        msg.trace_id,
        item.status.value,
        msg.category,
        msg.priority.rank,
        new_id(),
        event.value,
        msg.estimated_cost,
    )


class BatchStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def accept(
        self,
        tenant_id: uuid.UUID,
        batch_id: uuid.UUID,
        items: Sequence[StagedMessage],
        *,
        total: int,
        rejected: int,
        idempotency_ttl_s: int,
    ) -> StoredBatch:
        """Store the batch row and every item whose key is free (or expired), in one transaction.

        ``items`` carry distinct idempotency keys (the caller settles repeats within a batch).
        """
        tags = [(item.message.id, tag) for item in items for tag in dict.fromkeys(item.message.tags)]
        atts = [(new_id(), item.message.id, a) for item in items for a in item.message.attachments]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_CREATE_STAGE)
            await conn.execute(_INSERT_BATCH, batch_id, tenant_id, total, rejected)
            if not items:
                return StoredBatch(frozenset(), {})
            await conn.copy_records_to_table(STAGE, records=map(_stage_record, items), columns=_STAGE_COLUMNS)
            rows = await conn.fetch(
                _ACCEPT,
                tenant_id,
                batch_id,
                float(idempotency_ttl_s),
                [m for m, _ in tags],
                [t for _, t in tags],
                [i for i, _, _ in atts],
                [m for _, m, _ in atts],
                [a.s3 for _, _, a in atts],
                [a.filename for _, _, a in atts],
                [a.content_type for _, _, a in atts],
            )
            created = frozenset(r["message_id"] for r in rows)
            earlier: dict[str, StoredResponse] = {}
            if len(created) < len(items):
                keys = [i.message.idempotency_key for i in items if i.message.id not in created]
                for r in await conn.fetch(_EARLIER, tenant_id, keys):
                    earlier[r["key"]] = StoredResponse(r["request_hash"], r["status_code"], r["response"])
        return StoredBatch(created, earlier)

    async def live_keys(self, tenant_id: uuid.UUID, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` the tenant has already used (and not expired): their items can only replay."""
        rows = await self.pool.fetch(_EARLIER, tenant_id, list(keys))
        return {r["key"] for r in rows}

    async def settle_counts(self, batch_id: uuid.UUID, *, replayed: int, conflicts: int) -> None:
        """Record how many items replayed an earlier answer and how many more were refused at storage."""
        if replayed or conflicts:
            await self.pool.execute(_SET_REPLAYED, batch_id, replayed, conflicts)

    async def progress(self, tenant_id: uuid.UUID, batch_id: uuid.UUID) -> BatchRow | None:
        """The batch of this tenant (None for another tenant's) with its messages counted by status."""
        unfinished = [s.value for s in (*PENDING, Status.SENDING)]
        row = await self.pool.fetchrow(_PROGRESS, tenant_id, batch_id, unfinished)
        if row is None:
            return None
        return BatchRow(
            id=row["id"],
            items=row["items"],
            accepted=row["accepted"],
            replayed=row["replayed"],
            rejected=row["rejected"],
            created_at=row["created_at"],
            cancelled_at=row["cancelled_at"],
            now=row["now"],
            last_done_at=row["last_done_at"],
            counts={k: int(v) for k, v in row["counts"].items()},
            last_scheduled_at=row["last_scheduled_at"],
        )

    async def cancel(self, tenant_id: uuid.UUID, batch_id: uuid.UUID, *, actor: str) -> int | None:
        """Cancel the batch's messages that have not started sending; None when it is not this tenant's."""
        row = await self.pool.fetchrow(
            _CANCEL,
            tenant_id,
            batch_id,
            [s.value for s in PENDING],
            EventType.CANCELLED.value,
            {"actor": actor, "batch": True},
        )
        assert row is not None
        return int(row["cancelled"]) if row["found"] else None
