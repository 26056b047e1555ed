"""``/api/route/explain``, the live ``/admin/providers`` page and ``/admin/routing/reload``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from engine.channels import Channel
from serve_app.schemas.admin import ProviderStatus

BreakerStateName = Literal["closed", "open", "half_open"]


class RouteCandidate(BaseModel):
    """One provider the message could go to: ranked (usable) or filtered out, and why."""

    provider: str
    owner: str = Field(description="`platform` (the platform's account) or the tenant slug (its own credentials)")
    rank: int | None = Field(None, description="1 is tried first; null: filtered out")
    usable: bool
    health: BreakerStateName
    unit_cost_usd: float | None = Field(None, description="price of one unit (an SMS segment, else a message)")
    reliability: float = Field(description="learned from recent sends, seeded from the routing table")
    latency_ms: float
    reason: str = Field(description="why it ranked where it did, or why it was filtered out")


class RouteExplanation(BaseModel):
    """Where a notification with this body would go now, without sending it."""

    tenant: str
    template: str = Field(description="the version admission would pin (`id:vN`)")
    channel: Channel
    destination: str = Field(description="the phone number's country, the email routing region, or `*`")
    category: str | None = None
    priority: str
    tenant_region: str
    policy: str = Field(description="the routing table's policy rule the message falls under")
    rank_by: list[str]
    failover: Literal["immediate", "backoff"] = Field(description="what a retryable failure leads to")
    chosen: str | None = Field(None, description="the provider tried first; null when none can take it now")
    no_route: bool = Field(description="no provider could ever take it (the send would fail with `no_route`)")
    routing_table_version: str
    health_version: int
    candidates: list[RouteCandidate]


class BreakerView(BaseModel):
    """One circuit breaker: a provider on a channel, in a region, with one owner's credentials."""

    region: str = Field(description="the tenants' region it guards, or `*`: the account breaker its health checks feed")
    owner: str
    state: BreakerStateName
    error_rate: float
    window_requests: int
    consecutive_failures: int
    latency_ms: float | None = None
    last_error: str | None = None
    last_error_at: float | None = Field(None, description="unix time")
    opened_at: float | None = None
    retry_at: float | None = Field(None, description="when an open breaker lets probes through")


class ProviderLive(ProviderStatus):
    """A provider's configuration and its live state (the platform's breakers decide ``state``)."""

    state: BreakerStateName
    error_rate: float
    latency_ms: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    volume_this_month: int = Field(description="sends on the platform's account this month (volume price tiers)")
    breakers: list[BreakerView]


class RoutingTableInfo(BaseModel):
    version: str = Field(description="`<document version>#<revision>`")
    document_version: str
    revision: int = Field(description="1 at start-up, +1 on every reload")
    digest: str
    source: str
    loaded_at: float


class ProvidersPage(BaseModel):
    routing_table: RoutingTableInfo
    health_version: int
    providers: list[ProviderLive]


class RoutingReloaded(BaseModel):
    routing_table: RoutingTableInfo
