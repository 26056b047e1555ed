"""Through the running stack: a batch is sent and its progress says so; the README's example producer's
message on the ingress queue is sent like one the API accepted."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from examples.ingress_producer import publish
from tests.e2e.conftest import Herald


def otp(email: str, key: str) -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login:v3",
        "locale": "en-GB",
        "to": {"email": email},
        "variables": {"code": "384921"},
        "idempotency_key": key,
    }


def admin(herald: Herald, tenant: str) -> httpx.Client:
    token = herald.token(tenant, admin=True)
    return httpx.Client(base_url=herald.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_a_batch_is_sent_and_its_progress_shows_it(herald: Herald) -> None:
    tenant = f"t_{uuid.uuid4().hex[:10]}"
    run = uuid.uuid4().hex[:8]
    with admin(herald, tenant) as api:
        items = [otp(f"user{i}@example.com", f"{run}-{i}") for i in range(20)] + [{"channel": "fax"}]
        r = api.post("/api/batch", json=items)
        assert r.status_code == 202, r.text
        doc = r.json()
        assert (doc["accepted"], doc["rejected"]) == (20, 1) and doc["items"][20]["code"] == 422
        deadline = time.monotonic() + 60
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            view = api.get(f"/api/batches/{doc['batch_id']}").json()
            if view["counts"].get("sent") == 20:
                break
            time.sleep(0.2)
        assert view["counts"] == {"sent": 20} and view["pending"] == 0 and view["eta_s"] == 0, view
        sent = herald.wait_status(api, doc["items"][0]["message_id"], lambda s: s == "sent")
        assert [e["type"] for e in sent["events"]] == ["NotificationAccepted", "NotificationSent"]


def test_the_example_producer_reaches_a_sender(herald: Herald, amqp_url: str) -> None:
    tenant = f"t_{uuid.uuid4().hex[:10]}"
    with admin(herald, tenant) as api:
        shown = api.get("/api/ingress/key")
        assert shown.status_code == 200, shown.text
        key, queue = shown.json()["key"], shown.json()["queue"]
        assert herald.settings.queue_prefix and queue == herald.settings.queue_prefix + "notifications.ingress"
        idempotency_key = f"ingress-{uuid.uuid4().hex}"
        asyncio.run(publish(amqp_url, tenant, key, [otp("ada@example.com", idempotency_key)], queue=queue))
        deadline = time.monotonic() + 30
        rows: list[Any] = []
        while not rows and time.monotonic() < deadline:
            rows = herald.sql("SELECT id FROM messages WHERE idempotency_key = $1", idempotency_key)
            time.sleep(0.2)
        assert rows, "the ingress consumer did not accept the message"
        view = herald.wait_status(api, "msg_" + rows[0]["id"].hex, lambda s: s == "sent")
        assert view["provider"] == "console"
        rotated = api.post("/api/ingress/key/rotate").json()
        assert rotated["key"] != key and rotated["previous_expires_at"] is not None
        assert rotated["queue"] == queue
