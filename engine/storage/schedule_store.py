"""Cancel and reschedule: statements that race the relay and the senders' claim, and lose or win whole.

Cancel is one conditional UPDATE (``status`` still one a message has before any send began), so against
the claim (``UPDATE ... WHERE status IN (...)``) exactly one of them moves the row: a message is either
cancelled or claimed, never both. Its outbox rows go in the same statement.

Reschedule locks the message, then moves its outbox row: if the relay has already taken that row (the
message is due and on its way to a sender) there is nothing to move and the message is left as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from engine.states import EventType, Status

_CANCEL = """
WITH m AS (
    UPDATE messages
    SET status = 'cancelled', claimed_until = NULL, version = version + 1, updated_at = now()
    WHERE tenant_id = $1 AND id = $2 AND status = ANY($3::text[])
    RETURNING id, tenant_id
), ob AS (
    DELETE FROM outbox o USING m WHERE o.message_id = m.id AND o.tenant_id = m.tenant_id
), ev AS (
    INSERT INTO notification_events (id, tenant_id, message_id, type, meta)
    SELECT $4, tenant_id, id, $5, $6::jsonb FROM m
    RETURNING recorded_at
)
SELECT recorded_at FROM ev
"""

_STATE = """
SELECT m.status, m.schedule_at, m.expires_at,
       (SELECT e.recorded_at FROM notification_events e
        WHERE e.tenant_id = m.tenant_id AND e.message_id = m.id AND e.type = $3
        ORDER BY e.recorded_at LIMIT 1) AS cancelled_at
FROM messages m
WHERE m.tenant_id = $1 AND m.id = $2
"""

_LOCK = "SELECT status, schedule_at FROM messages WHERE tenant_id = $1 AND id = $2 FOR UPDATE"

_MOVE_OUTBOX = """
UPDATE outbox SET available_at = greatest($3, now())
WHERE tenant_id = $1 AND message_id = $2
RETURNING id
"""

# TTL counts from schedule_at, so expires_at moves with it; a time in the past means now.
_RESCHEDULE = """
WITH m AS (
    UPDATE messages
    SET schedule_at = greatest($3, now()),
        expires_at = CASE WHEN ttl_seconds IS NULL THEN NULL
                          ELSE greatest($3, now()) + make_interval(secs => ttl_seconds) END,
        version = version + 1, updated_at = now()
    WHERE tenant_id = $1 AND id = $2
    RETURNING id, tenant_id, schedule_at, expires_at
), ev AS (
    INSERT INTO notification_events (id, tenant_id, message_id, type, meta)
    SELECT $4, tenant_id, id, $5,
           $6::jsonb || jsonb_build_object('schedule_at', schedule_at, 'expires_at', expires_at) FROM m
)
SELECT schedule_at, expires_at FROM m
"""


@dataclass(frozen=True, slots=True)
class MessageState:
    status: Status
    schedule_at: datetime | None
    expires_at: datetime | None
    cancelled_at: datetime | None


class RescheduleRefusal(StrEnum):
    NOT_FOUND = "not_found"
    NOT_SCHEDULED = "not_scheduled"  #: the message is in another status
    DUE = "due"  #: the relay already took its outbox row: it is on its way to a sender


@dataclass(frozen=True, slots=True)
class Rescheduled:
    schedule_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class NotRescheduled:
    why: RescheduleRefusal
    status: Status | None = None


class ScheduleStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def cancel(
        self,
        tenant_id: uuid.UUID,
        message_id: uuid.UUID,
        *,
        cancellable: Collection[Status],
        event_id: uuid.UUID,
        meta: dict[str, Any],
    ) -> datetime | None:
        """When this call cancelled the message, or None when it was not in a ``cancellable`` status."""
        at: datetime | None = await self.pool.fetchval(
            _CANCEL,
            tenant_id,
            message_id,
            [s.value for s in cancellable],
            event_id,
            EventType.CANCELLED.value,
            meta,
        )
        return at

    async def state(self, tenant_id: uuid.UUID, message_id: uuid.UUID) -> MessageState | None:
        row = await self.pool.fetchrow(_STATE, tenant_id, message_id, EventType.CANCELLED.value)
        if row is None:
            return None
        return MessageState(Status(row["status"]), row["schedule_at"], row["expires_at"], row["cancelled_at"])

    async def reschedule(
        self,
        tenant_id: uuid.UUID,
        message_id: uuid.UUID,
        schedule_at: datetime,
        *,
        event_id: uuid.UUID,
        meta: dict[str, Any],
    ) -> Rescheduled | NotRescheduled:
        async with self.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchrow(_LOCK, tenant_id, message_id)
            if current is None:
                return NotRescheduled(RescheduleRefusal.NOT_FOUND)
            status = Status(current["status"])
            if status is not Status.SCHEDULED:
                return NotRescheduled(RescheduleRefusal.NOT_SCHEDULED, status)
            if not await conn.fetch(_MOVE_OUTBOX, tenant_id, message_id, schedule_at):
                return NotRescheduled(RescheduleRefusal.DUE, status)
            previous = current["schedule_at"]
            meta = {**meta, "previous_schedule_at": previous.isoformat() if previous else None}
            row = await conn.fetchrow(
                _RESCHEDULE, tenant_id, message_id, schedule_at, event_id, EventType.RESCHEDULED.value, meta
            )
        assert row is not None
        return Rescheduled(row["schedule_at"], row["expires_at"])
