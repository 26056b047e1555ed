"""Delivery feedback end to end on the session's stack: a message goes out through its provider's real
driver to the emulator, and the emulator reports back through Herald's real webhook routes, signed as the
provider signs, with no hand-made event: delivered, or bounced / failed (a hard bounce or an invalid
number suppressing the address). Push results retire tokens. The open pixel and the tracked link move
the analytics, whose figures are the events sent."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, post
from tests.e2e.test_channels import APNS_TOKEN, FCM_TOKEN, approve_whatsapp_template

pytestmark = [pytest.mark.ray, pytest.mark.integration]

GIF_HEADER = b"GIF89a"


def mobile() -> str:
    """A UK mobile number no other test uses."""
    return f"+447400{secrets.randbelow(1_000_000):06d}"


def email() -> str:
    return f"fb-{uuid.uuid4().hex[:10]}@example.com"


@dataclass(frozen=True)
class Case:
    channel: str
    provider: str
    base_setting: str  #: the emulator's base URL in fakes.env
    template: str
    variables: dict[str, str]
    bad: str  #: how the emulator is told the second recipient does not work
    bad_status: str  #: where that message ends
    suppresses: bool  #: whether its address is suppressed afterwards
    report_event: str  #: the event that report adds to the message
    extra: dict[str, Any] = field(default_factory=dict)

    def address(self) -> dict[str, str]:
        return {"email": email()} if self.channel == "email" else {"phone": mobile()}

    def mark_bad(self, herald: Herald, to: dict[str, str]) -> None:
        value = to.get("email") or to["phone"]
        doc: dict[str, Any]
        if self.bad == "bounce":
            doc = {"bounce": [value]}
        elif self.bad == "undelivered":
            doc = {"undelivered": {value: 30005}}  # unknown handset: the number is dead
        else:
            doc = {"fail": {value.lstrip("+"): 131026}}  # Meta: undeliverable
        control(herald, self.base_setting, doc)


CASES = [
    Case("email", "sendgrid", "HERALD_SENDGRID_BASE_URL", "otp_login:v3", {"code": "700001"}, "bounce", "bounced",
         True, "NotificationBounced"),
    Case("email", "ses", "HERALD_SES_ENDPOINT_URL", "otp_login:v3", {"code": "700002"}, "bounce", "bounced", True,
         "NotificationBounced"),
    Case("sms", "twilio", "HERALD_TWILIO_BASE_URL", "otp_login:v3", {"code": "700003"}, "undelivered", "failed",
         True, "NotificationFailed"),
    Case("whatsapp", "meta", "HERALD_META_BASE_URL", "security_alert", {"device": "Pixel 7"}, "fail", "failed",
         False, "NotificationFailed"),
]  # fmt: skip


def control(herald: Herald, base_setting: str, doc: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{herald.fakes.env[base_setting]}/_state", json=doc, timeout=10)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def callbacks(herald: Herald, base_setting: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{herald.fakes.env[base_setting]}/_callbacks", timeout=10).json()
    return found


def _named(callback: dict[str, Any]) -> set[str]:
    """The Herald message ids a callback names (in its body, or in the URL Herald gave the provider)."""
    return set(re.findall(r"msg_[0-9a-f]{32}", callback["url"] + callback["body"]))


def types(view: dict[str, Any]) -> list[str]:
    return [e["type"] for e in view["events"]]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.channel}-{c.provider}")
def test_the_provider_reports_delivered_and_bounced_through_the_webhook(herald: Herald, case: Case) -> None:
    tenant = new_tenant()
    herald.use_providers(tenant, **{case.channel: [case.provider]})
    if case.channel == "whatsapp":
        approve_whatsapp_template(herald, case.provider)
    good, bad = case.address(), case.address()
    case.mark_bad(herald, bad)
    with herald.client(tenant) as api:
        body = {"channel": case.channel, "template_id": case.template, "variables": case.variables}
        ok_id = post(api, {**body, "to": good}).json()["message_id"]
        bad_id = post(api, {**body, "to": bad}).json()["message_id"]
        delivered = herald.wait_status(api, ok_id, lambda s: s not in ("queued", "sending", "sent"))
        failed = herald.wait_status(api, bad_id, lambda s: s not in ("queued", "sending", "sent"))
        assert delivered["status"] == "delivered", (delivered, callbacks(herald, case.base_setting)[-3:])
        assert types(delivered)[-1] == "NotificationDelivered" and "NotificationSent" in types(delivered)
        assert failed["status"] == case.bad_status, (failed, callbacks(herald, case.base_setting)[-3:])
        assert case.report_event in types(failed)
        again = post(api, {**body, "to": bad}).json()["message_id"]
        third = herald.wait_status(api, again, lambda s: s not in ("queued", "sending"))
    assert (third["status"] == "suppressed") is case.suppresses, third
    if not case.suppresses:
        assert third["status"] in ("sent", "delivered", "failed")
    mine = [c for c in callbacks(herald, case.base_setting) if {ok_id, bad_id} & _named(c)]
    if case.provider != "ses":  # SES events name SES's message id only (no configuration set here)
        assert mine and all(c["status"] == 200 for c in mine), mine


def test_sns_subscription_is_confirmed_through_the_subscribe_url(herald: Herald) -> None:
    proxy = herald.fakes.aws.proxy
    before = len(proxy.confirmed)
    control(herald, "HERALD_SES_ENDPOINT_URL", {"subscribe": True})
    deadline = time.monotonic() + 15
    while len(proxy.confirmed) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(proxy.confirmed) == before + 1
    answered = [c for c in callbacks(herald, "HERALD_SES_ENDPOINT_URL") if "SubscriptionConfirmation" in c["body"]]
    assert answered and answered[-1]["status"] == 200


def test_the_twilio_status_callback_carries_the_message_and_is_signed_for_that_url(herald: Herald) -> None:
    tenant = new_tenant()
    herald.use_providers(tenant, sms=["twilio"])
    with herald.client(tenant) as api:
        mid = post(api, {"channel": "sms", "template_id": "otp_login:v3", "to": {"phone": mobile()},
                         "variables": {"code": "700009"}}).json()["message_id"]  # fmt: skip
        herald.wait_status(api, mid, lambda s: s == "delivered")
    sent = [r for r in httpx.get(f"{herald.fakes.env['HERALD_TWILIO_BASE_URL']}/_received", timeout=10).json()]
    [form] = [r["body"] for r in sent if mid in r["body"].get("StatusCallback", "")]
    assert form["StatusCallback"] == f"{herald.settings.public_url}/webhooks/sms/twilio?herald_message_id={mid}"


@pytest.mark.parametrize("platform", ["fcm", "apns"])
def test_an_unregistered_push_token_is_retired_for_every_category(herald: Herald, platform: str) -> None:
    token = (FCM_TOKEN if platform == "fcm" else APNS_TOKEN)[:-8] + secrets.token_hex(4)
    if platform == "fcm":
        control(herald, "HERALD_FCM_BASE_URL", {"unregistered": [token]})
    else:
        herald.fakes.apns.emulator.control({"unregistered": {token: None}})
    tenant = new_tenant()
    push = {"channel": "push", "to": {"push": {"platform": platform, "token": token}}}
    with herald.client(tenant) as api:
        first = post(api, {**push, "template_id": "otp_login:v3", "variables": {"code": "700010"}}).json()
        failed = herald.wait_status(api, first["message_id"], lambda s: s not in ("queued", "sending"))
        assert failed["status"] == "failed" and failed["attempts"][-1]["error"]["class"] == "bad_recipient", failed
        other = post(api, {**push, "template_id": "security_alert", "variables": {"device": "Pixel"}}).json()
        later = herald.wait_status(api, other["message_id"], lambda s: s not in ("queued", "sending"))
    assert later["status"] == "suppressed"  # another category: the token is dead for all of them
    rows = herald.sql("SELECT kind, category FROM suppressions s JOIN tenants t ON t.id = s.tenant_id "
                      "WHERE t.slug = $1 AND s.address = $2", tenant, token)  # fmt: skip
    assert [(r["kind"], r["category"]) for r in rows] == [("device_token", None)]


def tracked_urls(herald: Herald, message_id: str) -> tuple[str, str]:
    """The open pixel and the first tracked link of a message, from the HTML SendGrid received."""
    received = httpx.get(f"{herald.fakes.env['HERALD_SENDGRID_BASE_URL']}/_received", timeout=10).json()
    [mail] = [r["body"] for r in received if message_id in str(r["body"])]
    html = next(c["value"] for c in mail["content"] if c["type"] == "text/html")
    pixel = re.search(r'src="([^"]*/t/o/[^"]+\.gif)"', html)
    link = re.search(r'href="([^"]*/l/[^"]+)"', html)
    assert pixel and link, html[-800:]
    return pixel.group(1), link.group(1).replace("&amp;", "&")


def test_opens_clicks_and_analytics_equal_the_events_sent(herald: Herald) -> None:
    tenant = new_tenant()
    herald.use_providers(tenant, email=["sendgrid"])
    bounced = email()
    control(herald, "HERALD_SENDGRID_BASE_URL", {"bounce": [bounced]})
    body = {"channel": "email", "template_id": "otp_login:v3", "variables": {"code": "700020"}}
    with herald.client(tenant) as api:
        ids = [post(api, {**body, "to": {"email": email()}}).json()["message_id"] for _ in range(3)]
        bounce_id = post(api, {**body, "to": {"email": bounced}}).json()["message_id"]
        for mid in ids:
            herald.wait_status(api, mid, lambda s: s == "delivered")
        herald.wait_status(api, bounce_id, lambda s: s == "bounced")
        pixel, link = tracked_urls(herald, ids[0])
        assert pixel.startswith(herald.settings.public_url)
        reader = {"User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Safari/605.1.15"}
        for agent in (reader, {"User-Agent": "Mozilla/5.0"}):  # a person, then Apple's privacy proxy
            image = httpx.get(pixel, headers=agent, timeout=10)
            assert image.status_code == 200 and image.headers["content-type"] == "image/gif"
            assert image.content.startswith(GIF_HEADER) and len(image.content) == 43
            assert "no-store" in image.headers["cache-control"]
        tampered = httpx.get(pixel.replace("/t/o/", "/t/o/x"), timeout=10)
        assert tampered.status_code == 200 and tampered.content.startswith(GIF_HEADER)  # always the image
        click = httpx.get(link, headers=reader, timeout=10)
        assert click.status_code == 302 and click.headers["location"] == "https://help.example.com"
        view = api.get(f"/api/notifications/{ids[0]}").json()
        assert {"NotificationOpened", "NotificationClicked"} <= set(types(view))
        total = api.get("/api/analytics").json()["total"]
        by_provider = api.get("/api/analytics", params={"group_by": "provider,day"}).json()["rows"]
    expected = {"sent": 4, "delivered": 3, "bounced": 1, "opened": 1, "machine_opened": 1, "clicked": 1, "failed": 0}
    assert {k: total[k] for k in expected} == expected, total
    assert total["delivery_rate"] == 0.75 and total["bounce_rate"] == 0.25 and total["open_rate"] == round(1 / 3, 6)
    assert [(r["provider"], r["sent"], r["delivered"]) for r in by_provider] == [("sendgrid", 4, 3)]


def test_analytics_asks_for_a_valid_range(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        backwards = api.get("/api/analytics", params={"since": "2025-02-01", "until": "2025-01-01"})
        unknown = api.get("/api/analytics", params={"group_by": "planet"})
    assert backwards.status_code == 422 and ["query", "since"] in [e["loc"] for e in backwards.json()["errors"]]
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"][:2] == ["query", "group_by"]
