"""How other processes read routing state from the control actor (:mod:`actors.control`, which holds the
routing table and the provider health board).

- :class:`ActorFeed` is a sender's :class:`~engine.routing.RoutingFeed`: a background task syncs tallies
  and fetches the snapshot (and a newer table, if any) every ``refresh_s``; the hot path only reads the
  local copy. A failed sync keeps the tallies for the next one and the last snapshot in use.
- :class:`ActorRoutingState` is the API's view: two concurrent actor calls per request (explain and the
  providers page are not hot paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import ray

from actors import CONTROL_ACTOR, NAMESPACE
from engine.errors import ConfigurationError, DispatchError
from engine.routing import BreakerKey, RoutingTable, RoutingView, TallyBuffer

log = logging.getLogger(__name__)


class ActorFeed:
    """A sender's routing state: at most about ``refresh_s`` old, refreshed in the background."""

    def __init__(self, control: Any, *, refresh_s: float = 1.0) -> None:
        self.control = control
        self.refresh_s = refresh_s
        self._buffer = TallyBuffer()
        self._view: RoutingView | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """First snapshot and table now (a sender routes nothing without them), then in the background."""
        table = await self.control.current.remote(None)
        snapshot = await self.control.sync.remote([])
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
            return int(await self.control.lease_probes.remote(key, wanted))
        except ray.exceptions.RayError as err:
            log.warning("probe permits unavailable (%s); not probing %s", type(err).__name__, key.provider)
            return 0

    async def refresh(self) -> None:
        tallies = self._buffer.drain()
        try:
            snapshot = await self.control.sync.remote(tallies)
            known = self._view.table.stamp if self._view else None
            table = await self.control.current.remote(known)
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
                await self.control.sync.remote(self._buffer.drain())


class ActorRoutingState:
    """What the API reads and changes (engine.routing.service.RoutingState)."""

    async def view(self) -> RoutingView:
        control = ray.get_actor(CONTROL_ACTOR, namespace=NAMESPACE)
        snapshot, table = await asyncio.gather(control.snapshot.remote(), control.current.remote(None))
        return RoutingView(table, snapshot)

    async def reload(self) -> RoutingTable:
        control = ray.get_actor(CONTROL_ACTOR, namespace=NAMESPACE)
        try:
            table: RoutingTable = await control.reload.remote()
        except ray.exceptions.RayTaskError as err:
            cause = err.cause if isinstance(err.cause, ConfigurationError) else None
            if cause is not None:
                raise cause from None
            raise
        return table


async def follow_table(use: Callable[[RoutingTable], None], *, refresh_s: float = 1.0) -> None:
    """Hand ``use`` the routing table now and each new revision after (the ingress's price estimates)."""
    control = ray.get_actor(CONTROL_ACTOR, namespace=NAMESPACE)
    known: tuple[int, str] | None = None
    while True:
        try:
            table = await control.current.remote(known)
        except ray.exceptions.RayError as err:
            log.warning("routing table not refreshed (%s); estimating from the last one", type(err).__name__)
        else:
            if table is not None:
                use(table)
                known = table.stamp
        await asyncio.sleep(refresh_s)
