"""The relay actor: runs the outbox relay (and lease reclaim) in the background, and refreshes the queue
statistics and gauges every ``HERALD_QUEUE_STATS_SECONDS``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import asyncpg
import ray

from actors import CONTROL_ACTOR, NAMESPACE
from engine import redaction
from engine.broker import BrokerUnavailable
from engine.lifecycle.queues import QueueMonitor
from engine.metrics import MetricsBuffer
from engine.relay import Relay, RelayOptions
from engine.runtime import RuntimeConfig, hands_off, open_components, settle_heap, yield_cpu
from engine.storage.queue_store import QueueStore

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0.1, max_restarts=-1)
class RelayActor:
    async def __init__(self, config: RuntimeConfig) -> None:
        s = config.settings
        redaction.install()
        self.parts = await open_components(config, broker=True, pool_size=3)
        assert self.parts.broker is not None
        self.relay = Relay(
            self.parts.repo,
            self.parts.broker,
            RelayOptions(batch=s.relay_batch, envelope_max_ids=s.envelope_max_ids, poll_s=s.relay_poll_s),
            listen_dsn=config.database_url,
        )
        self.monitor = QueueMonitor(
            self.parts.broker, lambda: self.relay.published_by_queue, QueueStore(self.parts.pool)
        )
        self.metrics = MetricsBuffer()
        #: the control actor: its metrics aggregator takes this process's deltas
        self.control = ray.get_actor(CONTROL_ACTOR, namespace=NAMESPACE)
        self.stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self.relay.run(self.stop_event))
        self.stats_task = loop.create_task(self._stats_forever(s.queue_stats_s))
        if hands_off(s):  # the codes do not come this way but when a hand-off failed
            yield_cpu(s.bulk_nice)
        settle_heap()

    async def health(self) -> dict[str, object]:
        return {
            "running": not self.task.done(),
            "broker": self.relay.healthy,
            "published": self.relay.published,
            "pid": os.getpid(),
        }

    async def depths(self) -> dict[str, int]:
        assert self.parts.broker is not None
        return await self.parts.broker.depths()

    async def queues(self) -> dict[str, Any]:
        """The platform's queues view (``QueuesSnapshot``): the latest refresh, or a fresh one."""
        snapshot = self.monitor.latest or await self.monitor.refresh()
        return snapshot.model_dump(mode="json")

    async def refresh_queue_gauges(self) -> None:
        """Look at the broker again and ship ``queue_depth`` / ``queue_oldest_age_seconds``."""
        try:
            await self.monitor.refresh()
        except (BrokerUnavailable, OSError, asyncpg.PostgresError) as err:
            log.warning("queue statistics unavailable: %s", err)
            return
        self.monitor.gauges(self.metrics)
        delta = self.metrics.drain()
        if delta:
            self.control.apply.remote(delta)

    async def _stats_forever(self, every_s: float) -> None:
        while not self.stop_event.is_set():
            await self.refresh_queue_gauges()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), every_s)

    async def stop(self) -> None:
        self.stop_event.set()
        self.stats_task.cancel()  # a look at the queues in progress is not worth waiting for
        with contextlib.suppress(asyncio.CancelledError):
            await self.stats_task
        await asyncio.wait_for(self.task, timeout=10)
        await self.parts.aclose()
