"""When a failed webhook delivery is tried again: doubling from the base, capped, jittered, and never
past the retry window (a day by default)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from engine.feedback.delivery import DeliveryOptions, event_body, next_attempt_at

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_backoff_doubles_and_is_capped() -> None:
    options = DeliveryOptions(retry_base_s=10, retry_max_delay_s=3600, jitter=0.0)
    delays = [(next_attempt_at(options, n, T0, T0) - T0).total_seconds() for n in range(1, 11)]  # type: ignore[operator]
    assert delays == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]


def test_jitter_stays_within_its_share() -> None:
    options = DeliveryOptions(retry_base_s=100, jitter=0.2)
    rng = random.Random(7)
    delays = {(next_attempt_at(options, 1, T0, T0, rng=rng) - T0).total_seconds() for _ in range(200)}  # type: ignore[operator]
    assert min(delays) >= 80 and max(delays) <= 120 and len(delays) > 100


def test_no_attempt_after_the_window() -> None:
    options = DeliveryOptions(retry_base_s=10, retry_max_delay_s=4 * 3600, retry_for_s=24 * 3600, jitter=0.0)
    assert next_attempt_at(options, 5, T0, T0 + timedelta(hours=23)) is not None
    assert next_attempt_at(options, 12, T0, T0 + timedelta(hours=23)) is None
    schedule, now, n = [], T0, 1
    while (at := next_attempt_at(options, n, T0, now)) is not None:
        schedule.append(at)
        now, n = at, n + 1
    assert schedule[-1] <= T0 + timedelta(days=1) and 10 <= len(schedule) <= 20


def test_a_body_is_the_same_bytes_every_time() -> None:
    row = {
        "payload": None,
        "occurred_at": T0,
        "recorded_at": T0,
        "webhook_id": "evt_1",
        "slug": "t_001",
        "meta": {"status": "delivered", "provider": "ses"},
        "message_id": None,
        "channel": None,
        "event_type": "NotificationDelivered",
    }
    first = event_body(row)
    assert first == event_body(dict(row)) and first is not None
    assert first.startswith(b'{"data":{"details":{"provider":"ses","status":"delivered"}')
    assert event_body({**row, "occurred_at": None}) is None
