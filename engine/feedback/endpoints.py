"""A tenant's webhook endpoints: create, list, delete, re-enable, a test event, the delivery log, replay.

Every method takes the authenticated tenant and raises :class:`~engine.problems.ApiProblem` for what the
route answers (404 for a malformed or foreign endpoint id, 422 naming the field), so each route is one
call. Endpoints are shown as ``ep_<hex>``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.feedback.callback_urls import UnsafeCallbackUrl, check_callback_url
from engine.ids import new_id
from engine.models import FieldError, Tenant
from engine.problems import ApiProblem, from_pydantic
from engine.states import EventType
from engine.storage import webhook_sql as sql
from engine.timestamps import Instant

ENDPOINT_PREFIX = "ep_"
#: Sent to the tenant's other endpoints when one is disabled for failing too long.
ENDPOINT_DISABLED = "WebhookEndpointDisabled"
#: What "send a test event" sends.
ENDPOINT_TEST = "WebhookEndpointTest"
#: Types an endpoint's filter may name.
#: A quota window or budget month at its soft cap (engine.governance.warnings).
GOVERNANCE_WARNINGS = frozenset({"QuotaWarning", "BudgetWarning"})
EVENT_TYPES: frozenset[str] = frozenset(
    {e.value for e in EventType} | {ENDPOINT_DISABLED, ENDPOINT_TEST} | GOVERNANCE_WARNINGS
)
#: Most events one replay call queues (ask again from the last one's time for more).
REPLAY_LIMIT = 10_000
DELIVERY_LOG_LIMIT = 200


def _utcnow() -> datetime:
    return datetime.now(UTC)


def format_endpoint_id(endpoint_id: uuid.UUID) -> str:
    return ENDPOINT_PREFIX + endpoint_id.hex


def parse_endpoint_id(public_id: str) -> uuid.UUID | None:
    raw = public_id.removeprefix(ENDPOINT_PREFIX)
    if not public_id.startswith(ENDPOINT_PREFIX) or len(raw) != 32:
        return None
    try:
        return uuid.UUID(hex=raw)
    except ValueError:
        return None


class EndpointCreate(BaseModel):
    """``POST /api/webhooks/endpoints``: where to deliver, and which event types (all when omitted)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048)
    event_types: list[str] | None = Field(None, max_length=64)
    description: str | None = Field(None, max_length=200)


class DeliveryReplayRequest(BaseModel):
    """``POST /api/webhooks/endpoints/{id}/replay``: the tenant's events recorded in ``[since, until)``."""

    model_config = ConfigDict(extra="forbid")

    since: Instant
    until: Instant | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: uuid.UUID
    url: str
    description: str | None
    event_types: tuple[str, ...] | None
    enabled: bool
    failing_since: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": format_endpoint_id(self.id),
            "url": self.url,
            "description": self.description,
            "event_types": list(self.event_types) if self.event_types is not None else None,
            "enabled": self.enabled,
            "failing_since": _iso(self.failing_since),
            "disabled_at": _iso(self.disabled_at),
            "disabled_reason": self.disabled_reason,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    at: str


@dataclass(frozen=True, slots=True)
class DeliveryLogEntry:
    id: int
    webhook_id: str
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    attempt_log: tuple[DeliveryAttempt, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "webhook_id": self.webhook_id,
            "event_type": self.event_type,
            "status": self.status,
            "attempts": self.attempts,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "created_at": _iso(self.created_at),
            "next_attempt_at": _iso(self.next_attempt_at) if self.status == "pending" else None,
            "finished_at": _iso(self.finished_at),
            "attempt_log": [
                {
                    "attempt": a.attempt,
                    "status_code": a.status_code,
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                    "at": a.at,
                }
                for a in self.attempt_log
            ],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _endpoint(row: asyncpg.Record) -> Endpoint:
    types = row["event_types"]
    return Endpoint(
        id=row["id"],
        url=row["url"],
        description=row["description"],
        event_types=tuple(types) if types is not None else None,
        enabled=row["enabled"],
        failing_since=row["failing_since"],
        disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _entry(row: asyncpg.Record) -> DeliveryLogEntry:
    return DeliveryLogEntry(
        id=row["id"],
        webhook_id=row["webhook_id"],
        event_type=row["event_type"],
        status=row["status"],
        attempts=row["attempts"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        finished_at=row["finished_at"],
        attempt_log=tuple(
            DeliveryAttempt(a["attempt"], a["status_code"], a["error"], a["duration_ms"], str(a["at"]))
            for a in row["attempt_rows"]
        ),
    )


def _parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise ApiProblem(422, "the body must be a JSON object", errors=[FieldError(("body",), "expected an object")])
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise ApiProblem(422, "the request is not valid", errors=from_pydantic(err.errors(include_url=False))) from None


def _event_types(requested: Sequence[str] | None) -> list[str] | None:
    if requested is None:
        return None
    if not requested:  # an endpoint for no event would receive every one, as an omitted list does
        msg = "name at least one event type, or leave event_types out for all of them"
        raise ApiProblem(422, msg, errors=[FieldError(("body", "event_types"), msg)])
    errors = [
        FieldError(("body", "event_types", i), f"unknown event type {name!r}")
        for i, name in enumerate(requested)
        if name not in EVENT_TYPES
    ]
    if errors:
        raise ApiProblem(422, "unknown event types", errors=errors)
    return sorted(set(requested))


class WebhookEndpoints:
    """The endpoint routes' engine side. ``allow_private`` is ``HERALD_WEBHOOKS_ALLOW_PRIVATE``."""

    def __init__(
        self, pool: asyncpg.Pool, *, allow_private: bool = False, clock: Callable[[], datetime] = _utcnow
    ) -> None:
        self.pool = pool
        self.allow_private = allow_private
        self.clock = clock

    async def create(self, tenant: Tenant, body: Any) -> Endpoint:
        """Raises: ApiProblem 422 naming ``url`` (not https, or a private target) or ``event_types``."""
        request: EndpointCreate = _parse(EndpointCreate, body)
        try:
            url = check_callback_url(request.url, allow_private=self.allow_private)
        except UnsafeCallbackUrl as err:
            raise ApiProblem(422, f"url: {err}", errors=[FieldError(("body", "url"), str(err))]) from None
        types = _event_types(request.event_types)
        row = await self.pool.fetchrow(sql.CREATE_ENDPOINT, new_id(), tenant.id, url, request.description, types)
        assert row is not None
        return _endpoint(row)

    async def list(self, tenant: Tenant) -> list[Endpoint]:
        return [_endpoint(r) for r in await self.pool.fetch(sql.LIST_ENDPOINTS, tenant.id)]

    async def get(self, tenant: Tenant, public_id: str) -> Endpoint:
        """Raises: ApiProblem 404 for a malformed, unknown or foreign id."""
        endpoint_id = self._id(public_id)
        row = await self.pool.fetchrow(sql.GET_ENDPOINT, tenant.id, endpoint_id)
        if row is None:
            raise _not_found(public_id)
        return _endpoint(row)

    async def delete(self, tenant: Tenant, public_id: str) -> None:
        """Delete the endpoint; what was still queued for it is dropped. Raises: ApiProblem 404."""
        if not await self.pool.fetchval(sql.DELETE_ENDPOINT, tenant.id, self._id(public_id)):
            raise _not_found(public_id)

    async def enable(self, tenant: Tenant, public_id: str) -> Endpoint:
        """Enable an endpoint again (after it was disabled for failing); its failure clock restarts."""
        row = await self.pool.fetchrow(sql.ENABLE_ENDPOINT, tenant.id, self._id(public_id))
        if row is None:
            raise _not_found(public_id)
        return _endpoint(row)

    async def send_test(self, tenant: Tenant, public_id: str) -> dict[str, Any]:
        """Queue a ``WebhookEndpointTest`` event for this endpoint only (delivered, signed and logged like
        any other). Returns ``{"delivery_id", "webhook_id"}``."""
        endpoint = await self.get(tenant, public_id)
        webhook_id = "evt_" + new_id().hex
        payload = {
            "type": ENDPOINT_TEST,
            "timestamp": self.clock().isoformat(),
            "data": {"endpoint_id": format_endpoint_id(endpoint.id), "tenant": tenant.slug, "test": True},
        }
        delivery_id = await self.pool.fetchval(
            sql.QUEUE_PAYLOAD, tenant.id, endpoint.id, webhook_id, ENDPOINT_TEST, payload
        )
        return {"delivery_id": delivery_id, "webhook_id": webhook_id}

    async def deliveries(
        self, tenant: Tenant, public_id: str, *, limit: int = 50, before: int | None = None
    ) -> list[DeliveryLogEntry]:
        """The endpoint's deliveries, newest first, each with its attempts (``before``: an id to page on)."""
        endpoint = await self.get(tenant, public_id)
        rows = await self.pool.fetch(
            sql.DELIVERY_LOG, tenant.id, endpoint.id, before, max(1, min(limit, DELIVERY_LOG_LIMIT))
        )
        return [_entry(r) for r in rows]

    async def replay(self, tenant: Tenant, public_id: str, body: Any) -> int:
        """Queue the tenant's events recorded in ``[since, until)`` again for this endpoint (its filter
        applies); returns how many. Raises: ApiProblem 422 naming ``since``/``until``."""
        endpoint = await self.get(tenant, public_id)
        request: DeliveryReplayRequest = _parse(DeliveryReplayRequest, body)
        until = request.until or self.clock()
        if request.since >= until:
            raise ApiProblem(422, "since must be before until", errors=[FieldError(("body", "since"), "after until")])
        if until - request.since > timedelta(days=31):
            raise ApiProblem(422, "replay at most 31 days at once", errors=[FieldError(("body", "until"), "too far")])
        if not endpoint.enabled:
            raise ApiProblem(409, "the endpoint is disabled; enable it first")
        return int(await self.pool.fetchval(sql.REPLAY, tenant.id, request.since, until, endpoint.id, REPLAY_LIMIT))

    @staticmethod
    def _id(public_id: str) -> uuid.UUID:
        parsed = parse_endpoint_id(public_id)
        if parsed is None:
            raise _not_found(public_id)
        return parsed


def _not_found(public_id: str) -> ApiProblem:
    return ApiProblem(404, f"no webhook endpoint {public_id!r}")
