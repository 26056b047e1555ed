"""The consume loop of one sender: broker deliveries -> dispatcher batches -> acks.

A sender runs two lanes on one dispatcher: the main lane takes every priority (high first), and a
reserved lane takes only ``notifications.high``. While the main lane is busy with a batch of a ``low``
burst, a one-time code that arrives is taken by the reserved lane at once instead of waiting for that
batch to finish (the lanes interleave at every await: claim, send, record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from engine.broker import Broker, BrokerUnavailable
from engine.channels import Priority
from engine.dispatch import Dispatcher

log = logging.getLogger(__name__)


class SenderLoop:
    def __init__(
        self,
        broker: Broker,
        dispatcher: Dispatcher,
        *,
        max_envelopes: int = 20,
        wait_s: float = 0.5,
        on_batch: Callable[[], None] | None = None,
        high_lane: bool = True,
    ) -> None:
        self.broker = broker
        self.dispatcher = dispatcher
        self.max_envelopes = max_envelopes
        self.wait_s = wait_s
        self.on_batch = on_batch
        #: The lanes (``None``: every priority); a reserved one for high unless turned off.
        self.lanes: list[tuple[Priority, ...] | None] = [None, (Priority.HIGH,)] if high_lane else [None]
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.batches = 0
        self.sent = 0

    def stats(self) -> dict[str, int | bool]:
        return {"batches": self.batches, "sent": self.sent, "paused": not self._resumed.is_set()}

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._lane(p) for p in self.lanes))
        finally:
            self._done.set()

    async def _lane(self, priorities: tuple[Priority, ...] | None) -> None:
        while not self._stopping.is_set():
            await self._resumed.wait()
            try:
                deliveries = await self.broker.get(self.max_envelopes, self.wait_s, priorities=priorities)
            except BrokerUnavailable as err:
                log.warning("broker unavailable, retrying: %s", err)
                await asyncio.sleep(1.0)
                continue
            if self._stopping.is_set():
                for d in deliveries:
                    await d.nack(requeue=True)
                break
            if deliveries:
                await self._handle(deliveries)

    async def _handle(self, deliveries: list) -> None:  # type: ignore[type-arg]
        # What is ready now goes together, so one OTP is sent alone at once and a burst in batches.
        ids = list(dict.fromkeys(i for d in deliveries for i in d.envelope.message_ids))
        try:
            report = await self.dispatcher.process(ids)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            log.error("batch of %d failed before recording (%s); returning it to the queue", len(ids), err)
            with contextlib.suppress(BrokerUnavailable):  # unacked envelopes come back anyway
                for d in deliveries:
                    await d.nack(requeue=True)
            await asyncio.sleep(1.0)
            return
        try:
            for d in deliveries:
                await d.ack()
        except BrokerUnavailable as err:
            # The broker redelivers what was not acked; the claim makes a redelivered envelope a no-op.
            log.warning("ack failed (%s); the envelopes come back and are skipped", err)
        self.batches += 1
        self.sent += report.sent
        if self.on_batch is not None:
            self.on_batch()

    def pause(self) -> None:
        """Stop taking new batches (drain mode); the batch in hand finishes."""
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    async def stop(self, grace_s: float) -> None:
        self._stopping.set()
        self._resumed.set()
        try:
            await asyncio.wait_for(self._done.wait(), grace_s)
        except TimeoutError:
            log.warning("sender stopped with a batch in hand; its leases expire and it is sent again")
