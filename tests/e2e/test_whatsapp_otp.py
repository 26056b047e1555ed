"""The shipped one-time code on WhatsApp: otp_login:v4 through the API to each provider's emulator, sent."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.conftest import ACCEPTED, Herald
from tests.e2e.test_api import new_tenant, post

pytestmark = [pytest.mark.ray, pytest.mark.integration]

V4_CONTENT_SID = "HX4f0e2d1c3b5a69788796a5b4c3d2e1f0"


@pytest.mark.parametrize("provider", ["meta", "twilio"])
def test_otp_login_v4_goes_as_an_authentication_template_and_is_sent(herald: Herald, provider: str) -> None:
    tenant = new_tenant()
    herald.use_providers(tenant, whatsapp=[provider])
    base = herald.fakes.env["HERALD_META_BASE_URL" if provider == "meta" else "HERALD_TWILIO_BASE_URL"]
    if provider == "twilio":  # the tenant's whatsapp/authentication content, approved: one variable
        assert httpx.post(f"{base}/_state", json={"content": {V4_CONTENT_SID: 1}}, timeout=10).status_code == 200
    code = {"meta": "505117", "twilio": "505217"}[provider]
    body = {
        "channel": "whatsapp",
        "template_id": "otp_login:v4",
        "locale": "en-GB",
        "to": {"phone": "+14155550187"},
        "variables": {"code": code},
        "priority": "high",
    }
    with herald.client(tenant) as api:
        r = post(api, body)
        assert r.status_code == 202, r.text
        assert r.json()["template"] == "otp_login:v4"
        view = herald.wait_status(api, r.json()["message_id"], lambda s: s not in ("queued", "sending"))
    received = httpx.get(f"{base}/_received", timeout=10).json()
    assert view["status"] in ACCEPTED, ([a["error"] for a in view["attempts"]], json.dumps(received)[-1500:])
    assert view["provider"] == provider and view["provider_message_id"]
    mine = [x for x in received if code in json.dumps(x)]
    assert mine, json.dumps(received)[-1500:]
    if provider == "meta":
        template = mine[-1]["body"]["template"]
        assert template["name"] == "otp_login" and template["language"] == {"code": "en_GB"}
        assert template["components"] == [
            {"type": "body", "parameters": [{"type": "text", "text": code}]},
            {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": code}]},
        ]
    else:
        form = mine[-1]["body"]
        assert form["ContentSid"] == V4_CONTENT_SID and json.loads(form["ContentVariables"]) == {"1": code}
