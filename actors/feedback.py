"""The feedback actor: delivers queued events to tenants' endpoints and keeps feedback tidy (orphans
matched again, raw payloads past retention dropped, open/click rate gauges refreshed)."""

from __future__ import annotations

import asyncio
import contextlib

import ray

from actors import CONTROL_ACTOR, NAMESPACE
from engine import redaction
from engine.credentials import CredentialBox
from engine.feedback.analytics import Analytics
from engine.feedback.delivery import DeliveryOptions, WebhookDeliveryWorker
from engine.feedback.ingest import FeedbackIngest
from engine.feedback.maintenance import FeedbackMaintenance, MaintenanceOptions
from engine.feedback.signing_keys import WebhookSecrets
from engine.metrics import MetricsBuffer
from engine.runtime import RuntimeConfig, open_components, settle_heap


@ray.remote(num_cpus=0.1, max_restarts=-1)
class FeedbackActor:
    async def __init__(self, config: RuntimeConfig) -> None:
        s = config.settings
        redaction.install()
        self.parts = await open_components(config, pool_size=3)
        self.metrics = MetricsBuffer()
        pool = self.parts.pool
        self.worker = WebhookDeliveryWorker(
            pool,
            WebhookSecrets(pool, CredentialBox(s.credentials_key or config.secret)),
            options=DeliveryOptions(
                concurrency=s.webhook_concurrency,
                timeout_s=s.webhook_timeout_s,
                retry_base_s=s.webhook_retry_base_s,
                retry_for_s=s.webhook_retry_for_s,
                disable_after_s=s.webhook_disable_after_s,
                allow_private=s.webhooks_allow_private,
            ),
            metrics=self.metrics,
            listen_dsn=config.database_url,
        )
        self.upkeep = FeedbackMaintenance(
            FeedbackIngest(pool, metrics=self.metrics),
            Analytics(pool),
            self.metrics,
            MaintenanceOptions(
                retention_days=s.provider_event_retention_days, rate_window_days=s.analytics_rate_window_days
            ),
            on_metrics=self._flush,
        )
        #: the control actor: its metrics aggregator takes this process's deltas
        self.control = ray.get_actor(CONTROL_ACTOR, namespace=NAMESPACE)
        self.stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(self.worker.run(self.stop_event)),
            loop.create_task(self.upkeep.run(self.stop_event)),
        ]
        settle_heap()

    def _flush(self) -> None:
        delta = self.metrics.drain()
        if delta:
            self.control.apply.remote(delta)

    async def health(self) -> dict[str, object]:
        return {"running": all(not t.done() for t in self.tasks), "delivered": self.worker.delivered}

    async def stop(self) -> None:
        self.stop_event.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), timeout=15)
        self._flush()
        await self.worker.aclose()
        await self.parts.aclose()
