"""This month's sends per provider account, kept across restarts: the volume price tiers of the routing
table depend on them.

The :class:`~engine.routing.health.HealthBoard` counts sends in memory; a :class:`VolumeKeeper` reads the
month's persisted counts into it when it starts, and hands what it counted since to a
:class:`VolumeStore` in one batched write per flush (never a write per message). Nothing is written
before the counts were read, so a count is never added twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from .health import HealthBoard

log = logging.getLogger(__name__)


class VolumeStore(Protocol):
    async def load(self, month: str) -> dict[tuple[str, str, str], int]:
        """``(channel, provider, owner) -> sends`` persisted for ``month`` (``YYYY-MM``).

        Raises:
            OSError, TimeoutError: the store cannot be reached.
        """
        ...

    async def add(self, deltas: Mapping[tuple[str, str, str, str], int]) -> None:
        """Add ``(month, channel, provider, owner) -> sends`` to the persisted counts, in one statement.

        Raises:
            OSError, TimeoutError: the store cannot be reached (nothing was added).
        """
        ...


class VolumeKeeper:
    def __init__(self, board: HealthBoard, store: VolumeStore) -> None:
        self.board = board
        self.store = store
        self.loaded = False

    async def load(self) -> bool:
        """Read the month's persisted counts into the board (once); False when the store did not answer."""
        if self.loaded:
            return True
        month = self.board.snapshot().month
        try:
            volumes = await self.store.load(month)
        except (OSError, TimeoutError) as err:
            log.warning("monthly provider volumes not read (%s); counting from zero until they are", err)
            return False
        self.board.seed_volumes(month, volumes)
        self.loaded = True
        return True

    async def flush(self) -> int:
        """Persist what the board counted since the last flush; how many counters were written. A failed
        write keeps the counts for the next flush."""
        if not await self.load():
            return 0
        deltas = {k: n for k, n in self.board.take_volume_deltas().items() if n}
        if not deltas:
            return 0
        try:
            await self.store.add(deltas)
        except (OSError, TimeoutError) as err:
            self.board.return_volume_deltas(deltas)
            log.warning("monthly provider volumes not saved (%s); kept for the next flush", err)
            return 0
        return len(deltas)
