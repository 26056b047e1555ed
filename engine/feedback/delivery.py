"""The webhook delivery worker: queued events out to tenants' endpoints and messages' callback URLs.

Rows come from ``webhook_deliveries``, queued by the statements that record events (see the migration's
trigger), so sending never waits on a tenant's server. Per batch: one claim statement (due rows,
``SKIP LOCKED``, leased by moving their next attempt forward so a worker that dies leaves them to the
next), concurrent POSTs through :class:`~engine.feedback.callback_urls.GuardedTransport` with Standard
Webhooks headers, then one statement for every outcome, the attempt log and the endpoints' failure
clocks. 5xx, 408, 425, 429, timeouts and connection failures are retried with exponential backoff and
jitter for :attr:`DeliveryOptions.retry_for_s` (a day); any other answer is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from engine.feedback.callback_urls import GuardedTransport
from engine.feedback.signing_keys import TenantSecrets, WebhookSecrets
from engine.ids import format_message_id
from engine.metrics import MetricsBuffer
from engine.storage import webhook_sql as sql

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "herald_webhooks"
USER_AGENT = "Herald-Webhooks/1.0"
RETRY_STATUS: frozenset[int] = frozenset({408, 425, 429})
_ERROR_CHARS = 300


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    batch: int = 100
    concurrency: int = 16
    timeout_s: float = 10.0
    lease_s: float = 60.0  #: a claimed row is someone else's again after this (a worker died mid-batch)
    retry_base_s: float = 10.0  #: first retry after this, doubling each time
    retry_max_delay_s: float = 4 * 3600.0
    retry_for_s: float = 24 * 3600.0  #: no attempt is made later than this after the event was queued
    jitter: float = 0.2
    disable_after_s: float = 3 * 24 * 3600.0  #: an endpoint failing this long is disabled
    poll_s: float = 1.0
    secret_cache_s: float = 2.0
    allow_private: bool = False  #: HERALD_WEBHOOKS_ALLOW_PRIVATE: http and private addresses allowed


def next_attempt_at(
    options: DeliveryOptions, attempts: int, created_at: datetime, now: datetime, *, rng: random.Random | None = None
) -> datetime | None:
    """When to try again after ``attempts`` failed tries, or ``None`` once that would be past the retry window."""
    base = min(options.retry_base_s * 2 ** max(attempts - 1, 0), options.retry_max_delay_s)
    spread = (rng or random).uniform(-options.jitter, options.jitter)
    at = now + timedelta(seconds=base * (1 + spread))
    return at if at <= created_at + timedelta(seconds=options.retry_for_s) else None


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    tenant_id: uuid.UUID
    endpoint_id: uuid.UUID | None
    url: str
    webhook_id: str
    attempts: int
    created_at: datetime
    body: bytes | None  #: ``None``: the event it was made from is gone
    cancelled: bool  #: its endpoint was disabled or deleted since


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery: Claimed
    status: str  #: delivered | pending (retry) | failed | cancelled
    ok: bool
    duration_ms: int = 0
    status_code: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None


def event_body(row: asyncpg.Record | dict[str, Any]) -> bytes | None:
    """The JSON body of a claimed delivery: its own payload, or one made from its event row (the same
    bytes on every retry)."""
    payload = row["payload"]
    if payload is None:
        if row["occurred_at"] is None:
            return None
        data: dict[str, Any] = {
            "id": row["webhook_id"],
            "tenant": row["slug"],
            "occurred_at": row["occurred_at"].isoformat(),
            "recorded_at": row["recorded_at"].isoformat(),
            "details": row["meta"] or {},
        }
        if row["message_id"] is not None:
            data["message_id"] = format_message_id(row["message_id"])
        if row["channel"] is not None:
            data["channel"] = row["channel"]
            data["template"] = f"{row['template_id']}:v{row['template_version']}"
        payload = {"type": row["event_type"], "timestamp": row["occurred_at"].isoformat(), "data": data}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()


def _claimed(row: asyncpg.Record) -> Claimed:
    return Claimed(
        id=row["id"],
        tenant_id=row["tenant_id"],
        endpoint_id=row["endpoint_id"],
        url=row["url"],
        webhook_id=row["webhook_id"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        body=event_body(row),
        cancelled=row["endpoint_id"] is not None and not row["endpoint_enabled"],
    )


def guarded_client(options: DeliveryOptions) -> httpx.AsyncClient:
    """The HTTP client deliveries go through: no redirects followed, no proxy from the environment, and
    connections only to public addresses (checked when connecting) unless ``allow_private``."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private=options.allow_private),
        timeout=httpx.Timeout(options.timeout_s),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


class WebhookDeliveryWorker:
    """Claims due deliveries in batches and delivers them; any number of workers can share the queue."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        secrets: WebhookSecrets,
        *,
        options: DeliveryOptions | None = None,
        client: httpx.AsyncClient | None = None,
        metrics: MetricsBuffer | None = None,
        clock: Callable[[], datetime] = _utcnow,
        listen_dsn: str | None = None,
    ) -> None:
        self.pool = pool
        self.secrets = secrets
        self.options = options or DeliveryOptions()
        self.client = client or guarded_client(self.options)
        self.metrics = metrics
        self.clock = clock
        self.listen_dsn = listen_dsn
        self.delivered = 0
        self._signers: dict[uuid.UUID, tuple[float, TenantSecrets]] = {}
        self._wake = asyncio.Event()

    async def run_once(self) -> int:
        """Deliver one batch of due rows; returns how many were handled."""
        rows = await self.pool.fetch(sql.CLAIM_DELIVERIES, self.options.batch, self.options.lease_s)
        if not rows:
            return 0
        claimed = [_claimed(r) for r in rows]
        gate = asyncio.Semaphore(self.options.concurrency)

        async def one(item: Claimed) -> Outcome:
            async with gate:
                return await self._deliver(item)

        outcomes = await asyncio.gather(*(one(c) for c in claimed))
        disabled = await self._record(outcomes)
        if disabled:
            log.warning("disabled %d webhook endpoints that kept failing", len(disabled))
        return len(outcomes)

    async def drain(self) -> int:
        """Deliver batches until nothing is due."""
        total = 0
        while True:
            n = await self.run_once()
            total += n
            if n < self.options.batch:
                return total

    async def _signer_secrets(self, tenant_id: uuid.UUID) -> TenantSecrets:
        now = time.monotonic()
        cached = self._signers.get(tenant_id)
        if cached is not None and now - cached[0] < self.options.secret_cache_s:
            return cached[1]
        secrets = await self.secrets.get(tenant_id)
        self._signers[tenant_id] = (now, secrets)
        return secrets

    async def _deliver(self, item: Claimed) -> Outcome:
        if item.cancelled:
            return Outcome(item, "cancelled", ok=False, error="the endpoint is disabled")
        if item.body is None:
            return Outcome(item, "cancelled", ok=False, error="the event no longer exists")
        signer = (await self._signer_secrets(item.tenant_id)).signer(self.clock())
        headers = {"content-type": "application/json", **signer.headers(item.webhook_id, item.body)}
        started = time.perf_counter()
        try:
            response = await self.client.post(item.url, content=item.body, headers=headers)
        except httpx.HTTPError as err:
            return self._retry(item, started, None, f"{type(err).__name__}: {err}"[:_ERROR_CHARS])
        code = response.status_code
        if 200 <= code < 300:
            return Outcome(item, "delivered", ok=True, duration_ms=_ms(started), status_code=code)
        if code >= 500 or code in RETRY_STATUS:
            return self._retry(item, started, code, f"HTTP {code}")
        return Outcome(item, "failed", ok=False, duration_ms=_ms(started), status_code=code, error=f"HTTP {code}")

    def _retry(self, item: Claimed, started: float, code: int | None, error: str) -> Outcome:
        at = next_attempt_at(self.options, item.attempts, item.created_at, self.clock())
        status = "pending" if at is not None else "failed"
        return Outcome(
            item, status, ok=False, duration_ms=_ms(started), status_code=code, error=error, next_attempt_at=at
        )

    async def _record(self, outcomes: Sequence[Outcome]) -> list[uuid.UUID]:
        o = outcomes
        row = await self.pool.fetchrow(
            sql.RECORD_DELIVERIES,
            [x.delivery.id for x in o],
            [x.status for x in o],
            [x.status_code for x in o],
            [x.error for x in o],
            [x.duration_ms for x in o],
            [x.next_attempt_at for x in o],
            [x.delivery.endpoint_id for x in o],
            [x.delivery.tenant_id for x in o],
            [x.delivery.attempts for x in o],
            [x.ok for x in o],
            self.options.disable_after_s,
        )
        self.delivered += sum(x.status == "delivered" for x in o)
        if self.metrics is not None:
            for x in o:
                self.metrics.inc("webhook_deliveries_total", outcome="retry" if x.status == "pending" else x.status)
        return list(row["disabled"]) if row else []

    # -- loop ----------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set: woken by NOTIFY when rows are queued, polling otherwise."""
        listener = await self._listen()
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    busy = await self.run_once()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                    log.warning("webhook delivery pass failed, retrying: %s", err)
                    busy = 0
                if busy >= self.options.batch:
                    continue
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
                try:
                    await asyncio.wait(waiters, timeout=self.options.poll_s, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
        finally:
            if listener is not None:
                with contextlib.suppress(OSError, asyncpg.PostgresError):
                    await listener.close()

    async def _listen(self) -> asyncpg.Connection | None:
        if not self.listen_dsn:
            return None
        try:
            conn = await asyncpg.connect(self.listen_dsn)
        except (OSError, asyncpg.PostgresError) as err:
            log.warning("LISTEN unavailable, polling only: %s", err)
            return None
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
        return conn

    async def aclose(self) -> None:
        await self.client.aclose()


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
