"""Cancel and reschedule one of a tenant's messages (``DELETE`` / ``PATCH /api/notifications/{id}``).

Both are events on the message (``NotificationCancelled``, ``NotificationRescheduled``, with the actor).
A message that has not started sending (scheduled, queued, throttled) can be cancelled; a second cancel
answers what the first did. Only a scheduled message whose time has not come can be rescheduled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.ids import format_message_id, new_id, parse_message_id
from engine.models import FieldError, Tenant
from engine.problems import ApiProblem
from engine.states import PENDING, Status
from engine.storage.schedule_store import NotRescheduled, RescheduleRefusal, ScheduleStore
from engine.timestamps import Instant


class RescheduleRequest(BaseModel):
    """``PATCH /api/notifications/{id}``: when to send instead (a time in the past means now)."""

    model_config = ConfigDict(extra="forbid")

    schedule_at: Instant = Field(description="with a timezone, e.g. 2025-10-29T20:45:00Z")


class Cancelled(BaseModel):
    model_config = ConfigDict(frozen=True)

    message_id: str
    status: Literal[Status.CANCELLED] = Status.CANCELLED
    cancelled_at: datetime


class Rescheduled(BaseModel):
    model_config = ConfigDict(frozen=True)

    message_id: str
    status: Literal[Status.SCHEDULED] = Status.SCHEDULED
    schedule_at: datetime
    expires_at: datetime | None = Field(description="schedule_at + ttl_seconds, when the message has a TTL")


class SchedulingService:
    def __init__(self, store: ScheduleStore) -> None:
        self.store = store

    async def cancel(self, tenant: Tenant, message_id: str, *, actor: str) -> Cancelled:
        """Raises: ApiProblem 404 (no such message of this tenant), 409 with ``current_status`` (sending began)."""
        mid = parse_message_id(message_id)
        if mid is None:
            raise ApiProblem(404, f"no notification {message_id!r}")
        at = await self.store.cancel(tenant.id, mid, cancellable=PENDING, event_id=new_id(), meta={"actor": actor})
        if at is not None:
            return Cancelled(message_id=format_message_id(mid), cancelled_at=at)
        state = await self.store.state(tenant.id, mid)
        if state is None:
            raise ApiProblem(404, f"no notification {message_id!r}")
        if state.status is Status.CANCELLED and state.cancelled_at is not None:
            return Cancelled(message_id=format_message_id(mid), cancelled_at=state.cancelled_at)
        raise ApiProblem(
            409,
            f"the notification is {state.status.value}: only one that has not started sending can be cancelled",
            extensions={"current_status": state.status.value},
        )

    async def reschedule(self, tenant: Tenant, message_id: str, schedule_at: datetime, *, actor: str) -> Rescheduled:
        """Raises: ApiProblem 404, 409 with ``current_status`` (not scheduled, or already due and on its way),
        422 naming ``body.schedule_at`` (no timezone)."""
        if schedule_at.tzinfo is None or schedule_at.utcoffset() is None:
            raise ApiProblem(
                422,
                "schedule_at needs a timezone",
                errors=[FieldError(("body", "schedule_at"), "needs a timezone, e.g. 2025-10-29T20:45:00Z")],
            )
        mid = parse_message_id(message_id)
        if mid is None:
            raise ApiProblem(404, f"no notification {message_id!r}")
        moved = await self.store.reschedule(tenant.id, mid, schedule_at, event_id=new_id(), meta={"actor": actor})
        if isinstance(moved, NotRescheduled):
            raise _refused(message_id, moved)
        public_id = format_message_id(mid)
        return Rescheduled(message_id=public_id, schedule_at=moved.schedule_at, expires_at=moved.expires_at)


def _refused(message_id: str, refusal: NotRescheduled) -> ApiProblem:
    if refusal.why is RescheduleRefusal.NOT_FOUND:
        return ApiProblem(404, f"no notification {message_id!r}")
    status = refusal.status.value if refusal.status else "unknown"
    if refusal.why is RescheduleRefusal.DUE:
        detail = "the notification is due and on its way to a sender: it can no longer be rescheduled"
    else:
        detail = f"the notification is {status}: only a scheduled one can be rescheduled"
    return ApiProblem(409, detail, extensions={"current_status": status})
