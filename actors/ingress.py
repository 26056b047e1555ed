"""The ingress actor: consumes ``notifications.ingress`` (RabbitMQ only) through the engine's batch intake."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import ray

from actors import CONTROL_ACTOR, METRICS_FLUSH_S, NAMESPACE
from engine import redaction
from engine.batch.ingress import open_ingress
from engine.metrics import MetricsBuffer
from engine.runtime import RuntimeConfig, open_components, settle_heap

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0.1, max_restarts=-1)
class IngressActor:
    async def __init__(self, config: RuntimeConfig) -> None:
        redaction.install()
        self.parts = await open_components(config, pool_size=3)
        self.metrics = MetricsBuffer()
        self.consumer = open_ingress(self.parts, config, self.metrics)
        #: the control actor: its metrics aggregator takes this process's deltas
        self.control = ray.get_actor(CONTROL_ACTOR, namespace=NAMESPACE)
        self.stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self.consumer.run(self.stop_event))
        self.flusher = loop.create_task(self._flush_forever())
        settle_heap()

    async def health(self) -> dict[str, object]:
        return {
            "running": not self.task.done() and self.consumer.running,
            "processed": self.consumer.processed,
            "dead_lettered": self.consumer.dead_lettered,
        }

    def _flush(self) -> None:
        delta = self.metrics.drain()
        if delta:
            self.control.apply.remote(delta)

    async def _flush_forever(self) -> None:
        while not self.stop_event.is_set():
            self._flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), METRICS_FLUSH_S)

    async def stop(self) -> None:
        self.stop_event.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.gather(self.task, self.flusher, return_exceptions=True), timeout=10)
        self._flush()
        await self.parts.aclose()
