"""Suppression by channel address and category, on the real PostgreSQL: unregistered push tokens retire
the token, bad numbers suppress the number (not the email beside it), one-click unsubscribes stop only
their category and never a required one, STOP replies stop every optional category, recipients'
preferences are honoured, unsubscribe keys rotate, test-mode keys' messages go to the sink, and
attachments come only from the tenant's buckets."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from drivers.fake import FakeDriver
from engine.auth import Principal
from engine.channels import Channel
from engine.dispatch import Dispatcher, DispatchOptions
from engine.errors import BadRecipientError
from engine.governance.recipients import NON_REQUIRED, RecipientGate, RecipientService
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.problems import ApiProblem
from engine.retries import RetryPolicy
from engine.storage.recipients_store import RecipientStore
from engine.storage.repository import Repository
from engine.templating import TemplateCatalog
from engine.templating.links import sign_unsubscribe, verify_unsubscribe
from engine.tracking import Tracking

pytestmark = pytest.mark.integration


class Sender:
    def __init__(self, repo: Repository, catalog: TemplateCatalog, principal: Principal) -> None:
        self.repo = repo
        self.principal = principal
        self.intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
        self.drivers = {
            Channel.PUSH: FakeDriver("fcm"),
            Channel.SMS: FakeDriver("twilio"),
            Channel.EMAIL: FakeDriver("fake"),
        }
        self.sink = FakeDriver("sink")
        self.dispatcher = Dispatcher(
            repo,
            catalog,
            {c: [d] for c, d in self.drivers.items()},
            policy=RetryPolicy(),
            metrics=MetricsBuffer(),
            options=DispatchOptions(),
            recipients=RecipientGate(RecipientStore(repo.pool)),
            test_sinks={Channel.EMAIL: self.sink},
        )

    async def send(self, body: dict[str, Any], principal: Principal | None = None) -> str:
        accepted = await self.intake.submit(principal or self.principal, body, uuid.uuid4().hex)
        mid = parse_message_id(accepted.body["message_id"])
        assert mid is not None
        await self.dispatcher.process([mid])
        return str(await self.repo.pool.fetchval("SELECT status FROM messages WHERE id = $1", mid))


@pytest.fixture
def sender(repo: Repository, catalog: TemplateCatalog, principal: Principal) -> Sender:
    return Sender(repo, catalog, principal)


def push(token: str) -> dict[str, Any]:
    return {
        "channel": "push",
        "template_id": "otp_login",
        "to": {"push": {"platform": "fcm", "token": token}, "email": "owner@example.com"},
        "variables": {"code": "123456"},
    }


def email(address: str, category: str | None = None, user_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "email",
        "template_id": "otp_login",
        "to": {"email": address, **({"user_id": user_id} if user_id else {})},
        "variables": {"code": "123456"},
    }
    if category:
        body["metadata"] = {"category": category}
    return body


async def _suppressions(repo: Repository, tenant_id: uuid.UUID) -> list[tuple[str, str, str | None]]:
    rows = await repo.pool.fetch(
        "SELECT kind, address, category FROM suppressions WHERE tenant_id = $1 ORDER BY created_at", tenant_id
    )
    return [(r["kind"], r["address"], r["category"]) for r in rows]


async def test_an_unregistered_token_retires_the_token_not_the_owners_email(sender, repo, tenant) -> None:
    sender.drivers[Channel.PUSH].fail_next(BadRecipientError("Unregistered", provider="fcm", code="unregistered"))
    assert await sender.send(push("tok-dead")) == "failed"
    assert await _suppressions(repo, tenant.id) == [("device_token", "tok-dead", None)]
    assert await sender.send(push("tok-dead")) == "suppressed"
    assert await sender.send(push("tok-alive")) == "sent"
    assert await sender.send(email("owner@example.com")) == "sent"


async def test_a_bad_number_suppresses_the_number(sender, repo, tenant) -> None:
    sender.drivers[Channel.SMS].fail_next(BadRecipientError("invalid To", provider="twilio", code="21211"))
    body = {
        "channel": "sms",
        "template_id": "otp_login",
        "to": {"phone": "+447911123456", "email": "o@example.com"},
        "variables": {"code": "1"},
    }
    assert await sender.send(body) == "failed"
    assert await _suppressions(repo, tenant.id) == [("phone", "+447911123456", None)]


async def test_one_click_unsubscribe_stops_only_its_category(sender, repo, tenant) -> None:
    tracking = Tracking(repo.pool, secret="unsub-secret", base_url="https://h.example")
    token = sign_unsubscribe("unsub-secret", tenant.slug, "Reader@Example.com", category="marketing")
    assert await tracking.unsubscribe(token)
    assert await _suppressions(repo, tenant.id) == [("email", "reader@example.com", "marketing")]
    assert await sender.send(email("reader@example.com", "marketing")) == "suppressed"
    assert await sender.send(email("reader@example.com")) == "sent"  # the template's category: auth
    legacy = sign_unsubscribe("unsub-secret", tenant.slug, "reader@example.com")
    assert await tracking.unsubscribe(legacy)
    assert await sender.send(email("reader@example.com")) == "suppressed"


async def test_an_unsubscribe_from_a_required_category_stops_only_the_optional_ones(sender, repo, tenant) -> None:
    tracking = Tracking(repo.pool, secret="unsub-secret", base_url="https://h.example", tenants=repo.get_tenant)
    token = sign_unsubscribe("unsub-secret", tenant.slug, "otp@example.com", category="auth")
    assert await tracking.unsubscribe(token)
    assert await _suppressions(repo, tenant.id) == [("email", "otp@example.com", NON_REQUIRED)]
    assert await sender.send(email("otp@example.com")) == "sent"
    assert await sender.send(email("otp@example.com", "transactional")) == "sent"
    assert await sender.send(email("otp@example.com", "marketing")) == "suppressed"


async def test_a_category_entry_never_stops_a_required_category(sender, repo, tenant) -> None:
    # An entry written before the category became required (or by a provider's unsubscribe event).
    await repo.pool.execute(
        "INSERT INTO suppressions (id, tenant_id, kind, address, category, reason) "
        "VALUES ($1, $2, 'email', 'old@example.com', 'auth', 'unsubscribed')",
        uuid.uuid4(),
        tenant.id,
    )
    assert await sender.send(email("old@example.com")) == "sent"
    service = RecipientService(RecipientStore(repo.pool))
    with pytest.raises(ApiProblem) as refused:
        await service.add_suppression(
            tenant, {"channel": "email", "address": "x@example.com", "category": "auth", "reason": "r"}, actor="t"
        )
    assert refused.value.status == 422 and refused.value.errors[0].loc == ("body", "category")
    await service.add_suppression(
        tenant, {"channel": "email", "address": "old@example.com", "reason": "dead"}, actor="t"
    )
    assert await sender.send(email("old@example.com")) == "suppressed"  # every category: one-time codes too


async def test_a_stop_reply_stops_marketing_sms_and_leaves_codes_flowing(sender, repo, tenant) -> None:
    service = RecipientService(RecipientStore(repo.pool))
    outcome = await service.inbound(tenant, Channel.SMS, "+447911123457", "STOP")
    assert outcome.changed
    sms = {"channel": "sms", "template_id": "otp_login", "to": {"phone": "+447911123457"}, "variables": {"code": "1"}}
    assert await sender.send(sms) == "sent"
    assert await sender.send({**sms, "metadata": {"category": "marketing"}}) == "suppressed"
    assert (await service.inbound(tenant, Channel.SMS, "+447911123457", "start")).changed
    assert await sender.send({**sms, "metadata": {"category": "marketing"}}) == "sent"


async def test_preferences_are_honoured_before_sending(sender, repo, tenant) -> None:
    service = RecipientService(RecipientStore(repo.pool))
    await service.put_preferences(
        tenant, "user-7", {"categories": {"marketing": {"email": False, "sms": True}}}, actor="key_test"
    )
    assert await sender.send(email("u7@example.com", "marketing", user_id="user-7")) == "suppressed"
    assert await sender.send(email("u7@example.com", "marketing", user_id="user-8")) == "sent"
    assert await sender.send(email("u7@example.com", user_id="user-7")) == "sent"  # auth: required
    events = await repo.pool.fetch(
        "SELECT e.meta FROM notification_events e JOIN messages m ON m.id = e.message_id "
        "WHERE m.tenant_id = $1 AND e.type = 'NotificationSuppressed'",
        tenant.id,
    )
    assert [e["meta"]["reason"] for e in events] == ["recipient preference: marketing off on email"]


async def test_unsubscribe_keys_rotate_with_a_grace_period(sender, repo, tenant) -> None:
    tracking = Tracking(repo.pool, secret="unsub-secret", base_url="https://h.example", tenants=repo.get_tenant)
    first = sign_unsubscribe("unsub-secret", tenant.slug, "a@example.com", category="marketing")
    rotated = await tracking.rotate_unsubscribe_key(tenant, actor="admin")
    assert rotated.generation == 1
    second = sign_unsubscribe("unsub-secret", tenant.slug, "b@example.com", category="marketing", generation=1)
    assert verify_unsubscribe("unsub-secret", second) is None  # only its generation's key verifies it
    assert await tracking.verify_unsubscribe(first) is not None  # the previous key, inside the grace period
    assert (await tracking.verify_unsubscribe(second)).address == "b@example.com"
    assert (await tracking.rotate_unsubscribe_key(tenant, actor="admin")).generation == 2
    assert await tracking.verify_unsubscribe(first) is None  # two rotations ago
    assert await tracking.verify_unsubscribe(second) is not None
    no_grace = Tracking(repo.pool, secret="unsub-secret", base_url="https://h.example", unsubscribe_grace_s=0)
    await no_grace.rotate_unsubscribe_key(tenant, actor="admin")
    assert await no_grace.verify_unsubscribe(second) is None
    audit = await repo.pool.fetch("SELECT action, actor FROM audit_log WHERE tenant_id = $1 ORDER BY id", tenant.id)
    assert [(a["action"], a["actor"]) for a in audit] == [("unsubscribe_key.rotate", "admin")] * 3
    # senders sign with the generation the claim read
    await sender.send(email("c@example.com", "marketing"))
    generation = await repo.pool.fetchval("SELECT unsubscribe_generation FROM tenants WHERE id = $1", tenant.id)
    assert generation == 3


async def test_a_test_mode_key_sends_to_the_sink_and_marks_the_message(sender, repo, tenant) -> None:
    test_key = Principal(tenant=tenant.slug, scopes=frozenset({"send"}), test=True, key_id="hk_test_0")
    assert await sender.send(email("t@example.com"), principal=test_key) == "sent"
    assert sender.sink.sent and not sender.drivers[Channel.EMAIL].sent
    row = await repo.pool.fetchrow("SELECT provider, metadata FROM messages WHERE tenant_id = $1", tenant.id)
    assert row["metadata"]["test_mode"] is True and row["provider"] == "sink"
    body = email("live@example.com")
    body["metadata"] = {"test_mode": True}  # only a test-mode key marks a message so
    assert await sender.send(body) == "sent"
    assert len(sender.drivers[Channel.EMAIL].sent) == 1


async def test_attachments_only_from_the_tenants_buckets(sender, repo, tenant) -> None:
    body = {**email("att@example.com"), "attachments": [{"s3": "s3://receipts/2024/r.pdf"}]}
    with pytest.raises(ApiProblem) as refused:
        await sender.send(body)
    assert refused.value.status == 422
    assert [e.loc for e in refused.value.errors] == [("body", "attachments", 0, "s3")]
    await repo.pool.execute(
        'UPDATE tenants SET config = config || \'{"attachments": {"buckets": ["receipts/2024/"]}}\' WHERE id = $1',
        tenant.id,
    )
    sender.intake.forget_tenant(tenant.slug)
    accepted = await sender.intake.check(sender.principal, body)
    assert accepted.request.attachments[0].s3 == "s3://receipts/2024/r.pdf"
    with pytest.raises(ApiProblem):
        await sender.intake.check(sender.principal, {**body, "attachments": [{"s3": "s3://receipts/2023/r.pdf"}]})


async def test_the_category_is_pinned_at_admission(sender, repo, tenant) -> None:
    await sender.send(email("pin@example.com"))
    await sender.send(email("pin@example.com", "marketing"))
    rows = await repo.pool.fetch(
        "SELECT metadata->>'category' AS c FROM messages WHERE tenant_id = $1 ORDER BY created_at", tenant.id
    )
    assert [r["c"] for r in rows] == ["auth", "marketing"]  # otp_login is an auth template
