"""Events out, against the real PostgreSQL and a local receiver on 127.0.0.1: every event row queued in
the statement that writes it, Standard Webhooks signatures checked with the standardwebhooks package
(old and new secret around a rotation), retries after 500, endpoint filters, auto-disabling, replay."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from drivers.email.sendgrid_webhooks import parse_events
from drivers.fake import FakeDriver
from engine.auth import Principal
from engine.channels import Channel
from engine.credentials import CredentialBox
from engine.dispatch import Dispatcher, DispatchOptions
from engine.feedback.delivery import DeliveryOptions, WebhookDeliveryWorker
from engine.feedback.endpoints import WebhookEndpoints
from engine.feedback.ingest import FeedbackIngest
from engine.feedback.schemas import DeliveryOut
from engine.feedback.signing_keys import WebhookSecrets
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.models import Tenant
from engine.problems import ApiProblem
from engine.retries import RetryPolicy
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog
from tests.conftest import fresh_database
from tests.integration.feedback_support import body, sendgrid_event, sent_messages

pytestmark = pytest.mark.integration


@dataclass
class Receiver:
    """A tenant's webhook endpoint: records what arrives, answers with the scripted status codes."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    script: list[int] = field(default_factory=list)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.received]

    def verify_all(self, secret: str) -> None:
        hook = Webhook(secret)
        for headers, raw in self.received:
            hook.verify(raw, headers)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def handle(request: web.Request) -> web.Response:
        rec.received.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        return web.Response(status=rec.script.pop(0) if rec.script else 200)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hooks"
    yield rec
    await runner.cleanup()


@pytest.fixture(scope="module")
def webhook_db(pg_server_url: str) -> Iterator[str]:
    """A database of its own: the worker delivers every due row it finds."""
    yield from fresh_database(pg_server_url)


@pytest.fixture
async def repo(webhook_db: str) -> AsyncIterator[Repository]:
    pool = await create_pool(webhook_db, min_size=1, max_size=6)
    yield Repository(pool)
    await pool.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Parts:
    repo: Repository
    endpoints: WebhookEndpoints
    secrets: WebhookSecrets
    worker: WebhookDeliveryWorker
    ingest: FeedbackIngest
    clock: Clock


@pytest.fixture
async def parts(repo: Repository) -> AsyncIterator[Parts]:
    clock = Clock()
    secrets = WebhookSecrets(repo.pool, CredentialBox("test-credentials-key"), clock=clock)
    options = DeliveryOptions(allow_private=True, retry_base_s=0.05, jitter=0.0, secret_cache_s=0.0)
    worker = WebhookDeliveryWorker(repo.pool, secrets, options=options, clock=clock)
    yield Parts(
        repo, WebhookEndpoints(repo.pool, allow_private=True), secrets, worker, FeedbackIngest(repo.pool), clock
    )
    await worker.aclose()


@pytest.fixture
async def tenant(repo: Repository) -> Tenant:
    return await repo.ensure_tenant(f"t_{uuid.uuid4().hex[:12]}")


async def test_provider_events_reach_endpoints_and_the_callback_url_signed(parts, tenant, receiver) -> None:
    endpoint = await parts.endpoints.create(tenant, {"url": receiver.url, "event_types": ["NotificationDelivered"]})
    await parts.endpoints.create(tenant, {"url": receiver.url + "/bounces", "event_types": ["NotificationBounced"]})
    (msg,) = await sent_messages(parts.repo.pool, tenant, 1, callback_url=receiver.url + "/callback")
    await parts.ingest.ingest("sendgrid", Channel.EMAIL, parse_events(body([sendgrid_event(msg, "delivered")])))
    queued = await parts.repo.pool.fetch(
        "SELECT endpoint_id, event_type FROM webhook_deliveries WHERE tenant_id = $1", tenant.id
    )
    assert sorted((r["endpoint_id"] is None, r["event_type"]) for r in queued) == [
        (False, "NotificationDelivered"),
        (True, "NotificationDelivered"),
    ]
    assert await parts.worker.run_once() == 2
    secret = (await parts.secrets.get(tenant.id)).current
    assert secret.startswith("whsec_")
    receiver.verify_all(secret)
    payloads = receiver.payloads()
    assert {p["type"] for p in payloads} == {"NotificationDelivered"}
    assert {p["data"]["message_id"] for p in payloads} == {msg.public_id}
    assert payloads[0]["data"]["details"]["status"] == "delivered"
    ids = {h["webhook-id"] for h, _ in receiver.received}
    assert len(ids) == 1  # one event: the same id at every target
    log = await parts.endpoints.deliveries(tenant, endpoint.as_dict()["id"])
    assert [(e.status, [a.status_code for a in e.attempt_log]) for e in log] == [("delivered", [200])]


async def test_a_500_is_retried_with_the_same_id_until_it_is_taken(parts, tenant, receiver) -> None:
    endpoint = await parts.endpoints.create(tenant, {"url": receiver.url})
    receiver.script = [500, 503, 200]
    queued = await parts.endpoints.send_test(tenant, endpoint.as_dict()["id"])
    log: list[Any] = []
    for _ in range(40):
        await parts.worker.run_once()
        log = await parts.endpoints.deliveries(tenant, endpoint.as_dict()["id"])
        if log and log[0].status != "pending":
            break
        await asyncio.sleep(0.06)
    assert [a.status_code for a in log[0].attempt_log] == [500, 503, 200]
    DeliveryOut.model_validate(log[0].as_dict())
    assert log[0].status == "delivered" and log[0].attempts == 3
    assert {h["webhook-id"] for h, _ in receiver.received} == {queued["webhook_id"]}
    assert len({b for _, b in receiver.received}) == 1  # the same body every time
    receiver.verify_all((await parts.secrets.get(tenant.id)).current)


async def test_both_secrets_sign_for_a_day_after_a_rotation(parts, tenant, receiver) -> None:
    endpoint = await parts.endpoints.create(tenant, {"url": receiver.url})
    public_id = endpoint.as_dict()["id"]
    old = (await parts.secrets.get(tenant.id)).current
    await parts.endpoints.send_test(tenant, public_id)
    await parts.worker.run_once()
    rotated = await parts.secrets.rotate(tenant.id, actor=tenant.slug)
    new = rotated.current
    assert new != old and rotated.view(parts.clock())["previous_expires_at"] is not None
    await parts.endpoints.send_test(tenant, public_id)
    await parts.worker.run_once()
    parts.clock.now += timedelta(hours=25)
    await parts.endpoints.send_test(tenant, public_id)
    await parts.worker.run_once()
    before, during, after = receiver.received
    Webhook(old).verify(before[1], before[0])
    Webhook(old).verify(during[1], during[0])
    Webhook(new).verify(during[1], during[0])
    Webhook(new).verify(after[1], after[0])
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after[1], after[0])
    assert len(during[0]["webhook-signature"].split(" ")) == 2
    assert rotated.view(parts.clock())["previous_expires_at"] is None


async def test_an_endpoint_failing_for_three_days_is_disabled_and_others_are_told(parts, tenant, receiver) -> None:
    failing = await parts.endpoints.create(tenant, {"url": receiver.url + "/down"})
    healthy = await parts.endpoints.create(tenant, {"url": receiver.url + "/up"})
    await parts.repo.pool.execute(
        "UPDATE webhook_endpoints SET failing_since = now() - interval '3 days 1 minute' WHERE id = $1", failing.id
    )
    receiver.script = [500]
    await parts.endpoints.send_test(tenant, failing.as_dict()["id"])
    await parts.worker.run_once()
    now_failing = await parts.endpoints.get(tenant, failing.as_dict()["id"])
    assert not now_failing.enabled and now_failing.disabled_at is not None
    await parts.worker.run_once()
    notice = [p for p in receiver.payloads() if p["type"] != "WebhookEndpointTest"]
    assert [p["type"] for p in notice] == ["WebhookEndpointDisabled"]
    assert notice[0]["data"]["endpoint_id"] == failing.as_dict()["id"]
    assert (
        await parts.repo.pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'webhooks.endpoint.disable'", tenant.id
        )
        == 1
    )
    assert (await parts.endpoints.enable(tenant, failing.as_dict()["id"])).enabled
    assert (await parts.endpoints.get(tenant, healthy.as_dict()["id"])).enabled


async def test_private_targets_are_refused_at_connect_time_without_the_dev_switch(parts, tenant, receiver) -> None:
    endpoint = await parts.endpoints.create(tenant, {"url": receiver.url})
    strict = WebhookDeliveryWorker(parts.repo.pool, parts.secrets, options=DeliveryOptions(retry_base_s=60))
    try:
        await parts.endpoints.send_test(tenant, endpoint.as_dict()["id"])
        await strict.run_once()
    finally:
        await strict.aclose()
    assert receiver.received == []
    [entry] = await parts.endpoints.deliveries(tenant, endpoint.as_dict()["id"])
    assert entry.status == "pending" and "private" in (entry.last_error or "")


async def test_endpoint_input_is_checked_and_deleting_drops_what_is_queued(repo, tenant, receiver) -> None:
    strict = WebhookEndpoints(repo.pool)
    with pytest.raises(ApiProblem) as bad_url:
        await strict.create(tenant, {"url": "http://169.254.169.254/latest"})
    assert bad_url.value.status == 422 and bad_url.value.errors[0].loc == ("body", "url")
    loose = WebhookEndpoints(repo.pool, allow_private=True)
    with pytest.raises(ApiProblem) as bad_type:
        await loose.create(tenant, {"url": receiver.url, "event_types": ["NotificationDelivered", "Nope"]})
    assert bad_type.value.errors[0].loc == ("body", "event_types", 1)
    with pytest.raises(ApiProblem) as missing:
        await loose.create(tenant, {"event_types": []})
    assert missing.value.status == 422 and missing.value.errors[0].loc == ("body", "url")
    with pytest.raises(ApiProblem) as none_named:  # not "all": that is leaving the list out
        await loose.create(tenant, {"url": receiver.url, "event_types": []})
    assert none_named.value.errors[0].loc == ("body", "event_types")
    endpoint = await loose.create(tenant, {"url": receiver.url})
    public_id = endpoint.as_dict()["id"]
    await loose.send_test(tenant, public_id)
    assert [e.as_dict()["id"] for e in await loose.list(tenant)] == [public_id]
    await loose.delete(tenant, public_id)
    assert await repo.pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1", tenant.id) == 0
    for call in (loose.get(tenant, public_id), loose.delete(tenant, public_id), loose.get(tenant, "ep_nope")):
        with pytest.raises(ApiProblem) as gone:
            await call
        assert gone.value.status == 404


async def test_replay_queues_a_time_range_again_with_the_same_ids(parts, tenant, receiver) -> None:
    endpoint = await parts.endpoints.create(tenant, {"url": receiver.url})
    public_id = endpoint.as_dict()["id"]
    messages = await sent_messages(parts.repo.pool, tenant, 3)
    start = datetime.now(UTC) - timedelta(seconds=1)
    await parts.ingest.ingest(
        "sendgrid", Channel.EMAIL, parse_events(body([sendgrid_event(m, "delivered") for m in messages]))
    )
    await parts.worker.run_once()
    first = {h["webhook-id"] for h, _ in receiver.received}
    queued = await parts.endpoints.replay(tenant, public_id, {"since": start.isoformat()})
    assert queued == 3
    await parts.worker.run_once()
    assert len(receiver.received) == 6 and {h["webhook-id"] for h, _ in receiver.received[3:]} == first
    with pytest.raises(ApiProblem) as backwards:
        await parts.endpoints.replay(tenant, public_id, {"since": start.isoformat(), "until": start.isoformat()})
    assert backwards.value.status == 422


async def test_sent_transitions_are_queued_in_the_record_statement(repo, tenant, receiver, parts, webhook_db) -> None:
    await parts.endpoints.create(tenant, {"url": receiver.url, "event_types": ["NotificationSent"]})
    catalog = TemplateCatalog(Path(__file__).resolve().parents[2] / "templates")
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
    principal = Principal(tenant=tenant.slug, scopes=frozenset({"send"}))
    ids = []
    for i in range(110):
        accepted = await intake.submit(
            principal,
            {
                "channel": "email",
                "template_id": "otp_login",
                "to": {"email": f"u{i}@example.com"},
                "variables": {"code": "123456"},
            },
            uuid.uuid4().hex,
        )
        ids.append(parse_message_id(accepted.body["message_id"]))
    statements: list[str] = []
    counted = await create_pool(webhook_db, min_size=1, max_size=1, query_logger=lambda r: statements.append(r.query))
    try:
        dispatcher = Dispatcher(
            Repository(counted),
            catalog,
            {Channel.EMAIL: [FakeDriver()]},
            policy=RetryPolicy(),
            metrics=MetricsBuffer(),
            options=DispatchOptions(),
        )
        sendable = [i for i in ids if i is not None]
        await dispatcher.process(sendable[100:])  # type introspection, once per connection
        statements.clear()
        report = await dispatcher.process(sendable[:100])
    finally:
        await counted.close()
    assert report.sent == 100 and len(statements) == 3  # claim, dedupe claims (auth), record
    queued = await repo.pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1 AND event_type = 'NotificationSent'", tenant.id
    )
    assert queued == 110
    figures = await repo.pool.fetchrow("SELECT sum(sent) AS sent FROM analytics_daily WHERE tenant_id = $1", tenant.id)
    assert figures["sent"] == 110


async def test_concurrent_first_reads_of_a_tenant_secret_agree(parts, tenant) -> None:
    # The first reads race to create the secret; the losers' statement cannot see the winner's row.
    for _ in range(5):
        fresh = await parts.repo.ensure_tenant(f"t_{uuid.uuid4().hex[:12]}")
        got = await asyncio.gather(*(parts.secrets.get(fresh.id) for _ in range(8)))
        assert len({g.current for g in got}) == 1
