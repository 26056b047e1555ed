"""The ingress deployment: public API, admin endpoints and metrics.

No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime.
"""

import asyncio
import contextlib
import json
import logging
from typing import Any

import ray
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from ray import serve

from actors import METRICS_ACTOR, NAMESPACE, RELAY_ACTOR, SENDER_ACTOR_PREFIX
from engine import redaction
from engine.auth import AuthError, Principal, verify_token
from engine.channels import Channel
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.problems import ApiProblem
from engine.runtime import RuntimeConfig, open_components
from engine.storage.inbox import list_inbox
from engine.views import message_view
from serve_app.http import create_app

log = logging.getLogger(__name__)

app = create_app()

#: How often the ingress ships its counters to the aggregator when nobody reads /metrics.
METRICS_FLUSH_S = 1.0
HEALTH_TIMEOUT_S = 3.0


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
        )
        self.metrics_actor = ray.get_actor(METRICS_ACTOR, namespace=NAMESPACE)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    # -- helpers -----------------------------------------------------------------------------------

    def _principal(self, request: Request, scope: str) -> Principal:
        try:
            principal = verify_token(self.config.secret, request.headers.get("authorization"))
        except AuthError as err:
            raise ApiProblem(401, str(err), headers={"WWW-Authenticate": "Bearer"}) from None
        if not principal.can(scope):
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

    @app.get("/metrics", tags=["admin"])
    async def metrics(self) -> Response:
        """Prometheus exposition of every process's counters (aggregated)."""
        text = await self.metrics_actor.render.remote(self.metrics.drain())
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def __del__(self) -> None:
        self._flusher.cancel()
        with contextlib.suppress(Exception):
            await self.parts.aclose()
