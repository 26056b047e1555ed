"""The relay actor: runs the outbox relay (and lease reclaim) in the background."""

from __future__ import annotations

import asyncio
import logging

import ray

from engine import redaction
from engine.relay import Relay, RelayOptions
from engine.runtime import RuntimeConfig, open_components

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
        self.stop_event = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.relay.run(self.stop_event))

    async def health(self) -> dict[str, object]:
        return {"running": not self.task.done(), "broker": self.relay.healthy, "published": self.relay.published}

    async def depths(self) -> dict[str, int]:
        assert self.parts.broker is not None
        return await self.parts.broker.depths()

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, timeout=10)
        await self.parts.aclose()
