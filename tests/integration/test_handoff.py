"""The hand-off of one-time codes, against the real PostgreSQL and each broker: the accepting process
publishes a due high-priority message itself and deletes its outbox row; the relay neither wakes for the
row nor sees it while it is held, and takes it once the hold is over when the hand-off failed."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pytest

from engine.auth import Principal
from engine.broker import Broker
from engine.broker.rabbitmq import RabbitMQBroker
from engine.channels import Priority
from engine.handoff import Handoff, HandoffOptions
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.relay import NOTIFY_CHANNEL
from engine.runtime import RuntimeConfig, open_handoff
from engine.settings import load_settings
from engine.storage.repository import Repository, take_outbox
from engine.templating import TemplateCatalog
from tests.broker.conftest import BrokerFactory
from tests.integration.lifecycle_support import otp as support_otp

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_to_send")]

FAST = HandoffOptions(delete_after_s=0.05)


def otp(n: int, **extra: Any) -> dict[str, Any]:
    return support_otp(f"handoff{n}@example.com", variables={"code": f"{n:06d}"}, **{"priority": "high", **extra})


async def outbox_of(repo: Repository, message_id: str) -> list[asyncpg.Record]:
    return await repo.pool.fetch(
        "SELECT available_at - now() AS wait FROM outbox WHERE message_id = $1", parse_message_id(message_id)
    )


async def relay_would_take(repo: Repository, message_id: str) -> bool:
    """Whether the relay's high lane would take this message's row now (taken and put back)."""
    async with repo.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            rows = await take_outbox(conn, 10_000, high_only=True)
        finally:
            await tx.rollback()
    return parse_message_id(message_id) in {r.message_id for r in rows}


async def published_ids(broker: Broker, want: int, timeout_s: float = 10.0) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    deadline = time.monotonic() + timeout_s
    while len(ids) < want and time.monotonic() < deadline:
        for delivery in await broker.get(100, 0.5, priorities=[Priority.HIGH]):
            ids.extend(delivery.envelope.message_ids)
            await delivery.ack()
    return ids


async def gone(repo: Repository, message_id: str, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while await outbox_of(repo, message_id):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_due_one_time_code_is_published_by_its_accepting_process_and_its_row_deleted(
    make: BrokerFactory, repo: Repository, catalog: TemplateCatalog, principal: Principal
) -> None:
    broker = await make()
    handoff = Handoff(repo, broker, FAST)
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600, handoff=handoff)

    accepted = [await intake.submit(principal, otp(i), f"code-{i}") for i in range(3)]
    ids = [str(a.body["message_id"]) for a in accepted]

    # stored held back: not the relay's while the hand-off publishes it
    for mid in ids:
        rows = await outbox_of(repo, mid)
        assert rows and rows[0]["wait"].total_seconds() > 4.0
        assert not await relay_would_take(repo, mid)
    assert sorted(await published_ids(broker, 3)) == sorted(parse_message_id(m) for m in ids)
    assert all([await gone(repo, mid) for mid in ids])
    assert (handoff.published, handoff.left) == (3, 0)
    await handoff.aclose()


async def test_other_messages_are_left_to_the_relay(
    make: BrokerFactory, repo: Repository, catalog: TemplateCatalog, principal: Principal
) -> None:
    broker = await make()
    handoff = Handoff(repo, broker, FAST)
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600, handoff=handoff)
    soon = "2099-01-01T00:00:00Z"
    normal = await intake.submit(principal, otp(1, priority="normal"), "normal")
    scheduled = await intake.submit(principal, otp(2, schedule_at=soon), "scheduled")

    assert (await outbox_of(repo, str(normal.body["message_id"])))[0]["wait"].total_seconds() <= 0
    assert (await outbox_of(repo, str(scheduled.body["message_id"])))[0]["wait"].total_seconds() > 3600
    assert handoff.published == 0
    await handoff.aclose()


async def test_closing_publishes_what_was_offered_and_deletes_its_rows(
    make: BrokerFactory, repo: Repository, catalog: TemplateCatalog, principal: Principal
) -> None:
    broker = await make()
    handoff = Handoff(repo, broker, HandoffOptions(delete_after_s=2.0, hold_s=5.0))
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600, handoff=handoff)
    mid = str((await intake.submit(principal, otp(1), "closing")).body["message_id"])

    await handoff.aclose()  # well before the delete was due

    assert not await outbox_of(repo, mid)
    assert await published_ids(broker, 1) == [parse_message_id(mid)]


async def test_a_code_the_hand_off_could_not_publish_is_the_relays_once_its_hold_is_over(
    repo: Repository, catalog: TemplateCatalog, principal: Principal
) -> None:
    nobody = RabbitMQBroker("amqp://guest:guest@127.0.0.1:9/", connect_timeout_s=0.5)  # nothing listens on 9
    handoff = Handoff(repo, nobody, HandoffOptions(hold_s=1.5, delete_after_s=0.05))
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600, handoff=handoff)

    mid = str((await intake.submit(principal, otp(1), "unreachable")).body["message_id"])

    deadline = time.monotonic() + 5
    while handoff.left == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert (handoff.published, handoff.left) == (0, 1)
    assert await outbox_of(repo, mid)  # kept: the outbox is the truth
    assert not await relay_would_take(repo, mid)
    await asyncio.sleep(1.6)
    assert await relay_would_take(repo, mid)
    await handoff.aclose()
    await nobody.close()


async def test_only_due_rows_wake_the_relay(
    database_url: str, repo: Repository, catalog: TemplateCatalog, principal: Principal
) -> None:
    wakes: list[str] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: wakes.append(args[-1]))
    try:
        plain = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
        held = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600, handoff=_NeverPublishes())

        await held.submit(principal, otp(1), "held")
        await plain.submit(principal, otp(2, schedule_at="2099-01-01T00:00:00Z"), "later")
        await asyncio.sleep(0.3)
        assert wakes == []
        await plain.submit(principal, otp(3), "due")
        deadline = time.monotonic() + 2
        while not wakes and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(wakes) == 1
    finally:
        await listener.close()


class _NeverPublishes(Handoff):
    """A hand-off that keeps what it is offered (the row stays held)."""

    def __init__(self) -> None:
        self.options = HandoffOptions()

    def offer(self, row: object) -> bool:  # type: ignore[override]
        return True


@pytest.mark.parametrize(
    ("variables", "on"),
    [
        ({"AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/"}, True),
        ({"AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/", "HERALD_HANDOFF": "false"}, False),
        ({}, False),  # the Postgres queue: the relay publishes everything
    ],
)
async def test_the_api_hands_off_with_rabbitmq_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch, repo: Repository, database_url: str, variables: dict[str, str], on: bool
) -> None:
    for name in ("AMQP_URL", "HERALD_HANDOFF"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    config = RuntimeConfig(load_settings(), database_url, "x" * 32)
    handoff = open_handoff(config, repo)
    assert (handoff is not None) is on
    if handoff is not None:
        assert isinstance(handoff.broker, RabbitMQBroker)
        await handoff.broker.close()
