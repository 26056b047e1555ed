"""Sender actors: a pool that drains the priority queues through the engine's dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import ray

from actors import CONTROL_ACTOR, METRICS_FLUSH_S, NAMESPACE
from actors.governor import lease_client
from actors.routing import ActorFeed
from actors.wiring import DriverWiring
from drivers.attachments import S3AttachmentFetcher
from engine import redaction
from engine.channels import Channel
from engine.credentials import CredentialBox, TenantDrivers
from engine.dedupe import RecipientDedupe
from engine.dispatch import Dispatcher, DispatchOptions
from engine.governance.quotas import DedupeRefunds
from engine.governance.recipients import RecipientGate
from engine.metrics import MetricsBuffer
from engine.retries import RetryPolicy
from engine.runtime import RuntimeConfig, driver_env, open_components, provider_chains, settle_heap, yield_cpu
from engine.sender_loop import SenderLoop
from engine.storage.dedupe_store import DedupeStore
from engine.storage.quota_store import QuotaStore
from engine.storage.recipients_store import RecipientStore

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0.1, max_restarts=-1)
class SenderActor:
    async def __init__(self, config: RuntimeConfig, index: int, *, high_only: bool = False) -> None:
        """``high_only``: a dedicated sender of ``notifications.high`` (``HERALD_HIGH_SENDERS``), idle but
        for one-time codes, which it takes ahead of the other senders."""
        s = config.settings
        redaction.install()
        self.index = index
        self.high_only = high_only
        self.parts = await open_components(config, broker=True, pool_size=3, high_only=high_only, generic_plans=True)
        self.wiring = DriverWiring(config.database_url)
        self.drivers = provider_chains(s, config.env, self.wiring.factory)
        self.metrics = MetricsBuffer()
        #: the routing table, the health board and the metrics aggregator
        self.control = ray.get_actor(CONTROL_ACTOR, namespace=NAMESPACE)
        self.feed = ActorFeed(self.control, refresh_s=s.routing_refresh_s)
        await self.feed.start()
        self.dispatcher = dispatcher = Dispatcher(
            self.parts.repo,
            self.parts.catalog,
            self.drivers,
            policy=RetryPolicy(delays_s=s.retry_delays_s),
            metrics=self.metrics,
            options=DispatchOptions(
                lease_s=s.send_lease_s,
                base_url=s.base_url,
                link_secret=config.secret,
                email_from=s.email_from,
                tracking=s.link_tracking,
            ),
            tenant_templates=self.parts.tenant_templates,
            attachments=S3AttachmentFetcher.from_env(config.env),
            tenant_drivers=TenantDrivers(
                CredentialBox(s.credentials_key or config.secret), driver_env(s, config.env), self.wiring.factory
            ),
            feed=self.feed,
            leases=lease_client(s.governor_shards),
            dedupe=RecipientDedupe(
                DedupeStore(self.parts.repo.pool),
                link_secret=config.secret,
                on_deduplicated=DedupeRefunds(QuotaStore(self.parts.repo.pool)),  # a copy never sent is not counted
            ),
            recipients=RecipientGate(RecipientStore(self.parts.pool)),
            test_sinks={c: self.wiring.factory(c, "sink", config.env) for c in Channel},
        )
        assert self.parts.broker is not None
        self.loop = SenderLoop(
            self.parts.broker,
            dispatcher,
            max_envelopes=s.sender_prefetch,
            max_batch=s.sender_batch,
            high_lane=s.sender_high_lane or high_only,
            main_lane=not high_only,
        )
        self.task = asyncio.get_running_loop().create_task(self.loop.run())
        self.flusher = asyncio.get_running_loop().create_task(self._flush_forever())
        if not high_only and s.high_senders > 0:  # the codes have senders of their own: bulk work yields to them
            yield_cpu(s.bulk_nice)
        settle_heap()

    def _flush(self) -> None:
        delta = self.metrics.drain()
        if delta:
            self.control.apply.remote(delta)

    async def _flush_forever(self) -> None:
        """Ship the counters every METRICS_FLUSH_S, never per batch (a batch may be one message)."""
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self._flush()

    async def health(self) -> dict[str, object]:
        return {
            "index": self.index,
            "high_only": self.high_only,
            "pid": os.getpid(),
            "running": not self.task.done(),
            **self.loop.stats(),
        }

    async def pause(self) -> None:
        self.loop.pause()

    async def resume(self) -> None:
        self.loop.resume()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Finish the batch in hand, return unacked envelopes to the broker, close."""
        await self.loop.stop(grace_s)
        self.flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.flusher
        self._flush()
        await self.feed.aclose()
        if isinstance(self.dispatcher.attachments, S3AttachmentFetcher):
            await self.dispatcher.attachments.aclose()
        if self.dispatcher.tenant_drivers is not None:
            await self.dispatcher.tenant_drivers.aclose()
        for chain in self.drivers.values():
            for driver in chain:
                await driver.aclose()
        await self.wiring.aclose()
        await self.parts.aclose()
