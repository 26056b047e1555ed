"""What the API offers about routing: explain a hypothetical message, the live providers page, reloads.

The API routes authenticate the caller (a tenant sender for explain, the platform operator for the
providers page and reloads) and call these; the state comes through a :class:`RoutingState` port (the
Ray actors in production).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from engine.auth import Principal
from engine.channels import Channel
from engine.credentials import sealed_for
from engine.errors import ConfigurationError
from engine.intake import Checked, Intake
from engine.models import NotificationRequest
from engine.problems import ApiProblem

from .feed import Planner, RoutingView
from .health import PLATFORM, BreakerKey, HealthSnapshot, KeyHealth
from .query import RouteQuery, allow_list, destination, email_region
from .table import RoutingTable


class RoutingState(Protocol):
    async def view(self) -> RoutingView:
        """The current table and health snapshot."""
        ...

    async def reload(self) -> RoutingTable:
        """Reload the table from its file.

        Raises:
            ConfigurationError: the file is invalid; the table in use stays.
        """
        ...


class RoutingService:
    def __init__(
        self,
        state: RoutingState,
        intake: Intake,
        configured: Mapping[Channel, Sequence[str]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.intake = intake
        self.configured = {c: tuple(p) for c, p in configured.items()}
        self.clock = clock
        self.planner = Planner()

    async def explain(self, principal: Principal, body: NotificationRequest | Any) -> dict[str, Any]:
        """Which provider a message with this body would go to now, and why for every candidate.

        Raises:
            ApiProblem: the body is not a valid notification (as ``POST /api/notifications`` says).
        """
        checked = await self.intake.check(principal, body)
        view = await self.state.view()
        table, routing_key = self.planner.table_for(view.table, checked.tenant.config)
        query = self.query(checked, routing_key)
        plan = self.planner.plan(query, view, table, now=self.clock())
        return {
            "tenant": checked.tenant.slug,
            "template": f"{checked.resolved.id}:v{checked.resolved.version}",
            **plan.explain(),
        }

    def query(self, checked: Checked, routing_key: str) -> RouteQuery:
        """The query the dispatcher builds for the same message once it is rendered."""
        request, tenant, manifest = checked.request, checked.tenant, checked.resolved.manifest
        channel = request.channel
        configured = self.configured.get(channel, ())
        to = request.to.model_dump(mode="json", exclude_none=True)
        price_category = None
        if channel is Channel.WHATSAPP:  # as engine.routed.price_category reads the rendered message
            price_category = manifest.whatsapp.category if manifest.whatsapp else "service"
        return RouteQuery(
            channel=channel,
            tenant=tenant.slug,
            region=tenant.region,
            destination=destination(channel, to, email_region_=email_region(tenant.config, tenant.region)),
            category=request.metadata.category or manifest.category,
            priority=request.priority.value,
            configured=configured,
            allow=allow_list(tenant.config, channel),
            push_platform=request.to.push.platform if request.to.push else None,
            own_credentials=frozenset(p for p in configured if sealed_for(tenant.config, channel, p)),
            price_category=price_category,
            tenant_routing=routing_key,
        )

    async def providers(self, configuration: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Every provider's configuration with its live breakers (the platform's accounts and every
        tenant's own), and the routing table in use. For the platform operator."""
        view = await self.state.view()
        rows = []
        for entry in configuration:
            channel = str(entry["channel"])
            breakers = [
                (key, health)
                for key, health in view.health.keys.items()
                if key.provider == entry["provider"] and key.channel == channel
            ]
            rows.append({**entry, **_live(view.health, channel, entry["provider"], breakers)})
        return {"routing_table": _table(view.table), "health_version": view.health.version, "providers": rows}

    async def reload(self) -> dict[str, Any]:
        """Reload the routing table from its file (the route lets only the platform operator in).

        Raises:
            ApiProblem: 422 when the file is invalid (the table in use stays).
        """
        try:
            table = await self.state.reload()
        except ConfigurationError as err:
            raise ApiProblem(422, f"the routing table was not reloaded: {err}") from None
        return {"routing_table": _table(table)}


def _table(table: RoutingTable) -> dict[str, Any]:
    return {
        "version": table.label,
        "document_version": table.version,
        "revision": table.revision,
        "digest": table.digest,
        "source": table.source,
        "loaded_at": table.loaded_at,
    }


def _live(
    snapshot: HealthSnapshot, channel: str, provider: str, breakers: list[tuple[BreakerKey, KeyHealth]]
) -> dict[str, Any]:
    platform = [h for k, h in breakers if k.owner == PLATFORM]
    worst = max(platform, key=lambda h: (h.state.value != "closed", h.error_rate), default=None)
    return {
        "state": worst.state.value if worst else "closed",
        "error_rate": worst.error_rate if worst else 0.0,
        "latency_ms": worst.latency_ms if worst else None,
        "last_error": worst.last_error if worst else None,
        "last_error_at": worst.last_error_at if worst else None,
        "volume_this_month": snapshot.volume(channel, provider, PLATFORM),
        "breakers": [
            {
                "region": k.region,
                "owner": k.owner,
                "state": h.state.value,
                "error_rate": h.error_rate,
                "window_requests": h.window_requests,
                "consecutive_failures": h.consecutive_failures,
                "latency_ms": h.latency_ms,
                "last_error": h.last_error,
                "last_error_at": h.last_error_at,
                "opened_at": h.opened_at,
                "retry_at": h.retry_at,
            }
            for k, h in sorted(breakers, key=lambda kh: (kh[0].owner != PLATFORM, kh[0].owner, kh[0].region))
        ],
    }
