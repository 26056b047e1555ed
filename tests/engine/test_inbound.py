"""Which secret verifies a provider webhook, and what the route answers before anything is recorded: the
engine's ProviderWebhooks with the drivers' real receivers (nothing here reaches storage)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid

import pytest

from drivers.webhooks import create_receiver
from engine.channels import Channel
from engine.credentials import CredentialBox, credentials_key
from engine.feedback.events import WebhookRequest
from engine.feedback.inbound import ProviderWebhooks
from engine.feedback.ingest import FeedbackIngest
from engine.models import Tenant
from engine.problems import ApiProblem
from engine.tenant_config import TenantConfig

BOX = CredentialBox("test-secret")
BODY = json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()


def meta_request(secret: str, *, tenant: str | None = None) -> WebhookRequest:
    digest = hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    query = {"tenant": tenant} if tenant else {}
    return WebhookRequest(BODY, {"X-Hub-Signature-256": f"sha256={digest}"}, "https://h.example/x", query)


def service(env: dict[str, str], tenants: dict[str, Tenant] | None = None) -> ProviderWebhooks:
    known = tenants or {}

    async def lookup(slug: str) -> Tenant | None:
        return known.get(slug)

    ingest = FeedbackIngest(None)  # type: ignore[arg-type] - every case here is refused before recording
    return ProviderWebhooks(ingest, create_receiver, env, tenants=lookup, box=BOX)


def own_tenant(slug: str, settings: dict[str, str]) -> Tenant:
    sealed = BOX.seal(settings)
    config = TenantConfig.model_validate({"credentials": {credentials_key(Channel.WHATSAPP, "meta"): sealed}})
    return Tenant(uuid.uuid4(), slug, slug, config=config)


async def problem(call: object) -> ApiProblem:
    with pytest.raises(ApiProblem) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_an_unconfigured_webhook_is_503_naming_the_setting() -> None:
    refused = await problem(service({}).receive(Channel.WHATSAPP, "meta", meta_request("x")))
    assert refused.status == 503 and "HERALD_META_APP_SECRET" in refused.detail


async def test_a_forged_signature_is_403_and_a_missing_one_401() -> None:
    hooks = service({"HERALD_META_APP_SECRET": "platform"})
    assert (await problem(hooks.receive(Channel.WHATSAPP, "meta", meta_request("forged")))).status == 403
    unsigned = WebhookRequest(BODY, {}, "https://h.example/x")
    assert (await problem(hooks.receive(Channel.WHATSAPP, "meta", unsigned))).status == 401


async def test_tenant_is_verified_with_its_own_secret_only() -> None:
    owner = own_tenant("t_own", {"HERALD_META_APP_SECRET": "its-own"})
    plain = Tenant(uuid.uuid4(), "t_plain", "t_plain")
    hooks = service({"HERALD_META_APP_SECRET": "platform"}, {"t_own": owner, "t_plain": plain})
    with_platform = await problem(hooks.receive(Channel.WHATSAPP, "meta", meta_request("platform", tenant="t_own")))
    assert with_platform.status == 403 and "signature" in with_platform.detail
    for slug in ("t_plain", "t_nobody"):  # no own credentials, or no such tenant: the same answer
        refused = await problem(hooks.receive(Channel.WHATSAPP, "meta", meta_request("platform", tenant=slug)))
        assert refused.status == 403 and slug in refused.detail
    receiver, tenant_id = await hooks._receiver(Channel.WHATSAPP, "meta", meta_request("its-own", tenant="t_own"))
    assert tenant_id == owner.id
    assert (await receiver.receive(meta_request("its-own", tenant="t_own"))).events == ()


async def test_the_handshake_and_a_provider_without_one() -> None:
    hooks = service({"HERALD_META_APP_SECRET": "s", "HERALD_META_VERIFY_TOKEN": "vt", "HERALD_TWILIO_AUTH_TOKEN": "t"})
    query = {"hub.mode": "subscribe", "hub.verify_token": "vt", "hub.challenge": "77"}
    assert await hooks.handshake(Channel.WHATSAPP, "meta", WebhookRequest(b"", {}, "u", query)) == "77"
    wrong = WebhookRequest(b"", {}, "u", {**query, "hub.verify_token": "no"})
    assert (await problem(hooks.handshake(Channel.WHATSAPP, "meta", wrong))).status == 403
    none = await problem(hooks.handshake(Channel.SMS, "twilio", WebhookRequest(b"", {}, "u")))
    assert none.status == 405


async def test_sendgrid_keys_are_checked_when_the_receiver_is_built() -> None:
    bad_key = base64.b64encode(b"not a key").decode()
    refused = await problem(
        service({"HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY": bad_key}).receive(
            Channel.EMAIL, "sendgrid", WebhookRequest(b"[]", {}, "u")
        )
    )
    assert refused.status == 503 and "HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY" in refused.detail
