"""Unsubscribe (RFC 8058), suppression of bad recipients, the providers report and tenant credentials."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, otp, post

pytestmark = [pytest.mark.ray, pytest.mark.integration]


def test_one_click_unsubscribe_stops_optional_mail_and_leaves_codes_flowing(herald: Herald) -> None:
    tenant = new_tenant()
    herald.token(tenant)
    herald.sql("UPDATE tenants SET config = config || '{\"unsubscribe\": true}'::jsonb WHERE slug = $1", tenant)
    with herald.client(tenant) as api:
        first = post(api, otp("leaver@example.com", variables={"code": "200001"})).json()["message_id"]
        herald.wait_status(api, first, lambda s: s == "sent")
        headers = next(r for r in herald.console_records() if r["message_id"] == first)["headers"]
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = headers["List-Unsubscribe"].strip("<>")
        assert httpx.get(url, timeout=30).status_code == 200  # a page, not an unsubscribe (scanners follow GETs)
        assert httpx.get(url.rsplit("/", 1)[0] + "/bogus-token").status_code == 404
        second = post(api, otp("leaver@example.com", variables={"code": "200002"})).json()["message_id"]
        assert herald.wait_status(api, second, lambda s: s not in ("queued", "sending"))["status"] == "sent"
        assert httpx.post(url, timeout=30).status_code == 200
        # The link came with a one-time code (auth, a required category): codes keep flowing, and the
        # unsubscribe stops every category the tenant does not require.
        code = post(api, otp("Leaver@Example.com", variables={"code": "200003"})).json()["message_id"]
        assert herald.wait_status(api, code, lambda s: s not in ("queued", "sending"))["status"] == "sent"
        news = post(api, {**otp("Leaver@Example.com"), "metadata": {"category": "marketing"}}).json()["message_id"]
        view = herald.wait_status(api, news, lambda s: s not in ("queued", "sending"))
        assert view["status"] == "suppressed"
        assert [e["type"] for e in view["events"]][-1] == "NotificationSuppressed"
        other = post(api, {**otp("stayer@example.com"), "metadata": {"category": "marketing"}}).json()["message_id"]
        assert herald.wait_status(api, other, lambda s: s not in ("queued", "sending"))["status"] == "sent"
    assert all(r["message_id"] != news for r in herald.console_records())


def test_bad_recipient_goes_on_the_suppression_list(herald: Herald) -> None:
    tenant = new_tenant()
    herald.use_providers(tenant, sms=["twilio"])
    landline = "+442079460123"  # Ofcom's London drama range: a valid number, and no SMS (Twilio 21614)
    control = httpx.post(f"{herald.fakes.env['HERALD_TWILIO_BASE_URL']}/_state", json={"landlines": [landline]})
    assert control.status_code == 200
    body = {"channel": "sms", "template_id": "otp_login", "to": {"phone": landline}, "variables": {"code": "1"}}
    with herald.client(tenant) as api:
        first = post(api, body).json()["message_id"]
        view = herald.wait_status(api, first, lambda s: s not in ("queued", "sending"))
        assert view["status"] == "failed" and view["attempts"][0]["error"]["class"] == "bad_recipient"
        again = post(api, body).json()["message_id"]
        assert herald.wait_status(api, again, lambda s: s not in ("queued", "sending"))["status"] == "suppressed"
    rows = herald.sql(
        "SELECT kind, address FROM suppressions WHERE tenant_id = (SELECT id FROM tenants WHERE slug = $1)", tenant
    )
    assert [(r["kind"], r["address"]) for r in rows] == [("phone", landline)]


def test_the_provider_report_is_the_platforms(herald: Herald) -> None:
    tenant = new_tenant()
    with herald.client(tenant) as api:
        assert api.get("/admin/providers").status_code == 403
    tenant_admin = {"Authorization": f"Bearer {herald.token(tenant, admin=True)}"}
    assert httpx.get(f"{herald.base_url}/admin/providers", headers=tenant_admin).status_code == 403
    platform = {"Authorization": f"Bearer {herald.platform_token()}"}
    r = httpx.get(f"{herald.base_url}/admin/providers", headers=platform)
    assert r.status_code == 200, r.text
    providers = {(p["channel"], p["provider"]): p for p in r.json()["providers"]}
    assert providers[("email", "ses")]["status"] == "configured" and providers[("email", "ses")]["enabled"]
    assert providers[("email", "console")]["failover_rank"] == 1


def test_a_tenant_brings_its_own_provider_credentials(herald: Herald) -> None:
    own, shared = new_tenant(), new_tenant()
    herald.use_providers(own, email=["sendgrid"])
    herald.use_providers(shared, email=["sendgrid"])
    admin = {"Authorization": f"Bearer {herald.token(own, admin=True)}"}
    with httpx.Client(base_url=herald.base_url, headers=admin, timeout=30) as api:
        r = api.put("/admin/credentials/email/sendgrid", json={"HERALD_SENDGRID_API_KEY": "SG.tenant-own-key-0001"})
        assert r.status_code == 200, r.text
        assert r.json()["names"] == ["HERALD_SENDGRID_API_KEY"]
        assert api.put("/admin/credentials/email/sendgrid", json={"PATH": "/tmp"}).status_code == 422
        fax = api.put("/admin/credentials/fax/sendgrid", json={"HERALD_X": "y"})
        assert fax.status_code == 422 and ["path", "channel"] in [e["loc"] for e in fax.json()["errors"]]
        message_id = post(api, otp("own@example.com")).json()["message_id"]
        attempts: list = []
        for _ in range(100):
            attempts = api.get(f"/api/notifications/{message_id}").json()["attempts"]
            if attempts:
                break
            time.sleep(0.2)
    # The emulator knows only the platform's key: the tenant's own key was really used, and refused
    # (a provider-wide failure: the message waits for the provider without using up its attempts).
    assert attempts and attempts[0]["error"]["class"] == "provider_down"
    with herald.client(shared) as api:
        ok = post(api, otp("shared@example.com")).json()["message_id"]
        assert herald.wait_status(api, ok, lambda s: s not in ("queued", "sending"))["status"] == "sent"
    stored = herald.sql("SELECT config::text AS c FROM tenants WHERE slug = $1", own)[0]["c"]
    assert "SG.tenant-own-key-0001" not in stored and "email:sendgrid" in stored
