"""The HTTP API end to end on Ray: POST -> sent, auth, validation, idempotency, metrics, health."""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Herald

pytestmark = [pytest.mark.ray, pytest.mark.integration]


def otp(email: str = "ada@example.com", **extra: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login:v3",
        "locale": "en-GB",
        "to": {"email": email},
        "variables": {"code": "384921"},
        **extra,
    }


def new_tenant() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def post(client: httpx.Client, body: Any, key: str | None = None) -> httpx.Response:
    return client.post("/api/notifications", json=body, headers={"Idempotency-Key": key or uuid.uuid4().hex})


def test_healthz_reports_every_part(herald: Herald) -> None:
    r = httpx.get(f"{herald.base_url}/admin/healthz")
    assert r.status_code == 200, r.text
    checks = r.json()["checks"]
    assert checks["database"] == "ok" and checks["relay"] == "ok" and checks["sender-0"] == "ok"
    assert checks["feedback"] == "ok"


def test_post_is_sent_with_events_and_rendered_message(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        r = post(api, otp("grace@example.com"))
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "queued" and body["message_id"].startswith("msg_")
        view = herald.wait_status(api, body["message_id"], lambda s: s == "sent")
    assert view["provider"] == "console" and view["locale"] == "en-GB"
    assert [e["type"] for e in view["events"]] == ["NotificationAccepted", "NotificationSent"]
    assert view["attempts"][0]["provider"] == "console" and view["attempts"][0]["outcome"] == "sent"
    record = next(r for r in herald.console_records() if r["message_id"] == body["message_id"])
    assert record["to"] == "grace@example.com" and "384921" in record["text"] and record["subject"]


def test_auth_paths(herald: Herald) -> None:
    tenant = new_tenant()
    with herald.client() as anon:
        assert post(anon, otp()).status_code == 401
        r = anon.post("/api/notifications", json=otp(), headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    with herald.client(tenant) as api:
        r = post(api, otp(tenant_id="someone_else"))
        assert r.status_code == 403, r.text
        message_id = post(api, otp()).json()["message_id"]
        assert api.get(f"/api/notifications/{message_id}").status_code == 200
        assert api.get("/api/notifications/msg_not-an-id").status_code == 404
        assert api.get("/api/notifications/msg_" + "0" * 32).status_code == 404
    with herald.client(new_tenant()) as other:
        assert other.get(f"/api/notifications/{message_id}").status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"channel": "fax"}, ["body", "channel"]),
        ({"priority": "urgent"}, ["body", "priority"]),
        ({"locale": "xx-QQ"}, ["body", "locale"]),
        ({"ttl_seconds": 0}, ["body", "ttl_seconds"]),
        ({"schedule_at": "2030-01-01T10:00:00"}, ["body", "schedule_at"]),
        ({"to": {"phone": "+14155550123"}}, ["body", "to", "email"]),
        ({"template_id": "no_such_template"}, ["body", "template_id"]),
        ({"template_id": "otp_login:v99"}, ["body", "template_id"]),
        ({"variables": {}}, ["body", "variables", "code"]),
        ({"unexpected": 1}, ["body", "unexpected"]),
    ],
)
def test_invalid_fields_are_422_naming_the_field(herald: Herald, change: dict[str, Any], field: list[str]) -> None:
    with herald.client(new_tenant()) as api:
        r = post(api, {**otp(), **change})
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["status"] == 422 and field in [e["loc"] for e in problem["errors"]], problem


def test_malformed_json_and_missing_key(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        r = api.post("/api/notifications", content=b"{not json", headers={"Idempotency-Key": "k"})
        assert r.status_code == 400
        r = api.post("/api/notifications", json=otp())
        assert r.status_code == 422 and ["header", "Idempotency-Key"] in [e["loc"] for e in r.json()["errors"]]


def test_idempotent_replay_and_conflict(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        first = post(api, otp(), "key-1")
        again = post(api, otp(trace_id="another-trace"), "key-1")
        assert again.status_code == 202 and again.headers.get("Idempotent-Replayed") == "true"
        assert again.json() == first.json()
        assert post(api, otp("other@example.com"), "key-1").status_code == 422
        r = api.post("/api/notifications", json=otp(idempotency_key="body-key"), headers={"Idempotency-Key": "x"})
        assert r.status_code == 422


def test_twenty_concurrent_posts_with_one_key_send_once(herald: Herald) -> None:
    tenant = new_tenant()
    token = herald.token(tenant)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=herald.base_url, headers={"Authorization": f"Bearer {token}"}) as c:
            return post(c, otp("once@example.com"), "race-key")

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(one, range(20)))
    assert {r.status_code for r in responses} <= {202, 409}
    ids = {r.json()["message_id"] for r in responses if r.status_code == 202}
    assert len(ids) == 1
    message_id = ids.pop()
    with herald.client(tenant) as api:
        herald.wait_status(api, message_id, lambda s: s == "sent")
    rows = herald.sql("SELECT count(*) AS n FROM messages WHERE idempotency_key = 'race-key'")
    assert rows[0]["n"] == 1
    assert sum(r["message_id"] == message_id for r in herald.console_records()) == 1


def test_metrics_count_sends_with_the_spec_labels(herald: Herald) -> None:
    tenant = new_tenant()
    with herald.client(tenant) as api:
        ids = [post(api, otp(f"m{i}@example.com")).json()["message_id"] for i in range(5)]
        for mid in ids:
            herald.wait_status(api, mid, lambda s: s == "sent")
    sent = f'notifications_sent_total{{channel="email",provider="console",tenant="{tenant}"}} 5.0'
    enqueued = f'notifications_enqueued_total{{channel="email",tenant="{tenant}"}} 5.0'
    text = ""
    for _ in range(50):  # every process (both ingress replicas, every sender) ships its counts each second
        text = herald.metrics_text()
        if sent in text and enqueued in text:
            break
        import time

        time.sleep(0.2)
    assert sent in text and enqueued in text
    assert re.search(r'delivery_latency_ms_bucket\{channel="email",le="[^"]+",priority="normal"\}', text)
    # its labels name every tenant: nobody else reads them
    assert httpx.get(f"{herald.base_url}/metrics", timeout=10).status_code == 401
    with herald.client(tenant) as api:
        assert api.get("/metrics").status_code == 403


def test_openapi_documents_the_message_model(herald: Herald) -> None:
    doc = httpx.get(f"{herald.base_url}/openapi.json").json()
    assert "NotificationRequest" in doc["components"]["schemas"]
    assert "/api/notifications" in doc["paths"]
