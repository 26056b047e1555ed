"""The DLQ and the queues view through the API, on the session's stack.

A dedicated tenant sends through SendGrid while its emulator answers every send with a 500 (retryable):
its messages exhaust their attempts and die. To keep the test quick (the stack retries after 10 s / 60 s
/ 5 min), each message is scheduled a moment ahead and its attempt counter is set, before its time, to
the attempts the policy allows less one: the real pipeline then makes its last attempt and dead-letters
it. Then the provider comes back and the dead messages are listed, replayed and sent, each once
(counted at the emulator).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from drivers.fakes.base import Emulator
from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, otp
from tests.e2e.test_notification_lifecycle import accepted, at

pytestmark = [pytest.mark.ray, pytest.mark.integration]

DLQ_EMAIL = "notifications.dlq.email"


@pytest.fixture
def sendgrid_down(herald: Herald) -> Iterator[Emulator]:
    """SendGrid answers every send with a 500 until the test clears the emulator's plan."""
    emulator: Emulator = herald.fakes.sendgrid.emulator
    emulator.fail(500, {"errors": [{"message": "internal error", "field": None}]}, outage=True, path="/v3/mail/send")
    try:
        yield emulator
    finally:
        emulator.plan.clear()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_client(herald: Herald, tenant: str) -> httpx.Client:
    return httpx.Client(base_url=herald.base_url, headers=bearer(herald.token(tenant, admin=True)), timeout=30)


def platform_client(herald: Herald) -> httpx.Client:
    return httpx.Client(base_url=herald.base_url, headers=bearer(herald.platform_token()), timeout=30)


def sends_to(emulator: Emulator, address: str) -> int:
    """Requests the emulator received for ``address`` (answered with a fault or not)."""
    return sum(1 for r in list(emulator.received) if address in json.dumps(r.body))


def on_last_attempt(herald: Herald, api: httpx.Client, address: str, in_s: float) -> str:
    message_id = accepted(api, otp(address, schedule_at=at(in_s)))
    last = len(herald.settings.retry_delays_s)  # attempts allowed: a first one and one per delay
    rows = herald.sql(
        "UPDATE messages SET attempts = $2 WHERE id = $1::uuid AND status = 'scheduled' RETURNING id",
        message_id.removeprefix("msg_"),
        last,
    )
    assert len(rows) == 1, "the message left before the test could set it up"
    return message_id


def wait_for(what: Callable[[], Any], ok: Callable[[Any], bool], timeout_s: float = 15) -> Any:
    deadline = time.monotonic() + timeout_s
    value = what()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = what()
    assert ok(value), value
    return value


def platform_queue(platform: httpx.Client, name: str) -> dict[str, Any]:
    r = platform.get("/admin/queues")
    assert r.status_code == 200, r.text
    return next(q for q in r.json()["queues"] if q["queue"] == name)


def gauge(herald: Herald, name: str, queue: str) -> float | None:
    text = herald.metrics_text()
    prefix = f'{name}{{queue="{queue}"}} '
    return next((float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), None)


def test_dead_messages_are_listed_replayed_once_and_sent(herald: Herald, sendgrid_down: Emulator) -> None:
    tenant, other = new_tenant(), new_tenant()
    herald.use_providers(tenant, email=["sendgrid"])
    a, b = f"dlq-a-{tenant}@example.com", f"dlq-b-{tenant}@example.com"
    with platform_client(herald) as platform, admin_client(herald, tenant) as admin:
        backlog = platform_queue(platform, DLQ_EMAIL)["depth"]
        first = on_last_attempt(herald, admin, a, 1.0)
        second = on_last_attempt(herald, admin, b, 2.0)
        for message_id in (first, second):
            view = herald.wait_status(admin, message_id, lambda s: s == "dead", timeout_s=20)
            assert view["events"][-1]["type"] == "NotificationDeadLettered"
            assert view["attempts"][-1]["error"]["class"] == "retryable"
        assert (sends_to(sendgrid_down, a), sends_to(sendgrid_down, b)) == (1, 1)
        sendgrid_down.plan.clear()  # the provider is back

        # The copies for outside consumers: one envelope per death on a queue nobody consumes.
        dlq = wait_for(lambda: platform_queue(platform, DLQ_EMAIL), lambda q: q["depth"] == backlog + 2)
        assert dlq["consumers"] == 0 and dlq["oldest_age_s"] is not None and dlq["rate_in_per_s"] > 0
        wait_for(lambda: gauge(herald, "queue_depth", DLQ_EMAIL), lambda v: v == backlog + 2)
        assert gauge(herald, "queue_oldest_age_seconds", DLQ_EMAIL) is not None

        page = admin.get("/admin/dlq").json()
        assert [i["message_id"] for i in page["items"]] == [second, first]  # newest dead first
        assert page["counts"] == {"total": 2, "by_channel": {"email": 2}, "by_error_class": {"retryable": 2}}
        item = page["items"][0]
        assert item["tenant"] == tenant and item["provider"] == "sendgrid" and item["error"]["code"] == "500"
        assert item["attempts"] == len(herald.settings.retry_delays_s) + 1
        one = admin.get("/admin/dlq", params={"limit": 1}).json()
        rest = admin.get("/admin/dlq", params={"limit": 1, "cursor": one["next_cursor"]}).json()
        assert [i["message_id"] for i in one["items"] + rest["items"]] == [second, first] and not rest["next_cursor"]
        assert rest["counts"]["total"] == 2
        for params in ({"provider": "ses"}, {"error_class": "permanent"}, {"channel": "sms"}, {"dead_after": at(60)}):
            assert admin.get("/admin/dlq", params=params).json()["counts"]["total"] == 0, params
        matched = {"provider": "sendgrid", "error_class": "retryable", "channel": "email", "dead_after": at(-300)}
        assert admin.get("/admin/dlq", params=matched).json()["counts"]["total"] == 2
        everyone = platform.get("/admin/dlq", params={"tenant": tenant}).json()
        assert [i["message_id"] for i in everyone["items"]] == [second, first]
        with admin_client(herald, other) as stranger:  # another tenant's admin: nothing to see or replay
            assert stranger.get("/admin/dlq").json()["counts"]["total"] == 0
            assert stranger.get("/admin/dlq", params={"tenant": tenant}).status_code == 403
            assert stranger.post("/admin/dlq/replay", json={"ids": [first, second]}).json()["matched"] == 0
            assert stranger.post("/admin/dlq/replay", json={"all": True}).json()["matched"] == 0
            assert stranger.get(f"/api/notifications/{first}").status_code == 404
        assert admin.get(f"/api/notifications/{first}").json()["status"] == "dead"

        replay = admin.post("/admin/dlq/replay", json={"ids": [first]})
        assert replay.status_code == 200, replay.text
        assert replay.json() == {"matched": 1, "replayed": 1, "expired": 0, "skipped": 0, "to_provider": None}
        herald.wait_status(admin, first, lambda s: s in ("sent", "delivered"))
        again = admin.post("/admin/dlq/replay", json={"ids": [first]}).json()
        assert again["matched"] == 0 and again["replayed"] == 0

        by_filter = platform.post("/admin/dlq/replay", json={"filter": {"tenant": tenant, "channel": "email"}})
        assert by_filter.status_code == 200 and by_filter.json()["replayed"] == 1, by_filter.text
        view = herald.wait_status(admin, second, lambda s: s in ("sent", "delivered"))
        assert "NotificationReplayed" in [e["type"] for e in view["events"]]
        assert admin.post("/admin/dlq/replay", json={"all": True}).json()["matched"] == 0
        assert admin.get("/admin/dlq").json()["counts"]["total"] == 0
        time.sleep(1.0)  # room for a second send that must not come
    assert (sends_to(sendgrid_down, a), sends_to(sendgrid_down, b)) == (2, 2)  # the failed one, then one send

    audit = herald.sql(
        """SELECT actor, detail FROM audit_log WHERE action = 'dlq.replay'
           AND (tenant_id = (SELECT id FROM tenants WHERE slug = $1) OR detail->'selector'->'filter'->>'tenant' = $1)
           ORDER BY id""",
        tenant,
    )
    details = [json.loads(r["detail"]) for r in audit]
    assert [(r["actor"], d["replayed"]) for r, d in zip(audit, details, strict=True)] == [
        (tenant, 1),
        (tenant, 0),
        ("platform", 1),
        (tenant, 0),
    ]
    assert details[0]["selector"] == {"ids": [first]} and details[2]["scope"] == "platform"
    assert details[3]["selector"] == {"all": True}


def test_a_tenant_admin_sees_and_replays_only_its_own(herald: Herald) -> None:
    mine, theirs = new_tenant(), new_tenant()
    with admin_client(herald, mine) as admin:
        assert admin.get("/admin/dlq").json()["counts"]["total"] == 0
        named = admin.get("/admin/dlq", params={"tenant": theirs})
        assert named.status_code == 403 and ["query", "tenant"] in [e["loc"] for e in named.json()["errors"]]
        own = admin.get("/admin/dlq", params={"tenant": mine})
        assert own.status_code == 200 and own.json()["counts"]["total"] == 0
        for body, loc in (
            ({}, ["body"]),
            ({"ids": ["bogus"]}, ["body", "ids", 0]),
            ({"all": True, "ids": ["msg_" + "0" * 32]}, ["body"]),
            ({"all": True, "to_provider": "nope"}, ["body", "to_provider"]),
            ({"filter": {"error_class": "whatever"}}, ["body", "filter", "error_class"]),
        ):
            r = admin.post("/admin/dlq/replay", json=body)
            assert r.status_code == 422 and loc in [e["loc"] for e in r.json()["errors"]], (body, r.text)
        refused = admin.post("/admin/dlq/replay", json={"filter": {"tenant": theirs}})
        assert refused.status_code == 403
        assert admin.get("/admin/dlq", params={"cursor": "bogus"}).status_code == 422
    with herald.client(mine) as sender:  # a tenant token without the admin scope
        assert sender.get("/admin/dlq").status_code == 403
        assert sender.post("/admin/dlq/replay", json={"all": True}).status_code == 403
        assert sender.get("/admin/queues").status_code == 403
    with herald.client(None) as anonymous:
        assert anonymous.get("/admin/dlq").status_code == 401


def test_queues_view_against_a_known_backlog(herald: Herald, sendgrid_down: Emulator) -> None:
    """The tenant's backlog: three messages scheduled for later and two waiting for a retry (their first
    attempt met SendGrid's 500); cancelling them all empties it."""
    tenant = new_tenant()
    herald.use_providers(tenant, email=["sendgrid"])
    with herald.client(tenant) as api, admin_client(herald, tenant) as admin:
        later = [accepted(api, otp(f"later{i}@example.com", schedule_at=at(3600))) for i in range(3)]
        began = time.monotonic()
        waiting = [accepted(api, otp(f"retry{i}@example.com")) for i in range(2)]
        for message_id in waiting:
            wait_for(lambda m=message_id: api.get(f"/api/notifications/{m}").json(), lambda v: bool(v["attempts"]))
        r = admin.get("/admin/queues")
        assert r.status_code == 200, r.text
        view = r.json()
        assert view["view"] == "tenant" and view["tenant"] == tenant
        assert view["by_status"] == {"scheduled": 3, "queued": 2} and view["waiting"] == 2
        assert 0 < view["oldest_waiting_age_s"] <= time.monotonic() - began + 1
        assert "queues" not in view and "outbox" not in view  # no platform-wide figures for a tenant

        for message_id in later + waiting:
            cancelled = api.delete(f"/api/notifications/{message_id}")
            assert cancelled.status_code == 200, cancelled.text
        emptied = admin.get("/admin/queues").json()
        assert emptied["by_status"] == {"cancelled": 5} and emptied["waiting"] == 0
        assert emptied["oldest_waiting_age_s"] is None

    with platform_client(herald) as platform:
        report = platform.get("/admin/queues").json()
    assert report["view"] == "platform" and report["broker"] in ("rabbitmq", "postgres-queue")
    queues = {q["queue"]: q for q in report["queues"]}
    assert queues["notifications.high"]["consumers"] >= 1 and queues["notifications.low"]["consumers"] >= 1
    assert {"due", "oldest_due_age_s", "next_due_at"} <= set(report["outbox"])
