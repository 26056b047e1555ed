"""The engine's path of a message on the real PostgreSQL, for the lifecycle tests: intake, relay, a Postgres
queue in its own namespace, the dispatcher, and a fake driver that notes when it sent what."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from drivers.base import OutboundMessage, SendResult
from drivers.fake import FakeDriver
from engine.auth import Principal
from engine.broker.pgqueue import PgQueueBroker
from engine.channels import Channel
from engine.dispatch import Dispatcher, DispatchOptions
from engine.errors import DispatchError
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.relay import Relay, RelayOptions
from engine.retries import RetryPolicy
from engine.storage.repository import Repository
from engine.templating import TemplateCatalog


def otp(email: str = "ada@example.com", **extra: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login:v3",
        "locale": "en-GB",
        "to": {"email": email},
        "variables": {"code": "384921"},
        **extra,
    }


class ClockedDriver(FakeDriver):
    """A fake driver that notes the wall-clock time of each send, by message id, and fails every send to
    an address in ``failing`` until it is taken out (other tests' leftovers never eat the failures)."""

    def __init__(self, name: str = "fake") -> None:
        super().__init__(name)
        self.sent_at: dict[str, float] = {}
        self.failing: dict[str, DispatchError] = {}

    async def send_one(self, message: OutboundMessage) -> SendResult:
        failure = self.failing.get(message.to.email or "")
        if failure is not None:
            raise failure
        result = await super().send_one(message)
        self.sent_at[message.message_id] = time.time()
        return result


class Harness:
    def __init__(
        self,
        repo: Repository,
        catalog: TemplateCatalog,
        database_url: str,
        *,
        driver: ClockedDriver | None = None,
        retry_delays_s: tuple[float, ...] = (0.05, 0.05, 0.05),
    ) -> None:
        self.repo = repo
        self.metrics = MetricsBuffer()
        self.intake = Intake(repo, catalog, metrics=self.metrics, idempotency_ttl_s=3600)
        self.broker = PgQueueBroker(repo.pool, queue_prefix=f"l{uuid.uuid4().hex[:8]}.", lease_s=30, poll_s=0.05)
        self.relay = Relay(repo, self.broker, RelayOptions(batch=500), listen_dsn=database_url)
        self.driver = driver or ClockedDriver()
        self.dispatcher = Dispatcher(
            repo,
            catalog,
            {Channel.EMAIL: [self.driver]},
            policy=RetryPolicy(delays_s=retry_delays_s, jitter=0.0),
            metrics=self.metrics,
            options=DispatchOptions(lease_s=30),
        )

    async def submit(self, principal: Principal, body: dict[str, Any]) -> str:
        accepted = await self.intake.submit(principal, body, uuid.uuid4().hex)
        return str(accepted.body["message_id"])

    async def consume(self, wait_s: float = 0.2) -> int:
        """Send what the broker hands out now; returns how many were claimed."""
        deliveries = await self.broker.get(100, wait_s)
        ids = [i for d in deliveries for i in d.envelope.message_ids]
        claimed = (await self.dispatcher.process(ids)).claimed if ids else 0
        for d in deliveries:
            await d.ack()
        return claimed

    async def pump(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            await self.relay.drain()
            await self.consume()

    async def status(self, tenant_id: uuid.UUID, public_id: str) -> str:
        row = await self.repo.message_view(tenant_id, uuid_of(public_id))
        assert row is not None
        return str(row["status"])

    async def events(self, tenant_id: uuid.UUID, public_id: str) -> list[dict[str, Any]]:
        row = await self.repo.message_view(tenant_id, uuid_of(public_id))
        assert row is not None
        return list(row["event_rows"])


def uuid_of(public_id: str) -> uuid.UUID:
    mid = parse_message_id(public_id)
    assert mid is not None
    return mid


async def clear_leftovers(repo: Repository) -> None:
    """Cancel what earlier tests left pending (their relays and senders are gone), so a timing test's relay
    and sender handle its own messages alone; rows scheduled an hour or more ahead stay."""
    await repo.pool.execute("DELETE FROM outbox WHERE available_at < now() + interval '1 hour'")
    await repo.pool.execute(
        """UPDATE messages SET status = 'cancelled', claimed_until = NULL
           WHERE status IN ('queued', 'scheduled', 'throttled', 'sending')
             AND coalesce(schedule_at, created_at) < now() + interval '1 hour'"""
    )


async def leave_nothing_to_send(repo: Repository, since: datetime) -> None:
    """Other tests' relays take every due outbox row of the session's database: what a test accepted and
    left unsent is cancelled, so nobody else sends it."""
    await repo.pool.execute("DELETE FROM outbox WHERE created_at >= $1", since)
    await repo.pool.execute(
        """UPDATE messages SET status = 'cancelled', claimed_until = NULL
           WHERE created_at >= $1 AND status IN ('queued', 'scheduled', 'throttled', 'sending')""",
        since,
    )
