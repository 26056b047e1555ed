"""Hand-off: the process that accepted a one-time code publishes it itself, straight after the commit.

Through the relay, every accepted message costs a notification, a wake-up and a pass of its own
(``BEGIN``, ``DELETE ... RETURNING``, publish, ``COMMIT``) at the rates single accepts arrive, and the
notification serializes the accepts' commits. Here, a due high-priority message's outbox row is written
``hold_s`` in the future instead, which the relay's wake-up ignores; once the accept has committed, this
process publishes the envelope and later deletes the rows it published, many at a time.

The outbox stays the truth: a row whose hand-off did not happen (the broker down, the process gone) is
due after ``hold_s`` and the relay publishes it then. A row published here and not yet deleted when that
time comes is published twice, which the sender's claim makes harmless, as for a relay that dies
between confirm and commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncpg

from engine.broker import Broker, BrokerUnavailable
from engine.relay import build_envelopes
from engine.storage.repository import OutboxRow, Repository

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HandoffOptions:
    #: How long a handed-off row waits before the relay takes it: far beyond a publish's confirm, and
    #: more than the outbox trigger's one-second wake-up margin (migration 0015).
    hold_s: float = 5.0
    #: Published rows are deleted once this old, or once this many wait (one statement for many).
    delete_after_s: float = 0.2
    delete_at: int = 500
    #: Rows offered beyond this many waiting are left to the relay (the broker is slow or down).
    max_pending: int = 10_000
    envelope_max_ids: int = 100

    def __post_init__(self) -> None:
        if self.hold_s < 2 * self.delete_after_s or self.hold_s <= 1.0:
            raise ValueError("hold_s must exceed one second and twice delete_after_s")


class Handoff:
    """Publishes offered outbox rows in the background, one publish per queue for what has gathered."""

    def __init__(self, repo: Repository, broker: Broker, options: HandoffOptions | None = None) -> None:
        self.repo = repo
        self.broker = broker
        self.options = options or HandoffOptions()
        self.published = 0  #: rows published here
        self.left = 0  #: rows left to the relay (publish failed, or too many waiting)
        self._pending: list[tuple[float, OutboxRow]] = []  #: (offered at, row)
        self._to_delete: list[int] = []
        self._delete_due = 0.0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def hold_s(self) -> float:
        return self.options.hold_s

    def offer(self, row: OutboxRow) -> bool:
        """Publish ``row`` soon (it must have been stored with ``hold_s``); False when it is left to the
        relay instead. Never waits."""
        if self._closing or len(self._pending) >= self.options.max_pending:
            self.left += 1
            return False
        self._pending.append((time.monotonic(), row))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._task.add_done_callback(self._stopped)
        self._wake.set()
        return True

    async def aclose(self) -> None:
        """Publish what was offered and delete what was published, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    def _stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # what it held is due at the relay in hold_s; the next offer starts a new task
            log.error("hand-off stopped", exc_info=task.exception())
            self.left += len(self._pending)
            self._pending, self._to_delete = [], []
        self._task = None

    async def _run(self) -> None:
        while True:
            if self._pending:
                batch, self._pending = self._pending, []
                await self._publish(batch)
                continue
            due = bool(self._to_delete) and (
                self._closing or len(self._to_delete) >= self.options.delete_at or time.monotonic() >= self._delete_due
            )
            if due:
                await self._delete()
                continue
            if self._closing:
                return
            self._wake.clear()
            timeout = max(0.0, self._delete_due - time.monotonic()) if self._to_delete else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _publish(self, offered: list[tuple[float, OutboxRow]]) -> None:
        # A row offered half its hold ago (the broker was slow or down) is the relay's soon: left to it.
        fresh_since = time.monotonic() - self.options.hold_s / 2
        rows = [row for at, row in offered if at >= fresh_since]
        self.left += len(offered) - len(rows)
        done: list[int] = []
        for queue, envelopes in build_envelopes(rows, self.options.envelope_max_ids).items():
            try:
                await self.broker.publish(queue, envelopes)
            except (BrokerUnavailable, OSError) as err:
                log.warning("hand-off to %s failed, the relay publishes its rows: %s", queue, err)
                continue
            done.extend(r.id for r in rows if r.queue == queue)
        self.published += len(done)
        self.left += len(rows) - len(done)
        if done and not self._to_delete:
            self._delete_due = time.monotonic() + self.options.delete_after_s
        self._to_delete.extend(done)

    async def _delete(self) -> None:
        ids, self._to_delete = self._to_delete, []
        try:
            await self.repo.forget_published(ids)
        except (OSError, asyncpg.PostgresError) as err:  # the relay publishes them again: harmless
            log.warning("deleting %d handed-off outbox rows failed: %s", len(ids), err)
