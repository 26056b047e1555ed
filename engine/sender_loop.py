"""The consume loop of one sender: broker deliveries -> dispatcher batches -> acks.

A sender runs two lanes on one dispatcher: the main lane takes every priority (high first), and a
reserved lane takes only ``notifications.high``. While the main lane is busy with a batch of a ``low``
burst, a one-time code that arrives is taken by the reserved lane at once instead of waiting for that
batch to finish (the lanes interleave at every await: claim, send, record). The reserved lane keeps up
to ``high_concurrency`` batches in hand at once: a code that arrives while the one before it is still
being recorded (a statement that may wait on the burst's writes) is claimed and sent at once, not after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from engine.broker import Broker, BrokerUnavailable
from engine.channels import PRIORITY_ORDER, Priority
from engine.dispatch import Dispatcher

log = logging.getLogger(__name__)

#: The longest the main lane waits at once for a high-lane batch to finish, and the share of its own
#: working time it may spend waiting so.
HIGH_YIELD_MAX_S = 0.05
HIGH_YIELD_SHARE = 0.5
#: High-lane batches in hand at once, by default (each holds at most one pooled connection at a time).
HIGH_CONCURRENCY = 4


class SenderLoop:
    def __init__(
        self,
        broker: Broker,
        dispatcher: Dispatcher,
        *,
        max_envelopes: int = 20,
        max_batch: int = 100,
        wait_s: float = 0.5,
        on_batch: Callable[[], None] | None = None,
        high_lane: bool = True,
        main_lane: bool = True,
        high_concurrency: int = HIGH_CONCURRENCY,
    ) -> None:
        self.broker = broker
        self.dispatcher = dispatcher
        self.max_envelopes = max_envelopes
        #: Messages per claim/record: a burst's envelopes (up to 100 ids each) go in slices of this many.
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.on_batch = on_batch
        #: The main lane takes every priority (high first); the reserved one only high (unless turned off).
        self.main_lane = main_lane
        self.high_lane = high_lane
        if not (main_lane or high_lane):
            raise ValueError("a sender loop needs at least one lane")
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        #: Set while no high-lane batch is in hand; the main lane waits on it between messages.
        self._high_idle = asyncio.Event()
        self._high_idle.set()
        self._high_slots = asyncio.Semaphore(max(1, high_concurrency))
        self._high_in_hand: set[asyncio.Task[None]] = set()
        #: What a high-lane batch raised beyond the failures ``_handle`` deals with: it ends the loop, as
        #: it would have ended a lane that handled the batch itself.
        self._high_error: BaseException | None = None
        self._yield_budget = HIGH_YIELD_MAX_S
        self._yield_at = time.monotonic()
        self.batches = 0
        self.sent = 0

    def stats(self) -> dict[str, int | bool]:
        return {"batches": self.batches, "sent": self.sent, "paused": not self._resumed.is_set()}

    async def run(self) -> None:
        lanes = ([self._main_lane()] if self.main_lane else []) + ([self._high_lane()] if self.high_lane else [])
        try:
            await asyncio.gather(*lanes)
        finally:
            self._done.set()

    async def _main_lane(self) -> None:
        while not self._stopping.is_set():
            await self._resumed.wait()
            try:
                deliveries = await self.broker.get(self.max_envelopes, self.wait_s)
            except BrokerUnavailable as err:
                log.warning("broker unavailable, retrying: %s", err)
                await asyncio.sleep(1.0)
                continue
            if self._stopping.is_set():
                for d in deliveries:
                    await d.nack(requeue=True)
                break
            if deliveries:
                await self._handle(deliveries, self._yield_to_high)

    async def _high_lane(self) -> None:
        """The reserved lane: up to ``high_concurrency`` batches of ``notifications.high`` in hand."""
        while not self._stopping.is_set():
            await self._high_slots.acquire()
            if self._high_error is not None:
                break
            if self._stopping.is_set():
                self._high_slots.release()
                break
            await self._resumed.wait()
            try:
                deliveries = await self.broker.get(self.max_envelopes, self.wait_s, priorities=(Priority.HIGH,))
            except BrokerUnavailable as err:
                self._high_slots.release()
                log.warning("broker unavailable, retrying: %s", err)
                await asyncio.sleep(1.0)
                continue
            if self._stopping.is_set():
                self._high_slots.release()
                for d in deliveries:
                    await d.nack(requeue=True)
                break
            if not deliveries:
                self._high_slots.release()
                continue
            self._high_idle.clear()
            task = asyncio.create_task(self._handle(deliveries, None))
            self._high_in_hand.add(task)
            task.add_done_callback(self._high_done)
        if self._high_in_hand:  # its batches in hand finish before the loop ends
            await asyncio.gather(*self._high_in_hand, return_exceptions=True)
        if self._high_error is not None:
            raise self._high_error

    def _high_done(self, task: asyncio.Task[None]) -> None:
        self._high_in_hand.discard(task)
        self._high_slots.release()
        if not self._high_in_hand:
            self._high_idle.set()
        if not task.cancelled() and task.exception() is not None and self._high_error is None:
            self._high_error = task.exception()

    async def _yield_to_high(self) -> None:
        """Between the main lane's messages: let a one-time code in hand go first, CPU included (the
        main lane's rendering would otherwise compete with that code's statements for the machine),
        but for at most ``HIGH_YIELD_SHARE`` of the main lane's time, so a burst keeps draining under a
        steady stream of codes."""
        await asyncio.sleep(0)
        now = time.monotonic()
        self._yield_budget = min(HIGH_YIELD_MAX_S, self._yield_budget + (now - self._yield_at) * HIGH_YIELD_SHARE)
        self._yield_at = now
        if self._high_idle.is_set() or self._yield_budget <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._high_idle.wait(), self._yield_budget)
        waited = time.monotonic() - now
        self._yield_budget -= waited
        self._yield_at += waited  # time spent waiting earns no budget

    async def _handle(self, deliveries: list, yield_to: Callable[[], Awaitable[None]] | None) -> None:  # type: ignore[type-arg]
        # What is ready now goes together, so one OTP is sent alone at once and a burst in batches; but
        # never a high envelope in a low batch (it goes first, on its own), and a burst in slices of
        # ``max_batch``, so no claim or record statement grows with the prefetch.
        sent = 0
        try:
            for priority in PRIORITY_ORDER:
                ids = list(
                    dict.fromkeys(
                        i for d in deliveries if d.envelope.priority is priority for i in d.envelope.message_ids
                    )
                )
                for start in range(0, len(ids), self.max_batch):
                    report = await self.dispatcher.process(ids[start : start + self.max_batch], yield_to=yield_to)
                    sent += report.sent
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            # Slices already recorded are skipped when the envelopes come back (the claim finds them sent).
            log.error("batch of %d envelopes failed (%s); returning it to the queue", len(deliveries), err)
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
        self.sent += sent
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
