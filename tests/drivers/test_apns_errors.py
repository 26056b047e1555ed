"""APNs reasons -> Herald's failure classes (one table: drivers.push.apns)."""

from __future__ import annotations

import pytest

from drivers.push.apns import APNS_ERRORS, classify
from engine.errors import FailureClass, RetryableError

F = FailureClass


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (400, "BadDeviceToken", F.BAD_RECIPIENT),
        (400, "DeviceTokenNotForTopic", F.BAD_RECIPIENT),
        (410, "Unregistered", F.BAD_RECIPIENT),
        (410, "ExpiredToken", F.BAD_RECIPIENT),
        (400, "BadCollapseId", F.PERMANENT),
        (400, "BadPriority", F.PERMANENT),
        (413, "PayloadTooLarge", F.PERMANENT),
        (400, "BadTopic", F.PROVIDER_DOWN),
        (403, "InvalidProviderToken", F.PROVIDER_DOWN),
        (403, "ExpiredProviderToken", F.PROVIDER_DOWN),
        (403, "BadCertificate", F.PROVIDER_DOWN),
        (429, "TooManyRequests", F.THROTTLED),
        (429, "TooManyProviderTokenUpdates", F.THROTTLED),
        (500, "InternalServerError", F.RETRYABLE),
        (503, "ServiceUnavailable", F.RETRYABLE),
        (503, "Shutdown", F.RETRYABLE),
        (403, "SomethingNew", F.PROVIDER_DOWN),
        (410, "SomethingNew", F.BAD_RECIPIENT),
        (502, "", F.RETRYABLE),
    ],
)
def test_classification(status: int, reason: str, expected: FailureClass) -> None:
    err = classify(status, {"reason": reason}, None)
    assert err.failure_class is expected
    assert err.provider == "apns" and err.status_code == status


def test_unregistered_keeps_the_timestamp() -> None:
    err = classify(410, {"reason": "Unregistered", "timestamp": 1714644067512}, None)
    assert err.failure_class is F.BAD_RECIPIENT
    assert err.invalid_since_ms == 1714644067512  # type: ignore[attr-defined]
    assert "2024-05-02T10:01:07" in err.detail


def test_throttle_default_and_header() -> None:
    err = classify(429, {"reason": "TooManyRequests"}, None)
    assert isinstance(err, RetryableError) and err.retry_after_s == 60.0
    err = classify(503, {"reason": "ServiceUnavailable"}, 5.0)
    assert isinstance(err, RetryableError) and err.retry_after_s == 5.0


def test_table_covers_apples_reasons() -> None:
    assert {
        "BadDeviceToken",
        "Unregistered",
        "ExpiredProviderToken",
        "TooManyRequests",
        "ServiceUnavailable",
    } <= set(APNS_ERRORS)
