"""Events out, end to end: a receiver in this test verifies every Standard Webhooks delivery with the
``standardwebhooks`` package (the tenant's endpoints and a message's ``callback_url``), answers 500 to get
retries, checks both secrets around a rotation, and sees a time range replayed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, post
from tests.support.receiver import Delivery, Receiver

pytestmark = [pytest.mark.ray, pytest.mark.integration]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


def delivered_types(deliveries: list[Delivery]) -> list[str]:
    return [d.doc["type"] for d in deliveries if d.answered == 200]


def admin(herald: Herald, tenant: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {herald.token(tenant, admin=True)}"}
    return httpx.Client(base_url=herald.base_url, headers=headers, timeout=30)


def test_endpoints_and_callback_urls_get_signed_events_and_retries(herald: Herald, receiver: Receiver) -> None:
    tenant = new_tenant()
    herald.use_providers(tenant, email=["sendgrid"])
    receiver.fail["/all"] = 2  # the first two deliveries there are answered 500: retried
    with admin(herald, tenant) as api:
        secret = api.get("/api/webhooks/secret").json()["secret"]
        assert secret.startswith("whsec_")
        everything = api.post("/api/webhooks/endpoints", json={"url": receiver.url("/all")}).json()
        only = api.post(
            "/api/webhooks/endpoints",
            json={"url": receiver.url("/delivered"), "event_types": ["NotificationDelivered"], "description": "d"},
        ).json()
        assert everything["id"].startswith("ep_") and only["event_types"] == ["NotificationDelivered"]
        listed = api.get("/api/webhooks/endpoints").json()["endpoints"]
        assert {e["id"] for e in listed} == {everything["id"], only["id"]}
        to = {"email": f"o-{uuid.uuid4().hex[:8]}@example.com"}
        body = {"channel": "email", "template_id": "otp_login:v3", "to": to, "variables": {"code": "800001"},
                "callback_url": receiver.url("/callback")}  # fmt: skip
        accepted = post(api, body)
        assert accepted.status_code == 202, accepted.text
        mid = accepted.json()["message_id"]
        herald.wait_status(api, mid, lambda s: s == "delivered")
        wanted = {"NotificationAccepted", "NotificationSent", "NotificationDelivered"}
        at_all = receiver.wait("/all", lambda ds: wanted <= set(delivered_types(ds)))
        callback = receiver.wait("/callback", lambda ds: wanted <= set(delivered_types(ds)))
        filtered = receiver.wait("/delivered", lambda ds: bool(delivered_types(ds)))
        log = api.get(f"/api/webhooks/endpoints/{everything['id']}/deliveries").json()["deliveries"]
    for delivery in at_all + callback + filtered:  # every attempt, those answered 500 included
        payload = Webhook(secret).verify(delivery.body, delivery.headers)
        assert payload["data"]["tenant"] == tenant
    assert {d.doc["data"]["message_id"] for d in callback} == {mid}
    assert set(delivered_types(filtered)) == {"NotificationDelivered"}
    retried = [d for d in at_all if d.answered == 500]
    assert len(retried) == 2
    for failed in retried:  # the same delivery came again, with its id and body, and was taken
        again = [d for d in at_all if d.headers["webhook-id"] == failed.headers["webhook-id"] and d.answered == 200]
        assert again and again[0].body == failed.body
    retried_log = [e for e in log if e["attempts"] >= 2]
    assert retried_log and all(e["status"] == "delivered" for e in retried_log)
    # The two 500s went to one event twice or to two events once each, as the retries and the events met.
    codes = [[a["status_code"] for a in e["attempt_log"]] for e in retried_log]
    assert all(c[-1] == 200 and set(c[:-1]) == {500} for c in codes), codes
    assert sum(c.count(500) for c in codes) == 2, codes


def test_both_secrets_sign_during_a_rotation_and_a_range_replays(herald: Herald, receiver: Receiver) -> None:
    tenant = new_tenant()
    started = datetime.now(UTC) - timedelta(seconds=5)
    with admin(herald, tenant) as api:
        old = api.get("/api/webhooks/secret").json()["secret"]
        endpoint = api.post("/api/webhooks/endpoints", json={"url": receiver.url("/hook")}).json()
        rotated = api.post("/api/webhooks/secret/rotate").json()
        new = rotated["secret"]
        assert new != old and rotated["previous_expires_at"] and api.get("/api/webhooks/secret").json()["secret"] == new
        queued = api.post(f"/api/webhooks/endpoints/{endpoint['id']}/test")
        assert queued.status_code == 202, queued.text
        [test_event] = receiver.wait("/hook", lambda ds: len(ds) >= 1)
        for secret in (old, new):  # a receiver holding either secret accepts it
            assert Webhook(secret).verify(test_event.body, test_event.headers)["type"] == "WebhookEndpointTest"
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "QUJD" * 8).verify(test_event.body, test_event.headers)
        mid = post(api, {"channel": "email", "template_id": "otp_login:v3", "to": {"email": "r@example.com"},
                         "variables": {"code": "800002"}}).json()["message_id"]  # fmt: skip
        herald.wait_status(api, mid, lambda s: s == "sent")  # console: no provider report
        first = receiver.wait("/hook", lambda ds: {"NotificationSent"} <= set(delivered_types(ds)))
        replay = api.post(f"/api/webhooks/endpoints/{endpoint['id']}/replay", json={"since": started.isoformat()})
        assert replay.status_code == 202, replay.text
        count = replay.json()["queued"]
        assert count >= 2  # accepted and sent, at least
        everything = receiver.wait("/hook", lambda ds: len(ds) >= len(first) + count)
        other = admin(herald, new_tenant())
        assert other.get(f"/api/webhooks/endpoints/{endpoint['id']}").status_code == 404
        assert other.delete(f"/api/webhooks/endpoints/{endpoint['id']}").status_code == 404
        assert api.delete(f"/api/webhooks/endpoints/{endpoint['id']}").status_code == 204
        assert api.get(f"/api/webhooks/endpoints/{endpoint['id']}").status_code == 404
    replayed = everything[len(first) :]
    assert {d.doc["data"].get("message_id") for d in replayed} >= {mid}
    for delivery in replayed:
        Webhook(new).verify(delivery.body, delivery.headers)


def test_endpoint_input_is_checked(herald: Herald) -> None:
    with admin(herald, new_tenant()) as api:
        unknown = api.post("/api/webhooks/endpoints", json={"url": "https://hooks.example.com/h", "event_types": ["X"]})
        not_url = api.post("/api/webhooks/endpoints", json={"url": "not a url"})
        backwards = api.post(
            "/api/webhooks/endpoints/ep_0190b5a7c2f37d8e9a1b2c3d4e5f6a7b/replay", json={"since": "2025-01-01T00:00:00Z"}
        )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["body", "event_types", 0]
    assert not_url.status_code == 422 and ["body", "url"] in [e["loc"] for e in not_url.json()["errors"]]
    assert backwards.status_code == 404
    with herald.client(new_tenant()) as sender:  # send scope, not admin
        assert sender.get("/api/webhooks/secret").status_code == 403
