"""The provider health board of the cluster (every circuit breaker), as the control actor runs it.

Senders call :meth:`ProviderHealth.sync` about once a second with the tallies they counted and get the
board's snapshot back; a half-open breaker's probe permits are leased with :meth:`ProviderHealth.lease_probes`.
The ``provider_circuit_open`` gauges go to ``publish`` (the metrics aggregator) whenever they change.

In the background, it checks the platform's provider accounts whose drivers have a cheap health check
(:class:`~engine.routing.checks.ProviderChecker`), and persists this month's sends per account
(:class:`~engine.routing.volumes.VolumeKeeper`) every ``HERALD_VOLUME_FLUSH_SECONDS``; it reads them back
when it starts, so a restart keeps the volume price tiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from actors.wiring import DriverWiring
from drivers import driver_class
from engine.channels import Channel
from engine.delivery import HealthChecked, health_checked
from engine.errors import ConfigurationError
from engine.metrics import MetricsBuffer, MetricsDelta
from engine.routing import BreakerKey, HealthBoard, HealthSnapshot, RoutingTable, Tally
from engine.routing.checks import ProviderChecker
from engine.routing.volumes import VolumeKeeper
from engine.runtime import RuntimeConfig, driver_env
from engine.storage.volume_store import PostgresVolumeStore

log = logging.getLogger(__name__)

#: How often the background loop looks for due checks and flushes.
TICK_S = 0.5


class ProviderHealth:
    """The board, its checks and its persisted volumes; the background loop starts with the first call
    (an async actor's event loop runs only then)."""

    def __init__(self, table: RoutingTable, config: RuntimeConfig, publish: Callable[[MetricsDelta], None]) -> None:
        s = config.settings
        self.board = HealthBoard(table.breaker_policy)
        self.metrics = MetricsBuffer()
        self.publish = publish
        self._gauges: dict[tuple[str, str], float] = {}
        self.store = PostgresVolumeStore(config.database_url)
        self.volumes = VolumeKeeper(self.board, self.store)
        self.flush_s = s.volume_flush_s
        self.wiring = DriverWiring(config.database_url)
        self.checker = ProviderChecker(self.board, _checked_drivers(config, self.wiring), s.health_check_s)
        self._task: asyncio.Task[None] | None = None

    def sync(self, tallies: list[Tally]) -> HealthSnapshot:
        """Count a sender's tallies; the snapshot it routes from until its next sync."""
        self._start()
        self.board.apply(tallies)
        return self._snapshot()

    def lease_probes(self, key: BreakerKey, wanted: int) -> int:
        granted = self.board.lease_probes(key, wanted)
        self._snapshot()
        return granted

    def snapshot(self) -> HealthSnapshot:
        self._start()
        return self._snapshot()

    def configure(self, table: RoutingTable) -> None:
        """The routing table was reloaded: its breaker thresholds (and check intervals) apply from now on."""
        self.board.configure(table.breaker_policy)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def health(self) -> dict[str, object]:
        self._start()
        return {
            "running": self.running,
            "version": self.board.version,
            "checked": sorted(f"{p}/{c.value}" for c, p in self.checker.targets),
            "volumes_loaded": self.volumes.loaded,
        }

    async def aclose(self) -> None:
        """Persist the last counts and release connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.volumes.flush()
        await self.checker.aclose()
        await self.wiring.aclose()
        await self.store.aclose()

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._background())

    async def _background(self) -> None:
        await self.volumes.load()
        flushed = time.monotonic()
        while True:
            try:
                if await self.checker.run_due():
                    self._snapshot()  # gauges follow a change at once
                if time.monotonic() - flushed >= self.flush_s:
                    flushed = time.monotonic()
                    await self.volumes.flush()
            except Exception:  # the loop must outlive any one failure
                log.exception("provider health background step failed")
            await asyncio.sleep(TICK_S)

    def _snapshot(self) -> HealthSnapshot:
        snap = self.board.snapshot()
        gauges = snap.circuit_gauges()
        if gauges != self._gauges:
            for (provider, channel), value in gauges.items():
                self.metrics.set("provider_circuit_open", value, provider=provider, channel=channel)
            self._gauges = gauges
            self.publish(self.metrics.drain())
        return snap


def _checked_drivers(config: RuntimeConfig, wiring: DriverWiring) -> dict[tuple[Channel, str], HealthChecked]:
    """The platform's drivers whose providers have a health check (console and sink have none)."""
    s = config.settings
    env = driver_env(s, config.env)
    out: dict[tuple[Channel, str], HealthChecked] = {}
    for channel in Channel:
        for provider in s.providers(channel):
            try:
                if not hasattr(driver_class(channel, provider), "check_health"):
                    continue
                checked = health_checked(wiring.factory(channel, provider, env))
            except ConfigurationError as err:
                log.warning("no health check for %s/%s: %s", provider, channel.value, err)
                continue
            if checked is not None:
                out[(channel, provider)] = checked
    return out
