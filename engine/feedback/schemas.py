"""Response models of the delivery-feedback routes, for ``/openapi.json``.

Each mirrors the ``as_dict()`` of what the engine call returns, so a route is
``return EndpointOut.model_validate((await endpoints.create(tenant, body)).as_dict())`` or declares it as
its ``response_model``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointOut(_Out):
    id: str
    url: str
    description: str | None
    event_types: list[str] | None
    enabled: bool
    failing_since: str | None
    disabled_at: str | None
    disabled_reason: str | None
    created_at: str
    updated_at: str


class EndpointList(_Out):
    endpoints: list[EndpointOut]


class DeliveryAttemptOut(_Out):
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    at: str


class DeliveryOut(_Out):
    id: int
    webhook_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed", "cancelled"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: str
    next_attempt_at: str | None
    finished_at: str | None
    attempt_log: list[DeliveryAttemptOut]


class DeliveryList(_Out):
    deliveries: list[DeliveryOut]


class QueuedTestEventOut(_Out):
    delivery_id: int
    webhook_id: str


class ReplayOut(_Out):
    queued: int


class SecretOut(_Out):
    secret: str
    previous_expires_at: str | None
    rotated_at: str | None


class IngestOut(_Out):
    received: int
    recorded: int
    duplicates: int
    orphans: int
    moved: int
    suppressed: int
    refused: int


class FiguresOut(_Out):
    sent: int
    delivered: int
    bounced: int
    soft_bounced: int
    complained: int
    opened: int
    machine_opened: int
    clicked: int
    failed: int
    suppressed: int
    expired: int
    unsubscribed: int
    delivery_rate: float | None
    bounce_rate: float | None
    complaint_rate: float | None
    open_rate: float | None
    click_rate: float | None
    click_to_open_rate: float | None
    failure_rate: float | None


class AnalyticsRowOut(FiguresOut):
    channel: str | None = None
    template_id: str | None = None
    template_version: int | None = None
    provider: str | None = None
    day: str | None = None


class AnalyticsOut(_Out):
    since: str
    until: str
    group_by: list[Literal["channel", "template", "provider", "day"]]
    rows: list[AnalyticsRowOut]
    total: FiguresOut
