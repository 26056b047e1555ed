"""The ingress deployment: public API, admin endpoints and metrics.

No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime.
"""

import asyncio
import contextlib
import html
import json
import logging
import time
from typing import Any

import ray
from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from ray import serve

from actors import METRICS_ACTOR, NAMESPACE, RELAY_ACTOR, SENDER_ACTOR_PREFIX
from actors.routing import ActorRoutingState
from engine import redaction
from engine.auth import AuthError, Principal, verify_token
from engine.channels import Channel
from engine.credentials import SETTING_NAME, CredentialBox, TenantDrivers, save_credentials
from engine.errors import ConfigurationError
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.models import FieldError, Tenant
from engine.problems import ApiProblem
from engine.routing.service import RoutingService
from engine.runtime import RuntimeConfig, open_components, provider_report
from engine.storage.inbox import list_inbox
from engine.template_service import TemplateService
from engine.templating.links import verify_unsubscribe
from engine.tenant_templates import TenantTemplateStore
from engine.tracking import Tracking
from engine.views import message_view
from serve_app.http import create_app

log = logging.getLogger(__name__)

app = create_app()

#: How often the ingress ships its counters to the aggregator when nobody reads /metrics.
METRICS_FLUSH_S = 1.0
HEALTH_TIMEOUT_S = 3.0
#: How long the providers page trusts its check of each provider's settings (the live state is never cached).
PROVIDER_CONFIG_TTL_S = 60.0


@serve.deployment(ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=512, health_check_period_s=5)
@serve.ingress(app)
class HeraldApi:
    async def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        redaction.install()
        self.parts = await open_components(config, cache=True, pool_size=10)
        self.metrics = MetricsBuffer()
        self.intake = Intake(
            self.parts.repo,
            self.parts.catalog,
            metrics=self.metrics,
            idempotency_ttl_s=config.settings.idempotency_ttl_s,
            cache=self.parts.cache,
            channels=frozenset(c for c in Channel if config.settings.providers(c)),
            tenant_templates=self.parts.tenant_templates,
        )
        secret, base_url = config.secret, config.settings.base_url
        self.templates = TemplateService(
            TenantTemplateStore(self.parts.pool),
            self.parts.catalog,
            self.parts.tenant_templates,
            secret=secret,
            base_url=base_url,
        )
        self.tracking = Tracking(self.parts.pool, secret=secret, base_url=base_url)
        self._providers: tuple[float, list[dict[str, Any]]] | None = None
        self.routing = RoutingService(
            ActorRoutingState(), self.intake, {c: config.settings.providers(c) for c in Channel}
        )
        self.tenant_drivers = TenantDrivers(
            CredentialBox(config.settings.credentials_key or config.secret),
            {**config.env, "HERALD_DATA_DIR": str(config.settings.data_dir), "DATABASE_URL": config.database_url},
        )
        self.metrics_actor = ray.get_actor(METRICS_ACTOR, namespace=NAMESPACE)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    # -- helpers -----------------------------------------------------------------------------------

    def _principal(self, request: Request, scope: str, *alternatives: str) -> Principal:
        try:
            principal = verify_token(self.config.secret, request.headers.get("authorization"))
        except AuthError as err:
            raise ApiProblem(401, str(err), headers={"WWW-Authenticate": "Bearer"}) from None
        if not any(principal.can(s) for s in (scope, *alternatives)):
            raise ApiProblem(403, f"the token lacks the '{scope}' scope")
        return principal

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            delta = self.metrics.drain()
            if delta:
                self.metrics_actor.apply.remote(delta)

    # -- public API --------------------------------------------------------------------------------

    @app.post("/api/notifications", status_code=202, tags=["notifications"])
    async def create_notification(self, request: Request) -> Response:
        """Accept one notification (202); replays of an idempotency key answer the original response."""
        principal = self._principal(request, "send")
        try:
            body: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiProblem(400, "the body is not valid JSON") from None
        accepted = await self.intake.submit(principal, body, request.headers.get("idempotency-key"))
        headers = {"Idempotent-Replayed": "true"} if accepted.replayed else {}
        return JSONResponse(accepted.body, status_code=accepted.status_code, headers=headers)

    @app.get("/api/notifications/{message_id}", tags=["notifications"])
    async def get_notification(self, message_id: str, request: Request) -> dict[str, Any]:
        """Status, attempts and events of one of the caller's messages."""
        principal = self._principal(request, "read")
        tenant = await self.intake.tenant(principal.tenant)
        parsed = parse_message_id(message_id)
        row = await self.parts.repo.message_view(tenant.id, parsed) if tenant and parsed else None
        if row is None:
            raise ApiProblem(404, f"no notification {message_id!r}")
        return message_view(row)

    async def _tenant(self, request: Request, scope: str) -> tuple[Principal, Tenant]:
        principal = self._principal(request, scope)
        tenant = await self.intake.tenant(principal.tenant)
        if tenant is None:
            raise ApiProblem(401, f"unknown tenant {principal.tenant!r}")
        return principal, tenant

    async def _json(self, request: Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiProblem(400, "the body is not valid JSON") from None

    # -- templates, preview, tracked links -------------------------------------------------------------

    @app.put("/api/templates/{template_id}/draft", tags=["templates"])
    async def save_draft(self, template_id: str, request: Request) -> dict[str, Any]:
        """Create or replace the tenant's draft of a template (compiled in the sandbox first)."""
        principal, tenant = await self._tenant(request, "templates")
        return await self.templates.save_draft(tenant, template_id, await self._json(request), principal.tenant)

    @app.get("/api/templates/{template_id}/draft", tags=["templates"])
    async def get_draft(self, template_id: str, request: Request) -> dict[str, Any]:
        _, tenant = await self._tenant(request, "templates")
        return await self.templates.draft(tenant, template_id)

    @app.post("/api/templates/{template_id}/publish", tags=["templates"])
    async def publish(self, template_id: str, request: Request) -> dict[str, Any]:
        """The draft becomes the next version; published versions never change."""
        principal, tenant = await self._tenant(request, "templates")
        published = await self.templates.publish(tenant, template_id, principal.tenant)
        self.intake.forget_tenant(tenant.slug)
        return published

    @app.post("/api/templates/{template_id}/rollback", tags=["templates"])
    async def rollback(self, template_id: str, request: Request) -> dict[str, Any]:
        """Publish an older version again as the new latest."""
        principal, tenant = await self._tenant(request, "templates")
        published = await self.templates.rollback(tenant, template_id, await self._json(request), principal.tenant)
        self.intake.forget_tenant(tenant.slug)
        return published

    @app.get("/api/templates/{template_id}", tags=["templates"])
    async def template_versions(self, template_id: str, request: Request) -> dict[str, Any]:
        _, tenant = await self._tenant(request, "templates")
        return await self.templates.versions(tenant, template_id)

    @app.get("/api/templates/{template_id}/versions/{version}", tags=["templates"])
    async def template_version(self, template_id: str, version: int, request: Request) -> dict[str, Any]:
        _, tenant = await self._tenant(request, "templates")
        return await self.templates.version(tenant, template_id, version)

    @app.put("/api/partials/{locale}/{name}", tags=["templates"])
    async def save_partial(self, locale: str, name: str, request: Request) -> dict[str, Any]:
        """Create or replace one of the tenant's partials (``header.html``...), used by its own templates."""
        principal, tenant = await self._tenant(request, "templates")
        saved = await self.templates.save_partial(tenant, locale, name, await self._json(request), principal.tenant)
        self.intake.forget_tenant(tenant.slug)
        return saved

    @app.get("/api/partials", tags=["templates"])
    async def list_partials(self, request: Request) -> dict[str, Any]:
        _, tenant = await self._tenant(request, "templates")
        return await self.templates.partials(tenant)

    @app.post("/api/preview", tags=["templates"])
    async def preview(self, request: Request) -> dict[str, Any]:
        """Render any version for any locale and channel, with findings (SMS segments, missing variables)."""
        _, tenant = await self._tenant(request, "templates")
        return await self.templates.preview(tenant, await self._json(request))

    @app.post("/api/shortlinks", status_code=201, tags=["links"])
    async def create_shortlink(self, request: Request) -> dict[str, Any]:
        """A tracked link of the tenant's (not tied to a message) with its own click count."""
        _, tenant = await self._tenant(request, "send")
        body = await self._json(request)
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")) or len(url) > 2048:
            raise ApiProblem(422, "url must be an http(s) URL", errors=[FieldError(("body", "url"), "an http(s) URL")])
        return (await self.tracking.create_shortlink(tenant, url)).as_dict()

    @app.get("/api/shortlinks/{link_id}", tags=["links"])
    async def get_shortlink(self, link_id: str, request: Request) -> dict[str, Any]:
        _, tenant = await self._tenant(request, "read")
        link = await self.tracking.shortlink(tenant, link_id)
        if link is None:
            raise ApiProblem(404, f"no shortlink {link_id!r}")
        return link.as_dict()

    @app.get("/l/{token}", tags=["links"], include_in_schema=True)
    async def follow_link(self, token: str) -> Response:
        """302 to the link's URL, recording the click; a tampered or unknown token is 404."""
        url = await self.tracking.click(token)
        if url is None:
            raise ApiProblem(404, "unknown link")
        return RedirectResponse(url, status_code=302)

    @app.post("/u/{token}", tags=["links"])
    async def unsubscribe(self, token: str) -> Response:
        """RFC 8058 one-click unsubscribe: the address joins the tenant's suppression list."""
        if not await self.tracking.unsubscribe(token):
            raise ApiProblem(404, "unknown unsubscribe link")
        return HTMLResponse("<p>You are unsubscribed. You will not receive these messages any more.</p>")

    @app.get("/u/{token}", tags=["links"])
    async def unsubscribe_page(self, token: str) -> Response:
        """A confirmation page (mail scanners follow GET links, so only the POST unsubscribes)."""
        if verify_unsubscribe(self.config.secret, token) is None:
            raise ApiProblem(404, "unknown unsubscribe link")
        form = f'<form method="post" action="/u/{html.escape(token)}"><button>Unsubscribe</button></form>'
        return HTMLResponse(f"<p>Stop receiving these messages?</p>{form}")

    @app.get("/api/inbox/{user_id}", tags=["inbox"])
    async def inbox(self, user_id: str, request: Request, limit: int = 50) -> dict[str, Any]:
        """The recipient's in-app messages, newest first (expired ones hidden)."""
        principal = self._principal(request, "read")
        tenant = await self.intake.tenant(principal.tenant)
        if tenant is None:
            raise ApiProblem(401, f"unknown tenant {principal.tenant!r}")
        items = await list_inbox(self.parts.pool, tenant.id, user_id, limit=max(1, min(limit, 200)))
        return {"user_id": user_id, "items": items}

    # -- admin -------------------------------------------------------------------------------------

    @app.get("/admin/healthz", tags=["admin"])
    async def healthz(self) -> JSONResponse:
        """200 only when the database, the relay (and its broker) and every sender are ready."""
        checks = await self._checks()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    async def _checks(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.parts.pool.fetchval("SELECT 1"), HEALTH_TIMEOUT_S)
            checks["database"] = "ok"
        except Exception as err:
            checks["database"] = f"error: {type(err).__name__}"
        checks["relay"] = await self._actor_check(RELAY_ACTOR, lambda h: bool(h["running"] and h["broker"]))
        for i in range(self.config.settings.senders):
            checks[f"sender-{i}"] = await self._actor_check(f"{SENDER_ACTOR_PREFIX}{i}", lambda h: bool(h["running"]))
        return checks

    async def _actor_check(self, name: str, healthy: Any) -> str:
        try:
            handle = ray.get_actor(name, namespace=NAMESPACE)
            report = await asyncio.wait_for(handle.health.remote(), HEALTH_TIMEOUT_S)
        except (ValueError, TimeoutError, ray.exceptions.RayError) as err:
            return f"error: {type(err).__name__}"
        return "ok" if healthy(report) else f"unhealthy: {report}"

    @app.post("/api/route/explain", tags=["routing"])
    async def explain_route(self, request: Request) -> dict[str, Any]:
        """Where a notification with this body (as for POST /api/notifications) would go now, and why for
        every candidate: cost, health, policy. Nothing is stored or sent."""
        principal = self._principal(request, "send")
        return await self.routing.explain(principal, await self._json(request))

    @app.get("/admin/providers", tags=["admin"])
    async def providers(self, request: Request) -> dict[str, Any]:
        """Every known provider per channel: configuration, and the live breaker state, error rate, latency,
        last error and this month's volume; the routing table in use."""
        principal = self._principal(request, "admin", "platform")
        return await self.routing.providers(principal, await self._provider_config())

    @app.post("/admin/routing/reload", tags=["admin"])
    async def reload_routing(self, request: Request) -> dict[str, Any]:
        """Reload the routing table from HERALD_ROUTING_TABLE without a restart (platform scope)."""
        return await self.routing.reload(self._principal(request, "platform"))

    async def _provider_config(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._providers is None or now - self._providers[0] > PROVIDER_CONFIG_TTL_S:
            report = await provider_report(self.config.settings, self.config.env, database_url=self.config.database_url)
            self._providers = (now, report)
        return self._providers[1]

    @app.put("/admin/credentials/{channel}/{provider}", tags=["admin"])
    async def set_credentials(self, channel: str, provider: str, request: Request) -> dict[str, Any]:
        """The caller's tenant brings its own account for a provider: settings such as
        ``{"HERALD_SENDGRID_API_KEY": "..."}``, checked by building the driver, stored encrypted."""
        principal, tenant = await self._tenant(request, "admin")
        body = await self._json(request)
        try:
            chosen = Channel(channel)
        except ValueError:
            raise ApiProblem(404, f"no channel {channel!r}") from None
        if not isinstance(body, dict) or not body or not all(isinstance(v, str) for v in body.values()):
            raise ApiProblem(422, "send an object of setting names to string values")
        bad = [k for k in body if not SETTING_NAME.match(k)]
        if bad:
            errors = [FieldError(("body", k), "not a provider setting (HERALD_* or AWS_*)") for k in bad]
            raise ApiProblem(422, "unknown settings", errors=errors)
        try:
            driver = self.tenant_drivers.build(chosen, provider, body)
        except ConfigurationError as err:
            raise ApiProblem(422, str(err), errors=[FieldError(("path", "provider"), str(err))]) from None
        await driver.aclose()
        sealed = self.tenant_drivers.box.seal(body)
        await save_credentials(self.parts.pool, tenant.id, chosen, provider, sealed, list(body), principal.tenant)
        self.intake.forget_tenant(tenant.slug)  # explain routes with the new credentials at once
        return {"channel": chosen.value, "provider": provider, "names": sorted(body)}

    @app.get("/admin/queues", tags=["admin"])
    async def queues(self, request: Request) -> dict[str, Any]:
        """Messages ready in each queue, and what the outbox still holds."""
        self._principal(request, "admin")
        relay = ray.get_actor(RELAY_ACTOR, namespace=NAMESPACE)
        depths = await relay.depths.remote()
        outbox = await self.parts.pool.fetchrow(
            "SELECT count(*) AS pending, count(*) FILTER (WHERE available_at > now()) AS later FROM outbox"
        )
        counts = await self.parts.repo.counts_by_status()
        return {"queues": depths, "outbox": dict(outbox or {}), "messages_by_status": counts}

    @app.get("/metrics", tags=["admin"])
    async def metrics(self) -> Response:
        """Prometheus exposition of every process's counters (aggregated)."""
        text = await self.metrics_actor.render.remote(self.metrics.drain())
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def __del__(self) -> None:
        self._flusher.cancel()
        with contextlib.suppress(Exception):
            await self.parts.aclose()
