"""Suppression by channel address and category, on the real PostgreSQL: unregistered push tokens retire
the token, bad numbers suppress the number (not the email beside it), one-click unsubscribes stop only
their category."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from drivers.fake import FakeDriver
from engine.auth import Principal
from engine.channels import Channel
from engine.dispatch import Dispatcher, DispatchOptions
from engine.errors import BadRecipientError
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.retries import RetryPolicy
from engine.storage.repository import Repository
from engine.templating import TemplateCatalog
from engine.templating.links import sign_unsubscribe
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
        self.dispatcher = Dispatcher(
            repo,
            catalog,
            {c: [d] for c, d in self.drivers.items()},
            policy=RetryPolicy(),
            metrics=MetricsBuffer(),
            options=DispatchOptions(),
        )

    async def send(self, body: dict[str, Any]) -> str:
        accepted = await self.intake.submit(self.principal, body, uuid.uuid4().hex)
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


def email(address: str, category: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "email",
        "template_id": "otp_login",
        "to": {"email": address},
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


async def test_the_category_is_pinned_at_admission(sender, repo, tenant) -> None:
    await sender.send(email("pin@example.com"))
    await sender.send(email("pin@example.com", "marketing"))
    rows = await repo.pool.fetch(
        "SELECT metadata->>'category' AS c FROM messages WHERE tenant_id = $1 ORDER BY created_at", tenant.id
    )
    assert [r["c"] for r in rows] == ["auth", "marketing"]  # otp_login is an auth template
