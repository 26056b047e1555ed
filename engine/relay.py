"""The outbox relay: publishes due outbox rows to the broker, and returns dead senders' leases.

Rows are deleted in the same transaction that waits for the broker's confirms, so a row is gone only
once its envelope is durably queued: nothing accepted is lost when the broker is down, and a crash
between confirm and commit only publishes twice (the sender's claim makes that harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from engine.broker import Broker, BrokerUnavailable, Envelope
from engine.channels import PRIORITY_ORDER, Priority, priority_queue
from engine.storage.repository import OutboxRow, Repository, take_outbox
from engine.storage.table_stats import analyze_stale

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "herald_outbox"


@dataclass(frozen=True, slots=True)
class RelayOptions:
    batch: int = 1000
    envelope_max_ids: int = 100
    poll_s: float = 0.5
    reclaim_every_s: float = 2.0
    #: How often the hot tables' statistics are checked (engine.storage.table_stats), inside bursts too.
    stats_every_s: float = 0.5
    broker_retry_s: float = 1.0
    #: Normal and low rows wait in the outbox while their queue holds this many ready envelopes (0: never).
    backlog_cap: int = 50
    #: How soon the relay looks again while the cap holds rows back.
    backlog_recheck_s: float = 0.1


def build_envelopes(rows: Sequence[OutboxRow], max_ids: int) -> dict[str, list[Envelope]]:
    """Group rows by queue (and tenant, so headers can name it) into envelopes of at most ``max_ids``."""
    grouped: dict[tuple[str, int, uuid.UUID], list[uuid.UUID]] = defaultdict(list)
    for row in rows:
        grouped[(row.queue, row.priority, row.tenant_id)].append(row.message_id)
    out: dict[str, list[Envelope]] = defaultdict(list)
    for (queue, rank, tenant_id), ids in grouped.items():
        priority = PRIORITY_ORDER[rank] if 0 <= rank < len(PRIORITY_ORDER) else Priority.NORMAL
        for start in range(0, len(ids), max_ids):
            out[queue].append(Envelope(priority, tuple(ids[start : start + max_ids]), tenant=tenant_id.hex))
    return out


class BacklogGate:
    """Keeps a burst in the outbox rather than in the broker: normal and low rows are taken only while their
    queue holds fewer than ``cap`` ready envelopes, so a campaign moves into the broker as fast as the
    senders take it, not all at once (100,000 rows published within two seconds took both cores and held
    one-time codes back for as long). High-priority rows are never held.

    The count kept here is the last one read plus the envelopes published since; the broker is asked again
    only once that reaches the cap, and at most every ``recheck_s``.
    """

    QUEUES = (priority_queue(Priority.NORMAL), priority_queue(Priority.LOW))

    def __init__(self, cap: int, recheck_s: float) -> None:
        self.cap = cap
        self.recheck_s = recheck_s
        self.ready = dict.fromkeys(self.QUEUES, 0)
        self._read_at = -recheck_s

    @property
    def holding(self) -> bool:
        return self.cap > 0 and any(n >= self.cap for n in self.ready.values())

    async def open(self, broker: Broker) -> tuple[bool, bool]:
        """Whether normal and low rows may be taken now.

        Raises:
            BrokerUnavailable: the broker could not say how much it holds.
        """
        if self.cap <= 0:
            return True, True
        if self.holding and time.monotonic() - self._read_at >= self.recheck_s:
            self.ready.update(await broker.ready(self.QUEUES))
            self._read_at = time.monotonic()
        normal, low = (self.ready[q] < self.cap for q in self.QUEUES)
        return normal, low

    def published(self, queue: str, envelopes: int) -> None:
        if queue in self.ready:
            self.ready[queue] += envelopes


class Relay:
    def __init__(self, repo: Repository, broker: Broker, options: RelayOptions, *, listen_dsn: str) -> None:
        self.repo = repo
        self.listen_dsn = listen_dsn
        self.broker = broker
        self.options = options
        self.published = 0
        #: Envelopes published per queue since start (the queues' inflow, for the queues view).
        self.published_by_queue: Counter[str] = Counter()
        self.healthy = False
        self._wake = asyncio.Event()
        self._wake_high = asyncio.Event()
        self._analyzing: asyncio.Task[list[str]] | None = None
        self._stats_at = 0.0
        self.gate = BacklogGate(options.backlog_cap, options.backlog_recheck_s)

    async def run_once(self, *, high_only: bool = False) -> int:
        """Publish one batch of due rows (or of due high-priority rows); returns how many were published.

        Raises:
            BrokerUnavailable: nothing of this batch was published; its rows stay in the outbox.
        """
        normal, low = (False, False) if high_only else await self.gate.open(self.broker)
        async with self.repo.pool.acquire() as conn, conn.transaction():
            rows = await take_outbox(conn, self.options.batch, high_only=high_only, normal=normal, low=low)
            if not rows:
                return 0
            for queue, envelopes in build_envelopes(rows, self.options.envelope_max_ids).items():
                await self.broker.publish(queue, envelopes)
                self.published_by_queue[queue] += len(envelopes)
                self.gate.published(queue, len(envelopes))
        self.published += len(rows)
        return len(rows)

    async def drain(self, *, high_only: bool = False) -> int:
        total = 0
        while True:
            if not high_only:
                self._keep_stats()
            n = await self.run_once(high_only=high_only)
            total += n
            if n < self.options.batch:
                return total

    async def run(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        # The high lane publishes one-time codes while the main pass is inside a burst's 1,000-row batch
        # (rows are taken with SKIP LOCKED, so the lanes never take or wait on each other's rows).
        high = asyncio.create_task(self._run_high(stop))
        try:
            await self._run_main(stop)
        finally:
            await high
            if self._analyzing is not None:
                await asyncio.gather(self._analyzing, return_exceptions=True)
            if listener is not None:
                await listener.close()

    async def _run_high(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake_high.clear()
            try:
                await self.drain(high_only=True)
            except BrokerUnavailable as err:
                log.warning("broker unavailable, high-priority outbox rows kept: %s", err)
                await _wait(stop, self.options.broker_retry_s)
                continue
            except (OSError, asyncpg.PostgresError) as err:
                log.warning("relay high-lane pass failed, retrying: %s", err)
                await _wait(stop, self.options.broker_retry_s)
                continue
            await _wait_any(stop, self._wake_high, self.options.poll_s)

    async def _run_main(self, stop: asyncio.Event) -> None:
        last_reclaim = 0.0
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.drain()
                self.healthy = True
            except BrokerUnavailable as err:
                self.healthy = False
                log.warning("broker unavailable, outbox rows kept: %s", err)
                await _wait(stop, self.options.broker_retry_s)
                continue
            except (OSError, asyncpg.PostgresError) as err:
                log.warning("relay pass failed, retrying: %s", err)
                await _wait(stop, self.options.broker_retry_s)
                continue
            if time.monotonic() - last_reclaim >= self.options.reclaim_every_s:
                last_reclaim = time.monotonic()
                reclaimed = await self.repo.reclaim_expired_leases()
                if reclaimed:
                    log.warning("returned %d expired send leases to the queue", reclaimed)
                    continue
            held = self.gate.holding  # rows may be waiting for the broker's queue to go down
            await _wait_any(stop, self._wake, self.options.backlog_recheck_s if held else self.options.poll_s)

    def _keep_stats(self) -> None:
        """Every ``stats_every_s``, inside a burst's passes too: analyze the hot tables the burst made
        stale (engine.storage.table_stats), beside the passes, as an ANALYZE of a big table takes a while
        and must not hold up publishing."""
        if time.monotonic() - self._stats_at < self.options.stats_every_s or not (
            self._analyzing is None or self._analyzing.done()
        ):
            return
        self._stats_at = time.monotonic()
        self._analyzing = asyncio.create_task(analyze_stale(self.repo.pool))
        self._analyzing.add_done_callback(_log_failure)

    def _wake_all(self) -> None:
        self._wake.set()
        self._wake_high.set()

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            conn = await asyncpg.connect(self.listen_dsn)
        except (OSError, asyncpg.PostgresError) as err:
            log.warning("LISTEN unavailable, polling only: %s", err)
            return None
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake_all())
        return conn


def _log_failure(task: asyncio.Task[list[str]]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("analyzing the hot tables failed: %s", task.exception())


async def _wait(stop: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout_s)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout_s: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
