"""The routing table actor, and the two ways other processes read routing state through the actors.

- :class:`RoutingTableActor` holds the table (loaded from HERALD_ROUTING_TABLE, reloadable at runtime)
  and hands the health actor new breaker thresholds on reload.
- :class:`ActorFeed` is a sender's :class:`~engine.routing.RoutingFeed`: a background task syncs tallies
  and fetches the snapshot (and a newer table, if any) every ``refresh_s``; the hot path only reads the
  local copy. A failed sync keeps the tallies for the next one and the last snapshot in use.
- :class:`ActorRoutingState` is the API's view: one pair of actor calls per request (explain and the
  providers page are not hot paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray

from actors import HEALTH_ACTOR, NAMESPACE, ROUTING_ACTOR
from engine import redaction
from engine.errors import ConfigurationError, DispatchError
from engine.routing import BreakerKey, RoutingTable, RoutingView, TableStore, TallyBuffer

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0.05, max_restarts=-1)
class RoutingTableActor:
    def __init__(self, path: str) -> None:
        redaction.install()
        self.store = TableStore(Path(path))

    def current(self, known_revision: int | None = None) -> RoutingTable | None:
        """The table, or None when the caller already has this revision."""
        table = self.store.table
        return None if known_revision == table.revision else table

    async def reload(self) -> RoutingTable:
        """Read the file again; its thresholds go to the health actor.

        Raises:
            ConfigurationError: the file is invalid (the table in use stays).
        """
        table = self.store.reload()
        health = ray.get_actor(HEALTH_ACTOR, namespace=NAMESPACE)
        await health.configure.remote(table)
        log.info("routing table %s reloaded from %s", table.label, table.source)
        return table

    def health(self) -> dict[str, object]:
        return {"running": True, "table": self.store.table.label}


class ActorFeed:
    """A sender's routing state: at most about ``refresh_s`` old, refreshed in the background."""

    def __init__(self, health: Any, tables: Any, *, refresh_s: float = 1.0) -> None:
        self.health = health
        self.tables = tables
        self.refresh_s = refresh_s
        self._buffer = TallyBuffer()
        self._view: RoutingView | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """First snapshot and table now (a sender routes nothing without them), then in the background."""
        table = await self.tables.current.remote(None)
        snapshot = await self.health.sync.remote([])
        self._view = RoutingView(table, snapshot)
        self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    def view(self) -> RoutingView:
        assert self._view is not None, "ActorFeed.start() first"
        return self._view

    def results(self, key: BreakerKey, at: float, errors: Sequence[DispatchError | None]) -> None:
        self._buffer.results(key, at, errors)

    def call(self, key: BreakerKey, latency_ms: float) -> None:
        self._buffer.call(key, latency_ms)

    async def lease_probes(self, key: BreakerKey, wanted: int) -> int:
        try:
            return int(await self.health.lease_probes.remote(key, wanted))
        except ray.exceptions.RayError as err:
            log.warning("probe permits unavailable (%s); not probing %s", type(err).__name__, key.provider)
            return 0

    async def refresh(self) -> None:
        tallies = self._buffer.drain()
        try:
            snapshot = await self.health.sync.remote(tallies)
            known = self._view.table.revision if self._view else None
            table = await self.tables.current.remote(known)
        except ray.exceptions.RayError as err:
            self._buffer.extend(tallies)
            log.warning("routing state not refreshed (%s); using the last snapshot", type(err).__name__)
            return
        current = self._view.table if self._view else table
        self._view = RoutingView(table or current, snapshot)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def aclose(self) -> None:
        """Stop refreshing and hand over what was counted since the last sync."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._buffer:
            with contextlib.suppress(ray.exceptions.RayError):
                await self.health.sync.remote(self._buffer.drain())


class ActorRoutingState:
    """What the API reads and changes (engine.routing.service.RoutingState)."""

    async def view(self) -> RoutingView:
        health = ray.get_actor(HEALTH_ACTOR, namespace=NAMESPACE)
        tables = ray.get_actor(ROUTING_ACTOR, namespace=NAMESPACE)
        snapshot, table = await asyncio.gather(health.snapshot.remote(), tables.current.remote(None))
        return RoutingView(table, snapshot)

    async def reload(self) -> RoutingTable:
        tables = ray.get_actor(ROUTING_ACTOR, namespace=NAMESPACE)
        try:
            table: RoutingTable = await tables.reload.remote()
        except ray.exceptions.RayTaskError as err:
            cause = err.cause if isinstance(err.cause, ConfigurationError) else None
            if cause is not None:
                raise cause from None
            raise
        return table


async def follow_table(use: Callable[[RoutingTable], None], *, refresh_s: float = 1.0) -> None:
    """Hand ``use`` the routing table now and each new revision after (the ingress's price estimates)."""
    tables = ray.get_actor(ROUTING_ACTOR, namespace=NAMESPACE)
    known: int | None = None
    while True:
        try:
            table = await tables.current.remote(known)
        except ray.exceptions.RayError as err:
            log.warning("routing table not refreshed (%s); estimating from the last one", type(err).__name__)
        else:
            if table is not None:
                use(table)
                known = table.revision
        await asyncio.sleep(refresh_s)
