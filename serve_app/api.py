"""The ingress deployment: builds the engine's components in its replica and serves the routers.

The routes themselves live in :mod:`serve_app.routes`; they reach these components through one typed
:class:`~serve_app.routes.deps.ApiState` on ``app.state``. The cluster-facing parts (actor health, queue
depths, the metrics aggregator in the control actor) are :class:`RayOperations`, the routes' ``Operations``
port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve

from actors import (
    CONTROL_ACTOR,
    FEEDBACK_ACTOR,
    HIGH_SENDER_ACTOR_PREFIX,
    INGRESS_ACTOR,
    METRICS_FLUSH_S,
    NAMESPACE,
    RELAY_ACTOR,
    SENDER_ACTOR_PREFIX,
)
from actors.routing import ActorRoutingState, follow_table
from actors.wiring import DriverWiring
from drivers.webhooks import create_receiver
from engine import redaction
from engine.batch import BatchIntake
from engine.batch.ingress import INGRESS_QUEUE, IngressKeys
from engine.channels import Channel
from engine.credentials import CredentialBox, TenantCredentials, TenantDrivers
from engine.feedback.analytics import Analytics
from engine.feedback.endpoints import WebhookEndpoints
from engine.feedback.inbound import ProviderWebhooks
from engine.feedback.ingest import FeedbackIngest
from engine.feedback.signing_keys import WebhookSecrets
from engine.governance.admission import GovernanceAdmission
from engine.governance.audit import AuditLog
from engine.governance.budgets import Budgets
from engine.governance.keys import ApiKeyService, ApiKeyVerifier, Authenticator, pepper_from
from engine.governance.prices import TablePrices
from engine.governance.quotas import Quotas
from engine.governance.recipients import RecipientService
from engine.governance.replies import InboundReplies
from engine.governance.usage import UsageService
from engine.governance.warnings import WarningSink
from engine.intake import Intake
from engine.lifecycle import Lifecycle, QueuesSnapshot
from engine.metrics import MetricsBuffer
from engine.models import CallbackPolicy
from engine.problems import ApiProblem
from engine.routing.service import RoutingService
from engine.runtime import (
    Components,
    RuntimeConfig,
    driver_env,
    open_components,
    open_handoff,
    provider_report,
    settle_heap,
)
from engine.storage.audit_store import AuditStore
from engine.storage.batch_store import BatchStore
from engine.storage.budget_store import BudgetStore
from engine.storage.keys_store import ApiKeyStore
from engine.storage.quota_store import QuotaStore
from engine.storage.recipients_store import RecipientStore
from engine.storage.rotating_secrets import INGRESS_KEYS, RotatingSecretStore
from engine.template_service import TemplateService
from engine.tenant_config import EditPolicy
from engine.tenant_config.store import TenantStore
from engine.tenant_service import TenantService
from engine.tenant_templates import TenantTemplateStore
from engine.tracking import Tracking
from serve_app.routes import build_app
from serve_app.routes.deps import ApiState

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 3.0
#: How long the providers page trusts its check of each provider's settings (the live state is never cached).
PROVIDER_CONFIG_TTL_S = 60.0


class RayOperations:
    """The routes' ``Operations``: what the cluster's actors report, asked through Ray."""

    def __init__(self, config: RuntimeConfig, parts: Components, metrics: MetricsBuffer, wiring: DriverWiring) -> None:
        self.wiring = wiring
        self.config = config
        self.parts = parts
        self.metrics = metrics
        self.control = ray.get_actor(CONTROL_ACTOR, namespace=NAMESPACE)  #: holds the metrics aggregator
        self._providers: tuple[float, list[dict[str, Any]]] | None = None

    async def health_checks(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.parts.repo.ping(), HEALTH_TIMEOUT_S)
            checks["database"] = "ok"
        except Exception as err:
            checks["database"] = f"error: {type(err).__name__}"
        checks["relay"] = await self._actor_check(RELAY_ACTOR, lambda h: bool(h["running"] and h["broker"]))
        checks["control"] = await self._actor_check(CONTROL_ACTOR, lambda h: bool(h["running"]))
        for i in range(self.config.settings.senders):
            checks[f"sender-{i}"] = await self._actor_check(f"{SENDER_ACTOR_PREFIX}{i}", lambda h: bool(h["running"]))
        for i in range(self.config.settings.high_senders):
            checks[f"sender-high-{i}"] = await self._actor_check(
                f"{HIGH_SENDER_ACTOR_PREFIX}{i}", lambda h: bool(h["running"])
            )
        checks["feedback"] = await self._actor_check(FEEDBACK_ACTOR, lambda h: bool(h["running"]))
        if self.config.settings.amqp_url:
            checks["ingress"] = await self._actor_check(INGRESS_ACTOR, lambda h: bool(h["running"]))
        return checks

    async def _actor_check(self, name: str, healthy: Callable[[dict[str, Any]], bool]) -> str:
        try:
            handle = ray.get_actor(name, namespace=NAMESPACE)
            report = await asyncio.wait_for(handle.health.remote(), HEALTH_TIMEOUT_S)
        except (ValueError, TimeoutError, ray.exceptions.RayError) as err:
            return f"error: {type(err).__name__}"
        return "ok" if healthy(report) else f"unhealthy: {report}"

    async def queues(self) -> QueuesSnapshot:
        try:
            relay = ray.get_actor(RELAY_ACTOR, namespace=NAMESPACE)
            snapshot = await asyncio.wait_for(relay.queues.remote(), HEALTH_TIMEOUT_S * 2)
        except (ValueError, TimeoutError, ray.exceptions.RayError) as err:
            raise ApiProblem(503, f"the queue statistics cannot be read: {type(err).__name__}") from None
        return QueuesSnapshot.model_validate(snapshot)

    async def metrics_text(self) -> str:
        text: str = await self.control.render.remote(self.metrics.drain())
        return text

    async def provider_report(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._providers is None or now - self._providers[0] > PROVIDER_CONFIG_TTL_S:
            settings, env = self.config.settings, self.config.env
            report = await provider_report(settings, env, self.wiring.factory, self.wiring.known)
            self._providers = (now, report)
        return self._providers[1]

    async def flush_forever(self) -> None:
        """Ship the replica's counters every METRICS_FLUSH_S (a read of /metrics ships them at once)."""
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            delta = self.metrics.drain()
            if delta:
                self.control.apply.remote(delta)


@serve.deployment(ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=512, health_check_period_s=5)
@serve.ingress()
class HeraldApi:
    """Owns the replica's components; Serve asks it for the app once they are open."""

    async def __init__(self, config: RuntimeConfig) -> None:
        redaction.install()
        settings, secret, base_url = config.settings, config.secret, config.settings.base_url
        CallbackPolicy.set_default(settings.webhooks_allow_private)  # the request bodies FastAPI validates
        # No Redis in front of the insert: idempotency is the insert's own ON CONFLICT (one statement), and
        # a cache would add two round trips to every accept to save one read on the rare replay.
        self.parts = parts = await open_components(config, pool_size=10)
        metrics = MetricsBuffer()
        prices = TablePrices({c: settings.providers(c) for c in Channel})
        governance = GovernanceAdmission(Quotas(QuotaStore(parts.pool)), Budgets(BudgetStore(parts.pool), prices))
        self.handoff = open_handoff(config, parts.repo)
        intake = Intake(
            parts.repo,
            parts.catalog,
            metrics=metrics,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            cache=parts.cache,
            channels=frozenset(c for c in Channel if settings.providers(c)),
            tenant_templates=parts.tenant_templates,
            allow_private_callbacks=settings.webhooks_allow_private,
            governance=governance,
            handoff=self.handoff,
        )
        templates = TemplateService(
            TenantTemplateStore(parts.pool), parts.catalog, parts.tenant_templates, secret=secret, base_url=base_url
        )
        wiring = DriverWiring(config.database_url)  # drivers are built here only to check settings
        box = CredentialBox(settings.credentials_key or secret)
        provider_env = driver_env(settings, config.env)
        drivers = TenantDrivers(box, provider_env, wiring.factory)
        self.ops = RayOperations(config, parts, metrics, wiring)
        key_store, pepper = ApiKeyStore(parts.pool), pepper_from(secret)
        self.key_verifier = ApiKeyVerifier(key_store, pepper=pepper)
        recipient_store = RecipientStore(parts.pool)
        recipients = RecipientService(recipient_store)
        self.state = ApiState(
            secret=secret,
            intake=intake,
            repo=parts.repo,
            templates=templates,
            tracking=Tracking(
                parts.pool,
                secret=secret,
                base_url=base_url,
                tenants=intake.tenant,
                unsubscribe_grace_s=settings.unsubscribe_key_grace_s,
            ),
            credentials=TenantCredentials(drivers, parts.pool),
            tenants=TenantService(
                TenantStore(parts.pool),
                policy=EditPolicy(settings.tenant_editable_keys),
                known_providers={c: {p for ch, p in wiring.known if ch is c} for c in Channel},
                on_change=intake.forget_tenant,
            ),
            lifecycle=Lifecycle.on(parts.pool, providers={c: settings.providers(c) for c in Channel}),
            ops=self.ops,
            webhooks=ProviderWebhooks(
                FeedbackIngest(parts.pool, metrics=metrics),
                create_receiver,
                provider_env,
                tenants=intake.tenant,
                box=box,
                replies=InboundReplies(recipients, recipient_store, intake.tenant),
            ),
            endpoints=WebhookEndpoints(parts.pool, allow_private=settings.webhooks_allow_private),
            webhook_secrets=WebhookSecrets(parts.pool, box),
            analytics=Analytics(parts.pool),
            public_url=base_url.rstrip("/"),
            routing=RoutingService(ActorRoutingState(), intake, {c: settings.providers(c) for c in Channel}),
            usage=UsageService(parts.pool),
            batches=BatchIntake(intake, BatchStore(parts.pool)),
            ingress_keys=IngressKeys(RotatingSecretStore(parts.pool, INGRESS_KEYS), box),
            ingress_queue=settings.queue_prefix + INGRESS_QUEUE,
            authenticator=Authenticator(secret, self.key_verifier),
            keys=ApiKeyService(key_store, pepper=pepper, verifier=self.key_verifier),
            audit=AuditLog(AuditStore(parts.pool)),
            recipients=recipients,
        )
        loop = asyncio.get_running_loop()
        self._flusher = loop.create_task(self.ops.flush_forever())
        # Quotas and budgets: this replica's counts reconciled with every other's each second.
        self._governance_stop = asyncio.Event()
        # Revocations made on any replica, read every half second; last use written every 10 s.
        self._keys_stop = asyncio.Event()
        self._background = [
            loop.create_task(self.key_verifier.run(self._keys_stop)),
            loop.create_task(follow_table(prices.use, refresh_s=settings.routing_refresh_s)),
            loop.create_task(governance.run(self._governance_stop, on_warnings=WarningSink(parts.pool, metrics))),
        ]

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = build_app(self.state)
        settle_heap()  # the replica is built: what it holds stays, out of the collector's full passes
        return app

    async def __del__(self) -> None:
        self._flusher.cancel()
        self._governance_stop.set()  # one last reconcile hands this replica's counts over
        self._keys_stop.set()
        self._background[1].cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait(self._background[::2], timeout=2.0)
        if self.handoff is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.handoff.aclose(), timeout=5.0)
            with contextlib.suppress(Exception):
                await self.handoff.broker.close()
        with contextlib.suppress(Exception):
            await self.parts.aclose()
