"""Background upkeep of delivery feedback: orphans matched again, raw payloads dropped after their
retention, and the open/click rate gauges refreshed from the rollups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from engine.feedback.analytics import Analytics
from engine.feedback.ingest import FeedbackIngest
from engine.metrics import MetricsBuffer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MaintenanceOptions:
    retention_days: int = 30  #: HERALD_PROVIDER_EVENT_RETENTION_DAYS
    rate_window_days: int = 7  #: HERALD_ANALYTICS_RATE_WINDOW_DAYS
    adopt_every_s: float = 10.0
    rates_every_s: float = 30.0
    purge_every_s: float = 3600.0


class FeedbackMaintenance:
    def __init__(
        self,
        ingest: FeedbackIngest,
        analytics: Analytics,
        metrics: MetricsBuffer,
        options: MaintenanceOptions,
        *,
        on_metrics: Callable[[], None] | None = None,
    ) -> None:
        self.ingest = ingest
        self.analytics = analytics
        self.metrics = metrics
        self.options = options
        self.on_metrics = on_metrics
        self._last: dict[str, float] = {}

    async def run_once(self) -> None:
        """Whatever is due now."""
        o = self.options
        await self._every("adopt", o.adopt_every_s, self._adopt)
        await self._every("rates", o.rates_every_s, self._rates)
        await self._every("purge", o.purge_every_s, self._purge)

    async def run(self, stop: asyncio.Event, *, tick_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                log.warning("feedback upkeep failed, retrying: %s", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick_s)

    async def _every(self, name: str, period_s: float, job: Callable[[], Awaitable[None]]) -> None:
        now = time.monotonic()
        if now - self._last.get(name, -period_s) < period_s:
            return
        self._last[name] = now
        await job()

    async def _adopt(self) -> None:
        adopted = await self.ingest.adopt_orphans()
        if adopted:
            log.info("%d provider events found their message after all", adopted)

    async def _rates(self) -> None:
        await self.analytics.publish_rates(self.metrics, self.options.rate_window_days)
        if self.on_metrics is not None:
            self.on_metrics()

    async def _purge(self) -> None:
        report = await self.ingest.purge(self.options.retention_days)
        if report.payloads or report.orphans:
            log.info("dropped %d raw provider payloads and %d orphans past retention", report.payloads, report.orphans)
