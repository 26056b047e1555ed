"""Each provider's documented sample payloads (``tests/drivers/samples``, providers.md) through the real
webhook routes of the session's stack: signed as the provider signs (the SDK's own signer for Twilio),
forged, unsigned and stale. A refused request records nothing; events naming no message are kept as
orphans; the same provider event twice is recorded once. Also: Meta's verification handshake, a
tenant's own credentials behind ``?tenant=``, and the webhooks' own body limit."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from twilio.request_validator import RequestValidator

from drivers.fakes.aws import SES_TOPIC_ARN
from engine.models import Tenant
from tests.drivers.test_twilio_webhooks import SMS_DELIVERED, SMS_UNDELIVERED, WA_FAILED, WA_READ
from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, post
from tests.e2e.test_channels import approve_whatsapp_template
from tests.integration.feedback_support import Sent, sendgrid_event, sent_messages

pytestmark = [pytest.mark.ray, pytest.mark.integration]

SAMPLES = Path(__file__).parents[1] / "drivers" / "samples"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def orphans(herald: Herald, provider: str, keys: list[str]) -> int:
    rows = herald.sql(
        "SELECT count(*) AS n FROM orphan_events WHERE provider = $1 AND dedupe_key = ANY($2)", provider, keys
    )
    return int(rows[0]["n"])


def webhook(herald: Herald, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{herald.base_url}{path}", content=body, headers=headers, timeout=30)


# -- SendGrid ------------------------------------------------------------------------------------------


def sendgrid_batch() -> tuple[bytes, list[str]]:
    """The documented events, each with an event id of its own (so this run's rows can be told apart)."""
    events = sample("sendgrid_events")
    for event in events:
        event["sg_event_id"] = uuid.uuid4().hex
    return json.dumps(events).encode() + b"\r\n", [f"sendgrid:{e['sg_event_id']}" for e in events]


def test_sendgrid_samples_valid_forged_unsigned_and_stale(herald: Herald) -> None:
    signer = herald.fakes.sendgrid.emulator
    path = "/webhooks/email/sendgrid"
    body, keys = sendgrid_batch()
    r = webhook(herald, path, body, signer.signed(body))
    assert r.status_code == 200, r.text
    assert r.json()["received"] == len(keys) and r.json()["orphans"] == len(keys)  # no such messages here
    assert orphans(herald, "sendgrid", keys) == len(keys)
    again = webhook(herald, path, body, signer.signed(body))
    assert again.status_code == 200 and orphans(herald, "sendgrid", keys) == len(keys)  # kept once

    forged_body, forged_keys = sendgrid_batch()
    headers = signer.signed(forged_body)
    tampered = forged_body.replace(b'"delivered"', b'"bounce"', 1)
    assert webhook(herald, path, tampered, headers).status_code == 403
    unsigned = {"content-type": "application/json"}
    assert webhook(herald, path, forged_body, unsigned).status_code == 401
    stale = webhook(herald, path, forged_body, signer.signed(forged_body, timestamp=str(int(time.time()) - 3600)))
    assert stale.status_code == 403 and "tolerance" in stale.json()["detail"]
    assert orphans(herald, "sendgrid", forged_keys) == 0  # nothing of what was refused is recorded


def test_webhooks_take_bodies_up_to_their_own_limit(herald: Herald) -> None:
    path = "/webhooks/email/sendgrid"
    two_mib = b"[" + b" " * (2 * 1024 * 1024) + b"]"  # over the API's 1 MiB, under the webhooks' 5 MiB
    assert webhook(herald, path, two_mib, {"content-type": "application/json"}).status_code == 401
    six_mib = b"[" + b" " * (6 * 1024 * 1024) + b"]"
    assert webhook(herald, path, six_mib, {"content-type": "application/json"}).status_code == 413


# -- SES through SNS -------------------------------------------------------------------------------------


def sns_envelope(doc: dict[str, Any], *, at: datetime | None = None) -> dict[str, Any]:
    """A documented SES event in the SNS envelope SES's topic would deliver it in."""
    stamp = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": SES_TOPIC_ARN,
        "Subject": "Amazon SES Email Event Notification",
        "Message": json.dumps(doc),
        "Timestamp": stamp,
    }


SES_SAMPLES = ["ses_bounce_permanent", "ses_bounce_transient", "ses_click", "ses_complaint", "ses_open"]


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_samples_through_signed_sns_valid_forged_stale_and_untrusted(herald: Herald, version: str) -> None:
    proxy = herald.fakes.aws.proxy
    path = "/webhooks/email/ses"
    headers = {"content-type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"}
    delivery = sample("ses_envelope_delivery")
    documents = [json.loads(delivery["Message"]), *(sample(name) for name in SES_SAMPLES)]
    for doc in documents:
        doc["mail"]["messageId"] = f"{uuid.uuid4()}-000000"  # this run's own
        r = webhook(herald, path, proxy.sign(sns_envelope(doc), version), headers)
        assert r.status_code == 200, (doc.get("eventType") or doc.get("notificationType"), r.text)
        assert r.json()["received"] >= 1 and r.json()["orphans"] == r.json()["received"]

    doc = json.loads(delivery["Message"])
    doc["mail"]["messageId"] = marker = f"{uuid.uuid4()}-forged"
    signed = json.loads(proxy.sign(sns_envelope(doc), version))
    forged = {**signed, "Message": signed["Message"].replace("Delivery", "Bounce")}
    assert webhook(herald, path, json.dumps(forged).encode(), headers).status_code == 403
    untrusted = {**signed, "SigningCertURL": "https://sns.evil.example/SimpleNotificationService-0.pem"}
    assert webhook(herald, path, json.dumps(untrusted).encode(), headers).status_code == 403
    old = proxy.sign(sns_envelope(doc, at=datetime.now(UTC) - timedelta(hours=1)), version)
    assert webhook(herald, path, old, headers).status_code == 403
    foreign = proxy.sign({**sns_envelope(doc), "TopicArn": "arn:aws:sns:us-east-1:999999999999:other"}, version)
    assert webhook(herald, path, foreign, headers).status_code == 403  # signed by SNS, but not our topic
    assert webhook(herald, path, b"not json", headers).status_code == 400
    rows = herald.sql("SELECT count(*) AS n FROM orphan_events WHERE event->>'provider_message_id' = $1", marker)
    assert rows[0]["n"] == 0


def test_a_subscription_confirmation_pointing_elsewhere_is_refused(herald: Herald) -> None:
    proxy = herald.fakes.aws.proxy
    doc = {**sample("ses_subscription_confirmation"), "TopicArn": SES_TOPIC_ARN}
    doc["Timestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    confirmed = len(proxy.confirmed)
    r = webhook(herald, "/webhooks/email/ses", proxy.sign(doc), {"content-type": "text/plain"})
    assert r.status_code == 403 and "SubscribeURL" in r.json()["detail"]
    assert len(proxy.confirmed) == confirmed


# -- Twilio ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "bodies"),
    [("/webhooks/sms/twilio", [SMS_DELIVERED, SMS_UNDELIVERED]), ("/webhooks/whatsapp/twilio", [WA_READ, WA_FAILED])],
)
def test_twilio_samples_signed_by_the_sdk_forged_and_unsigned(herald: Herald, path: str, bodies: list[bytes]) -> None:
    token = herald.fakes.env["HERALD_TWILIO_AUTH_TOKEN"]
    url = herald.settings.public_url + path
    form = {"content-type": "application/x-www-form-urlencoded"}
    for body in bodies:
        sid = "SM" + uuid.uuid4().hex  # this run's own message sid
        body = body.replace(b"SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", sid.encode())
        body = body.replace(b"SMbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", sid.encode())
        body = body.replace(b"SMcccccccccccccccccccccccccccccccc", sid.encode())
        params = dict(httpx.QueryParams(body.decode()))
        signature = RequestValidator(token).compute_signature(url, params)
        ok = webhook(herald, path, body, {**form, "x-twilio-signature": signature})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {**ok.json(), "received": 1, "orphans": 1}
        assert webhook(herald, path, body, {**form, "x-twilio-signature": signature}).json()["orphans"] == 1
        wrong = RequestValidator("not-the-token").compute_signature(url, params)
        assert webhook(herald, path, body, {**form, "x-twilio-signature": wrong}).status_code == 403
        elsewhere = RequestValidator(token).compute_signature(url + "?tenant=other", params)
        assert webhook(herald, path, body, {**form, "x-twilio-signature": elsewhere}).status_code == 403
        assert webhook(herald, path, body, form).status_code == 401
        status = params["MessageStatus"]
        assert orphans(herald, "twilio", [f"twilio:{sid}:{status}"]) == 1  # the valid one, once


# -- Meta ------------------------------------------------------------------------------------------------


def meta_headers(secret: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "x-hub-signature-256": f"sha256={digest}"}


def test_meta_samples_valid_forged_unsigned_and_the_handshake(herald: Herald) -> None:
    secret = herald.fakes.env["HERALD_META_APP_SECRET"]
    path = "/webhooks/whatsapp/meta"
    for name in ("meta_sent", "meta_delivered", "meta_failed"):
        doc = sample(name)
        status = doc["entry"][0]["changes"][0]["value"]["statuses"][0]
        status["id"] = wamid = f"wamid.{uuid.uuid4().hex}"
        body = json.dumps(doc).encode()
        r = webhook(herald, path, body, meta_headers(secret, body))
        assert r.status_code == 200 and r.json()["orphans"] == 1, r.text
        assert webhook(herald, path, body, meta_headers("forged", body)).status_code == 403
        assert webhook(herald, path, body, {"content-type": "application/json"}).status_code == 401
        assert orphans(herald, "meta", [f"meta:{wamid}:{status['status']}"]) == 1
    verify = herald.fakes.env["HERALD_META_VERIFY_TOKEN"]
    query = {"hub.mode": "subscribe", "hub.verify_token": verify, "hub.challenge": "1158201444"}
    shake = httpx.get(f"{herald.base_url}{path}", params=query, timeout=10)
    assert shake.status_code == 200 and shake.text == "1158201444"
    wrong = httpx.get(f"{herald.base_url}{path}", params={**query, "hub.verify_token": "nope"}, timeout=10)
    assert wrong.status_code == 403


def test_a_tenants_own_meta_app_verifies_its_webhook_and_reaches_only_its_messages(herald: Herald) -> None:
    platform_secret = herald.fakes.env["HERALD_META_APP_SECRET"]
    owner, other = new_tenant(), new_tenant()
    herald.use_providers(owner, whatsapp=["meta"])
    approve_whatsapp_template(herald, "meta")
    with herald.client(owner) as api:
        mid = post(api, {"channel": "whatsapp", "template_id": "security_alert", "to": {"phone": "+447400123123"},
                         "variables": {"device": "Pixel 6"}}).json()["message_id"]  # fmt: skip
        wamid = herald.wait_status(api, mid, lambda s: s == "delivered")["provider_message_id"]
    # its own app: its own secret and token (none of the platform's credentials is merged into a tenant's)
    own = {"HERALD_META_APP_SECRET": "other-tenants-own-app-secret", "HERALD_META_TOKEN": "other-tenants-own-token"}
    with httpx.Client(base_url=herald.base_url, timeout=30) as client:
        stored = client.put(
            "/admin/credentials/whatsapp/meta",
            json=own,
            headers={"Authorization": f"Bearer {herald.token(other, admin=True)}"},
        )
        assert stored.status_code == 200, stored.text
        doc = sample("meta_delivered")
        doc["entry"][0]["changes"][0]["value"]["statuses"][0].update(id=wamid, status="read")
        body = json.dumps(doc).encode()
        path = "/webhooks/whatsapp/meta?" + urlencode({"tenant": other})
        with_platform = client.post(path, content=body, headers=meta_headers(platform_secret, body))
        assert with_platform.status_code == 403  # ?tenant= is verified with that tenant's secret only
        assert with_platform.json()["detail"] == "the Meta signature does not match"
        with_own = client.post(path, content=body, headers=meta_headers(own["HERALD_META_APP_SECRET"], body))
        assert with_own.status_code == 200 and with_own.json()["orphans"] == 1  # not its message: not moved
        nobody = client.post("/webhooks/whatsapp/meta?tenant=t_nobody", content=body, headers=meta_headers("x", body))
        assert nobody.status_code == 403
    with herald.client(owner) as api:
        assert "NotificationRead" not in [e["type"] for e in api.get(f"/api/notifications/{mid}").json()["events"]]


# -- a batch of 1,000 ------------------------------------------------------------------------------------


def test_a_sendgrid_batch_of_1000_events_is_one_request_through_the_route(
    herald: Herald, capsys: pytest.CaptureFixture[str]
) -> None:
    slug = new_tenant()
    herald.token(slug)  # creates the tenant
    [row] = herald.sql("SELECT id FROM tenants WHERE slug = $1", slug)

    async def make() -> list[Sent]:
        conn = await asyncpg.connect(herald.stack.database_url)
        try:
            return await sent_messages(conn, Tenant(row["id"], slug, slug), 3000)  # type: ignore[arg-type]
        finally:
            await conn.close()

    messages = asyncio.run(make())
    signer = herald.fakes.sendgrid.emulator
    chunks = [messages[i : i + 1000] for i in range(0, len(messages), 1000)]
    batches = [json.dumps([sendgrid_event(m, "delivered") for m in chunk]).encode() for chunk in chunks]
    started = time.perf_counter()
    for batch in batches:
        r = webhook(herald, "/webhooks/email/sendgrid", batch, signer.signed(batch))
        assert r.status_code == 200 and r.json()["moved"] == 1000, r.text
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nwebhook ingest through POST /webhooks/email/sendgrid: 3 batches of 1000 in {elapsed:.2f}s, "
              f"{3000 / elapsed:,.0f} events/s (verify, parse, match, move, record)")  # fmt: skip
    counts = herald.sql(
        "SELECT status, count(*) AS n FROM messages m JOIN tenants t ON t.id = m.tenant_id WHERE t.slug = $1 "
        "GROUP BY status",
        slug,
    )
    assert {r["status"]: r["n"] for r in counts} == {"delivered": 3000}
