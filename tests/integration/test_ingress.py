"""The ingress queue on the real RabbitMQ and PostgreSQL, without Ray: the example producer publishes, the
consumer checks signatures and fields like the API, stores once per key and dead-letters the rest with
their errors (counted)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from engine.batch import BatchIntake
from engine.batch.ingress import (
    ConsumerOptions,
    IngressConsumer,
    IngressKeys,
    IngressProcessor,
    sign,
)
from engine.credentials import CredentialBox
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.models import Tenant
from engine.storage.batch_store import BatchStore
from engine.storage.repository import Repository
from engine.storage.rotating_secrets import INGRESS_KEYS, RotatingSecretStore
from engine.templating import TemplateCatalog
from examples.ingress_producer import publish, signature

pytestmark = pytest.mark.integration


def otp(key: str, **extra: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login:v3",
        "locale": "en-GB",
        "to": {"email": "ada@example.com"},
        "variables": {"code": "384921"},
        "idempotency_key": key,
        **extra,
    }


class Running:
    def __init__(self, consumer: IngressConsumer, keys: IngressKeys, metrics: MetricsBuffer, amqp_url: str) -> None:
        self.consumer = consumer
        self.keys = keys
        self.metrics = metrics
        self.amqp_url = amqp_url

    @property
    def queue(self) -> str:
        return self.consumer.options.queue

    async def wait_processed(self, n: int, timeout_s: float = 20) -> None:
        async with asyncio.timeout(timeout_s):
            while self.consumer.processed < n:
                await asyncio.sleep(0.05)

    async def dead_letters(self, n: int) -> list[dict[str, Any]]:
        connection = await aio_pika.connect_robust(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.consumer.options.dead_queue, durable=True)
            found: list[dict[str, Any]] = []
            async with asyncio.timeout(10):
                while len(found) < n:
                    message = await queue.get(no_ack=True, fail=False)
                    if message is None:
                        await asyncio.sleep(0.05)
                        continue
                    found.append(json.loads(message.body))
            return found


@pytest.fixture
async def ingress(repo: Repository, catalog: TemplateCatalog, amqp_url: str) -> AsyncIterator[Running]:
    metrics = MetricsBuffer()
    intake = Intake(repo, catalog, metrics=metrics, idempotency_ttl_s=3600)
    keys = IngressKeys(RotatingSecretStore(repo.pool, INGRESS_KEYS), CredentialBox("ingress-test-credentials-key"))
    prefix = f"t{uuid.uuid4().hex[:8]}."
    options = ConsumerOptions(queue=prefix + "notifications.ingress", dead_queue=prefix + "notifications.ingress.dead")
    consumer = IngressConsumer(
        amqp_url, IngressProcessor(BatchIntake(intake, BatchStore(repo.pool)), keys, metrics), options
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    async with asyncio.timeout(10):
        while not consumer.running:
            await asyncio.sleep(0.02)
    yield Running(consumer, keys, metrics, amqp_url)
    stop.set()
    await asyncio.wait_for(task, 10)
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in (options.queue, options.dead_queue):
            await channel.queue_delete(name)
    await repo.pool.execute(
        "DELETE FROM outbox WHERE message_id IN (SELECT id FROM messages WHERE batch_id IS NOT NULL)"
    )


def counters(metrics: MetricsBuffer) -> dict[tuple[str, str], float]:
    return {
        (name, dict(labels).get("reason") or dict(labels).get("outcome", "")): v
        for (name, labels), v in metrics.drain().counters.items()
        if name.startswith("ingress")
    }


async def test_signed_messages_are_accepted_once_and_bad_ones_dead_lettered(
    ingress: Running, repo: Repository, tenant: Tenant
) -> None:
    key = str((await ingress.keys.show(tenant.id))["key"])
    assert signature(key, tenant.slug, b"{}") == sign(key, tenant.slug, b"{}")  # the example signs as Herald checks
    run = uuid.uuid4().hex[:8]
    good, again = otp(f"{run}-a"), otp(f"{run}-a")
    await publish(
        ingress.amqp_url, tenant.slug, key, [good, again, otp(f"{run}-b", to={"email": "nope"})], queue=ingress.queue
    )
    await publish(ingress.amqp_url, tenant.slug, "hik_wrong", [otp(f"{run}-c")], queue=ingress.queue)
    await publish(
        ingress.amqp_url, tenant.slug, key, [otp(f"{run}-a", variables={"code": "000000"})], queue=ingress.queue
    )
    await ingress.wait_processed(5)
    stored = await repo.pool.fetch(
        "SELECT idempotency_key, status FROM messages WHERE tenant_id = $1 AND idempotency_key LIKE $2",
        tenant.id,
        f"{run}-%",
    )
    assert [(r["idempotency_key"], r["status"]) for r in stored] == [(f"{run}-a", "queued")]
    dead = await ingress.dead_letters(3)
    by_reason = {d["reason"]: d for d in dead}
    assert set(by_reason) == {"invalid", "bad_signature", "key_reused"}
    assert by_reason["invalid"]["errors"][0]["loc"] == ["body", "to", "email"]
    assert by_reason["bad_signature"]["errors"][0]["loc"] == ["headers", "x-herald-signature"]
    assert by_reason["key_reused"]["errors"][0]["loc"] == ["body", "idempotency_key"]
    assert json.loads(by_reason["invalid"]["body"]["text"])["idempotency_key"] == f"{run}-b"
    seen = counters(ingress.metrics)
    assert seen[("ingress_messages_total", "accepted")] == 2 and seen[("ingress_messages_total", "dead_lettered")] == 3
    assert seen[("ingress_dead_lettered_total", "bad_signature")] == 1


async def test_unsigned_unknown_and_unreadable_messages_are_dead_lettered(ingress: Running, tenant: Tenant) -> None:
    connection = await aio_pika.connect_robust(ingress.amqp_url)
    key = str((await ingress.keys.show(tenant.id))["key"])
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        body = b"{not json"
        cases = [
            {},  # no tenant
            {"x-herald-tenant": tenant.slug},  # no signature
            {"x-herald-tenant": "no-such-tenant", "x-herald-signature": sign(key, "no-such-tenant", body)},
            {"x-herald-tenant": tenant.slug, "x-herald-signature": sign(key, tenant.slug, body)},
        ]
        for headers in cases:
            await channel.default_exchange.publish(aio_pika.Message(body, headers=headers), routing_key=ingress.queue)
    await ingress.wait_processed(4)
    reasons = sorted(d["reason"] for d in await ingress.dead_letters(4))
    assert reasons == ["bad_signature", "no_tenant", "not_json", "unknown_tenant"]


async def test_a_rotated_key_still_verifies_for_the_overlap(ingress: Running, tenant: Tenant) -> None:
    old = str((await ingress.keys.show(tenant.id))["key"])
    shown = await ingress.keys.rotate_and_show(tenant.id, actor="test")
    assert shown["key"] != old and shown["previous_expires_at"] is not None
    run = uuid.uuid4().hex[:8]
    await publish(ingress.amqp_url, tenant.slug, old, [otp(f"{run}-old")], queue=ingress.queue)
    await publish(ingress.amqp_url, tenant.slug, str(shown["key"]), [otp(f"{run}-new")], queue=ingress.queue)
    await ingress.wait_processed(2)
    assert ingress.consumer.dead_lettered == 0
