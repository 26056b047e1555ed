"""Cancel, reschedule and search of a tenant's messages through the API, as a client would use them:
what is cancelled is never sent (counted in the console provider's file), a reschedule moves the send,
a message already sent cannot be cancelled (409 naming its status), and another tenant finds nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, otp, post

pytestmark = [pytest.mark.ray, pytest.mark.integration]


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def sends_of(herald: Herald, message_id: str) -> int:
    return sum(1 for r in herald.console_records() if r["message_id"] == message_id)


def accepted(api: httpx.Client, body: dict[str, Any]) -> str:
    r = post(api, body)
    assert r.status_code == 202, r.text
    return str(r.json()["message_id"])


def test_a_cancelled_message_is_never_sent_and_a_second_cancel_answers_the_same(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        message_id = accepted(api, otp("cancel-me@example.com", schedule_at=at(1.5)))
        assert api.get(f"/api/notifications/{message_id}").json()["status"] == "scheduled"
        first = api.delete(f"/api/notifications/{message_id}")
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "cancelled" and first.json()["message_id"] == message_id
        again = api.delete(f"/api/notifications/{message_id}")
        assert again.status_code == 200 and again.json() == first.json()
        time.sleep(2.5)  # past its time, and a few relay polls
        view = api.get(f"/api/notifications/{message_id}").json()
    assert view["status"] == "cancelled" and view["attempts"] == []
    cancelled = [e for e in view["events"] if e["type"] == "NotificationCancelled"]
    assert len(cancelled) == 1 and cancelled[0]["meta"]["actor"]
    assert sends_of(herald, message_id) == 0


def test_cancel_or_reschedule_after_the_send_is_409_with_the_status(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        message_id = accepted(api, otp("too-late@example.com"))
        herald.wait_status(api, message_id, lambda s: s == "sent")
        refused = api.delete(f"/api/notifications/{message_id}")
        assert refused.status_code == 409 and refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["current_status"] == "sent" and "sent" in refused.json()["detail"]
        moved = api.patch(f"/api/notifications/{message_id}", json={"schedule_at": at(60)})
        assert moved.status_code == 409 and moved.json()["current_status"] == "sent"
        assert api.get(f"/api/notifications/{message_id}").json()["status"] == "sent"
    assert sends_of(herald, message_id) == 1


def test_reschedule_moves_the_send_time(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        message_id = accepted(api, otp("moved@example.com", schedule_at=at(3600)))
        naive = api.patch(f"/api/notifications/{message_id}", json={"schedule_at": "2030-01-01T10:00:00"})
        assert naive.status_code == 422 and ["body", "schedule_at"] in [e["loc"] for e in naive.json()["errors"]]
        extra = api.patch(f"/api/notifications/{message_id}", json={"schedule_at": at(1), "priority": "high"})
        assert extra.status_code == 422
        new_time = at(1)
        moved = api.patch(f"/api/notifications/{message_id}", json={"schedule_at": new_time})
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == "scheduled"
        assert datetime.fromisoformat(moved.json()["schedule_at"]) == datetime.fromisoformat(new_time)
        view = herald.wait_status(api, message_id, lambda s: s == "sent", timeout_s=15)
    sent_at = next(datetime.fromisoformat(e["at"]) for e in view["events"] if e["type"] == "NotificationSent")
    assert datetime.fromisoformat(new_time) <= sent_at < datetime.fromisoformat(new_time) + timedelta(seconds=5)
    assert [e["type"] for e in view["events"]][:2] == ["NotificationScheduled", "NotificationRescheduled"]
    assert sends_of(herald, message_id) == 1


def test_another_tenants_message_is_not_found_and_the_platform_acts_for_no_tenant(herald: Herald) -> None:
    with herald.client(new_tenant()) as owner:
        message_id = accepted(owner, otp("mine@example.com", schedule_at=at(3600)))
        with herald.client(new_tenant()) as stranger:
            assert stranger.delete(f"/api/notifications/{message_id}").status_code == 404
            assert stranger.patch(f"/api/notifications/{message_id}", json={"schedule_at": at(5)}).status_code == 404
            assert stranger.get(f"/api/notifications/{message_id}").status_code == 404
            assert stranger.delete("/api/notifications/msg_not-an-id").status_code == 404
            assert ids(search(stranger, recipient="mine@example.com")) == []
        platform = {"Authorization": f"Bearer {herald.platform_token()}"}
        with httpx.Client(base_url=herald.base_url, headers=platform, timeout=30) as http:
            assert http.delete(f"/api/notifications/{message_id}").status_code == 403
            assert http.get("/api/notifications").status_code == 403
        with herald.client(None) as anonymous:
            assert anonymous.delete(f"/api/notifications/{message_id}").status_code == 401
        assert owner.get(f"/api/notifications/{message_id}").json()["status"] == "scheduled"  # nobody touched it
        assert owner.delete(f"/api/notifications/{message_id}").status_code == 200


def search(api: httpx.Client, **params: Any) -> dict[str, Any]:
    r = api.get("/api/notifications", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def ids(page: dict[str, Any]) -> list[str]:
    return [item["message_id"] for item in page["items"]]


def test_search_by_recipient_tag_and_time_with_cursor_pages(herald: Herald) -> None:
    tenant = new_tenant()
    with herald.client(tenant) as api:
        tagged = {"metadata": {"tags": ["welcome"]}}
        ada = [  # three codes: the same one twice within 30 s would be deduplicated
            accepted(api, otp("ada@example.com", variables={"code": "100001"}, **tagged)),
            accepted(api, otp("ada@example.com", variables={"code": "100002"})),
            accepted(api, otp("Ada@Example.com", variables={"code": "100003"}, **tagged)),
        ]
        bob_to = {"email": "bob@example.com", "user_id": "u-bob"}
        bob = accepted(api, {**otp("bob@example.com", **tagged), "to": bob_to})
        for message_id in [*ada, bob]:
            herald.wait_status(api, message_id, lambda s: s == "sent")
        with herald.client(new_tenant()) as other:
            theirs = accepted(other, otp("ada@example.com", **tagged))
            assert ids(search(other, recipient="ada@example.com")) == [theirs]

        history = search(api, recipient="ADA@example.com")
        assert ids(history) == ada[::-1] and history["next_cursor"] is None  # newest first, in one call
        assert {item["to"]["email"].lower() for item in history["items"]} == {"ada@example.com"}
        assert ids(search(api, user_id="u-bob")) == [bob]

        first = search(api, tag="welcome", limit=2)
        assert len(first["items"]) == 2 and first["next_cursor"]
        rest = search(api, tag="welcome", limit=2, cursor=first["next_cursor"])
        assert rest["next_cursor"] is None
        assert ids(first) + ids(rest) == [bob, ada[2], ada[0]]
        assert all(item["tags"] == ["welcome"] for item in first["items"] + rest["items"])

        everything = [bob, *ada[::-1]]
        assert ids(search(api, status="sent", channel="email", category="auth")) == everything
        assert ids(search(api, template_id="otp_login")) == everything
        assert ids(search(api, template_id="otp_login:v3")) == everything
        assert ids(search(api, template_id="otp_login:v9")) == []
        assert ids(search(api, status="scheduled")) == []
        newest = search(api, limit=1)["items"][0]
        assert ids(search(api, created_after=newest["created_at"])) == [bob]
        assert ids(search(api, created_before=newest["created_at"], tag="welcome")) == [ada[2], ada[0]]

        for params, loc in (
            ({"status": "lost"}, ["query", "status"]),
            ({"recipient": "not an address"}, ["query", "recipient"]),
            ({"limit": 0}, ["query", "limit"]),
            ({"cursor": "bogus"}, ["query", "cursor"]),
            ({"created_after": "2025-01-01T00:00:00"}, ["query", "created_after"]),
        ):
            r = api.get("/api/notifications", params=params)
            assert r.status_code == 422 and loc in [e["loc"] for e in r.json()["errors"]], (params, r.text)
