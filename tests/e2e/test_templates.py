"""Tenant-managed templates, preview and tracked links through the running API."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, post

#: A publish or rollback reaches every ingress replica when it next re-reads the tenant (within 2 s).
EVERY_REPLICA_S = 2.1

pytestmark = [pytest.mark.ray, pytest.mark.integration]

MANIFEST = {
    "category": "transactional",
    "channels": ["email", "sms"],
    "default_locale": "en",
    "variables": [{"name": "name", "type": "str", "required": True, "example": "Ada"}],
}


def doc(greeting: str) -> dict[str, Any]:
    return {
        "manifest": MANIFEST,
        "texts": {
            "en": {
                "subject.txt": f"{greeting} {{{{ name }}}}",
                "body.html": f"<p>{greeting}, {{{{ name }}}}!</p>",
                "sms.txt": f"{greeting} {{{{ name }}}}",
            },
        },
    }


def send(herald: Herald, api: httpx.Client, template: str, **variables: Any) -> dict[str, Any]:
    r = post(
        api, {"channel": "email", "template_id": template, "to": {"email": "t@example.com"}, "variables": variables}
    )
    assert r.status_code == 202, r.text
    view = herald.wait_status(api, r.json()["message_id"], lambda s: s == "sent")
    return next(x for x in herald.console_records() if x["message_id"] == view["message_id"])


def test_draft_publish_send_and_rollback(herald: Herald) -> None:
    tenant = new_tenant()
    with herald.client(tenant) as api:
        assert api.put("/api/templates/welcome/draft", json=doc("Hello")).status_code == 200
        assert api.get("/api/templates/welcome/draft").json()["texts"]["en"]["subject.txt"] == "Hello {{ name }}"
        v1 = api.post("/api/templates/welcome/publish")
        assert v1.status_code == 200 and v1.json()["version"] == 1
        assert api.post("/api/templates/welcome/publish").status_code == 409  # no draft left
        time.sleep(EVERY_REPLICA_S)
        assert send(herald, api, "welcome", name="Ada")["subject"] == "Hello Ada"

        api.put("/api/templates/welcome/draft", json=doc("Howdy"))
        assert api.post("/api/templates/welcome/publish").json()["version"] == 2
        time.sleep(EVERY_REPLICA_S)
        assert send(herald, api, "welcome", name="Bo")["subject"] == "Howdy Bo"
        assert send(herald, api, "welcome:v1", name="Cy")["subject"] == "Hello Cy"  # pinned version

        back = api.post("/api/templates/welcome/rollback", json={"version": 1})
        assert back.json()["version"] == 3 and back.json()["republished_from"] == 1
        time.sleep(EVERY_REPLICA_S)
        assert send(herald, api, "welcome", name="Di")["subject"] == "Hello Di"
        listing = api.get("/api/templates/welcome").json()
        assert listing["latest"] == 3 and [v["version"] for v in listing["versions"]] == [1, 2, 3]
        assert api.get("/api/templates/welcome/versions/2").json()["texts"]["en"]["sms.txt"] == "Howdy {{ name }}"
    audit = herald.sql(
        "SELECT action, subject FROM audit_log WHERE tenant_id = (SELECT id FROM tenants WHERE slug = $1) ORDER BY id",
        tenant,
    )
    assert [(a["action"], a["subject"]) for a in audit] == [
        ("template.publish", "welcome:v1"),
        ("template.publish", "welcome:v2"),
        ("template.rollback", "welcome:v3"),
    ]


def test_published_versions_are_immutable(herald: Herald) -> None:
    tenant = new_tenant()
    with herald.client(tenant) as api:
        api.put("/api/templates/frozen/draft", json=doc("One"))
        api.post("/api/templates/frozen/publish")
    with pytest.raises(Exception, match="immutable"):
        herald.sql("UPDATE tenant_templates SET texts = '{}' WHERE template_id = 'frozen' AND version = 1")


def test_tenant_override_is_isolated(herald: Herald) -> None:
    owner, other = new_tenant(), new_tenant()
    with herald.client(owner) as api:
        api.put("/api/templates/otp_login/draft", json=doc("Custom"))
        api.post("/api/templates/otp_login/publish")
        time.sleep(EVERY_REPLICA_S)
        assert send(herald, api, "otp_login", name="Ed")["subject"] == "Custom Ed"
        r = post(
            api,
            {
                "channel": "email",
                "template_id": "otp_login:v3",
                "to": {"email": "t@example.com"},
                "variables": {"code": "123456"},
            },
        )
        assert r.status_code == 422  # the tenant's otp_login has only v1: shipped versions are not mixed in
    with herald.client(other) as api:
        assert "Custom" not in send(herald, api, "otp_login", code="654321")["subject"]
        assert (
            post(
                api,
                {
                    "channel": "email",
                    "template_id": "welcome_only_" + owner,
                    "to": {"email": "t@x.io"},
                    "variables": {},
                },
            ).status_code
            == 422
        )


@pytest.mark.parametrize(
    "payload",
    ["{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ self.__init__.__globals__ }}", "{{ cycler.__init__ }}"],
)
def test_unsafe_templates_are_refused_at_draft(herald: Herald, payload: str) -> None:
    bad = doc("Hi")
    bad["texts"]["en"]["subject.txt"] = payload
    with herald.client(new_tenant()) as api:
        r = api.put("/api/templates/evil/draft", json=bad)
    assert r.status_code == 422, r.text


def test_preview_reports_parts_and_sms_segments(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        sms = api.post(
            "/api/preview", json={"template_id": "otp_login:v2", "channel": "sms", "variables": {"code": "1"}}
        )
        assert sms.status_code == 200, sms.text
        assert sms.json()["sms"]["encoding"] == "GSM-7" and sms.json()["sms"]["segments"] == 1
        email = api.post(
            "/api/preview", json={"template_id": "magic_link_login", "channel": "email", "locale": "en-GB"}
        )
        body = email.json()
        assert body["locale_used"] == "en-GB" and body["parts"]["subject.txt"]
        bad = api.post("/api/preview", json={"template_id": "otp_login", "channel": "email", "variables": {"code": 5}})
        assert bad.status_code in (200, 422)


def test_shortlink_redirects_and_counts(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        r = api.post("/api/shortlinks", json={"url": "https://example.com/sale?x=1"})
        assert r.status_code == 201, r.text
        link = r.json()
        hop = httpx.get(link["short_url"], follow_redirects=False)
        assert hop.status_code == 302 and hop.headers["location"] == "https://example.com/sale?x=1"
        assert api.get(f"/api/shortlinks/{link['id']}").json()["clicks"] == 1
        token = link["short_url"].rsplit("/", 1)[-1]
        tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        assert httpx.get(f"{herald.base_url}/l/{tampered}", follow_redirects=False).status_code == 404
        assert api.post("/api/shortlinks", json={"url": "javascript:alert(1)"}).status_code == 422


def test_click_on_a_tracked_link_is_an_event_on_the_message(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        r = post(
            api,
            {
                "channel": "email",
                "template_id": "magic_link_login",
                "to": {"email": "m@example.com"},
                "variables": {"link": "https://app.example.com/login?t=abc"},
            },
        )
        message_id = r.json()["message_id"]
        herald.wait_status(api, message_id, lambda s: s == "sent")
        html = next(x for x in herald.console_records() if x["message_id"] == message_id)["html"]
        tracked = re.findall(r'href="([^"]*/l/[^"]+)"', html)
        assert tracked, html
        hop = httpx.get(tracked[0].replace("&amp;", "&"), follow_redirects=False)
        assert hop.status_code == 302
        events = api.get(f"/api/notifications/{message_id}").json()["events"]
        clicked = next(e for e in events if e["type"] == "NotificationClicked")
        assert clicked["meta"]["url"] == hop.headers["location"] and isinstance(clicked["meta"]["link_index"], int)


def test_tenant_partials_apply_to_the_tenants_templates(herald: Herald) -> None:
    tenant = new_tenant()
    with herald.client(tenant) as api:
        r = api.put("/api/partials/en/header.html", json={"text": "<h1>ACME {{ name }}</h1>"})
        assert r.status_code == 200, r.text
        assert api.put("/api/partials/en/../x", json={"text": "x"}).status_code in (404, 422)
        assert api.put("/api/partials/en/bad.html", json={"text": "{% if %}"}).status_code == 422
        with_header = doc("Hi")
        with_header["texts"]["en"]["body.html"] = '{% include "header.html" %}<p>Hi {{ name }}</p>'
        assert api.put("/api/templates/branded/draft", json=with_header).status_code == 200
        api.post("/api/templates/branded/publish")
        time.sleep(EVERY_REPLICA_S)
        assert "<h1>ACME Flo</h1>" in send(herald, api, "branded", name="Flo")["html"]
        assert [p["name"] for p in api.get("/api/partials").json()["partials"]] == ["header.html"]
    with herald.client(new_tenant()) as other:  # another tenant's shipped templates keep the shipped header
        assert "ACME" not in (send(herald, other, "otp_login:v2", code="123123")["html"] or "")


def test_a_draft_is_checked_with_the_tenants_own_partials_and_unsafe_partials_are_refused(herald: Herald) -> None:
    tenant = new_tenant()
    with herald.client(tenant) as api:
        unsafe = api.put("/api/partials/en/header.html", json={"text": "{{ ''.__class__.__mro__ }}"})
        assert unsafe.status_code == 422, unsafe.text
        assert "sandbox" in unsafe.json()["errors"][0]["msg"] and unsafe.json()["errors"][0]["loc"] == ["body", "text"]
        # a partial of a name Herald does not ship, used by the tenant's own template
        assert api.put("/api/partials/en/promo.html", json={"text": "<b>{{ name }} gets 10%</b>"}).status_code == 200
        promo = doc("Hi")
        promo["texts"]["en"]["body.html"] = '<p>Hi</p>{% include "promo.html" %}'
        drafted = api.put("/api/templates/promo/draft", json=promo)
        assert drafted.status_code == 200, drafted.text
        api.post("/api/templates/promo/publish")
        time.sleep(EVERY_REPLICA_S)
        assert "<b>Flo gets 10%</b>" in send(herald, api, "promo", name="Flo")["html"]
        # a draft whose include needs what the tenant's partial does not get is refused up front
        assert api.put("/api/partials/en/needs.html", json={"text": "{{ coupon }}"}).status_code == 200
        broken = doc("Hi")
        broken["texts"]["en"]["body.html"] = '{% include "needs.html" %}'
        refused = api.put("/api/templates/broken/draft", json=broken)
        assert refused.status_code == 422 and "coupon" in refused.text, refused.text


def test_preview_takes_the_body_a_notification_would_send(herald: Herald) -> None:
    tenant = new_tenant()
    notification = {
        "tenant_id": tenant,
        "idempotency_key": "preview-then-send",
        "channel": "sms",
        "template_id": "otp_login:v2",
        "to": {"phone": "+447911123456"},
        "variables": {"code": "123456"},
        "priority": "high",
        "ttl_seconds": 300,
        "metadata": {"category": "auth", "tags": ["otp"]},
    }
    with herald.client(tenant) as api:
        shown = api.post("/api/preview", json=notification)
        assert shown.status_code == 200, shown.text
        bare = api.post(
            "/api/preview", json={"template_id": "otp_login:v2", "channel": "sms", "variables": {"code": "123456"}}
        )
        assert shown.json() == bare.json()  # delivery fields do not change what is rendered
        assert "123456" in shown.json()["parts"]["sms.txt"] and shown.json()["sms"]["segments"] == 1
        foreign = api.post("/api/preview", json={**notification, "tenant_id": "someone_else"})
        assert foreign.status_code == 403 and ["body", "tenant_id"] in [e["loc"] for e in foreign.json()["errors"]]
        assert api.post("/api/notifications", json=notification).status_code == 202  # the same payload sends
