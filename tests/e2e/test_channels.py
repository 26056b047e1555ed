"""Every channel through the API to its provider and back to ``sent``."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.e2e.conftest import ACCEPTED, Herald
from tests.e2e.test_api import new_tenant, post

pytestmark = [pytest.mark.ray, pytest.mark.integration]


def test_inapp_message_is_readable_by_its_recipient(herald: Herald) -> None:
    tenant = new_tenant()
    user = f"user-{uuid.uuid4().hex[:6]}"
    body = {
        "channel": "inapp",
        "template_id": "security_alert",
        "to": {"user_id": user},
        "variables": {"device": "Firefox on Linux", "location": "Leeds"},
    }
    with herald.client(tenant) as api:
        r = post(api, body)
        assert r.status_code == 202, r.text
        message_id = r.json()["message_id"]
        view = herald.wait_status(api, message_id, lambda s: s == "sent")
        assert view["provider"] == "store"
        again = post(api, {**body, "variables": {"device": "Safari on iPhone"}})  # a second, newer one
        herald.wait_status(api, again.json()["message_id"], lambda s: s == "sent")
        inbox = api.get(f"/api/inbox/{user}").json()["items"]
        assert [i["message_id"] for i in inbox] == [again.json()["message_id"], message_id]
        assert "Firefox on Linux" in inbox[1]["body"] and "Leeds" in inbox[1]["body"]
        assert api.get("/api/inbox/someone-else").json()["items"] == []
    with herald.client(new_tenant()) as other:
        assert other.get(f"/api/inbox/{user}").json()["items"] == []


def test_inapp_needs_a_user_id(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        r = post(
            api,
            {
                "channel": "inapp",
                "template_id": "security_alert",
                "to": {"email": "a@example.com"},
                "variables": {"device": "x"},
            },
        )
    assert r.status_code == 422 and ["body", "to", "user_id"] in [e["loc"] for e in r.json()["errors"]]


def test_sms_through_console(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        r = post(
            api,
            {
                "channel": "sms",
                "template_id": "otp_login:v2",
                "to": {"phone": "+14155550142"},
                "variables": {"code": "246810"},
                "priority": "high",
            },
        )
        assert r.status_code == 202, r.text
        view = herald.wait_status(api, r.json()["message_id"], lambda s: s == "sent")
    record = next(x for x in herald.console_records() if x["message_id"] == view["message_id"])
    assert record["channel"] == "sms" and record["to"] == "+14155550142" and "246810" in record["text"]


APNS_TOKEN = "a" * 64
FCM_TOKEN = "fcm-registration-token-" + "x" * 100


@pytest.mark.parametrize(
    ("channel", "provider", "to", "template", "variables"),
    [
        ("email", "ses", {"email": "ses.user@example.com"}, "otp_login", {"code": "111111"}),
        ("email", "sendgrid", {"email": "sg.user@example.com"}, "otp_login", {"code": "222222"}),
        ("email", "smtp", {"email": "smtp.user@example.com"}, "magic_link_login", {"link": "https://a.example/x"}),
        ("sms", "twilio", {"phone": "+447911123456"}, "otp_login", {"code": "333333"}),
        ("sms", "sns", {"phone": "+14155552671"}, "otp_login", {"code": "444444"}),
        ("whatsapp", "meta", {"phone": "+447911123457"}, "security_alert", {"device": "Pixel 9"}),
        ("whatsapp", "twilio", {"phone": "+14155552672"}, "security_alert", {"device": "Pixel 8"}),
        ("push", "fcm", {"push": {"platform": "fcm", "token": FCM_TOKEN}}, "otp_login:v3", {"code": "555555"}),
        ("push", "apns", {"push": {"platform": "apns", "token": APNS_TOKEN}}, "otp_login:v3", {"code": "666666"}),
    ],
)
def test_each_provider_through_the_api_to_its_emulator(
    herald: Herald, channel: str, provider: str, to: dict, template: str, variables: dict
) -> None:
    tenant = new_tenant()
    herald.use_providers(tenant, **{channel: [provider]})
    if channel == "whatsapp":
        approve_whatsapp_template(herald, provider)
    with herald.client(tenant) as api:
        r = post(api, {"channel": channel, "template_id": template, "to": to, "variables": variables})
        assert r.status_code == 202, r.text
        view = herald.wait_status(api, r.json()["message_id"], lambda s: s not in ("queued", "sending"))
    assert view["status"] in ACCEPTED, [a["error"] for a in view["attempts"]]
    assert view["provider"] == provider and view["provider_message_id"]
    assert view["attempts"][-1]["provider"] == provider


def approve_whatsapp_template(herald: Herald, provider: str) -> str:
    """Approve security_alert at the provider, as a tenant does in Meta's or Twilio's console."""
    base = herald.fakes.env["HERALD_META_BASE_URL" if provider == "meta" else "HERALD_TWILIO_BASE_URL"]
    approval = (
        {"templates": {"security_alert": {"en_GB": 2}}}
        if provider == "meta"
        else {"content": {"HX2b0d1c3a4f5e6d7c8b9a0f1e2d3c4b5a": 2}}
    )
    assert httpx.post(f"{base}/_state", json=approval, timeout=10).status_code == 200
    return str(base)


@pytest.mark.parametrize("provider", ["meta", "twilio"])
def test_whatsapp_goes_as_the_versions_approved_template(herald: Herald, provider: str) -> None:
    tenant = new_tenant()
    herald.use_providers(tenant, whatsapp=[provider])
    base = approve_whatsapp_template(herald, provider)
    body = {
        "channel": "whatsapp",
        "template_id": "security_alert",
        "to": {"phone": "+447911123999"},
        "variables": {"device": "Galaxy S24", "location": "Bristol"},
    }
    with herald.client(tenant) as api:
        r = post(api, body)
        view = herald.wait_status(api, r.json()["message_id"], lambda s: s not in ("queued", "sending"))
    received = json.dumps(httpx.get(f"{base}/_received", timeout=10).json())
    assert view["status"] in ACCEPTED, ([a["error"] for a in view["attempts"]], received[-1500:])
    assert "Galaxy S24" in received and "Bristol" in received
    assert ("security_alert" if provider == "meta" else "HX2b0d1c3a4f5e6d7c8b9a0f1e2d3c4b5a") in received


def test_s3_attachments_go_inline_and_missing_ones_fail(herald: Herald) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=herald.fakes.env["HERALD_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = f"receipts-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="r-123.pdf", Body=b"%PDF-1.4 receipt", ContentType="application/pdf")
    tenant = new_tenant()
    herald.use_providers(tenant, email=["smtp"])
    herald.sql(
        "UPDATE tenants SET config = config || jsonb_build_object('attachments', jsonb_build_object("
        "'buckets', jsonb_build_array($2::text))) WHERE slug = $1",
        tenant,
        bucket,
    )
    body = {
        "channel": "email",
        "template_id": "otp_login",
        "to": {"email": "receipt@example.com"},
        "variables": {"code": "909090"},
        "attachments": [{"s3": f"s3://{bucket}/r-123.pdf"}],
    }
    with herald.client(tenant) as api:
        elsewhere = post(api, {**body, "attachments": [{"s3": f"s3://{bucket}-other/r-123.pdf"}]})
        assert elsewhere.status_code == 422, elsewhere.text
        assert [e["loc"] for e in elsewhere.json()["errors"]] == [["body", "attachments", 0, "s3"]]
        sent = post(api, body).json()["message_id"]
        view = herald.wait_status(api, sent, lambda s: s not in ("queued", "sending"))
        assert view["status"] in ACCEPTED, [a["error"] for a in view["attempts"]]
        missing = post(api, {**body, "attachments": [{"s3": f"s3://{bucket}/nope.pdf"}]}).json()["message_id"]
        failed = herald.wait_status(api, missing, lambda s: s not in ("queued", "sending"))
    assert failed["status"] == "failed" and failed["attempts"][0]["error"]["code"] == "attachment_not_found"
    mails = [m for m in herald.fakes.smtp.messages if "receipt@example.com" in m.rcpt_tos]
    assert mails and b'filename="r-123.pdf"' in mails[-1].data


def test_push_options_from_metadata_reach_fcm(herald: Herald) -> None:
    tenant = new_tenant()
    body = {
        "channel": "push",
        "template_id": "otp_login:v3",
        "to": {"push": {"platform": "fcm", "token": FCM_TOKEN}},
        "variables": {"code": "717171"},
        "priority": "high",
        "metadata": {"push": {"collapse_id": "login-7", "android": {"notification": {"color": "#ff0000"}}}},
    }
    with herald.client(tenant) as api:
        view = herald.wait_status(api, post(api, body).json()["message_id"], lambda s: s not in ("queued", "sending"))
    assert view["status"] == "sent" and view["provider"] == "fcm"
    received = json.dumps(httpx.get(f"{herald.fakes.env['HERALD_FCM_BASE_URL']}/_received", timeout=10).json())
    assert "login-7" in received and "#ff0000" in received and "717171" in received
