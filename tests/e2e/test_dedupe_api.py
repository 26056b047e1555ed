"""Recipient dedupe through the API on the running stack: the same one-time code to the same address twice
inside the auth window (two idempotency keys) is sent once, counted in the console provider's file; the
copy reads ``deduplicated`` with a pointer to the first, and a new code goes out."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, otp
from tests.e2e.test_notification_lifecycle import accepted, sends_of

pytestmark = [pytest.mark.ray, pytest.mark.integration]


def test_the_same_code_twice_is_sent_once_and_the_copy_points_at_the_first(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        first = accepted(api, otp("twice@example.com"))
        herald.wait_status(api, first, lambda s: s == "sent")
        copy = accepted(api, otp("twice@example.com"))  # another Idempotency-Key, same content
        view = herald.wait_status(api, copy, lambda s: s not in ("queued", "sending"))
        fresh = accepted(api, otp("twice@example.com", variables={"code": "555000"}))
        herald.wait_status(api, fresh, lambda s: s == "sent")
    assert view["status"] == "deduplicated" and view["deduplicated_of"] == first
    assert view["attempts"] == []
    (event,) = [e for e in view["events"] if e["type"] == "NotificationDeduplicated"]
    assert event["meta"]["first_message_id"] == first and event["meta"]["window_seconds"] == 30
    assert (sends_of(herald, first), sends_of(herald, copy), sends_of(herald, fresh)) == (1, 0, 1)
