"""API keys, the audit log, recipients' preferences, suppression lists, STOP / START replies and unsubscribe
key rotation, over HTTP on the session's stack (two ingress replicas)."""

from __future__ import annotations

import json
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from drivers.fakes.meta import meta_signature
from drivers.fakes.twilio import twilio_signature
from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, otp, post

pytestmark = [pytest.mark.ray, pytest.mark.integration]

DONE = lambda s: s not in ("queued", "sending")  # noqa: E731


def admin(herald: Herald, tenant: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {herald.token(tenant, admin=True)}"}
    return httpx.Client(base_url=herald.base_url, headers=headers, timeout=30)


def with_key(herald: Herald, key: str) -> httpx.Client:
    return httpx.Client(base_url=herald.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def platform(herald: Herald) -> httpx.Client:
    headers = {"Authorization": f"Bearer {herald.platform_token()}"}
    return httpx.Client(base_url=herald.base_url, headers=headers, timeout=30)


def number() -> str:
    return f"+447400{random.randrange(10**6):06d}"


def sms(phone: str, category: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"channel": "sms", "template_id": "otp_login", "to": {"phone": phone}}
    body["variables"] = {"code": f"{random.randrange(10**6):06d}"}  # a new code: never deduplicated
    if category:
        body["metadata"] = {"category": category}
    return body


def test_the_stack_serves_from_two_ingress_replicas(herald: Herald) -> None:
    from ray import serve

    replicas = serve.status().applications["herald"].deployments["HeraldApi"].replica_states
    assert replicas.get("RUNNING") == 2, replicas


def test_api_keys_are_scoped_listed_and_revoked_on_every_replica(herald: Herald) -> None:
    tenant, other = new_tenant(), new_tenant()
    with admin(herald, tenant) as api:
        created = api.post("/api/keys", json={"name": "backend", "scopes": ["send", "read"]})
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["id"]
        assert key.startswith(f"{key_id}_") and key_id.startswith("hk_live_")
        reader = api.post("/api/keys", json={"name": "dashboard", "scopes": ["read"]}).json()
        bad = api.post("/api/keys", json={"name": "x", "scopes": ["platform"]})
        assert bad.status_code == 422 and bad.json()["errors"][0]["loc"][:2] == ["body", "scopes"]
    with with_key(herald, key) as live:
        accepted = post(live, otp("keyed@example.com"))
        assert accepted.status_code == 202, accepted.text
        view = herald.wait_status(live, accepted.json()["message_id"], DONE)
        assert view["status"] == "sent"
        # Every replica reads the key once and caches it: both serve it before the revocation.
        assert all(live.get("/api/notifications?limit=1").status_code == 200 for _ in range(20))
    with with_key(herald, reader["key"]) as read_only:
        assert post(read_only, otp()).status_code == 403  # no send scope
        assert read_only.get("/api/keys").status_code == 403  # no admin scope
    with admin(herald, tenant) as api:
        listed = api.get("/api/keys").json()["items"]
        assert {k["id"] for k in listed} == {key_id, reader["id"]}
        assert key not in json.dumps(listed) and all("key" not in k for k in listed)  # never the secret
        with admin(herald, other) as stranger:
            assert stranger.delete(f"/api/keys/{key_id}").status_code == 404  # another tenant's key
            assert stranger.get("/api/keys").json()["items"] == []
        revoked = api.delete(f"/api/keys/{key_id}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert api.delete(f"/api/keys/{key_id}").json()["revoked_at"] == revoked.json()["revoked_at"]
        revoked_at = time.monotonic()
    with with_key(herald, key) as live:
        time.sleep(max(0.0, revoked_at + 1.2 - time.monotonic()))  # a second and a little more
        answers = [live.get("/api/notifications?limit=1").status_code for _ in range(20)]
    assert answers == [401] * 20, answers  # on both replicas, whichever served the DELETE
    with platform(herald) as ops:
        assert ops.get("/api/keys").status_code == 403  # the platform acts for no tenant


def test_a_test_mode_key_sends_to_the_sink_marked_as_a_test(herald: Herald) -> None:
    tenant = new_tenant()
    with admin(herald, tenant) as api:
        key = api.post("/api/keys", json={"name": "ci", "scopes": ["send", "read"], "test_mode": True}).json()
    assert key["id"].startswith("hk_test_") and key["test_mode"]
    with with_key(herald, key["key"]) as test:
        view = herald.wait_status(test, post(test, otp("ci@example.com")).json()["message_id"], DONE)
    assert view["status"] == "sent" and view["provider"] == "sink"
    assert view["metadata"]["test_mode"] is True
    assert all(r["message_id"] != view["message_id"] for r in herald.console_records())


def test_audit_lists_a_tenants_own_records_and_the_platform_sees_all(herald: Herald) -> None:
    tenant, other = new_tenant(), new_tenant()
    with admin(herald, tenant) as api:
        key_id = api.post("/api/keys", json={"name": "audited", "scopes": ["read"]}).json()["id"]
        assert api.delete(f"/api/keys/{key_id}").status_code == 200
        assert api.post("/api/unsubscribe/key/rotate").status_code == 200
        page = api.get("/api/audit", params={"action": "api_key.*"}).json()
        assert [(e["action"], e["subject"]) for e in page["items"]] == [
            ("api_key.revoke", key_id),
            ("api_key.create", key_id),
        ]
        first = api.get("/api/audit", params={"limit": 1}).json()
        assert first["items"][0]["action"] == "unsubscribe_key.rotate" and first["next_cursor"]
        second = api.get("/api/audit", params={"limit": 1, "cursor": first["next_cursor"]}).json()
        assert second["items"][0]["action"] == "api_key.revoke"
        assert api.get("/api/audit", params={"tenant": other}).status_code == 403
        assert api.get("/api/audit", params={"cursor": "bogus"}).status_code == 422
        assert api.get("/admin/audit").status_code == 403  # a platform route
    with admin(herald, other) as stranger:
        assert stranger.get("/api/audit").json()["items"] == []
    with platform(herald) as ops:
        found = ops.get("/admin/audit", params={"tenant": tenant, "action": "api_key.create"}).json()["items"]
        assert [(e["tenant"], e["subject"]) for e in found] == [(tenant, key_id)]
        since = ops.get("/admin/audit", params={"tenant": tenant, "after": "2999-01-01T00:00:00Z"}).json()
        assert since["items"] == []
        assert ops.get("/api/audit").status_code == 403


def test_preferences_are_honoured_and_required_categories_cannot_be_opted_out_of(herald: Herald) -> None:
    tenant, other = new_tenant(), new_tenant()
    user = f"user-{uuid.uuid4().hex[:6]}"
    with herald.client(tenant) as api:
        refused = api.put(f"/api/recipients/{user}/preferences", json={"categories": {"auth": {"email": False}}})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["loc"] == ["body", "categories", "auth", "email"]
        put = api.put(
            f"/api/recipients/{user}/preferences", json={"categories": {"marketing": {"email": False, "sms": True}}}
        )
        assert put.status_code == 200, put.text
        got = api.get(f"/api/recipients/{user}/preferences").json()
        assert got["categories"] == {"marketing": {"email": False, "sms": True}}
        assert got["required_categories"] == ["auth", "transactional"]
        to = {"email": "pref@example.com", "user_id": user}
        marketing = post(api, {**otp(), "to": to, "metadata": {"category": "marketing"}}).json()["message_id"]
        code = post(api, {**otp(), "to": to}).json()["message_id"]
        stopped = herald.wait_status(api, marketing, DONE)
        assert stopped["status"] == "suppressed"
        assert stopped["events"][-1]["meta"]["reason"] == "recipient preference: marketing off on email"
        assert herald.wait_status(api, code, DONE)["status"] == "sent"
    with herald.client(other) as stranger:  # preferences are the tenant's own
        assert stranger.get(f"/api/recipients/{user}/preferences").json()["categories"] == {}


def test_suppressions_by_category_are_tenant_scoped(herald: Herald) -> None:
    tenant, other = new_tenant(), new_tenant()
    address = f"sup-{uuid.uuid4().hex[:6]}@example.com"
    with admin(herald, tenant) as api:
        entry = {"channel": "email", "address": address.upper(), "category": "marketing", "reason": "asked"}
        created = api.post("/api/suppressions", json=entry)
        assert created.status_code == 201, created.text
        assert created.json()["address"] == address and created.json()["scope"] == "category"
        assert api.post("/api/suppressions", json=entry).json()["id"] == created.json()["id"]
        required = api.post("/api/suppressions", json={**entry, "category": "auth"})
        assert required.status_code == 422 and required.json()["errors"][0]["loc"] == ["body", "category"]
        marketing = post(api, {**otp(address), "metadata": {"category": "marketing"}}).json()["message_id"]
        code = post(api, otp(address)).json()["message_id"]
        assert herald.wait_status(api, marketing, DONE)["status"] == "suppressed"
        assert herald.wait_status(api, code, DONE)["status"] == "sent"  # auth keeps flowing
        dead = api.post("/api/suppressions", json={"channel": "email", "address": address, "reason": "bounced"})
        assert dead.status_code == 201 and dead.json()["scope"] == "all"
        blocked = post(api, otp(address)).json()["message_id"]
        assert herald.wait_status(api, blocked, DONE)["status"] == "suppressed"  # every category
        listed = api.get("/api/suppressions", params={"channel": "email", "address": address}).json()["items"]
        assert {e["id"] for e in listed} == {created.json()["id"], dead.json()["id"]}
        assert api.get("/api/suppressions", params={"address": address}).status_code == 422  # needs channel
    with admin(herald, other) as stranger:
        assert stranger.delete(f"/api/suppressions/{dead.json()['id']}").status_code == 404
        assert stranger.get("/api/suppressions").json()["items"] == []
        assert stranger.delete("/api/suppressions/not-an-id").status_code == 404
    with admin(herald, tenant) as api:
        assert api.delete(f"/api/suppressions/{dead.json()['id']}").status_code == 200
        again = post(api, otp(address, variables={"code": "384922"})).json()["message_id"]  # not the first's
        assert herald.wait_status(api, again, DONE)["status"] == "sent"
    with platform(herald) as ops:
        assert ops.get("/api/suppressions").status_code == 403


def _twilio_inbound(herald: Herald, phone: str, text: str, *, token: str | None = None) -> httpx.Response:
    path = "/webhooks/sms/twilio/inbound"
    params = {"From": phone, "To": "+15005550006", "Body": text, "MessageSid": f"SM{uuid.uuid4().hex}"}
    params["AccountSid"] = herald.fakes.env["HERALD_TWILIO_ACCOUNT_SID"]
    secret = token or herald.fakes.env["HERALD_TWILIO_AUTH_TOKEN"]
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-twilio-signature": twilio_signature(secret, herald.base_url + path, params),
    }
    return httpx.post(herald.base_url + path, content=urllib.parse.urlencode(params), headers=headers, timeout=30)


def test_stop_help_and_start_round_trip_through_the_signed_twilio_webhook(herald: Herald) -> None:
    tenant, bystander = new_tenant(), new_tenant()
    phone = number()
    with herald.client(tenant) as api:
        first = post(api, sms(phone, "marketing")).json()["message_id"]
        assert herald.wait_status(api, first, DONE)["status"] == "sent"
        assert _twilio_inbound(herald, phone, "STOP", token="not-the-auth-token").status_code == 403
        stop = _twilio_inbound(herald, phone, "Stop.")
        assert stop.status_code == 200, stop.text
        assert stop.headers["content-type"].startswith("application/xml") and "<Message>" not in stop.text
        listed = api.get("/api/suppressions", params={"channel": "sms", "address": phone}).json()["items"]
        assert [(e["scope"], e["channels"]) for e in listed] == [("non_required", ["sms", "whatsapp"])]
        marketing = post(api, sms(phone, "marketing")).json()["message_id"]
        code = post(api, sms(phone)).json()["message_id"]
        assert herald.wait_status(api, marketing, DONE)["status"] == "suppressed"
        assert herald.wait_status(api, code, DONE)["status"] == "sent"  # one-time codes still go
        help_reply = _twilio_inbound(herald, phone, "HELP")
        assert "<Message>Reply STOP to stop these messages" in help_reply.text
        # The emulator posts a reply the way Twilio does, and keeps what Herald answered.
        twilio = herald.fakes.env["HERALD_TWILIO_BASE_URL"]
        assert httpx.post(f"{twilio}/_state", json={"reply": {"from": phone, "body": "info"}}).status_code == 200
        sender = urllib.parse.urlencode({"From": phone})
        answers = _wait(lambda: [c for c in httpx.get(f"{twilio}/_callbacks").json() if sender in c["body"]])
        assert answers[0]["status"] == 200 and "<Message>Reply STOP" in answers[0]["answer"]
        assert _twilio_inbound(herald, phone, "START").status_code == 200
        assert api.get("/api/suppressions", params={"channel": "sms", "address": phone}).json()["items"] == []
        back = post(api, sms(phone, "marketing")).json()["message_id"]
        assert herald.wait_status(api, back, DONE)["status"] == "sent"
    with herald.client(bystander) as other:  # it never sent to the number: its list is untouched
        assert other.get("/api/suppressions").json()["items"] == []


def _wait(found: Callable[[], list[Any]], timeout_s: float = 15) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while not (items := found()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return items


def test_a_stop_reply_on_whatsapp_through_metas_signed_webhook(herald: Herald) -> None:
    tenant = new_tenant()
    phone = number()
    with herald.client(tenant) as api:
        sent = post(api, sms(phone)).json()["message_id"]
        herald.wait_status(api, sent, DONE)
        reply = {"from": phone.lstrip("+"), "id": f"wamid.{uuid.uuid4().hex}", "type": "text", "text": {"body": "STOP"}}
        doc = {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"messages": [reply]}}]}]}
        body = json.dumps(doc).encode()
        url = f"{herald.base_url}/webhooks/whatsapp/meta"
        forged = httpx.post(url, content=body, headers={"X-Hub-Signature-256": meta_signature("x", body)})
        assert forged.status_code == 403
        assert api.get("/api/suppressions").json()["items"] == []
        # The emulator posts the reply the way Meta does, signed with the app secret.
        meta = herald.fakes.env["HERALD_META_BASE_URL"]
        assert httpx.post(f"{meta}/_state", json={"reply": {"from": phone, "text": "STOP"}}).status_code == 200

        def listed() -> list[Any]:
            params = {"channel": "whatsapp", "address": phone}
            return list(api.get("/api/suppressions", params=params).json()["items"])

        assert [e["scope"] for e in _wait(listed)] == ["non_required"]


def test_unsubscribe_links_follow_the_tenants_rotated_key(herald: Herald) -> None:
    tenant = new_tenant()
    herald.token(tenant)
    herald.sql("UPDATE tenants SET config = config || '{\"unsubscribe\": true}'::jsonb WHERE slug = $1", tenant)

    def link(api: httpx.Client, address: str) -> str:
        mid = post(api, {**otp(address), "metadata": {"category": "marketing"}}).json()["message_id"]
        herald.wait_status(api, mid, DONE)
        return str(next(r for r in herald.console_records() if r["message_id"] == mid)["headers"]["List-Unsubscribe"])

    with herald.client(tenant) as api, admin(herald, tenant) as ops:
        before = link(api, "one@example.com").strip("<>")
        rotated = ops.post("/api/unsubscribe/key/rotate")
        assert rotated.status_code == 200 and rotated.json()["generation"] == 1
        after = link(api, "two@example.com").strip("<>")
        assert after.rsplit("/", 1)[1] != before.rsplit("/", 1)[1]
        assert httpx.post(before, timeout=30).status_code == 200  # the previous key, in its grace period
        assert httpx.post(after, timeout=30).status_code == 200
        assert ops.post("/api/unsubscribe/key/rotate").json()["generation"] == 2
        assert httpx.get(before, timeout=30).status_code == 404  # two rotations ago
        assert httpx.get(after, timeout=30).status_code == 200
    with platform(herald) as platform_ops:
        assert platform_ops.post("/api/unsubscribe/key/rotate").status_code == 403
